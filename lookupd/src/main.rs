//! The `nsqlookupd` binary: flags in, server up, run until SIGINT/SIGTERM.

use nsq_app::lifecycle;
use nsqlookupd::{Lookupd, Options};

#[tokio::main]
async fn main() {
    let opts: Options = nsq_app::parse_options("nsqlookupd", std::env::args_os(), &[]);
    let (_log, shutdown) = lifecycle::start(
        "nsqlookupd",
        opts.log_level,
        &opts.log_prefix,
        opts.log_format,
        opts.verbose,
    );
    let lookupd = Lookupd::new(opts)
        .await
        .unwrap_or_else(|e| lifecycle::exit_failed("nsqlookupd", e));
    lookupd.run_until(shutdown).await;
}
