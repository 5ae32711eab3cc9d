//! End-to-end tests of lookupd discovery: real nsqlookupd and nsqds on port 0.

use std::time::Duration;

use nsq::{handler_fn, Config, Consumer, Producer};
use nsq_test_support::{wait_until, within, NsqdProcess, NsqlookupdProcess};
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
    wait_until(Duration::from_secs(10), "lookupd lists the nsqds", || {
        let r = lookupd.http_get(&format!("/lookup?topic={topic}"));
        let n = r.json()["producers"].as_array().map_or(0, |p| p.len());
        if n == want {
            Ok(())
        } else {
            Err(format!("{n} producers"))
        }
    })
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
    let (tx, rx) = mpsc::unbounded_channel();
    let consumer = Consumer::new(topic, "ch", config).unwrap();
    consumer.add_handler(handler_fn(move |msg| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(String::from_utf8_lossy(&msg.body).into_owned());
            Ok(())
        }
    }));
    (consumer, rx)
}

#[tokio::test]
async fn a_later_nsqd_is_discovered_and_consumed() {
    within(async {
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
    })
    .await;
}

#[tokio::test]
async fn a_dead_nsqd_is_dropped_and_the_other_keeps_flowing() {
    within(async {
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
        let mut got = vec![rx.recv().await.unwrap(), rx.recv().await.unwrap()];
        got.sort();
        assert_eq!(got, ["d1", "s1"]);

        doomed.kill();
        wait_until(Duration::from_secs(10), "the dead nsqd is dropped", || {
            let now = consumer.connected_nsqds();
            if now == [survivor.tcp_addr().to_string()] {
                Ok(())
            } else {
                Err(format!("{now:?}"))
            }
        })
        .await
        .unwrap();

        let producer = Producer::new(survivor.tcp_addr().to_string(), Config::default());
        for i in 0..5 {
            producer.publish("dead", format!("after{i}")).await.unwrap();
        }
        let mut after = Vec::new();
        for _ in 0..5 {
            after.push(rx.recv().await.unwrap());
        }
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
    })
    .await;
}

#[tokio::test]
async fn an_nsqd_lookupd_stops_listing_is_let_go_gracefully() {
    within(async {
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
        let mut got = vec![rx.recv().await.unwrap(), rx.recv().await.unwrap()];
        got.sort();
        assert_eq!(got, ["l1", "s1"]);

        // A tombstone hides the producer from /lookup while it keeps running.
        let node = format!("127.0.0.1:{}", leaving.http_addr().port());
        let r = lookupd.http_post(&format!("/topic/tombstone?topic=tomb&node={node}"), b"");
        assert_eq!(r.status, 200, "{}", r.text());
        wait_until(
            Duration::from_secs(10),
            "the tombstoned nsqd is let go",
            || {
                let now = consumer.connected_nsqds();
                if now == [staying.tcp_addr().to_string()] {
                    Ok(())
                } else {
                    Err(format!("{now:?}"))
                }
            },
        )
        .await
        .unwrap();
        // CLS and a clean close: nsqd sees the client leave.
        wait_until(
            Duration::from_secs(10),
            "nsqd sees the client leave",
            || {
                let stats = leaving.http_get("/stats?format=json&topic=tomb").json();
                let clients = stats["topics"][0]["channels"][0]["client_count"].clone();
                if clients == 0 {
                    Ok(())
                } else {
                    Err(format!("client_count {clients}"))
                }
            },
        )
        .await
        .unwrap();
        consumer.stop().await;
    })
    .await;
}
