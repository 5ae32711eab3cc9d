//! The streaming decoder nsqd runs on each connection: a command line, then
//! for the commands that carry one a `[i32 size]` and a body of that size,
//! every size checked before memory is reserved for it.

use bytes::{Buf, Bytes, BytesMut};

use super::error::{err, positive_within, DecodeError};
use super::limits::Limits;
use super::line::{parse_line, Head, Parsed};
use super::mpub::{scan_mpub, Bodies, MpubScan};
use super::Command;
use crate::error::{ErrorCode, ProtocolError};
use crate::names::TopicName;
use crate::MAX_LINE_LEN;

/// The verbs the decoder knows, as `'static` names for [`DecodeError::Params`].
fn known_verb(name: &[u8]) -> Option<&'static str> {
    const VERBS: &[&str] = &[
        "IDENTIFY", "AUTH", "SUB", "PUB", "MPUB", "DPUB", "RDY", "FIN", "REQ", "TOUCH", "CLS",
        "NOP",
    ];
    VERBS.iter().copied().find(|v| v.as_bytes() == name)
}

fn with_verb(verb: Option<&'static str>, e: DecodeError) -> DecodeError {
    match (verb, e) {
        (Some(verb), DecodeError::Protocol(error)) => DecodeError::Params { verb, error },
        (_, e) => e,
    }
}

#[derive(Debug, Clone)]
pub(super) enum State {
    Line,
    Size(Head),
    Body(Head, usize),
    Mpub(TopicName, MpubScan),
}

/// Makes the buffer an MPUB's bodies are copied into: empty, with room for
/// at least the given number of bytes.
pub type BodyBuffer = fn(usize) -> BytesMut;

/// Streaming decoder: feed it the connection's read buffer, take commands out.
#[derive(Debug, Clone)]
pub struct CommandDecoder {
    limits: Limits,
    pub(super) state: State,
    body_buffer: BodyBuffer,
}

impl CommandDecoder {
    pub fn new(limits: Limits) -> Self {
        CommandDecoder {
            limits,
            state: State::Line,
            body_buffer: BytesMut::with_capacity,
        }
    }

    /// Copy MPUB bodies into buffers made by `make` (nsqd has the memory
    /// faulted in with one call instead of a page at a time).
    pub fn with_body_buffer(mut self, make: BodyBuffer) -> Self {
        self.body_buffer = make;
        self
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// True when no command is partly read.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Line)
    }

