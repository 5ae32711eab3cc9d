//! Protocol errors as they go on the wire: a code, a text, and whether the
//! server closes the connection after sending it.

use std::fmt;

/// Upstream's error codes (`internal/protocol/errors.go` and the handlers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    Invalid,
    BadBody,
    BadTopic,
    BadChannel,
    BadMessage,
    PubFailed,
    MpubFailed,
    DpubFailed,
    FinFailed,
    ReqFailed,
    TouchFailed,
    SubFailed,
    IdentifyFailed,
    AuthFirst,
    AuthFailed,
    Unauthorized,
    AuthDisabled,
    AuthError,
    BadProtocol,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Invalid => "E_INVALID",
            ErrorCode::BadBody => "E_BAD_BODY",
            ErrorCode::BadTopic => "E_BAD_TOPIC",
            ErrorCode::BadChannel => "E_BAD_CHANNEL",
            ErrorCode::BadMessage => "E_BAD_MESSAGE",
            ErrorCode::PubFailed => "E_PUB_FAILED",
            ErrorCode::MpubFailed => "E_MPUB_FAILED",
            ErrorCode::DpubFailed => "E_DPUB_FAILED",
            ErrorCode::FinFailed => "E_FIN_FAILED",
            ErrorCode::ReqFailed => "E_REQ_FAILED",
            ErrorCode::TouchFailed => "E_TOUCH_FAILED",
            ErrorCode::SubFailed => "E_SUB_FAILED",
            ErrorCode::IdentifyFailed => "E_IDENTIFY_FAILED",
            ErrorCode::AuthFirst => "E_AUTH_FIRST",
            ErrorCode::AuthFailed => "E_AUTH_FAILED",
            ErrorCode::Unauthorized => "E_UNAUTHORIZED",
            ErrorCode::AuthDisabled => "E_AUTH_DISABLED",
            ErrorCode::AuthError => "E_AUTH_ERROR",
            ErrorCode::BadProtocol => "E_BAD_PROTOCOL",
        }
    }

    /// Upstream closes the connection after every error except the three that
    /// concern one message a consumer answered late or twice.
    pub fn is_fatal(self) -> bool {
        !matches!(
            self,
            ErrorCode::FinFailed | ErrorCode::ReqFailed | ErrorCode::TouchFailed
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error frame: `"<CODE> <text>"` on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} {text}")]
pub struct ProtocolError {
    pub code: ErrorCode,
    pub text: String,
}

impl ProtocolError {
    pub fn new(code: ErrorCode, text: impl Into<String>) -> Self {
        ProtocolError {
            code,
            text: text.into(),
        }
    }

    pub fn invalid(text: impl Into<String>) -> Self {
        Self::new(ErrorCode::Invalid, text)
    }

    /// Whether the server closes the connection after sending this error.
    pub fn is_fatal(&self) -> bool {
        self.code.is_fatal()
    }

    /// The error frame's data, `"<CODE> <text>"`.
    pub fn to_wire(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_text_and_fatality() {
        let e = ProtocolError::new(
            ErrorCode::FinFailed,
            "FIN 0123456789abcdef failed ID not in flight",
        );
        assert_eq!(
            e.to_wire(),
            b"E_FIN_FAILED FIN 0123456789abcdef failed ID not in flight".to_vec()
        );
        assert!(!e.is_fatal());
        assert!(ProtocolError::invalid("x").is_fatal());
        assert!(!ErrorCode::ReqFailed.is_fatal());
        assert!(!ErrorCode::TouchFailed.is_fatal());
        assert!(ErrorCode::BadTopic.is_fatal());
    }
}
