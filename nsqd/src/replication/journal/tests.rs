//! The journal's replay, compaction, refusals of damaged or lying records
//! and of files written by another link protocol version.

use super::*;

fn msg(id: u64) -> WireMessage {
    WireMessage {
        id,
        timestamp: 1,
        attempts: 0,
        body: Bytes::from(vec![b'x'; 100]),
    }
}

fn hello(version: u16) -> Frame {
    Frame::Hello {
        version,
        origin: "127.0.0.1:4153".into(),
        incarnation: 9,
    }
}

fn apply(s: &mut Shadow, e: &Entry) {
    let Entry::Frame(f) = e else {
        panic!("no spill without a spill destination: {e:?}");
    };
    match f {
        Frame::Append {
            topic,
            channel,
            due,
            msgs,
            ..
        } => s
            .append(topic, channel.as_ref(), *due, msgs, u64::MAX)
            .unwrap(),
        Frame::Meta {
            op, topic, channel, ..
        } => s.meta(*op, topic, channel.as_ref()),
        Frame::Finish {
            topic,
            channel,
            ids,
            ..
        } => s.finish(topic, channel, ids),
        _ => {}
    }
}

#[tokio::test]
async fn replays_what_was_committed_cuts_a_torn_tail_and_compacts() {
    let dir = tempfile::tempdir().unwrap();
    let t: nsq_protocol::TopicName = "t".parse().unwrap();
    let c: nsq_protocol::ChannelName = "c".parse().unwrap();
    let records = vec![
        hello(VERSION),
        Frame::Meta {
            seq: 1,
            op: MetaOp::ChannelCreate,
            topic: t.clone(),
            channel: Some(c.clone()),
        },
        Frame::Append {
            seq: 2,
            topic: t.clone(),
            channel: None,
            due: 0,
            msgs: (1..=3).map(msg).collect(),
        },
        Frame::Finish {
            seq: 3,
            topic: t.clone(),
            channel: c.clone(),
            ids: vec![2],
        },
    ];
    {
        let (mut j, old) = Journal::open(dir.path(), "127.0.0.1:4153").unwrap();
        assert!(old.is_empty());
        for r in &records {
            j.record(r);
        }
        let ticket = j.submit();
        j.waiter().wait(ticket).await.unwrap();
        // Recorded but never submitted: not acknowledged, not kept.
        j.record(&records[1]);
    }
    // A torn write at the end.
    let path = dir.path().join("127.0.0.1_4153.journal");
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    std::io::Write::write_all(&mut f, &[1, 2, 3]).unwrap();
    drop(f);
    let (mut j, frames) = Journal::open(dir.path(), "127.0.0.1:4153").unwrap();
    let want: Vec<Entry> = records.iter().cloned().map(Entry::Frame).collect();
    assert_eq!(frames, want);
    let mut s = Shadow::default();
    for f in &frames {
        apply(&mut s, f);
    }
    assert_eq!(s.depth(), 2);
    let ticket = j.compact(&mut s, Some(&records[0]));
    j.waiter().wait(ticket).await.unwrap();
    drop(j);
    let (_, frames) = Journal::open(dir.path(), "127.0.0.1:4153").unwrap();
    let mut again = Shadow::default();
    for f in &frames {
        apply(&mut again, f);
    }
    let ids: Vec<u64> = again.topics[&t].channels[&c].msgs.keys().collect();
    assert_eq!(ids, vec![1, 3]);
}

#[test]
fn spill_records_round_trip_and_lies_are_refused() {
    let t: TopicName = "t".parse().unwrap();
    let entries = [
        Entry::Spilled {
            topic: t.clone(),
            channel: Some("c".parse().unwrap()),
            lo: 3,
            hi: 9,
            spilled: 5,
        },
        Entry::SpillFinished {
            topic: t.clone(),
            channel: None,
            ids: vec![4, 7],
        },
    ];
    let mut out = BytesMut::new();
    for e in &entries {
        encode_entry(&mut out, e);
    }
    let (first, next) = read_one(&out, 0).unwrap();
    let (second, end) = read_one(&out, next).unwrap();
    assert_eq!([first, second], entries);
    assert_eq!(end, out.len());
    // A count larger than the record, with a valid checksum: refused.
    let mut lie = BytesMut::new();
    lie.put_u32(0);
    lie.put_u8(SPILL_FINISHED);
    wire::put_str(&mut lie, "t");
    wire::put_str(&mut lie, "");
    lie.put_u32(1_000);
    lie.put_u64(1);
    let size = (lie.len() - 4) as u32;
    lie[..4].copy_from_slice(&size.to_be_bytes());
    let mut rec = BytesMut::new();
    rec.put_u32(crc32fast::hash(&lie));
    rec.extend_from_slice(&lie);
    assert!(read_one(&rec, 0).is_none());
    // A name no topic can have: refused.
    let mut bad = BytesMut::new();
    encode_entry(
        &mut bad,
        &Entry::SpillFinished {
            topic: t,
            channel: None,
            ids: vec![],
        },
    );
    // crc, size, kind, the name's length: then the name.
    let at = 10;
    assert_eq!(bad[at], b't');
    bad[at] = b'/';
    let crc = crc32fast::hash(&bad[4..]);
    bad[..4].copy_from_slice(&crc.to_be_bytes());
    assert!(read_one(&bad, 0).is_none());
}

