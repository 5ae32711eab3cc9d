//! `bench_latency`: one PUB (or MPUB) at a time per connection, timing each round trip to its `OK`.
//!
//! With `--publishers` several connections do this at once, which is how
//! `--durable`'s group commit is measured: concurrent publishers share
//! fsyncs, so throughput grows with them while each waits for its own.
//!
//! A separate tool rather than a writer mode: the writer is about keeping
//! nsqd saturated, this one about an idle nsqd's answer time, and mixing the
//! two would make either figure harder to read.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use clap::Parser;
use nsq_protocol::Command;
use serde_json::json;

use super::conn::{connect_all, publish_reply, Conn, REPLY_TIMEOUT, SMALL_READ};
use super::{
    check_limits, limits_text, per_connection, percentile, round, Report, Result, RunClock, Target,
};

/// Latency benchmark: sequential PUB round trips.
#[derive(Parser, Debug, Clone)]
#[command(
    about = "Measure nsqd's publish round-trip latency, one message at a time.",
    mut_arg("topic", |a| a.default_value("bench_latency"))
)]
pub struct LatencyOptions {
    #[command(flatten)]
    pub target: Target,
    /// stop after this many round trips per publisher (0 = no limit)
    #[arg(long, default_value_t = 0)]
    pub count: u64,
    /// concurrent publishing connections, each one command at a time
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub publishers: u32,
    /// messages per command: 1 sends PUB, more send MPUB
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch: u32,
}

/// The percentiles reported, as (JSON key, percent).
const PERCENTILES: [(&str, f64); 5] = [
    ("p50_us", 50.0),
    ("p90_us", 90.0),
    ("p99_us", 99.0),
    ("p999_us", 99.9),
    ("max_us", 100.0),
];

/// Publish one command at a time per publisher and report the round-trip
/// distribution over all of them.
pub fn run(opts: &LatencyOptions) -> Result<Report> {
    let t = &opts.target;
    check_limits(*t.runfor, opts.count)?;
    let body = Bytes::from(vec![b'x'; t.size as usize]);
    let cmd = if opts.batch == 1 {
        Command::Pub {
            topic: t.topic.clone(),
            body,
        }
    } else {
        Command::Mpub {
            topic: t.topic.clone(),
            bodies: vec![body; opts.batch as usize].into(),
        }
    };
    let mut encoded = BytesMut::new();
    cmd.encode(&mut encoded);
    let encoded = encoded.freeze();
    let conns = connect_all(
        &t.tcp_address,
        "bench_latency",
        opts.publishers,
        SMALL_READ,
        REPLY_TIMEOUT,
    )?;
    eprintln!(
        "[bench_latency] {} of {} x {} bytes to {} at {}, {} publisher(s) one at a time, {}",
        cmd.name(),
        opts.batch,
        t.size,
        t.topic,
        t.tcp_address,
        opts.publishers,
        limits_text(*t.runfor, opts.count)
    );

    let clock = RunClock::start();
    let end = clock.end(*t.runfor);
    let abort = AtomicBool::new(false);
    let runs = per_connection(conns, &abort, |conn| {
        round_trips(conn, &encoded, opts.count, end, &abort)
    });
    let elapsed = clock.start.elapsed();
    let cpu = clock.cpu();
    let mut samples: Vec<u64> = runs?.into_iter().flatten().collect();
    samples.sort_unstable();

    let mut extra = BTreeMap::from([
        ("size", json!(t.size)),
        ("publishers", json!(opts.publishers)),
        ("batch", json!(opts.batch)),
    ]);
    for (key, p) in PERCENTILES {
        extra.insert(key, json!(micros(percentile(&samples, p))));
    }
    let mean = if samples.is_empty() {
        0
    } else {
        samples.iter().sum::<u64>() / samples.len() as u64
    };
    extra.insert("mean_us", json!(micros(mean)));
    Ok(Report {
        tool: "bench_latency",
        msgs: samples.len() as u64 * u64::from(opts.batch),
        elapsed,
        size: t.size as usize,
        cpu,
        extra,
    })
}

/// The summary line with the percentiles after upstream's figures.
pub fn human_line(report: &Report) -> String {
    let pct: Vec<String> = PERCENTILES
        .iter()
        .map(|(key, _)| {
            let name = key.trim_end_matches("_us");
            format!("{name} {}us", report.extra[key])
        })
        .collect();
    format!("{} - {}", report.human_line(), pct.join(" "))
}

fn micros(nanos: u64) -> f64 {
    round(nanos as f64 / 1000.0, 1)
}

/// One publisher: send `cmd`, wait for its `OK`, repeat until a limit or
/// another publisher's failure; the round trips in nanoseconds.
fn round_trips(
    mut conn: Conn,
    cmd: &[u8],
    count: u64,
    end: Option<Instant>,
    abort: &AtomicBool,
) -> Result<Vec<u64>> {
    // Sized for a fast loopback run so the vector rarely grows mid-measurement.
    let mut samples = Vec::with_capacity(if count > 0 { count as usize } else { 1 << 16 });
    loop {
        if count > 0 && samples.len() as u64 >= count {
            return Ok(samples);
        }
        let sent = Instant::now();
        if end.is_some_and(|e| sent >= e) || abort.load(Ordering::Relaxed) {
            return Ok(samples);
        }
        conn.write_all(cmd)?;
        wait_ok(&mut conn)?;
        samples.push(sent.elapsed().as_nanos() as u64);
    }
}

/// Read until the PUB's `OK`, answering heartbeats that come first.
fn wait_ok(conn: &mut Conn) -> Result<()> {
    loop {
        let frame = conn.read_frame()?;
        if publish_reply(conn, frame, "PUB")? {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn defaults_and_human_line() {
        let o: LatencyOptions = crate::bench::try_parse("bench_latency", &["-count=5"]).unwrap();
        assert_eq!(
            (
                o.target.topic.as_str(),
                o.target.size,
                o.count,
                o.publishers,
                o.batch
            ),
            ("bench_latency", 200, 5, 1, 1)
        );
        let mut extra = BTreeMap::new();
        for (key, _) in PERCENTILES {
            extra.insert(key, json!(12.5));
        }
        let r = Report {
            tool: "bench_latency",
            msgs: 4,
            elapsed: Duration::from_micros(50),
            size: 200,
            cpu: None,
            extra,
        };
        assert!(human_line(&r)
            .ends_with("12.500us/op - p50 12.5us p90 12.5us p99 12.5us p999 12.5us max 12.5us"));
        assert_eq!(micros(1_234_567), 1234.6);
    }
}
