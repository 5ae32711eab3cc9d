//! End-to-end processing latency: a bounded-memory quantile estimator per
//! channel, fed on every FIN, read by `/stats`, statsd and `/metrics`.
//!
//! Upstream keeps two "targeted quantile" streams per channel, each covering
//! half of `--e2e-processing-latency-window-time`, and rotates them so the
//! result always reflects between half and all of the window. We keep the
//! same two rotating windows, but each window is a uniform reservoir sample
//! (Vitter's algorithm R) of at most [`RESERVOIR`] latencies plus the exact
//! count and sum. Queries weight each kept sample by how many observations it
//! stands for, so a busy window and a quiet one merge fairly. Upstream's own
//! numbers are approximations too (perks' error bounds); clients only show
//! them.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rand::Rng;
use serde::ser::{SerializeMap, SerializeStruct};
use serde::{Serialize, Serializer};
use tokio::time::Instant;

use crate::message::unix_nanos;

/// Samples kept per window: p99 of a uniform sample this large is within
/// about ±0.3 percentile points, and two full windows cost 32 KiB.
pub const RESERVOIR: usize = 2048;

#[derive(Debug, Default, Clone)]
struct Window {
    /// Observations in this window, including those not kept.
    count: u64,
    samples: Vec<f64>,
}

impl Window {
    fn insert(&mut self, value: f64) {
        self.count += 1;
        if self.samples.len() < RESERVOIR {
            self.samples.push(value);
            return;
        }
        // Algorithm R: the n-th value replaces a kept one with chance k/n,
        // which keeps every value seen equally likely to be in the sample.
        let slot = rand::thread_rng().gen_range(0..self.count);
        if let Some(s) = self.samples.get_mut(slot as usize) {
            *s = value;
        }
    }

    fn clear(&mut self) {
        self.count = 0;
        self.samples.clear();
    }
}

#[derive(Debug)]
struct Windows {
    current: usize,
    /// When `current` became the current window.
    last_move: Instant,
    windows: [Window; 2],
    /// Every observation ever, for Prometheus' cumulative `_count`/`_sum`.
    total_count: u64,
    total_sum_ns: f64,
}

/// One channel's latency estimator. Its std Mutex is taken per FIN and per
/// stats read, never across an `.await` and never while holding another lock
/// (the channel records after releasing its own).
#[derive(Debug)]
pub struct E2eStream {
    half: Duration,
    inner: Mutex<Windows>,
}

