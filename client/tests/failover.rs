//! End-to-end tests of a `nsq::Producer` given several nsqds: killing the
//! one in use mid-publish loses no acknowledged message and fails no
//! publish.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nsq::{Config, Error, Producer};
use nsq_test_support::consumer::{connect_to, max_in_flight, recording_consumer};
use nsq_test_support::{wait_for_value, wait_until, NsqdProcess};

const PUBLISHERS: usize = 4;
const EACH: usize = 150;

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 4)]
async fn publishing_goes_on_when_the_nsqd_in_use_is_killed() {
    // --durable: what the first nsqd acknowledged is on disk, so after
    // its restart both nsqds together must hold every acknowledged body.
    let mut first = NsqdProcess::start(&["--durable"]);
    let second = NsqdProcess::start(&[]);
    let producer = Arc::new(Producer::with_addresses(
        [first.tcp_addr().to_string(), second.tcp_addr().to_string()],
        Config::default(),
    ));
    assert_eq!(producer.addr(), first.tcp_addr().to_string());

    let acked = Arc::new(Mutex::new(Vec::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let (producer, acked, count) = (producer.clone(), acked.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..EACH {
                let body = format!("p{p}-{i}");
                producer.publish("failover", body.clone()).await?;
                acked.lock().unwrap().push(body);
                count.fetch_add(1, Ordering::SeqCst);
            }
            Ok::<_, Error>(())
        }));
    }
    wait_until(
        Duration::from_secs(20),
        "100 publishes acknowledged",
        || match count.load(Ordering::SeqCst) {
            n if n >= 100 => Ok(()),
            n => Err(n),
        },
    )
    .await
    .unwrap_or_else(|e| first.fail(&e));
    first.kill();
    for t in tasks {
        t.await.unwrap().expect("every publish succeeds");
    }
    assert_eq!(producer.addr(), second.tcp_addr().to_string());
    let acked: HashSet<String> = acked.lock().unwrap().drain(..).collect();
    assert_eq!(acked.len(), PUBLISHERS * EACH);

    let first = first.restart(&["--durable"]);
    let (consumer, mut rx) = recording_consumer("failover", "ch", max_in_flight(100));
    connect_to(&consumer, [&first, &second]).await;
    let mut seen = HashSet::new();
    wait_for_value(
        Duration::from_secs(20),
        "every acknowledged body is consumed (count missing)",
        0,
        || {
            seen.extend(std::iter::from_fn(|| rx.try_recv().ok()));
            acked.difference(&seen).count()
        },
    )
    .await
    .unwrap_or_else(|e| second.fail(&e));
    consumer.stop().await;
}

#[nsq_test_support::test]
async fn an_unreachable_first_address_is_skipped_and_errors_are_not_retried() {
    let nsqd = NsqdProcess::start(&[]);
    // Port 1 on loopback refuses connections.
    let producer = Producer::with_addresses(
        ["127.0.0.1:1".to_owned(), nsqd.tcp_addr().to_string()],
        Config::default(),
    );
    producer.publish("skip", "one").await.unwrap();
    assert_eq!(producer.addr(), nsqd.tcp_addr().to_string());
    // nsqd's refusal is an answer, not a failure of the node.
    assert!(matches!(
        producer.publish("skip", "").await,
        Err(Error::Server { .. })
    ));

    let nowhere = Producer::with_addresses(["127.0.0.1:1", "127.0.0.1:1"], Config::default());
    assert!(matches!(
        nowhere.publish("skip", "x").await,
        Err(Error::Connect { .. })
    ));
}
