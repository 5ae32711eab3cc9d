//! Tests for the disk queue: format, rolling, corruption handling, and a model test with crashes.

use std::collections::{HashSet, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use rand::{Rng, SeedableRng};

use super::*;

const MAX_MSG: u64 = 600;
const NAME: &str = "topic:chan#ephemeral";

fn opts(max_bytes_per_file: u64) -> DiskQueueOptions {
    DiskQueueOptions {
        max_bytes_per_file,
        max_msg_size: MAX_MSG,
        sync_every: 10,
        commit_reads: false,
    }
}

fn open(dir: &Path, max_bytes_per_file: u64) -> DiskQueue {
    DiskQueue::open(dir, NAME, opts(max_bytes_per_file)).unwrap()
}

/// A payload that carries its id and is checkable from its bytes alone, so
/// a test can tell a genuine record from a corrupt one.
fn payload(id: u64, len: usize) -> Vec<u8> {
    assert!(len >= 8);
    let mut v = id.to_be_bytes().to_vec();
    let mut x = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(x as u8);
    }
    v
}

/// A new queue in a new temporary directory (kept alive by the returned guard).
fn fresh(max_bytes_per_file: u64) -> (tempfile::TempDir, DiskQueue) {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path(), max_bytes_per_file);
    (dir, q)
}

/// Put a `len`-byte payload for every id in `ids`.
fn put_ids(q: &mut DiskQueue, ids: std::ops::Range<u64>, len: usize) {
    for i in ids {
        q.put(&payload(i, len)).unwrap();
    }
}

/// The id of a record, after checking that it is exactly what was put.
fn id_of(b: &[u8]) -> u64 {
    let id = u64::from_be_bytes(b[..8].try_into().unwrap());
    assert_eq!(
        b,
        &payload(id, b.len())[..],
        "record {id} returned with wrong bytes"
    );
    id
}

fn drain(q: &mut DiskQueue) -> Vec<u64> {
    let mut out = Vec::new();
    loop {
        let mut batch = Vec::new();
        q.get_many(7, &mut batch).unwrap();
        if batch.is_empty() {
            return out;
        }
        out.extend(batch.iter().map(|b| id_of(b)));
    }
}

fn seg(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{NAME}.diskqueue.{n:06}.dat"))
}

