//! `nsq_to_file`: write the messages of topics to rotating files, one per line (see `nsq_tools::nsq_to_file`).

use nsq_tools::{self as tools, nsq_to_file};

#[tokio::main]
async fn main() {
    let opts = tools::start("nsq_to_file");
    let result = nsq_to_file::run(opts, tools::shutdown_signal()).await;
    tools::exit_on_error("nsq_to_file", result);
}
