//! Tests of `spill.rs`.

use super::*;
use crate::replication::batch::Batch;

#[test]
fn only_spilled_range_enters_and_never_more_than_spilled() {
    let mut f = FinishedSet::default();
    assert!(!f.finish(5), "nothing spilled yet");
    for id in [10, 11, 12] {
        f.spilled(id);
    }
    assert!(!f.finish(9));
    assert!(!f.finish(13));
    assert!(f.finish(11));
    assert!(!f.finish(11), "counted once");
    assert_eq!(f.live(), 2);
    assert!(f.contains(11) && !f.contains(10));
    // An id inside the range that was not spilled still takes a place,
    // but the set never outgrows what was spilled.
    f.spilled(20);
    assert!(f.finish(15));
    assert!(f.finish(10));
    assert!(f.finish(12));
    assert!(!f.finish(20), "full: as many finished as spilled");
    assert_eq!(f.len(), 4);
    assert_eq!(f.live(), 0);
}

#[test]
fn records_round_trip_and_short_ones_are_dropped() {
    let h = Held {
        msg: WireMessage {
            id: 7,
            timestamp: -3,
            attempts: 2,
            body: Bytes::from_static(b"body"),
        },
        due: 99,
    };
    let mut b = Vec::new();
    encode(&h, &mut b);
    let back = decode(Bytes::from(b.clone())).unwrap();
    assert_eq!((back.msg, back.due), (h.msg, 99));
    assert!(decode(Bytes::from(b[..HEADER - 1].to_vec())).is_none());
}

fn m(id: u64) -> WireMessage {
    let body = Bytes::from(vec![b'x'; 300]);
    WireMessage::from(&crate::message::Message::new(id, 1, body))
}

fn tc() -> (TopicName, ChannelName) {
    ("t".parse().unwrap(), "c".parse().unwrap())
}

/// A shadow spilling past `limit` into a fresh directory, with `t`'s
/// channel `c`.
fn spilling_shadow(limit: usize) -> (tempfile::TempDir, Arc<DiskIo>, super::super::shadow::Shadow) {
    let dir = tempfile::tempdir().unwrap();
    let io = DiskIo::for_tests(dir.path());
    let (t, c) = tc();
    let mut s = super::super::shadow::Shadow::default();
    s.set_spill(SpillTo::new(io.clone(), limit, "o:1"));
    s.meta(super::super::wire::MetaOp::ChannelCreate, &t, Some(&c));
    (dir, io, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_past_its_bound_spills_and_reads_back_the_unfinished_once() {
    let (dir, io, mut s) = spilling_shadow(3);
    let (t, c) = tc();
    let msgs: Vec<_> = (1..=40).map(m).collect();
    s.append(&t, None, 0, &Batch::from(&msgs[..20]), u64::MAX)
        .unwrap();
    s.append(&t, None, 0, &Batch::from(&msgs[20..]), u64::MAX)
        .unwrap();
    assert_eq!(s.depth(), 40);
    assert_eq!(s.bytes(), 3 * 300, "only the bound is in memory");
    // One in memory, three spilled; one not held at all, one twice.
    s.finish(&t, &c, &[2, 10, 11, 39, 39, 99]);
    assert_eq!(s.depth(), 36);
    let mut topics = s.take_all();
    let ch = topics.get_mut(&t).unwrap().channels.get_mut(&c).unwrap();
    assert_eq!(ch.msgs.keys().collect::<Vec<_>>(), vec![1, 3]);
    let spill = ch.spilled.take().unwrap();
    assert_eq!(spill.finished.len(), 3);
    let mut back = Vec::new();
    spill
        .read_back(|step| back.extend(step.into_iter().map(|h| h.msg.id)))
        .unwrap();
    let want: Vec<u64> = (4..=40).filter(|i| ![10, 11, 39].contains(i)).collect();
    assert_eq!(back, want);
    // Read back means deleted: the files go once the disk thread ran.
    io.shutdown();
    assert_eq!(spill_files(dir.path()), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_queue_is_removed_only_once_a_scan_agrees() {
    let (dir, io, mut s) = spilling_shadow(2);
    let (t, c) = tc();
    let msgs: Vec<_> = [1, 2, 3, 5, 7, 9].into_iter().map(m).collect();
    s.append(&t, None, 0, &Batch::from(&msgs[..]), u64::MAX)
        .unwrap();
    // FINs inside the spilled range of ids never spilled (their appends
    // may still come) make the count reach zero too early...
    s.finish(&t, &c, &[4, 6, 8, 3]);
    // ...but the scan finds 5, 7 and 9 unfinished: kept, counted right.
    assert_eq!(s.depth(), 2 + 3);
    assert_eq!(s.spill_names().len(), 1);
    s.finish(&t, &c, &[5, 7, 9]);
    assert_eq!(s.depth(), 2);
    assert!(s.spill_names().is_empty(), "drained and removed");
    // A copy spilled twice (as a full copy may send): half finished by
    // the count, all by the scan.
    s.append(&t, None, 0, &Batch::from(&[m(11)][..]), u64::MAX)
        .unwrap();
    s.append(&t, None, 0, &Batch::from(&[m(11)][..]), u64::MAX)
        .unwrap();
    s.finish(&t, &c, &[11]);
    assert_eq!(s.depth(), 2);
    assert!(s.spill_names().is_empty());
    io.shutdown();
    assert_eq!(spill_files(dir.path()), 0);
}

/// Spill files in `dir`.
fn spill_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(PREFIX))
        .count()
}

#[test]
fn reset_empty_and_delete_remove_spilled_copies() {
    use super::super::shadow::Shadow;
    use super::super::wire::MetaOp;
    let dir = tempfile::tempdir().unwrap();
    let io = DiskIo::for_tests(dir.path());
    let t: TopicName = "t".parse().unwrap();
    let (a, b): (ChannelName, ChannelName) = ("a".parse().unwrap(), "b".parse().unwrap());
    let mut s = Shadow::default();
    s.set_spill(SpillTo::new(io.clone(), 2, "o:1"));
    let fill = |s: &mut Shadow, from: u64| {
        s.meta(MetaOp::ChannelCreate, &t, Some(&a));
        s.meta(MetaOp::ChannelCreate, &t, Some(&b));
        let msgs: Vec<_> = (from..from + 10).map(m).collect();
        s.append(&t, None, 0, &Batch::from(&msgs[..]), u64::MAX)
            .unwrap();
        assert_eq!(s.depth(), 20);
    };
    fill(&mut s, 1);
    s.meta(MetaOp::ChannelEmpty, &t, Some(&a));
    assert_eq!(s.depth(), 10);
    s.meta(MetaOp::ChannelDelete, &t, Some(&b));
    assert_eq!((s.depth(), s.bytes()), (0, 0));
    fill(&mut s, 11);
    s.meta(MetaOp::TopicDelete, &t, None);
    assert_eq!(s.depth(), 0);
    fill(&mut s, 21);
    s.reset();
    assert_eq!(s.depth(), 0);
    // Still spilling after a reset (a full copy follows one).
    fill(&mut s, 31);
    s.reset();
    io.shutdown();
    assert_eq!(spill_files(dir.path()), 0);
}

#[test]
fn queue_names_cannot_be_topics() {
    let p = origin_prefix("127.0.0.1:4150");
    assert_eq!(p, "~replica~127.0.0.1_4150~");
    assert!(p.parse::<TopicName>().is_err());
}
