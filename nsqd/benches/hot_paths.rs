//! Criterion benches for nsqd's per-message hot paths, through the library
//! API the protocol handler uses: a topic fanning one published message out
//! to N channels, and a channel moving a message into flight and finishing
//! it while many others are in flight.

use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use nsqd::channel::{Channel, ChannelLimits};
use nsqd::client::Client;
use nsqd::message::Message;
use nsqd::topic::Topic;
use tokio::time::Instant;

/// Memory-only queues big enough that no put in a bench is refused.
const MEM_QUEUE: usize = 1 << 20;
/// Puts between two drains of the channels (the drain is not timed).
const DRAIN_EVERY: u64 = 10_000;
const MSG_TIMEOUT: Duration = Duration::from_secs(60);

fn limits() -> ChannelLimits {
    ChannelLimits {
        mem_queue_size: MEM_QUEUE,
        max_msg_timeout: Duration::from_secs(900),
        ..Default::default()
    }
}

fn body() -> Bytes {
    Bytes::from(vec![b'x'; 200])
}

/// PUB of one 200-byte message into a topic with `n` channels: ID, message,
/// and one copy per channel under the topic's lock.
fn fan_out(c: &mut Criterion) {
    let mut g = c.benchmark_group("fan_out");
    g.throughput(Throughput::Elements(1));
    for n in [1usize, 10, 100] {
        let topic = Topic::new("bench".parse().unwrap(), 1, limits(), false, None, None);
        let channels: Vec<Arc<Channel>> = (0..n)
            .map(|i| {
                topic
                    .get_or_create_channel(&format!("c{i}").parse().unwrap())
                    .0
            })
            .collect();
        let body = body();
        g.bench_with_input(BenchmarkId::new("channels", n), &n, |b, _| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let k = left.min(DRAIN_EVERY);
                    let start = StdInstant::now();
                    for _ in 0..k {
                        let writes = topic.put(vec![body.clone()], None).expect("room");
                        black_box(writes);
                    }
                    spent += start.elapsed();
                    channels.iter().for_each(|ch| ch.empty());
                    left -= k;
                }
                spent
            })
        });
    }
    g.finish();
}

/// One message through a subscribed channel that already has `in_flight`
/// messages out: put, take into flight, FIN.
fn take_fin(c: &mut Criterion) {
    let mut g = c.benchmark_group("take_fin");
    g.throughput(Throughput::Elements(1));
    for in_flight in [100u64, 10_000] {
        let ch = Channel::new(
            "bench".parse().unwrap(),
            "ch".parse().unwrap(),
            limits(),
            None,
        );
        let client = Arc::new(Client::new(1, "127.0.0.1:1".parse().unwrap(), 0));
        ch.add_client(client.clone()).unwrap();
        let now = Instant::now();
        let held: Vec<Message> = (0..in_flight)
            .map(|id| Message::new(id, 0, body()))
            .collect();
        ch.put(&held);
        let mut out = Vec::new();
        assert_eq!(
            ch.take(&client, in_flight as usize, MSG_TIMEOUT, 0, now, &mut out),
            in_flight as usize
        );
        let body = body();
        let mut next_id = in_flight;
        g.bench_with_input(
            BenchmarkId::new("in_flight", in_flight),
            &in_flight,
            |b, _| {
                let mut out = Vec::with_capacity(1);
                b.iter(|| {
                    let id = next_id;
                    next_id += 1;
                    ch.put(&[Message::new(id, 0, body.clone())]);
                    out.clear();
                    ch.take(&client, 1, MSG_TIMEOUT, 0, now, &mut out);
                    ch.finish(client.id, id).expect("in flight");
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, fan_out, take_fin);
criterion_main!(benches);
