//! Unit tests for Go-style flag parsing and config file precedence.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use super::*;
use crate::{GoDuration, LogLevel};

/// A cut-down nsqd option set covering each kind of field a binary declares.
#[derive(Parser, Debug)]
struct Opts {
    #[arg(long, default_value = "0.0.0.0:4151")]
    http_address: String,
    #[arg(long, default_value_t = 10000)]
    mem_queue_size: i64,
    #[arg(long, default_value = "60s")]
    msg_timeout: GoDuration,
    #[arg(long, default_value = "1h")]
    max_req_timeout: GoDuration,
    #[arg(long = "lookupd-tcp-address")]
    lookupd_tcp_addresses: Vec<String>,
    #[arg(long = "e2e-processing-latency-percentile", value_delimiter = ',')]
    e2e_processing_latency_percentiles: Vec<f64>,
    #[arg(long, default_value_t = 0)]
    node_id: i64,
    #[arg(long)]
    verbose: bool,
    #[arg(long, default_value_t = true)]
    snappy: bool,
    #[arg(
        long,
        default_value = "false",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    tls_required: String,
    #[arg(long, default_value = "info")]
    log_level: LogLevel,
    #[arg(long, default_value = "[nsqd] ")]
    log_prefix: String,
    #[arg(long)]
    config: Option<PathBuf>,
}

/// Declares its own `version` flag and takes positional arguments.
#[derive(Parser, Debug)]
struct WithPositionals {
    #[arg(long)]
    topic: Option<String>,
    #[arg(long)]
    version: bool,
    files: Vec<String>,
}

const NSQD_KEYS: &[(&str, &str)] = &[
    ("nsqlookupd_tcp_addresses", "lookupd-tcp-address"),
    ("id", "node-id"),
    (
        "e2e_processing_latency_percentiles",
        "e2e-processing-latency-percentile",
    ),
];

fn parse<T: Parser>(args: &[&str]) -> Result<T, FlagError> {
    let argv = std::iter::once("/usr/local/bin/nsqd")
        .chain(args.iter().copied())
        .map(OsString::from);
    try_parse_options("nsqd", argv, NSQD_KEYS)
}

fn opts(args: &[&str]) -> Opts {
    parse(args).unwrap_or_else(|e| panic!("{args:?}: {}", e.message))
}

fn error_code(args: &[&str]) -> i32 {
    parse::<Opts>(args).expect_err("should not parse").code
}

#[test]
fn defaults_apply_without_flags() {
    let o = opts(&[]);
    assert_eq!(o.http_address, "0.0.0.0:4151");
    assert_eq!(o.mem_queue_size, 10000);
    assert_eq!(*o.msg_timeout, Duration::from_secs(60));
    assert!(o.lookupd_tcp_addresses.is_empty());
    assert!(!o.verbose);
    assert!(o.snappy);
    assert_eq!(o.tls_required, "false");
    assert_eq!(o.log_level, LogLevel::Info);
    assert_eq!(o.config, None);
}

#[test]
fn every_go_value_form_is_accepted() {
    for args in [
        &["-http-address", "127.0.0.1:1"][..],
        &["-http-address=127.0.0.1:1"],
        &["--http-address", "127.0.0.1:1"],
        &["--http-address=127.0.0.1:1"],
    ] {
        assert_eq!(opts(args).http_address, "127.0.0.1:1", "{args:?}");
    }
}

#[test]
fn a_separate_value_is_taken_even_if_it_looks_like_a_flag() {
    assert_eq!(opts(&["-log-prefix", "-x"]).log_prefix, "-x");
    assert_eq!(opts(&["-log-prefix", "--"]).log_prefix, "--");
    assert_eq!(opts(&["-log-prefix=-y"]).log_prefix, "-y");
    assert_eq!(opts(&["-log-prefix=a=b"]).log_prefix, "a=b");
}

#[test]
fn an_empty_value_is_a_value() {
    assert_eq!(opts(&["--http-address="]).http_address, "");
    assert_eq!(opts(&["--http-address", ""]).http_address, "");
}

#[test]
fn bool_forms_follow_go() {
    assert!(opts(&["-verbose"]).verbose);
    assert!(opts(&["--verbose"]).verbose);
    for truthy in ["1", "t", "T", "true", "TRUE", "True"] {
        assert!(opts(&[&format!("-verbose={truthy}")]).verbose, "{truthy}");
    }
    for falsy in ["0", "f", "F", "false", "FALSE", "False"] {
        assert!(!opts(&[&format!("--snappy={falsy}")]).snappy, "{falsy}");
    }
    assert!(opts(&["-snappy"]).snappy);
    assert!(
        !opts(&["-verbose", "-verbose=false"]).verbose,
        "last one wins"
    );
    assert_eq!(error_code(&["-verbose=yes"]), 2);
}

