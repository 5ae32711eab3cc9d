//! Client-to-server commands of protocol V2: one enum, its encoder (for
//! clients) and a streaming decoder (for nsqd).
//!
//! A command is a line `NAME[ SP param]*\n`, and PUB, DPUB, MPUB, IDENTIFY and
//! AUTH follow it with `[i32 size][body]`. The decoder validates what the line
//! says (names, numbers) before it waits for a body, and checks every size
//! before it reserves memory for it, so a hostile size cannot make it allocate.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{ErrorCode, ProtocolError};
use crate::message::MessageId;
use crate::names::{ChannelName, TopicName};
use crate::quote::go_quote;
use crate::MAX_LINE_LEN;

/// A command a client sends to nsqd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Raw JSON body; see [`crate::IdentifyRequest::parse`].
    Identify(Bytes),
    Auth(Bytes),
    Sub {
        topic: TopicName,
        channel: ChannelName,
    },
    Pub {
        topic: TopicName,
        body: Bytes,
    },
    Mpub {
        topic: TopicName,
        bodies: Vec<Bytes>,
    },
    Dpub {
        topic: TopicName,
        defer_ms: u64,
        body: Bytes,
    },
    Rdy(u64),
    Fin(MessageId),
    Req {
        id: MessageId,
        timeout_ms: u64,
    },
    Touch(MessageId),
    Cls,
    Nop,
}

impl Command {
    /// The command's name as on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Identify(_) => "IDENTIFY",
            Command::Auth(_) => "AUTH",
            Command::Sub { .. } => "SUB",
            Command::Pub { .. } => "PUB",
            Command::Mpub { .. } => "MPUB",
            Command::Dpub { .. } => "DPUB",
            Command::Rdy(_) => "RDY",
            Command::Fin(_) => "FIN",
            Command::Req { .. } => "REQ",
            Command::Touch(_) => "TOUCH",
            Command::Cls => "CLS",
            Command::Nop => "NOP",
        }
    }

    /// Append the command's wire form to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) {
        fn body(buf: &mut BytesMut, data: &[u8]) {
            buf.put_u32(data.len() as u32);
            buf.put_slice(data);
        }
        fn line(buf: &mut BytesMut, parts: &[&[u8]]) {
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    buf.put_u8(b' ');
                }
                buf.put_slice(p);
            }
            buf.put_u8(b'\n');
        }
        match self {
            Command::Identify(json) => {
                line(buf, &[b"IDENTIFY"]);
                body(buf, json);
            }
            Command::Auth(secret) => {
                line(buf, &[b"AUTH"]);
                body(buf, secret);
            }
            Command::Sub { topic, channel } => line(
                buf,
                &[
                    b"SUB",
                    topic.as_str().as_bytes(),
                    channel.as_str().as_bytes(),
                ],
            ),
            Command::Pub { topic, body: data } => {
                line(buf, &[b"PUB", topic.as_str().as_bytes()]);
                body(buf, data);
            }
            Command::Mpub { topic, bodies } => {
                line(buf, &[b"MPUB", topic.as_str().as_bytes()]);
                let size: usize = 4 + bodies.iter().map(|b| 4 + b.len()).sum::<usize>();
                buf.reserve(4 + size);
                buf.put_u32(size as u32);
                buf.put_u32(bodies.len() as u32);
                for b in bodies {
                    body(buf, b);
                }
            }
            Command::Dpub {
                topic,
                defer_ms,
                body: data,
            } => {
                line(
                    buf,
                    &[
                        b"DPUB",
                        topic.as_str().as_bytes(),
                        defer_ms.to_string().as_bytes(),
                    ],
                );
                body(buf, data);
            }
            Command::Rdy(n) => line(buf, &[b"RDY", n.to_string().as_bytes()]),
            Command::Fin(id) => line(buf, &[b"FIN", id.as_bytes()]),
            Command::Req { id, timeout_ms } => line(
                buf,
                &[b"REQ", id.as_bytes(), timeout_ms.to_string().as_bytes()],
            ),
            Command::Touch(id) => line(buf, &[b"TOUCH", id.as_bytes()]),
            Command::Cls => line(buf, &[b"CLS"]),
            Command::Nop => line(buf, &[b"NOP"]),
        }
    }
}

