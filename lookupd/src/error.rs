//! Why an nsqlookupd could not start.

use std::io;

/// Startup failures; once running, per-connection problems are logged, not
/// returned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listen ({addr}) failed - {source}")]
    Listen {
        addr: String,
        #[source]
        source: io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
