//! `bench_writer`: publish throughput of nsqd with pipelined MPUBs; flags in, report out (see `nsq_tools::bench::writer`).

use nsq_tools::bench::{writer, WriterOptions};

fn main() {
    let opts: WriterOptions =
        nsq_app::flags::parse_options("bench_writer", std::env::args_os(), &[]);
    match writer::run(&opts) {
        Ok(report) => report.print(),
        Err(e) => {
            eprintln!("[bench_writer] {e}");
            std::process::exit(1);
        }
    }
}
