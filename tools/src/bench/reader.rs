//! `bench_reader`: SUB with a high RDY and FIN every message, counting finished messages.
//!
//! The FINs for everything one `read` brought in go out in a single `write`,
//! so the consumer costs nsqd one wake-up per buffer of messages, as a good
//! client library would, and never one syscall per message.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use clap::Parser;
use nsq_app::GoDuration;
use nsq_protocol::{ChannelName, Command, Frame, TopicName, HEARTBEAT};
use serde_json::json;

use super::conn::{server_error, Conn, Incoming};
use super::writer::limits_text;
use super::{
    check_limits, cpu_since, parse_channel, parse_topic, process_cpu_time, BenchError, Report,
    Result,
};

/// How often an idle connection looks at the clock and the shared count, so
/// a run ends on time even when no messages are left.
const POLL: Duration = Duration::from_millis(20);

/// Consume benchmark: SUB, RDY, FIN every message as it arrives.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "bench_reader",
    about = "Measure how fast nsqd delivers messages to consumers."
)]
pub struct ReaderOptions {
    /// <addr>:<port> to connect to nsqd
    #[arg(
        long,
        visible_alias = "nsqd-tcp-address",
        default_value = "127.0.0.1:4150"
    )]
    pub tcp_address: String,
    /// topic to receive messages on
    #[arg(long, default_value = "sub_bench", value_parser = parse_topic)]
    pub topic: TopicName,
    /// channel to receive messages on
    #[arg(long, default_value = "ch", value_parser = parse_channel)]
    pub channel: ChannelName,
    /// size of messages (bytes), for the MB/s figure only
    #[arg(long, default_value_t = 200)]
    pub size: u32,
    /// how long to consume (0 = until --count)
    #[arg(long, default_value = "10s")]
    pub runfor: GoDuration,
    /// RDY count per connection (0 subscribes and holds the channel open)
    #[arg(long, default_value_t = 2500)]
    pub rdy: u64,
    /// stop once this many messages have been finished over all connections (0 = no limit)
    #[arg(long, default_value_t = 0)]
    pub count: u64,
    /// consuming connections, one thread each
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub connections: u32,
}

/// What every consuming thread shares.
struct Shared {
    rdy: u64,
    limit: Option<u64>,
    end: Option<Instant>,
    finished: AtomicU64,
    /// When `--count` was reached: the end of the measured run, rather than
    /// when the last idle connection noticed.
    reached: OnceLock<Instant>,
    stop: AtomicBool,
}

impl Shared {
    fn over(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.end.is_some_and(|e| Instant::now() >= e)
    }

