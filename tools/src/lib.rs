//! The command-line tools built on the `nsq` client (`to_nsq`, `nsq_tail`,
//! `nsq_stat`, `nsq_to_file`, `nsq-job`) and the bench tools: their options
//! and run loops, kept out of `src/bin` so they can be tested, and out of
//! the `nsq` crate so a library user does not build clap and the tools'
//! other dependencies.
//!
//! Flag names, defaults and output formats follow upstream NSQ 1.3.0's
//! `apps/`, so scripts written for those tools keep working.

pub mod bench;
pub mod file_logger;
pub mod nsq_job;
pub mod nsq_stat;
pub mod nsq_tail;
pub mod nsq_to_file;
pub mod nsq_to_http;
pub mod nsq_to_nsq;
pub mod source;
pub mod targets;
pub mod to_nsq;

/// Why a tool stopped with a failure (exit status 1).
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// A flag combination upstream also refuses (`--topic required`, ...).
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Nsq(#[from] nsq::Error),
    #[error("{0}")]
    Option(#[from] nsq::OptionError),
    #[error("{0}")]
    Mode(#[from] targets::BadMode),
    #[error("{0}")]
    FilenameFormat(#[from] file_logger::MissingRev),
    #[error("{0}")]
    Http(#[from] nsq_app::http_client::HttpError),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = ToolError> = std::result::Result<T, E>;

/// Applies upstream's `--consumer-opt` / `--producer-opt` values: each is
/// `option,value` (go-nsq's option names), or a lone `option` meaning true.
pub fn apply_opts(config: &mut nsq::Config, opts: &[String]) -> Result<()> {
    for opt in opts {
        let mut parts = opt.split(',');
        let key = parts.next().unwrap_or_default();
        let value = parts.next().unwrap_or("true");
        if parts.next().is_some() {
            return Err(ToolError::Config(format!(
                "{opt}: cannot have more than 2 parameters"
            )));
        }
        config.set(key, value)?;
    }
    Ok(())
}

/// A tool's start: its flags (upstream's syntax, see
/// [`nsq_app::flags::parse_options`]), then logging to stderr.
pub fn start<O: clap::Parser>(tool: &str) -> O {
    let opts = nsq_app::flags::parse_options(tool, std::env::args_os(), &[]);
    init_logging();
    opts
}

/// A tool's end: the value of a run that worked, or, for one that failed,
/// `[tool] error` on stderr and exit status 1.
pub fn exit_on_error<T, E: std::fmt::Display>(tool: &str, result: Result<T, E>) -> T {
    result.unwrap_or_else(|e| {
        eprintln!("[{tool}] {e}");
        std::process::exit(1)
    })
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opts_are_option_comma_value() {
        let mut c = nsq::Config::default();
        apply_opts(&mut c, &["max_attempts,7".into(), "client_id,a".into()]).unwrap();
        assert_eq!((c.max_attempts, c.client_id.as_str()), (7, "a"));
        let err = |o: &str| {
            apply_opts(&mut nsq::Config::default(), &[o.to_owned()])
                .unwrap_err()
                .to_string()
        };
        assert_eq!(err("a,b,c"), "a,b,c: cannot have more than 2 parameters");
        // A lone option is `true`, which a number option refuses.
        assert!(err("max_attempts").starts_with("failed to coerce option max_attempts"));
        assert_eq!(err("max_attempts=3"), "invalid option max_attempts=3");
    }
}
