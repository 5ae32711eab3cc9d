//! Criterion benches for the hot codec paths: decoding MPUB and FIN streams
//! (nsqd's read side) and encoding message frames (its write side).

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use nsq_protocol::frame::encode_message_frame;
use nsq_protocol::{Command, CommandDecoder, Limits, MessageId};

fn mpub_wire(batches: usize) -> Bytes {
    let cmd = Command::Mpub {
        topic: "bench".parse().unwrap(),
        bodies: (0..200)
            .map(|_| Bytes::from(vec![b'x'; 200]))
            .collect::<Vec<_>>()
            .into(),
    };
    let mut buf = BytesMut::new();
    for _ in 0..batches {
        cmd.encode(&mut buf);
    }
    buf.freeze()
}

fn decode(c: &mut Criterion) {
    let wire = mpub_wire(10);
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(2000));
    g.bench_function("mpub_200x200B_x10", |b| {
        b.iter(|| {
            let mut d = CommandDecoder::new(Limits::default());
            let mut buf = BytesMut::from(&wire[..]);
            let mut n = 0;
            while let Some(Command::Mpub { bodies, .. }) = d.decode(&mut buf).unwrap() {
                n += bodies.len();
            }
            black_box(n)
        })
    });
    let mut fins = BytesMut::new();
    for i in 0..2000u64 {
        Command::Fin(MessageId::from_u64(i)).encode(&mut fins);
    }
    let fins = fins.freeze();
    g.bench_function("fin_x2000", |b| {
        b.iter(|| {
            let mut d = CommandDecoder::new(Limits::default());
            let mut buf = BytesMut::from(&fins[..]);
            let mut n = 0u64;
            while let Some(Command::Fin(id)) = d.decode(&mut buf).unwrap() {
                n = n.wrapping_add(id.to_u64().unwrap());
            }
            black_box(n)
        })
    });
    g.finish();
}

fn encode(c: &mut Criterion) {
    let body = vec![b'x'; 200];
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(2000));
    g.bench_function("message_frame_200B_x2000", |b| {
        let mut out = BytesMut::with_capacity(2000 * 240);
        b.iter(|| {
            out.clear();
            for i in 0..2000u64 {
                encode_message_frame(
                    &mut out,
                    1_700_000_000_000_000_000,
                    1,
                    &MessageId::from_u64(i),
                    &body,
                );
            }
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
