//! Criterion bench of a replication holder's per-record work, through the
//! library API its link task uses: decode an Append record of an MPUB's
//! messages (as read off the link) and apply it to the origin's shadow.
//! The socket read and its page faults are not in it (see
//! `scripts/bench.sh --replicated` for the whole pair).

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use nsqd::replication::shadow::Shadow;
use nsqd::replication::wire::{Frame, WireMessage};

/// Records applied to one shadow before it is dropped (untimed).
const RECORDS: usize = 100;

/// `records` Append records of `n` 200-byte messages each, ids ascending,
/// each without its size prefix (as the holder's reader hands it out).
fn records(records: usize, n: usize) -> Vec<Bytes> {
    let body = Bytes::from(vec![b'x'; 200]);
    (0..records)
        .map(|r| {
            let msgs: Vec<WireMessage> = (0..n)
                .map(|i| WireMessage {
                    id: (r * n + i) as u64,
                    timestamp: 1,
                    attempts: 0,
                    body: body.clone(),
                })
                .collect();
            let mut out = BytesMut::new();
            Frame::Append {
                seq: r as u64 + 1,
                topic: "bench".parse().unwrap(),
                channel: None,
                due: 0,
                msgs: msgs.into(),
            }
            .encode(&mut out);
            out.freeze().slice(4..)
        })
        .collect()
}

fn decode_apply(c: &mut Criterion) {
    let mut g = c.benchmark_group("holder_apply");
    for n in [1usize, 200] {
        let recs = records(RECORDS, n);
        let topic = "bench".parse().unwrap();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("messages_per_record", n), &n, |b, _| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                let mut left = iters as usize;
                while left > 0 {
                    let k = left.min(RECORDS);
                    let mut shadow = Shadow::default();
                    let start = Instant::now();
                    for rec in &recs[..k] {
                        let Ok(Frame::Append { due, msgs, .. }) = Frame::decode(rec.clone()) else {
                            panic!("not an Append");
                        };
                        shadow
                            .append(&topic, None, due, &msgs, u64::MAX)
                            .expect("room");
                    }
                    spent += start.elapsed();
                    drop(shadow);
                    left -= k;
                }
                spent
            })
        });
    }
    g.finish();
}

criterion_group!(benches, decode_apply);
criterion_main!(benches);
