use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::*;
use crate::client::Client;

fn topic(mem: usize) -> Arc<Topic> {
    let limits = ChannelLimits {
        mem_queue_size: mem,
        max_msg_timeout: Duration::from_secs(900),
        ..Default::default()
    };
    Topic::new("t".parse().unwrap(), 1, limits, false, None, None)
}

fn bodies(range: std::ops::Range<usize>) -> Vec<Bytes> {
    range.map(|i| Bytes::from(format!("m{i}"))).collect()
}

/// Everything queued on `ch`, taken by a new subscriber `id`.
fn drain(ch: &Channel, id: u64) -> Vec<Message> {
    let c = Arc::new(Client::new(id, "127.0.0.1:1".parse().unwrap(), 0));
    ch.add_client(c.clone()).unwrap();
    let mut out = Vec::new();
    ch.take(
        &c,
        usize::MAX,
        Duration::from_secs(60),
        0,
        Instant::now(),
        &mut out,
    );
    out
}

#[test]
fn an_mpub_reaches_every_channel_whole_with_the_same_unique_ids() {
    let t = topic(1000);
    let a = t.get_or_create_channel(&"a".parse().unwrap()).0;
    let b = t.get_or_create_channel(&"b".parse().unwrap()).0;
    t.put(bodies(0..200), None).unwrap();
    t.put(bodies(200..201), None).unwrap();
    t.put(bodies(201..300), None).unwrap();
    assert_eq!((a.stats().depth, b.stats().depth), (300, 300));
    let (got_a, got_b) = (drain(&a, 1), drain(&b, 2));
    assert_eq!(got_a, got_b);
    let ids: Vec<u64> = got_a.iter().map(|m| m.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "publish order, unique");
    let hex: HashSet<String> = ids
        .iter()
        .map(|&id| nsq_protocol::MessageId::from_u64(id).to_string())
        .collect();
    assert_eq!(hex.len(), 300);
    assert!(hex.iter().all(|h| h.len() == 16));
    let expected: Vec<String> = (0..300).map(|i| format!("m{i}")).collect();
    assert_eq!(
        got_a.iter().map(|m| m.body.clone()).collect::<Vec<_>>(),
        expected
    );
}

#[test]
fn a_paused_topic_holds_batches_and_releases_them_in_order() {
    let t = topic(1000);
    let a = t.get_or_create_channel(&"a".parse().unwrap()).0;
    t.pause();
    t.put(bodies(0..50), None).unwrap();
    t.put(bodies(50..51), None).unwrap();
    t.put(bodies(51..80), None).unwrap();
    assert_eq!((t.stats().0.depth, a.stats().depth), (80, 0));
    assert_eq!(t.held_in_memory().len(), 80);
    t.unpause();
    assert_eq!((t.stats().0.depth, a.stats().depth), (0, 80));
    let got: Vec<_> = drain(&a, 1).into_iter().map(|m| m.body).collect();
    assert_eq!(got, (0..80).map(|i| format!("m{i}")).collect::<Vec<_>>());
}

#[test]
fn memory_limits_count_messages_not_batches() {
    // Memory only, no disk queue: a batch that does not fit is refused.
    let t = topic(300);
    let a = t.get_or_create_channel(&"a".parse().unwrap()).0;
    t.put(bodies(0..200), None).unwrap();
    let full = t.put(bodies(0..200), None);
    assert!(matches!(full, Err(PutError::QueueFull)), "{full:?}");
    t.put(bodies(0..100), None).unwrap();
    assert_eq!(a.stats().depth, 300);
    t.empty();
    a.empty();
    assert_eq!(a.stats().depth, 0);
}
