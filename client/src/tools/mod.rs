//! The command-line tools built on this library (`to_nsq`, `nsq_tail`, `nsq_stat`, `nsq_to_file`, `nsq-job`): their options and run loops, kept out of `src/bin` so they can be tested.
//!
//! Flag names, defaults and output formats follow upstream NSQ 1.3.0's
//! `apps/`, so scripts written for those tools keep working.

pub mod file_logger;
pub mod nsq_job;
pub mod nsq_stat;
pub mod nsq_tail;
pub mod nsq_to_file;
pub mod to_nsq;

/// Why a tool stopped with a failure (exit status 1).
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// A flag combination upstream also refuses (`--topic required`, ...).
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Nsq(#[from] crate::Error),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = ToolError> = std::result::Result<T, E>;

/// Resolves on SIGINT or SIGTERM, the signals upstream's tools stop on.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        // Without a SIGTERM handler Ctrl-C still works.
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Logs to stderr at `info` unless `RUST_LOG` says otherwise, as upstream's
/// tools log with the standard logger.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // No colour codes in log files and pipes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
