use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::*;
use crate::client::Client;
use crate::message::Message;

const TIMEOUT: Duration = Duration::from_secs(60);

fn channel(mem: usize) -> Arc<Channel> {
    new_channel(mem, None)
}

/// Channel `t:c` holding `mem` messages in memory, the rest in `backend` if given.
fn new_channel(mem: usize, backend: Option<crate::disk_io::QueueHandle>) -> Arc<Channel> {
    Channel::new(
        "t".parse().unwrap(),
        "c".parse().unwrap(),
        ChannelLimits {
            jobs: Default::default(),
            mem_queue_size: mem,
            max_msg_timeout: Duration::from_secs(900),
            max_channel_consumers: 0,
            e2e_window: None,
            durable: false,
            ..Default::default()
        },
        backend,
    )
}

fn client(id: u64) -> Arc<Client> {
    Arc::new(Client::new(id, "127.0.0.1:1".parse().unwrap(), 0))
}

/// A client `id`, subscribed to `ch`.
fn subscribed(ch: &Channel, id: u64) -> Arc<Client> {
    let c = client(id);
    ch.add_client(c.clone()).unwrap();
    c
}

fn msgs(ids: std::ops::Range<u64>) -> Vec<Message> {
    ids.map(|i| Message::new(i, 0, Bytes::from(format!("m{i}"))))
        .collect()
}

fn take(ch: &Channel, c: &Arc<Client>, max: usize, now: Instant) -> Vec<Message> {
    let mut out = Vec::new();
    ch.take(c, max, TIMEOUT, 0, now, &mut out);
    out
}

