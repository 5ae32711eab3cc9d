//! `nsq-job`: submit job fires, run shards as worker commands, show status
//! (see `nsq_tools::nsq_job`).

use clap::Parser;
use nsq_tools::nsq_job::{self, JobCommand, JobOptions};
use nsq_tools::{self as tools, ToolError};

#[tokio::main]
async fn main() {
    let opts = JobOptions::parse();
    tools::init_logging();
    let result: Result<(), ToolError> = match opts.command {
        JobCommand::Submit(o) => nsq_job::submit(&o).await.map(|fire| println!("{fire}")),
        JobCommand::Work(o) => nsq_job::work(o, tools::shutdown_signal()).await,
        JobCommand::Status(o) => nsq_job::fetch_status(&o.nsqd_http_address, o.job.as_deref())
            .await
            .map(|s| {
                if o.json {
                    println!("{s}");
                } else {
                    print!("{}", nsq_job::format_status(&s));
                }
            }),
    };
    if let Err(e) = result {
        eprintln!("[nsq-job] {e}");
        std::process::exit(1);
    }
}
