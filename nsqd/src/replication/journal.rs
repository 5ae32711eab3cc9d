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
//!
//! Records are laid out as the link protocol version of the build that
//! wrote them, so a file starts with the origin's Hello, which names it. A
//! file whose Hello names another version (or that starts with no Hello)
//! is not replayed: its records could decode as something they are not. It
//! is kept aside under another name, with a log line, and the holder starts
//! empty; the origin's full copy at the next connection restores the copy.

use std::fs::OpenOptions;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use nsq_protocol::{ChannelName, TopicName};

use super::journal_writer::{SpillWrites, Waiter, Writer};
use super::shadow::Shadow;
use super::wire::{
    self, Frame, MetaOp, WireError, WireMessage, HELLO_MAX, MAX_COUNT, MAX_FRAME, VERSION,
};

const SPILLED: u8 = 64;
const SPILL_FINISHED: u8 = 65;
/// The Hello's kind on the link (`wire.rs`).
const HELLO: u8 = 1;

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
        refuse_other_versions(&path)?;
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
    // Records come only after a Hello; a snapshot without one would be
    // refused at the next start.
    debug_assert!(
        hello.is_some() || out.is_empty(),
        "a snapshot without a Hello"
    );
    (out, waits)
}

/// The records of the journal (or snapshot) of `origin` under `dir`, if
/// there is one.
pub fn read(dir: &Path, origin: &str) -> io::Result<Option<Vec<Entry>>> {
    let path = dir.join(file_name(origin));
    refuse_other_versions(&path)?;
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

/// Why a journal file is not replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("written by link protocol version {0}, this build reads version {VERSION}")]
    Version(u16),
    #[error("it does not start with a Hello naming its link protocol version")]
    NoHello,
}

/// Whether the records of a file starting with `head` are laid out as
/// this build's link version says. Every file this build writes starts
/// with the origin's Hello (the holder journals one on each connection
/// before anything it applies, and a snapshot starts with it), so the
/// first record decides, looked at before any other is decoded. Only a
/// Hello cut short (a crash during the very first write, before anything
/// was acknowledged) passes: the replay cuts it off like any torn tail.
fn check_version(head: &[u8]) -> Result<(), Refused> {
    // crc:u32 size:u32 kind:u8 version:u16 ...
    let Some(&kind) = head.get(8) else {
        return Ok(());
    };
    let size = u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as usize;
    if kind != HELLO || !(3..=HELLO_MAX).contains(&size) {
        return Err(Refused::NoHello);
    }
    let Some(framed) = head.get(4..8 + size) else {
        return Ok(());
    };
    if crc32fast::hash(framed) != u32::from_be_bytes([head[0], head[1], head[2], head[3]]) {
        return Err(Refused::NoHello);
    }
    match u16::from_be_bytes([head[9], head[10]]) {
        VERSION => Ok(()),
        other => Err(Refused::Version(other)),
    }
}

/// If the file at `path` is of another link version, rename it aside (to
/// the first free `<name>.refused.<n>`), so it is neither replayed nor
/// lost, and log why and where it went.
fn refuse_other_versions(path: &Path) -> io::Result<()> {
    let mut head = Vec::new();
    match std::fs::File::open(path) {
        Ok(f) => f.take(8 + HELLO_MAX as u64).read_to_end(&mut head)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let Err(why) = check_version(&head) else {
        return Ok(());
    };
    let aside = (1..=u32::MAX)
        .map(|n| path.with_extension(format!("journal.refused.{n}")))
        .find(|p| !p.exists())
        .unwrap_or_else(|| path.with_extension("journal.refused"));
    std::fs::rename(path, &aside)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    tracing::warn!(
        journal = %path.display(),
        kept = %aside.display(),
        "replication journal: not replayed, {why}; kept aside as {}, starting empty (the origin's full copy restores the copy)",
        aside.display()
    );
    Ok(())
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
mod tests;