#[test]
fn delivers_in_order_and_counts_attempts() {
    let ch = channel(100);
    let c = subscribed(&ch, 1);
    ch.put(&msgs(0..5));
    let now = Instant::now();
    let got = take(&ch, &c, 3, now);
    assert_eq!(got.iter().map(|m| m.id).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert!(got.iter().all(|m| m.attempts == 1));
    assert_eq!(c.in_flight(), 3);
    let s = ch.stats();
    assert_eq!((s.depth, s.in_flight_count, s.message_count), (2, 3, 5));
    ch.finish(1, 1).unwrap();
    assert_eq!(c.in_flight(), 2);
    assert_eq!(ch.finish(1, 1), Err(InFlightError::NotInFlight));
    assert_eq!(ch.finish(2, 0), Err(InFlightError::NotOwner));
    assert_eq!(InFlightError::NotInFlight.to_string(), "ID not in flight");
    assert_eq!(
        InFlightError::NotOwner.to_string(),
        "client does not own message"
    );
}

#[test]
fn requeue_now_goes_to_the_back_and_later_goes_deferred() {
    let ch = channel(100);
    let c = subscribed(&ch, 1);
    ch.put(&msgs(0..3));
    let now = Instant::now();
    take(&ch, &c, 2, now);
    ch.requeue(1, 0, Duration::ZERO, now).unwrap();
    ch.requeue(1, 1, Duration::from_secs(5), now).unwrap();
    assert_eq!(c.in_flight(), 0);
    let s = ch.stats();
    assert_eq!((s.depth, s.deferred_count, s.requeue_count), (2, 1, 2));
    let again = take(&ch, &c, 10, now);
    assert_eq!(
        again.iter().map(|m| (m.id, m.attempts)).collect::<Vec<_>>(),
        vec![(2, 1), (0, 2)]
    );
    // Not yet due, then due.
    assert_eq!(
        ch.process_timers(now + Duration::from_secs(4)),
        Some(now + Duration::from_secs(5))
    );
    assert_eq!(ch.stats().deferred_count, 1);
    ch.process_timers(now + Duration::from_secs(5));
    let s = ch.stats();
    assert_eq!((s.depth, s.deferred_count), (1, 0));
}

#[test]
fn timeouts_requeue_and_touch_extends_up_to_the_max() {
    let ch = channel(100);
    let c = subscribed(&ch, 1);
    ch.put(&msgs(0..2));
    let t0 = Instant::now();
    take(&ch, &c, 2, t0);
    // Message 1 is touched half way: its deadline moves, message 0's does not.
    ch.touch(1, 1, TIMEOUT, t0 + TIMEOUT / 2).unwrap();
    ch.process_timers(t0 + TIMEOUT);
    let s = ch.stats();
    assert_eq!((s.depth, s.in_flight_count, s.timeout_count), (1, 1, 1));
    assert_eq!(c.in_flight(), 1);
    ch.process_timers(t0 + TIMEOUT + TIMEOUT / 2);
    assert_eq!(ch.stats().timeout_count, 2);
    assert_eq!(c.in_flight(), 0);

    // TOUCH never extends past delivery + max_msg_timeout (900 s here).
    let ch = channel(100);
    ch.add_client(c.clone()).unwrap();
    ch.put(&msgs(10..11));
    take(&ch, &c, 1, t0);
    ch.touch(
        1,
        10,
        Duration::from_secs(600),
        t0 + Duration::from_secs(590),
    )
    .unwrap();
    ch.process_timers(t0 + Duration::from_secs(899));
    assert_eq!(ch.stats().timeout_count, 0);
    ch.process_timers(t0 + Duration::from_secs(900));
    assert_eq!(ch.stats().timeout_count, 1);
    assert_eq!(
        ch.touch(2, 10, TIMEOUT, t0),
        Err(InFlightError::NotInFlight)
    );
}

#[test]
fn a_leaving_client_gives_its_messages_back_first_in_line() {
    let ch = channel(100);
    let a = client(1);
    let b = client(2);
    ch.add_client(a.clone()).unwrap();
    ch.add_client(b.clone()).unwrap();
    ch.put(&msgs(0..4));
    let now = Instant::now();
    take(&ch, &a, 2, now);
    assert_eq!(ch.remove_client(1), 1);
    let got = take(&ch, &b, 10, now);
    assert_eq!(
        got.iter().map(|m| (m.id, m.attempts)).collect::<Vec<_>>(),
        vec![(0, 2), (1, 2), (2, 1), (3, 1)]
    );
    assert_eq!(ch.stats().timeout_count, 0);
}

#[tokio::test]
async fn an_idle_client_is_woken_by_the_next_put() {
    let ch = channel(100);
    let c = subscribed(&ch, 1);
    assert!(take(&ch, &c, 10, Instant::now()).is_empty());
    ch.put(&msgs(0..1));
    // The permit stored by notify_one makes this return at once.
    tokio::time::timeout(Duration::from_secs(5), c.wake.notified())
        .await
        .expect("woken");
    assert_eq!(take(&ch, &c, 10, Instant::now()).len(), 1);
}

#[test]
fn paused_channels_deliver_nothing_until_unpaused() {
    let ch = channel(100);
    let c = subscribed(&ch, 1);
    ch.put(&msgs(0..2));
    ch.pause();
    assert!(take(&ch, &c, 10, Instant::now()).is_empty());
    ch.unpause();
    assert_eq!(take(&ch, &c, 10, Instant::now()).len(), 2);
}

#[test]
fn deadline_order_stays_bounded_when_one_message_is_held() {
    let ch = channel(10_000);
    let c = subscribed(&ch, 1);
    let now = Instant::now();
    ch.put(&msgs(0..1));
    take(&ch, &c, 1, now); // held, never finished
    for round in 0..200u64 {
        let base = 1 + round * 10;
        ch.put(&msgs(base..base + 10));
        for m in take(&ch, &c, 10, now) {
            ch.finish(1, m.id).unwrap();
        }
    }
    let (live, order) = ch.lock().flights.order_len(1).unwrap();
    assert_eq!(live, 1);
    assert!(order < 200, "order grew to {order}");
}

#[test]
fn empty_drops_everything_and_resets_clients() {
    let ch = channel(100);
    let c = subscribed(&ch, 1);
    ch.put(&msgs(0..5));
    let now = Instant::now();
    take(&ch, &c, 2, now);
    ch.requeue(1, 0, Duration::from_secs(9), now).unwrap();
    ch.empty();
    let s = ch.stats();
    assert_eq!((s.depth, s.in_flight_count, s.deferred_count), (0, 0, 0));
    assert_eq!(c.in_flight(), 0);
    assert_eq!(ch.finish(1, 1), Err(InFlightError::NotInFlight));
}

#[test]
fn max_channel_consumers() {
    let ch = Channel::new(
        "t".parse().unwrap(),
        "c".parse().unwrap(),
        ChannelLimits {
            jobs: Default::default(),
            mem_queue_size: 10,
            max_msg_timeout: Duration::from_secs(900),
            max_channel_consumers: 1,
            e2e_window: None,
            durable: false,
            ..Default::default()
        },
        None,
    );
    ch.add_client(client(1)).unwrap();
    let err = ch.add_client(client(2)).unwrap_err();
    assert_eq!(err.to_string(), "consumers for t:c exceeds limit of 1");
}

fn disk(dir: &std::path::Path) -> Arc<crate::disk_io::DiskIo> {
    crate::disk_io::DiskIo::for_tests(dir)
}

fn spilling_channel(io: &crate::disk_io::DiskIo, mem: usize) -> Arc<Channel> {
    new_channel(mem, Some(io.queue("t:c")))
}

/// Stop the disk I/O threads (they block, so off the runtime).
async fn shutdown(io: Arc<crate::disk_io::DiskIo>) {
    tokio::task::spawn_blocking(move || io.shutdown())
        .await
        .unwrap();
}

/// Take until `n` messages arrived, waiting for read-ahead refills.
async fn take_all(ch: &Channel, c: &Arc<Client>, n: usize) -> Vec<Message> {
    let mut got = Vec::new();
    while got.len() < n {
        let batch = take(ch, c, 7, Instant::now());
        if batch.is_empty() {
            tokio::time::timeout(Duration::from_secs(5), c.wake.notified())
                .await
                .expect("refilled from disk");
        }
        for m in &batch {
            ch.finish(c.id, m.id).unwrap();
        }
        got.extend(batch);
    }
    got
}

#[tokio::test]
async fn spills_past_memory_and_reads_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let io = disk(dir.path());
    let ch = spilling_channel(&io, 3);
    let c = subscribed(&ch, 1);
    // Two publishes: the second goes to disk entirely, behind the first's
    // spill, even though memory has room again by then.
    ch.put(&msgs(0..50))
        .expect("spilled")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(take(&ch, &c, 2, Instant::now()).len(), 2);
    ch.put(&msgs(50..60))
        .expect("follows the spill")
        .await
        .unwrap()
        .unwrap();
    // The take read ahead from disk, so the split between memory and disk
    // depends on timing; the total does not.
    let s = ch.stats();
    assert_eq!((s.depth, s.in_flight_count), (58, 2));
    assert!(
        s.backend_depth >= 10,
        "the second publish went to disk: {s:?}"
    );
    let rest = take_all(&ch, &c, 58).await;
    let ids: Vec<u64> = rest.iter().map(|m| m.id).collect();
    assert_eq!(ids, (2..60).collect::<Vec<_>>());
    assert!(rest
        .iter()
        .all(|m| m.attempts == 1 && m.body == format!("m{}", m.id)));
    assert_eq!(ch.stats().depth, 0);
    shutdown(io).await;
}