impl E2eStream {
    /// A stream covering `window` (upstream's window time), as two halves.
    pub fn new(window: Duration) -> Self {
        E2eStream {
            // A zero window would rotate on every call; keep at least 1 ms.
            half: (window / 2).max(Duration::from_millis(1)),
            inner: Mutex::new(Windows {
                current: 0,
                last_move: Instant::now(),
                windows: [Window::default(), Window::default()],
                total_count: 0,
                total_sum_ns: 0.0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Windows> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drop what fell out of the window by `now`, as upstream's rotation does.
    fn rotate(&self, w: &mut Windows, now: Instant) {
        let elapsed = now.saturating_duration_since(w.last_move);
        if elapsed <= self.half {
            return;
        }
        let steps = (elapsed.as_nanos() / self.half.as_nanos()).max(1);
        if steps >= 2 {
            // Both halves are older than the window: start afresh.
            w.windows[0].clear();
            w.windows[1].clear();
        } else {
            w.current ^= 1;
            w.windows[w.current].clear();
        }
        // Advance in whole steps so window edges stay on a fixed grid, as
        // upstream's `lastMoveWindow.Add(MoveWindowTime)` does.
        let steps = u32::try_from(steps).unwrap_or(u32::MAX);
        w.last_move += self.half.saturating_mul(steps);
    }

    /// Record one latency in nanoseconds, observed at `now`.
    pub fn record_at(&self, latency_ns: f64, now: Instant) {
        let mut w = self.lock();
        self.rotate(&mut w, now);
        let cur = w.current;
        w.windows[cur].insert(latency_ns);
        w.total_count += 1;
        w.total_sum_ns += latency_ns;
    }

    /// Record that a message published at `timestamp_ns` (Unix nanoseconds)
    /// was just finished.
    pub fn record_finish(&self, timestamp_ns: i64) {
        let latency = unix_nanos().saturating_sub(timestamp_ns).max(0);
        self.record_at(latency as f64, Instant::now());
    }

    /// What the window holds at `now`, for queries and merging.
    pub fn snapshot_at(&self, now: Instant) -> E2eSnapshot {
        let mut w = self.lock();
        self.rotate(&mut w, now);
        let mut snap = E2eSnapshot {
            total_count: w.total_count,
            total_sum_ns: w.total_sum_ns,
            ..E2eSnapshot::default()
        };
        for win in &w.windows {
            snap.add_window(win);
        }
        snap
    }

    pub fn snapshot(&self) -> E2eSnapshot {
        self.snapshot_at(Instant::now())
    }
}

/// Weighted samples from one or more windows (one channel, or all channels
/// of a topic merged).
#[derive(Debug, Default, Clone)]
pub struct E2eSnapshot {
    /// Observations in the current window(s): upstream's `count`.
    pub count: u64,
    /// (latency ns, observations it stands for).
    samples: Vec<(f64, f64)>,
    /// Cumulative since start, for Prometheus.
    pub total_count: u64,
    pub total_sum_ns: f64,
}

impl E2eSnapshot {
    fn add_window(&mut self, win: &Window) {
        if win.samples.is_empty() {
            return;
        }
        self.count += win.count;
        let weight = win.count as f64 / win.samples.len() as f64;
        self.samples
            .extend(win.samples.iter().map(|&v| (v, weight)));
    }

    /// Fold another snapshot in (a topic merges its channels).
    pub fn merge(&mut self, other: &E2eSnapshot) {
        self.count += other.count;
        self.samples.extend_from_slice(&other.samples);
        self.total_count += other.total_count;
        self.total_sum_ns += other.total_sum_ns;
    }

    /// The value at each quantile in nanoseconds, 0 when there is no sample
    /// (as perks answers for an empty stream).
    pub fn quantiles(&self, qs: &[f64]) -> Vec<(f64, f64)> {
        let mut sorted = self.samples.clone();
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
        let total: f64 = sorted.iter().map(|s| s.1).sum();
        qs.iter()
            .map(|&q| (q, weighted_quantile(&sorted, total, q)))
            .collect()
    }

    /// Upstream's JSON result for these percentiles.
    pub fn result(&self, percentiles: &[f64]) -> E2eResult {
        E2eResult {
            count: self.count,
            percentiles: Some(self.quantiles(percentiles)),
        }
    }
}

fn weighted_quantile(sorted: &[(f64, f64)], total: f64, q: f64) -> f64 {
    if sorted.is_empty() || total <= 0.0 {
        return 0.0;
    }
    let target = q.clamp(0.0, 1.0) * total;
    let mut acc = 0.0;
    for &(v, w) in sorted {
        acc += w;
        if acc >= target {
            return v;
        }
    }
    sorted.last().map_or(0.0, |s| s.0)
}

/// `e2e_processing_latency` in `/stats`: `{"count":0,"percentiles":null}`
/// when not configured (or, for a topic, when it has no channel).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct E2eResult {
    pub count: u64,
    /// (quantile, value ns), highest quantile first.
    pub percentiles: Option<Vec<(f64, f64)>>,
}

impl E2eResult {
    /// The text format's `e2e%:` column: each value humanised, as upstream.
    pub fn human(&self) -> String {
        self.percentiles
            .iter()
            .flatten()
            .map(|&(_, v)| nanos_to_human(v))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Serialize for E2eResult {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Item(f64, f64);
        impl Serialize for Item {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                // A Go map: keys in sorted order.
                let mut m = s.serialize_map(Some(2))?;
                m.serialize_entry("quantile", &GoFloat(self.0))?;
                m.serialize_entry("value", &GoFloat(self.1))?;
                m.end()
            }
        }
        let mut st = s.serialize_struct("E2eResult", 2)?;
        st.serialize_field("count", &self.count)?;
        let items: Option<Vec<Item>> = self
            .percentiles
            .as_ref()
            .map(|p| p.iter().map(|&(q, v)| Item(q, v)).collect());
        st.serialize_field("percentiles", &items)?;
        st.end()
    }
}

/// A float written as Go's encoding/json writes it: whole numbers without a
/// fraction (`123456`, not `123456.0`).
pub struct GoFloat(pub f64);

impl Serialize for GoFloat {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v = self.0;
        if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
            s.serialize_i64(v as i64)
        } else {
            s.serialize_f64(v)
        }
    }
}

/// Upstream's `NanoSecondToHuman`: one decimal and the largest unit the
/// value exceeds.
pub fn nanos_to_human(v: f64) -> String {
    let (v, suffix) = if v > 1e9 {
        (v / 1e9, "s")
    } else if v > 1e6 {
        (v / 1e6, "ms")
    } else if v > 1e3 {
        (v / 1e3, "us")
    } else {
        (v, "ns")
    };
    format!("{v:.1}{suffix}")
}

/// A channel's latency result: `None` stream means not configured.
pub fn channel_result(stream: Option<&E2eStream>, percentiles: &[f64]) -> E2eResult {
    match stream {
        Some(s) => s.snapshot().result(percentiles),
        None => E2eResult::default(),
    }
}

/// A topic's result: the merge of its channels' windows, as upstream's
/// `AggregateChannelE2eProcessingLatency`; null percentiles when no channel
/// has a stream.
pub fn topic_result<'a>(
    streams: impl IntoIterator<Item = &'a E2eStream>,
    percentiles: &[f64],
) -> E2eResult {
    topic_snapshot(streams)
        .map(|s| s.result(percentiles))
        .unwrap_or_default()
}

