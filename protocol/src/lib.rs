//! NSQ wire types shared by nsqd, nsqlookupd and the client: names, frames,
//! commands, the message layout, IDENTIFY bodies and error codes.
//!
//! Everything here is pure: no sockets, no runtime. Each type knows how to
//! encode itself and how to parse itself, so the servers and the client speak
//! exactly the same bytes.

pub mod command;
pub mod error;
pub mod frame;
pub mod identify;
pub mod job;
pub mod lookup;
pub mod message;
pub mod names;
pub mod quote;

pub use command::{parse_mpub_body, Bodies, Command, CommandDecoder, DecodeError, Limits};
pub use error::{ErrorCode, ProtocolError};
pub use frame::{Frame, FrameDecoder, FrameType};
pub use identify::{IdentifyRequest, IdentifyResponse};
pub use message::{MessageId, MESSAGE_HEADER_LEN};
pub use names::{ChannelName, TopicName};

/// The four bytes a client sends first on an nsqd TCP connection.
pub const MAGIC_V2: &[u8; 4] = b"  V2";
/// The four bytes nsqd sends first on a nsqlookupd TCP connection.
pub const MAGIC_V1: &[u8; 4] = b"  V1";
/// The version nsqd and nsqlookupd report, matching the upstream release we track.
pub const VERSION: &str = "1.3.0";
/// Upstream reads command lines through a 16 KiB buffer; a longer line ends the
/// connection without an error frame.
pub const MAX_LINE_LEN: usize = 16 * 1024;
/// The response that acknowledges a command.
pub const OK: &[u8] = b"OK";
/// The response to CLS.
pub const CLOSE_WAIT: &[u8] = b"CLOSE_WAIT";
/// The response frame nsqd sends every heartbeat interval.
pub const HEARTBEAT: &[u8] = b"_heartbeat_";
