//! `nsq_tail`: print the messages of topics to stdout, one per line (see `nsq_tools::nsq_tail`).

use nsq_tools::{self as tools, nsq_tail};

#[tokio::main]
async fn main() {
    let opts = tools::start("nsq_tail");
    match nsq_tail::run(opts, std::io::stdout(), tools::shutdown_signal()).await {
        // `nsq_tail | head` closing the pipe is a normal way to stop.
        Err(tools::ToolError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        result => {
            tools::exit_on_error("nsq_tail", result);
        }
    }
}
