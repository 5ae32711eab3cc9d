//! `bench_latency`: PUB round-trip percentiles against nsqd, one message at a time (see `nsq_tools::bench::latency`).

use nsq_tools::bench::{latency, LatencyOptions};

fn main() {
    let opts: LatencyOptions =
        nsq_app::flags::parse_options("bench_latency", std::env::args_os(), &[]);
    let report = nsq_tools::exit_on_error("bench_latency", latency::run(&opts));
    report.print_with(&latency::human_line(&report));
}
