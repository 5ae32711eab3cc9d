//! Why decoding stopped, and the size check every body length goes
//! through, in upstream's words.

use crate::error::{ErrorCode, ProtocolError};
use crate::MAX_LINE_LEN;

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

pub(super) fn err(code: ErrorCode, text: String) -> DecodeError {
    DecodeError::Protocol(ProtocolError::new(code, text))
}

/// A size that must be positive and at most `max`, checked in upstream's
/// order and words: `{invalid} {size}`, then `{big} too big {size} > {max}`
/// (a message's `big` is its verb's: "PUB message", "MPUB message").
pub(super) fn positive_within(
    size: i32,
    max: u64,
    code: ErrorCode,
    invalid: impl std::fmt::Display,
    big: &str,
) -> Result<usize, DecodeError> {
    if size <= 0 {
        return Err(err(code, format!("{invalid} {size}")));
    }
    if size as u64 > max {
        return Err(err(code, format!("{big} too big {size} > {max}")));
    }
    Ok(size as usize)
}
