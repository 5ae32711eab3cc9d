//! `nsq_to_http`: send the messages of a topic to HTTP endpoints (see `nsq_tools::nsq_to_http`).

use nsq_tools::{self as tools, nsq_to_http};

#[tokio::main]
async fn main() {
    let opts: nsq_to_http::ToHttpOptions =
        nsq_app::flags::parse_options("nsq_to_http", std::env::args_os(), &[]);
    tools::init_logging();
    if let Err(e) = nsq_to_http::run(opts, tools::shutdown_signal()).await {
        eprintln!("[nsq_to_http] {e}");
        std::process::exit(1);
    }
}