/// The merged snapshot of a topic's channels' streams, `None` when there
/// are none.
pub fn topic_snapshot<'a>(streams: impl IntoIterator<Item = &'a E2eStream>) -> Option<E2eSnapshot> {
    let mut merged: Option<E2eSnapshot> = None;
    for s in streams {
        merged
            .get_or_insert_with(E2eSnapshot::default)
            .merge(&s.snapshot());
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_stream_answers_zero_for_each_quantile() {
        let s = E2eStream::new(Duration::from_secs(600));
        let r = s.snapshot().result(&[0.99, 0.5]);
        assert_eq!(r.count, 0);
        assert_eq!(r.percentiles, Some(vec![(0.99, 0.0), (0.5, 0.0)]));
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"count":0,"percentiles":[{"quantile":0.99,"value":0},{"quantile":0.5,"value":0}]}"#
        );
        assert_eq!(
            serde_json::to_string(&E2eResult::default()).unwrap(),
            r#"{"count":0,"percentiles":null}"#
        );
    }

    #[test]
    fn exact_quantiles_below_the_reservoir_size() {
        let s = E2eStream::new(Duration::from_secs(600));
        let now = Instant::now();
        for v in 1..=100 {
            s.record_at(f64::from(v), now);
        }
        let snap = s.snapshot_at(now);
        assert_eq!(snap.count, 100);
        let q = snap.quantiles(&[1.0, 0.99, 0.5, 0.01]);
        assert_eq!(
            q,
            vec![(1.0, 100.0), (0.99, 99.0), (0.5, 50.0), (0.01, 1.0)]
        );
    }

    #[test]
    fn approximate_quantiles_beyond_the_reservoir_size() {
        let s = E2eStream::new(Duration::from_secs(600));
        let now = Instant::now();
        let n: u32 = 100_000;
        for v in 0..n {
            s.record_at(f64::from(v), now);
        }
        let snap = s.snapshot_at(now);
        assert_eq!(snap.count, u64::from(n));
        for (q, v) in snap.quantiles(&[0.99, 0.9, 0.5]) {
            let exact = q * f64::from(n);
            // A sample of RESERVOIR values estimates quantile q with a
            // standard error of sqrt(q(1-q)/RESERVOIR) of the range; allow
            // six of them (a fixed 3% failed about once in a hundred runs).
            // Keeping only the first values would still be far off.
            let sigma = (q * (1.0 - q) / RESERVOIR as f64).sqrt();
            assert!(
                (v - exact).abs() < 6.0 * sigma * f64::from(n),
                "q{q}: {v} vs {exact}"
            );
        }
    }

    #[test]
    fn windows_rotate_and_expire() {
        let s = E2eStream::new(Duration::from_secs(10));
        let t0 = Instant::now();
        s.record_at(1.0, t0);
        // Within the first half: one sample.
        assert_eq!(s.snapshot_at(t0 + Duration::from_secs(4)).count, 1);
        // Second half: the old half is still counted.
        s.record_at(2.0, t0 + Duration::from_secs(6));
        assert_eq!(s.snapshot_at(t0 + Duration::from_secs(7)).count, 2);
        // Third half: the first sample's half is dropped.
        let snap = s.snapshot_at(t0 + Duration::from_secs(11));
        assert_eq!(snap.count, 1);
        assert_eq!(snap.quantiles(&[1.0]), vec![(1.0, 2.0)]);
        // Long idle: everything is gone, cumulative totals stay.
        let snap = s.snapshot_at(t0 + Duration::from_secs(100));
        assert_eq!(snap.count, 0);
        assert_eq!(snap.total_count, 2);
        assert_eq!(snap.total_sum_ns, 3.0);
        s.record_at(5.0, t0 + Duration::from_secs(101));
        assert_eq!(s.snapshot_at(t0 + Duration::from_secs(101)).count, 1);
    }

    #[test]
    fn merge_weights_windows_by_their_counts() {
        let a = E2eStream::new(Duration::from_secs(600));
        let b = E2eStream::new(Duration::from_secs(600));
        let now = Instant::now();
        // 10x more observations at 10 than at 1000: the median is 10.
        for _ in 0..(RESERVOIR * 10) {
            a.record_at(10.0, now);
        }
        for _ in 0..RESERVOIR {
            b.record_at(1000.0, now);
        }
        let mut m = a.snapshot_at(now);
        m.merge(&b.snapshot_at(now));
        assert_eq!(m.count, (RESERVOIR * 11) as u64);
        let q = m.quantiles(&[0.5, 0.95]);
        assert_eq!(q, vec![(0.5, 10.0), (0.95, 1000.0)]);
    }

    #[test]
    fn human_values_like_upstream() {
        assert_eq!(nanos_to_human(999.0), "999.0ns");
        assert_eq!(nanos_to_human(1500.0), "1.5us");
        assert_eq!(nanos_to_human(2_500_000.0), "2.5ms");
        assert_eq!(nanos_to_human(3_000_000_001.0), "3.0s");
        let r = E2eResult {
            count: 2,
            percentiles: Some(vec![(0.99, 2_000_000.0), (0.5, 1500.0)]),
        };
        assert_eq!(r.human(), "2.0ms, 1.5us");
        assert_eq!(E2eResult::default().human(), "");
    }
}
