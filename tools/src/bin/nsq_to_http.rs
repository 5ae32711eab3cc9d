//! `nsq_to_http`: send the messages of a topic to HTTP endpoints (see `nsq_tools::nsq_to_http`).

use nsq_tools::{self as tools, nsq_to_http};

#[tokio::main]
async fn main() {
    let opts = tools::start("nsq_to_http");
    let result = nsq_to_http::run(opts, tools::shutdown_signal()).await;
    tools::exit_on_error("nsq_to_http", result);
}
