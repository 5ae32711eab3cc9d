//! `bench_writer`: pipelined MPUB batches over a few connections, counting acknowledged messages.
//!
//! Upstream's writer waits for each MPUB's `OK` before sending the next, so it
//! measures round trips as much as nsqd. Here each connection keeps up to
//! `--pipeline` MPUBs outstanding and matches every `OK` to the oldest one
//! (nsqd answers publishes in order), which keeps nsqd busy all the time.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use clap::Parser;
use nsq_protocol::{Command, TopicName};
use serde_json::json;

use super::conn::{connect_all, publish_reply, Conn, REPLY_TIMEOUT, SMALL_READ};
use super::{
    check_limits, limits_text, per_connection, BenchError, Report, Result, RunClock, Target,
};

/// Publish benchmark: MPUB batches as fast as nsqd acknowledges them.
#[derive(Parser, Debug, Clone)]
#[command(about = "Measure how fast nsqd accepts published messages.")]
pub struct WriterOptions {
    #[command(flatten)]
    pub target: Target,
    /// messages per MPUB
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: u32,
    /// stop after exactly this many messages over all connections (0 = no limit)
    #[arg(long, default_value_t = 0)]
    pub count: u64,
    /// publishing connections, one thread each
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub connections: u32,
    /// MPUBs outstanding per connection
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub pipeline: u32,
}

/// What every publishing thread shares.
struct Plan {
    topic: TopicName,
    body: Bytes,
    batch: u64,
    /// `pipeline` copies of the full MPUB, encoded once: refilling k free
    /// slots is one `write` of the first k copies.
    burst: Bytes,
    mpub_len: usize,
    /// Messages handed out so far, when `--count` limits the run.
    limit: Option<u64>,
    claimed: AtomicU64,
    end: Option<Instant>,
    /// Set by the first connection that fails, so the others stop too.
    abort: AtomicBool,
}

impl Plan {
    /// How many messages the next MPUB carries; 0 once the run is over.
    fn claim(&self) -> u64 {
        if self.abort.load(Ordering::Relaxed) || self.end.is_some_and(|e| Instant::now() >= e) {
            return 0;
        }
        match self.limit {
            None => self.batch,
            Some(limit) => {
                // Overshooting the counter is harmless: later claims see it
                // past the limit and get nothing.
                let before = self.claimed.fetch_add(self.batch, Ordering::Relaxed);
                limit.saturating_sub(before).min(self.batch)
            }
        }
    }

    /// The MPUB for a short final batch under `--count`; built once per run.
    fn encode_tail(&self, n: u64) -> BytesMut {
        let mut buf = BytesMut::new();
        encode_mpub(&mut buf, &self.topic, &self.body, n);
        buf
    }
}

fn encode_mpub(buf: &mut BytesMut, topic: &TopicName, body: &Bytes, n: u64) {
    // The bodies are clones of one `Bytes`: n reference counts, not n copies.
    Command::Mpub {
        topic: topic.clone(),
        bodies: vec![body.clone(); n as usize].into(),
    }
    .encode(buf);
}

/// Connect everything, publish until the limits, and report acknowledged messages.
pub fn run(opts: &WriterOptions) -> Result<Report> {
    let t = &opts.target;
    check_limits(*t.runfor, opts.count)?;
    let pipeline = opts.pipeline as usize;
    let body = Bytes::from(vec![b'x'; t.size as usize]);
    let mut one = BytesMut::new();
    encode_mpub(&mut one, &t.topic, &body, opts.batch_size.into());
    let mpub_len = one.len();
    let mut burst = BytesMut::with_capacity(mpub_len * pipeline);
    for _ in 0..pipeline {
        burst.extend_from_slice(&one);
    }

    // Replies are 10-byte OKs: the smallest reads will do.
    let conns = connect_all(
        &t.tcp_address,
        "bench_writer",
        opts.connections,
        SMALL_READ,
        REPLY_TIMEOUT,
    )?;
    eprintln!(
        "[bench_writer] {} connections to {}, MPUB {}x{} bytes, {} in flight each, {}",
        opts.connections,
        t.tcp_address,
        opts.batch_size,
        t.size,
        opts.pipeline,
        limits_text(*t.runfor, opts.count)
    );

    let clock = RunClock::start();
    let plan = Plan {
        topic: t.topic.clone(),
        body,
        batch: opts.batch_size.into(),
        burst: burst.freeze(),
        mpub_len,
        limit: (opts.count > 0).then_some(opts.count),
        claimed: AtomicU64::new(0),
        end: clock.end(*t.runfor),
        abort: AtomicBool::new(false),
    };
    let acked = per_connection(conns, &plan.abort, |conn| publish(conn, &plan, pipeline))?;
    let elapsed = clock.start.elapsed();
    let extra = BTreeMap::from([
        ("size", json!(t.size)),
        ("batch_size", json!(opts.batch_size)),
        ("connections", json!(opts.connections)),
        ("pipeline", json!(opts.pipeline)),
    ]);
    Ok(Report {
        tool: "bench_writer",
        msgs: acked.iter().sum(),
        elapsed,
        size: t.size as usize,
        cpu: clock.cpu(),
        extra,
    })
}

