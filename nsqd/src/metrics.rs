//! `GET /metrics`: the same numbers as `/stats` in the Prometheus text
//! exposition format (version 0.0.4), plus process metrics from `/proc`.
//! Beyond upstream, which only pushes to statsd. Names and labels are listed
//! in the README.

use crate::e2e::{self, E2eSnapshot};
use crate::nsqd::Nsqd;
use crate::process;

pub use nsq_app::prometheus::CONTENT_TYPE;
use nsq_app::prometheus::{write_all, Family, Labels};

/// Quantile series and cumulative `_sum`/`_count` (seconds) of a latency
/// summary: quantiles cover the sliding window, `_sum`/`_count` all time.
fn add_summary(f: &mut Family, labels: Labels, snap: &E2eSnapshot, qs: &[f64]) {
    for (q, v) in snap.quantiles(qs) {
        let mut l = labels.clone();
        l.push(("quantile", format!("{q}")));
        f.add(l, v / 1e9);
    }
    f.add_suffixed("_sum", labels.clone(), snap.total_sum_ns / 1e9);
    f.add_suffixed("_count", labels, snap.total_count as f64);
}

/// Render every metric.
pub fn render(nsqd: &Nsqd) -> String {
    let percentiles = nsqd.opts.e2e_percentiles().unwrap_or_default();
    let topics = nsqd.topics_snapshot();

    let info = Family::version_info("nsq_info", "Version of this nsqd; always 1.");
    let healthy = Family::single(
        "nsq_healthy",
        "gauge",
        "1 when nsqd is healthy (/ping answers OK), else 0.",
        if nsqd.health().is_ok() { 1.0 } else { 0.0 },
    );
    let start = Family::single(
        "nsq_start_time_seconds",
        "gauge",
        "When nsqd started, Unix seconds.",
        nsqd.start_time as f64,
    );
    let ntopics = Family::single("nsq_topics", "gauge", "Topics.", topics.len() as f64);
    let nclients = Family::single(
        "nsq_clients",
        "gauge",
        "Connected TCP clients.",
        nsqd.clients_snapshot().len() as f64,
    );

    let mut t_depth = Family::new(
        "nsq_topic_depth",
        "gauge",
        "Messages held by the topic (memory and disk).",
    );
    let mut t_backend = Family::new(
        "nsq_topic_backend_depth",
        "gauge",
        "Messages held in the topic's disk queue.",
    );
    let mut t_msgs = Family::new(
        "nsq_topic_messages_total",
        "counter",
        "Messages published to the topic.",
    );
    let mut t_bytes = Family::new(
        "nsq_topic_message_bytes_total",
        "counter",
        "Body bytes published to the topic.",
    );
    let mut t_paused = Family::new("nsq_topic_paused", "gauge", "1 when the topic is paused.");
    let mut t_channels = Family::new("nsq_topic_channels", "gauge", "Channels of the topic.");
    let mut t_e2e = Family::new(
        "nsq_topic_e2e_processing_latency_seconds",
        "summary",
        "Publish-to-FIN latency over all channels of the topic; quantiles over the latency window.",
    );
    let mut c_depth = Family::new(
        "nsq_channel_depth",
        "gauge",
        "Messages queued in the channel (memory and disk).",
    );
    let mut c_backend = Family::new(
        "nsq_channel_backend_depth",
        "gauge",
        "Messages queued in the channel's disk queue.",
    );
    let mut c_inflight = Family::new(
        "nsq_channel_in_flight",
        "gauge",
        "Messages delivered and not yet finished.",
    );
    let mut c_deferred = Family::new(
        "nsq_channel_deferred",
        "gauge",
        "Messages deferred (DPUB or REQ with delay).",
    );
    let mut c_msgs = Family::new(
        "nsq_channel_messages_total",
        "counter",
        "Messages that entered the channel.",
    );
    let mut c_requeued = Family::new(
        "nsq_channel_requeued_total",
        "counter",
        "Messages requeued by clients (REQ).",
    );
    let mut c_timedout = Family::new(
        "nsq_channel_timed_out_total",
        "counter",
        "Messages that timed out in flight.",
    );
    let mut c_clients = Family::new(
        "nsq_channel_clients",
        "gauge",
        "Clients subscribed to the channel.",
    );
    let mut c_paused = Family::new(
        "nsq_channel_paused",
        "gauge",
        "1 when the channel is paused.",
    );
    let mut d_corrupt = Family::new(
        "nsq_disk_corrupt_records_total",
        "counter",
        "Records a disk queue skipped because their checksum or length was wrong.",
    );
    let mut d_bad = Family::new(
        "nsq_disk_bad_segments_total",
        "counter",
        "Disk queue segments that could not be read and were renamed .bad.",
    );
    let mut c_finished = Family::new(
        "nsq_channel_finished_total",
        "counter",
        "Messages finished (FIN) by the channel's clients.",
    );
    let mut c_dead = Family::new(
        "nsq_channel_dead_letters_total",
        "counter",
        "Messages moved to the dead-letter topic after max attempts.",
    );
    let mut c_e2e = Family::new(
        "nsq_channel_e2e_processing_latency_seconds",
        "summary",
        "Publish-to-FIN latency of the channel; quantiles over the latency window.",
    );

    for t in &topics {
        let (ts, _) = t.stats();
        let channels = t.channels();
        let tl = || vec![("topic", t.name.to_string())];
        t_depth.add(tl(), ts.depth as f64);
        t_backend.add(tl(), ts.backend_depth as f64);
        t_msgs.add(tl(), ts.message_count as f64);
        t_bytes.add(tl(), ts.message_bytes as f64);
        t_paused.add(tl(), f64::from(u8::from(ts.paused)));
        t_channels.add(tl(), channels.len() as f64);
        d_corrupt.add(tl(), ts.disk_damage.corrupt_records as f64);
        d_bad.add(tl(), ts.disk_damage.bad_segments as f64);
        if !percentiles.is_empty() {
            if let Some(snap) = e2e::topic_snapshot(channels.iter().filter_map(|c| c.e2e())) {
                add_summary(&mut t_e2e, tl(), &snap, &percentiles);
            }
        }
        for c in &channels {
            let s = c.stats();
            let cl = || {
                vec![
                    ("topic", t.name.to_string()),
                    ("channel", c.name.to_string()),
                ]
            };
            c_depth.add(cl(), s.depth as f64);
            c_backend.add(cl(), s.backend_depth as f64);
            c_inflight.add(cl(), s.in_flight_count as f64);
            c_deferred.add(cl(), s.deferred_count as f64);
            c_msgs.add(cl(), s.message_count as f64);
            c_requeued.add(cl(), s.requeue_count as f64);
            c_timedout.add(cl(), s.timeout_count as f64);
            c_clients.add(cl(), s.client_count as f64);
            c_paused.add(cl(), f64::from(u8::from(s.paused)));
            c_finished.add(cl(), s.finish_count as f64);
            c_dead.add(cl(), c.dead_letter_stats().dead_count as f64);
            d_corrupt.add(cl(), s.disk_damage.corrupt_records as f64);
            d_bad.add(cl(), s.disk_damage.bad_segments as f64);
            if let (false, Some(stream)) = (percentiles.is_empty(), c.e2e()) {
                add_summary(&mut c_e2e, cl(), &stream.snapshot(), &percentiles);
            }
        }
    }

    let p = process::stats();
    let process = [
        Family::single(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            p.resident_bytes as f64,
        ),
        Family::single(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            p.virtual_bytes as f64,
        ),
        Family::single(
            "process_open_fds",
            "gauge",
            "Open file descriptors.",
            p.open_fds as f64,
        ),
        Family::single(
            "process_max_fds",
            "gauge",
            "Limit on open file descriptors.",
            p.max_fds as f64,
        ),
        Family::single(
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time in seconds.",
            p.cpu_seconds,
        ),
        Family::single(
            "process_start_time_seconds",
            "gauge",
            "Process start time, Unix seconds.",
            p.start_time,
        ),
    ];

    let mut out = write_all(
        [
            &info,
            &healthy,
            &start,
            &ntopics,
            &nclients,
            &t_depth,
            &t_backend,
            &t_msgs,
            &t_bytes,
            &t_paused,
            &t_channels,
            &t_e2e,
            &c_depth,
            &c_backend,
            &c_inflight,
            &c_deferred,
            &c_msgs,
            &c_requeued,
            &c_timedout,
            &c_clients,
            &c_paused,
            &c_finished,
            &c_dead,
            &c_e2e,
            &d_corrupt,
            &d_bad,
        ]
        .into_iter()
        .chain(&process),
    );
    for f in crate::disk_latency::families() {
        f.write(&mut out);
    }
    if nsqd.opts.metrics_per_client {
        for f in client_families(nsqd) {
            f.write(&mut out);
        }
    }
    if let Some(r) = &nsqd.replicas {
        r.render_metrics(&mut out);
    }
    out
}

