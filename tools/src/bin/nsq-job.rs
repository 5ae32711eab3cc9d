//! `nsq-job`: submit job fires, run shards as worker commands, show status
//! (see `nsq_tools::nsq_job`).

use clap::{CommandFactory, Parser};
use nsq_tools::nsq_job::{self, JobCommand, JobOptions};
use nsq_tools::{self as tools, ToolError};

#[tokio::main]
async fn main() {
    nsq_app::docs::serve::<JobOptions>("nsq-job", &std::env::args_os().collect::<Vec<_>>());
    let opts = JobOptions::parse();
    if opts.version {
        println!("{}", nsq_app::version_string("nsq-job"));
        return;
    }
    let Some(command) = opts.command else {
        let _ = JobOptions::command().print_help();
        std::process::exit(2);
    };
    tools::init_logging();
    let result: Result<(), ToolError> = match command {
        JobCommand::Submit(o) => nsq_job::submit(&o).await.map(|fire| println!("{fire}")),
        JobCommand::Work(o) => nsq_job::work(o, tools::shutdown_signal()).await,
        JobCommand::Status(o) => status(&o).await,
    };
    tools::exit_on_error("nsq-job", result);
}

/// Every nsqd's status, each under its address when there are several.
async fn status(o: &nsq_job::StatusOptions) -> Result<(), ToolError> {
    let nsqds = nsq_job::status_nsqds(o).await?;
    for addr in &nsqds {
        if nsqds.len() > 1 {
            println!("nsqd {addr}:");
        }
        if o.json {
            println!("{}", nsq_job::fetch_status(addr, o.job.as_deref()).await?);
        } else {
            print!("{}", nsq_job::status_text(addr, o.job.as_deref()).await?);
        }
    }
    Ok(())
}
