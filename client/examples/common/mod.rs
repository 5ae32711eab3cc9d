//! What the examples share: logging to stderr and positional arguments with
//! defaults.

/// Log to stderr at info (connections, discovery, stop); RUST_LOG overrides.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
}

/// The positional arguments, each missing one replaced by its default.
pub fn args<const N: usize>(defaults: [&str; N]) -> [String; N] {
    let mut given = std::env::args().skip(1);
    defaults.map(|d| given.next().unwrap_or_else(|| d.to_owned()))
}