/// Segment numbers on disk, ascending.
fn segments(dir: &Path) -> Vec<u64> {
    let prefix = format!("{NAME}.diskqueue.");
    let mut v: Vec<u64> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_prefix(&prefix).and_then(parse_segment)
        })
        .collect();
    v.sort_unstable();
    v
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// The synced meta; none yet means nothing was ever synced: the empty state.
fn read_meta(dir: &Path) -> Meta {
    match fs::read(dir.join(format!("{NAME}.diskqueue.meta.json"))) {
        Ok(data) => serde_json::from_slice(&data).unwrap(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Meta {
            version: META_VERSION,
            depth: 0,
            read: Position { file: 0, pos: 0 },
            write: Position { file: 0, pos: 0 },
            segments: Vec::new(),
        },
        Err(e) => panic!("{e}"),
    }
}

/// (offset, payload length) of every record in a segment written by us.
fn layout(path: &Path) -> Vec<(u64, u64)> {
    let data = fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < data.len() {
        let n = u32::from_be_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        out.push((at as u64, n as u64));
        at += 8 + n;
    }
    out
}

#[test]
fn one_record_golden_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = open(dir.path(), 1 << 20);
    q.put(b"hello").unwrap();
    // [len 5][crc32("hello") = 0x3610a686]["hello"]
    let expected = [
        0, 0, 0, 5, 0x36, 0x10, 0xa6, 0x86, b'h', b'e', b'l', b'l', b'o',
    ];
    assert_eq!(fs::read(seg(dir.path(), 0)).unwrap(), expected);
    q.sync().unwrap();
    let meta: serde_json::Value = serde_json::from_slice(
        &fs::read(dir.path().join(format!("{NAME}.diskqueue.meta.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(
        meta,
        serde_json::json!({"version": 1, "depth": 1, "read": {"file": 0, "pos": 0},
            "write": {"file": 0, "pos": 13}, "segments": [[0, 1]]})
    );
    assert_eq!(q.get().unwrap().unwrap(), &b"hello"[..]);
    assert_eq!(q.get().unwrap(), None);
}

#[test]
fn rolls_segments_and_gives_a_large_record_its_own() {
    let (dir, mut q) = fresh(100);
    // 48 bytes a record: two fit in 100, the third rolls.
    let small: Vec<Vec<u8>> = (0..5).map(|i| payload(i, 40)).collect();
    q.put_many(small.iter().map(|p| &p[..])).unwrap();
    assert_eq!(segments(dir.path()), [0, 1, 2]);
    let big = payload(5, 300);
    q.put(&big).unwrap();
    q.put(&payload(6, 40)).unwrap();
    assert_eq!(segments(dir.path()), [0, 1, 2, 3, 4]);
    assert_eq!(fs::metadata(seg(dir.path(), 3)).unwrap().len(), 308);
    assert_eq!(q.depth(), 7);
    assert_eq!(drain(&mut q), [0, 1, 2, 3, 4, 5, 6]);
    assert_eq!(q.depth(), 0);
    // Read segments go only once a meta reading past them is durable.
    assert_eq!(segments(dir.path()), [0, 1, 2, 3, 4]);
    q.sync().unwrap();
    assert_eq!(segments(dir.path()), [4]);
    q.put(&payload(7, 40)).unwrap();
    q.close().unwrap();
    let mut q = open(dir.path(), 100);
    assert_eq!(q.depth(), 1);
    assert_eq!(drain(&mut q), [7]);
}

#[test]
fn records_read_but_not_synced_come_back_after_a_crash() {
    let (dir, mut q) = fresh(100);
    put_ids(&mut q, 0..6, 40);
    q.sync().unwrap();
    assert_eq!(drain(&mut q), [0, 1, 2, 3, 4, 5]);
    drop(q); // crash: the reads were never synced
    let mut q = open(dir.path(), 100);
    assert_eq!(q.depth(), 6);
    assert_eq!(drain(&mut q), [0, 1, 2, 3, 4, 5]);
}

#[test]
fn get_many_takes_up_to_max() {
    let (_dir, mut q) = fresh(150);
    let ps: Vec<Vec<u8>> = (0..10).map(|i| payload(i, 30)).collect();
    q.put_many(ps.iter().map(|p| &p[..])).unwrap();
    let mut out = Vec::new();
    q.get_many(4, &mut out).unwrap();
    assert_eq!(
        out.iter().map(|b| id_of(b)).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    q.get_many(100, &mut out).unwrap();
    assert_eq!(out.len(), 10);
    assert_eq!(q.depth(), 0);
    q.get_many(5, &mut out).unwrap();
    assert_eq!(out.len(), 10);
}

#[test]
fn sync_accounting() {
    let (_dir, mut q) = fresh(1000);
    assert!(!q.is_dirty() && !q.needs_sync());
    let ps: Vec<Vec<u8>> = (0..9).map(|i| payload(i, 10)).collect();
    q.put_many(ps.iter().map(|p| &p[..])).unwrap();
    assert!(q.is_dirty() && !q.needs_sync());
    q.get().unwrap().unwrap();
    assert!(q.needs_sync(), "9 writes + 1 read reach sync_every = 10");
    q.sync().unwrap();
    assert!(!q.is_dirty() && !q.needs_sync());
}

#[test]
fn invalid_sizes_are_refused_and_earlier_payloads_kept() {
    let (_dir, mut q) = fresh(1000);
    let too_big = vec![1u8; MAX_MSG as usize + 1];
    let ok = payload(0, 20);
    let err = q.put_many([&ok[..], &too_big[..], &ok[..]]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(q.put(b"").unwrap_err().kind(), ErrorKind::InvalidInput);
    assert_eq!(q.depth(), 1);
    assert_eq!(drain(&mut q), [0]);
}

#[test]
fn empty_drops_everything_and_continues_with_a_fresh_segment() {
    let (dir, mut q) = fresh(100);
    put_ids(&mut q, 0..5, 40);
    q.get().unwrap().unwrap();
    q.empty().unwrap();
    assert_eq!(q.depth(), 0);
    assert_eq!(segments(dir.path()), Vec::<u64>::new());
    assert_eq!(q.get().unwrap(), None);
    q.put(&payload(9, 40)).unwrap();
    assert_eq!(segments(dir.path()), [3]);
    drop(q); // even without a sync, nothing from before the empty returns
    let mut q = open(dir.path(), 100);
    assert_eq!(drain(&mut q), [9]);
}

#[test]
fn delete_removes_every_file_of_the_queue_and_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let mut other = DiskQueue::open(dir.path(), "topic", opts(100)).unwrap();
    other.put(&payload(0, 40)).unwrap();
    other.sync().unwrap();
    let mut q = open(dir.path(), 100);
    put_ids(&mut q, 0..5, 40);
    q.sync().unwrap();
    fs::write(format!("{}.bad", seg(dir.path(), 0).display()), b"x").unwrap();
    q.delete().unwrap();
    assert_eq!(
        files(dir.path()),
        ["topic.diskqueue.000000.dat", "topic.diskqueue.meta.json"]
    );
    other.close().unwrap();
}

#[test]
fn a_record_failing_its_crc_is_skipped_and_counted() {
    let (dir, mut q) = fresh(1000);
    put_ids(&mut q, 0..3, 20);
    q.close().unwrap();
    let path = seg(dir.path(), 0);
    let mut data = fs::read(&path).unwrap();
    data[28 + 8 + 10] ^= 0x40; // the second record's payload
    fs::write(&path, data).unwrap();
    let mut q = open(dir.path(), 1000);
    assert_eq!(q.depth(), 3);
    assert_eq!(drain(&mut q), [0, 2]);
    assert_eq!(
        (q.corrupt_records(), q.bad_segments(), q.depth()),
        (1, 0, 0)
    );
}

#[test]
fn an_unreadable_segment_is_renamed_bad_and_reading_goes_on() {
    let (dir, mut q) = fresh(100);
    put_ids(&mut q, 0..6, 40);
    q.close().unwrap();
    // Segment 1 holds records 2 and 3; make the second length impossible.
    let path = seg(dir.path(), 1);
    let mut data = fs::read(&path).unwrap();
    data[48..52].copy_from_slice(&u32::MAX.to_be_bytes());
    fs::write(&path, data).unwrap();
    let mut q = open(dir.path(), 100);
    assert_eq!(drain(&mut q), [0, 1, 2, 4, 5]);
    assert_eq!(
        (q.corrupt_records(), q.bad_segments(), q.depth()),
        (0, 1, 0)
    );
    assert!(dir
        .path()
        .join(format!("{NAME}.diskqueue.000001.dat.bad"))
        .exists());
    q.close().unwrap();
    // The skip is durable: no second report after a restart.
    let mut q = open(dir.path(), 100);
    assert_eq!(drain(&mut q), Vec::<u64>::new());
    assert_eq!(q.bad_segments(), 0);
}

#[test]
fn a_bad_write_segment_moves_the_writer_on() {
    let (dir, mut q) = fresh(1000);
    put_ids(&mut q, 0..3, 40);
    q.close().unwrap();
    let path = seg(dir.path(), 0);
    let mut data = fs::read(&path).unwrap();
    data[48..52].copy_from_slice(&0u32.to_be_bytes());
    fs::write(&path, data).unwrap();
    let mut q = open(dir.path(), 1000);
    assert_eq!(drain(&mut q), [0]);
    assert_eq!(q.bad_segments(), 1);
    q.put(&payload(7, 40)).unwrap();
    assert_eq!(segments(dir.path()), [1]);
    assert_eq!(drain(&mut q), [7]);
}

#[test]
fn a_torn_tail_is_cut_and_valid_unsynced_records_adopted() {
    let (dir, mut q) = fresh(1000);
    put_ids(&mut q, 0..3, 40);
    q.sync().unwrap();
    put_ids(&mut q, 3..6, 40);
    drop(q);
    let path = seg(dir.path(), 0);
    let len = fs::metadata(&path).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    let mut q = open(dir.path(), 1000);
    assert_eq!(q.depth(), 5);
    assert_eq!(fs::metadata(&path).unwrap().len(), 5 * 48);
    q.put(&payload(6, 40)).unwrap();
    assert_eq!(drain(&mut q), [0, 1, 2, 3, 4, 6]);
}

#[test]
fn a_zero_filled_tail_is_not_records() {
    let (dir, mut q) = fresh(1000);
    q.put(&payload(0, 40)).unwrap();
    drop(q); // never synced: no meta at all
    let path = seg(dir.path(), 0);
    let mut data = fs::read(&path).unwrap();
    data.extend_from_slice(&[0; 64]);
    fs::write(&path, data).unwrap();
    let mut q = open(dir.path(), 1000);
    assert_eq!(q.depth(), 1);
    assert_eq!(drain(&mut q), [0]);
    assert_eq!((q.corrupt_records(), q.bad_segments()), (0, 0));
}

#[test]
fn segments_written_after_the_last_sync_are_adopted() {
    let (dir, mut q) = fresh(100);
    q.put(&payload(0, 40)).unwrap();
    q.sync().unwrap();
    put_ids(&mut q, 1..7, 40);
    drop(q);
    assert_eq!(read_meta(dir.path()).write, Position { file: 0, pos: 48 });
    assert_eq!(segments(dir.path()), [0, 1, 2, 3]);
    let mut q = open(dir.path(), 100);
    assert_eq!(q.depth(), 7);
    assert_eq!(drain(&mut q), (0..7).collect::<Vec<_>>());
}

#[test]
fn a_lost_meta_is_rebuilt_from_the_segments() {
    let (dir, mut q) = fresh(100);
    put_ids(&mut q, 0..5, 40);
    q.close().unwrap();
    fs::remove_file(dir.path().join(format!("{NAME}.diskqueue.meta.json"))).unwrap();
    fs::write(
        dir.path().join(format!("{NAME}.diskqueue.meta.json.tmp")),
        b"{half",
    )
    .unwrap();
    let mut q = open(dir.path(), 100);
    assert_eq!(q.depth(), 5);
    assert_eq!(drain(&mut q), [0, 1, 2, 3, 4]);
    assert!(!dir
        .path()
        .join(format!("{NAME}.diskqueue.meta.json.tmp"))
        .exists());
}

#[test]
fn segments_left_by_a_crash_inside_sync_are_deleted_on_open() {
    let (dir, mut q) = fresh(100);
    put_ids(&mut q, 0..5, 40);
    assert_eq!(drain(&mut q), [0, 1, 2, 3, 4]);
    q.sync().unwrap();
    assert_eq!(segments(dir.path()), [2]);
    drop(q);
    // As if the crash came after the meta rename, before the deletions.
    fs::write(seg(dir.path(), 1), fs::read(seg(dir.path(), 2)).unwrap()).unwrap();
    let mut q = open(dir.path(), 100);
    assert_eq!(segments(dir.path()), [2]);
    assert_eq!(drain(&mut q), Vec::<u64>::new());
}

#[test]
fn a_segment_that_lost_synced_bytes_keeps_what_is_intact() {
    let (dir, mut q) = fresh(1000);
    put_ids(&mut q, 0..3, 40);
    q.close().unwrap();
    let path = seg(dir.path(), 0);
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(2 * 48 + 20)
        .unwrap();
    let mut q = open(dir.path(), 1000);
    assert_eq!(q.depth(), 2);
    assert_eq!(fs::metadata(&path).unwrap().len(), 2 * 48);
    q.put(&payload(3, 40)).unwrap();
    assert_eq!(drain(&mut q), [0, 1, 3]);
}

#[test]
fn a_meta_of_an_unknown_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join(format!("{NAME}.diskqueue.meta.json")),
        br#"{"version":2}"#,
    )
    .unwrap();
    let err = DiskQueue::open(dir.path(), NAME, opts(100)).err().unwrap();
    assert_eq!(err.kind(), ErrorKind::InvalidData);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Flip one byte of one synced segment, then read everything. A flip in a
    /// CRC or payload costs exactly that record (counted). A flip in a length
    /// field may cost the rest of its segment (renamed `.bad`); then what is
    /// delivered is still only genuine records, in order, including every
    /// record of every other segment and every record before the damage.
    #[test]
    fn a_flipped_byte_costs_at_most_its_record_or_its_segment(
        lens in proptest::collection::vec(8usize..200, 1..40),
        pick in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let (dir, mut q) = fresh(400);
        let ps: Vec<Vec<u8>> = lens.iter().enumerate().map(|(i, &n)| payload(i as u64, n)).collect();
        q.put_many(ps.iter().map(|p| &p[..])).unwrap();
        q.close().unwrap();

        // Which ids live in which segment, then damage one.
        let mut id = 0u64;
        let mut by_seg = Vec::new();
        for f in segments(dir.path()) {
            let l = layout(&seg(dir.path(), f));
            by_seg.push((f, id, l.clone()));
            id += l.len() as u64;
        }
        let (f, first_id, l) = pick.get(&by_seg).clone();
        let path = seg(dir.path(), f);
        let mut data = fs::read(&path).unwrap();
        let offset = at.index(data.len());
        data[offset] ^= 1 << bit;
        fs::write(&path, data).unwrap();
        let k = l.iter().rposition(|&(o, _)| o <= offset as u64).unwrap();
        let damaged = first_id + k as u64;
        let in_length = offset as u64 - l[k].0 < 4;

        let mut q = open(dir.path(), 400);
        let got = drain(&mut q);
        let all: Vec<u64> = (0..lens.len() as u64).collect();
        if !in_length {
            let expect: Vec<u64> = all.iter().copied().filter(|&i| i != damaged).collect();
            prop_assert_eq!(got, expect);
            prop_assert_eq!((q.corrupt_records(), q.bad_segments()), (1, 0));
        } else {
            prop_assert!(got.windows(2).all(|w| w[0] < w[1]));
            let seg_end = first_id + l.len() as u64;
            for i in all {
                if i < damaged || i >= seg_end {
                    prop_assert!(got.contains(&i), "record {} lost", i);
                }
            }
            prop_assert!(q.corrupt_records() + q.bad_segments() >= 1);
        }
        prop_assert_eq!(q.depth(), 0);
    }
}

#[derive(Debug, Clone)]
enum Op {
    Put(usize),
    PutMany(Vec<usize>),
    Get,
    GetMany(usize),
    Sync,
    Reopen,
    /// Drop without sync, then lose a random part of what was not synced.
    Crash(u64),
    Empty,
}

fn op() -> impl Strategy<Value = Op> {
    let len = prop_oneof![4 => 8usize..80, 1 => 8usize..=MAX_MSG as usize];
    prop_oneof![
        6 => len.clone().prop_map(Op::Put),
        4 => proptest::collection::vec(len, 0..12).prop_map(Op::PutMany),
        5 => Just(Op::Get),
        3 => (0usize..10).prop_map(Op::GetMany),
        2 => Just(Op::Sync),
        1 => Just(Op::Reopen),
        2 => any::<u64>().prop_map(Op::Crash),
        1 => Just(Op::Empty),
    ]
}

/// Simulate what a power loss may do to data that was never fsynced: per
/// segment past the meta's write position, keep it, cut it at a random
/// point at or after the synced boundary, drop the file (its directory entry
/// was never synced), or leave garbage after it (zeros, as ext4 can after
/// a crash, or random bytes).
fn lose_unsynced(dir: &Path, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let synced = read_meta(dir).write;
    for f in segments(dir).into_iter().filter(|&f| f >= synced.file) {
        let path = seg(dir, f);
        let len = fs::metadata(&path).unwrap().len();
        let floor = if f == synced.file { synced.pos } else { 0 };
        match rng.gen_range(0..10) {
            0..=3 => {}
            4..=6 => {
                let cut = rng.gen_range(floor..=len);
                fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_len(cut)
                    .unwrap();
            }
            7 if f > synced.file => fs::remove_file(&path).unwrap(),
            _ => {
                let mut data = fs::read(&path).unwrap();
                let cut = rng.gen_range(floor..=len) as usize;
                data.truncate(cut);
                let n = rng.gen_range(1..64);
                if rng.gen() {
                    data.resize(data.len() + n, 0);
                } else {
                    data.extend((0..n).map(|_| rng.gen::<u8>()));
                }
                fs::write(&path, data).unwrap();
            }
        }
    }
}

/// The model: `model` is exactly what the queue holds between crashes.
/// `synced` is the model as of the last durable meta (a sync, close, empty,
/// or an open that recovered something), and `put_by_sync` the number of
/// records put by then.
///
/// After a crash-reopen the queue's content R must satisfy:
/// 1. every record is genuine (its bytes are exactly what was put);
/// 2. ids strictly increase (FIFO order, no duplicates);
/// 3. every id in `synced` is in R: what was put before the last sync and
///    not read before it survives, including records read since that sync
///    (at-least-once);
/// 4. every other id in R was put after the last sync (unsynced records may
///    survive); a record read or emptied before the last sync never returns.
///
/// R is then drained and becomes the new `synced` (if open wrote no meta, R
/// is exactly what the old meta described).
struct Model {
    model: VecDeque<u64>,
    synced: Vec<u64>,
    put_by_sync: u64,
    next_id: u64,
}

impl Model {
    fn synced_now(&mut self) {
        self.synced = self.model.iter().copied().collect();
        self.put_by_sync = self.next_id;
    }

    fn check_crash(&mut self, r: &[u64]) -> Result<(), TestCaseError> {
        prop_assert!(
            r.windows(2).all(|w| w[0] < w[1]),
            "out of order or duplicated: {:?}",
            r
        );
        let got: HashSet<u64> = r.iter().copied().collect();
        for id in &self.synced {
            prop_assert!(
                got.contains(id),
                "synced record {} lost; got {:?}, synced {:?}",
                id,
                r,
                self.synced
            );
        }
        let synced: HashSet<u64> = self.synced.iter().copied().collect();
        for id in r {
            prop_assert!(
                synced.contains(id) || *id >= self.put_by_sync,
                "record {} was read (or emptied) before the last sync but came back",
                id
            );
        }
        self.model.clear();
        self.synced = r.to_vec();
        self.put_by_sync = self.next_id;
        Ok(())
    }
}

fn run_model(max_bytes: u64, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let mut q = Some(open(dir.path(), max_bytes));
    let mut m = Model {
        model: VecDeque::new(),
        synced: Vec::new(),
        put_by_sync: 0,
        next_id: 0,
    };
    for op in ops {
        let qq = q.as_mut().unwrap();
        match op {
            Op::Put(n) => {
                qq.put(&payload(m.next_id, n)).unwrap();
                m.model.push_back(m.next_id);
                m.next_id += 1;
            }
            Op::PutMany(ns) => {
                let ps: Vec<Vec<u8>> = ns
                    .iter()
                    .enumerate()
                    .map(|(i, &n)| payload(m.next_id + i as u64, n))
                    .collect();
                qq.put_many(ps.iter().map(|p| &p[..])).unwrap();
                for _ in &ns {
                    m.model.push_back(m.next_id);
                    m.next_id += 1;
                }
            }
            Op::Get => {
                let got = qq.get().unwrap().map(|b| id_of(&b));
                prop_assert_eq!(got, m.model.pop_front());
            }
            Op::GetMany(n) => {
                let mut out = Vec::new();
                qq.get_many(n, &mut out).unwrap();
                let got: Vec<u64> = out.iter().map(|b| id_of(b)).collect();
                let want: Vec<u64> = (0..n).map_while(|_| m.model.pop_front()).collect();
                prop_assert_eq!(got, want);
            }
            Op::Sync => {
                qq.sync().unwrap();
                m.synced_now();
                // Read segments are deleted once the meta reads past them,
                // including ones a crash left behind: nothing leaks.
                let read = read_meta(dir.path()).read.file;
                prop_assert!(
                    segments(dir.path()).iter().all(|&f| f >= read),
                    "stale segments left"
                );
            }
            Op::Reopen => {
                q.take().unwrap().close().unwrap();
                m.synced_now();
                q = Some(open(dir.path(), max_bytes));
            }
            Op::Crash(seed) => {
                drop(q.take());
                lose_unsynced(dir.path(), seed);
                let mut reopened = open(dir.path(), max_bytes);
                let depth = reopened.depth();
                let r = drain(&mut reopened);
                prop_assert_eq!(depth, r.len() as u64, "depth after recovery");
                m.check_crash(&r)?;
                q = Some(reopened);
            }
            Op::Empty => {
                qq.empty().unwrap();
                m.model.clear();
                m.synced_now();
            }
        }
        let qq = q.as_ref().unwrap();
        prop_assert_eq!(qq.depth(), m.model.len() as u64);
        prop_assert_eq!((qq.corrupt_records(), qq.bad_segments()), (0, 0));
    }
    let mut q = q.take().unwrap();
    let rest = drain(&mut q);
    prop_assert_eq!(rest, m.model.iter().copied().collect::<Vec<_>>());
    q.delete().unwrap();
    prop_assert!(files(dir.path()).is_empty());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn behaves_like_a_vecdeque_across_reopens_and_crashes(
        max_bytes in 100u64..400,
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        run_model(max_bytes, ops)?;
    }
}

/// Throughput sanity check, by hand:
/// `cargo test --release -p nsqd disk_queue -- --ignored --nocapture`
#[test]
#[ignore]
fn throughput() {
    const N: usize = 2_000_000;
    const BATCH: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let mut q = DiskQueue::open(
        dir.path(),
        "bench",
        DiskQueueOptions {
            max_bytes_per_file: 100 << 20,
            max_msg_size: 1 << 20,
            sync_every: 2500,
            commit_reads: false,
        },
    )
    .unwrap();
    let p = [0x5a_u8; 200];
    let batch: Vec<&[u8]> = vec![&p[..]; BATCH];
    let t = std::time::Instant::now();
    for _ in 0..N / BATCH {
        q.put_many(batch.iter().copied()).unwrap();
    }
    let put = t.elapsed();
    q.sync().unwrap();
    let put_synced = t.elapsed();
    let t = std::time::Instant::now();
    let mut out = Vec::with_capacity(BATCH);
    let mut n = 0;
    loop {
        out.clear();
        q.get_many(BATCH, &mut out).unwrap();
        if out.is_empty() {
            break;
        }
        n += out.len();
    }
    let get = t.elapsed();
    assert_eq!(n, N);
    let rate = |d: std::time::Duration| N as f64 / d.as_secs_f64();
    let mb = |d: std::time::Duration| (N * 208) as f64 / d.as_secs_f64() / 1e6;
    println!(
        "put_many: {:.2}M rec/s ({:.0} MB/s), incl. final fsync {:.2}M rec/s; get_many: {:.2}M rec/s ({:.0} MB/s)",
        rate(put) / 1e6,
        mb(put),
        rate(put_synced) / 1e6,
        rate(get) / 1e6,
        mb(get)
    );
    // As nsqd would run it: a sync whenever needs_sync (every 2500 ops).
    let t = std::time::Instant::now();
    for _ in 0..N / BATCH {
        q.put_many(batch.iter().copied()).unwrap();
        if q.needs_sync() {
            q.sync().unwrap();
        }
    }
    let put = t.elapsed();
    let t = std::time::Instant::now();
    loop {
        out.clear();
        q.get_many(BATCH, &mut out).unwrap();
        if out.is_empty() {
            break;
        }
        if q.needs_sync() {
            q.sync().unwrap();
        }
    }
    let get = t.elapsed();
    println!(
        "with sync_every 2500: put_many {:.2}M rec/s, get_many {:.2}M rec/s",
        rate(put) / 1e6,
        rate(get) / 1e6
    );
}

fn open_committing(dir: &Path, max_bytes_per_file: u64) -> DiskQueue {
    let o = DiskQueueOptions {
        commit_reads: true,
        ..opts(max_bytes_per_file)
    };
    DiskQueue::open(dir, NAME, o).unwrap()
}

/// Reads everything, returning each record's id and position.
fn drain_at(q: &mut DiskQueue) -> Vec<(u64, Position)> {
    let mut out = Vec::new();
    while let Some((at, b)) = q.get_at().unwrap() {
        out.push((id_of(&b), at));
    }
    out
}

#[test]
fn committed_reads_come_back_after_a_crash_until_committed_past() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = open_committing(dir.path(), 300);
    for id in 0..20 {
        q.put(&payload(id, 40)).unwrap();
    }
    let read = drain_at(&mut q);
    assert_eq!(read.len(), 20);
    // Done with the first 7: commit up to where record 7 starts.
    q.commit(read[7].1);
    q.sync().unwrap();
    drop(q); // crash
    let mut q = open_committing(dir.path(), 300);
    assert_eq!(q.depth(), 13);
    let again: Vec<u64> = drain_at(&mut q).into_iter().map(|(id, _)| id).collect();
    assert_eq!(again, (7..20).collect::<Vec<_>>());
    // Everything done: nothing comes back, and read segments are deleted.
    q.commit(q.read_position());
    q.sync().unwrap();
    drop(q);
    let mut q = open_committing(dir.path(), 300);
    assert_eq!(q.depth(), 0);
    assert!(drain_at(&mut q).is_empty());
    assert_eq!(
        q.segment_files().unwrap().len(),
        1,
        "only the write segment is left"
    );
}

#[test]
fn commit_never_moves_backwards_nor_past_the_reads() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = open_committing(dir.path(), 1 << 20);
    for id in 0..10 {
        q.put(&payload(id, 40)).unwrap();
    }
    let read: Vec<_> = (0..5).map(|_| q.get_at().unwrap().unwrap()).collect();
    q.commit(read[4].0);
    q.commit(read[1].0); // older: ignored
    q.commit(Position { file: 99, pos: 0 }); // beyond the reads: clamped to them
    q.sync().unwrap();
    drop(q);
    let mut q = open_committing(dir.path(), 1 << 20);
    let ids: Vec<u64> = drain_at(&mut q).into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, (5..10).collect::<Vec<_>>());
}