#[test]
fn a_bool_flag_does_not_consume_the_next_argument() {
    // Go stops at `false`, a non-flag, so -mem-queue-size is never seen.
    let o = opts(&["-snappy", "false", "-mem-queue-size", "5"]);
    assert!(o.snappy);
    assert_eq!(o.mem_queue_size, 10000);
}

#[test]
fn bool_style_strings_take_only_attached_values() {
    assert_eq!(opts(&["--tls-required"]).tls_required, "true");
    assert_eq!(opts(&["-tls-required=tcp-https"]).tls_required, "tcp-https");
    let o = opts(&["-tls-required", "tcp-https", "-verbose"]);
    assert_eq!(o.tls_required, "true");
    assert!(!o.verbose);
}

#[test]
fn parsing_stops_at_the_first_non_flag_and_at_double_dash() {
    let o = opts(&["-verbose", "stray", "-mem-queue-size=5"]);
    assert!(o.verbose);
    assert_eq!(o.mem_queue_size, 10000);

    let o = opts(&["-mem-queue-size=5", "--", "-verbose"]);
    assert_eq!(o.mem_queue_size, 5);
    assert!(!o.verbose);

    let o = opts(&["-", "-verbose"]);
    assert!(!o.verbose, "a lone dash is a non-flag argument");
}

#[test]
fn the_rest_goes_to_positionals_when_declared() {
    let o: WithPositionals = parse(&["-topic", "t", "a", "-b", "--", "c"]).unwrap();
    assert_eq!(o.topic.as_deref(), Some("t"));
    assert_eq!(o.files, ["a", "-b", "--", "c"]);

    let o: WithPositionals = parse(&["--", "-topic"]).unwrap();
    assert_eq!(o.topic, None);
    assert_eq!(o.files, ["-topic"]);
}

#[test]
fn repeats_append_to_lists_and_override_scalars() {
    let o = opts(&[
        "-lookupd-tcp-address",
        "a:4160",
        "--lookupd-tcp-address=b:4160,c:4160",
        "-mem-queue-size=1",
        "-mem-queue-size=2",
    ]);
    assert_eq!(o.lookupd_tcp_addresses, ["a:4160", "b:4160,c:4160"]);
    assert_eq!(o.mem_queue_size, 2);
}

#[test]
fn durations_and_levels_use_their_own_syntax() {
    let o = opts(&["-msg-timeout=1.5s", "-log-level", "DEBUG"]);
    assert_eq!(o.msg_timeout.to_string(), "1.5s");
    assert_eq!(o.log_level, LogLevel::Debug);
    assert_eq!(error_code(&["-msg-timeout=5"]), 2);
    assert_eq!(error_code(&["-log-level=loud"]), 2);
}

#[test]
fn mistakes_exit_2_with_a_message() {
    let err = parse::<Opts>(&["-bogus"]).unwrap_err();
    assert_eq!(err.code, 2);
    assert!(err
        .message
        .contains("flag provided but not defined: -bogus"));
    assert!(err.message.contains("Usage: nsqd"), "{}", err.message);

    let err = parse::<Opts>(&["-mem-queue-size"]).unwrap_err();
    assert_eq!(err.code, 2);
    assert!(err
        .message
        .contains("flag needs an argument: -mem-queue-size"));

    let err = parse::<Opts>(&["-mem-queue-size=lots"]).unwrap_err();
    assert_eq!(err.code, 2);
    assert!(err.message.contains("lots"), "{}", err.message);

    for bad_syntax in ["---verbose", "-=x", "--=x"] {
        assert_eq!(error_code(&[bad_syntax]), 2, "{bad_syntax}");
    }
    assert_eq!(error_code(&["-bogus", "-h"]), 2, "the first problem wins");
}

#[test]
fn help_prints_usage_and_exits_0() {
    for flag in ["-h", "-help", "--help", "--h"] {
        let err = parse::<Opts>(&[flag]).unwrap_err();
        assert_eq!(err.code, 0, "{flag}");
        assert!(err.message.contains("--http-address"), "{}", err.message);
        assert!(err.message.contains("--version"), "{}", err.message);
    }
}

#[test]
fn version_prints_and_exits_0() {
    let expected = format!("{}\n", version_string("nsqd"));
    for flag in ["-version", "--version", "-version=true"] {
        let err = parse::<Opts>(&[flag]).unwrap_err();
        assert_eq!(
            (err.code, err.message.as_str()),
            (0, expected.as_str()),
            "{flag}"
        );
    }
    assert!(parse::<Opts>(&["-version=false"]).is_ok());
    // Upstream's version first, then ours: nsq-rs, the commit, the compiler.
    let v = version_string("nsqlookupd");
    let rest = v.strip_prefix("nsqlookupd v1.3.0 (nsq-rs ").expect(&v);
    assert!(
        rest.contains(", built w/rustc ") && rest.ends_with(')'),
        "{v}"
    );

    // A struct's own `version` field is honoured the same way.
    let err = parse::<WithPositionals>(&["-version"]).unwrap_err();
    assert_eq!(err.code, 0);
    let o: WithPositionals = parse(&["-version=0"]).unwrap();
    assert!(!o.version);
}

