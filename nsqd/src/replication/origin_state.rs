//! What a holder keeps per origin: the shadow of its messages, the link's
//! connection generation and liveness, what was taken over, the journal of
//! a durable holder, and what a holder finds again after its restart (the
//! journal, or the snapshot a non-durable holder writes when it stops).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

use nsq_protocol::TopicName;
use tokio::time::Instant;
use tracing::info;

use super::journal::{self, Entry};
use super::shadow::{Shadow, ShadowError};
use super::spill::{self, FinishedSet};
use super::wire::Frame;

/// Most bytes of message bodies one origin's shadow may hold.
pub const SHADOW_MAX_BYTES: u64 = 1 << 30;

/// Per-origin state; locked by that origin's link task (to apply records),
/// the takeover timer and `/stats`. Never held across an `.await`.
pub(crate) struct Inner {
    pub shadow: Shadow,
    /// Connection generation, so a replaced connection stops applying.
    pub conn: u64,
    pub connected: bool,
    /// When the origin was last heard from (or this node started).
    pub last_seen: Instant,
    /// The origin's process, from its Hello; 0 before the first.
    pub incarnation: u64,
    /// Taken over and not yet back.
    pub taken_over: bool,
    pub takeovers: u64,
    /// Original ids of what was taken over (and of what the origin had
    /// finished lately), to tell the origin on return.
    pub taken: BTreeMap<TopicName, BTreeSet<u64>>,
    /// Messages taken over since the origin was last told.
    pub taken_messages: u64,
    /// `--durable`: every record applied is journaled and fsynced first.
    pub journal: Option<super::journal::Journal>,
    /// The origin's last Hello (kept in the journal's snapshots).
    pub hello: Option<Frame>,
    /// The shadow's change count at the last snapshot a non-durable
    /// holder saved.
    pub saved: Option<u64>,
}

impl Inner {
    /// After a takeover emptied the shadow: the journal follows.
    pub fn journal_emptied(&mut self) {
        if let Some(j) = &mut self.journal {
            // Written in order after what was submitted; a failure is
            // logged by the writer and fails the next acknowledgement.
            j.compact(&mut self.shadow, self.hello.as_ref());
        }
    }
}

pub struct OriginState {
    pub addr: String,
    inner: Mutex<Inner>,
}

impl OriginState {
    pub fn new(addr: String) -> Self {
        OriginState {
            addr,
            inner: Mutex::new(Self::empty()),
        }
    }

    /// What this holder kept of the origin across its restart, under `dir`
    /// (`<data-path>/replication`): with `durable` the journal, replayed and
    /// then appended to; else the snapshot of its last clean stop, read once
    /// and removed (a later crash must not find it stale). Spill files in
    /// `data` that neither refers to are removed first. The shadow's spill
    /// destination is set by now. Called once the data path is locked.
    pub fn load(
        &self,
        dir: &std::path::Path,
        data: &std::path::Path,
        durable: bool,
    ) -> std::io::Result<()> {
        let addr = &self.addr;
        let mut inner = self.lock();
        let entries = if durable {
            let (journal, entries) = journal::Journal::open(dir, addr)?;
            inner.journal = Some(journal);
            entries
        } else {
            let entries = journal::read(dir, addr)?.unwrap_or_default();
            journal::remove(dir, addr)?;
            entries
        };
        let keep = match inner.shadow.spill_to() {
            Some(to) => entries
                .iter()
                .filter_map(|e| match e {
                    Entry::Spilled { topic, channel, .. } => {
                        Some(to.queue_name(topic, channel.as_ref()))
                    }
                    _ => None,
                })
                .collect(),
            None => Default::default(),
        };
        match spill::remove_leftovers(data, addr, &keep) {
            Ok(0) => {}
            Ok(n) => {
                info!(peer = %addr, "REPLICA {addr}: removed {n} spill files no saved copy refers to")
            }
            Err(e) => {
                tracing::warn!(peer = %addr, "REPLICA {addr}: cannot remove old spill files - {e}")
            }
        }
        replay(&mut inner, entries);
        if inner.shadow.depth() > 0 {
            let from = if durable {
                "the journal"
            } else {
                "the snapshot of its last stop"
            };
            info!(peer = %addr, messages = inner.shadow.depth(), "REPLICA {addr}: shadow replayed from {from}");
        }
        Ok(())
    }

