//! The community client `tokio-nsq` as the peer: it deserialises every IDENTIFY response key
//! strictly, pipelines publishes and matches `OK`s in order, and runs its own RDY handling, so
//! it checks nsqd from the outside the way users will.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use nsq_test_support::{within_for, NsqdProcess};
use tokio::sync::mpsc;
use tokio_nsq::{
    NSQChannel, NSQConfigShared, NSQConsumer, NSQConsumerConfig, NSQConsumerConfigSources,
    NSQEvent, NSQProducer, NSQProducerConfig, NSQTopic,
};

const TOTAL: usize = 10_000;
const TOPIC: &str = "tokio_nsq_fanout";

/// tokio-nsq flushes its writes on a timer (250 ms by default); FINs would then trickle back
/// in batches and the test would mostly measure that timer.
fn shared_config() -> NSQConfigShared {
    NSQConfigShared::new().set_flush_interval(Duration::from_millis(10))
}

fn consumer(addr: &str, channel: &str) -> NSQConsumer {
    NSQConsumerConfig::new(
        NSQTopic::new(TOPIC).expect("valid topic"),
        NSQChannel::new(channel).expect("valid channel"),
    )
    .set_max_in_flight(200)
    .set_sources(NSQConsumerConfigSources::Daemons(vec![addr.to_owned()]))
    .set_shared(shared_config())
    .build()
}

/// Wait for the consumer's connection to finish IDENTIFY and SUB (its `Healthy` event).
async fn wait_healthy_consumer(nsqd: &NsqdProcess, c: &mut NSQConsumer) {
    match c.consume().await {
        Some(NSQEvent::Healthy()) => {}
        other => nsqd.fail(&format!("consumer: expected Healthy, got {other:?}")),
    }
}

/// What a collector reports: `(who, body)` per message, or why it stopped.
type Report = Result<(usize, Vec<u8>), String>;

/// Consume and FIN until the test drops the receiver, reporting each body.
fn spawn_collector(
    mut c: NSQConsumer,
    who: usize,
    tx: mpsc::UnboundedSender<Report>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match c.consume().await {
                Some(NSQEvent::Message(m)) => {
                    let body = m.body.clone();
                    m.finish().await;
                    if tx.send(Ok((who, body))).is_err() {
                        return;
                    }
                }
                // Reported rather than panicked: a panic in this task would leave the test
                // waiting for messages until its timeout.
                Some(NSQEvent::Unhealthy()) => {
                    let _ = tx.send(Err(format!("consumer {who} lost its connection")));
                    return;
                }
                Some(_) => {}
                None => {
                    let _ = tx.send(Err(format!("consumer {who} stopped")));
                    return;
                }
            }
        }
    })
}

async fn publish_all(nsqd: &NsqdProcess, producer: &mut NSQProducer, bodies: &[Vec<u8>]) {
    match producer.consume().await {
        Some(NSQEvent::Healthy()) => {}
        other => nsqd.fail(&format!("producer: expected Healthy, got {other:?}")),
    }
    let topic: Arc<NSQTopic> = NSQTopic::new(TOPIC).expect("valid topic");
    // Half as single PUBs, half as MPUBs of 100: both paths, one reply per command.
    let (singles, batched) = bodies.split_at(bodies.len() / 2);
    let mut commands = 0usize;
    for b in singles {
        producer
            .publish(&topic, b.clone())
            .await
            .unwrap_or_else(|e| nsqd.fail(&format!("publish: {e}")));
        commands += 1;
    }
    for chunk in batched.chunks(100) {
        producer
            .publish_multiple(&topic, chunk.to_vec())
            .await
            .unwrap_or_else(|e| nsqd.fail(&format!("publish_multiple: {e}")));
        commands += 1;
    }
    let mut acked = 0usize;
    while acked < commands {
        match producer.consume().await {
            Some(NSQEvent::Ok()) => acked += 1,
            other => nsqd.fail(&format!(
                "producer: after {acked} of {commands} OKs got {other:?}"
            )),
        }
    }
}

/// 10,000 messages from tokio-nsq: two consumers sharing a channel get each message exactly
/// once between them; a consumer on a second channel gets all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_fan_out_to_channels_and_split_within_one() {
    within_for(Duration::from_secs(120), async {
        // A message timeout far beyond the test: any duplicate would then be a real bug, not
        // an at-least-once redelivery after a timeout.
        let nsqd = NsqdProcess::start(&["--msg-timeout=10m"]);
        let addr = nsqd.tcp_addr().to_string();

        // All three subscribe before anything is published: a channel created later would
        // not see messages the topic already handed out.
        let mut shared_a = consumer(&addr, "shared");
        let mut shared_b = consumer(&addr, "shared");
        let mut all = consumer(&addr, "all");
        for c in [&mut shared_a, &mut shared_b, &mut all] {
            wait_healthy_consumer(&nsqd, c).await;
        }
        let (tx, mut rx) = mpsc::unbounded_channel();
        let tasks = [
            spawn_collector(shared_a, 0, tx.clone()),
            spawn_collector(shared_b, 1, tx.clone()),
            spawn_collector(all, 2, tx),
        ];

        let bodies: Vec<Vec<u8>> = (0..TOTAL)
            .map(|i| format!("m{i:05}").into_bytes())
            .collect();
        let mut producer = NSQProducerConfig::new(addr.clone())
            .set_shared(shared_config())
            .build();
        publish_all(&nsqd, &mut producer, &bodies).await;

        let mut got: [Vec<Vec<u8>>; 3] = Default::default();
        while got[0].len() + got[1].len() < TOTAL || got[2].len() < TOTAL {
            match rx.recv().await {
                Some(Ok((who, body))) => got[who].push(body),
                Some(Err(e)) => nsqd.fail(&format!(
                    "{e} after {} / {} / {} messages",
                    got[0].len(),
                    got[1].len(),
                    got[2].len()
                )),
                None => nsqd.fail("all collectors stopped"),
            }
        }
        drop(rx);
        for t in tasks {
            t.abort();
        }

        let expected: BTreeSet<Vec<u8>> = bodies.into_iter().collect();
        let sets: Vec<HashSet<&Vec<u8>>> = got.iter().map(|g| g.iter().collect()).collect();
        for (who, g) in got.iter().enumerate() {
            assert_eq!(sets[who].len(), g.len(), "consumer {who} got duplicates");
        }
        let union: BTreeSet<Vec<u8>> = sets[0].union(&sets[1]).map(|b| (*b).clone()).collect();
        assert_eq!(union, expected, "shared channel missed messages");
        let both: Vec<_> = sets[0].intersection(&sets[1]).collect();
        assert!(
            both.is_empty(),
            "{} messages went to both consumers",
            both.len()
        );
        assert!(
            !got[0].is_empty() && !got[1].is_empty(),
            "one consumer got everything ({} / {}): the channel did not spread the load",
            got[0].len(),
            got[1].len()
        );
        let all_set: BTreeSet<Vec<u8>> = got[2].iter().cloned().collect();
        assert_eq!(all_set, expected, "second channel missed messages");
    })
    .await;
}
