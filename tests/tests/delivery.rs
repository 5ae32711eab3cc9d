//! Delivery guarantees against the real nsqd with raw clients: redelivery after a message
//! timeout, REQ and DPUB delays, and requeue when a consumer dies holding messages.
//!
//! Timing assertions measure from an `Instant` taken *before* the command that starts the
//! server-side clock, so "no earlier than the delay" holds strictly whatever the load; upper
//! bounds are generous deadlines, never exact values.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use nsq_protocol::message::MessageFrame;
use nsq_test_support::{NsqdProcess, RawConn};
use serde_json::json;

/// Slack on top of a delay before "it never arrived" is declared: covers nsqd's 100 ms queue
/// scan and a loaded machine.
const ARRIVAL_SLACK: Duration = Duration::from_secs(10);

async fn assert_redelivered_after_timeout(nsqd: &NsqdProcess, identify: serde_json::Value) {
    let topic = "timeout";
    let mut c = nsqd.connect().await;
    let reply = c.identify_ok(identify).await;
    assert_eq!(reply["msg_timeout"], 1000, "IDENTIFY reply: {reply}");
    c.publish(topic, b"not finished").await;
    c.sub(topic, "ch").await;

    let start = Instant::now();
    c.rdy(1).await;
    let first = c.read_message().await;
    assert_eq!((first.attempts, &first.body[..]), (1, &b"not finished"[..]));

    // No FIN: after msg_timeout the same message comes back, counted as a second attempt.
    let second = c
        .read_message_within(Duration::from_secs(1) + ARRIVAL_SLACK)
        .await;
    let elapsed = start.elapsed();
    assert_eq!(second.id, first.id);
    assert_eq!(
        (second.attempts, &second.body[..]),
        (2, &b"not finished"[..])
    );
    assert!(
        elapsed >= Duration::from_secs(1),
        "redelivered after {elapsed:?}, before the 1 s message timeout"
    );

    // FIN of the redelivered message works: the next delivery is a fresh message, not a third
    // attempt of the old one.
    c.fin(second.id).await;
    c.publish(topic, b"next").await;
    let next = c.read_message().await;
    assert_eq!((next.attempts, &next.body[..]), (1, &b"next"[..]));
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_message_is_redelivered_after_identify_msg_timeout() {
    let nsqd = NsqdProcess::start(&[]);
    assert_redelivered_after_timeout(&nsqd, json!({"msg_timeout": 1000})).await;
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_message_is_redelivered_after_msg_timeout_flag() {
    let nsqd = NsqdProcess::start(&["--msg-timeout=1s"]);
    assert_redelivered_after_timeout(&nsqd, json!({})).await;
}

/// The next message on `c`, which must come no earlier than `delay` after `start` (nor later
/// than [`ARRIVAL_SLACK`] after that); `what` deferred it.
async fn read_deferred(
    c: &mut RawConn,
    start: Instant,
    delay: Duration,
    what: &str,
) -> MessageFrame {
    let m = c.read_message_within(delay + ARRIVAL_SLACK).await;
    let elapsed = start.elapsed();
    assert!(
        elapsed >= delay,
        "{what} {delay:?} delivered after {elapsed:?}"
    );
    m
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn req_with_delay_is_redelivered_no_earlier_than_the_delay() {
    let nsqd = NsqdProcess::start(&[]);
    let delay = Duration::from_millis(1500);
    let mut c = nsqd.connect_identified().await;
    c.publish("req", b"again").await;
    c.sub("req", "ch").await;
    c.rdy(1).await;
    let first = c.read_message().await;
    assert_eq!(first.attempts, 1);

    let start = Instant::now();
    c.req(first.id, delay.as_millis() as u64).await;
    // While it is deferred, other messages still flow: RDY 1 is free again after REQ.
    c.publish("req", b"meanwhile").await;
    let other = c.read_message().await;
    assert_eq!((&other.body[..], other.attempts), (&b"meanwhile"[..], 1));
    c.fin(other.id).await;

    let again = read_deferred(&mut c, start, delay, "REQ").await;
    assert_eq!(again.id, first.id);
    assert_eq!((&again.body[..], again.attempts), (&b"again"[..], 2));
    c.fin(again.id).await;
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn dpub_is_delivered_no_earlier_than_the_delay() {
    let nsqd = NsqdProcess::start(&[]);
    let delay = Duration::from_millis(1500);
    let mut consumer = nsqd.connect_identified().await;
    // Subscribe first so the channel exists when the deferred message reaches the topic.
    consumer.sub("dpub", "ch").await;
    consumer.rdy(5).await;

    let mut producer = nsqd.connect_identified().await;
    let start = Instant::now();
    producer
        .publish_deferred("dpub", delay.as_millis() as u64, b"later")
        .await;
    producer.publish("dpub", b"now").await;

    // The plain PUB overtakes the deferred one.
    let now = consumer.read_message().await;
    assert_eq!((&now.body[..], now.attempts), (&b"now"[..], 1));
    consumer.fin(now.id).await;
    let later = read_deferred(&mut consumer, start, delay, "DPUB").await;
    assert_eq!((&later.body[..], later.attempts), (&b"later"[..], 1));
    consumer.fin(later.id).await;
}

/// A consumer that dies holding messages must not strand them until the message timeout:
/// nsqd requeues a closed connection's in-flight messages at once.
#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_held_by_a_dead_consumer_reach_another_consumer_quickly() {
    let nsqd = NsqdProcess::start(&["--msg-timeout=60s"]);
    let bodies: BTreeSet<Vec<u8>> = (0..10).map(|i| format!("held-{i}").into_bytes()).collect();
    let mut producer = nsqd.connect_identified().await;
    let refs: Vec<&[u8]> = bodies.iter().map(|b| &b[..]).collect();
    producer.publish_multi("held", &refs).await;

    let mut doomed = nsqd.subscriber("held", "ch").await;
    doomed.rdy(10).await;
    let held = doomed.read_messages(10).await;
    let got: BTreeSet<Vec<u8>> = held.iter().map(|m| m.body.to_vec()).collect();
    assert_eq!(got, bodies);

    // Subscribed while the messages are in flight elsewhere: gets nothing until they
    // come back.
    let mut survivor = nsqd.subscriber("held", "ch").await;
    survivor.rdy(10).await;

    let start = Instant::now();
    doomed.abort();
    let back = survivor.read_messages(10).await;
    let elapsed = start.elapsed();
    assert!(
        elapsed < Duration::from_secs(5),
        "requeued messages took {elapsed:?} (message timeout is 60 s)"
    );
    let got: BTreeSet<Vec<u8>> = back.iter().map(|m| m.body.to_vec()).collect();
    assert_eq!(got, bodies);
    for m in &back {
        assert_eq!(m.attempts, 2, "{m:?}");
        survivor.fin(m.id).await;
    }
}
