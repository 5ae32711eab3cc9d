//! A `--durable` holder's journal of one origin's records: every record the
//! holder applies to its shadow is appended here and fsynced before it is
//! acknowledged, so the shadow survives the holder's own crash (and, when
//! the origin is gone too, is taken over after the restart). Replayed at
//! start; rewritten as a snapshot of the shadow once it has grown well past
//! what the shadow holds. The writing and fsyncing is done in groups by a
//! thread of its own (`journal_writer.rs`).
//!
//! Record: `crc32:u32` over the frame, then the frame as the link carries
//! it (`size:u32 kind payload`). A torn or damaged tail ends the replay and
//! is cut off. Two kinds only a snapshot writes refer to the spill queues
//! (`spill.rs`) holding what did not fit in memory, instead of copying it:
//!
//! ```text
//! Spilled       64  topic:string channel:string lo:u64 hi:u64 spilled:u64
//! SpillFinished 65  topic:string channel:string count:u32 id:u64*
//! ```
//!
//! (`channel` empty: what the topic holds.) A snapshot is written only once
//! every spill write it counts on is on disk (fsynced under `--durable`).
//! A non-durable holder writes the same snapshot at a clean shutdown
//! (`origin_state.rs`), so its copy outlives its restart.

use std::fs::OpenOptions;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use nsq_protocol::{ChannelName, TopicName};

use super::journal_writer::{SpillWrites, Waiter, Writer};
use super::shadow::Shadow;
use super::wire::{self, Frame, MetaOp, WireError, WireMessage, MAX_COUNT, MAX_FRAME};

const SPILLED: u8 = 64;
const SPILL_FINISHED: u8 = 65;

/// Most body bytes one snapshot Append carries (well under `MAX_FRAME`).
const SNAPSHOT_APPEND_BYTES: usize = 16 << 20;

/// One record of a journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A record as the origin sent it (or a snapshot rebuilt it).
    Frame(Frame),
    /// A spill queue holding part of `channel`'s copy (`None`: of what the
    /// topic holds).
    Spilled {
        topic: TopicName,
        channel: Option<ChannelName>,
        lo: u64,
        hi: u64,
        spilled: u64,
    },
    /// Ids the origin finished among those of a [`Entry::Spilled`] queue.
    SpillFinished {
        topic: TopicName,
        channel: Option<ChannelName>,
        ids: Vec<u64>,
    },
}

impl Entry {
    fn encode(&self, out: &mut BytesMut) {
        let (kind, topic, channel) = match self {
            Entry::Frame(f) => return f.encode(out),
            Entry::Spilled { topic, channel, .. } => (SPILLED, topic, channel),
            Entry::SpillFinished { topic, channel, .. } => (SPILL_FINISHED, topic, channel),
        };
        let start = out.len();
        out.put_u32(0);
        out.put_u8(kind);
        wire::put_str(out, topic.as_str());
        wire::put_str(out, channel.as_ref().map_or("", |c| c.as_str()));
        match self {
            Entry::Spilled {
                lo, hi, spilled, ..
            } => {
                out.put_u64(*lo);
                out.put_u64(*hi);
                out.put_u64(*spilled);
            }
            Entry::SpillFinished { ids, .. } => wire::put_ids(out, ids),
            Entry::Frame(_) => {}
        }
        let size = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&size.to_be_bytes());
    }

    /// Kind and payload, every size checked (the disk is hostile too).
    fn decode(mut b: Bytes) -> Result<Entry, WireError> {
        let kind = *b.first().ok_or(WireError::Empty)?;
        if kind != SPILLED && kind != SPILL_FINISHED {
            return Frame::decode(b).map(Entry::Frame);
        }
        b.advance(1);
        let topic = wire::get_topic(&mut b)?;
        let channel = wire::get_channel(&mut b)?;
        let e = if kind == SPILLED {
            Entry::Spilled {
                topic,
                channel,
                lo: wire::get_u64(&mut b)?,
                hi: wire::get_u64(&mut b)?,
                spilled: wire::get_u64(&mut b)?,
            }
        } else {
            Entry::SpillFinished {
                topic,
                channel,
                ids: wire::get_ids(&mut b)?,
            }
        };
        if b.has_remaining() {
            return Err(WireError::Trailing(b.remaining()));
        }
        Ok(e)
    }
}

