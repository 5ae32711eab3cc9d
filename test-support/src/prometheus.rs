//! Reading a Prometheus text exposition (`/metrics`) with a real parser, strictly: a line the
//! parser would skip fails the test instead of hiding a malformed series.

use prometheus_parse::LineInfo;
pub use prometheus_parse::{Scrape, Value};

/// Parse `text`, refusing any line prometheus-parse would skip.
pub fn parse_strict(text: &str) -> Result<Scrape, String> {
    for line in text.lines() {
        assert!(
            !matches!(LineInfo::parse(line), LineInfo::Ignored),
            "unparsable line {line:?}"
        );
    }
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).map_err(|e| e.to_string())
}

/// [`parse_strict`], panicking on an unparsable exposition.
pub fn scrape(text: &str) -> Scrape {
    parse_strict(text).unwrap_or_else(|e| panic!("unparsable exposition ({e}):\n{text}"))
}

/// The value of the first sample called `name` carrying every one of `labels`.
pub fn find<'a>(s: &'a Scrape, name: &str, labels: &[(&str, &str)]) -> Option<&'a Value> {
    s.samples
        .iter()
        .find(|m| m.metric == name && labels.iter().all(|(k, v)| m.labels.get(k) == Some(*v)))
        .map(|m| &m.value)
}

/// A gauge's, counter's or untyped sample's number, if `v` is one.
pub fn number(v: Option<&Value>) -> Option<f64> {
    match v {
        Some(Value::Gauge(n) | Value::Counter(n) | Value::Untyped(n)) => Some(*n),
        _ => None,
    }
}

/// [`number`], panicking on anything else.
pub fn num(v: Option<&Value>) -> f64 {
    number(v).unwrap_or_else(|| panic!("not a number: {v:?}"))
}
