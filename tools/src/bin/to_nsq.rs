//! `to_nsq`: publish stdin, one message per delimited record, to a topic on every given nsqd (see `nsq_tools::to_nsq`).

use nsq_tools::{self as tools, to_nsq};

#[tokio::main]
async fn main() {
    let opts = tools::start("to_nsq");
    let stdin = tokio::io::BufReader::with_capacity(64 * 1024, tokio::io::stdin());
    // Upstream stops at SIGINT/SIGTERM too; records already acknowledged stay published.
    let result = tokio::select! {
        r = to_nsq::run(&opts, stdin) => r,
        () = tools::shutdown_signal() => Ok(0),
    };
    tools::exit_on_error("to_nsq", result);
}