#[test]
fn flush_data_makes_appends_survive_a_crash_without_a_meta() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = open_committing(dir.path(), 200);
    for id in 0..30 {
        q.put(&payload(id, 50)).unwrap();
        if id % 4 == 0 {
            q.flush_data().unwrap();
        }
    }
    q.flush_data().unwrap();
    drop(q); // crash: the meta still says empty
    let mut q = open_committing(dir.path(), 200);
    let ids: Vec<u64> = drain_at(&mut q).into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, (0..30).collect::<Vec<_>>());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Against a model: records are put, read, and committed out of order
    /// (as messages finish); after a crash at any point every record not
    /// committed past comes back, in order.
    #[test]
    fn uncommitted_records_survive_crashes(
        ops in proptest::collection::vec((0u8..4, 1usize..8), 1..60),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut q = open_committing(dir.path(), 256);
        let mut next = 0u64;
        // Records read and not yet finished, in read order, with positions.
        let mut outstanding: VecDeque<(u64, Position, bool)> = VecDeque::new();
        // Records put and not yet read.
        let mut unread: VecDeque<u64> = VecDeque::new();
        for (op, n) in ops {
            match op {
                0 => {
                    for _ in 0..n {
                        q.put(&payload(next, 20 + (next % 30) as usize)).unwrap();
                        unread.push_back(next);
                        next += 1;
                    }
                    q.flush_data().unwrap();
                }
                1 => {
                    for _ in 0..n {
                        match q.get_at().unwrap() {
                            Some((at, b)) => {
                                prop_assert_eq!(Some(id_of(&b)), unread.pop_front());
                                outstanding.push_back((id_of(&b), at, false));
                            }
                            None => prop_assert!(unread.is_empty()),
                        }
                    }
                }
                2 => {
                    // Finish the n-th outstanding record, then commit the
                    // lowest unfinished position (or everything read).
                    if !outstanding.is_empty() {
                        let i = n % outstanding.len();
                        outstanding[i].2 = true;
                        while outstanding.front().is_some_and(|o| o.2) {
                            outstanding.pop_front();
                        }
                        let upto = outstanding.front().map_or(q.read_position(), |o| o.1);
                        q.commit(upto);
                    }
                    if n % 2 == 0 {
                        q.sync().unwrap();
                    }
                }
                _ => {
                    // Crash and reopen: what comes back is everything from
                    // the first unfinished record on (finished ones after
                    // it too: at least once), then everything unread.
                    q.sync().unwrap();
                    drop(q);
                    q = open_committing(dir.path(), 256);
                    let mut expect: Vec<u64> = outstanding.iter().map(|o| o.0).collect();
                    expect.extend(unread.iter().copied());
                    let got: Vec<u64> = drain_at(&mut q).into_iter().map(|(id, _)| id).collect();
                    prop_assert_eq!(got, expect);
                    // Everything is read again now; treat it as finished.
                    outstanding.clear();
                    q.commit(q.read_position());
                    unread.clear();
                }
            }
        }
    }
}
