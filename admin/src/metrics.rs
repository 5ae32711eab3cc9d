//! `GET /metrics` (ours; upstream has none): how nsqadmin's requests to the
//! cluster went and which actions it took, in the Prometheus text format.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use nsq_app::prometheus::{write_all, Family};

/// Counted by every request to a lookupd or nsqd ([`crate::cluster::Cluster`]'s
/// fan-out) and by every action; read by [`render`]. Atomics for the hot
/// counts; the action map is locked only to bump or copy it.
#[derive(Debug, Default)]
pub struct Counters {
    polled: AtomicU64,
    errors: AtomicU64,
    /// (action, result) → count.
    actions: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

impl Counters {
    /// One request to a daemon finished, answered or not.
    pub fn node_request(&self, ok: bool) {
        let c = if ok { &self.polled } else { &self.errors };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// One action (create, delete, pause, …) finished with `status`.
    pub fn action(&self, action: &'static str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        *self
            .actions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((action, result))
            .or_default() += 1;
    }
}

/// Every metric.
pub fn render(c: &Counters) -> String {
    let info = Family::version_info("nsqadmin_info", "Version of this nsqadmin; always 1.");
    let polled = Family::single(
        "nsqadmin_node_requests_total",
        "counter",
        "Requests to nsqlookupd and nsqd nodes that were answered.",
        c.polled.load(Ordering::Relaxed) as f64,
    );
    let errors = Family::single(
        "nsqadmin_node_errors_total",
        "counter",
        "Requests to nsqlookupd and nsqd nodes that failed (unreachable, timeout, error status).",
        c.errors.load(Ordering::Relaxed) as f64,
    );
    let mut actions = Family::new(
        "nsqadmin_actions_total",
        "counter",
        "Actions taken through nsqadmin (create, delete, pause, empty, tombstone, requeue), by result.",
    );
    let taken = c.actions.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for ((action, result), n) in taken {
        actions.add(
            vec![
                ("action", action.to_string()),
                ("result", result.to_string()),
            ],
            n as f64,
        );
    }
    write_all([&info, &polled, &errors, &actions])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_show_up() {
        let c = Counters::default();
        c.node_request(true);
        c.node_request(true);
        c.node_request(false);
        c.action("delete_topic", true);
        let text = render(&c);
        assert!(text.contains("nsqadmin_node_requests_total 2\n"), "{text}");
        assert!(text.contains("nsqadmin_node_errors_total 1\n"), "{text}");
        assert!(
            text.contains("nsqadmin_actions_total{action=\"delete_topic\",result=\"ok\"} 1\n"),
            "{text}"
        );
    }
}
