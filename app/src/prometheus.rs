//! The Prometheus text exposition format (0.0.4) every daemon's `/metrics` writes: metric
//! families with escaped labels, and a lock-free latency histogram.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The `Content-Type` of a `/metrics` answer.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A sample's labels: name and (unescaped) value.
pub type Labels = Vec<(&'static str, String)>;

/// One metric family's samples, written together as the format requires.
pub struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    samples: Vec<(String, Labels, f64)>,
}

impl Family {
    /// `kind` is `gauge`, `counter`, `summary` or `histogram`.
    pub fn new(name: &'static str, kind: &'static str, help: &'static str) -> Self {
        Family {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }

    /// A family of one sample without labels: a daemon-wide count or gauge.
    pub fn single(name: &'static str, kind: &'static str, help: &'static str, value: f64) -> Self {
        let mut f = Family::new(name, kind, help);
        f.add(vec![], value);
        f
    }

    /// A daemon's `<name>` gauge: always 1, labelled with the upstream
    /// version it speaks.
    pub fn version_info(name: &'static str, help: &'static str) -> Self {
        let mut f = Family::new(name, "gauge", help);
        f.add(vec![("version", crate::VERSION.to_string())], 1.0);
        f
    }

    pub fn add(&mut self, labels: Labels, value: f64) {
        self.samples.push((self.name.to_string(), labels, value));
    }

    /// A sample whose name carries a suffix (`_sum`, `_count`, `_bucket`).
    pub fn add_suffixed(&mut self, suffix: &str, labels: Labels, value: f64) {
        self.samples
            .push((format!("{}{suffix}", self.name), labels, value));
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// `# HELP`, `# TYPE` and every sample; nothing for a family without
    /// samples (e.g. latency when no percentiles are configured).
    pub fn write(&self, out: &mut String) {
        if self.samples.is_empty() {
            return;
        }
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} {}", self.name, self.kind);
        for (name, labels, value) in &self.samples {
            out.push_str(name);
            if !labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", escape(v));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", number(*value));
        }
    }
}

/// The text of `families`, in order.
pub fn write_all<'a>(families: impl IntoIterator<Item = &'a Family>) -> String {
    let mut out = String::new();
    for f in families {
        f.write(&mut out);
    }
    out
}

/// Label values escape backslash, double quote and newline.
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A sample value as the format spells it.
pub fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

/// Upper bounds (seconds) of [`Histogram`]'s buckets: 50 µs to 10 s, which
/// covers a page-cache write and a slow disk's fsync alike.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
    10.0,
];

/// A latency histogram with [`LATENCY_BUCKETS`], safe to observe from any
/// thread without a lock (one relaxed add per bucket hit, sum and count).
pub struct Histogram {
    /// Observations per bucket (not cumulative), the last one for +Inf.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    pub const fn new() -> Self {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; LATENCY_BUCKETS.len() + 1],
            sum_nanos: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Add `_bucket` (cumulative, with `le`), `_sum` and `_count` samples.
    pub fn add_to(&self, family: &mut Family, labels: Labels) {
        let mut cumulative = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let le = LATENCY_BUCKETS
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |b| number(*b));
            let mut l = labels.clone();
            l.push(("le", le));
            family.add_suffixed("_bucket", l, cumulative as f64);
        }
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        family.add_suffixed("_sum", labels.clone(), sum);
        // The count is the +Inf bucket, so the two always agree.
        family.add_suffixed("_count", labels, cumulative as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_text() {
        let mut f = Family::new("nsq_channel_depth", "gauge", "Depth.");
        f.add(
            vec![("topic", "t".into()), ("channel", "c\"x\\y\nz".into())],
            3.0,
        );
        f.add(vec![], 0.25);
        let mut out = String::new();
        f.write(&mut out);
        assert_eq!(
            out,
            "# HELP nsq_channel_depth Depth.\n# TYPE nsq_channel_depth gauge\n\
             nsq_channel_depth{topic=\"t\",channel=\"c\\\"x\\\\y\\nz\"} 3\n\
             nsq_channel_depth 0.25\n"
        );
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(1e-7), "0.0000001");
        let mut empty = String::new();
        Family::new("x", "gauge", "X.").write(&mut empty);
        assert!(empty.is_empty());
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new();
        h.observe(Duration::from_micros(10));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(20));
        let mut f = Family::new("d_seconds", "histogram", "D.");
        h.add_to(&mut f, vec![("op", "w".into())]);
        let mut out = String::new();
        f.write(&mut out);
        assert!(
            out.contains("d_seconds_bucket{op=\"w\",le=\"0.00005\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("d_seconds_bucket{op=\"w\",le=\"0.0025\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("d_seconds_bucket{op=\"w\",le=\"0.005\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("d_seconds_bucket{op=\"w\",le=\"10\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("d_seconds_bucket{op=\"w\",le=\"+Inf\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("d_seconds_count{op=\"w\"} 3\n"), "{out}");
        assert!(out.contains("d_seconds_sum{op=\"w\"} 20.00301\n"), "{out}");
    }
}
