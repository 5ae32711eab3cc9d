//! Reading commands off the socket: the per-command deadline, read errors,
//! the FIN fast path, and giving a large read buffer back after a burst.

use bytes::{Buf, BytesMut};
use nsq_protocol::MessageId;
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

/// `FIN <id>` as nsqd hands IDs out (16 lowercase hex digits), ended by
/// `\n` or `\r\n`: the most frequent command by far, taken off the front
/// of `buf` without the general decoder. Anything else, or a line not yet
/// whole, is left where it is for the decoder, which parses it the same
/// way (so this changes no answer, only its cost).
pub(super) fn take_fin(buf: &mut BytesMut) -> Option<u64> {
    const LINE: usize = b"FIN 0123456789abcdef\n".len();
    let head = buf.get(..LINE)?;
    let end = match head[LINE - 1] {
        b'\n' => LINE,
        b'\r' if buf.get(LINE) == Some(&b'\n') => LINE + 1,
        _ => return None,
    };
    if !head.starts_with(b"FIN ") {
        return None;
    }
    let id = MessageId::from_slice(&head[4..LINE - 1])?.to_u64()?;
    buf.advance(end);
    Some(id)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_fin_takes_whole_fins_with_nsqd_ids_only() {
        let mut buf = BytesMut::from(
            &b"FIN 00000000000000ff\nFIN 0123456789abcdef\r\nFIN 0123456789ABCDEF\n"[..],
        );
        assert_eq!(take_fin(&mut buf), Some(0xff));
        assert_eq!(take_fin(&mut buf), Some(0x0123_4567_89ab_cdef));
        // Upper-case hex is not an ID nsqd hands out: the decoder answers it.
        assert_eq!(take_fin(&mut buf), None);
        assert_eq!(&buf[..], b"FIN 0123456789ABCDEF\n");
    }

    #[test]
    fn take_fin_leaves_partial_and_other_lines_alone() {
        for line in [
            &b"FIN 0123456789abcdef"[..],
            b"FIN 0123456789abcdef\r",
            b"FIN 0123456789abcdef extra\n",
            b"FIN 0123456789abcde\n",
            b"REQ 0123456789abcdef 0\n",
            b"FINX0123456789abcdef\n",
            b"FIN 0123456789abcdeg\n",
        ] {
            let mut buf = BytesMut::from(line);
            assert_eq!(
                take_fin(&mut buf),
                None,
                "{:?}",
                String::from_utf8_lossy(line)
            );
            assert_eq!(&buf[..], line, "nothing consumed");
        }
    }
}
