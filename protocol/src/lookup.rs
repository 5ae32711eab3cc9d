//! nsqlookupd TCP protocol V1 (nsqd to nsqlookupd): the commands with their
//! encoder (for nsqd) and a streaming decoder (for nsqlookupd), the IDENTIFY
//! bodies in both directions, and the size-prefixed replies.
//!
//! After the magic `"  V1"` the client sends text lines `CMD[ SP arg]*\n`;
//! IDENTIFY follows its line with `[i32 size][JSON]`. Every reply, success or
//! error, is `[u32 size][data]` with no frame type, and every error closes the
//! connection.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ErrorCode, ProtocolError};
use crate::names::{ChannelName, TopicName};
use crate::MAX_LINE_LEN;

/// The reply to PING, REGISTER and UNREGISTER.
pub const OK: &[u8] = b"OK";
/// The whole reply to a wrong magic: upstream sends the bare code, no text.
pub const BAD_PROTOCOL: &[u8] = b"E_BAD_PROTOCOL";
/// Largest IDENTIFY body the decoder accepts. Upstream has no limit (and a
/// negative size crashes it); nsqd's body is about 200 bytes.
pub const MAX_IDENTIFY_BODY: usize = 1024 * 1024;
/// Go's `time.Time{}.UnixNano()`: what upstream's /debug shows as
/// `tombstoned_at` for a producer that was never tombstoned.
pub const GO_ZERO_TIME_UNIX_NANOS: i64 = -6_795_364_578_871_345_152;

/// A command nsqd sends to nsqlookupd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupCommand {
    /// Keeps the peer active; allowed before IDENTIFY.
    Ping,
    /// Raw JSON body; see [`PeerIdentity::parse`].
    Identify(Bytes),
    Register {
        topic: TopicName,
        channel: Option<ChannelName>,
    },
    Unregister {
        topic: TopicName,
        channel: Option<ChannelName>,
    },
}

impl LookupCommand {
    /// IDENTIFY carrying `identity` as its JSON body.
    pub fn identify(identity: &PeerIdentity) -> Self {
        LookupCommand::Identify(Bytes::from(identity.to_json()))
    }

    /// The command's name as on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            LookupCommand::Ping => "PING",
            LookupCommand::Identify(_) => "IDENTIFY",
            LookupCommand::Register { .. } => "REGISTER",
            LookupCommand::Unregister { .. } => "UNREGISTER",
        }
    }

    /// Append the command's wire form to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) {
        match self {
            LookupCommand::Ping => buf.put_slice(b"PING\n"),
            LookupCommand::Identify(body) => {
                buf.reserve(13 + body.len());
                buf.put_slice(b"IDENTIFY\n");
                buf.put_u32(body.len() as u32);
                buf.put_slice(body);
            }
            LookupCommand::Register { topic, channel }
            | LookupCommand::Unregister { topic, channel } => {
                buf.put_slice(self.name().as_bytes());
                buf.put_u8(b' ');
                buf.put_slice(topic.as_str().as_bytes());
                if let Some(channel) = channel {
                    buf.put_u8(b' ');
                    buf.put_slice(channel.as_str().as_bytes());
                }
                buf.put_u8(b'\n');
            }
        }
    }
}

/// Append one reply, `[u32 size][data]`.
pub fn encode_reply(buf: &mut impl BufMut, data: &[u8]) {
    buf.put_u32(data.len() as u32);
    buf.put_slice(data);
}

/// Append an error reply: the same framing, carrying `"<CODE> <text>"`.
pub fn encode_error(buf: &mut impl BufMut, err: &ProtocolError) {
    encode_reply(buf, &err.to_wire());
}

/// Why decoding stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupDecodeError {
    /// Send this error reply, then close: every V1 error is fatal.
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
    /// A line longer than [`MAX_LINE_LEN`]. Upstream buffers lines without a
    /// bound; we close without a reply rather than grow without one.
    #[error("command line longer than {MAX_LINE_LEN} bytes")]
    LineTooLong,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Line,
    Size,
    Body(usize),
}

