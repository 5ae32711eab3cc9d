//! The one error type of the client library, and its `Result` alias.

use std::io;

use nsq_protocol::frame::FrameError;

/// Everything the producer, the consumer and discovery can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// The peer does not speak NSQ V2; `FrameError::UnexpectedHttp` when it is
    /// an HTTP port (its reply's first four bytes read as the size "HTTP").
    #[error("bad frame from nsqd: {0}")]
    Frame(#[from] FrameError),
    /// nsqd answered with an error frame, e.g. `E_BAD_TOPIC ...`.
    #[error("nsqd answered {command} with {text}")]
    Server { command: &'static str, text: String },
    #[error("unexpected reply to {command}: {reply}")]
    Unexpected {
        command: &'static str,
        reply: String,
    },
    #[error("{0:?} is not a valid topic name")]
    BadTopic(String),
    #[error("{0:?} is not a valid channel name")]
    BadChannel(String),
    #[error("the connection to nsqd is closed")]
    Closed,
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// nsqd runs with `--auth-http-address` and no `auth_secret` is set.
    #[error("nsqd requires AUTH; set auth_secret")]
    AuthRequired,
    /// A TLS file could not be used, or the settings do not fit together.
    #[error("TLS setting {path:?}: {reason}")]
    TlsFile {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// We asked for TLS and nsqd (run without `--tls-cert`) did not grant it.
    #[error("nsqd at {0} does not offer TLS")]
    TlsRefused(String),
    /// go-nsq refuses a second connection to the same nsqd, and so do we:
    /// two subscriptions from one consumer would double its RDY there.
    #[error("already connected to {0}")]
    AlreadyConnected(String),
    #[error("the consumer has no handler; call add_handler before connecting")]
    NoHandler,
    #[error("stopped")]
    Stopped,
    #[error("lookupd {addr}: {reason}")]
    Lookupd { addr: String, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