/// A journal file of `records` as `origin`'s journal under `dir`.
fn plant(dir: &Path, records: &[Frame]) -> std::path::PathBuf {
    let mut out = BytesMut::new();
    for r in records {
        encode_record(&mut out, r);
    }
    let path = dir.join("127.0.0.1_4153.journal");
    std::fs::write(&path, &out).unwrap();
    path
}

fn some_records(version: u16) -> Vec<Frame> {
    let t: TopicName = "t".parse().unwrap();
    vec![
        hello(version),
        Frame::Append {
            seq: 1,
            topic: t,
            channel: None,
            due: 0,
            msgs: (1..=3).map(msg).collect(),
        },
    ]
}

#[tokio::test]
async fn a_journal_of_another_link_version_is_kept_aside_and_not_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let origin = "127.0.0.1:4153";
    let aside = |n: u32| {
        dir.path()
            .join(format!("127.0.0.1_4153.journal.refused.{n}"))
    };
    // Written by a build of link version 2: its Appends had another layout.
    let path = plant(dir.path(), &some_records(VERSION - 1));
    let old = std::fs::read(&path).unwrap();
    let (mut j, entries) = Journal::open(dir.path(), origin).unwrap();
    assert!(entries.is_empty(), "replayed {entries:?}");
    assert_eq!(std::fs::read(aside(1)).unwrap(), old, "not kept as it was");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    // The fresh journal is journaled to and replayed as usual.
    let now = some_records(VERSION);
    for r in &now {
        j.record(r);
    }
    let ticket = j.submit();
    j.waiter().wait(ticket).await.unwrap();
    drop(j);
    let (_, entries) = Journal::open(dir.path(), origin).unwrap();
    let want: Vec<Entry> = now.iter().cloned().map(Entry::Frame).collect();
    assert_eq!(entries, want);
    assert!(!aside(2).exists(), "a journal of this version was refused");
    // No Hello first: refused too, kept beside the first one refused.
    let headless = plant(dir.path(), &some_records(VERSION)[1..]);
    let old = std::fs::read(&headless).unwrap();
    let (_, entries) = Journal::open(dir.path(), origin).unwrap();
    assert!(entries.is_empty(), "replayed {entries:?}");
    assert_eq!(std::fs::read(aside(2)).unwrap(), old);
    assert!(aside(1).exists());
}

#[test]
fn a_saved_snapshot_of_another_link_version_is_kept_aside_too() {
    let dir = tempfile::tempdir().unwrap();
    plant(dir.path(), &some_records(VERSION + 1));
    assert_eq!(read(dir.path(), "127.0.0.1:4153").unwrap(), None);
    let aside = dir.path().join("127.0.0.1_4153.journal.refused.1");
    assert!(aside.exists());
    plant(dir.path(), &some_records(VERSION));
    assert_eq!(
        read(dir.path(), "127.0.0.1:4153").unwrap().unwrap().len(),
        2
    );
}

#[test]
fn only_a_hello_of_this_version_or_one_cut_short_passes() {
    let mut out = BytesMut::new();
    encode_record(&mut out, &hello(VERSION));
    let whole = out.len();
    assert_eq!(check_version(&out), Ok(()));
    assert_eq!(check_version(&[]), Ok(()));
    // A crash during the first write: the replay cuts it off.
    for cut in [3, 9, whole - 1] {
        assert_eq!(check_version(&out[..cut]), Ok(()), "cut at {cut}");
    }
    let mut damaged = out.clone();
    damaged[whole - 1] ^= 1;
    assert_eq!(check_version(&damaged), Err(Refused::NoHello));
    let mut other = BytesMut::new();
    encode_record(&mut other, &hello(2));
    assert_eq!(check_version(&other), Err(Refused::Version(2)));
    // A first record that is no Hello, even cut short.
    let mut meta = BytesMut::new();
    encode_record(&mut meta, &some_records(VERSION)[1]);
    assert_eq!(check_version(&meta[..20]), Err(Refused::NoHello));
}