#[tokio::test]
async fn flush_to_disk_keeps_in_flight_and_deferred_with_due_times() {
    let dir = tempfile::tempdir().unwrap();
    let io = disk(dir.path());
    let ch = spilling_channel(&io, 100);
    let c = subscribed(&ch, 1);
    ch.put(&msgs(0..4));
    let now = Instant::now();
    take(&ch, &c, 2, now);
    ch.requeue(1, 1, Duration::from_secs(3600), now).unwrap();
    assert_eq!(ch.flush_to_disk(now), 4);
    shutdown(io).await;

    // A new channel on the same files finds all four; the deferred one
    // is held back, not delivered at once.
    let io = disk(dir.path());
    let ch = spilling_channel(&io, 100);
    ch.set_on_disk(4);
    let c = subscribed(&ch, 2);
    let got = take_all(&ch, &c, 3).await;
    let mut ids: Vec<u64> = got.iter().map(|m| m.id).collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![0, 2, 3]);
    let s = ch.stats();
    assert_eq!((s.deferred_count, s.depth), (1, 0));
    shutdown(io).await;
}

#[tokio::test]
async fn a_read_ahead_under_way_at_shutdown_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let io = disk(dir.path());
    let ch = spilling_channel(&io, 3);
    let c = subscribed(&ch, 1);
    ch.put(&msgs(0..50)).unwrap().await.unwrap().unwrap();
    // Two in flight, and a read-ahead of the 47 on disk under way.
    assert_eq!(take(&ch, &c, 2, Instant::now()).len(), 2);
    let io2 = io.clone();
    tokio::task::spawn_blocking(move || io2.stop_reads())
        .await
        .unwrap();
    // Memory now holds everything that left the disk: write it all back.
    let still_on_disk = ch.stats().backend_depth as usize;
    assert_eq!(ch.flush_to_disk(Instant::now()), 50 - still_on_disk);
    shutdown(io).await;

    let io = disk(dir.path());
    let depth = io.queue("t:c").depth().await.unwrap();
    assert_eq!(depth, 50, "every message is on disk after the flush");
    shutdown(io).await;
}