    /// Take the next whole command off the front of `buf`. `Ok(None)` means
    /// more bytes are needed; the decoder remembers where it was.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Command>, DecodeError> {
        loop {
            match std::mem::replace(&mut self.state, State::Line) {
                State::Line => {
                    let Some(line) = next_line(buf).map_err(|_| DecodeError::LineTooLong)? else {
                        return Ok(None);
                    };
                    let mut line = &line[..line.len() - 1];
                    if let Some(stripped) = line.strip_suffix(b"\r") {
                        line = stripped;
                    }
                    let verb = known_verb(line.split(|&b| b == b' ').next().unwrap_or(b""));
                    match parse_line(&self.limits, line).map_err(|e| with_verb(verb, e))? {
                        Parsed::Done(cmd) => return Ok(Some(cmd)),
                        Parsed::NeedsBody(head) => self.state = State::Size(head),
                    }
                }
                State::Size(head) => {
                    if buf.len() < 4 {
                        self.state = State::Size(head);
                        return Ok(None);
                    }
                    let size = buf.get_i32();
                    let size = self
                        .check_size(&head, size)
                        .map_err(|e| with_verb(Some(head.name()), e))?;
                    if let Head::Mpub(topic) = head {
                        let scan = MpubScan {
                            declared: size,
                            ..MpubScan::default()
                        };
                        self.state = State::Mpub(topic, scan);
                    } else {
                        self.state = State::Body(head, size);
                    }
                }
                State::Body(head, size) => {
                    if buf.len() < size {
                        reserve_as_it_arrives(buf, size);
                        self.state = State::Body(head, size);
                        return Ok(None);
                    }
                    let body = take_body(buf, size);
                    return Ok(Some(match head {
                        Head::Identify => Command::Identify(body),
                        Head::Auth => Command::Auth(body),
                        Head::Pub(topic) => Command::Pub { topic, body },
                        Head::Dpub(topic, defer_ms) => Command::Dpub {
                            topic,
                            defer_ms,
                            body,
                        },
                        Head::Mpub(_) => unreachable!("MPUB bodies are scanned, not sized"),
                    }));
                }
                State::Mpub(topic, mut scan) => {
                    if scan_mpub(&self.limits, &mut scan, buf)? {
                        if scan.pos != scan.declared {
                            return Err(err(
                                ErrorCode::BadBody,
                                format!(
                                    "MPUB body size {} does not match its messages ({} bytes)",
                                    scan.declared, scan.pos
                                ),
                            ));
                        }
                        // The one copy of the bodies: out of the read
                        // buffer, which stays unshared and is reused, so a
                        // queued batch pins only its own bytes.
                        let span = &buf[4..scan.pos];
                        let mut packed = (self.body_buffer)(span.len());
                        packed.extend_from_slice(span);
                        let bodies = Bodies::packed(packed.freeze(), scan.found);
                        buf.advance(scan.pos);
                        return Ok(Some(Command::Mpub { topic, bodies }));
                    }
                    reserve_as_it_arrives(buf, scan.declared);
                    self.state = State::Mpub(topic, scan);
                    return Ok(None);
                }
            }
        }
    }

    /// The error upstream sends when the connection ends in the middle of a
    /// command (it tries to send it even though the peer stopped writing).
    pub fn eof_error(&self) -> Option<ProtocolError> {
        let (code, text) = match &self.state {
            State::Line => return None,
            State::Size(Head::Pub(_)) => (
                ErrorCode::BadMessage,
                "PUB failed to read message body size",
            ),
            State::Size(Head::Dpub(..)) => (
                ErrorCode::BadMessage,
                "DPUB failed to read message body size",
            ),
            State::Size(Head::Mpub(_)) => (ErrorCode::BadBody, "MPUB failed to read body size"),
            State::Size(Head::Identify) => {
                (ErrorCode::BadBody, "IDENTIFY failed to read body size")
            }
            State::Size(Head::Auth) => (ErrorCode::BadBody, "AUTH failed to read body size"),
            State::Body(Head::Pub(_), _) => {
                (ErrorCode::BadMessage, "PUB failed to read message body")
            }
            State::Body(Head::Dpub(..), _) => {
                (ErrorCode::BadMessage, "DPUB failed to read message body")
            }
            State::Body(Head::Identify, _) => (ErrorCode::BadBody, "IDENTIFY failed to read body"),
            State::Body(Head::Auth, _) => (ErrorCode::BadBody, "AUTH failed to read body"),
            State::Body(Head::Mpub(_), _) => (ErrorCode::BadBody, "MPUB failed to read body"),
            State::Mpub(_, scan) if scan.count.is_none() => {
                (ErrorCode::BadBody, "MPUB failed to read message count")
            }
            State::Mpub(_, scan) if !scan.in_body => {
                return Some(ProtocolError::new(
                    ErrorCode::BadMessage,
                    format!("MPUB failed to read message({}) body size", scan.found),
                ))
            }
            State::Mpub(..) => (ErrorCode::BadMessage, "MPUB failed to read message body"),
        };
        Some(ProtocolError::new(code, text))
    }

    /// Check a body size in upstream's order and wording for each command.
    fn check_size(&self, head: &Head, size: i32) -> Result<usize, DecodeError> {
        let n = head.name();
        let l = &self.limits;
        match head {
            Head::Pub(_) | Head::Dpub(..) => {
                let (invalid, big) = (
                    format!("{n} invalid message body size"),
                    format!("{n} message"),
                );
                return positive_within(
                    size,
                    l.max_msg_size,
                    ErrorCode::BadMessage,
                    &invalid,
                    &big,
                );
            }
            Head::Mpub(_) => {
                let (invalid, big) = ("MPUB invalid body size", "MPUB body");
                return positive_within(size, l.max_body_size, ErrorCode::BadBody, invalid, big);
            }
            Head::Identify | Head::Auth => {
                if i64::from(size) > l.max_body_size as i64 {
                    return Err(err(
                        ErrorCode::BadBody,
                        format!("{n} body too big {size} > {}", l.max_body_size),
                    ));
                }
                if size <= 0 {
                    return Err(err(
                        ErrorCode::BadBody,
                        format!("{n} invalid body size {size}"),
                    ));
                }
            }
        }
        Ok(size as usize)
    }
}

/// A command line longer than upstream's read buffer.
pub(crate) struct LineTooLong;

/// The next line off the front of `buf`, its `\n` included, or `None`
/// until a whole one has arrived.
pub(crate) fn next_line(buf: &mut BytesMut) -> Result<Option<BytesMut>, LineTooLong> {
    let search = &buf[..buf.len().min(MAX_LINE_LEN)];
    match search.iter().position(|&b| b == b'\n') {
        Some(nl) => Ok(Some(buf.split_to(nl + 1))),
        None if buf.len() >= MAX_LINE_LEN => Err(LineTooLong),
        None => Ok(None),
    }
}

/// Make room for more of a body of `size` bytes, no more than has already
/// arrived (and at least a read's worth): a header alone never reserves the
/// size it claims, yet a large body still grows its buffer by doubling.
pub(crate) fn reserve_as_it_arrives(buf: &mut BytesMut, size: usize) {
    const STEP: usize = 64 * 1024;
    let missing = size.saturating_sub(buf.len());
    let room = buf.capacity() - buf.len();
    if room < missing {
        buf.reserve(missing.min(buf.len().max(STEP)));
    }
}

/// A body of `size` bytes off the front of `buf`. Small bodies are copied
/// into an allocation of their own: a queued message then pins only its own
/// bytes, not the connection's whole read buffer, and the read buffer stays
/// unshared and is reused. Large bodies are split off without a copy.
fn take_body(buf: &mut BytesMut, size: usize) -> Bytes {
    const COPY_BELOW: usize = 32 * 1024;
    if size < COPY_BELOW {
        let body = Bytes::copy_from_slice(&buf[..size]);
        buf.advance(size);
        body
    } else {
        buf.split_to(size).freeze()
    }
}
