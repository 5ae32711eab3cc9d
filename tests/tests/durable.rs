//! `--durable` through the real binary: every acknowledged message is
//! delivered after `kill -9` at a random moment, including messages that
//! were in flight, requeued or deferred at the time.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use nsq_protocol::{Command, Frame, MessageId};
use nsq_test_support::{channel, topic, within_for, NsqdProcess, RawConn, ReadError};
use rand::Rng;

const TOPIC: &str = "durable";
const CHANNEL: &str = "c";
const PUBLISHERS: usize = 4;
const ROUNDS: usize = 3;
const ARGS: &[&str] = &[
    "--durable",
    "--mem-queue-size=100",
    // Small segments, so rolling and deleting them happens under the crash too.
    "--max-bytes-per-file=65536",
    "--msg-timeout=2s",
];

/// What the test knows: messages acknowledged to a publisher and not yet
/// finished by the consumer must all show up again.
#[derive(Default)]
struct Ledger {
    /// Acknowledged, not finished.
    owed: HashSet<Bytes>,
    /// Finished (FIN sent) at some point.
    finished: HashSet<Bytes>,
    acked: usize,
}

type Shared = Arc<Mutex<Ledger>>;

fn encode(cmd: &Command) -> BytesMut {
    let mut out = BytesMut::new();
    cmd.encode(&mut out);
    out
}

/// Publish until the connection breaks: PUB, MPUB of 10 and DPUB (1 s) in
/// turn, one command in flight; each OK puts its bodies on the ledger.
async fn publisher(mut conn: RawConn, who: usize, round: usize, ledger: Shared) {
    for seq in 0u64.. {
        let body = |k: u64| Bytes::from(format!("r{round}-p{who}-{seq}-{k}"));
        let (cmd, bodies) = match seq % 3 {
            0 => (
                Command::Pub {
                    topic: topic(TOPIC),
                    body: body(0),
                },
                vec![body(0)],
            ),
            1 => {
                let bodies: Vec<Bytes> = (0..10).map(body).collect();
                (
                    Command::Mpub {
                        topic: topic(TOPIC),
                        bodies: bodies.clone().into(),
                    },
                    bodies,
                )
            }
            _ => (
                Command::Dpub {
                    topic: topic(TOPIC),
                    defer_ms: 1000,
                    body: body(0),
                },
                vec![body(0)],
            ),
        };
        if conn.try_write_raw(&encode(&cmd)).await.is_err() {
            return;
        }
        match conn.try_read_frame(Duration::from_secs(10)).await {
            Ok(Frame::Response(r)) if &r[..] == b"OK" => {
                let mut l = ledger.lock().unwrap();
                l.acked += bodies.len();
                for b in bodies {
                    if !l.finished.contains(&b) {
                        l.owed.insert(b);
                    }
                }
            }
            Ok(Frame::Response(r)) if &r[..] == b"_heartbeat_" => {
                // Our command's answer is still to come; keep it simple and
                // stop: nothing unacknowledged is owed.
                return;
            }
            Ok(other) => panic!("publisher {who}: unexpected answer {other:?}"),
            Err(ReadError::Closed) | Err(ReadError::Io(_)) => return,
            Err(e) => panic!("publisher {who}: no answer: {e:?}"),
        }
    }
}

/// Consume until the connection breaks or `done` says so. While `chaos`,
/// every fifth message is requeued with a delay and every seventh left in
/// flight (it times out); the rest are finished.
async fn consumer(mut conn: RawConn, chaos: bool, ledger: Shared) {
    if conn
        .try_write_raw(&encode(&Command::Rdy(200)))
        .await
        .is_err()
    {
        return;
    }
    let mut n = 0u64;
    loop {
        let frame = match conn.try_read_frame(Duration::from_secs(30)).await {
            Ok(f) => f,
            Err(_) => return,
        };
        let reply = match frame {
            Frame::Message(m) => {
                n += 1;
                if chaos && n.is_multiple_of(5) {
                    Some(Command::Req {
                        id: m.id,
                        timeout_ms: 300,
                    })
                } else if chaos && n.is_multiple_of(7) {
                    None
                } else {
                    finish(&ledger, m.body.clone(), m.id)
                }
            }
            Frame::Response(r) if &r[..] == b"_heartbeat_" => Some(Command::Nop),
            other => panic!("consumer: unexpected frame {other:?}"),
        };
        if let Some(cmd) = reply {
            if conn.try_write_raw(&encode(&cmd)).await.is_err() {
                return;
            }
        }
    }
}