#[test]
fn sampling_delivers_about_the_rate_and_drops_the_rest() {
    let ch = channel(10_000);
    let c = subscribed(&ch, 1);
    ch.put(&msgs(0..10_000));
    let mut out = Vec::new();
    let consumed = ch.take(&c, 10_000, TIMEOUT, 30, Instant::now(), &mut out);
    assert_eq!(consumed, 10_000);
    // P(deliver) = 31/100; 10,000 draws stay well within these bounds.
    assert!(
        (2_700..3_500).contains(&out.len()),
        "{} delivered",
        out.len()
    );
    let s = ch.stats();
    assert_eq!((s.depth, s.in_flight_count), (0, out.len() as u64));
    assert_eq!(c.in_flight(), out.len() as u64);
}

#[tokio::test]
async fn a_packed_batch_spills_mid_batch_and_mixes_with_requeues() {
    let bodies: Vec<Bytes> = (0..20).map(|i| Bytes::from(format!("m{i}"))).collect();
    let batch = crate::backlog::Packed::pack(&bodies, 0, 0);
    let dir = tempfile::tempdir().unwrap();
    let io = disk(dir.path());
    let ch = spilling_channel(&io, 5);
    // Five stay packed in memory, fifteen are unpacked to disk.
    let spill = ch.put_packed(&batch).expect("spilled mid-batch");
    spill.await.unwrap().unwrap();
    assert_eq!(ch.stats().depth, 20);
    let c = subscribed(&ch, 1);
    let first = take(&ch, &c, 2, Instant::now());
    assert_eq!(first.iter().map(|m| m.id).collect::<Vec<_>>(), [0, 1]);
    ch.finish(c.id, 1).unwrap();
    ch.requeue(c.id, 0, Duration::ZERO, Instant::now()).unwrap();
    let rest = take_all(&ch, &c, 19).await;
    let mut others: Vec<u64> = rest.iter().map(|m| m.id).filter(|&id| id != 0).collect();
    assert!(others.windows(2).all(|w| w[0] < w[1]), "publish order");
    others.push(0);
    others.sort_unstable();
    assert_eq!(others, (0..20).filter(|&i| i != 1).collect::<Vec<_>>());
    assert!(rest.iter().all(|m| m.body == format!("m{}", m.id)));
    assert_eq!(rest.iter().find(|m| m.id == 0).unwrap().attempts, 2);
    // Emptying drops a packed batch whole.
    let small = crate::backlog::Packed::pack(&bodies[..4], 100, 0);
    assert!(ch.put_packed(&small).is_none(), "fits in memory");
    assert_eq!(ch.stats().depth, 4);
    ch.empty();
    assert_eq!(ch.stats().depth, 0);
    assert!(take(&ch, &c, 20, Instant::now()).is_empty());
    shutdown(io).await;
}
