//! End-to-end tests of `nsq::Consumer` against a real nsqd on port 0.
//!
//! They run on a multi-threaded runtime so handlers, connection tasks and
//! the test really run in parallel, as in an application.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nsq::{handler_fn, Config, Consumer, HandlerError, Producer};
use nsq_test_support::consumer::{
    connect_to, max_in_flight, receive, recording_consumer, reporting_consumer,
};
use nsq_test_support::{wait_for_value, NsqdProcess};
use tokio::sync::{mpsc, watch};

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousand_messages_exactly_once_across_two_consumers() {
    let nsqd = NsqdProcess::start(&[]);
    let addr = nsqd.tcp_addr().to_string();
    let (a, mut rx_a) = recording_consumer("thousand", "ch", max_in_flight(50));
    let (b, mut rx_b) = recording_consumer("thousand", "ch", max_in_flight(50));
    a.connect_to_nsqd(&addr).await.unwrap();
    b.connect_to_nsqd(&addr).await.unwrap();
    assert!(matches!(
        a.connect_to_nsqd(&addr).await,
        Err(nsq::Error::AlreadyConnected(_))
    ));

    let producer = Producer::new(addr.clone(), Config::default());
    for chunk in (0..1000).collect::<Vec<u32>>().chunks(100) {
        producer
            .multi_publish("thousand", chunk.iter().map(|i| i.to_string()))
            .await
            .unwrap();
    }

    let mut seen: HashMap<String, u32> = HashMap::new();
    let (mut from_a, mut from_b) = (0, 0);
    while seen.len() < 1000 {
        let body = tokio::select! {
            Some(body) = rx_a.recv() => { from_a += 1; body }
            Some(body) = rx_b.recv() => { from_b += 1; body }
        };
        *seen.entry(body).or_default() += 1;
    }
    a.stop().await;
    b.stop().await;
    // Anything delivered twice would have reached a handler by now: both
    // consumers answered everything before their stop returned.
    while let Ok(body) = rx_a.try_recv().or_else(|_| rx_b.try_recv()) {
        *seen.entry(body).or_default() += 1;
    }
    assert_eq!(seen.len(), 1000);
    assert!(
        seen.values().all(|&n| n == 1),
        "a message was delivered twice"
    );
    eprintln!("split: {from_a} / {from_b}");
    nsqd.assert_channel_drained("thousand", "ch");
    let ch = nsqd.channel_stats("thousand", "ch");
    assert_eq!(ch["requeue_count"], 0, "{ch}");
    assert_eq!(ch["timeout_count"], 0, "{ch}");
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_handler_is_retried_then_given_up() {
    let nsqd = NsqdProcess::start(&[]);
    let addr = nsqd.tcp_addr().to_string();
    nsqd.mpub("retry", ["good1", "fail", "good2", "good3"]);

    let config = Config {
        max_in_flight: 4,
        default_requeue_delay: Duration::ZERO,
        // Small, so backoff runs through its levels within the test.
        backoff_multiplier: Duration::from_millis(5),
        max_backoff_duration: Duration::from_millis(40),
        ..Config::default()
    };
    let calls: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let (gave_up_tx, mut gave_up) = mpsc::unbounded_channel();
    let consumer = Consumer::new("retry", "ch", config).unwrap();
    let counts = calls.clone();
    consumer.add_handler(
        handler_fn(move |msg| {
            let counts = counts.clone();
            async move {
                let body = String::from_utf8_lossy(&msg.body).into_owned();
                *counts.lock().unwrap().entry(body.clone()).or_default() += 1;
                if body == "fail" {
                    return Err(HandlerError::new("always fails"));
                }
                Ok(())
            }
        })
        .on_give_up(move |msg| {
            let _ = gave_up_tx.send((msg.body.clone(), msg.attempts));
        }),
    );
    consumer.connect_to_nsqd(&addr).await.unwrap();
    let (body, attempts) = gave_up.recv().await.unwrap();
    assert_eq!(&body[..], b"fail");
    assert_eq!(attempts, 6);
    wait_for_value(
        Duration::from_secs(10),
        "the good messages are handled",
        3,
        || {
            let c = calls.lock().unwrap();
            ["good1", "good2", "good3"]
                .iter()
                .map(|k| c.get(*k).copied().unwrap_or(0))
                .sum::<u32>()
        },
    )
    .await
    .unwrap();
    consumer.stop().await;
    let c = calls.lock().unwrap().clone();
    // go-nsq's suite expects exactly this: 3 good + 5 failures, 1 give-up.
    assert_eq!(c["fail"], 5, "{c:?}");
    assert_eq!(c.values().sum::<u32>(), 8, "{c:?}");
    let stats = consumer.stats();
    assert_eq!(
        (
            stats.received,
            stats.finished,
            stats.requeued,
            stats.given_up
        ),
        (9, 4, 5, 1),
        "{stats:?}"
    );
    assert!(gave_up.try_recv().is_err());
    nsqd.assert_channel_drained("retry", "ch");
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_stop_finishes_in_flight_and_loses_nothing() {
    let nsqd = NsqdProcess::start(&[]);
    let addr = nsqd.tcp_addr().to_string();
    nsqd.mpub("graceful", (0..20).map(|i| i.to_string()));

    // Handlers block on the gate, so ten messages are in flight when
    // stop begins.
    let (gate_tx, gate) = watch::channel(false);
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let consumer = Consumer::new("graceful", "ch", max_in_flight(10)).unwrap();
    consumer.add_concurrent_handlers(
        handler_fn(move |msg| {
            let mut gate = gate.clone();
            let started = started_tx.clone();
            async move {
                let _ = started.send(String::from_utf8_lossy(&msg.body).into_owned());
                // A long handler keeps its message alive.
                msg.touch()?;
                let _ = gate.wait_for(|open| *open).await;
                Ok(())
            }
        }),
        10,
    );
    consumer.connect_to_nsqd(&addr).await.unwrap();
    let first = receive(&mut started, 10).await;

    let consumer = Arc::new(consumer);
    let stopping = tokio::spawn({
        let c = consumer.clone();
        async move { c.stop().await }
    });
    // Open the gate only once CLS has gone out.
    wait_for_value(
        Duration::from_secs(10),
        "stop has sent CLS",
        Vec::<String>::new(),
        || consumer.connected_nsqds(),
    )
    .await
    .unwrap();
    gate_tx.send(true).unwrap();
    stopping.await.unwrap();
    assert!(started.try_recv().is_err(), "a message arrived after CLS");

    let ch = nsqd.channel_stats("graceful", "ch");
    assert_eq!(ch["depth"], 10, "{ch}");
    assert_eq!(ch["in_flight_count"], 0, "{ch}");
    assert_eq!(ch["requeue_count"], 0, "{ch}");
    assert_eq!(ch["timeout_count"], 0, "{ch}");

    // The rest go to the next consumer; none of the first ten come back.
    let (next, mut rx) = recording_consumer("graceful", "ch", Config::default());
    next.connect_to_nsqd(&addr).await.unwrap();
    let rest = receive(&mut rx, 10).await;
    next.stop().await;
    let mut all: Vec<u32> = first
        .iter()
        .chain(&rest)
        .map(|s| s.parse().unwrap())
        .collect();
    all.sort();
    assert_eq!(all, (0..20).collect::<Vec<_>>());
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 4)]
async fn rdy_never_exceeds_the_servers_max_rdy_count() {
    let nsqd = NsqdProcess::start(&["--max-rdy-count=5"]);
    let addr = nsqd.tcp_addr().to_string();
    let (consumer, mut rx) = recording_consumer("capped", "ch", max_in_flight(100));
    consumer.connect_to_nsqd(&addr).await.unwrap();
    nsqd.mpub("capped", (0..20).map(|i| i.to_string()));
    receive(&mut rx, 20).await;
    // RDY 100 would have been a fatal E_INVALID; the connection is still up at 5.
    let ch = nsqd.channel_stats("capped", "ch");
    assert_eq!(ch["clients"][0]["ready_count"], 5, "{ch}");
    consumer.stop().await;
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 4)]
async fn touch_keeps_a_long_handler_s_message() {
    let nsqd = NsqdProcess::start(&[]);
    let addr = nsqd.tcp_addr().to_string();
    let config = Config {
        // nsqd's minimum; the handler below runs for longer than this.
        msg_timeout: Some(Duration::from_secs(1)),
        ..Config::default()
    };
    let (consumer, mut rx) = reporting_consumer("touch", "ch", config, |msg, tx| async move {
        // The work itself: 1.8 s, checking in every 300 ms.
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            msg.touch()?;
        }
        let _ = tx.send(msg.attempts);
        Ok(())
    });
    consumer.connect_to_nsqd(&addr).await.unwrap();
    Producer::new(addr, Config::default())
        .publish("touch", "slow")
        .await
        .unwrap();
    assert_eq!(rx.recv().await.unwrap(), 1);
    consumer.stop().await;
    assert!(rx.try_recv().is_err(), "redelivered despite TOUCH");
    nsqd.assert_channel_drained("touch", "ch");
    let ch = nsqd.channel_stats("touch", "ch");
    assert_eq!(ch["timeout_count"], 0, "{ch}");
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_direct_connection_comes_back_after_nsqd_restarts() {
    let nsqd = NsqdProcess::start(&[]);
    let addr = nsqd.tcp_addr().to_string();
    let config = Config {
        // How often a lost direct connection is retried.
        lookupd_poll_interval: Duration::from_millis(100),
        ..Config::default()
    };
    let (consumer, mut rx) = recording_consumer("back", "ch", config);
    consumer.connect_to_nsqd(&addr).await.unwrap();
    let producer = Producer::new(addr.clone(), Config::default());
    producer.publish("back", "before").await.unwrap();
    assert_eq!(rx.recv().await.unwrap(), "before");

    // Same data directory, same TCP port (a repeated flag keeps the last value).
    let nsqd = nsqd.restart(&[&format!("--tcp-address={addr}")]);
    assert_eq!(nsqd.tcp_addr().to_string(), addr);
    // The producer reconnects on this publish; the consumer on its own.
    let mut published = false;
    for _ in 0..3 {
        if producer.publish("back", "after").await.is_ok() {
            published = true;
            break;
        }
    }
    assert!(published);
    assert_eq!(rx.recv().await.unwrap(), "after");
    consumer.stop().await;
}