/// Size limits the decoder enforces (nsqd's `--max-msg-size`,
/// `--max-body-size`, `--max-req-timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_msg_size: u64,
    pub max_body_size: u64,
    pub max_req_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_msg_size: 1024 * 1024,
            max_body_size: 5 * 1024 * 1024,
            max_req_timeout_ms: 3_600_000,
        }
    }
}

/// Why decoding stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Send this error frame; close the connection if it is fatal.
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
    /// A known command's line or body size was refused. Upstream checks the
    /// client's state (and `--tls-required`) before it looks at parameters,
    /// so the server decides: its own state error, or this one.
    #[error("{error}")]
    Params {
        verb: &'static str,
        error: ProtocolError,
    },
    /// A line longer than upstream's read buffer: close without an error frame.
    #[error("command line longer than {MAX_LINE_LEN} bytes")]
    LineTooLong,
}

impl DecodeError {
    /// The error frame to send, if any.
    pub fn protocol_error(&self) -> Option<&ProtocolError> {
        match self {
            DecodeError::Protocol(e) | DecodeError::Params { error: e, .. } => Some(e),
            DecodeError::LineTooLong => None,
        }
    }
}

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

/// A command whose line has been read and which waits for its body.
#[derive(Debug, Clone)]
enum Head {
    Identify,
    Auth,
    Pub(TopicName),
    Dpub(TopicName, u64),
    Mpub(TopicName),
}

impl Head {
    fn name(&self) -> &'static str {
        match self {
            Head::Identify => "IDENTIFY",
            Head::Auth => "AUTH",
            Head::Pub(_) => "PUB",
            Head::Dpub(..) => "DPUB",
            Head::Mpub(_) => "MPUB",
        }
    }
}

/// Progress through an MPUB body, kept between calls so a large body arriving
/// in many reads is scanned once.
#[derive(Debug, Clone, Default)]
struct MpubScan {
    /// The body size the command declared, which the messages must fill
    /// exactly (`usize::MAX` for an HTTP body, bounded by its own length).
    declared: usize,
    count: Option<usize>,
    /// Bytes of the body already scanned, from the front of the buffer.
    pos: usize,
    /// (offset, len) of each message body found so far.
    spans: Vec<(usize, usize)>,
    /// Waiting for a message's bytes (not its length prefix).
    in_body: bool,
}

#[derive(Debug, Clone)]
enum State {
    Line,
    Size(Head),
    Body(Head, usize),
    Mpub(TopicName, MpubScan),
}

/// Streaming decoder: feed it the connection's read buffer, take commands out.
#[derive(Debug, Clone)]
pub struct CommandDecoder {
    limits: Limits,
    state: State,
}

fn lossy(b: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(b)
}

fn err(code: ErrorCode, text: String) -> DecodeError {
    DecodeError::Protocol(ProtocolError::new(code, text))
}

/// Upstream's `ByteToBase10`: ASCII digits only, the empty string is 0.
pub fn parse_base10(b: &[u8]) -> Option<u64> {
    let mut n = 0u64;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n.wrapping_mul(10).wrapping_add(u64::from(c - b'0'));
    }
    Some(n)
}

fn message_id(raw: &[u8]) -> Result<MessageId, DecodeError> {
    MessageId::from_slice(raw).ok_or_else(|| err(ErrorCode::Invalid, "invalid message ID".into()))
}

/// The parameters of one line, split on single spaces like Go's `bytes.Split`.
struct Params<'a> {
    first: [&'a [u8]; 4],
    count: usize,
}

