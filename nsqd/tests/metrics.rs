//! nsqd's `/metrics` beyond the `/stats` numbers: dead letters and finished messages per
//! channel, per-client series behind `--metrics-per-client`, and the disk queue's write and
//! fsync latency histograms. Parsed with prometheus-parse.

use nsq_protocol::Command;
use nsq_test_support::in_process::{self, *};
use nsq_test_support::prometheus::{find, num, scrape, Scrape, Value as PValue};
use nsq_test_support::{poll, RawConn};

async fn metrics(d: &Nsqd) -> Scrape {
    scrape(&http(d, "GET", "/metrics", b"").await.text())
}

#[in_process::test]
async fn dead_letters_finished_and_per_client_series() {
    let d = start(&["--metrics-per-client"]).await;
    post_ok(&d, "/topic/create?topic=jobs").await;
    post_ok(&d, "/channel/create?topic=jobs&channel=w").await;
    post_ok(
        &d,
        "/channel/max_attempts?topic=jobs&channel=w&max_attempts=1",
    )
    .await;
    let r = http(&d, "POST", "/mpub?topic=jobs", b"ok\nfails").await;
    assert_eq!(r.text(), "OK");

    let mut c = RawConn::connect(d.tcp).await;
    c.identify_plain(r#"{"client_id":"worker-1","hostname":"h1"}"#)
        .await;
    c.sub("jobs", "w").await;
    c.send(&Command::Rdy(2)).await;
    for _ in 0..2 {
        let m = c.read_message().await;
        let (id, body) = (m.id, m.body);
        if body[..] == b"ok"[..] {
            c.send(&Command::Fin(id)).await;
        } else {
            // Its one attempt is used up: REQ sends it to jobs.dead.
            c.send(&Command::Req { id, timeout_ms: 0 }).await;
        }
    }
    let w = [("topic", "jobs"), ("channel", "w")];
    let s = poll("one finished and one dead letter", || async {
        let s = metrics(&d).await;
        let done = num(find(&s, "nsq_channel_finished_total", &w)) == 1.0
            && num(find(&s, "nsq_channel_dead_letters_total", &w)) == 1.0;
        done.then_some(s)
    })
    .await;
    assert_eq!(num(find(&s, "nsq_channel_in_flight", &w)), 0.0);
    let client = [
        ("topic", "jobs"),
        ("channel", "w"),
        ("client_id", "worker-1"),
        ("hostname", "h1"),
    ];
    assert_eq!(num(find(&s, "nsq_client_messages_total", &client)), 2.0);
    assert_eq!(num(find(&s, "nsq_client_finished_total", &client)), 1.0);
    assert_eq!(num(find(&s, "nsq_client_requeued_total", &client)), 1.0);
    assert_eq!(num(find(&s, "nsq_client_ready_count", &client)), 2.0);
    assert_eq!(num(find(&s, "nsq_client_in_flight", &client)), 0.0);
    assert!(s.docs.contains_key("nsq_channel_dead_letters_total"));
}

#[in_process::test]
async fn per_client_series_are_off_by_default() {
    let d = start(&[]).await;
    let mut c = RawConn::connect(d.tcp).await;
    c.identify_plain(r#"{"client_id":"x"}"#).await;
    c.sub("t", "c").await;
    let text = http(&d, "GET", "/metrics", b"").await.text();
    assert!(!text.contains("nsq_client_"), "{text}");
    let s = scrape(&text);
    assert_eq!(
        num(find(&s, "nsq_channel_finished_total", &[("channel", "c")])),
        0.0
    );
    assert_eq!(
        num(find(
            &s,
            "nsq_channel_dead_letters_total",
            &[("channel", "c")]
        )),
        0.0
    );
}

#[in_process::test]
async fn disk_write_and_fsync_latency_histograms() {
    // Everything through the disk queue, fsynced after every write.
    let d = start(&["--mem-queue-size=0", "--sync-every=1"]).await;
    let r = http(&d, "POST", "/mpub?topic=disk", b"a\nb\nc").await;
    assert_eq!(r.text(), "OK");
    let s = poll("a write and an fsync observed", || async {
        let s = metrics(&d).await;
        let w = num(find(&s, "nsq_disk_write_seconds_count", &[]));
        let f = num(find(&s, "nsq_disk_fsync_seconds_count", &[]));
        (w >= 1.0 && f >= 1.0).then_some(s)
    })
    .await;
    for name in ["nsq_disk_write_seconds", "nsq_disk_fsync_seconds"] {
        let Some(PValue::Histogram(buckets)) = find(&s, name, &[]) else {
            panic!("{name} is not a histogram");
        };
        // Cumulative, ending in +Inf with the count.
        let counts: Vec<f64> = buckets.iter().map(|b| b.count).collect();
        assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
        let last = buckets.last().unwrap();
        assert!(last.less_than.is_infinite(), "{buckets:?}");
        assert_eq!(last.count, num(find(&s, &format!("{name}_count"), &[])));
        assert!(num(find(&s, &format!("{name}_sum"), &[])) >= 0.0);
    }
}
