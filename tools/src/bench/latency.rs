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
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use clap::Parser;
use nsq_app::GoDuration;
use nsq_protocol::{Command, Frame, TopicName, HEARTBEAT, OK};
use serde_json::json;

use super::conn::{server_error, Conn};
use super::writer::limits_text;
use super::{
    check_limits, cpu_since, parse_topic, percentile, process_cpu_time, round, BenchError, Report,
    Result,
};

/// A PUB unanswered for this long means nsqd is stuck.
const REPLY_TIMEOUT: Duration = Duration::from_secs(35);

/// Latency benchmark: sequential PUB round trips.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "bench_latency",
    about = "Measure nsqd's publish round-trip latency, one message at a time."
)]
pub struct LatencyOptions {
    /// <addr>:<port> to connect to nsqd
    #[arg(
        long,
        visible_alias = "nsqd-tcp-address",
        default_value = "127.0.0.1:4150"
    )]
    pub tcp_address: String,
    /// topic to publish to
    #[arg(long, default_value = "bench_latency", value_parser = parse_topic)]
    pub topic: TopicName,
    /// size of messages (bytes)
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    pub size: u32,
    /// how long to publish (0 = until --count)
    #[arg(long, default_value = "10s")]
    pub runfor: GoDuration,
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
    check_limits(*opts.runfor, opts.count)?;
    let body = Bytes::from(vec![b'x'; opts.size as usize]);
    let cmd = if opts.batch == 1 {
        Command::Pub {
            topic: opts.topic.clone(),
            body,
        }
    } else {
        Command::Mpub {
            topic: opts.topic.clone(),
            bodies: vec![body; opts.batch as usize],
        }
    };
    let mut encoded = BytesMut::new();
    cmd.encode(&mut encoded);
    let encoded = encoded.freeze();
    let conns = (0..opts.publishers)
        .map(|_| {
            let mut conn = Conn::connect(&opts.tcp_address, "bench_latency")?;
            conn.set_read_timeout(Some(REPLY_TIMEOUT))?;
            Ok(conn)
        })
        .collect::<Result<Vec<_>>>()?;
    eprintln!(
        "[bench_latency] {} of {} x {} bytes to {} at {}, {} publisher(s) one at a time, {}",
        cmd.name(),
        opts.batch,
        opts.size,
        opts.topic,
        opts.tcp_address,
        opts.publishers,
        limits_text(*opts.runfor, opts.count)
    );

    let cpu_before = process_cpu_time();
    let start = Instant::now();
    let end = (!opts.runfor.is_zero()).then(|| start + *opts.runfor);
    let runs = std::thread::scope(|scope| {
        let handles: Vec<_> = conns
            .into_iter()
            .map(|conn| {
                let cmd = &encoded;
                scope.spawn(move || round_trips(conn, cmd, opts.count, end))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("publisher thread panicked"))
            .collect::<Vec<_>>()
    });
    let elapsed = start.elapsed();
    let cpu = cpu_since(cpu_before);
    let mut samples = Vec::new();
    for run in runs {
        samples.extend(run?);
    }
    samples.sort_unstable();

    let mut extra = BTreeMap::from([
        ("size", json!(opts.size)),
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
        size: opts.size as usize,
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

/// One publisher: send `cmd`, wait for its `OK`, repeat; the round trips in
/// nanoseconds.
fn round_trips(mut conn: Conn, cmd: &[u8], count: u64, end: Option<Instant>) -> Result<Vec<u64>> {
    // Sized for a fast loopback run so the vector rarely grows mid-measurement.
    let mut samples = Vec::with_capacity(if count > 0 { count as usize } else { 1 << 16 });
    loop {
        if count > 0 && samples.len() as u64 >= count {
            return Ok(samples);
        }
        let sent = Instant::now();
        if end.is_some_and(|e| sent >= e) {
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
        match conn.read_frame()? {
            Frame::Response(data) if data == OK => return Ok(()),
            Frame::Response(data) if data == HEARTBEAT => conn.send(&Command::Nop)?,
            Frame::Response(data) => {
                return Err(BenchError::Unexpected(format!(
                    "response {:?} to PUB",
                    String::from_utf8_lossy(&data)
                )))
            }
            Frame::Error(text) => return Err(server_error("PUB", &text)),
            Frame::Message(m) => {
                return Err(BenchError::Unexpected(format!(
                    "message {} on a publishing connection",
                    m.id
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_human_line() {
        let argv: Vec<std::ffi::OsString> = vec!["bench_latency".into(), "-count=5".into()];
        let o: LatencyOptions = nsq_app::try_parse_options("bench_latency", argv, &[]).unwrap();
        assert_eq!(
            (o.topic.as_str(), o.size, o.count, o.publishers, o.batch),
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
