//! `to_nsq`: publish each delimited record read from stdin to a topic on every given nsqd.

use std::time::Duration;

use clap::Parser;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};
use tokio::time::Instant;

use crate::{Result, ToolError};
use nsq::Producer;

/// Upstream's `to_nsq` flags.
#[derive(Parser, Debug, Clone)]
#[command(about = "Publish stdin to an NSQ topic, one message per delimited record.")]
pub struct ToNsqOptions {
    /// NSQ topic to publish to
    #[arg(long, default_value = "")]
    pub topic: String,
    /// character to split input from stdin
    #[arg(long, default_value = "\n")]
    pub delimiter: String,
    /// destination nsqd TCP address (may be given multiple times)
    #[arg(long)]
    pub nsqd_tcp_address: Vec<String>,
    /// Throttle messages to n/second. 0 to disable
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// option to pass through to the producer: `option,value` with go-nsq's option names (may be given multiple times)
    #[arg(long)]
    pub producer_opt: Vec<String>,
}

impl ToNsqOptions {
    /// The checks upstream makes before publishing anything.
    fn delimiter_byte(&self) -> Result<u8> {
        if self.topic.is_empty() {
            return Err(ToolError::Config("--topic required".into()));
        }
        if self.nsqd_tcp_address.is_empty() {
            return Err(ToolError::Config("--nsqd-tcp-address required".into()));
        }
        match self.delimiter.as_bytes() {
            [d] => Ok(*d),
            _ => Err(ToolError::Config(
                "--delimiter must be a single byte".into(),
            )),
        }
    }
}

/// Spaces publishes `1/rate` apart, letting up to one second of unused
/// capacity build up as a burst of `rate`, as upstream's token balance does.
pub struct Throttle {
    interval: Duration,
    burst: Duration,
    next: Instant,
}

impl Throttle {
    /// `None` for rate 0: no throttling.
    pub fn new(rate: u64) -> Option<Throttle> {
        (rate > 0).then(|| {
            let interval = Duration::from_secs(1) / u32::try_from(rate).unwrap_or(u32::MAX);
            Throttle {
                interval,
                // `rate` messages at once, the last of them right now.
                burst: Duration::from_secs(1).saturating_sub(interval),
                next: Instant::now(),
            }
        })
    }

    /// Waits until the next message may go out.
    pub async fn wait(&mut self) {
        let now = Instant::now();
        // Capacity older than the burst window is forgotten.
        let floor = now.checked_sub(self.burst).unwrap_or(now);
        self.next = self.next.max(floor);
        if self.next > now {
            tokio::time::sleep_until(self.next).await;
        }
        self.next += self.interval;
    }
}

/// Reads records from `input` until EOF and publishes each non-empty one to
/// every nsqd, waiting for each publish to be acknowledged before reading
/// on, so messages keep their input order. Returns the records published.
pub async fn run(opts: &ToNsqOptions, mut input: impl AsyncBufRead + Unpin) -> Result<u64> {
    let delim = opts.delimiter_byte()?;
    let mut config = crate::source::user_agent_config("to_nsq");
    crate::apply_opts(&mut config, &opts.producer_opt)?;
    let producers: Vec<Producer> = opts
        .nsqd_tcp_address
        .iter()
        .map(|a| Producer::new(a.clone(), config.clone()))
        .collect();
    let mut throttle = Throttle::new(opts.rate);
    let mut published = 0;
    let mut line = Vec::new();
    let result = loop {
        line.clear();
        if input.read_until(delim, &mut line).await? == 0 {
            break Ok(published);
        }
        if line.last() == Some(&delim) {
            line.pop();
        }
        // Upstream skips empty records (blank lines).
        if line.is_empty() {
            continue;
        }
        if let Some(t) = throttle.as_mut() {
            t.wait().await;
        }
        let body = bytes::Bytes::copy_from_slice(&line);
        let publishes = producers
            .iter()
            .map(|p| p.publish(&opts.topic, body.clone()));
        if let Some(err) = join_all(publishes).await.into_iter().find_map(|r| r.err()) {
            break Err(err.into());
        }
        published += 1;
    };
    for p in &producers {
        p.stop().await;
    }
    result
}

/// Runs the publishes to all nsqds at once; they are independent.
async fn join_all<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut out = Vec::new();
    // One nsqd is the common case: no task needed.
    let futs: Vec<F> = futs.collect();
    if futs.len() == 1 {
        for f in futs {
            out.push(f.await);
        }
        return out;
    }
    let mut pinned: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in pinned.iter_mut().zip(results.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.extend(results.into_iter().flatten());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(delimiter: &str) -> ToNsqOptions {
        ToNsqOptions {
            topic: "t".into(),
            delimiter: delimiter.into(),
            nsqd_tcp_address: vec!["127.0.0.1:1".into()],
            rate: 0,
            producer_opt: vec![],
        }
    }

    #[test]
    fn flags_are_checked_as_upstream_does() {
        assert_eq!(opts("\n").delimiter_byte().unwrap(), b'\n');
        assert_eq!(opts(",").delimiter_byte().unwrap(), b',');
        assert!(opts("ab").delimiter_byte().is_err());
        assert!(opts("").delimiter_byte().is_err());
        let mut o = opts("\n");
        o.topic.clear();
        assert!(o.delimiter_byte().is_err());
        let mut o = opts("\n");
        o.nsqd_tcp_address.clear();
        assert!(o.delimiter_byte().is_err());
    }

    #[tokio::test]
    async fn empty_input_publishes_nothing_and_connects_nowhere() {
        // Port 1 would refuse: no record means no connection attempt.
        let n = run(&opts("\n"), &b"\n\n"[..]).await.unwrap();
        assert_eq!(n, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn throttle_spaces_messages_and_bursts_at_most_a_second() {
        let mut t = Throttle::new(10).unwrap();
        let start = Instant::now();
        for _ in 0..5 {
            t.wait().await;
        }
        // 100 ms apart: the fifth goes out 400 ms after the first.
        assert_eq!(start.elapsed(), Duration::from_millis(400));
        tokio::time::sleep(Duration::from_secs(5)).await;
        let idle_end = Instant::now();
        for _ in 0..10 {
            t.wait().await;
        }
        // After a long idle time, one second's worth (10) goes out at once.
        assert_eq!(idle_end.elapsed(), Duration::ZERO);
        t.wait().await;
        assert_eq!(idle_end.elapsed(), Duration::from_millis(100));
    }
}
