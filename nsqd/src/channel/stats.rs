//! A channel's counters and the snapshot of them reported in `/stats`.

use super::Channel;
use crate::disk_io::DiskDamage;

/// Counters reported in `/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelStats {
    pub depth: u64,
    pub backend_depth: u64,
    pub in_flight_count: u64,
    pub deferred_count: u64,
    pub message_count: u64,
    pub requeue_count: u64,
    pub timeout_count: u64,
    /// Messages finished (FIN) by clients; for `/metrics`.
    pub finish_count: u64,
    pub client_count: usize,
    pub paused: bool,
    /// What the disk queue had to skip (checksum failures, unreadable segments).
    pub disk_damage: DiskDamage,
}

/// The running totals a channel keeps under its lock.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub message: u64,
    pub requeue: u64,
    pub timeout: u64,
    pub finish: u64,
}

impl Channel {
    pub fn stats(&self) -> ChannelStats {
        let st = self.lock();
        ChannelStats {
            depth: st.backlog.depth(),
            backend_depth: st.backlog.on_disk(),
            in_flight_count: st.flights.in_flight_count() as u64,
            deferred_count: st.flights.deferred_count() as u64,
            message_count: st.counts.message,
            requeue_count: st.counts.requeue,
            timeout_count: st.counts.timeout,
            finish_count: st.counts.finish,
            client_count: st.flights.client_count(),
            paused: st.paused,
            disk_damage: st.backlog.damage(),
        }
    }
}