/// One connection's loop: top up the pipeline, read whatever replies have
/// come, repeat; once nothing more may be sent, wait for the outstanding ones.
fn publish(mut conn: Conn, plan: &Plan, pipeline: usize) -> Result<u64> {
    let mut outstanding: VecDeque<u64> = VecDeque::with_capacity(pipeline);
    let mut acked = 0u64;
    let mut sending = true;
    loop {
        if sending {
            let mut full = 0;
            let mut tail = None;
            while outstanding.len() < pipeline {
                let n = plan.claim();
                if n == 0 {
                    sending = false;
                    break;
                }
                outstanding.push_back(n);
                if n < plan.batch {
                    // Only the last claim under --count is short.
                    tail = Some(n);
                    sending = false;
                    break;
                }
                full += 1;
            }
            if full > 0 {
                conn.write_all(&plan.burst[..full * plan.mpub_len])?;
            }
            if let Some(n) = tail {
                conn.write_all(&plan.encode_tail(n))?;
            }
        }
        if outstanding.is_empty() {
            return Ok(acked);
        }
        if !conn.fill()? {
            return Err(BenchError::Silent(REPLY_TIMEOUT));
        }
        while let Some(frame) = conn.next_frame()? {
            if publish_reply(&mut conn, frame, "MPUB")? {
                acked += outstanding
                    .pop_front()
                    .ok_or_else(|| BenchError::Unexpected("OK with no MPUB outstanding".into()))?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn parse(args: &[&str]) -> WriterOptions {
        crate::bench::try_parse("bench_writer", args).unwrap()
    }

    #[test]
    fn defaults_match_upstream_and_the_issue() {
        let o = parse(&[]);
        assert_eq!(o.target.tcp_address, "127.0.0.1:4150");
        assert_eq!(o.target.topic.as_str(), "sub_bench");
        assert_eq!(
            (o.target.size, o.batch_size, o.connections, o.pipeline),
            (200, 200, 2, 16)
        );
        assert_eq!(*o.target.runfor, Duration::from_secs(10));
        assert_eq!(o.count, 0);
    }

    #[test]
    fn go_style_flags_and_upstream_alias() {
        let o = parse(&[
            "-nsqd-tcp-address=127.0.0.1:5150",
            "--runfor",
            "1m30s",
            "-count=1000000",
            "--pipeline=4",
        ]);
        assert_eq!(o.target.tcp_address, "127.0.0.1:5150");
        assert_eq!(*o.target.runfor, Duration::from_secs(90));
        assert_eq!((o.count, o.pipeline), (1_000_000, 4));
        let bad =
            |args: &[&str]| crate::bench::try_parse::<WriterOptions>("bench_writer", args).is_err();
        assert!(bad(&["--topic=no spaces"]));
        assert!(bad(&["--batch-size=0"]));
        assert!(bad(&["--pipeline=0"]));
        assert!(bad(&["--size=0"]));
        assert!(bad(&["--connections=10001"]));
    }

    #[test]
    fn claims_stop_exactly_at_count() {
        let plan = Plan {
            topic: crate::bench::parse_topic("t").unwrap(),
            body: Bytes::from_static(b"x"),
            batch: 200,
            burst: Bytes::new(),
            mpub_len: 0,
            limit: Some(450),
            claimed: AtomicU64::new(0),
            end: None,
            abort: AtomicBool::new(false),
        };
        let claims: Vec<u64> = (0..5).map(|_| plan.claim()).collect();
        assert_eq!(claims, [200, 200, 50, 0, 0]);
        let tail = plan.encode_tail(50);
        let mut want = BytesMut::new();
        encode_mpub(&mut want, &plan.topic, &plan.body, 50);
        assert_eq!(tail, want);
    }
}
