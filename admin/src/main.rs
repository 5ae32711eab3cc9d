//! The `nsqadmin` binary: flags in, server up, run until SIGINT/SIGTERM.

use nsq_app::lifecycle;
use nsqadmin::options::CONFIG_KEYS;
use nsqadmin::{NsqAdmin, Options};

#[tokio::main]
async fn main() {
    let opts: Options = nsq_app::parse_options("nsqadmin", std::env::args_os(), CONFIG_KEYS);
    let (log, shutdown) = lifecycle::start(
        "nsqadmin",
        opts.log_level,
        &opts.log_prefix,
        opts.log_format,
        opts.verbose,
    );
    let admin = NsqAdmin::new(opts)
        .await
        .unwrap_or_else(|e| lifecycle::exit_failed("nsqadmin", e));
    // So `PUT /config/log_level` changes what is logged.
    admin.set_log_handle(log);
    admin.run_until(shutdown).await;
}
