//! Criterion benches for nsqd's per-message hot paths, through the library
//! API the protocol handler uses: a topic fanning one published message out
//! to N channels, and a channel moving a message into flight and finishing
//! it while many others are in flight; and through a real loopback
//! connection to an in-process nsqd: one PUB's round trip to its `OK`, and
//! messages delivered and finished by a subscriber.

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

/// MPUB of 200 messages of 200 bytes into a topic with `n` channels (the
/// batch stays packed, one entry per channel), then one subscriber per
/// channel taking them all into flight (each unpacked there).
fn mpub_fan_out_take(c: &mut Criterion) {
    let mut g = c.benchmark_group("mpub_fan_out_take");
    const BATCH: usize = 200;
    g.throughput(Throughput::Elements(BATCH as u64));
    for n in [1usize, 10, 100] {
        let topic = Topic::new("bench".parse().unwrap(), 1, limits(), false, None, None);
        let subscribed: Vec<(Arc<Channel>, Arc<Client>)> = (0..n)
            .map(|i| {
                let ch = (topic.get_or_create_channel(&format!("c{i}").parse().unwrap())).0;
                let client = Arc::new(Client::new(i as u64, "127.0.0.1:1".parse().unwrap(), 0));
                ch.add_client(client.clone()).unwrap();
                (ch, client)
            })
            .collect();
        let bodies = vec![body(); BATCH];
        let mut out = Vec::with_capacity(BATCH);
        g.bench_with_input(BenchmarkId::new("channels", n), &n, |b, _| {
            b.iter(|| {
                black_box(topic.put(bodies.clone(), None).expect("room"));
                for (ch, client) in &subscribed {
                    out.clear();
                    ch.take(client, BATCH, MSG_TIMEOUT, 0, Instant::now(), &mut out);
                    for m in &out {
                        ch.finish(client.id, m.id).expect("in flight");
                    }
                }
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

/// An nsqd serving on loopback from its own two-worker runtime (the
/// machine's shape), memory only, until the bench process ends.
struct LiveNsqd {
    addr: std::net::SocketAddr,
    _runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

fn live_nsqd() -> LiveNsqd {
    let dir = tempfile::tempdir().expect("temp dir");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let data = format!("--data-path={}", dir.path().display());
    let argv = [
        "nsqd",
        "--tcp-address=127.0.0.1:0",
        "--http-address=",
        "--mem-queue-size=10000000",
        data.as_str(),
    ];
    let opts = nsq_app::flags::try_parse_options("nsqd", argv.iter().map(Into::into), &[])
        .expect("options");
    let server = runtime.block_on(nsqd::Server::bind(opts)).expect("bind");
    let addr = server.tcp_addr();
    runtime.spawn(server.run(std::future::pending()));
    LiveNsqd {
        addr,
        _runtime: runtime,
        _dir: dir,
    }
}

/// A blocking V2 connection.
fn connect(addr: std::net::SocketAddr) -> std::net::TcpStream {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    s.write_all(b"  V2").expect("magic");
    s
}

/// Read one frame; returns its type and data.
fn read_frame(s: &mut std::net::TcpStream, data: &mut Vec<u8>) -> i32 {
    use std::io::Read;
    let mut head = [0u8; 8];
    s.read_exact(&mut head).expect("frame head");
    let size = u32::from_be_bytes(head[..4].try_into().unwrap()) as usize;
    let kind = i32::from_be_bytes(head[4..].try_into().unwrap());
    data.resize(size - 4, 0);
    s.read_exact(data).expect("frame data");
    kind
}

fn encode(cmd: nsq_protocol::Command) -> Vec<u8> {
    let mut buf = bytes::BytesMut::new();
    cmd.encode(&mut buf);
    buf.to_vec()
}

/// One PUB of 200 bytes to a topic without channels, waiting for its `OK`:
/// what a request/response publisher feels, wake-ups between tasks and
/// threads included.
fn pub_round_trip(c: &mut Criterion) {
    use std::io::Write;
    let live = live_nsqd();
    let mut s = connect(live.addr);
    let cmd = encode(nsq_protocol::Command::Pub {
        topic: "bench_rt".parse().unwrap(),
        body: body(),
    });
    let mut data = Vec::new();
    let mut g = c.benchmark_group("tcp");
    g.throughput(Throughput::Elements(1));
    g.bench_function("pub_round_trip", |b| {
        b.iter(|| {
            s.write_all(&cmd).expect("PUB");
            assert_eq!(read_frame(&mut s, &mut data), 0, "OK");
        })
    });
    g.finish();
}

/// Messages delivered to one subscriber (RDY 1000) and finished, one FIN
/// write per message read, as a simple client does; the channel is refilled
/// by MPUBs outside the timing.
fn sub_fin(c: &mut Criterion) {
    use std::io::Write;
    const BATCH: usize = 1000;
    let live = live_nsqd();
    let topic: nsq_protocol::TopicName = "bench_sub".parse().unwrap();
    let mut publisher = connect(live.addr);
    let mpub = encode(nsq_protocol::Command::Mpub {
        topic: topic.clone(),
        bodies: vec![body(); BATCH].into(),
    });
    let mut sub = connect(live.addr);
    sub.write_all(&encode(nsq_protocol::Command::Sub {
        topic,
        channel: "ch".parse().unwrap(),
    }))
    .expect("SUB");
    let mut data = Vec::new();
    assert_eq!(read_frame(&mut sub, &mut data), 0, "SUB OK");
    sub.write_all(&encode(nsq_protocol::Command::Rdy(BATCH as u64)))
        .expect("RDY");
    let mut g = c.benchmark_group("tcp");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("sub_fin_1000", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            let mut fins = Vec::with_capacity(BATCH * 40);
            for _ in 0..iters {
                publisher.write_all(&mpub).expect("MPUB");
                assert_eq!(read_frame(&mut publisher, &mut data), 0, "MPUB OK");
                let start = StdInstant::now();
                let mut left = BATCH;
                while left > 0 {
                    let kind = read_frame(&mut sub, &mut data);
                    if kind != 2 {
                        continue; // a heartbeat
                    }
                    let id = nsq_protocol::MessageId::from_slice(&data[10..26]).expect("id");
                    fins.clear();
                    fins.extend(encode(nsq_protocol::Command::Fin(id)));
                    sub.write_all(&fins).expect("FIN");
                    left -= 1;
                }
                spent += start.elapsed();
            }
            spent
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    fan_out,
    mpub_fan_out_take,
    take_fin,
    pub_round_trip,
    sub_fin
);
criterion_main!(benches);
