//! `nsq_stat`: print a channel's stats over its nsqds every interval (see `nsq_tools::nsq_stat`).

use nsq_tools::{self as tools, nsq_stat};

#[tokio::main]
async fn main() {
    let opts: nsq_stat::StatOptions =
        nsq_app::flags::parse_options("nsq_stat", std::env::args_os(), &[]);
    let result = tokio::select! {
        r = nsq_stat::run(&opts, |line| println!("{line}")) => r,
        () = tools::shutdown_signal() => Ok(()),
    };
    if let Err(e) = result {
        eprintln!("[nsq_stat] ERROR: {e}");
        std::process::exit(1);
    }
}
