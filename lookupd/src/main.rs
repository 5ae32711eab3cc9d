//! The `nsqlookupd` binary: flags in, server up, run until SIGINT/SIGTERM.

use nsqlookupd::{Lookupd, Options};

#[tokio::main]
async fn main() {
    let opts: Options = nsq_app::parse_options("nsqlookupd", std::env::args_os(), &[]);
    let _log =
        nsq_app::logging::init_with_format(opts.log_level, &opts.log_prefix, opts.log_format);
    nsq_app::net::raise_open_file_limit();
    tracing::info!("{}", nsq_app::flags::version_string("nsqlookupd"));
    if opts.verbose {
        tracing::warn!("--verbose is deprecated and has no effect; use --log-level=debug");
    }
    // Handlers first: a SIGTERM must never find the listeners up without them.
    let shutdown = nsq_app::signal::shutdown_signal();
    let lookupd = match Lookupd::new(opts).await {
        Ok(l) => l,
        Err(e) => {
            // Upstream logs the failure and exits 1 when it cannot listen.
            tracing::error!("failed to instantiate nsqlookupd - {e}");
            std::process::exit(1);
        }
    };
    lookupd.run_until(shutdown).await;
}
