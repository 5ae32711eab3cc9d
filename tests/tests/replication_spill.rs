//! A peer's copies past their memory bound (#16): spilled to disk in every
//! mode (a `--durable` peer's, and what a topic holds before its first
//! channel), kept across the peer's own restart, and removed once the
//! origin finished everything in them; a journal an older build wrote is
//! kept aside, not replayed. Real processes on their own loopback addresses
//! (see `replication.rs`).

#[path = "replication/support.rs"]
mod support;

use std::time::Duration;

use nsq_test_support::within_for;
use support::*;

/// 64 MiB and more through debug builds on a loaded machine.
const LIMIT: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_peer_past_its_memory_bound_stays_in_sync_and_survives_its_crash() {
    within_for(LIMIT, async {
        // 80 MiB: past the size at which B's journal is rewritten as a
        // snapshot that refers to its spill queues.
        const N: usize = 10_000;
        const BODY: usize = 8 << 10;
        const FINISHED: usize = 1_000;
        let mut pair = Pair::start(20, &["--durable", "--mem-queue-size=100"]).await;
        let ledger = Shared::default();
        let published = fill_past_memory(&pair, "dur", N, BODY, &ledger, 4).await;
        let spilled = spill_files(&pair.b.dir);
        assert!(
            spilled.iter().any(|n| n.contains(".diskqueue.")),
            "no spill queue in {:?}: {spilled:?}",
            pair.b.dir
        );
        // B's journal was rewritten as a snapshot referring to the spill
        // queues rather than growing with every body.
        let journal = std::fs::read_dir(pair.b.dir.join("replication"))
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.metadata().unwrap().len())
            .sum::<u64>();
        assert!(journal < published / 2, "B's journal: {journal} bytes");
        // Replicating all along: the link never dropped.
        pair.a.wait_state("in_sync", Duration::from_secs(10)).await;
        assert!(!pair.a.d().logs().contains(": down - "), "link dropped");
        // FINs of spilled ones reach B's journal (acknowledged = fsynced).
        let c = finish_on(&pair.a, FINISHED, &ledger).await;
        let left = (N - FINISHED) as u64;
        pair.a
            .wait_holds(&pair.b, left, Duration::from_secs(20))
            .await;
        pair.a
            .wait_for(
                Duration::from_secs(10),
                "B acknowledged everything",
                || match pair.a.lag() {
                    Ok(0) => Ok(()),
                    other => Err(format!("lag {other:?}")),
                },
            )
            .await;
        drop(c);
        // Both machines die; only B comes back: journal snapshot, spill
        // queues and the records after the snapshot make its copy again.
        pair.a.kill();
        pair.b.kill();
        pair.b.start(pair.lookupd.tcp_addr());
        pair.b
            .wait_log("shadow replayed from the journal", Duration::from_secs(60))
            .await;
        pair.b
            .wait_state("taken_over", Duration::from_secs(60))
            .await;
        b_delivers_exactly(&pair, &ledger, N, Duration::from_secs(60)).await;
    })
    .await;
}

