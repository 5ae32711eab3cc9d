//! The benchmark tools `bench_writer`, `bench_reader` and `bench_latency`: their options, run loops and reports.
//!
//! They play upstream's `bench/bench_writer` and `bench/bench_reader` roles
//! and keep their flags and human summary line, so numbers can be put side by
//! side with upstream nsqd's. Each tool prints that line on stderr (upstream
//! logs it) and one JSON object on stdout for scripts (`scripts/bench.sh`).
//!
//! They share a small box with the server under test, so they are built not to
//! be the bottleneck: plain threads on blocking sockets (one per connection,
//! asleep in `read` while nsqd works), commands encoded once and resent as the
//! same bytes, 256 KiB reads, frames decoded in place, and every answer a read
//! calls for (FINs, NOPs) written back in one `write`.

pub mod conn;
pub mod flags;
pub mod latency;
pub mod reader;
pub mod writer;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nsq_app::GoDuration;
use nsq_protocol::frame::FrameError;
use nsq_protocol::{ChannelName, TopicName};
use serde::Serialize;

pub use conn::Conn;
pub use flags::Target;
pub use latency::LatencyOptions;
pub use reader::ReaderOptions;
pub use writer::WriterOptions;

/// Why a benchmark run stopped early.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Config(String),
    #[error("connection to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad frame from nsqd: {0}")]
    Frame(#[from] FrameError),
    /// nsqd sent an error frame; upstream's tools panic here, we stop cleanly.
    #[error("nsqd answered {after} with an error: {text}")]
    Server { after: &'static str, text: String },
    #[error("nsqd closed the connection")]
    Closed,
    #[error("nsqd sent nothing for {0:?} while replies were due")]
    Silent(Duration),
    #[error("unexpected from nsqd: {0}")]
    Unexpected(String),
}

pub type Result<T, E = BenchError> = std::result::Result<T, E>;

/// A `--topic` or `--channel` value that is not a valid NSQ name.
#[derive(Debug, thiserror::Error)]
#[error("{kind} name {name:?} is not valid")]
pub struct BadName {
    /// `topic` or `channel`.
    pub kind: &'static str,
    pub name: String,
}

/// clap value parser: a topic name is checked once, at the edge.
pub fn parse_topic(s: &str) -> Result<TopicName, BadName> {
    TopicName::new(s.as_bytes()).ok_or_else(|| BadName {
        kind: "topic",
        name: s.to_owned(),
    })
}

/// clap value parser for channel names.
pub fn parse_channel(s: &str) -> Result<ChannelName, BadName> {
    ChannelName::new(s.as_bytes()).ok_or_else(|| BadName {
        kind: "channel",
        name: s.to_owned(),
    })
}

/// Stop conditions shared by the tools: a run ends at `runfor` or after
/// `count` messages, whichever comes first; zero turns a limit off.
pub fn check_limits(runfor: Duration, count: u64) -> Result<()> {
    if runfor.is_zero() && count == 0 {
        return Err(BenchError::Config(
            "--runfor=0 needs --count, or the run would never end".into(),
        ));
    }
    Ok(())
}

/// How a run's limits read in a tool's start line.
pub fn limits_text(runfor: Duration, count: u64) -> String {
    match (runfor.is_zero(), count) {
        (false, 0) => format!("for {}", GoDuration(runfor)),
        (true, n) => format!("for {n} messages"),
        (false, n) => format!("for {} or {n} messages", GoDuration(runfor)),
    }
}

/// Run `work` on a thread of its own for each connection and collect what
/// each returns, in connection order. The first to fail raises `abort`, which
/// the others watch, so a run never waits on survivors; its error is the
/// result.
pub fn per_connection<T: Send>(
    conns: Vec<Conn>,
    abort: &AtomicBool,
    work: impl Fn(Conn) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let work = &work;
    std::thread::scope(|scope| {
        let handles: Vec<_> = conns
            .into_iter()
            .map(|conn| {
                scope.spawn(move || {
                    let res = work(conn);
                    if res.is_err() {
                        abort.store(true, Ordering::Relaxed);
                    }
                    res
                })
            })
            .collect();
        let mut out = Vec::with_capacity(handles.len());
        let mut failure = None;
        for h in handles {
            match h.join().expect("bench connection thread panicked") {
                Ok(v) => out.push(v),
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        failure.map_or(Ok(out), Err)
    })
}

/// What a tool measured, printed as upstream's summary line and as JSON.
#[derive(Debug, Clone)]
pub struct Report {
    pub tool: &'static str,
    pub msgs: u64,
    pub elapsed: Duration,
    /// Message body size, for the MB/s figure.
    pub size: usize,
    /// CPU this process used during the run (user, system), to show the tool
    /// is not what limits the figure.
    pub cpu: Option<(Duration, Duration)>,
    /// Tool-specific fields (settings, percentiles) appended to the JSON.
    pub extra: BTreeMap<&'static str, serde_json::Value>,
}

#[derive(Serialize)]
struct JsonLine<'a> {
    tool: &'a str,
    msgs: u64,
    seconds: f64,
    msgs_per_sec: f64,
    mb_per_sec: f64,
    us_per_op: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu_user_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu_sys_seconds: Option<f64>,
    #[serde(flatten)]
    extra: &'a BTreeMap<&'static str, serde_json::Value>,
}

impl Report {
    pub fn msgs_per_sec(&self) -> f64 {
        per_sec(self.msgs as f64, self.elapsed)
    }

    /// MiB/s of bodies, labelled "mb/s" as upstream's tools do.
    pub fn mb_per_sec(&self) -> f64 {
        per_sec((self.msgs * self.size as u64) as f64, self.elapsed) / 1024.0 / 1024.0
    }

    /// Whole microseconds of the run per message, upstream's formula.
    pub fn us_per_op(&self) -> f64 {
        if self.msgs == 0 {
            return 0.0;
        }
        self.elapsed.as_micros() as f64 / self.msgs as f64
    }

    /// `duration: 10.000123s - 38.147mb/s - 200000.000ops/s - 5.000us/op`
    pub fn human_line(&self) -> String {
        format!(
            "duration: {} - {:.3}mb/s - {:.3}ops/s - {:.3}us/op",
            GoDuration(self.elapsed),
            self.mb_per_sec(),
            self.msgs_per_sec(),
            self.us_per_op()
        )
    }

    pub fn json_line(&self) -> String {
        let line = JsonLine {
            tool: self.tool,
            msgs: self.msgs,
            seconds: round(self.elapsed.as_secs_f64(), 6),
            msgs_per_sec: round(self.msgs_per_sec(), 3),
            mb_per_sec: round(self.mb_per_sec(), 3),
            us_per_op: round(self.us_per_op(), 3),
            cpu_user_seconds: self.cpu.map(|(u, _)| round(u.as_secs_f64(), 2)),
            cpu_sys_seconds: self.cpu.map(|(_, s)| round(s.as_secs_f64(), 2)),
            extra: &self.extra,
        };
        serde_json::to_string(&line).expect("report fields serialise")
    }

    /// Human line on stderr (where upstream's log puts it), JSON on stdout.
    pub fn print(&self) {
        self.print_with(&self.human_line());
    }

    /// [`Report::print`] with a tool's own human line.
    pub fn print_with(&self, human: &str) {
        eprintln!("[{}] {human}", self.tool);
        println!("{}", self.json_line());
    }
}

fn per_sec(n: f64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        n / secs
    } else {
        0.0
    }
}

/// Rounded so the JSON stays readable; never NaN or infinite (JSON has neither).
pub fn round(x: f64, decimals: i32) -> f64 {
    if !x.is_finite() {
        return 0.0;
    }
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}

/// Nearest-rank percentile (`p` in 0..=100) of samples sorted ascending; 0
/// for no samples. Nearest rank never invents a value nobody measured.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    // The epsilon keeps 99.9% of 1000 at rank 999: in binary floating point
    // the product comes out a hair above the integer it should be.
    let rank = (p / 100.0 * sorted.len() as f64 - 1e-9).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// User and system CPU time from a `/proc/<pid>/stat` line.
///
/// The command name (field 2) may hold spaces and parentheses, so fields are
/// counted after its last `)`; utime and stime are fields 14 and 15, in
/// USER_HZ ticks, which Linux fixes at 100 per second for userspace.
pub fn parse_proc_stat_cpu(stat: &str) -> Option<(Duration, Duration)> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((
        Duration::from_millis(utime * 10),
        Duration::from_millis(stime * 10),
    ))
}

