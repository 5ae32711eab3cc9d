//! contrib/ against a real Prometheus (Debian's `prometheus` package, installed by
//! scripts/test-deps/prometheus.sh): `promtool check rules` accepts contrib/alerts.yml, and
//! Prometheus scraping nsqd, nsqlookupd and nsqadmin has every metric that the Grafana dashboard
//! (contrib/grafana/nsq-overview.json) and the alert rules use. The metric names are read out of
//! those files, so a panel or rule added later is checked too.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nsq_test_support::{http_get, http_post, wait_until, within_for, NsqadminProcess, NsqdProcess};
use nsq_test_support::{nothing_missing, NsqlookupdProcess, RawConn};
use regex::Regex;
use serde_json::{json, Value};

const PROMETHEUS: &str = "/usr/bin/prometheus";
const PROMTOOL: &str = "/usr/bin/promtool";
const WAIT: Duration = Duration::from_secs(60);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn require(tool: &str) {
    assert!(
        Path::new(tool).is_file(),
        "{tool} is missing: run scripts/test-deps/prometheus.sh (Debian's prometheus package)"
    );
}

/// The metric names in a PromQL expression: identifiers with one of our daemons' prefixes
/// (no label is named like that), quoted strings and `$variables` left out.
fn metric_names(expr: &str, into: &mut BTreeSet<String>) {
    let quoted = Regex::new(r#""[^"]*""#).unwrap();
    let variable = Regex::new(r"\$\w+").unwrap();
    let ident = Regex::new(r"[A-Za-z_:][A-Za-z0-9_:]*").unwrap();
    let expr = quoted.replace_all(expr, "\"\"");
    let expr = variable.replace_all(&expr, "");
    for m in ident.find_iter(&expr) {
        let name = m.as_str();
        if ["nsq_", "nsqlookupd_", "nsqadmin_", "process_"]
            .iter()
            .any(|p| name.starts_with(p))
        {
            into.insert(name.to_string());
        }
    }
}

/// Every query in the dashboard: panel targets' `expr` and template variables' `definition`.
fn dashboard_queries(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "definition", Value::String(s)) => out.push(s.clone()),
                    _ => dashboard_queries(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| dashboard_queries(i, out)),
        _ => {}
    }
}

/// Every rule's `expr:` in alerts.yml (single-line by the file's convention; a block scalar
/// would hide an expression from this reader, so it fails the test instead).
fn alert_queries(text: &str) -> Vec<String> {
    let expr = Regex::new(r"^\s*expr:\s*(.*)$").unwrap();
    text.lines()
        .filter_map(|l| expr.captures(l))
        .map(|c| {
            let e = c[1].trim().to_string();
            assert!(
                !e.is_empty() && !e.starts_with('|') && !e.starts_with('>'),
                "alerts.yml: write each expr on one line ({e:?})"
            );
            e
        })
        .collect()
}

/// Percent-encode a query parameter.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus process, killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(dir: &Path, targets: &[(&str, SocketAddr)], rules: &Path) -> Prometheus {
        // A free port, released just before Prometheus binds it.
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n",
        );
        config.push_str(&format!("  - {}\nscrape_configs:\n", rules.display()));
        for (job, target) in targets {
            config.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n"
            ));
        }
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = dir.join("prometheus.log");
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start prometheus");
        Prometheus { child, addr, log }
    }

    fn fail(&self, msg: &str) -> ! {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        panic!("{msg}\n--- prometheus log ---\n{log}")
    }

    fn api(&self, path: &str) -> Result<Value, String> {
        let r = http_get(self.addr, path).map_err(|e| e.to_string())?;
        if r.status != 200 {
            return Err(format!("{path}: {} {}", r.status, r.text()));
        }
        let v = r.json();
        if v["status"] != "success" {
            return Err(format!("{path}: {v}"));
        }
        Ok(v["data"].clone())
    }

    /// Whether any series of `name` exists now.
    fn has_series(&self, name: &str) -> Result<bool, String> {
        let q = format!("count({{__name__=\"{name}\"}})");
        let data = self.api(&format!("/api/v1/query?query={}", enc(&q)))?;
        Ok(data["result"].as_array().is_some_and(|r| !r.is_empty()))
    }
}