    /// A non-durable holder saves the shadow's snapshot under `dir`: at a
    /// clean stop all of it (`memory`: the memory part too, once the spill
    /// writes it counts on are written); while it runs, now and then, what
    /// refers to its spill queues (with what of them was finished, and the
    /// origin's incarnation), so after a crash it keeps what reached the
    /// disk. Nothing when nothing changed since the last save. A durable
    /// holder's journal has it all already.
    pub async fn save(&self, dir: &std::path::Path, memory: bool) -> std::io::Result<()> {
        let (bytes, waits, changes) = {
            let mut i = self.lock();
            let changes = i.shadow.changes();
            let idle = i.incarnation == 0 && i.shadow.depth() == 0;
            if i.journal.is_some() || idle || (!memory && i.saved == Some(changes)) {
                return Ok(());
            }
            let i = &mut *i;
            let (bytes, waits) = journal::snapshot_bytes(&mut i.shadow, i.hello.as_ref(), memory);
            (bytes, waits, changes)
        };
        if memory {
            for w in waits {
                w.await
                    .unwrap_or_else(|_| Err(std::io::Error::other("disk I/O thread gone")))?;
            }
        }
        let (dir, addr) = (dir.to_path_buf(), self.addr.clone());
        tokio::task::spawn_blocking(move || journal::write_snapshot(&dir, &addr, &bytes))
            .await
            .map_err(std::io::Error::other)??;
        self.lock().saved = Some(changes);
        if memory {
            info!(peer = %self.addr, messages = self.status().1, "REPLICA {}: shadow saved for the next start", self.addr);
        }
        Ok(())
    }

    /// Scan the spill queues the shadow says may be drained (sent by
    /// `Shadow::finish`) off the link task, and hand back what was found.
    pub async fn check_drains(
        self: std::sync::Arc<Self>,
        mut checks: tokio::sync::mpsc::UnboundedReceiver<super::spill::DrainCheck>,
        cancel: tokio_util::sync::CancellationToken,
    ) {
        loop {
            let check = tokio::select! {
                _ = cancel.cancelled() => return,
                c = checks.recv() => match c {
                    Some(c) => c,
                    None => return,
                },
            };
            let ids = check.scan().await.ok();
            self.lock().shadow.drain_checked(check, ids);
        }
    }