/// `--metrics-per-client`: one series per connected client and family,
/// labelled with where it is subscribed and who it says it is. Off by
/// default because every connection adds series (cardinality).
fn client_families(nsqd: &Nsqd) -> Vec<Family> {
    let mut ready = Family::new("nsq_client_ready_count", "gauge", "The client's RDY count.");
    let mut in_flight = Family::new(
        "nsq_client_in_flight",
        "gauge",
        "Messages delivered to the client and not yet finished.",
    );
    let mut messages = Family::new(
        "nsq_client_messages_total",
        "counter",
        "Messages delivered to the client.",
    );
    let mut finished = Family::new(
        "nsq_client_finished_total",
        "counter",
        "Messages the client finished.",
    );
    let mut requeued = Family::new(
        "nsq_client_requeued_total",
        "counter",
        "Messages the client requeued.",
    );
    for t in nsqd.topics_snapshot() {
        for c in t.channels() {
            for client in c.clients() {
                let r = crate::stats::ClientReport::new(&client, "");
                let labels = || -> Labels {
                    vec![
                        ("topic", t.name.to_string()),
                        ("channel", c.name.to_string()),
                        ("client_id", r.client_id.clone()),
                        ("hostname", r.hostname.clone()),
                        ("remote_address", r.remote_address.clone()),
                    ]
                };
                ready.add(labels(), r.ready_count as f64);
                in_flight.add(labels(), r.in_flight_count as f64);
                messages.add(labels(), r.message_count as f64);
                finished.add(labels(), r.finish_count as f64);
                requeued.add(labels(), r.requeue_count as f64);
            }
        }
    }
    vec![ready, in_flight, messages, finished, requeued]
}
