use std::sync::atomic::AtomicU64;
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::channel::{Channel, ChannelLimits};
use crate::client::{ClientState, JobWorker};

const TIMEOUT: Duration = Duration::from_secs(60);

fn channel(jobs: JobLimits) -> Arc<Channel> {
    Channel::new(
        "render".parse().unwrap(),
        "workers".parse().unwrap(),
        ChannelLimits {
            mem_queue_size: 1000,
            max_msg_timeout: Duration::from_secs(900),
            max_channel_consumers: 0,
            e2e_window: None,
            durable: false,
            jobs,
            ..Default::default()
        },
        None,
    )
}

fn worker(id: u64, capacity: Option<u64>) -> Arc<Client> {
    let c = Arc::new(Client::new(id, "127.0.0.1:1".parse().unwrap(), 0));
    if let Some(capacity) = capacity {
        c.set_job(JobWorker {
            capacity,
            name: format!("w{id}"),
            total: Arc::new(AtomicU64::new(0)),
        });
    }
    c.set_state(ClientState::Subscribed);
    c.set_ready_count(100);
    c
}

fn shard(id: u64, item: u32, load: u32) -> Message {
    let body = Shard {
        job: "render".into(),
        fire: "f".into(),
        item,
        load,
        param: String::new(),
        payload: Bytes::new(),
    }
    .encode()
    .unwrap();
    Message::new(id, 0, body)
}

fn take(ch: &Channel, c: &Arc<Client>, now: Instant) -> Vec<u32> {
    let mut out = Vec::new();
    ch.take(c, 100, TIMEOUT, 0, now, &mut out);
    out.iter()
        .map(|m| peek_load(&m.body).unwrap().item)
        .collect()
}

#[test]
fn heaviest_first_to_the_least_loaded_worker_within_capacity() {
    let ch = channel(JobLimits::default());
    let (a, b) = (worker(1, Some(4)), worker(2, Some(2)));
    ch.add_client(a.clone()).unwrap();
    ch.add_client(b.clone()).unwrap();
    // Items 0..4 with loads 3, 1, 2, 2.
    ch.put(&[
        shard(10, 0, 3),
        shard(11, 1, 1),
        shard(12, 2, 2),
        shard(13, 3, 2),
    ]);
    let now = Instant::now();
    // 3 → a (tie, lower id); 2 → b (least loaded); the second 2 fits
    // nowhere; 1 → a (room 1). b asks first and gets only its share.
    assert_eq!(take(&ch, &b, now), vec![2]);
    assert_eq!(take(&ch, &a, now), vec![0, 1]);
    assert_eq!(take(&ch, &a, now), Vec::<u32>::new());
    let s = ch.job_status(now).unwrap();
    let loads: Vec<(u64, u64)> = s.workers.iter().map(|w| (w.load, w.capacity)).collect();
    assert_eq!(loads, vec![(4, 4), (2, 2)]);
    assert_eq!((s.fires[0].running, s.fires[0].pending), (3, 1));
    // b finishes: its room takes the last shard; the record says who.
    ch.finish(2, 12).unwrap();
    assert_eq!(take(&ch, &b, now), vec![3]);
    let s = ch.job_status(now).unwrap();
    let done = s.fires[0].shards.iter().find(|s| s.item == 2).unwrap();
    assert_eq!((done.state, done.worker.as_deref()), ("done", Some("w2")));
}

#[test]
fn plain_clients_keep_ordinary_delivery_and_a_leaving_worker_frees_its_load() {
    let ch = channel(JobLimits::default());
    let (w, plain) = (worker(1, Some(1)), worker(2, None));
    ch.add_client(w.clone()).unwrap();
    ch.add_client(plain.clone()).unwrap();
    ch.put(&[shard(10, 0, 1), shard(11, 1, 1), shard(12, 2, 1)]);
    let now = Instant::now();
    assert_eq!(take(&ch, &w, now), vec![0]);
    // The plain client takes the queue's front, as on any channel.
    assert_eq!(take(&ch, &plain, now), vec![1, 2]);
    ch.remove_client(1);
    assert_eq!(w.job().unwrap().total.load(Ordering::Acquire), 0);
    let w2 = worker(3, Some(5));
    ch.add_client(w2.clone()).unwrap();
    assert_eq!(take(&ch, &w2, now), vec![0]);
}

#[test]
fn the_settle_window_holds_everyone_until_enough_workers_join() {
    let now = Instant::now();
    let ch = channel(JobLimits {
        settle_until: Some(now + Duration::from_secs(60)),
        min_workers: 2,
    });
    let (a, plain) = (worker(1, Some(4)), worker(2, None));
    ch.add_client(a.clone()).unwrap();
    ch.add_client(plain.clone()).unwrap();
    ch.put(&[shard(10, 0, 1), shard(11, 1, 1)]);
    assert!(take(&ch, &a, now).is_empty());
    assert!(take(&ch, &plain, now).is_empty());
    assert!(ch.job_status(now).unwrap().settling);
    // The timer scan ends the window on time even without workers.
    let later = now + Duration::from_secs(61);
    ch.process_timers(later);
    assert!(!ch.job_status(later).unwrap().settling);
    assert_eq!(take(&ch, &a, later).len(), 2);
}
