//! `bench_writer`: publish throughput of nsqd with pipelined MPUBs; flags in, report out (see `nsq_tools::bench::writer`).

use nsq_tools::bench::{writer, WriterOptions};

fn main() {
    let opts: WriterOptions =
        nsq_app::flags::parse_options("bench_writer", std::env::args_os(), &[]);
    let report = nsq_tools::exit_on_error("bench_writer", writer::run(&opts));
    report.print();
}
