//! `bench_latency`: one PUB at a time on one connection, timing each round trip to its `OK`.
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
#[command(name = "bench_latency")]
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
    /// stop after this many round trips (0 = no limit)
    #[arg(long, default_value_t = 0)]
    pub count: u64,
}

/// The percentiles reported, as (JSON key, percent).
const PERCENTILES: [(&str, f64); 5] = [
    ("p50_us", 50.0),
    ("p90_us", 90.0),
    ("p99_us", 99.0),
    ("p999_us", 99.9),
    ("max_us", 100.0),
];

/// Publish one message at a time and report the round-trip distribution.
pub fn run(opts: &LatencyOptions) -> Result<Report> {
    check_limits(*opts.runfor, opts.count)?;
    let mut conn = Conn::connect(&opts.tcp_address, "bench_latency")?;
    conn.set_read_timeout(Some(REPLY_TIMEOUT))?;
    let mut pub_cmd = BytesMut::new();
    Command::Pub {
        topic: opts.topic.clone(),
        body: Bytes::from(vec![b'x'; opts.size as usize]),
    }
    .encode(&mut pub_cmd);
    eprintln!(
        "[bench_latency] PUB {} bytes to {} at {}, one at a time, {}",
        opts.size,
        opts.topic,
        opts.tcp_address,
        limits_text(*opts.runfor, opts.count)
    );

    // Sized for a fast loopback run so the vector rarely grows mid-measurement.
    let mut samples: Vec<u64> = Vec::with_capacity(if opts.count > 0 {
        opts.count as usize
    } else {
        1 << 20
    });
    let cpu_before = process_cpu_time();
    let start = Instant::now();
    let end = (!opts.runfor.is_zero()).then(|| start + *opts.runfor);
    loop {
        if opts.count > 0 && samples.len() as u64 >= opts.count {
            break;
        }
        let sent = Instant::now();
        if end.is_some_and(|e| sent >= e) {
            break;
        }
        conn.write_all(&pub_cmd)?;
        wait_ok(&mut conn)?;
        samples.push(sent.elapsed().as_nanos() as u64);
    }
    let elapsed = start.elapsed();
    let cpu = cpu_since(cpu_before);
    samples.sort_unstable();

    let mut extra = BTreeMap::from([("size", json!(opts.size))]);
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
        msgs: samples.len() as u64,
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
            (o.topic.as_str(), o.size, o.count),
            ("bench_latency", 200, 5)
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