fn finish(ledger: &Shared, body: Bytes, id: MessageId) -> Option<Command> {
    let mut l = ledger.lock().unwrap();
    l.owed.remove(&body);
    l.finished.insert(body);
    Some(Command::Fin(id))
}

async fn subscribe(nsqd: &NsqdProcess) -> RawConn {
    let mut c = nsqd.connect().await;
    c.send(&Command::Sub {
        topic: topic(TOPIC),
        channel: channel(CHANNEL),
    })
    .await;
    c.expect_ok().await;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_kill_9_at_random_moments() {
    within_for(Duration::from_secs(240), async {
        let ledger = Shared::default();
        let mut nsqd = NsqdProcess::start(ARGS);
        let mut rng = rand::thread_rng();
        for round in 0..ROUNDS {
            // The channel exists from the start (nsqd.dat names it after
            // the first round), so every message has a consumer queue.
            let sub = subscribe(&nsqd).await;
            let consumer = tokio::spawn(consumer(sub, true, ledger.clone()));
            let mut publishers = Vec::new();
            for who in 0..PUBLISHERS {
                let conn = nsqd.connect().await;
                publishers.push(tokio::spawn(publisher(conn, who, round, ledger.clone())));
            }
            // A random moment, measured in acknowledged messages.
            let target = ledger.lock().unwrap().acked + rng.gen_range(50..3000);
            let reached =
                nsq_test_support::wait_until(Duration::from_secs(60), "enough acks", || {
                    let acked = ledger.lock().unwrap().acked;
                    if acked >= target {
                        Ok(())
                    } else {
                        Err(format!("{acked} of {target}"))
                    }
                })
                .await;
            if let Err(e) = reached {
                nsqd.fail(&e);
            }
            nsqd.kill();
            for p in publishers {
                p.await.unwrap();
            }
            consumer.await.unwrap();
            let owed = ledger.lock().unwrap().owed.len();
            eprintln!("round {round}: killed at {target} acks, {owed} owed");
            nsqd = nsqd.restart(ARGS);
        }
        // Drain: everything owed comes back (deferred ones within a second).
        let sub = subscribe(&nsqd).await;
        let consumer = tokio::spawn(consumer(sub, false, ledger.clone()));
        let drained = nsq_test_support::wait_until(
            Duration::from_secs(60),
            "every owed message delivered",
            || {
                let l = ledger.lock().unwrap();
                if l.owed.is_empty() {
                    Ok(())
                } else {
                    let sample: Vec<_> = l.owed.iter().take(5).collect();
                    Err(format!("{} owed, e.g. {sample:?}", l.owed.len()))
                }
            },
        )
        .await;
        if let Err(e) = drained {
            nsqd.fail(&e);
        }
        consumer.abort();
        let l = ledger.lock().unwrap();
        assert!(l.acked >= ROUNDS * 50, "only {} acknowledged", l.acked);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_to_a_new_topic_survives_kill_9_right_after_its_ok() {
    within_for(Duration::from_secs(60), async {
        let mut nsqd = NsqdProcess::start(&["--durable"]);
        let mut p = nsqd.connect().await;
        // A brand-new topic and channel: the OK must wait for nsqd.dat.
        p.publish("fresh", b"only-one").await;
        nsqd.kill();
        let nsqd = nsqd.restart(&["--durable"]);
        let mut c = nsqd.connect().await;
        c.sub("fresh", "late").await;
        c.rdy(1).await;
        let m = c.read_message().await;
        assert_eq!(&m.body[..], b"only-one");
    })
    .await;
}

/// A small tmpfs of our own, unmounted when dropped: a disk that fills up.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(bytes: u64) -> SmallDisk {
        let dir = tempfile::Builder::new()
            .prefix("nsqd-full-")
            .tempdir()
            .expect("mount point");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a {bytes}-byte tmpfs failed ({status}): this test needs root to fill a disk"
        );
        SmallDisk { dir }
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_publishes_keeps_what_was_acknowledged_and_recovers() {
    within_for(Duration::from_secs(60), async {
        let disk = SmallDisk::mount(4 << 20);
        let data = disk.path().join("data");
        std::fs::create_dir(&data).unwrap();
        // Most of the disk is taken by something else.
        let filler = disk.path().join("filler");
        std::fs::write(&filler, vec![0u8; 3 << 20]).unwrap();
        let args = ["--durable", "--max-bytes-per-file=262144"];
        let nsqd = NsqdProcess::start_with_data_dir(&data, &args);
        let mut sub = nsqd.connect().await;
        sub.sub("full", "c").await;
        sub.abort();

        // Publish 1 KiB messages until the disk is full.
        let body = |i: usize| format!("{i:08}-{}", "x".repeat(1000)).into_bytes();
        let mut acked = 0usize;
        let mut p = nsqd.connect().await;
        let refusal = loop {
            assert!(acked < 10_000, "a 4 MiB disk took {acked} KiB of messages");
            let batch: Vec<Vec<u8>> = (acked..acked + 10).map(body).collect();
            p.send(&Command::Mpub {
                topic: topic("full"),
                bodies: batch.into_iter().map(Bytes::from).collect(),
            })
            .await;
            match p.read_frame().await {
                Frame::Response(r) if &r[..] == b"OK" => acked += 10,
                Frame::Error(e) => break String::from_utf8_lossy(&e).into_owned(),
                other => nsqd.fail(&format!("unexpected {other:?}")),
            }
        };
        assert!(refusal.starts_with("E_MPUB_FAILED"), "{refusal}");
        // The log line comes through a pipe: wait for it rather than race it.
        let logged =
            nsq_test_support::wait_until(Duration::from_secs(5), "a clear log line", || {
                if nsqd.logs().contains("disk write failed") {
                    Ok(())
                } else {
                    Err("no \"disk write failed\" in the log")
                }
            })
            .await;
        if let Err(e) = logged {
            nsqd.fail(&e);
        }
        // HTTP is refused too (larger than what is left), and /ping says why.
        let r = nsqd.http_post("/pub?topic=full", &vec![b'y'; 200_000]);
        assert_eq!(r.status, 500, "{}", r.text());
        assert_eq!(nsqd.http_get("/ping").status, 500);

        // Space comes back: nsqd recovers by itself.
        std::fs::remove_file(&filler).unwrap();
        let recovered =
            nsq_test_support::wait_until(Duration::from_secs(10), "a publish succeeds", || {
                let r = nsqd.http_post("/pub?topic=full", &body(acked));
                if r.status == 200 {
                    Ok(())
                } else {
                    Err(format!("{} {}", r.status, r.text()))
                }
            })
            .await;
        if let Err(e) = recovered {
            nsqd.fail(&e);
        }
        acked += 1;
        assert_eq!(nsqd.http_get("/ping").text(), "OK");

        // Everything acknowledged is delivered, in order, nothing else.
        let mut c = nsqd.connect().await;
        c.sub("full", "c").await;
        c.rdy(100).await;
        for i in 0..acked {
            let m = c.read_message().await;
            assert_eq!(m.body, body(i), "message {i} of {acked}");
            c.fin(m.id).await;
        }
        drop(nsqd);
    })
    .await;
}
