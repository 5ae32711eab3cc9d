//! Pushing stats to statsd (`--statsd-address`): every `--statsd-interval`,
//! upstream's metric names as UDP lines, counters as deltas since the last
//! push, packed into datagrams of at most `--statsd-udp-packet-size` bytes
//! without splitting a line, and spread over the interval so a large
//! deployment does not burst.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, error, info, warn};

use crate::e2e::E2eResult;
use crate::nsqd::Nsqd;
use crate::stats::{self, MemStats, StatsFilter, TopicReport};

/// The key prefix: `--statsd-prefix` with `%s` replaced by the host key
/// (`<broadcast_address>_<broadcast_http_port>`, `.` and `:` turned into `_`)
/// and a trailing `.`, as upstream computes it at startup.
pub fn prefix(nsqd: &Nsqd) -> String {
    let o = &nsqd.opts;
    if o.statsd_prefix.is_empty() {
        return String::new();
    }
    let port = if o.broadcast_http_port > 0 {
        o.broadcast_http_port
    } else {
        nsqd.http_addr().map_or(0, |a| a.port())
    };
    let host = o.broadcast_address();
    // Go's net.JoinHostPort brackets IPv6 literals.
    let joined = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut p = o
        .statsd_prefix
        .replace("%s", &joined.replace(['.', ':'], "_"));
    if !p.ends_with('.') {
        p.push('.');
    }
    p
}

#[derive(Debug, Default, Clone)]
struct ChannelCounts {
    message_count: u64,
    requeue_count: u64,
    timeout_count: u64,
}

#[derive(Debug, Default, Clone)]
struct TopicCounts {
    message_count: u64,
    message_bytes: u64,
    channels: HashMap<String, ChannelCounts>,
}

/// Counter values at the last push; a topic or channel absent then counts
/// from zero, as upstream diffs against an empty struct.
#[derive(Debug, Default, Clone)]
pub struct LastPush {
    topics: HashMap<String, TopicCounts>,
    gc_runs: u64,
}

/// A counter's row: what it grew by since the last push. Upstream's
/// counters are uint64 differences sent as int64: a topic recreated with
/// lower counts yields a negative delta, as there.
fn counter(key: &str, now: u64, then: u64) -> (bool, &str, i64) {
    (true, key, now.wrapping_sub(then) as i64)
}

/// A gauge's row: its value now.
fn gauge(key: &str, value: u64) -> (bool, &str, i64) {
    (false, key, value as i64)
}

/// `rows` (is a counter, key, value) under `prefix`, then the e2e
/// percentiles: what upstream sends for a topic and for a channel.
fn push_group(
    out: &mut Vec<(bool, String, i64)>,
    prefix: &str,
    rows: &[(bool, &str, i64)],
    e2e: &E2eResult,
) {
    for &(counter, key, value) in rows {
        out.push((counter, format!("{prefix}.{key}"), value));
    }
    for &(q, v) in e2e.percentiles.iter().flatten() {
        out.push((
            false,
            format!("{prefix}.e2e_processing_latency_{:.0}", q * 100.0),
            v as i64,
        ));
    }
}