impl<'a> Params<'a> {
    fn split(line: &'a [u8]) -> Self {
        let mut first: [&[u8]; 4] = [&[]; 4];
        let mut count = 0;
        for part in line.split(|&b| b == b' ') {
            if count < first.len() {
                first[count] = part;
            }
            count += 1;
        }
        Params { first, count }
    }

    fn get(&self, i: usize) -> &'a [u8] {
        self.first[i]
    }
}

impl CommandDecoder {
    pub fn new(limits: Limits) -> Self {
        CommandDecoder {
            limits,
            state: State::Line,
        }
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
                    let search = &buf[..buf.len().min(MAX_LINE_LEN)];
                    let Some(nl) = search.iter().position(|&b| b == b'\n') else {
                        if buf.len() >= MAX_LINE_LEN {
                            return Err(DecodeError::LineTooLong);
                        }
                        return Ok(None);
                    };
                    let line = buf.split_to(nl + 1);
                    let mut line = &line[..nl];
                    if let Some(stripped) = line.strip_suffix(b"\r") {
                        line = stripped;
                    }
                    let verb = known_verb(line.split(|&b| b == b' ').next().unwrap_or(b""));
                    match self.parse_line(line).map_err(|e| with_verb(verb, e))? {
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
                        let bodies = pack_bodies(buf, &scan.spans);
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
                    format!(
                        "MPUB failed to read message({}) body size",
                        scan.spans.len()
                    ),
                ))
            }
            State::Mpub(..) => (ErrorCode::BadMessage, "MPUB failed to read message body"),
        };
        Some(ProtocolError::new(code, text))
    }

    fn parse_line(&self, line: &[u8]) -> Result<Parsed, DecodeError> {
        let p = Params::split(line);
        let name = p.get(0);
        let cmd = match name {
            b"NOP" => Command::Nop,
            b"RDY" => {
                let count = if p.count > 1 {
                    parse_base10(p.get(1)).ok_or_else(|| {
                        err(
                            ErrorCode::Invalid,
                            format!("RDY could not parse count {}", lossy(p.get(1))),
                        )
                    })?
                } else {
                    1
                };
                Command::Rdy(count)
            }
            b"FIN" => {
                if p.count < 2 {
                    return Err(err(
                        ErrorCode::Invalid,
                        "FIN insufficient number of params".into(),
                    ));
                }
                Command::Fin(message_id(p.get(1))?)
            }
            b"REQ" => {
                if p.count < 3 {
                    return Err(err(
                        ErrorCode::Invalid,
                        "REQ insufficient number of params".into(),
                    ));
                }
                let id = message_id(p.get(1))?;
                let timeout_ms = parse_base10(p.get(2)).ok_or_else(|| {
                    err(
                        ErrorCode::Invalid,
                        format!("REQ could not parse timeout {}", lossy(p.get(2))),
                    )
                })?;
                Command::Req { id, timeout_ms }
            }
            b"TOUCH" => {
                if p.count < 2 {
                    return Err(err(
                        ErrorCode::Invalid,
                        "TOUCH insufficient number of params".into(),
                    ));
                }
                Command::Touch(message_id(p.get(1))?)
            }
            b"CLS" => Command::Cls,
            b"SUB" => {
                if p.count < 3 {
                    return Err(err(
                        ErrorCode::Invalid,
                        "SUB insufficient number of parameters".into(),
                    ));
                }
                let topic = TopicName::new(p.get(1)).ok_or_else(|| {
                    err(
                        ErrorCode::BadTopic,
                        format!("SUB topic name {} is not valid", go_quote(p.get(1))),
                    )
                })?;
                let channel = ChannelName::new(p.get(2)).ok_or_else(|| {
                    err(
                        ErrorCode::BadChannel,
                        format!("SUB channel name {} is not valid", go_quote(p.get(2))),
                    )
                })?;
                Command::Sub { topic, channel }
            }
            b"PUB" | b"MPUB" => {
                let verb = if name == b"PUB" { "PUB" } else { "MPUB" };
                if p.count < 2 {
                    return Err(err(
                        ErrorCode::Invalid,
                        format!("{verb} insufficient number of parameters"),
                    ));
                }
                let topic = TopicName::new(p.get(1)).ok_or_else(|| {
                    // Upstream's MPUB repeats the code inside the text.
                    let prefix = if verb == "MPUB" { "E_BAD_TOPIC " } else { "" };
                    err(
                        ErrorCode::BadTopic,
                        format!(
                            "{prefix}{verb} topic name {} is not valid",
                            go_quote(p.get(1))
                        ),
                    )
                })?;
                return Ok(Parsed::NeedsBody(if verb == "PUB" {
                    Head::Pub(topic)
                } else {
                    Head::Mpub(topic)
                }));
            }
            b"DPUB" => {
                if p.count < 3 {
                    return Err(err(
                        ErrorCode::Invalid,
                        "DPUB insufficient number of parameters".into(),
                    ));
                }
                let topic = TopicName::new(p.get(1)).ok_or_else(|| {
                    err(
                        ErrorCode::BadTopic,
                        format!("DPUB topic name {} is not valid", go_quote(p.get(1))),
                    )
                })?;
                let defer_ms = parse_base10(p.get(2)).ok_or_else(|| {
                    err(
                        ErrorCode::Invalid,
                        format!("DPUB could not parse timeout {}", lossy(p.get(2))),
                    )
                })?;
                if defer_ms > self.limits.max_req_timeout_ms {
                    return Err(err(
                        ErrorCode::Invalid,
                        format!(
                            "DPUB timeout {defer_ms} out of range 0-{}",
                            self.limits.max_req_timeout_ms
                        ),
                    ));
                }
                return Ok(Parsed::NeedsBody(Head::Dpub(topic, defer_ms)));
            }
            b"IDENTIFY" => return Ok(Parsed::NeedsBody(Head::Identify)),
            b"AUTH" => {
                if p.count != 1 {
                    return Err(err(
                        ErrorCode::Invalid,
                        "AUTH invalid number of parameters".into(),
                    ));
                }
                return Ok(Parsed::NeedsBody(Head::Auth));
            }
            _ => {
                return Err(err(
                    ErrorCode::Invalid,
                    format!("invalid command {}", lossy(name)),
                ))
            }
        };
        Ok(Parsed::Done(cmd))
    }

    /// Check a body size in upstream's order and wording for each command.
    fn check_size(&self, head: &Head, size: i32) -> Result<usize, DecodeError> {
        let n = head.name();
        let l = &self.limits;
        match head {
            Head::Pub(_) | Head::Dpub(..) => {
                if size <= 0 {
                    return Err(err(
                        ErrorCode::BadMessage,
                        format!("{n} invalid message body size {size}"),
                    ));
                }
                if size as u64 > l.max_msg_size {
                    return Err(err(
                        ErrorCode::BadMessage,
                        format!("{n} message too big {size} > {}", l.max_msg_size),
                    ));
                }
            }
            Head::Mpub(_) => {
                if size <= 0 {
                    return Err(err(
                        ErrorCode::BadBody,
                        format!("MPUB invalid body size {size}"),
                    ));
                }
                if size as u64 > l.max_body_size {
                    return Err(err(
                        ErrorCode::BadBody,
                        format!("MPUB body too big {size} > {}", l.max_body_size),
                    ));
                }
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

/// Scan as much of an MPUB body as has arrived: the messages are read by
/// their own lengths and must stay inside the declared body size (upstream
/// does not check, which lets a 9-byte MPUB carry megabytes). Returns true
/// when every message is in `buf`.
fn scan_mpub(l: &Limits, scan: &mut MpubScan, buf: &[u8]) -> Result<bool, DecodeError> {
    let count = match scan.count {
        Some(c) => c,
        None => {
            if buf.len() < 4 {
                return Ok(false);
            }
            let n = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
            // 4 bytes of count, then at least 5 bytes a message.
            let max = (l.max_body_size.saturating_sub(4)) / 5;
            if n <= 0 || n as u64 > max {
                return Err(err(
                    ErrorCode::BadBody,
                    format!("MPUB invalid message count {n}"),
                ));
            }
            scan.pos = 4;
            scan.count = Some(n as usize);
            // The count is a claim, not data: grow with the messages.
            scan.spans.reserve((n as usize).min(1024));
            n as usize
        }
    };
    // (The count itself is 4 bytes; a body shorter than that is caught by
    // the first message's overrun check.)
    while scan.spans.len() < count {
        let i = scan.spans.len();
        let at = scan.pos;
        if buf.len() < at + 4 {
            return Ok(false);
        }
        let size = i32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
        scan.in_body = true;
        if size <= 0 {
            return Err(err(
                ErrorCode::BadMessage,
                format!("MPUB invalid message({i}) body size {size}"),
            ));
        }
        if size as u64 > l.max_msg_size {
            return Err(err(
                ErrorCode::BadMessage,
                format!("MPUB message too big {size} > {}", l.max_msg_size),
            ));
        }
        let size = size as usize;
        if (at + 4).saturating_add(size) > scan.declared {
            return Err(err(
                ErrorCode::BadBody,
                format!("MPUB message({i}) overruns the body size {}", scan.declared),
            ));
        }
        if buf.len() < at + 4 + size {
            return Ok(false);
        }
        scan.spans.push((at + 4, size));
        scan.pos = at + 4 + size;
        scan.in_body = false;
    }
    Ok(true)
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

/// Copy the message bodies of an MPUB into one allocation, packed without
/// their length prefixes, and slice it: 200 messages cost one allocation and
/// exactly their own bytes.
fn pack_bodies(buf: &[u8], spans: &[(usize, usize)]) -> Vec<Bytes> {
    let total = spans.iter().map(|s| s.1).sum();
    let mut packed = BytesMut::with_capacity(total);
    for &(off, len) in spans {
        packed.extend_from_slice(&buf[off..off + len]);
    }
    let packed = packed.freeze();
    let mut at = 0;
    spans
        .iter()
        .map(|&(_, len)| {
            at += len;
            packed.slice(at - len..at)
        })
        .collect()
}

/// Parse a complete binary MPUB body, `[i32 n]([i32 len][bytes])×n`, as
/// nsqd's HTTP `/mpub?binary=true` receives it, with the TCP command's
/// checks and texts. The bodies share `body`'s memory.
pub fn parse_mpub_body(body: &Bytes, limits: &Limits) -> Result<Vec<Bytes>, ProtocolError> {
    // The HTTP body is already whole: what it lacks is reported as a
    // short read, in upstream's words, not as an overrun.
    let mut scan = MpubScan {
        declared: usize::MAX,
        ..MpubScan::default()
    };
    let complete = scan_mpub(limits, &mut scan, body).map_err(|e| match e {
        DecodeError::Protocol(p) | DecodeError::Params { error: p, .. } => p,
        DecodeError::LineTooLong => ProtocolError::new(ErrorCode::BadBody, "MPUB body too long"),
    })?;
    if !complete {
        return Err(match scan.count {
            None => ProtocolError::new(ErrorCode::BadBody, "MPUB failed to read message count"),
            Some(_) => {
                ProtocolError::new(ErrorCode::BadMessage, "MPUB failed to read message body")
            }
        });
    }
    Ok(scan
        .spans
        .iter()
        .map(|&(off, len)| body.slice(off..off + len))
        .collect())
}

enum Parsed {
    Done(Command),
    NeedsBody(Head),
}

#[cfg(test)]
mod tests;
