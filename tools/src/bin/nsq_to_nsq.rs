//! `nsq_to_nsq`: copy the messages of topics to other nsqds (see `nsq_tools::nsq_to_nsq`).

use nsq_tools::{self as tools, nsq_to_nsq};

#[tokio::main]
async fn main() {
    let opts = tools::start("nsq_to_nsq");
    let result = nsq_to_nsq::run(opts, tools::shutdown_signal()).await;
    tools::exit_on_error("nsq_to_nsq", result);
}
