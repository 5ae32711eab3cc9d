//! `nsq_tail`: consume topics and print every message body, one per line, to stdout.

use std::future::Future;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use tokio::sync::Notify;

use crate::source::SourceOptions;
use crate::{Result, ToolError};
use nsq::{handler_fn, Consumer, HandlerError};

/// Upstream's `nsq_tail` flags.
#[derive(Parser, Debug, Clone)]
#[command(about = "Print the messages of NSQ topics to stdout, one per line.")]
pub struct TailOptions {
    /// NSQ topic (may be given multiple times)
    #[arg(long)]
    pub topic: Vec<String>,
    /// NSQ channel (default: tail<random>#ephemeral)
    #[arg(long, default_value = "")]
    pub channel: String,
    /// Where messages are read from.
    #[command(flatten)]
    pub source: SourceOptions,
    /// total messages to show (will wait if starved)
    #[arg(long = "n", default_value_t = 0)]
    pub n: u64,
    /// print topic name where message was received
    #[arg(long)]
    pub print_topic: bool,
}

impl TailOptions {
    /// Upstream's checks, and its defaults that depend on other flags.
    fn validate(&mut self) -> Result<()> {
        if self.channel.is_empty() {
            self.channel = format!("tail{:06}#ephemeral", rand::random::<u32>() % 999_999);
        }
        if self.topic.is_empty() {
            return Err(ToolError::Config("--topic is required".into()));
        }
        self.source.check()?;
        // Don't ask for more messages than we want.
        if self.n > 0 && self.n < self.source.max_in_flight {
            self.source.max_in_flight = self.n;
        }
        Ok(())
    }
}

/// The output and the count of what went into it. Locked by every handler
/// (all consumers share it) for one message's write; never across an `.await`.
struct Printer<W> {
    out: W,
    shown: u64,
    limit: u64,
    print_topic: bool,
    /// Set once `limit` messages are out or the output failed: no more lines.
    done: bool,
    error: Option<std::io::Error>,
}

impl<W: Write> Printer<W> {
    /// Writes one line; false when no more lines are wanted, so the caller
    /// hands the message back to nsqd.
    fn print(&mut self, topic: &str, body: &[u8]) -> bool {
        if self.done {
            return false;
        }
        let written = (|| {
            if self.print_topic {
                self.out.write_all(topic.as_bytes())?;
                self.out.write_all(b" | ")?;
            }
            self.out.write_all(body)?;
            self.out.write_all(b"\n")?;
            // A line at a time, as upstream's unbuffered writes: a tail is
            // watched live.
            self.out.flush()
        })();
        match written {
            Ok(()) => {
                self.shown += 1;
                self.done = self.limit > 0 && self.shown >= self.limit;
                true
            }
            Err(e) => {
                self.done = true;
                self.error = Some(e);
                false
            }
        }
    }
}

/// Consumes every topic until `-n` messages are printed to `out`, the
/// output fails, or `shutdown` resolves; then stops the consumers
/// gracefully (messages received past the count are requeued, not lost) and
/// returns how many messages were printed.
pub async fn run<W: Write + Send + 'static>(
    mut opts: TailOptions,
    out: W,
    shutdown: impl Future<Output = ()>,
) -> Result<u64> {
    opts.validate()?;
    let printer = Arc::new(Mutex::new(Printer {
        out: std::io::BufWriter::new(out),
        shown: 0,
        limit: opts.n,
        print_topic: opts.print_topic,
        done: false,
        error: None,
    }));
    let finished = Arc::new(Notify::new());
    let config = opts.source.consumer_config("nsq_tail")?;
    let mut consumers = Vec::new();
    for topic in &opts.topic {
        let consumer = Consumer::new(topic, &opts.channel, config.clone())?;
        let (printer, finished, name) = (printer.clone(), finished.clone(), topic.clone());
        consumer.add_handler(handler_fn(move |msg| {
            let shown = {
                let mut p = printer.lock().expect("printer lock");
                let shown = p.print(&name, &msg.body);
                if p.done {
                    finished.notify_one();
                }
                shown
            };
            async move {
                if shown {
                    Ok(())
                } else {
                    // Not ours to print: back to nsqd at once for another consumer.
                    Err(HandlerError::new("nsq_tail is done")
                        .requeue_after(Duration::ZERO)
                        .without_backoff())
                }
            }
        }));
        consumers.push(consumer);
    }
    let connected = async { opts.source.connect_all(&consumers).await };
    tokio::pin!(shutdown);
    let outcome: std::result::Result<(), nsq::Error> = tokio::select! {
        r = async { connected.await?; finished.notified().await; Ok(()) } => r,
        () = &mut shutdown => Ok(()),
    };
    for consumer in &consumers {
        consumer.stop().await;
    }
    let mut p = printer.lock().expect("printer lock");
    outcome?;
    if let Some(e) = p.error.take() {
        return Err(e.into());
    }
    p.out.flush()?;
    Ok(p.shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> TailOptions {
        TailOptions {
            topic: vec!["t".into()],
            channel: String::new(),
            source: SourceOptions {
                max_in_flight: 200,
                nsqd_tcp_address: vec!["127.0.0.1:4150".into()],
                lookupd_http_address: vec![],
                consumer_opt: vec![],
            },
            n: 0,
            print_topic: false,
        }
    }

    #[test]
    fn defaults_follow_upstream() {
        let mut o = opts();
        o.n = 5;
        o.validate().unwrap();
        assert!(o.channel.starts_with("tail") && o.channel.ends_with("#ephemeral"));
        assert_eq!(o.channel.len(), "tail000000#ephemeral".len());
        assert_eq!(o.source.max_in_flight, 5);
        let mut o = opts();
        o.source.lookupd_http_address.push("127.0.0.1:4161".into());
        assert!(o.validate().is_err());
        let mut o = opts();
        o.topic.clear();
        assert!(o.validate().is_err());
    }

    #[test]
    fn printer_prints_lines_up_to_the_limit() {
        let mut p = Printer {
            out: Vec::new(),
            shown: 0,
            limit: 2,
            print_topic: true,
            done: false,
            error: None,
        };
        assert!(p.print("a", b"one"));
        assert!(p.print("b", b"two"));
        assert!(p.done);
        assert!(!p.print("a", b"three"));
        assert_eq!(p.out, b"a | one\nb | two\n");
    }
}
