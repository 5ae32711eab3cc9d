//! The `nsqadmin` binary: flags in, server up, run until SIGINT/SIGTERM.

use nsqadmin::options::CONFIG_KEYS;
use nsqadmin::{NsqAdmin, Options};

#[tokio::main]
async fn main() {
    let opts: Options = nsq_app::parse_options("nsqadmin", std::env::args_os(), CONFIG_KEYS);
    let log = nsq_app::logging::init_with_format(opts.log_level, &opts.log_prefix, opts.log_format);
    nsq_app::net::raise_open_file_limit();
    tracing::info!("{}", nsq_app::flags::version_string("nsqadmin"));
    if opts.verbose {
        tracing::warn!("--verbose is deprecated and has no effect; use --log-level=debug");
    }
    // Handlers first: a SIGTERM must never find the listener up without them.
    let shutdown = nsq_app::signal::shutdown_signal();
    let admin = match NsqAdmin::new(opts).await {
        Ok(a) => a,
        Err(e) => {
            // Upstream logs the failure and exits 1.
            tracing::error!("failed to instantiate nsqadmin - {e}");
            std::process::exit(1);
        }
    };
    // So `PUT /config/log_level` changes what is logged.
    admin.set_log_handle(log);
    admin.run_until(shutdown).await;
}