#[test]
fn version_is_checked_after_the_command_line_is_valid() {
    assert_eq!(error_code(&["-version", "-mem-queue-size=x"]), 2);
    let err = parse::<Opts>(&["-version", "-config=/nonexistent/nsqd.cfg"]).unwrap_err();
    assert_eq!(err.code, 0, "the config file is not read for -version");
}

fn config_file(toml: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(toml.as_bytes()).unwrap();
    file
}

fn opts_with_config(file: &tempfile::NamedTempFile, args: &[&str]) -> Opts {
    let flag = format!("--config={}", file.path().display());
    let mut all = vec![flag.as_str()];
    all.extend_from_slice(args);
    opts(&all)
}

#[test]
fn config_values_apply_below_the_command_line() {
    let file = config_file(
        r#"
        http_address = "127.0.0.1:9151"
        mem_queue_size = 5
        msg_timeout = "30s"
        max_req_timeout = 5000
        nsqlookupd_tcp_addresses = ["a:4160", "b:4160"]
        e2e_processing_latency_percentiles = [0.99, 1.0, 0.5]
        id = 7
        verbose = true
        snappy = false
        tls_required = "tcp-https"
        log_level = "warn"
        "#,
    );
    let o = opts_with_config(&file, &[]);
    assert_eq!(o.http_address, "127.0.0.1:9151");
    assert_eq!(o.mem_queue_size, 5);
    assert_eq!(o.msg_timeout.to_string(), "30s");
    assert_eq!(
        o.max_req_timeout.to_string(),
        "5s",
        "integers are milliseconds"
    );
    assert_eq!(o.lookupd_tcp_addresses, ["a:4160", "b:4160"]);
    assert_eq!(o.e2e_processing_latency_percentiles, [0.99, 1.0, 0.5]);
    assert_eq!(o.node_id, 7);
    assert!(o.verbose);
    assert!(!o.snappy);
    assert_eq!(o.tls_required, "tcp-https");
    assert_eq!(o.log_level, LogLevel::Warn);
    assert_eq!(o.config.as_deref(), Some(file.path()));

    let o = opts_with_config(
        &file,
        &[
            "-http-address=0.0.0.0:1",
            "-snappy",
            "-lookupd-tcp-address",
            "c:4160",
        ],
    );
    assert_eq!(o.http_address, "0.0.0.0:1");
    assert!(o.snappy);
    assert_eq!(
        o.lookupd_tcp_addresses,
        ["c:4160"],
        "a list on the command line replaces the config's"
    );
    assert_eq!(
        o.mem_queue_size, 5,
        "untouched keys still come from the file"
    );
}

#[test]
fn config_given_before_or_after_flags_is_the_same() {
    let file = config_file("mem_queue_size = 5\nhttp_address = \"x:1\"\n");
    let path = format!("-config={}", file.path().display());
    let o = opts(&["-http-address=y:2", &path]);
    assert_eq!((o.http_address.as_str(), o.mem_queue_size), ("y:2", 5));
}

#[test]
fn config_quirks_kept_from_upstream() {
    let file = config_file(
        r#"
        nsqlookupd_tcp_addresses = "a:4160,b:4160"
        some_future_option = 1
        "#,
    );
    let o = opts_with_config(&file, &[]);
    assert_eq!(o.lookupd_tcp_addresses, ["a:4160", "b:4160"]);
}

#[test]
fn an_empty_config_path_means_no_config() {
    let o = opts(&["-config="]);
    assert_eq!(o.mem_queue_size, 10000);
    assert_eq!(o.config, Some(PathBuf::new()));
    assert_eq!(opts(&["-config", ""]).config, Some(PathBuf::new()));
}

#[test]
fn broken_config_files_exit_2() {
    let err = parse::<Opts>(&["-config=/nonexistent/nsqd.cfg"]).unwrap_err();
    assert_eq!(err.code, 2);
    assert!(err.message.contains("/nonexistent/nsqd.cfg"));

    let file = config_file("mem_queue_size = = 5");
    let flag = format!("-config={}", file.path().display());
    assert_eq!(error_code(&[&flag]), 2);

    let file = config_file("mem_queue_size = \"lots\"");
    let flag = format!("-config={}", file.path().display());
    assert_eq!(error_code(&[&flag]), 2);

    let file = config_file("mem_queue_size = { a = 1 }");
    let flag = format!("-config={}", file.path().display());
    assert_eq!(error_code(&[&flag]), 2);
}
