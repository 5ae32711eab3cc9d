//! `nsq_to_nsq`: copy the messages of topics to other nsqds (see `nsq_tools::nsq_to_nsq`).

use nsq_tools::{self as tools, nsq_to_nsq};

#[tokio::main]
async fn main() {
    let opts: nsq_to_nsq::ToNsqdOptions =
        nsq_app::flags::parse_options("nsq_to_nsq", std::env::args_os(), &[]);
    tools::init_logging();
    if let Err(e) = nsq_to_nsq::run(opts, tools::shutdown_signal()).await {
        eprintln!("[nsq_to_nsq] {e}");
        std::process::exit(1);
    }
}