/// CPU this process has used so far (all threads); `None` off Linux.
pub fn process_cpu_time() -> Option<(Duration, Duration)> {
    parse_proc_stat_cpu(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// CPU used between two [`process_cpu_time`] readings.
pub fn cpu_since(before: Option<(Duration, Duration)>) -> Option<(Duration, Duration)> {
    let (u0, s0) = before?;
    let (u1, s1) = process_cpu_time()?;
    Some((u1.saturating_sub(u0), s1.saturating_sub(s0)))
}

/// A run's start, by the wall clock and in this process's CPU time.
pub struct RunClock {
    pub start: Instant,
    cpu: Option<(Duration, Duration)>,
}

impl RunClock {
    pub fn start() -> RunClock {
        RunClock {
            cpu: process_cpu_time(),
            start: Instant::now(),
        }
    }

    /// When `--runfor` ends the run; `None` when it is 0 (off).
    pub fn end(&self, runfor: Duration) -> Option<Instant> {
        (!runfor.is_zero()).then(|| self.start + runfor)
    }

    /// CPU (user, system) used since the start.
    pub fn cpu(&self) -> Option<(Duration, Duration)> {
        cpu_since(self.cpu)
    }
}

/// `tool`'s options from `args` (what follows the program name), parsed as
/// its `main` parses them.
#[cfg(test)]
pub(crate) fn try_parse<O: clap::Parser>(
    tool: &str,
    args: &[&str],
) -> Result<O, nsq_app::FlagError> {
    let argv = std::iter::once(tool).chain(args.iter().copied());
    nsq_app::try_parse_options(tool, argv.map(Into::into), &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 90.0), 90);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 99.9), 100);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&v, 0.0), 1);
        assert_eq!(percentile(&[7], 99.9), 7);
        assert_eq!(percentile(&[], 50.0), 0);
        let thousand: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&thousand, 99.9), 999);
    }

    #[test]
    fn proc_stat_fields_after_the_command_name() {
        // A command name with a space and a ')' must not shift the fields.
        let line = "4242 (bench (x) y) S 1 4242 4242 0 -1 4194304 100 0 0 0 250 37 0 0 20 0 3 0";
        assert_eq!(
            parse_proc_stat_cpu(line),
            Some((Duration::from_millis(2500), Duration::from_millis(370)))
        );
        assert_eq!(parse_proc_stat_cpu("1 (x) S 1"), None);
        assert!(process_cpu_time().is_some());
    }

    #[test]
    fn report_lines() {
        let mut extra = BTreeMap::new();
        extra.insert("connections", serde_json::json!(2));
        let r = Report {
            tool: "bench_writer",
            msgs: 2_000_000,
            elapsed: Duration::from_secs(10),
            size: 200,
            cpu: Some((Duration::from_millis(1500), Duration::from_millis(250))),
            extra,
        };
        assert_eq!(
            r.human_line(),
            "duration: 10s - 38.147mb/s - 200000.000ops/s - 5.000us/op"
        );
        assert_eq!(
            r.json_line(),
            r#"{"tool":"bench_writer","msgs":2000000,"seconds":10.0,"msgs_per_sec":200000.0,"mb_per_sec":38.147,"us_per_op":5.0,"cpu_user_seconds":1.5,"cpu_sys_seconds":0.25,"connections":2}"#
        );
        let empty = Report {
            msgs: 0,
            elapsed: Duration::ZERO,
            cpu: None,
            extra: BTreeMap::new(),
            ..r
        };
        assert!(empty.json_line().contains(r#""msgs_per_sec":0.0,"#));
    }

    #[test]
    fn limits_text_reads_well() {
        assert_eq!(limits_text(Duration::from_secs(10), 0), "for 10s");
        assert_eq!(limits_text(Duration::ZERO, 5), "for 5 messages");
    }

    #[test]
    fn names_and_limits() {
        assert!(parse_topic("sub_bench").is_ok());
        assert_eq!(
            parse_topic("bad topic").unwrap_err().to_string(),
            r#"topic name "bad topic" is not valid"#
        );
        assert!(parse_channel("ch#ephemeral").is_ok());
        assert!(check_limits(Duration::ZERO, 0).is_err());
        assert!(check_limits(Duration::ZERO, 5).is_ok());
    }
}