/// What one push sends, and the counters to diff against next time.
pub fn lines(
    prefix: &str,
    topics: &[TopicReport],
    last: &LastPush,
    mem: Option<&MemStats>,
    exclude_ephemeral: bool,
) -> (Vec<String>, LastPush) {
    let mut next = LastPush::default();
    // (is a counter, key, value), in upstream's order.
    let mut ordered: Vec<(bool, String, i64)> = Vec::new();
    let ephemeral = |name: &str| exclude_ephemeral && name.ends_with("#ephemeral");
    for t in topics {
        let mut counts = TopicCounts {
            message_count: t.message_count,
            message_bytes: t.message_bytes,
            channels: HashMap::new(),
        };
        for c in &t.channels {
            counts.channels.insert(
                c.channel_name.clone(),
                ChannelCounts {
                    message_count: c.message_count,
                    requeue_count: c.requeue_count,
                    timeout_count: c.timeout_count,
                },
            );
        }
        if ephemeral(&t.topic_name) {
            next.topics.insert(t.topic_name.clone(), counts);
            continue;
        }
        let lt = last.topics.get(&t.topic_name).cloned().unwrap_or_default();
        let n = &t.topic_name;
        let topic_rows = [
            counter("message_count", t.message_count, lt.message_count),
            counter("message_bytes", t.message_bytes, lt.message_bytes),
            gauge("depth", t.depth),
            gauge("backend_depth", t.backend_depth),
        ];
        push_group(
            &mut ordered,
            &format!("topic.{n}"),
            &topic_rows,
            &t.e2e_processing_latency,
        );
        for c in &t.channels {
            if ephemeral(&c.channel_name) {
                continue;
            }
            let lc = lt
                .channels
                .get(&c.channel_name)
                .cloned()
                .unwrap_or_default();
            let p = format!("topic.{n}.channel.{}", c.channel_name);
            let channel_rows = [
                counter("message_count", c.message_count, lc.message_count),
                gauge("depth", c.depth),
                gauge("backend_depth", c.backend_depth),
                gauge("in_flight_count", c.in_flight_count),
                gauge("deferred_count", c.deferred_count),
                counter("requeue_count", c.requeue_count, lc.requeue_count),
                counter("timeout_count", c.timeout_count, lc.timeout_count),
                gauge("clients", c.client_count),
            ];
            push_group(&mut ordered, &p, &channel_rows, &c.e2e_processing_latency);
        }
        next.topics.insert(t.topic_name.clone(), counts);
    }
    if let Some(m) = mem {
        for (k, v) in [
            ("mem.heap_objects", m.heap_objects),
            ("mem.heap_idle_bytes", m.heap_idle_bytes),
            ("mem.heap_in_use_bytes", m.heap_in_use_bytes),
            ("mem.heap_released_bytes", m.heap_released_bytes),
            ("mem.gc_pause_usec_100", m.gc_pause_usec_100),
            ("mem.gc_pause_usec_99", m.gc_pause_usec_99),
            ("mem.gc_pause_usec_95", m.gc_pause_usec_95),
            ("mem.next_gc_bytes", m.next_gc_bytes),
        ] {
            ordered.push((false, k.to_string(), v as i64));
        }
        let (is_counter, key, runs) = counter("mem.gc_runs", m.gc_total_runs, last.gc_runs);
        ordered.push((is_counter, key.to_string(), runs));
        next.gc_runs = m.gc_total_runs;
    } else {
        next.gc_runs = last.gc_runs;
    }
    let out = ordered
        .into_iter()
        .map(|(is_counter, stat, v)| {
            let kind = if is_counter { "c" } else { "g" };
            format!("{prefix}{stat}:{v}|{kind}\n")
        })
        .collect();
    (out, next)
}

/// Pack lines into datagrams as upstream's boundary-buffered writer does:
/// a line that does not fit the current datagram starts the next; a line
/// longer than a datagram goes alone.
pub fn pack(lines: &[String], size: usize) -> Vec<Vec<u8>> {
    // Go's bufio falls back to 4096 for a size that is not positive.
    let size = if size == 0 { 4096 } else { size };
    let mut packets = Vec::new();
    let mut cur: Vec<u8> = Vec::with_capacity(size);
    for l in lines {
        let l = l.as_bytes();
        if l.len() > size - cur.len() && !cur.is_empty() {
            packets.push(std::mem::replace(&mut cur, Vec::with_capacity(size)));
        }
        if l.len() > size {
            packets.push(l.to_vec());
        } else {
            cur.extend_from_slice(l);
        }
    }
    if !cur.is_empty() {
        packets.push(cur);
    }
    packets
}

async fn connect(addr: &str) -> std::io::Result<UdpSocket> {
    let target: SocketAddr = tokio::net::lookup_host(addr)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::other("no address"))?;
    let local: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(target).await?;
    Ok(socket)
}