#[test]
fn promtool_accepts_the_alert_rules() {
    require(PROMTOOL);
    let out = Command::new(PROMTOOL)
        .args(["check", "rules"])
        .arg(repo().join("contrib/alerts.yml"))
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool check rules failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_every_metric_the_dashboard_and_alerts_use() {
    require(PROMETHEUS);
    within_for(Duration::from_secs(150), async {
        let dashboard: Value = serde_json::from_str(
            &std::fs::read_to_string(repo().join("contrib/grafana/nsq-overview.json")).unwrap(),
        )
        .expect("dashboard is JSON");
        let rules_path = repo().join("contrib/alerts.yml").canonicalize().unwrap();
        let mut queries = Vec::new();
        dashboard_queries(&dashboard, &mut queries);
        let n_dashboard = queries.len();
        queries.extend(alert_queries(
            &std::fs::read_to_string(&rules_path).unwrap(),
        ));
        assert!(
            n_dashboard > 20 && queries.len() > n_dashboard,
            "{queries:#?}"
        );
        let mut names = BTreeSet::new();
        for q in &queries {
            metric_names(q, &mut names);
        }

        // A cluster with traffic enough for every series: a finished message (latency), a
        // dead letter, disk writes and fsyncs, an nsqadmin action.
        let lookupd = NsqlookupdProcess::start(&[]);
        let lookupd_arg = format!("--lookupd-tcp-address={}", lookupd.tcp_addr());
        let nsqd = NsqdProcess::start(&[
            &lookupd_arg,
            "--broadcast-address=127.0.0.1",
            "--e2e-processing-latency-percentile=0.99",
            "--mem-queue-size=0",
            "--sync-every=1",
        ]);
        let admin = NsqadminProcess::start_with_lookupds(&[lookupd.http_addr()], &[]);
        let h = nsqd.http_addr();
        let r = http_post(h, "/topic/create?topic=t", b"").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(
            http_post(h, "/channel/create?topic=t&channel=c", b"")
                .unwrap()
                .status,
            200
        );
        let r = http_post(
            h,
            "/channel/max_attempts?topic=t&channel=c&max_attempts=1",
            b"",
        );
        assert_eq!(r.unwrap().status, 200);
        assert_eq!(
            http_post(h, "/mpub?topic=t", b"ok\nfails").unwrap().status,
            200
        );
        let mut c = RawConn::connect(nsqd.tcp_addr()).await;
        c.identify(json!({})).await;
        c.sub("t", "c").await;
        c.rdy(2).await;
        for m in c.read_messages(2).await {
            if &m.body[..] == b"ok" {
                c.fin(m.id).await;
            } else {
                c.req(m.id, 0).await;
            }
        }
        let r = admin.request("POST", "/api/topics", &[], br#"{"topic":"fromadmin"}"#);
        assert_eq!(r.status, 200, "{}", r.text());
        wait_until(WAIT, "the dead letter and the FIN counted", || {
            let text = http_get(h, "/metrics").map_err(|e| e.to_string())?.text();
            let done = text.contains("nsq_channel_dead_letters_total{topic=\"t\",channel=\"c\"} 1")
                && text.contains("nsq_channel_finished_total{topic=\"t\",channel=\"c\"} 1");
            if done {
                Ok(())
            } else {
                Err(text)
            }
        })
        .await
        .unwrap_or_else(|e| nsqd.fail(&e));

        // Replica series exist only on replicated nsqds; this one is not, so they are exempt
        // exactly when its /metrics has none.
        let nsqd_text = http_get(h, "/metrics").unwrap().text();
        let replicated = nsqd_text.contains("nsq_replica_");
        let exempt: BTreeSet<String> = names
            .iter()
            .filter(|n| !replicated && n.starts_with("nsq_replica_"))
            .cloned()
            .collect();

        let dir = tempfile::tempdir().unwrap();
        let prom = Prometheus::start(
            dir.path(),
            &[
                ("nsqd", h),
                ("nsqlookupd", lookupd.http_addr()),
                ("nsqadmin", admin.http_addr()),
            ],
            &rules_path,
        );
        wait_until(WAIT, "every target scraped and up", || {
            let data = prom.api("/api/v1/targets")?;
            let targets = data["activeTargets"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let up = targets.iter().filter(|t| t["health"] == "up").count();
            if targets.len() == 3 && up == 3 {
                Ok(())
            } else {
                Err(format!("{targets:?}"))
            }
        })
        .await
        .unwrap_or_else(|e| prom.fail(&e));

        let missing = wait_until(WAIT, "every metric in Prometheus", || {
            let mut missing = Vec::new();
            for name in names.difference(&exempt) {
                if !prom.has_series(name)? {
                    missing.push(name.clone());
                }
            }
            nothing_missing(&missing)
        })
        .await;
        if let Err(e) = missing {
            prom.fail(&format!("{e}\nnsqd /metrics:\n{nsqd_text}"));
        }

        // The rules loaded and evaluate without errors.
        let rules = wait_until(WAIT, "the alert rules evaluated", || {
            let data = prom.api("/api/v1/rules")?;
            let rules: Vec<Value> = data["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .collect();
            let evaluated = !rules.is_empty()
                && rules
                    .iter()
                    .all(|r| r["lastEvaluation"] != "0001-01-01T00:00:00Z");
            if evaluated {
                Ok(rules)
            } else {
                Err(format!("{rules:?}"))
            }
        })
        .await
        .unwrap_or_else(|e| prom.fail(&e));
        for r in &rules {
            assert_eq!(r["health"], "ok", "rule {} failed: {r}", r["name"]);
        }
        assert_eq!(
            rules.len(),
            alert_queries(&std::fs::read_to_string(&rules_path).unwrap()).len()
        );
        println!(
            "checked {} metric names ({} exempt): {names:?}",
            names.len(),
            exempt.len()
        );
    })
    .await;
}
