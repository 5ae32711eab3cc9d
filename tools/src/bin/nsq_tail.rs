//! `nsq_tail`: print the messages of topics to stdout, one per line (see `nsq_tools::nsq_tail`).

use nsq_tools::{self as tools, nsq_tail};

#[tokio::main]
async fn main() {
    let opts: nsq_tail::TailOptions =
        nsq_app::flags::parse_options("nsq_tail", std::env::args_os(), &[]);
    tools::init_logging();
    match nsq_tail::run(opts, std::io::stdout(), tools::shutdown_signal()).await {
        Ok(_) => {}
        // `nsq_tail | head` closing the pipe is a normal way to stop.
        Err(tools::ToolError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => {
            eprintln!("[nsq_tail] {e}");
            std::process::exit(1);
        }
    }
}
