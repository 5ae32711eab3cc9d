//! Reading commands off the socket: the per-command deadline, read errors,
//! and giving a large read buffer back after a burst.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use super::READ_CHUNK;
use crate::client::ClientSettings;

/// After a large command the read buffer is much bigger than what it
/// holds: give the memory back instead of keeping a connection's largest
/// MPUB for its whole life. Whatever is left over moves to a fresh buffer.
pub(super) fn shrink_after_burst(buf: &mut BytesMut) {
    if buf.capacity() > 4 * READ_CHUNK && buf.len() <= READ_CHUNK {
        let mut fresh = BytesMut::with_capacity(READ_CHUNK);
        fresh.extend_from_slice(buf);
        *buf = fresh;
    }
}

/// When the command being read must be complete: two heartbeat intervals
/// from when nsqd started waiting for it (after the previous command ran),
/// as upstream sets its read deadline once per command. Measured per
/// command, not per read, so a client trickling one byte at a time cannot
/// hold a connection (and its partly read body) forever.
#[derive(Debug, Default)]
pub(super) struct CommandClock {
    deadline: Option<Instant>,
}

impl CommandClock {
    /// A command was read and executed: the next one gets a fresh clock.
    pub(super) fn command_done(&mut self) {
        self.deadline = None;
    }

    pub(super) fn deadline(&mut self, settings: &ClientSettings) -> Option<Instant> {
        let Some(heartbeat) = settings.heartbeat_interval else {
            self.deadline = None;
            return None;
        };
        Some(
            *self
                .deadline
                .get_or_insert_with(|| Instant::now() + heartbeat * 2),
        )
    }
}

/// Why reading the socket stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReadFailed {
    TimedOut,
    Io,
}

impl ReadFailed {
    pub(super) fn reason(self) -> &'static str {
        match self {
            ReadFailed::TimedOut => "command not complete within two heartbeat intervals",
            ReadFailed::Io => "read error",
        }
    }
}

pub(super) async fn read_with_deadline<R: AsyncRead + Unpin>(
    read: &mut R,
    buf: &mut BytesMut,
    deadline: Option<Instant>,
) -> Result<usize, ReadFailed> {
    let r = match deadline {
        Some(at) => tokio::time::timeout_at(at, read.read_buf(buf))
            .await
            .map_err(|_| ReadFailed::TimedOut)?,
        None => read.read_buf(buf).await,
    };
    r.map_err(|_| ReadFailed::Io)
}
