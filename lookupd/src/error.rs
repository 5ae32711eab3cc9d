//! Why an nsqlookupd could not start.

/// Startup failures; once running, per-connection problems are logged, not
/// returned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Listen(#[from] nsq_app::net::ListenError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
