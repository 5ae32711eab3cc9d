//! The official Python client, pynsq 0.9.1 on tornado 6.0.4, against the real
//! nsqd: Writer and Reader over TLS, snappy, deflate, TLS+snappy and
//! TLS+deflate moving real traffic, and AUTH (allowed, denied, expired) with
//! an auth server this test runs. The Python side is `tests/py/pynsq_client.py`;
//! it asserts that each client connected exactly once, so a silent reconnect
//! cannot hide a server fault. Needs `scripts/test-deps/python.sh`.

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nsq_test_support::tool::wait_with_deadline;
use nsq_test_support::{AuthServer, Certs, NsqdProcess};
use serde_json::Value;

/// Longest one Python client run may take (it also stops itself earlier).
const RUN_LIMIT: Duration = Duration::from_secs(90);
const MESSAGES: usize = 1000;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn python() -> PathBuf {
    let py = repo_root().join("target/test-deps/venv/bin/python");
    assert!(
        py.is_file(),
        "{} is missing: run scripts/test-deps/python.sh (scripts/test.sh does) to install pynsq",
        py.display()
    );
    py
}

/// Run the Python client in `mode` on `topic` (plus `args`) to completion (bounded) and return
/// its JSON report.
fn run_client<S: AsRef<OsStr> + std::fmt::Debug>(
    nsqd: &NsqdProcess,
    mode: &str,
    topic: &str,
    args: &[S],
) -> Value {
    let script = repo_root().join("tests/py/pynsq_client.py");
    let mut child = Command::new(python())
        .arg(&script)
        .arg(format!("--tcp={}", nsqd.tcp_addr()))
        .arg(format!("--http={}", nsqd.http_addr()))
        .arg(format!("--mode={mode}"))
        .arg(format!("--topic={topic}"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python");
    let Some(status) = wait_with_deadline(&mut child, RUN_LIMIT) else {
        nsqd.fail(&format!(
            "pynsq client {mode} {topic} {args:?} did not finish in {RUN_LIMIT:?}"
        ));
    };
    let mut out = String::new();
    let mut err = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let report: Value = out
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null);
    if !status.success() {
        nsqd.fail(&format!(
            "pynsq client {mode} {topic} {args:?} failed ({status}): {report}\n--- python stderr ---\n{err}"
        ));
    }
    report
}

fn roundtrip(features: &str) {
    let certs = Certs::new();
    let args = certs.nsqd_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let nsqd = NsqdProcess::start(&args);
    let topic = format!("py_{}", features.replace(',', "_"));
    let report = run_client(
        &nsqd,
        "roundtrip",
        &topic,
        &[
            format!("--count={MESSAGES}"),
            format!("--features={features}"),
            format!("--ca={}", certs.path("ca.pem").display()),
        ],
    );
    assert_eq!(report["received"], MESSAGES, "{report}");
    assert_eq!(report["dups"], 0, "{report}");
    assert_eq!(
        report["connects"],
        serde_json::json!({"writer": 1, "reader": 1}),
        "{report}"
    );
    // nsqd agrees (its /stats taken while the clients were connected): one
    // producer and one consumer, each with what was asked.
    let stats = &report["stats"];
    let t = stats["topics"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["topic_name"] == topic.as_str()))
        .unwrap_or_else(|| panic!("no topic {topic} in {report}"));
    assert_eq!(t["message_count"], MESSAGES, "{t}");
    let consumers = t["channels"][0]["clients"].as_array().unwrap();
    assert_eq!(consumers.len(), 1, "{t}");
    let producers = stats["producers"].as_array().unwrap();
    assert_eq!(producers.len(), 1, "{stats}");
    for c in [&consumers[0], &producers[0]] {
        assert!(
            c["user_agent"].as_str().unwrap_or("").starts_with("pynsq/"),
            "{c}"
        );
        assert_eq!(c["tls"], features.contains("tls"), "{c}");
        assert_eq!(c["snappy"], features.contains("snappy"), "{c}");
        assert_eq!(c["deflate"], features.contains("deflate"), "{c}");
    }
    let c = &consumers[0];
    assert_eq!(c["message_count"], MESSAGES, "{c}");
}

#[test]
fn pynsq_over_tls() {
    roundtrip("tls");
}

#[test]
fn pynsq_over_snappy() {
    roundtrip("snappy");
}

#[test]
fn pynsq_over_deflate() {
    roundtrip("deflate");
}

#[test]
fn pynsq_over_tls_and_snappy() {
    roundtrip("tls,snappy");
}

#[test]
fn pynsq_over_tls_and_deflate() {
    roundtrip("tls,deflate");
}

const GRANT_ALL: &str = r#"{"ttl":3600,"identity":"py","authorizations":[{"topic":"^py_","channels":[".*"],"permissions":["subscribe","publish"]}]}"#;

fn auth_nsqd(auth: &AuthServer) -> NsqdProcess {
    NsqdProcess::start(&[&auth.nsqd_arg()])
}

#[test]
fn pynsq_with_auth_allowed() {
    let auth = AuthServer::start(&[GRANT_ALL]);
    let nsqd = auth_nsqd(&auth);
    let count = format!("--count={MESSAGES}");
    let report = run_client(
        &nsqd,
        "roundtrip",
        "py_authed",
        &[&count, "--secret=let-me-in"],
    );
    assert_eq!(report["received"], MESSAGES, "{report}");
    let reqs = auth.requests();
    assert_eq!(reqs.len(), 2, "one AUTH per connection: {reqs:?}");
    assert!(reqs[0].contains("secret=let-me-in"), "{reqs:?}");
}

#[test]
fn pynsq_with_auth_denied() {
    let auth = AuthServer::start(&[GRANT_ALL]);
    let nsqd = auth_nsqd(&auth);
    let report = run_client(&nsqd, "denied", "not_granted", &["--secret=s"]);
    assert_eq!(report["published"], 0, "{report}");
    assert!(
        report["errors"][0]
            .as_str()
            .unwrap_or("")
            .contains(r#"AUTH failed for PUB on "not_granted" """#),
        "{report}"
    );
}

#[test]
fn pynsq_with_auth_expired() {
    // The first grant lasts one second; the refetch after it grants nothing.
    let auth = AuthServer::start(&[
        r#"{"ttl":1,"authorizations":[{"topic":".*","channels":[".*"],"permissions":["publish"]}]}"#,
        r#"{"ttl":60,"authorizations":[]}"#,
    ]);
    let nsqd = auth_nsqd(&auth);
    let report = run_client(
        &nsqd,
        "expired",
        "py_expiring",
        &["--count=1000000", "--secret=s"],
    );
    assert!(report["published"].as_u64().unwrap_or(0) >= 1, "{report}");
    assert!(
        report["errors"][0]
            .as_str()
            .unwrap_or("")
            .contains("E_UNAUTHORIZED"),
        "{report}"
    );
    assert_eq!(auth.requests().len(), 2, "{:?}", auth.requests());
}
