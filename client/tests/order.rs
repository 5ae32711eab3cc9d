//! End-to-end tests of the consumer's handler model against a real nsqd:
//! one handler handles messages one at a time in arrival order; n
//! concurrent handlers handle n at once; max-in-flight changes at runtime.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nsq::{handler_fn, Config, Consumer, Producer};
use nsq_test_support::consumer::{max_in_flight, receive};
use nsq_test_support::{wait_for_value, NsqdProcess};
use tokio::sync::{mpsc, watch};

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_handler_sees_messages_in_arrival_order_one_at_a_time() {
    let nsqd = NsqdProcess::start(&[]);
    let addr = nsqd.tcp_addr().to_string();
    let producer = Producer::new(addr.clone(), Config::default());
    for i in 1..=50 {
        producer.publish("order", format!("q{i}")).await.unwrap();
    }
    // Plenty in flight, and handlers that take varying time: with
    // concurrent handling the later, quicker ones would overtake.
    let consumer = Consumer::new("order", "ch", max_in_flight(50)).unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (r, m) = (running.clone(), most.clone());
    consumer.add_handler(handler_fn(move |msg| {
        let (tx, running, most) = (tx.clone(), r.clone(), m.clone());
        async move {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            let n: u64 = msg.body[1..]
                .iter()
                .fold(0, |a, d| a * 10 + u64::from(d - b'0'));
            tokio::time::sleep(Duration::from_millis((50 - n) % 7)).await;
            running.fetch_sub(1, Ordering::SeqCst);
            let _ = tx.send(String::from_utf8_lossy(&msg.body).into_owned());
            Ok(())
        }
    }));
    consumer.connect_to_nsqd(&addr).await.unwrap();
    let seen = receive(&mut rx, 50).await;
    let expected: Vec<String> = (1..=50).map(|i| format!("q{i}")).collect();
    assert_eq!(seen, expected);
    assert_eq!(most.load(Ordering::SeqCst), 1);
    consumer.stop().await;
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_handlers_run_n_at_once_and_max_in_flight_changes_at_runtime() {
    let nsqd = NsqdProcess::start(&[]);
    let addr = nsqd.tcp_addr().to_string();
    nsqd.mpub("conc", (0..30).map(|i| format!("c{i}")));
    let consumer = Consumer::new("conc", "ch", max_in_flight(20)).unwrap();
    let (gate_tx, gate) = watch::channel(false);
    let started = Arc::new(Mutex::new(Vec::new()));
    let s = started.clone();
    consumer.add_concurrent_handlers(
        handler_fn(move |msg| {
            let mut gate = gate.clone();
            s.lock().unwrap().push(msg.body.clone());
            async move {
                let _ = gate.wait_for(|open| *open).await;
                Ok(())
            }
        }),
        4,
    );
    consumer.connect_to_nsqd(&addr).await.unwrap();
    // Twenty in flight (RDY 20), but only four handlers running.
    let in_flight = || {
        nsqd.channel_stats("conc", "ch")["in_flight_count"]
            .as_u64()
            .unwrap_or(0)
    };
    wait_for_value(
        Duration::from_secs(10),
        "20 messages in flight",
        20,
        in_flight,
    )
    .await
    .unwrap_or_else(|e| nsqd.fail(&e));
    wait_for_value(Duration::from_secs(10), "4 handlers started", 4, || {
        started.lock().unwrap().len()
    })
    .await
    .unwrap();
    assert_eq!(consumer.stats().received, 20);

    // Lower max-in-flight at runtime: RDY follows, and once the
    // handlers finish no more than 5 are in flight.
    consumer.change_max_in_flight(5);
    assert_eq!(consumer.max_in_flight(), 5);
    gate_tx.send(true).unwrap();
    wait_for_value(Duration::from_secs(10), "all 30 finished", 30, || {
        consumer.stats().finished
    })
    .await
    .unwrap();
    let stats = consumer.stats();
    assert_eq!((stats.received, stats.requeued), (30, 0));
    let ch = nsqd.channel_stats("conc", "ch");
    assert_eq!(ch["clients"][0]["ready_count"], 5, "{ch}");
    consumer.stop().await;
}