/// Streaming decoder for the server side: feed it the connection's read
/// buffer, take commands out.
///
/// It tracks whether IDENTIFY succeeded because upstream's answers depend on
/// it before anything else is checked: a second IDENTIFY is refused before its
/// body is read, and REGISTER/UNREGISTER before IDENTIFY are refused before
/// their names are validated. The server calls [`Self::set_identified`] once
/// it has accepted an IDENTIFY body.
#[derive(Debug, Clone)]
pub struct LookupDecoder {
    state: State,
    identified: bool,
}

impl Default for LookupDecoder {
    fn default() -> Self {
        Self::new()
    }
}

fn invalid(text: String) -> LookupDecodeError {
    ProtocolError::new(ErrorCode::Invalid, text).into()
}

impl LookupDecoder {
    pub fn new() -> Self {
        LookupDecoder {
            state: State::Line,
            identified: false,
        }
    }

    /// Record that the connection's IDENTIFY was accepted.
    pub fn set_identified(&mut self) {
        self.identified = true;
    }

    pub fn is_identified(&self) -> bool {
        self.identified
    }

    /// True when no command is partly read.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Line)
    }

    /// Take the next whole command off the front of `buf`. `Ok(None)` means
    /// more bytes are needed; the decoder remembers where it was.
    pub fn decode(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<LookupCommand>, LookupDecodeError> {
        loop {
            match self.state {
                State::Line => {
                    let next = crate::command::next_line(buf);
                    let Some(line) = next.map_err(|_| LookupDecodeError::LineTooLong)? else {
                        return Ok(None);
                    };
                    match self.parse_line(&line)? {
                        Some(cmd) => return Ok(Some(cmd)),
                        None => self.state = State::Size,
                    }
                }
                State::Size => {
                    if buf.len() < 4 {
                        return Ok(None);
                    }
                    let size = buf.get_i32();
                    if size < 0 {
                        return Err(ProtocolError::new(
                            ErrorCode::BadBody,
                            format!("IDENTIFY invalid body size {size}"),
                        )
                        .into());
                    }
                    if size as usize > MAX_IDENTIFY_BODY {
                        return Err(ProtocolError::new(
                            ErrorCode::BadBody,
                            format!("IDENTIFY body too big {size} > {MAX_IDENTIFY_BODY}"),
                        )
                        .into());
                    }
                    self.state = State::Body(size as usize);
                }
                State::Body(size) => {
                    if buf.len() < size {
                        // The declared size is only a claim: room grows with what arrives.
                        crate::command::reserve_as_it_arrives(buf, size);
                        return Ok(None);
                    }
                    self.state = State::Line;
                    return Ok(Some(LookupCommand::Identify(buf.split_to(size).freeze())));
                }
            }
        }
    }

    /// The error upstream sends when the connection ends inside an IDENTIFY
    /// (it tries to answer even though the peer stopped writing).
    pub fn eof_error(&self) -> Option<ProtocolError> {
        let text = match self.state {
            State::Line => return None,
            State::Size => "IDENTIFY failed to read body size",
            State::Body(_) => "IDENTIFY failed to read body",
        };
        Some(ProtocolError::new(ErrorCode::BadBody, text))
    }

    /// `Ok(None)` means IDENTIFY, whose body comes next.
    fn parse_line(&self, line: &[u8]) -> Result<Option<LookupCommand>, LookupDecodeError> {
        // Upstream trims the whole line (newline included) with Go's
        // TrimSpace, then splits on single spaces: `A  B` has an empty param.
        let line = trim_go_space(line);
        let mut params = line.split(|&b| b == b' ');
        let name = params.next().unwrap_or_default();
        match name {
            b"PING" => Ok(Some(LookupCommand::Ping)),
            b"IDENTIFY" => {
                if self.identified {
                    return Err(invalid("cannot IDENTIFY again".into()));
                }
                Ok(None)
            }
            b"REGISTER" | b"UNREGISTER" => {
                let register = name == b"REGISTER";
                let verb = if register { "REGISTER" } else { "UNREGISTER" };
                if !self.identified {
                    return Err(invalid("client must IDENTIFY".into()));
                }
                let Some(raw_topic) = params.next() else {
                    return Err(invalid(format!("{verb} insufficient number of params")));
                };
                let raw_channel = params.next().unwrap_or_default();
                let topic = TopicName::new(raw_topic).ok_or_else(|| {
                    ProtocolError::new(
                        ErrorCode::BadTopic,
                        format!("{verb} topic name '{}' is not valid", lossy(raw_topic)),
                    )
                })?;
                // An empty channel (`REGISTER t  c` has one) means "no channel".
                let channel = if raw_channel.is_empty() {
                    None
                } else {
                    Some(ChannelName::new(raw_channel).ok_or_else(|| {
                        ProtocolError::new(
                            ErrorCode::BadChannel,
                            format!("{verb} channel name '{}' is not valid", lossy(raw_channel)),
                        )
                    })?)
                };
                Ok(Some(if register {
                    LookupCommand::Register { topic, channel }
                } else {
                    LookupCommand::Unregister { topic, channel }
                }))
            }
            _ => Err(invalid(format!("invalid command {}", lossy(name)))),
        }
    }
}

