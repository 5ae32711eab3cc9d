//! How long disk queue writes and fsyncs take, as Prometheus histograms.
//!
//! Process-wide rather than per queue: a per-queue histogram would multiply
//! series by topics and channels, while the question these answer — is the
//! disk slow? — is about the device. Observed on the I/O threads, read by
//! `/metrics`.

use std::time::Instant;

use nsq_app::prometheus::{Family, Histogram};

/// One `write` of a batch of records to a segment file.
pub static WRITE: Histogram = Histogram::new();
/// One fsync of a queue's dirty segments (data, before its meta).
pub static FSYNC: Histogram = Histogram::new();

/// Run `op` and observe how long it took in `histogram`.
pub fn timed<T>(histogram: &Histogram, op: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = op();
    histogram.observe(started.elapsed());
    out
}

/// The two families for `/metrics`.
pub fn families() -> [Family; 2] {
    let mut write = Family::new(
        "nsq_disk_write_seconds",
        "histogram",
        "Time to write one batch of records to a disk queue segment.",
    );
    WRITE.add_to(&mut write, vec![]);
    let mut fsync = Family::new(
        "nsq_disk_fsync_seconds",
        "histogram",
        "Time to fsync a disk queue's written segments.",
    );
    FSYNC.add_to(&mut fsync, vec![]);
    [write, fsync]
}
