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
//! is cut off.

use std::fs::OpenOptions;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use bytes::{Bytes, BytesMut};

use super::journal_writer::{Waiter, Writer};
use super::shadow::Shadow;
use super::wire::{Frame, MetaOp, WireMessage, MAX_FRAME};

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
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    f.encode(out);
    let crc = crc32fast::hash(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_be_bytes());
}

impl Journal {
    /// Open (creating) the journal of `origin` under `dir` and return the
    /// frames it holds, in order.
    pub fn open(dir: &Path, origin: &str) -> io::Result<(Journal, Vec<Frame>)> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(file_name(origin));
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        let mut raw = Vec::new();
        file.read_to_end(&mut raw)?;
        let mut frames = Vec::new();
        let mut at = 0usize;
        while let Some((frame, next)) = read_one(&raw, at) {
            frames.push(frame);
            at = next;
        }
        if at < raw.len() {
            tracing::warn!(
                journal = %path.display(),
                bytes = raw.len() - at,
                "replication journal: damaged or torn tail cut off"
            );
            file.set_len(at as u64)?;
            file.seek(SeekFrom::End(0))?;
        }
        Ok((
            Journal {
                writer: Writer::start(path, file)?,
                len: at as u64,
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
    /// origin's last Hello), after what was submitted: written aside,
    /// fsynced, renamed over. What was recorded and not yet submitted is in
    /// the shadow, so in the snapshot. The ticket that covers it.
    pub fn compact(&mut self, shadow: &Shadow, hello: Option<&Frame>) -> u64 {
        let mut out = BytesMut::new();
        if let Some(h) = hello {
            encode_record(&mut out, h);
        }
        for f in snapshot(shadow) {
            encode_record(&mut out, &f);
        }
        self.pending.clear();
        self.len = out.len() as u64;
        self.writer.replace(out)
    }
}

/// One record at `at`: the frame and where the next record starts.
fn read_one(raw: &[u8], at: usize) -> Option<(Frame, usize)> {
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
    let frame = Frame::decode(Bytes::copy_from_slice(&framed[4..])).ok()?;
    Some((frame, end))
}

/// Records that rebuild `shadow` from nothing.
fn snapshot(shadow: &Shadow) -> Vec<Frame> {
    let mut out = Vec::new();
    for (topic, t) in &shadow.topics {
        let meta = |op, channel| Frame::Meta {
            seq: 0,
            op,
            topic: topic.clone(),
            channel,
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
        let mut groups = vec![(None, &t.held)];
        groups.extend(t.channels.iter().map(|(n, c)| (Some(n.clone()), &c.msgs)));
        for (channel, held) in groups {
            let mut batch: Vec<WireMessage> = Vec::new();
            let mut due = None;
            for h in held.values() {
                if due != Some(h.due) || batch.len() >= 1024 {
                    if let (false, Some(d)) = (batch.is_empty(), due) {
                        out.push(append(topic, &channel, d, std::mem::take(&mut batch)));
                    }
                    due = Some(h.due);
                }
                batch.push(h.msg.clone());
            }
            if let (false, Some(d)) = (batch.is_empty(), due) {
                out.push(append(topic, &channel, d, batch));
            }
        }
    }
    out
}

fn append(
    topic: &nsq_protocol::TopicName,
    channel: &Option<nsq_protocol::ChannelName>,
    due: i64,
    msgs: Vec<WireMessage>,
) -> Frame {
    Frame::Append {
        seq: 0,
        topic: topic.clone(),
        channel: channel.clone(),
        due,
        msgs,
    }
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

    fn apply(s: &mut Shadow, f: &Frame) {
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
        assert_eq!(frames, records);
        let mut s = Shadow::default();
        for f in &frames {
            apply(&mut s, f);
        }
        assert_eq!(s.depth(), 2);
        let ticket = j.compact(&s, None);
        j.waiter().wait(ticket).await.unwrap();
        drop(j);
        let (_, frames) = Journal::open(dir.path(), "127.0.0.1:4153").unwrap();
        let mut again = Shadow::default();
        for f in &frames {
            apply(&mut again, f);
        }
        let ids: Vec<u64> = again.topics[&t].channels[&c].msgs.keys().copied().collect();
        assert_eq!(ids, vec![1, 3]);
    }
}
