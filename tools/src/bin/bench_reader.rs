//! `bench_reader`: consume throughput of nsqd, FIN for every message; flags in, report out (see `nsq_tools::bench::reader`).

use nsq_tools::bench::{reader, ReaderOptions};

fn main() {
    let opts: ReaderOptions =
        nsq_app::flags::parse_options("bench_reader", std::env::args_os(), &[]);
    let report = nsq_tools::exit_on_error("bench_reader", reader::run(&opts));
    report.print();
}
