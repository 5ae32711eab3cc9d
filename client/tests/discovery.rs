//! End-to-end tests of lookupd discovery: real nsqlookupd and nsqds on port 0.

use std::time::Duration;

use nsq::{Config, Consumer, Producer};
use nsq_test_support::consumer::{receive, recording_consumer};
use nsq_test_support::{wait_for_value, NsqdProcess, NsqlookupdProcess};
use tokio::sync::mpsc;

fn nsqd_for(lookupd: &NsqlookupdProcess) -> NsqdProcess {
    let arg = format!("--lookupd-tcp-address={}", lookupd.tcp_addr());
    NsqdProcess::start(&["--broadcast-address=127.0.0.1", &arg])
}

/// Publish `body` to `topic` on `nsqd` and wait until lookupd lists `want` producers for it.
async fn publish_and_register(
    lookupd: &NsqlookupdProcess,
    nsqd: &NsqdProcess,
    topic: &str,
    body: &str,
    want: usize,
) {
    let producer = Producer::new(nsqd.tcp_addr().to_string(), Config::default());
    producer.publish(topic, body.to_owned()).await.unwrap();
    producer.stop().await;
    wait_for_value(
        Duration::from_secs(10),
        "lookupd lists the nsqds",
        want,
        || {
            let r = lookupd.http_get(&format!("/lookup?topic={topic}"));
            r.json()["producers"].as_array().map_or(0, Vec::len)
        },
    )
    .await
    .unwrap_or_else(|e| lookupd.fail(&e));
}

fn consumer(topic: &str) -> (Consumer, mpsc::UnboundedReceiver<String>) {
    let config = Config {
        max_in_flight: 10,
        // Fast polls keep the test short; the mechanism is the same.
        lookupd_poll_interval: Duration::from_millis(100),
        ..Config::default()
    };
    recording_consumer(topic, "ch", config)
}

/// Wait until `consumer` is connected to `nsqd` alone.
async fn wait_connected_only_to(consumer: &Consumer, nsqd: &NsqdProcess, what: &str) {
    let want = vec![nsqd.tcp_addr().to_string()];
    wait_for_value(Duration::from_secs(10), what, want, || {
        consumer.connected_nsqds()
    })
    .await
    .unwrap();
}

#[nsq_test_support::test]
async fn a_later_nsqd_is_discovered_and_consumed() {
    let lookupd = NsqlookupdProcess::start(&[]);
    let first = nsqd_for(&lookupd);
    publish_and_register(&lookupd, &first, "disc", "from-first", 1).await;

    let (consumer, mut rx) = consumer("disc");
    // A dead lookupd next to the live one changes nothing.
    consumer
        .connect_to_lookupds(["127.0.0.1:1".to_owned(), lookupd.http_addr().to_string()])
        .await
        .unwrap();
    assert_eq!(rx.recv().await.unwrap(), "from-first");

    let second = nsqd_for(&lookupd);
    publish_and_register(&lookupd, &second, "disc", "from-second", 2).await;
    assert_eq!(rx.recv().await.unwrap(), "from-second");
    let mut want = vec![first.tcp_addr().to_string(), second.tcp_addr().to_string()];
    want.sort();
    assert_eq!(consumer.connected_nsqds(), want);
    consumer.stop().await;
}

#[nsq_test_support::test]
async fn a_dead_nsqd_is_dropped_and_the_other_keeps_flowing() {
    let lookupd = NsqlookupdProcess::start(&[]);
    let mut doomed = nsqd_for(&lookupd);
    let survivor = nsqd_for(&lookupd);
    publish_and_register(&lookupd, &doomed, "dead", "d1", 1).await;
    publish_and_register(&lookupd, &survivor, "dead", "s1", 2).await;

    let (consumer, mut rx) = consumer("dead");
    consumer
        .connect_to_lookupd(&format!("http://{}", lookupd.http_addr()))
        .await
        .unwrap();
    let mut got = receive(&mut rx, 2).await;
    got.sort();
    assert_eq!(got, ["d1", "s1"]);

    doomed.kill();
    wait_connected_only_to(&consumer, &survivor, "the dead nsqd is dropped").await;

    let producer = Producer::new(survivor.tcp_addr().to_string(), Config::default());
    for i in 0..5 {
        producer.publish("dead", format!("after{i}")).await.unwrap();
    }
    let mut after = receive(&mut rx, 5).await;
    after.sort();
    assert_eq!(
        after,
        (0..5).map(|i| format!("after{i}")).collect::<Vec<_>>()
    );
    // Polls after the death do not bring it back.
    assert_eq!(
        consumer.connected_nsqds(),
        [survivor.tcp_addr().to_string()]
    );
    consumer.stop().await;
}

#[nsq_test_support::test]
async fn an_nsqd_lookupd_stops_listing_is_let_go_gracefully() {
    let lookupd = NsqlookupdProcess::start(&[]);
    let leaving = nsqd_for(&lookupd);
    let staying = nsqd_for(&lookupd);
    publish_and_register(&lookupd, &leaving, "tomb", "l1", 1).await;
    publish_and_register(&lookupd, &staying, "tomb", "s1", 2).await;

    let (consumer, mut rx) = consumer("tomb");
    consumer
        .connect_to_lookupd(&lookupd.http_addr().to_string())
        .await
        .unwrap();
    let mut got = receive(&mut rx, 2).await;
    got.sort();
    assert_eq!(got, ["l1", "s1"]);

    // A tombstone hides the producer from /lookup while it keeps running.
    let node = format!("127.0.0.1:{}", leaving.http_addr().port());
    let r = lookupd.http_post(&format!("/topic/tombstone?topic=tomb&node={node}"), b"");
    assert_eq!(r.status, 200, "{}", r.text());
    wait_connected_only_to(&consumer, &staying, "the tombstoned nsqd is let go").await;
    // CLS and a clean close: nsqd sees the client leave.
    wait_for_value(
        Duration::from_secs(10),
        "nsqd sees the client leave",
        Some(0),
        || leaving.channel_stats("tomb", "ch")["client_count"].as_u64(),
    )
    .await
    .unwrap();
    consumer.stop().await;
}
