//! Hostile bytes through the IDENTIFY compression upgrade, against a real
//! in-process nsqd: after negotiating deflate or snappy, a client sends
//! garbage, or well-compressed garbage commands, then stops writing. nsqd
//! must close every such connection (never hang or panic) and unregister
//! each client.

use std::io::Write;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

fn compress(snappy: bool, plain: &[u8]) -> Vec<u8> {
    if snappy {
        let mut enc = snap::write::FrameEncoder::new(Vec::new());
        enc.write_all(plain).unwrap();
        enc.into_inner().unwrap()
    } else {
        let mut enc =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(plain).unwrap();
        enc.flush().unwrap();
        enc.get_ref().clone()
    }
}

/// Command-shaped garbage: verbs, sizes (often huge) and random tails.
fn commands() -> impl Strategy<Value = Vec<u8>> {
    let verb = prop_oneof![
        Just(&b"PUB t\n"[..]),
        Just(&b"MPUB t\n"[..]),
        Just(&b"IDENTIFY\n"[..]),
        Just(&b"NOP\n"[..]),
        Just(&b"SUB t c\n"[..]),
        Just(&b"RDY 99999999999999999999\n"[..]),
    ];
    proptest::collection::vec(
        (
            verb,
            any::<i32>(),
            proptest::collection::vec(any::<u8>(), 0..32),
        ),
        1..6,
    )
    .prop_map(|parts| {
        let mut v = Vec::new();
        for (verb, size, tail) in parts {
            v.extend_from_slice(verb);
            v.extend_from_slice(&size.to_be_bytes());
            v.extend(tail);
        }
        v
    })
}

#[test]
fn hostile_bytes_after_a_compression_upgrade_close_cleanly() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let nsqd = rt.block_on(nsq_test_support::in_process::start(&[]));
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(64);
    let mut runner = TestRunner::new(Config::with_cases(cases));
    let strategy = (
        any::<bool>(),
        any::<bool>(),
        prop_oneof![commands(), proptest::collection::vec(any::<u8>(), 0..1024)],
    );
    runner
        .run(&strategy, |(snappy, well_formed, plain)| {
            let wire = if well_formed {
                compress(snappy, &plain)
            } else {
                plain
            };
            rt.block_on(async {
                let mut s = TcpStream::connect(nsqd.tcp).await.unwrap();
                let body = if snappy {
                    r#"{"feature_negotiation":true,"snappy":true}"#
                } else {
                    r#"{"feature_negotiation":true,"deflate":true}"#
                };
                let mut hello = b"  V2IDENTIFY\n".to_vec();
                hello.extend_from_slice(&(body.len() as u32).to_be_bytes());
                hello.extend_from_slice(body.as_bytes());
                s.write_all(&hello).await.unwrap();
                let _ = s.write_all(&wire).await;
                let _ = s.shutdown().await;
                let mut sink = Vec::new();
                let closed =
                    timeout(nsq_test_support::in_process::STEP, s.read_to_end(&mut sink)).await;
                prop_assert!(closed.is_ok(), "nsqd kept the connection open");
                Ok(())
            })
        })
        .unwrap();
    rt.block_on(nsq_test_support::poll(
        "every client to be unregistered",
        || async { nsqd.inner.clients_snapshot().is_empty().then_some(()) },
    ));
    drop(nsqd);
    rt.shutdown_timeout(Duration::from_secs(5));
}
