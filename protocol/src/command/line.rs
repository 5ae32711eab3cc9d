//! One command line, `NAME[ SP param]*`: which command it is, its
//! parameters validated, or which body it waits for.

use super::error::{err, DecodeError};
use super::limits::Limits;
use super::Command;
use crate::error::ErrorCode;
use crate::message::MessageId;
use crate::names::{ChannelName, TopicName};
use crate::quote::go_quote;

fn lossy(b: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(b)
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

    /// At least `n` parts (the verb counts), or `E_INVALID` with `text`.
    fn require(&self, n: usize, text: &str) -> Result<(), DecodeError> {
        if self.count < n {
            return Err(err(ErrorCode::Invalid, text.to_owned()));
        }
        Ok(())
    }
}

/// A topic parameter; `E_BAD_TOPIC` in upstream's words for `verb`.
fn topic(raw: &[u8], verb: &str) -> Result<TopicName, DecodeError> {
    TopicName::new(raw).ok_or_else(|| {
        let text = format!("{verb} topic name {} is not valid", go_quote(raw));
        err(ErrorCode::BadTopic, text)
    })
}

pub(super) fn parse_line(limits: &Limits, line: &[u8]) -> Result<Parsed, DecodeError> {
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
            p.require(2, "FIN insufficient number of params")?;
            Command::Fin(message_id(p.get(1))?)
        }
        b"REQ" => {
            p.require(3, "REQ insufficient number of params")?;
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
            p.require(2, "TOUCH insufficient number of params")?;
            Command::Touch(message_id(p.get(1))?)
        }
        b"CLS" => Command::Cls,
        b"SUB" => {
            p.require(3, "SUB insufficient number of parameters")?;
            let topic = topic(p.get(1), "SUB")?;
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
            p.require(2, &format!("{verb} insufficient number of parameters"))?;
            // Upstream's MPUB repeats the code inside the text.
            let topic = topic(
                p.get(1),
                if verb == "MPUB" {
                    "E_BAD_TOPIC MPUB"
                } else {
                    verb
                },
            )?;
            return Ok(Parsed::NeedsBody(if verb == "PUB" {
                Head::Pub(topic)
            } else {
                Head::Mpub(topic)
            }));
        }
        b"DPUB" => {
            p.require(3, "DPUB insufficient number of parameters")?;
            let topic = topic(p.get(1), "DPUB")?;
            let defer_ms = parse_base10(p.get(2)).ok_or_else(|| {
                err(
                    ErrorCode::Invalid,
                    format!("DPUB could not parse timeout {}", lossy(p.get(2))),
                )
            })?;
            if defer_ms > limits.max_req_timeout_ms {
                return Err(err(
                    ErrorCode::Invalid,
                    format!(
                        "DPUB timeout {defer_ms} out of range 0-{}",
                        limits.max_req_timeout_ms
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

/// A command whose line has been read and which waits for its body.
#[derive(Debug, Clone)]
pub(super) enum Head {
    Identify,
    Auth,
    Pub(TopicName),
    Dpub(TopicName, u64),
    Mpub(TopicName),
}

impl Head {
    pub(super) fn name(&self) -> &'static str {
        match self {
            Head::Identify => "IDENTIFY",
            Head::Auth => "AUTH",
            Head::Pub(_) => "PUB",
            Head::Dpub(..) => "DPUB",
            Head::Mpub(_) => "MPUB",
        }
    }
}

pub(super) enum Parsed {
    Done(Command),
    NeedsBody(Head),
}