    /// Add a read's worth of finished messages and see whether that ends the run.
    fn add(&self, n: u64) {
        let before = self.finished.fetch_add(n, Ordering::Relaxed);
        if let Some(limit) = self.limit {
            if before < limit && before + n >= limit {
                let _ = self.reached.set(Instant::now());
                self.stop.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// Subscribe everything, consume until the limits, and report finished messages.
pub fn run(opts: &ReaderOptions) -> Result<Report> {
    check_limits(*opts.runfor, opts.count)?;
    let mut conns = Vec::new();
    for _ in 0..opts.connections {
        let mut conn = Conn::connect(&opts.tcp_address, "bench_reader")?;
        conn.subscribe(&opts.topic, &opts.channel)?;
        conn.set_read_timeout(Some(POLL))?;
        conns.push(conn);
    }
    // scripts/bench.sh waits for this line before it publishes, so that the
    // channel exists and receives every message.
    eprintln!(
        "[bench_reader] subscribed {} connections to {}/{} at {}, RDY {}, {}",
        opts.connections,
        opts.topic,
        opts.channel,
        opts.tcp_address,
        opts.rdy,
        limits_text(*opts.runfor, opts.count)
    );

    let cpu_before = process_cpu_time();
    let start = Instant::now();
    let shared = Arc::new(Shared {
        rdy: opts.rdy,
        limit: (opts.count > 0).then_some(opts.count),
        end: (!opts.runfor.is_zero()).then(|| start + *opts.runfor),
        finished: AtomicU64::new(0),
        reached: OnceLock::new(),
        stop: AtomicBool::new(false),
    });
    let workers: Vec<_> = conns
        .into_iter()
        .map(|conn| {
            let shared = shared.clone();
            thread::spawn(move || {
                let res = consume(conn, &shared);
                if res.is_err() {
                    shared.stop.store(true, Ordering::Relaxed);
                }
                res
            })
        })
        .collect();
    let mut failure = None;
    for w in workers {
        if let Err(e) = w.join().expect("consuming thread panicked") {
            failure.get_or_insert(e);
        }
    }
    let elapsed = shared
        .reached
        .get()
        .map_or_else(|| start.elapsed(), |t| *t - start);
    if let Some(e) = failure {
        return Err(e);
    }
    let extra = BTreeMap::from([
        ("size", json!(opts.size)),
        ("rdy", json!(opts.rdy)),
        ("connections", json!(opts.connections)),
        ("count_reached", json!(shared.reached.get().is_some())),
    ]);
    Ok(Report {
        tool: "bench_reader",
        msgs: shared.finished.load(Ordering::Relaxed),
        elapsed,
        size: opts.size as usize,
        cpu: cpu_since(cpu_before),
        extra,
    })
}

/// One connection's loop: read, queue a FIN per message, write the FINs.
fn consume(mut conn: Conn, shared: &Shared) -> Result<()> {
    conn.send(&Command::Rdy(shared.rdy))?;
    // A FIN line is 21 bytes; room for a full read's worth of messages.
    let mut out = BytesMut::with_capacity(64 * 1024);
    while !shared.over() {
        if !conn.fill()? {
            continue;
        }
        let mut got = 0u64;
        while let Some(incoming) = conn.next_incoming()? {
            match incoming {
                Incoming::Message(id) => {
                    Command::Fin(id).encode(&mut out);
                    got += 1;
                }
                Incoming::Other(Frame::Response(data)) if data == HEARTBEAT => {
                    Command::Nop.encode(&mut out)
                }
                Incoming::Other(Frame::Error(text)) => {
                    // E_FIN_FAILED is non-fatal to nsqd, but here it means a
                    // FIN went wrong, and the count would be a lie.
                    return Err(server_error("FIN/RDY", &text));
                }
                Incoming::Other(other) => {
                    return Err(BenchError::Unexpected(format!(
                        "{other:?} on a consuming connection"
                    )))
                }
            }
        }
        if !out.is_empty() {
            conn.write_all(&out)?;
            out.clear();
        }
        if got > 0 {
            shared.add(got);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<std::ffi::OsString> {
        std::iter::once("bench_reader")
            .chain(args.iter().copied())
            .map(Into::into)
            .collect()
    }

    #[test]
    fn defaults_and_flags() {
        let o: ReaderOptions = nsq_app::try_parse_options("bench_reader", argv(&[]), &[]).unwrap();
        assert_eq!(o.topic.as_str(), "sub_bench");
        assert_eq!(o.channel.as_str(), "ch");
        assert_eq!((o.size, o.rdy, o.connections, o.count), (200, 2500, 1, 0));
        assert_eq!(*o.runfor, Duration::from_secs(10));
        let o: ReaderOptions = nsq_app::try_parse_options(
            "bench_reader",
            argv(&["-channel=c2", "-rdy", "0", "--runfor=0", "--count=7"]),
            &[],
        )
        .unwrap();
        assert_eq!((o.channel.as_str(), o.rdy, o.count), ("c2", 0, 7));
        assert!(o.runfor.is_zero());
        assert!(nsq_app::try_parse_options::<ReaderOptions>(
            "bench_reader",
            argv(&["--channel=a/b"]),
            &[]
        )
        .is_err());
    }

    #[test]
    fn count_is_reached_once() {
        let shared = Shared {
            rdy: 1,
            limit: Some(10),
            end: None,
            finished: AtomicU64::new(0),
            reached: OnceLock::new(),
            stop: AtomicBool::new(false),
        };
        shared.add(6);
        assert!(!shared.over());
        shared.add(6);
        assert!(shared.over());
        let first = *shared.reached.get().unwrap();
        shared.add(1);
        assert_eq!(*shared.reached.get().unwrap(), first);
        assert_eq!(shared.finished.load(Ordering::Relaxed), 13);
    }
}