/// Rewrite once the journal is this large and several times the shadow.
const COMPACT_AT: u64 = 64 * 1024 * 1024;

pub struct Journal {
    writer: Writer,
    /// Bytes in the journal once what was submitted is written.
    len: u64,
    pending: BytesMut,
}

/// The journal's file name for an origin (its address, made path-safe).
fn file_name(origin: &str) -> String {
    format!("{}.journal", super::spill::path_safe(origin))
}

/// Add a record to `out`.
fn encode_record(out: &mut BytesMut, f: &Frame) {
    encode_entry(out, &Entry::Frame(f.clone()));
}

fn encode_entry(out: &mut BytesMut, e: &Entry) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    e.encode(out);
    let crc = crc32fast::hash(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_be_bytes());
}

impl Journal {
    /// Open (creating) the journal of `origin` under `dir` and return the
    /// records it holds, in order.
    pub fn open(dir: &Path, origin: &str) -> io::Result<(Journal, Vec<Entry>)> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(file_name(origin));
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        let (frames, at) = read_all(&mut file, &path)?;
        if at < file.metadata()?.len() {
            file.set_len(at)?;
            file.seek(SeekFrom::End(0))?;
        }
        Ok((
            Journal {
                writer: Writer::start(path, file)?,
                len: at,
                pending: BytesMut::new(),
            },
            frames,
        ))
    }

    /// Add a record (written at the next [`Journal::submit`]).
    pub fn record(&mut self, f: &Frame) {
        encode_record(&mut self.pending, f);
    }

    /// Hand what was recorded to the writer; the ticket to wait for (with
    /// [`Journal::waiter`]) before acknowledging it.
    pub fn submit(&mut self) -> u64 {
        self.len += self.pending.len() as u64;
        self.writer.append(self.pending.split())
    }

    /// Waits for submitted records to be on disk.
    pub fn waiter(&self) -> Waiter {
        self.writer.waiter()
    }

    /// Whether the journal has grown well past what `shadow` holds (or the
    /// shadow emptied), so a snapshot would be much smaller.
    pub fn wants_compaction(&self, shadow: &Shadow) -> bool {
        (shadow.depth() == 0 && self.len > 1024 * 1024)
            || (self.len > COMPACT_AT && self.len > 4 * shadow.bytes())
    }

    /// Replace the journal with a snapshot of `shadow` (and `hello`, the
    /// origin's last Hello), after what was submitted and once the spill
    /// writes it counts on are on disk: written aside, fsynced, renamed
    /// over. What was recorded and not yet submitted is in the shadow, so
    /// in the snapshot. The ticket that covers it.
    pub fn compact(&mut self, shadow: &mut Shadow, hello: Option<&Frame>) -> u64 {
        let (out, waits) = snapshot_bytes(shadow, hello, true);
        self.pending.clear();
        self.len = out.len() as u64;
        self.writer.replace(out, waits)
    }
}

/// The snapshot of `shadow` as journal bytes, and the spill writes it
/// counts on (to be on disk before it replaces anything).
/// Without `memory`, only what refers to the spill queues (a crash loses
/// a non-durable holder's memory anyway).
pub fn snapshot_bytes(
    shadow: &mut Shadow,
    hello: Option<&Frame>,
    memory: bool,
) -> (BytesMut, SpillWrites) {
    let waits = shadow.take_spill_writes();
    let mut out = BytesMut::new();
    if let Some(h) = hello {
        encode_record(&mut out, h);
    }
    for e in snapshot(shadow, memory) {
        encode_entry(&mut out, &e);
    }
    (out, waits)
}