fn lossy(b: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(b)
}

/// Length of the UTF-8 sequence a lead byte starts (1 for anything invalid,
/// so that invalid bytes are stepped over one at a time, as Go does).
fn utf8_len(lead: u8) -> usize {
    match lead {
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => 1,
    }
}

fn is_space_char(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.chars().next())
        .is_some_and(char::is_whitespace)
}

/// Go's `strings.TrimSpace` on bytes: strips Unicode white space (which
/// `char::is_whitespace` defines identically) from both ends, leaving
/// invalid UTF-8 in place.
pub fn trim_go_space(mut s: &[u8]) -> &[u8] {
    while let Some(&lead) = s.first() {
        let n = utf8_len(lead).min(s.len());
        if !is_space_char(&s[..n]) {
            break;
        }
        s = &s[n..];
    }
    while !s.is_empty() {
        // Step back over up to three continuation bytes to the char's start.
        let mut start = s.len() - 1;
        while start > 0 && s.len() - start < 4 && s[start] & 0xc0 == 0x80 {
            start -= 1;
        }
        if !is_space_char(&s[start..]) {
            break;
        }
        s = &s[..start];
    }
    s
}

/// The IDENTIFY body nsqd sends: who it is and where it can be reached.
/// Field order is upstream's wire order (a Go map, so keys sorted).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerIdentity {
    pub broadcast_address: String,
    pub hostname: String,
    pub http_port: i64,
    pub tcp_port: i64,
    /// nsqd 1.3.0 sends these; nsqlookupd 1.3.0 ignores them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_zone: Option<String>,
    pub version: String,
}

fn bad_body(text: &str) -> ProtocolError {
    ProtocolError::new(ErrorCode::BadBody, text)
}

impl PeerIdentity {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decode an IDENTIFY body as upstream's Go JSON decoding does, then
    /// require the fields upstream requires.
    ///
    /// Go semantics kept: unknown keys are ignored; keys match field names
    /// case-insensitively when no exact match exists; `null` (whole body or
    /// one field) leaves the zero value; a value of the wrong type (a float
    /// or a string for a port) is a decode error; invalid UTF-8 inside
    /// strings becomes U+FFFD instead of failing.
    pub fn parse(body: &[u8]) -> Result<Self, ProtocolError> {
        const DECODE: &str = "IDENTIFY failed to decode JSON body";
        let value: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(_) if std::str::from_utf8(body).is_err() => {
                serde_json::from_str(&String::from_utf8_lossy(body))
                    .map_err(|_| bad_body(DECODE))?
            }
            Err(_) => return Err(bad_body(DECODE)),
        };
        let mut id = PeerIdentity::default();
        match value {
            Value::Null => {}
            Value::Object(map) => {
                // Fields of upstream's PeerInfo that JSON can set
                // (`remote_address` is overwritten afterwards but still
                // type-checked) plus nsqd's topology fields.
                const FIELDS: [&str; 8] = [
                    "remote_address",
                    "hostname",
                    "broadcast_address",
                    "tcp_port",
                    "http_port",
                    "version",
                    "topology_zone",
                    "topology_region",
                ];
                for (key, v) in &map {
                    let field = FIELDS
                        .iter()
                        .find(|f| **f == key.as_str())
                        .or_else(|| FIELDS.iter().find(|f| f.eq_ignore_ascii_case(key)));
                    let Some(&field) = field else { continue };
                    // An exact key wins over a case-insensitive one.
                    if field != key.as_str() && map.contains_key(field) {
                        continue;
                    }
                    if v.is_null() {
                        continue;
                    }
                    match field {
                        "tcp_port" | "http_port" => {
                            // Go's int takes integer literals only.
                            let n = v.as_i64().ok_or_else(|| bad_body(DECODE))?;
                            if field == "tcp_port" {
                                id.tcp_port = n;
                            } else {
                                id.http_port = n;
                            }
                        }
                        _ => {
                            let s = v.as_str().ok_or_else(|| bad_body(DECODE))?.to_owned();
                            match field {
                                "hostname" => id.hostname = s,
                                "broadcast_address" => id.broadcast_address = s,
                                "version" => id.version = s,
                                "topology_zone" => id.topology_zone = Some(s),
                                "topology_region" => id.topology_region = Some(s),
                                _ => {}
                            }
                        }
                    }
                }
            }
            _ => return Err(bad_body(DECODE)),
        }
        if id.broadcast_address.is_empty()
            || id.tcp_port == 0
            || id.http_port == 0
            || id.version.is_empty()
        {
            return Err(bad_body("IDENTIFY missing fields"));
        }
        Ok(id)
    }
}

