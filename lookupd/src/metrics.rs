//! `GET /metrics` (ours; upstream has none): what the registration DB holds
//! and how many lookups were answered, in the Prometheus text format.

use std::sync::atomic::{AtomicU64, Ordering};

use nsq_app::prometheus::{write_all, Family};

use crate::registration_db::{RegistrationDb, Stamp};

/// Counters the HTTP side bumps; read by [`render`]. Atomics: any request
/// task may count, nothing else is shared.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    lookups_found: AtomicU64,
    lookups_not_found: AtomicU64,
}

impl Counters {
    /// A `/lookup` answered, `found` or 404 `TOPIC_NOT_FOUND`.
    pub(crate) fn lookup(&self, found: bool) {
        let c = if found {
            &self.lookups_found
        } else {
            &self.lookups_not_found
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Every metric, from one look at the DB.
pub(crate) fn render(db: &RegistrationDb, m: &Counters) -> String {
    let nodes = db.nodes(Stamp::now());
    let topics = db.topics();
    let channels: usize = topics.iter().map(|t| db.channels(t).len()).sum();
    let tombstones = nodes
        .iter()
        .flat_map(|n| &n.tombstones)
        .filter(|t| **t)
        .count();

    let info = Family::version_info("nsqlookupd_info", "Version of this nsqlookupd; always 1.");
    let producers = Family::single(
        "nsqlookupd_producers",
        "gauge",
        "Active nsqd nodes registered (what /nodes lists).",
        nodes.len() as f64,
    );
    let ntopics = Family::single(
        "nsqlookupd_topics",
        "gauge",
        "Topics registered.",
        topics.len() as f64,
    );
    let nchannels = Family::single(
        "nsqlookupd_channels",
        "gauge",
        "Channels registered, over all topics.",
        channels as f64,
    );
    let ntombstones = Family::single(
        "nsqlookupd_tombstones",
        "gauge",
        "Topic producers currently tombstoned.",
        tombstones as f64,
    );
    let mut lookups = Family::new(
        "nsqlookupd_lookups_total",
        "counter",
        "/lookup requests answered, by result.",
    );
    lookups.add(
        vec![("result", "found".into())],
        m.lookups_found.load(Ordering::Relaxed) as f64,
    );
    lookups.add(
        vec![("result", "not_found".into())],
        m.lookups_not_found.load(Ordering::Relaxed) as f64,
    );

    write_all([
        &info,
        &producers,
        &ntopics,
        &nchannels,
        &ntombstones,
        &lookups,
    ])
}