    fn empty() -> Inner {
        Inner {
            shadow: Shadow::default(),
            conn: 0,
            connected: false,
            last_seen: Instant::now(),
            incarnation: 0,
            taken_over: false,
            takeovers: 0,
            taken: BTreeMap::new(),
            taken_messages: 0,
            journal: None,
            hello: None,
            saved: None,
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Taken over, shadow depth, takeovers.
    pub fn status(&self) -> (bool, u64, u64) {
        let i = self.lock();
        (i.taken_over, i.shadow.depth(), i.takeovers)
    }
}

/// Rebuild the shadow from a journal's or snapshot's records.
fn replay(inner: &mut Inner, entries: Vec<Entry>) {
    for e in entries {
        match e {
            Entry::Frame(f @ Frame::Hello { .. }) => {
                if let Frame::Hello { incarnation, .. } = &f {
                    inner.incarnation = *incarnation;
                }
                inner.hello = Some(f);
            }
            // Already acknowledged once; a shadow over its bound keeps
            // what it has.
            Entry::Frame(f) => {
                let _ = apply(&mut inner.shadow, &f);
            }
            Entry::Spilled {
                topic,
                channel,
                lo,
                hi,
                spilled,
            } => inner.shadow.restore_spill(
                &topic,
                channel.as_ref(),
                FinishedSet::restored(lo, hi, spilled),
            ),
            Entry::SpillFinished {
                topic,
                channel,
                ids,
            } => inner
                .shadow
                .restore_finished(&topic, channel.as_ref(), &ids),
        }
    }
}

/// Apply one of the origin's records to its shadow.
pub(super) fn apply(shadow: &mut Shadow, f: &Frame) -> Result<(), ShadowError> {
    match f {
        Frame::Reset { .. } => shadow.reset(),
        Frame::Append {
            topic,
            channel,
            due,
            msgs,
            ..
        } => shadow.append(topic, channel.as_ref(), *due, msgs, SHADOW_MAX_BYTES)?,
        Frame::Finish {
            topic,
            channel,
            ids,
            ..
        } => shadow.finish(topic, channel, ids),
        Frame::Meta {
            op, topic, channel, ..
        } => shadow.meta(*op, topic, channel.as_ref()),
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use nsq_protocol::ChannelName;

    use super::super::batch::Batch;
    use super::super::spill::SpillTo;
    use super::super::wire::{MetaOp, WireMessage, VERSION};
    use super::*;
    use crate::disk_io::DiskIo;

    fn m(id: u64) -> WireMessage {
        let body = Bytes::from_static(b"a message of the origin");
        WireMessage::from(&crate::message::Message::new(id, 1, body))
    }

    fn spilling(io: &std::sync::Arc<DiskIo>) -> OriginState {
        let o = OriginState::new("o:1".into());
        o.lock()
            .shadow
            .set_spill(SpillTo::new(io.clone(), 2, "o:1"));
        o
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_saved_shadow_comes_back_with_its_spills_fins_and_incarnation() {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("replication");
        let io = DiskIo::for_tests(data.path());
        let (t, u): (TopicName, TopicName) = ("t".parse().unwrap(), "u".parse().unwrap());
        let c: ChannelName = "c".parse().unwrap();
        let o = spilling(&io);
        {
            let mut i = o.lock();
            i.incarnation = 7;
            i.hello = Some(Frame::Hello {
                version: VERSION,
                origin: "o:1".into(),
                incarnation: 7,
            });
            let s = &mut i.shadow;
            s.meta(MetaOp::ChannelCreate, &t, Some(&c));
            let msgs: Vec<_> = (1..=6).map(m).collect();
            s.append(&t, None, 0, &Batch::from(&msgs[..]), u64::MAX)
                .unwrap();
            // `u` has no channel: its topic holds, and spills past 2 too.
            let held: Vec<_> = (10..=14).map(m).collect();
            s.append(&u, None, 0, &Batch::from(&held[..]), u64::MAX)
                .unwrap();
            s.finish(&t, &c, &[2, 4]);
            assert_eq!(s.depth(), 4 + 5);
        }
        o.save(&dir, true).await.unwrap();
        // A spill file no snapshot refers to, as a crash may leave.
        let stray = data.path().join("~replica~o_1~x~y.diskqueue.000000.dat");
        std::fs::write(&stray, b"junk").unwrap();
        let back = spilling(&io);
        back.load(&dir, data.path(), false).unwrap();
        assert!(!stray.exists(), "a stray spill file stays");
        assert!(journal::read(&dir, "o:1").unwrap().is_none(), "read once");
        let mut i = back.lock();
        assert_eq!((i.incarnation, i.shadow.depth()), (7, 9));
        let mut topics = i.shadow.take_all();
        drop(i);
        let read = |s: Option<super::super::spill::Spill>| {
            let mut ids = Vec::new();
            s.unwrap()
                .read_back(|step| ids.extend(step.iter().map(|h| h.msg.id)))
                .unwrap();
            ids
        };
        let tc = topics.get_mut(&t).unwrap().channels.get_mut(&c).unwrap();
        assert_eq!(tc.msgs.keys().collect::<Vec<_>>(), vec![1]);
        assert_eq!(read(tc.spilled.take()), vec![3, 5, 6]);
        let ut = topics.get_mut(&u).unwrap();
        assert_eq!(ut.held.keys().collect::<Vec<_>>(), vec![10, 11]);
        assert_eq!(read(ut.held_spill.take()), vec![12, 13, 14]);
    }
}
