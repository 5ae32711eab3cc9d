//! The official Python client, pynsq 0.9.1 on tornado 6.0.4, against the real
//! nsqd: Writer and Reader over TLS, snappy, deflate, TLS+snappy and
//! TLS+deflate moving real traffic, and AUTH (allowed, denied, expired) with
//! an auth server this test runs. The Python side is `tests/py/pynsq_client.py`;
//! it asserts that each client connected exactly once, so a silent reconnect
//! cannot hide a server fault. Needs `scripts/test-deps/python.sh`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nsq_test_support::NsqdProcess;
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

/// A CA and a certificate for 127.0.0.1 it signed, written as PEM files.
struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    fn new() -> Certs {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        // Distinct names: a leaf whose issuer equals its subject looks
        // self-signed to OpenSSL, which then never looks for the CA.
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "nsq test CA");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "127.0.0.1");
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
        Certs { dir }
    }

    fn path(&self, f: &str) -> String {
        self.dir.path().join(f).display().to_string()
    }

    fn nsqd_args(&self) -> Vec<String> {
        vec![
            format!("--tls-cert={}", self.path("cert.pem")),
            format!("--tls-key={}", self.path("key.pem")),
            "--https-address=127.0.0.1:0".into(),
        ]
    }
}

/// Run the Python client to completion (bounded) and return its JSON report.
fn run_client(nsqd: &NsqdProcess, args: &[String]) -> Value {
    let script = repo_root().join("tests/py/pynsq_client.py");
    let mut child = Command::new(python())
        .arg(&script)
        .arg(format!("--tcp={}", nsqd.tcp_addr()))
        .arg(format!("--http={}", nsqd.http_addr()))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python");
    let deadline = Instant::now() + RUN_LIMIT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            nsqd.fail(&format!(
                "pynsq client {args:?} did not finish in {RUN_LIMIT:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
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
            "pynsq client {args:?} failed ({status}): {report}\n--- python stderr ---\n{err}"
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
        &[
            "--mode=roundtrip".into(),
            format!("--topic={topic}"),
            format!("--count={MESSAGES}"),
            format!("--features={features}"),
            format!("--ca={}", certs.path("ca.pem")),
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

/// A tiny auth server: answers each request with the next reply in the
/// list (the last one repeats) and counts requests.
struct AuthServer {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
}

impl AuthServer {
    fn start(replies: &[&str]) -> AuthServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let replies: Vec<String> = replies.iter().map(|s| s.to_string()).collect();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                }
                let n = {
                    let mut s = seen.lock().unwrap();
                    s.push(line.trim().to_string());
                    s.len()
                };
                let body = &replies[(n - 1).min(replies.len() - 1)];
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        AuthServer { addr, requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

const GRANT_ALL: &str = r#"{"ttl":3600,"identity":"py","authorizations":[{"topic":"^py_","channels":[".*"],"permissions":["subscribe","publish"]}]}"#;

fn auth_nsqd(auth: &AuthServer) -> NsqdProcess {
    let arg = format!("--auth-http-address={}", auth.addr);
    NsqdProcess::start(&[&arg])
}

#[test]
fn pynsq_with_auth_allowed() {
    let auth = AuthServer::start(&[GRANT_ALL]);
    let nsqd = auth_nsqd(&auth);
    let report = run_client(
        &nsqd,
        &[
            "--mode=roundtrip".into(),
            "--topic=py_authed".into(),
            format!("--count={MESSAGES}"),
            "--secret=let-me-in".into(),
        ],
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
    let report = run_client(
        &nsqd,
        &[
            "--mode=denied".into(),
            "--topic=not_granted".into(),
            "--secret=s".into(),
        ],
    );
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
        &[
            "--mode=expired".into(),
            "--topic=py_expiring".into(),
            "--count=1000000".into(),
            "--secret=s".into(),
        ],
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