/// nsqlookupd's reply to IDENTIFY. nsqd uses `broadcast_address:http_port`
/// as this lookupd's HTTP address. Field order is the wire order (sorted,
/// from a Go map); the ports are the ones lookupd actually listens on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LookupdInfo {
    pub broadcast_address: String,
    pub hostname: String,
    pub http_port: i64,
    pub tcp_port: i64,
    pub version: String,
}

impl LookupdInfo {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Lenient, like nsqd's decoding: missing keys are zero, unknown ignored.
    pub fn parse(data: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(data)
    }
}

/// One reply as nsqd reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupReply {
    /// `OK`.
    Ok,
    /// `E_CODE[ text]`; lookupd closes the connection after sending it.
    Error { code: String, text: String },
    /// Anything else: the IDENTIFY reply's JSON.
    Data(Bytes),
}

impl LookupReply {
    pub fn classify(data: Bytes) -> Self {
        if data.as_ref() == OK {
            return LookupReply::Ok;
        }
        let code_end = data.iter().position(|&b| b == b' ').unwrap_or(data.len());
        let code = &data[..code_end];
        if code.len() > 2
            && code.starts_with(b"E_")
            && code.iter().all(|&b| b.is_ascii_uppercase() || b == b'_')
        {
            let text = data.get(code_end + 1..).unwrap_or_default();
            return LookupReply::Error {
                code: lossy(code).into_owned(),
                text: lossy(text).into_owned(),
            };
        }
        LookupReply::Data(data)
    }
}

/// A reply larger than the reader allows (nsqd bounds it by its
/// `--max-body-size`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("lookupd reply of {size} bytes exceeds the limit of {limit}")]
pub struct ReplyTooBig {
    pub size: u64,
    pub limit: u64,
}

/// Client-side reader of `[u32 size][data]` replies.
#[derive(Debug, Clone, Copy)]
pub struct ReplyDecoder {
    max_size: u64,
}

impl ReplyDecoder {
    pub fn new(max_size: u64) -> Self {
        ReplyDecoder { max_size }
    }

    /// Take one whole reply off the front of `buf`; `Ok(None)` means more
    /// bytes are needed. The size is checked before anything is reserved.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Bytes>, ReplyTooBig> {
        if buf.len() < 4 {
            return Ok(None);
        }
        let size = u64::from(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
        if size > self.max_size {
            return Err(ReplyTooBig {
                size,
                limit: self.max_size,
            });
        }
        let total = 4 + size as usize;
        if buf.len() < total {
            crate::command::reserve_as_it_arrives(buf, total);
            return Ok(None);
        }
        buf.advance(4);
        Ok(Some(buf.split_to(size as usize).freeze()))
    }
}

#[cfg(test)]
mod tests;
