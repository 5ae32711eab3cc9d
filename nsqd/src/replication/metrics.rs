//! The `nsq_replica_*` series of `/metrics`: each peer's state, lag,
//! shadow depth and takeovers.

use nsq_app::prometheus::Family;

use crate::replica_hooks::ReplicaReport;

/// A family: name, kind, help, and the value of one peer.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&ReplicaReport) -> f64,
);

#[rustfmt::skip]
const SERIES: [Series; 6] = [
    ("nsq_replica_state", "gauge", "State of the link to the peer: 0 down, 1 catching_up, 2 in_sync, 3 taken_over.", state_number),
    ("nsq_replica_in_sync", "gauge", "1 while the peer is in sync (publishes wait for it).", |p| f64::from(u8::from(p.state == "in_sync"))),
    ("nsq_replica_lag_messages", "gauge", "Records sent to the peer and not yet acknowledged.", |p| p.lag_messages as f64),
    ("nsq_replica_lag_bytes", "gauge", "Message bytes sent to the peer and not yet acknowledged.", |p| p.lag_bytes as f64),
    ("nsq_replica_shadow_depth", "gauge", "Messages of the peer this node holds as its shadow copy.", |p| p.shadow_depth as f64),
    ("nsq_replica_takeovers_total", "counter", "Times this node took over the peer's messages.", |p| p.takeovers as f64),
];

fn state_number(p: &ReplicaReport) -> f64 {
    match p.state {
        "catching_up" => 1.0,
        "in_sync" => 2.0,
        "taken_over" => 3.0,
        _ => 0.0,
    }
}

/// Append the series for `report` (one entry per peer) to `out`.
pub fn render(report: &[ReplicaReport], out: &mut String) {
    for (name, kind, help, value) in SERIES {
        let mut family = Family::new(name, kind, help);
        for p in report {
            let mut labels = vec![("peer", p.peer.clone())];
            // The state also as a label, for dashboards' legends.
            if name == "nsq_replica_state" {
                labels.push(("state", p.state.to_string()));
            }
            family.add(labels, value(p));
        }
        family.write(out);
    }
}