/// What A's topic holds while it has no channel spills at B; A's first
/// channel gets it (B's copy moves with it); B takes over exactly.
async fn held_set_spills(net: u8, durable: bool) {
    const N: usize = 4_000;
    const BODY: usize = 8 << 10;
    const FINISHED: usize = 500;
    let mut flags = vec!["--mem-queue-size=100"];
    if durable {
        flags.push("--durable");
    }
    let mut pair = Pair::start(net, &flags).await;
    let ledger = Shared::default();
    let channel = format!("topic={TOPIC}&channel={CHANNEL}");
    let r = pair
        .a
        .d()
        .http_post(&format!("/channel/delete?{channel}"), b"");
    assert_eq!(r.status, 200, "{}", r.text());
    fill_past_memory(&pair, "held", N, BODY, &ledger, 2).await;
    let held = |b: &Node| spill_files(&b.dir).iter().any(|n| n.contains("~~held."));
    assert!(held(&pair.b), "{:?}", spill_files(&pair.b.dir));
    // The first channel gets what the topic held, at A and at B.
    let r = pair
        .a
        .d()
        .http_post(&format!("/channel/create?{channel}"), b"");
    assert_eq!(r.status, 200, "{}", r.text());
    pair.b
        .wait_for(Duration::from_secs(20), "held queue gone", || {
            if held(&pair.b) {
                Err(format!("{:?}", spill_files(&pair.b.dir)))
            } else {
                Ok(())
            }
        })
        .await;
    pair.a
        .wait_holds(&pair.b, N as u64, Duration::from_secs(10))
        .await;
    let c = finish_on(&pair.a, FINISHED, &ledger).await;
    let left = (N - FINISHED) as u64;
    pair.a
        .wait_holds(&pair.b, left, Duration::from_secs(20))
        .await;
    drop(c);
    assert!(!pair.a.d().logs().contains(": down - "), "link dropped");
    pair.a.kill();
    take_over_now(&pair, left);
    b_delivers_exactly(&pair, &ledger, N, Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_topic_holds_before_its_first_channel_spills_at_the_peer() {
    within_for(LIMIT, held_set_spills(21, false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_topic_holds_spills_at_a_durable_peer_too() {
    within_for(LIMIT, held_set_spills(22, true)).await;
}

/// A pair on `net` whose B holds `n` of A's messages (1 KiB bodies, past
/// B's memory with a small `--mem-queue-size`).
async fn holding(net: u8, flags: &[&str], n: usize) -> (Pair, Shared) {
    let pair = Pair::start(net, flags).await;
    let ledger = Shared::default();
    mpub_sized(&pair.a, "keep", n, 1024, &ledger).await;
    pair.a
        .wait_holds(&pair.b, n as u64, Duration::from_secs(20))
        .await;
    (pair, ledger)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_restarted_while_its_origin_is_down_keeps_its_copy() {
    within_for(LIMIT, async {
        const N: usize = 2_000;
        const FINISHED: usize = 300;
        let (mut pair, ledger) = holding(23, &["--mem-queue-size=100"], N).await;
        // B restarts while A lives: A's full copy replaces what B kept.
        pair.b.stop();
        pair.b.start(pair.lookupd.tcp_addr());
        pair.a.wait_state("in_sync", Duration::from_secs(20)).await;
        pair.a
            .wait_holds(&pair.b, N as u64, Duration::from_secs(20))
            .await;
        let c = finish_on(&pair.a, FINISHED, &ledger).await;
        let left = N - FINISHED;
        pair.a
            .wait_holds(&pair.b, left as u64, Duration::from_secs(20))
            .await;
        drop(c);
        // A dies; B stops cleanly and comes back before taking over: its
        // copy (memory and disk, FINs and A's incarnation) is back.
        pair.a.kill();
        pair.b.stop();
        assert!(!spill_files(&pair.b.dir).is_empty(), "spill files gone");
        pair.b.start(pair.lookupd.tcp_addr());
        pair.b
            .wait_log(
                "shadow replayed from the snapshot of its last stop",
                Duration::from_secs(20),
            )
            .await;
        pair.b
            .wait_log(
                &format!("took over {left} messages"),
                Duration::from_secs(30),
            )
            .await;
        b_delivers_exactly(&pair, &ledger, N, Duration::from_secs(60)).await;
    })
    .await;
}

/// A spill queue goes once the origin finished everything in it.
async fn drained_spill_is_removed(net: u8, extra: &[&str]) {
    const N: usize = 2_000;
    let mut flags = vec!["--mem-queue-size=100"];
    flags.extend(extra);
    let pair = Pair::start(net, &flags).await;
    let ledger = Shared::default();
    for round in 0..2 {
        mpub_sized(&pair.a, &format!("drain{round}"), N, 512, &ledger).await;
        pair.a
            .wait_holds(&pair.b, N as u64, Duration::from_secs(20))
            .await;
        assert!(!spill_files(&pair.b.dir).is_empty(), "nothing spilled");
        let c = finish_on(&pair.a, N, &ledger).await;
        pair.a.wait_holds(&pair.b, 0, Duration::from_secs(20)).await;
        pair.b
            .wait_for(
                Duration::from_secs(20),
                "drained spill removed",
                || match spill_files(&pair.b.dir) {
                    left if left.is_empty() => Ok(()),
                    left => Err(format!("{left:?}")),
                },
            )
            .await;
        drop(c);
    }
    pair.a.wait_state("in_sync", Duration::from_secs(10)).await;
    assert!(!pair.a.d().logs().contains(": down - "), "link dropped");
    let l = ledger.lock().unwrap();
    assert_eq!((l.received.len(), l.duplicates()), (2 * N, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spill_queue_is_removed_once_its_origin_finished_everything_in_it() {
    within_for(LIMIT, drained_spill_is_removed(24, &[])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_peer_removes_a_drained_spill_queue_too() {
    within_for(LIMIT, drained_spill_is_removed(25, &["--durable"])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_killed_while_its_origin_is_down_keeps_what_it_spilled() {
    within_for(LIMIT, async {
        const N: usize = 2_000;
        let mut pair = Pair::start(26, &["--mem-queue-size=100"]).await;
        let ledger = Shared::default();
        // B's memory part is empty again once these are finished...
        mpub_sized(&pair.a, "first", 100, 512, &ledger).await;
        drop(finish_on(&pair.a, 100, &ledger).await);
        pair.a.wait_holds(&pair.b, 0, Duration::from_secs(20)).await;
        // ...then holds the first 100 of these; the rest goes to disk.
        mpub_sized(&pair.a, "then", N, 512, &ledger).await;
        pair.a
            .wait_holds(&pair.b, N as u64, Duration::from_secs(20))
            .await;
        let held_at = std::time::SystemTime::now();
        let saved = pair
            .b
            .dir
            .join("replication")
            .join(format!("{}.journal", pair.a.repl_addr().replace(':', "_")));
        pair.b
            .wait_for(
                Duration::from_secs(20),
                "spill queues saved",
                || match std::fs::metadata(&saved).and_then(|m| m.modified()) {
                    Ok(t) if t > held_at => Ok(()),
                    other => Err(format!("{other:?}")),
                },
            )
            .await;
        // Both die; B comes back alone and takes over what it spilled.
        pair.a.kill();
        pair.b.kill();
        pair.b.start(pair.lookupd.tcp_addr());
        let spilled = N - 100;
        pair.b
            .wait_log(
                &format!("took over {spilled} messages"),
                Duration::from_secs(30),
            )
            .await;
        let stop = pair.consume(&ledger);
        pair.b
            .wait_for(
                Duration::from_secs(60),
                "B delivered what it spilled",
                || match ledger.lock().unwrap().received.len() {
                    n if n >= 100 + spilled => Ok(()),
                    n => Err(format!("{n} delivered")),
                },
            )
            .await;
        pair.b.wait_drained(Duration::from_secs(10)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let l = ledger.lock().unwrap();
        // Lost with B's memory, by design: the first 100 of the second lot.
        let lost: Vec<_> = l.missing();
        assert_eq!(lost.len(), 100, "{lost:?}");
        assert!(lost
            .iter()
            .all(|b| b.starts_with(b"then-0-") || b.starts_with(b"then-1-")));
        assert_eq!(l.duplicates(), 0);
    })
    .await;
}

/// A journal as a build of link version 2 could have left it: its Hello
/// (of an incarnation A never had), then an Append that this build would
/// read as three messages A never sent.
fn journal_of_version_2(origin: &str) -> Vec<u8> {
    fn put_str(out: &mut Vec<u8>, s: &str) {
        out.push(s.len() as u8);
        out.extend_from_slice(s.as_bytes());
    }
    let mut hello = vec![1];
    hello.extend_from_slice(&2u16.to_be_bytes());
    put_str(&mut hello, origin);
    hello.extend_from_slice(&12_345u64.to_be_bytes());
    let mut append = vec![4];
    append.extend_from_slice(&1u64.to_be_bytes());
    put_str(&mut append, TOPIC);
    put_str(&mut append, "");
    append.extend_from_slice(&0i64.to_be_bytes());
    append.extend_from_slice(&3u32.to_be_bytes());
    for id in 1..=3u64 {
        append.extend_from_slice(&id.to_be_bytes());
        append.extend_from_slice(&1i64.to_be_bytes());
        append.extend_from_slice(&0u16.to_be_bytes());
    }
    for _ in 1..=3 {
        append.extend_from_slice(&5u32.to_be_bytes());
        append.extend_from_slice(b"ghost");
    }
    let mut out = Vec::new();
    for frame in [hello, append] {
        let mut framed = (frame.len() as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(&frame);
        out.extend_from_slice(&crc32fast::hash(&framed).to_be_bytes());
        out.extend_from_slice(&framed);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_of_another_link_version_is_kept_aside_and_the_origin_copies_again() {
    within_for(LIMIT, async {
        const N: usize = 2_000;
        let (mut pair, ledger) = holding(27, &["--durable", "--mem-queue-size=100"], N).await;
        // B comes back from an upgrade: its journal is an older build's.
        pair.b.stop();
        let journal = pair
            .b
            .dir
            .join("replication")
            .join(format!("{}.journal", pair.a.repl_addr().replace(':', "_")));
        let planted = journal_of_version_2(&pair.a.repl_addr());
        std::fs::write(&journal, &planted).unwrap();
        pair.b.start(pair.lookupd.tcp_addr());
        let aside = journal.with_extension("journal.refused.1");
        // The warning says why, once the file is aside.
        let why = "not replayed, written by link protocol version 2";
        pair.b
            .wait_for(Duration::from_secs(20), "journal kept aside", || {
                let logged = pair.b.d().logs().contains(why);
                logged.then_some(()).ok_or("no warning yet".to_string())
            })
            .await;
        assert_eq!(
            std::fs::read(&aside).unwrap(),
            planted,
            "not kept as it was"
        );
        // A's full copy makes B's copy again, with nothing of the old file.
        pair.a.wait_state("in_sync", Duration::from_secs(20)).await;
        pair.a
            .wait_holds(&pair.b, N as u64, Duration::from_secs(20))
            .await;
        assert!(
            !pair.b.d().logs().contains("took over"),
            "ghosts taken over"
        );
        // Only B's copy is left: every acknowledged message, once.
        pair.a.kill();
        take_over_now(&pair, N as u64);
        b_delivers_exactly(&pair, &ledger, N, Duration::from_secs(60)).await;
    })
    .await;
}
