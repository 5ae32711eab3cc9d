//! `nsq_to_file`: write the messages of topics to rotating files, one per line (see `nsq_tools::nsq_to_file`).

use nsq_tools::{self as tools, nsq_to_file};

#[tokio::main]
async fn main() {
    let opts: nsq_to_file::ToFileOptions =
        nsq_app::flags::parse_options("nsq_to_file", std::env::args_os(), &[]);
    tools::init_logging();
    if let Err(e) = nsq_to_file::run(opts, tools::shutdown_signal()).await {
        eprintln!("[nsq_to_file] {e}");
        std::process::exit(1);
    }
}