/// The records of the journal (or snapshot) of `origin` under `dir`, if
/// there is one.
pub fn read(dir: &Path, origin: &str) -> io::Result<Option<Vec<Entry>>> {
    let path = dir.join(file_name(origin));
    match std::fs::File::open(&path) {
        Ok(mut f) => Ok(Some(read_all(&mut f, &path)?.0)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Remove the journal (or snapshot) of `origin` under `dir`.
pub fn remove(dir: &Path, origin: &str) -> io::Result<()> {
    match std::fs::remove_file(dir.join(file_name(origin))) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Write a snapshot as the file a restart reads: aside, fsynced, renamed.
pub fn write_snapshot(dir: &Path, origin: &str, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let path = dir.join(file_name(origin));
    let tmp = path.with_extension("journal.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Every valid record of `file`, and where the valid part ends.
fn read_all(file: &mut std::fs::File, path: &Path) -> io::Result<(Vec<Entry>, u64)> {
    let mut raw = Vec::new();
    file.read_to_end(&mut raw)?;
    let mut entries = Vec::new();
    let mut at = 0usize;
    while let Some((e, next)) = read_one(&raw, at) {
        entries.push(e);
        at = next;
    }
    if at < raw.len() {
        tracing::warn!(
            journal = %path.display(),
            bytes = raw.len() - at,
            "replication journal: damaged or torn tail cut off"
        );
    }
    Ok((entries, at as u64))
}

/// One record at `at`: the entry and where the next record starts.
fn read_one(raw: &[u8], at: usize) -> Option<(Entry, usize)> {
    let head = raw.get(at..at + 8)?;
    let crc = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let size = u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as usize;
    if size > MAX_FRAME {
        return None;
    }
    let end = at + 8 + size;
    let framed = raw.get(at + 4..end)?;
    if crc32fast::hash(framed) != crc {
        return None;
    }
    let entry = Entry::decode(Bytes::copy_from_slice(&framed[4..])).ok()?;
    Some((entry, end))
}

/// Records that rebuild `shadow` from nothing (its spill queues referred
/// to, not copied).
fn snapshot(shadow: &Shadow, memory: bool) -> Vec<Entry> {
    let mut out = Vec::new();
    for (topic, t) in &shadow.topics {
        let meta = |op, channel| {
            Entry::Frame(Frame::Meta {
                seq: 0,
                op,
                topic: topic.clone(),
                channel,
            })
        };
        if t.paused {
            out.push(meta(MetaOp::TopicPause, None));
        }
        for (name, c) in &t.channels {
            out.push(meta(MetaOp::ChannelCreate, Some(name.clone())));
            if c.paused {
                out.push(meta(MetaOp::ChannelPause, Some(name.clone())));
            }
        }
        let mut groups = vec![(None, &t.held, &t.held_spill)];
        groups.extend(
            t.channels
                .iter()
                .map(|(n, c)| (Some(n.clone()), &c.msgs, &c.spilled)),
        );
        for (channel, held, spill) in groups {
            if let Some(s) = spill {
                let (lo, hi, spilled) = s.finished.range();
                out.push(Entry::Spilled {
                    topic: topic.clone(),
                    channel: channel.clone(),
                    lo,
                    hi,
                    spilled,
                });
                let ids: Vec<u64> = s.finished.ids().copied().collect();
                for chunk in ids.chunks(MAX_COUNT / 2) {
                    out.push(Entry::SpillFinished {
                        topic: topic.clone(),
                        channel: channel.clone(),
                        ids: chunk.to_vec(),
                    });
                }
            }
            if !memory {
                continue;
            }
            let mut batch: Vec<WireMessage> = Vec::new();
            let mut bytes = 0;
            let mut due = None;
            for h in held.values() {
                let full = batch.len() >= 1024 || bytes + h.msg.body.len() > SNAPSHOT_APPEND_BYTES;
                if due != Some(h.due) || full {
                    if let (false, Some(d)) = (batch.is_empty(), due) {
                        out.push(append(topic, &channel, d, std::mem::take(&mut batch)));
                    }
                    bytes = 0;
                    due = Some(h.due);
                }
                bytes += h.msg.body.len();
                batch.push(h.msg);
            }
            if let (false, Some(d)) = (batch.is_empty(), due) {
                out.push(append(topic, &channel, d, batch));
            }
        }
    }
    out
}

fn append(
    topic: &TopicName,
    channel: &Option<ChannelName>,
    due: i64,
    msgs: Vec<WireMessage>,
) -> Entry {
    Entry::Frame(Frame::Append {
        seq: 0,
        topic: topic.clone(),
        channel: channel.clone(),
        due,
        msgs: msgs.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: u64) -> WireMessage {
        WireMessage {
            id,
            timestamp: 1,
            attempts: 0,
            body: Bytes::from(vec![b'x'; 100]),
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
        let ticket = j.compact(&mut s, None);
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
}
