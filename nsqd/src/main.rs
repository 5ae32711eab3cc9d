//! The `nsqd` binary: flags in, server up, run until SIGINT or SIGTERM.

use nsqd::options::CONFIG_KEYS;
use nsqd::{Options, Server};

#[tokio::main]
async fn main() {
    let opts: Options = nsq_app::flags::parse_options("nsqd", std::env::args_os(), CONFIG_KEYS);
    let log = nsq_app::logging::init_with_format(opts.log_level, &opts.log_prefix, opts.log_format);
    nsq_app::net::raise_open_file_limit();
    // Handlers first: a SIGTERM must never find the listeners up without them.
    let shutdown = nsq_app::signal::shutdown_signal();
    let server = match Server::bind(opts).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("nsqd: {e}");
            std::process::exit(1);
        }
    };
    // So `PUT /config/log_level` changes what is logged.
    server.set_log_handle(log);
    if let Err(e) = server.run(shutdown).await {
        tracing::error!("{e}");
        std::process::exit(1);
    }
}
