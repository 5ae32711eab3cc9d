//! Client-to-server commands of protocol V2: one enum, its encoder (for
//! clients) and a streaming decoder (for nsqd).
//!
//! A command is a line `NAME[ SP param]*\n`, and PUB, DPUB, MPUB, IDENTIFY and
//! AUTH follow it with `[i32 size][body]`. The decoder validates what the line
//! says (names, numbers) before it waits for a body, and checks every size
//! before it reserves memory for it, so a hostile size cannot make it allocate.
//! The decoder lives in `decode.rs`, the line parser in `line.rs`, MPUB
//! bodies in `mpub.rs`.

use bytes::{BufMut, Bytes, BytesMut};

use crate::message::MessageId;
use crate::names::{ChannelName, TopicName};

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
        /// `Vec<Bytes>::into()` for a client; packed when decoded.
        bodies: Bodies,
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
                bodies.encode(buf);
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

mod decode;
mod error;
mod limits;
mod line;
mod mpub;

pub use decode::CommandDecoder;
pub(crate) use decode::{next_line, reserve_as_it_arrives};
pub use error::DecodeError;
pub use limits::Limits;
pub use line::parse_base10;
pub use mpub::{parse_mpub_body, Bodies};
#[cfg(test)]
use {crate::MAX_LINE_LEN, decode::State};

#[cfg(test)]
mod tests;