/// Each nsqd's `ready_count` for the one client on `topic`/`channel`, or
/// an error naming what was seen.
fn ready_counts(nsqds: &[NsqdProcess], topic: &str, channel: &str) -> Result<Vec<u64>, String> {
    nsqds
        .iter()
        .map(|n| {
            let ch = n.channel_stats(topic, channel);
            ch["clients"][0]["ready_count"]
                .as_u64()
                .ok_or_else(|| ch.to_string())
        })
        .collect()
}

/// Wait until every nsqd's one client on `topic`/`ch` has RDY `want`.
async fn wait_for_rdy(nsqds: &[NsqdProcess], topic: &str, want: u64, what: &str) {
    let all = Ok(vec![want; nsqds.len()]);
    wait_for_value(Duration::from_secs(10), what, all, || {
        ready_counts(nsqds, topic, "ch")
    })
    .await
    .unwrap();
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_in_flight_below_the_nsqd_count_still_drains_every_nsqd() {
    let nsqds: Vec<NsqdProcess> = (0..3).map(|_| NsqdProcess::start(&[])).collect();
    let mut want = Vec::new();
    for (i, nsqd) in nsqds.iter().enumerate() {
        let bodies: Vec<String> = (0..30).map(|j| format!("{i}-{j}")).collect();
        Producer::new(nsqd.tcp_addr().to_string(), Config::default())
            .multi_publish("scarce", bodies.clone())
            .await
            .unwrap();
        want.extend(bodies);
    }

    let config = Config {
        max_in_flight: 1,
        // go-nsq's 5 s and 10 s, shortened; the mechanism is the same.
        // (Turns of busy connections, low_rdy_timeout, are unit-tested:
        // they may overlap a message, which would blur the count below.)
        rdy_redistribute_interval: Duration::from_millis(50),
        low_rdy_idle_timeout: Duration::from_millis(500),
        ..Config::default()
    };
    // How many handlers run at once, and the most there ever were.
    let running = Arc::new(Mutex::new((0u32, 0u32)));
    let counts = running.clone();
    let (consumer, mut rx) = reporting_consumer("scarce", "ch", config, move |msg, tx| {
        let counts = counts.clone();
        async move {
            {
                let mut c = counts.lock().unwrap();
                c.0 += 1;
                c.1 = c.1.max(c.0);
            }
            // Long enough for a second message to overlap, were one offered.
            tokio::time::sleep(Duration::from_millis(5)).await;
            counts.lock().unwrap().0 -= 1;
            let _ = tx.send(String::from_utf8_lossy(&msg.body).into_owned());
            Ok(())
        }
    });
    connect_to(&consumer, &nsqds).await;
    let mut got = receive(&mut rx, want.len()).await;
    consumer.stop().await;
    // max_in_flight holds although there are more nsqds than it allows ...
    assert_eq!(running.lock().unwrap().1, 1, "handlers ran concurrently");
    // ... and RDY moved on from each drained nsqd, so all were served.
    got.sort();
    want.sort();
    assert_eq!(got, want);
    for nsqd in &nsqds {
        nsqd.assert_channel_drained("scarce", "ch");
    }
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 4)]
async fn backoff_sets_rdy_0_everywhere_then_probes_with_rdy_1() {
    let nsqds: Vec<NsqdProcess> = (0..2).map(|_| NsqdProcess::start(&[])).collect();
    let pause = Duration::from_secs(2);
    let config = Config {
        max_in_flight: 10,
        backoff_multiplier: pause,
        max_backoff_duration: pause,
        // A probe on the nsqd without messages moves on quickly.
        rdy_redistribute_interval: Duration::from_millis(50),
        low_rdy_idle_timeout: Duration::from_millis(200),
        ..Config::default()
    };
    // The first delivery fails (and is requeued at once), the second succeeds.
    let (consumer, mut rx) = reporting_consumer("backoff", "ch", config, |msg, tx| async move {
        let _ = tx.send((msg.attempts, tokio::time::Instant::now()));
        if msg.attempts == 1 {
            return Err(HandlerError::new("first try fails").requeue_after(Duration::ZERO));
        }
        Ok(())
    });
    connect_to(&consumer, &nsqds).await;
    wait_for_rdy(&nsqds, "backoff", 5, "RDY 5 on both nsqds").await;

    Producer::new(nsqds[0].tcp_addr().to_string(), Config::default())
        .publish("backoff", "flaky")
        .await
        .unwrap();
    let (attempts, failed_at) = rx.recv().await.unwrap();
    assert_eq!(attempts, 1);
    // The failure stops the flow from every nsqd ...
    wait_for_rdy(&nsqds, "backoff", 0, "RDY 0 on both nsqds").await;
    // ... for the backoff pause; then one message is let through, and
    // its success ends the backoff.
    let (attempts, retried_at) = rx.recv().await.unwrap();
    assert_eq!(attempts, 2);
    assert!(
        retried_at - failed_at >= pause,
        "retried after {:?}",
        retried_at - failed_at
    );
    wait_for_rdy(&nsqds, "backoff", 5, "RDY 5 on both nsqds again").await;
    consumer.stop().await;
    let stats = consumer.stats();
    assert_eq!((stats.received, stats.finished, stats.requeued), (2, 1, 1));
}
