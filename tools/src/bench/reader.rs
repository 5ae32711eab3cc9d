//! `bench_reader`: SUB with a high RDY and FIN every message, counting finished messages.
//!
//! The FINs for everything one `read` brought in go out in a single `write`,
//! so the consumer costs nsqd one wake-up per buffer of messages, as a good
//! client library would, and never one syscall per message.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use clap::Parser;
use nsq_protocol::{ChannelName, Command, Frame, HEARTBEAT};
use serde_json::json;

use super::conn::{connect_all, server_error, Conn, Incoming, READ_CHUNK, REPLY_TIMEOUT};
use super::{
    check_limits, limits_text, parse_channel, per_connection, BenchError, Report, Result, RunClock,
    Target,
};

/// How often an idle connection looks at the clock and the shared count, so
/// a run ends on time even when no messages are left; with many connections
/// each looks less often ([`poll_interval`]), so idle ones cost no more in all.
const POLL: Duration = Duration::from_millis(20);

/// Consume benchmark: SUB, RDY, FIN every message as it arrives.
#[derive(Parser, Debug, Clone)]
#[command(about = "Measure how fast nsqd delivers messages to consumers.")]
pub struct ReaderOptions {
    #[command(flatten)]
    pub target: Target,
    /// channel to receive messages on (with --channels=N above 1, channels
    /// <channel>0 to <channel>N-1)
    #[arg(long, default_value = "ch", value_parser = parse_channel)]
    pub channel: ChannelName,
    /// channels of the topic to consume, connections spread over them in turn
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub channels: u32,
    /// RDY count per connection (0 subscribes and holds the channel open)
    #[arg(long, default_value_t = 2500)]
    pub rdy: u64,
    /// stop once this many messages have been finished over all connections (0 = no limit)
    #[arg(long, default_value_t = 0)]
    pub count: u64,
    /// consuming connections, one thread each (at least one per channel)
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub connections: u32,
}

impl ReaderOptions {
    /// The channel names consumed: `--channel` itself, or numbered after it.
    pub fn channel_names(&self) -> Result<Vec<ChannelName>> {
        if self.channels == 1 {
            return Ok(vec![self.channel.clone()]);
        }
        (0..self.channels)
            .map(|i| {
                let name = format!("{}{i}", self.channel);
                ChannelName::new(name.as_bytes()).ok_or_else(|| {
                    BenchError::Config(format!("channel name {name:?} is not valid"))
                })
            })
            .collect()
    }

    /// Connections in all: `--connections`, and never fewer than channels.
    pub fn total_connections(&self) -> u32 {
        self.connections.max(self.channels)
    }
}

/// How long an idle connection's read waits: [`POLL`], or a millisecond per
/// connection when there are many, so a thousand idle threads wake a
/// thousand times a second in all rather than fifty thousand.
fn poll_interval(connections: u32) -> Duration {
    POLL.max(Duration::from_millis(connections.into()))
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
    let t = &opts.target;
    check_limits(*t.runfor, opts.count)?;
    let channels = opts.channel_names()?;
    let n = opts.total_connections();
    // One connection has a whole READ_CHUNK; many share about that much.
    let chunk = READ_CHUNK / n as usize;
    let mut conns = connect_all(&t.tcp_address, "bench_reader", n, chunk, REPLY_TIMEOUT)?;
    for (conn, channel) in conns.iter_mut().zip(channels.iter().cycle()) {
        // A loaded nsqd may take a while to answer SUB; only afterwards do
        // reads time out often, to watch the clock.
        conn.subscribe(&t.topic, channel)?;
        conn.set_read_timeout(Some(poll_interval(n)))?;
    }
    // scripts/bench.sh waits for this line before it publishes, so that the
    // channel exists and receives every message.
    eprintln!(
        "[bench_reader] subscribed {n} connections to {}/{}{} at {}, RDY {}, {}",
        t.topic,
        opts.channel,
        if opts.channels > 1 {
            format!("0..{}", opts.channels - 1)
        } else {
            String::new()
        },
        t.tcp_address,
        opts.rdy,
        limits_text(*t.runfor, opts.count)
    );

    let clock = RunClock::start();
    let shared = Shared {
        rdy: opts.rdy,
        limit: (opts.count > 0).then_some(opts.count),
        end: clock.end(*t.runfor),
        finished: AtomicU64::new(0),
        reached: OnceLock::new(),
        stop: AtomicBool::new(false),
    };
    per_connection(conns, &shared.stop, |conn| consume(conn, &shared))?;
    let elapsed = shared
        .reached
        .get()
        .map_or_else(|| clock.start.elapsed(), |t| *t - clock.start);
    let extra = BTreeMap::from([
        ("size", json!(t.size)),
        ("rdy", json!(opts.rdy)),
        ("channels", json!(opts.channels)),
        ("connections", json!(n)),
        ("count_reached", json!(shared.reached.get().is_some())),
    ]);
    Ok(Report {
        tool: "bench_reader",
        msgs: shared.finished.load(Ordering::Relaxed),
        elapsed,
        size: t.size as usize,
        cpu: clock.cpu(),
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

    fn try_parse(args: &[&str]) -> Result<ReaderOptions, nsq_app::FlagError> {
        crate::bench::try_parse("bench_reader", args)
    }

    fn parse(args: &[&str]) -> ReaderOptions {
        try_parse(args).unwrap()
    }

    #[test]
    fn defaults_and_flags() {
        let o = parse(&[]);
        assert_eq!(o.target.topic.as_str(), "sub_bench");
        assert_eq!(o.channel.as_str(), "ch");
        assert_eq!(
            (o.target.size, o.rdy, o.connections, o.count, o.channels),
            (200, 2500, 1, 0, 1)
        );
        assert_eq!(*o.target.runfor, Duration::from_secs(10));
        let o = parse(&["-channel=c2", "-rdy", "0", "--runfor=0", "--count=7"]);
        assert_eq!((o.channel.as_str(), o.rdy, o.count), ("c2", 0, 7));
        assert!(o.target.runfor.is_zero());
        assert!(try_parse(&["--channel=a/b"]).is_err());
    }

    #[test]
    fn channels_are_numbered_and_each_gets_a_connection() {
        let names = |o: &ReaderOptions| -> Vec<String> {
            let names = o.channel_names().unwrap();
            names.iter().map(|c| c.to_string()).collect()
        };
        let one = parse(&["--connections=3"]);
        assert_eq!(
            (names(&one), one.total_connections()),
            (vec!["ch".to_string()], 3)
        );
        let many = parse(&["--channels=3", "--channel=c", "--connections=2"]);
        assert_eq!(names(&many), ["c0", "c1", "c2"]);
        assert_eq!(many.total_connections(), 3);
        // A name at the length limit has no room for a number.
        let long = "c".repeat(64);
        let too_long = parse(&["--channels=2", &format!("--channel={long}")]);
        assert!(too_long.channel_names().is_err());
        assert_eq!(poll_interval(1), POLL);
        assert_eq!(poll_interval(1000), Duration::from_secs(1));
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
