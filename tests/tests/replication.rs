//! Replicated nsqd pairs (#16) through the real binaries: two nsqds on their
//! own loopback addresses (127.42.N.2 and .3) replicating to each other, a
//! lookupd, consumers that find the nodes through lookupd; `kill -9`, lost
//! data directories, restarts and nftables partitions. What is checked: no
//! acknowledged message is lost, and duplicates stay within what the design
//! allows (see nsqd/src/replication/mod.rs).

#[path = "replication/support.rs"]
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nsq_test_support::within_for;
use support::*;

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_alive_every_message_is_delivered_exactly_once_and_shadows_drain() {
    within_for(LIMIT, async {
        let pair = Pair::start(1, &[]).await;
        let ledger = Shared::default();
        let stop = pair.consume(&ledger);
        // 10,000 to each node: one PUB/MPUB publisher and one MPUB-100 one.
        let mut pubs = Vec::new();
        for (n, node) in [&pair.a, &pair.b].into_iter().enumerate() {
            pubs.push(tokio::spawn(publisher(
                node.tcp_addr(),
                format!("n{n}-mixed"),
                2_200,
                false,
                ledger.clone(),
                flag(),
            )));
            pubs.push(tokio::spawn(publisher(
                node.tcp_addr(),
                format!("n{n}-mpub"),
                7_800,
                true,
                ledger.clone(),
                flag(),
            )));
        }
        for p in pubs {
            p.await.unwrap();
        }
        assert_eq!(ledger.lock().unwrap().acked.len(), 20_000);
        pair.a
            .wait_delivered(&ledger, Duration::from_secs(30))
            .await;
        for node in [&pair.a, &pair.b] {
            node.wait_for(Duration::from_secs(10), "shadow empty", || {
                match node.replica() {
                    Ok((s, 0, 0)) if s == "in_sync" => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            })
            .await;
        }
        stop.store(true, Ordering::Relaxed);
        let l = ledger.lock().unwrap();
        assert_eq!(l.duplicates(), 0, "duplicates while both nodes lived");
    })
    .await;
}

/// Kill -9 node A while 4 publishers publish to it; B takes over.
async fn kill_while_publishing(net: u8, wipe_disk: bool) {
    let mut pair = Pair::start(net, &[]).await;
    let ledger = Shared::default();
    let stop = flag();
    let slow = Arc::new(AtomicBool::new(true));
    consumers(
        pair.lookupd.http_addr(),
        ledger.clone(),
        stop.clone(),
        slow.clone(),
    );
    let mut pubs = Vec::new();
    for who in 0..4 {
        pubs.push(tokio::spawn(publisher(
            pair.a.tcp_addr(),
            format!("p{who}"),
            usize::MAX,
            false,
            ledger.clone(),
            flag(),
        )));
    }
    pair.a.wait_acked(&ledger, 3_000).await;
    pair.a.kill();
    let killed = tokio::time::Instant::now();
    slow.store(false, Ordering::Relaxed);
    for p in pubs {
        p.await.unwrap();
    }
    if wipe_disk {
        std::fs::remove_dir_all(&pair.a.dir).unwrap();
    }
    let owed = ledger.lock().unwrap().missing().len();
    // Every acknowledged message: within takeover-after + 5 s of the kill.
    let limit = TAKEOVER_AFTER + Duration::from_secs(5);
    pair.b.wait_state("taken_over", limit).await;
    let limit = limit.saturating_sub(killed.elapsed());
    pair.b.wait_delivered(&ledger, limit).await;
    assert!(
        owed > 0,
        "A had no backlog when it died: the test proves nothing"
    );
    let (_, _, takeovers) = pair.b.replica().unwrap();
    assert_eq!(takeovers, 1);
    let dups = ledger.lock().unwrap().duplicates();
    let acked = ledger.lock().unwrap().acked.len();
    eprintln!(
        "kill -9: {acked} acknowledged, {owed} undelivered at the kill, all delivered {:?} after it, {dups} duplicates",
        killed.elapsed()
    );
    // In flight at A (its consumer's RDY) or finished in its last FIN batch.
    assert!(dups <= 2 * RDY, "{dups} duplicates");

    // A comes back (empty disk or its own): learns what was taken over,
    // then both sides are in sync again and nothing is delivered twice more.
    pair.a.start(pair.lookupd.tcp_addr());
    pair.a.wait_state("in_sync", Duration::from_secs(10)).await;
    pair.b.wait_state("in_sync", Duration::from_secs(10)).await;
    let more = publisher(
        pair.a.tcp_addr(),
        "after".into(),
        100,
        false,
        ledger.clone(),
        flag(),
    )
    .await;
    assert_eq!(more, 100);
    pair.a
        .wait_delivered(&ledger, Duration::from_secs(10))
        .await;
    stop.store(true, Ordering::Relaxed);
    assert_eq!(ledger.lock().unwrap().duplicates(), dups);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_publishing_loses_nothing_acknowledged() {
    within_for(LIMIT, kill_while_publishing(2, false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_a_lost_disk_lose_nothing_acknowledged() {
    within_for(LIMIT, kill_while_publishing(3, true)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_back_with_its_data_does_not_deliver_what_was_taken_over() {
    within_for(LIMIT, async {
        // A small memory queue: A's backlog is on its disk when it dies.
        let mut pair = Pair::start(4, &["--mem-queue-size=10"]).await;
        let ledger = Shared::default();
        publish_n(pair.a.tcp_addr(), "backlog", 2_000, true, &ledger).await;
        pair.a.kill();
        // Nobody consumed yet: B delivers A's whole backlog after takeover.
        let stop = pair.consume(&ledger);
        pair.b
            .wait_delivered(&ledger, Duration::from_secs(20))
            .await;
        // A returns with the same 2,000 on its disk and must drop them all.
        pair.a.start(pair.lookupd.tcp_addr());
        pair.a.wait_state("in_sync", Duration::from_secs(10)).await;
        pair.a.wait_drained(Duration::from_secs(20)).await;
        stop.store(true, Ordering::Relaxed);
        // Nothing was in flight at A when it died: no duplicate at all.
        assert_eq!(ledger.lock().unwrap().duplicates(), 0);
        assert!(pair.a.d().logs().contains("took over 2000 of our messages"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_while_both_serve_loses_nothing_and_heals() {
    within_for(LIMIT, async {
        let pair = Pair::start(5, &[]).await;
        let ledger = Shared::default();
        let stop = pair.consume(&ledger);
        let pub_stop = flag();
        let mut pubs = Vec::new();
        for (n, node) in [&pair.a, &pair.b].into_iter().enumerate() {
            pubs.push(tokio::spawn(publisher(
                node.tcp_addr(),
                format!("n{n}"),
                usize::MAX,
                false,
                ledger.clone(),
                pub_stop.clone(),
            )));
        }
        pair.a.wait_acked(&ledger, 1_000).await;
        {
            let _cut = Partition::cut(&pair.a.ip, &pair.b.ip, 5);
            // Both sides serve on; each takes the other over.
            pair.a
                .wait_state("taken_over", Duration::from_secs(15))
                .await;
            pair.b
                .wait_state("taken_over", Duration::from_secs(15))
                .await;
        }
        pair.a.wait_state("in_sync", Duration::from_secs(15)).await;
        pair.b.wait_state("in_sync", Duration::from_secs(15)).await;
        pub_stop.store(true, Ordering::Relaxed);
        for p in pubs {
            p.await.unwrap();
        }
        pair.a
            .wait_delivered(&ledger, Duration::from_secs(15))
            .await;
        stop.store(true, Ordering::Relaxed);
        let l = ledger.lock().unwrap();
        eprintln!(
            "partition: {} acknowledged, all delivered, {} duplicates",
            l.acked.len(),
            l.duplicates()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_pair_each_killed_once_loses_nothing() {
    within_for(LIMIT, async {
        let mut pair = Pair::start(6, &["--durable"]).await;
        let ledger = Shared::default();
        let stop = pair.consume(&ledger);
        for round in 0..2 {
            let pub_stop = flag();
            let mut pubs = Vec::new();
            for (n, node) in [&pair.a, &pair.b].into_iter().enumerate() {
                pubs.push(tokio::spawn(publisher(
                    node.tcp_addr(),
                    format!("r{round}-n{n}"),
                    usize::MAX,
                    false,
                    ledger.clone(),
                    pub_stop.clone(),
                )));
            }
            let target = ledger.lock().unwrap().acked.len() + 1_000;
            pair.a.wait_acked(&ledger, target).await;
            let (victim, other) = if round == 0 {
                (&mut pair.a, &pair.b)
            } else {
                (&mut pair.b, &pair.a)
            };
            victim.kill();
            pub_stop.store(true, Ordering::Relaxed);
            for p in pubs {
                p.await.unwrap();
            }
            other
                .wait_state("taken_over", Duration::from_secs(10))
                .await;
            other.wait_delivered(&ledger, Duration::from_secs(10)).await;
            victim.start(pair.lookupd.tcp_addr());
            let (a, b) = (&pair.a, &pair.b);
            a.wait_state("in_sync", Duration::from_secs(10)).await;
            b.wait_state("in_sync", Duration::from_secs(10)).await;
        }
        pair.a
            .wait_delivered(&ledger, Duration::from_secs(10))
            .await;
        stop.store(true, Ordering::Relaxed);
        let l = ledger.lock().unwrap();
        eprintln!(
            "durable: {} acknowledged, all delivered, {} duplicates",
            l.acked.len(),
            l.duplicates()
        );
        // Two kills, each with its consumer's in-flight window and FINs not
        // yet reported (the holder hands those back on return).
        assert!(l.duplicates() <= 4 * RDY, "{} duplicates", l.duplicates());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planned_takeover_over_http_then_the_node_returns_without_duplicates() {
    within_for(LIMIT, async {
        let mut pair = Pair::start(7, &[]).await;
        let ledger = Shared::default();
        publish_n(pair.a.tcp_addr(), "m", 500, true, &ledger).await;
        pair.b
            .wait_for(Duration::from_secs(5), "B holds A's 500", || {
                match pair.b.replica() {
                    Ok((_, 500, _)) => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            })
            .await;
        // /metrics shows the link while both are in sync.
        let m = pair.b.d().http_get("/metrics").text();
        let line = format!(
            "nsq_replica_state{{peer=\"{}\",state=\"in_sync\"}} 2",
            pair.a.repl_addr()
        );
        assert!(m.contains(&line), "no {line:?} in\n{m}");
        assert!(m.contains("nsq_replica_lag_messages{peer="), "{m}");
        // Maintenance of A: B takes over now; A stops (its 500 go to its
        // disk) and comes back with them, and must drop them all.
        let peer = pair.a.repl_addr();
        let r = pair
            .b
            .d()
            .http_post(&format!("/replica/takeover?peer={peer}"), b"");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["taken_over"], 500);
        let r = pair
            .b
            .d()
            .http_post("/replica/takeover?peer=10.9.9.9:1", b"");
        assert_eq!(r.status, 404);
        pair.a.stop();
        pair.a.start(pair.lookupd.tcp_addr());
        pair.a.wait_state("in_sync", Duration::from_secs(10)).await;
        assert!(pair.a.d().logs().contains("took over 500 of our messages"));
        // B delivers them; A drops its copies as they come up: none twice.
        pair.consume_all(&ledger, &pair.b, Duration::from_secs(10), &pair.a)
            .await;
        assert_eq!(ledger.lock().unwrap().duplicates(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_acks_refuses_publishes_while_the_peer_is_away() {
    within_for(LIMIT, async {
        let lookupd = nsq_test_support::NsqlookupdProcess::start(&[]);
        // A's peer never starts.
        let mut pair_a =
            support::lone_node("127.42.8.2", "127.42.8.3:9", &["--replica-min-acks=1"]);
        pair_a.start(lookupd.tcp_addr());
        let r = pair_a.d().http_post("/pub?topic=t", b"x");
        assert_eq!(
            (r.status, r.text().as_str()),
            (503, r#"{"message":"REPLICAS_UNAVAILABLE"}"#)
        );
        let mut c = nsq_test_support::RawConn::connect(pair_a.tcp_addr()).await;
        c.send(&nsq_protocol::Command::Pub {
            topic: nsq_test_support::topic("t"),
            body: bytes::Bytes::from_static(b"x"),
        })
        .await;
        let e = c.expect_error().await;
        assert!(e.starts_with("E_PUB_FAILED"), "{e}");
        pair_a.wait_state("down", Duration::from_secs(5)).await;
        // nsqadmin shows the node's peers and their state.
        let admin = nsq_test_support::NsqadminProcess::start_with_nsqds(&[pair_a.http_addr()], &[]);
        let r = admin.http_get(&format!("/api/nodes/{}", pair_a.http_addr()));
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert_eq!(v["replicas"][0]["peer"], "127.42.8.3:9", "{v}");
        assert_eq!(v["replicas"][0]["state"], "down", "{v}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_holder_keeps_its_copy_across_its_own_crash() {
    within_for(LIMIT, async {
        let mut pair = Pair::start(9, &["--durable"]).await;
        let ledger = Shared::default();
        publish_n(pair.a.tcp_addr(), "j", 500, true, &ledger).await;
        // Acknowledged means B fsynced its copy: both machines now die.
        pair.b.kill();
        pair.a.kill();
        std::fs::remove_dir_all(&pair.a.dir).unwrap();
        // Only B comes back; its journal still holds A's 500.
        pair.b.start(pair.lookupd.tcp_addr());
        let stop = pair.consume(&ledger);
        pair.b
            .wait_state("taken_over", Duration::from_secs(10))
            .await;
        pair.b
            .wait_delivered(&ledger, Duration::from_secs(10))
            .await;
        stop.store(true, Ordering::Relaxed);
        assert!(pair
            .b
            .d()
            .logs()
            .contains("shadow replayed from the journal"));
        assert_eq!(ledger.lock().unwrap().duplicates(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_back_from_down_gets_what_spilled_to_disk_in_its_copy() {
    within_for(LIMIT, async {
        // A small memory queue: what A accepts while B is down goes to disk.
        let mut pair = Pair::start(10, &["--mem-queue-size=10"]).await;
        let ledger = Shared::default();
        pair.b.kill();
        pair.a.wait_state("down", Duration::from_secs(10)).await;
        publish_n(pair.a.tcp_addr(), "spilled", 2_000, true, &ledger).await;
        // B returns empty: A's full copy must include its disk backlog.
        pair.b.start(pair.lookupd.tcp_addr());
        pair.a.wait_state("in_sync", Duration::from_secs(20)).await;
        pair.b
            .wait_for(Duration::from_secs(10), "B holds A's 2000", || {
                match pair.b.replica() {
                    Ok((_, 2_000, _)) => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            })
            .await;
        // A dies; B alone must deliver all 2,000.
        pair.a.kill();
        let stop = pair.consume(&ledger);
        pair.b
            .wait_state("taken_over", TAKEOVER_AFTER + Duration::from_secs(10))
            .await;
        pair.b
            .wait_delivered(&ledger, Duration::from_secs(20))
            .await;
        stop.store(true, Ordering::Relaxed);
        assert_eq!(ledger.lock().unwrap().duplicates(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_the_secret_is_refused_both_ways() {
    within_for(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good");
        let bad = dir.path().join("bad");
        std::fs::write(&good, "a shared secret of the pair\n").unwrap();
        std::fs::write(&bad, "not the secret of this pair\n").unwrap();
        let flag_for = |p: &std::path::Path| format!("--replication-secret-file={}", p.display());
        let (good_flag, bad_flag) = (flag_for(&good), flag_for(&bad));
        // With the same secret the pair gets in sync (Pair::start waits).
        let mut pair = Pair::start(11, &[&good_flag]).await;
        // B comes back with another secret: neither side accepts the other.
        pair.b.kill();
        pair.b.set_extra(&[&bad_flag]);
        pair.b.start(pair.lookupd.tcp_addr());
        for (node, other) in [(&pair.a, &pair.b), (&pair.b, &pair.a)] {
            let refusal = format!("origin \"{}\" failed authentication", other.repl_addr());
            node.wait_log(&refusal, Duration::from_secs(10)).await;
        }
        // Nothing of either reaches the other: neither shows its peer in sync.
        for node in [&pair.a, &pair.b] {
            assert_eq!(node.replica().unwrap().0, "down");
        }
        // B without any secret accepts A's link, but A (which has one)
        // refuses B as a holder that cannot prove it.
        pair.b.kill();
        pair.b.set_extra(&[]);
        pair.b.start(pair.lookupd.tcp_addr());
        pair.a
            .wait_log("the peer failed authentication", Duration::from_secs(10))
            .await;
        assert_eq!(pair.a.replica().unwrap().0, "down");
        assert_eq!(pair.b.replica().unwrap().0, "down");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_past_its_memory_bound_spills_to_disk_and_is_taken_over_exactly() {
    // 64 MiB through a debug build on a loaded machine: more than LIMIT.
    within_for(2 * LIMIT, async {
        const N: usize = 8_000;
        const BODY: usize = 8 << 10;
        const FINISHED: usize = 1_000;
        let mut pair = Pair::start(12, &["--mem-queue-size=100"]).await;
        let ledger = Shared::default();
        // 64 MiB for A, in MPUBs of 50 bodies of 8 KiB, each body unique;
        // B holds all of them, at most --mem-queue-size in memory.
        fill_past_memory(&pair, "big", N, BODY, &ledger, 4).await;
        let spilled = spill_files(&pair.b.dir);
        assert!(
            spilled.iter().any(|n| n.contains(".diskqueue.")),
            "no spill queue in {:?}: {spilled:?}",
            pair.b.dir
        );
        // A consumer of A finishes the first FINISHED (most of them spilled
        // at B); A reports them and B's copy shrinks by exactly that.
        let c = finish_on(&pair.a, FINISHED, &ledger).await;
        let left = (N - FINISHED) as u64;
        pair.b
            .wait_for(
                Duration::from_secs(10),
                "B dropped the finished",
                || match pair.b.replica() {
                    Ok((_, n, _)) if n == left => Ok(()),
                    other => Err(format!("{other:?}")),
                },
            )
            .await;
        drop(c);
        // A dies; B takes over now: memory and disk, finished ones skipped.
        pair.a.kill();
        take_over_now(&pair, left);
        // The spill queues are gone with the takeover.
        pair.b
            .wait_for(Duration::from_secs(5), "spill files removed", || {
                let left = spill_files(&pair.b.dir);
                if left.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{left:?}"))
                }
            })
            .await;
        b_delivers_exactly(&pair, &ledger, N, Duration::from_secs(30)).await;
    })
    .await;
}
