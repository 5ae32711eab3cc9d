//! What a holder keeps per origin: the shadow of its messages, the link's
//! connection generation and liveness, what was taken over, and the
//! journal of a durable holder.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

use nsq_protocol::TopicName;
use tokio::time::Instant;
use tracing::info;

use super::shadow::{Shadow, ShadowError};
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
}

impl Inner {
    /// After a takeover emptied the shadow: the journal follows.
    pub fn journal_emptied(&mut self) {
        if let Some(j) = &mut self.journal {
            // Written in order after what was submitted; a failure is
            // logged by the writer and fails the next acknowledgement.
            j.compact(&self.shadow, self.hello.as_ref());
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

    /// `--durable`: journal the shadow under `dir`, first replaying what
    /// the journal holds. Called once the data path is locked.
    pub fn load_journal(&self, dir: &std::path::Path) -> std::io::Result<()> {
        let addr = &self.addr;
        let mut inner = self.lock();
        {
            let (journal, frames) = super::journal::Journal::open(dir, addr)?;
            for f in frames {
                match &f {
                    Frame::Hello { incarnation, .. } => {
                        inner.incarnation = *incarnation;
                        inner.hello = Some(f.clone());
                    }
                    _ => {
                        // Already acknowledged once; a shadow over its bound
                        // keeps what it has.
                        let _ = apply(&mut inner.shadow, &f);
                    }
                }
            }
            if inner.shadow.depth() > 0 {
                info!(peer = %addr, messages = inner.shadow.depth(), "REPLICA {addr}: shadow replayed from the journal");
            }
            inner.journal = Some(journal);
        }
        Ok(())
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