/// Push stats every interval until nsqd stops. Spawned only when
/// `--statsd-address` is set.
pub(crate) async fn statsd_loop(nsqd: Arc<Nsqd>) {
    let interval = *nsqd.opts.statsd_interval;
    if interval.is_zero() {
        warn!("STATSD: --statsd-interval must be positive; not pushing");
        return;
    }
    let addr = nsqd.opts.statsd_address.clone();
    let prefix = prefix(&nsqd);
    let size = usize::try_from(nsqd.opts.statsd_udp_packet_size).unwrap_or(0);
    // Upstream's ticker first fires one interval after start.
    let mut tick = tokio::time::interval_at(Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last = LastPush::default();
    loop {
        tokio::select! {
            _ = nsqd.cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let socket = match connect(&addr).await {
            Ok(s) => s,
            Err(e) => {
                error!("failed to create UDP socket to statsd({addr}) - {e}");
                continue;
            }
        };
        info!("STATSD: pushing stats to {addr}");
        let snap = stats::collect(&nsqd, &StatsFilter::default());
        let mem = nsqd.opts.statsd_mem_stats.then(MemStats::read);
        let (lines, next) = lines(
            &prefix,
            snap.topics.as_deref().unwrap_or_default(),
            &last,
            mem.as_ref(),
            nsqd.opts.statsd_exclude_ephemeral,
        );
        last = next;
        let packets = pack(&lines, size);
        // Spread the datagrams over the interval less a second, as upstream.
        let gap = interval
            .saturating_sub(Duration::from_secs(1))
            .checked_div(packets.len() as u32)
            .unwrap_or_default();
        let n = packets.len();
        for (i, p) in packets.into_iter().enumerate() {
            let start = Instant::now();
            if let Err(e) = socket.send(&p).await {
                debug!("STATSD: send to {addr} failed - {e}");
            }
            if i + 1 < n && !gap.is_zero() {
                tokio::select! {
                    _ = nsqd.cancel.cancelled() => return,
                    _ = tokio::time::sleep_until(start + gap) => {}
                }
            }
        }
    }
    info!("STATSD: closing");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::e2e::E2eResult;
    use crate::stats::ChannelReport;

    fn topic(name: &str, msgs: u64, channels: Vec<ChannelReport>) -> TopicReport {
        TopicReport {
            topic_name: name.into(),
            channels,
            depth: 3,
            backend_depth: 1,
            message_count: msgs,
            message_bytes: msgs * 10,
            paused: false,
            e2e_processing_latency: E2eResult {
                count: 1,
                percentiles: Some(vec![(0.99, 1234.9)]),
            },
            disk: Default::default(),
        }
    }

    fn channel(name: &str, msgs: u64) -> ChannelReport {
        ChannelReport {
            channel_name: name.into(),
            depth: 2,
            backend_depth: 0,
            in_flight_count: 1,
            deferred_count: 0,
            message_count: msgs,
            locality: Default::default(),
            requeue_count: 4,
            timeout_count: 5,
            client_count: 6,
            clients: None,
            paused: false,
            e2e_processing_latency: E2eResult::default(),
            disk: Default::default(),
            max_attempts: None,
            dead_letter_topic: None,
            dead_count: 0,
        }
    }

    #[test]
    fn upstream_names_and_deltas() {
        let topics = vec![topic("t", 10, vec![channel("c", 7)])];
        let (l, last) = lines("nsq.h_1.", &topics, &LastPush::default(), None, false);
        assert_eq!(
            l.concat(),
            "nsq.h_1.topic.t.message_count:10|c\n\
             nsq.h_1.topic.t.message_bytes:100|c\n\
             nsq.h_1.topic.t.depth:3|g\n\
             nsq.h_1.topic.t.backend_depth:1|g\n\
             nsq.h_1.topic.t.e2e_processing_latency_99:1234|g\n\
             nsq.h_1.topic.t.channel.c.message_count:7|c\n\
             nsq.h_1.topic.t.channel.c.depth:2|g\n\
             nsq.h_1.topic.t.channel.c.backend_depth:0|g\n\
             nsq.h_1.topic.t.channel.c.in_flight_count:1|g\n\
             nsq.h_1.topic.t.channel.c.deferred_count:0|g\n\
             nsq.h_1.topic.t.channel.c.requeue_count:4|c\n\
             nsq.h_1.topic.t.channel.c.timeout_count:5|c\n\
             nsq.h_1.topic.t.channel.c.clients:6|g\n"
        );
        let topics = vec![topic("t", 15, vec![channel("c", 9)])];
        let (l, _) = lines("", &topics, &last, None, false);
        assert!(l.contains(&"topic.t.message_count:5|c\n".to_string()));
        assert!(l.contains(&"topic.t.channel.c.message_count:2|c\n".to_string()));
        assert!(l.contains(&"topic.t.channel.c.requeue_count:0|c\n".to_string()));
    }

    #[test]
    fn ephemeral_exclusion_and_mem() {
        let topics = vec![
            topic("e#ephemeral", 1, vec![channel("c", 1)]),
            topic("t", 1, vec![channel("x#ephemeral", 1), channel("y", 1)]),
        ];
        let mem = MemStats {
            heap_in_use_bytes: 42,
            ..MemStats::default()
        };
        let (l, _) = lines("p.", &topics, &LastPush::default(), Some(&mem), true);
        let all = l.concat();
        assert!(!all.contains("ephemeral"));
        assert!(all.contains("p.topic.t.channel.y.depth:2|g\n"));
        assert!(all.contains("p.mem.heap_in_use_bytes:42|g\n"));
        assert!(all.ends_with("p.mem.gc_runs:0|c\n"));
        let (l, _) = lines("p.", &topics, &LastPush::default(), None, false);
        assert!(l.concat().contains("p.topic.e#ephemeral.depth:3|g\n"));
    }

    #[test]
    fn packing_never_splits_lines() {
        let lines: Vec<String> = (0..50).map(|i| format!("nsq.stat.{i}:{i}|g\n")).collect();
        let packets = pack(&lines, 64);
        assert!(packets.iter().all(|p| p.len() <= 64 && p.ends_with(b"\n")));
        let joined: Vec<u8> = packets.concat();
        assert_eq!(joined, lines.concat().into_bytes());
        // A line longer than a packet goes alone.
        let long = vec!["a".repeat(100) + "\n", "b\n".into(), "c\n".into()];
        let packets = pack(&long, 64);
        assert_eq!(packets.len(), 2);
        assert_eq!(packets[0].len(), 101);
        assert_eq!(packets[1], b"b\nc\n");
    }
}
