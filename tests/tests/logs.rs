//! nsqd's and nsqlookupd's log lines: upstream's layout and message texts for the same actions
//! (captured from upstream 1.3.0's binaries), reads kept out of INFO, no ANSI colour, and
//! `--log-format=json` as one JSON object per line.
//!
//! Every expected line of the first test also matches upstream's binaries
//! (`NSQ_TEST_BIN_DIR=/path/to/nsq-1.3.0/bin`), which is how they were checked; only its last
//! check fails there, as upstream logs every read (`GET /nodes`, `GET /stats`) at INFO.

use std::time::Duration;

use nsq_test_support::{
    http_get, http_post, nothing_missing, wait_until, within, NsqdProcess, NsqlookupdProcess,
    RawConn,
};
use regex::Regex;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

/// `[prefix] YYYY/MM/DD HH:MM:SS.micro LEVEL: ` — the part a parser splits off every line.
fn line_head(prefix: &str) -> Regex {
    Regex::new(&format!(
        r"^\[{prefix}\] \d{{4}}/\d\d/\d\d \d\d:\d\d:\d\d\.\d{{6}} (DEBUG|INFO|WARNING|ERROR|FATAL): "
    ))
    .unwrap()
}

/// An expected line after the timestamp, e.g. `INFO: TCP: new client({ADDR})`, as a regex:
/// `{ADDR}` is a loopback address, `{N}` a number, `{DUR}` a Go-style duration, `{ANY}`
/// anything (our version and the toolchain named in the version line).
fn expected(pattern: &str) -> Regex {
    let mut re = regex::escape(pattern);
    for (token, with) in [
        (r"\{ADDR\}", r"127\.0\.0\.1:\d+"),
        (r"\{N\}", r"\d+"),
        (r"\{DUR\}", r"[0-9.]+(ns|µs|ms|s)"),
        (r"\{ANY\}", r".+"),
    ] {
        re = re.replace(token, with);
    }
    Regex::new(&format!("^{re}$")).unwrap()
}

/// The lines with their timestamp masked: `LEVEL: message`.
fn bodies(logs: &str, head: &Regex) -> Vec<String> {
    logs.lines()
        .filter_map(|l| {
            let c = head.captures(l)?;
            let end = c.get(0)?.end();
            Some(format!("{}: {}", &c[1], &l[end..]))
        })
        .collect()
}

/// Wait until every pattern matches some line of `logs()`; fail naming the missing ones.
async fn expect_lines(what: &str, logs: impl Fn() -> String, prefix: &str, patterns: &[String]) {
    let head = line_head(prefix);
    let res: Vec<Regex> = patterns.iter().map(|p| expected(p)).collect();
    let found = wait_until(WAIT, what, || {
        let lines = bodies(&logs(), &head);
        let missing: Vec<&String> = patterns
            .iter()
            .zip(&res)
            .filter(|(_, re)| !lines.iter().any(|l| re.is_match(l)))
            .map(|(p, _)| p)
            .collect();
        nothing_missing(&missing)
    })
    .await;
    if let Err(e) = found {
        panic!("{e}\n--- {prefix} logs ---\n{}", logs());
    }
}

/// Every line has upstream's head, and nothing draws in colour.
fn check_layout(logs: &str, prefix: &str) {
    let head = line_head(prefix);
    for line in logs.lines() {
        assert!(
            head.is_match(line),
            "not upstream's layout: {line:?}\n{logs}"
        );
        assert!(!line.contains('\u{1b}'), "ANSI escape in {line:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nsqd_and_lookupd_log_upstreams_lines_for_the_same_actions() {
    within(async {
        let lookupd = NsqlookupdProcess::start(&[]);
        let l = lookupd.tcp_addr();
        let lhttp = lookupd.http_addr();
        let lookupd_arg = format!("--lookupd-tcp-address={l}");
        let mut nsqd = NsqdProcess::start(&[&lookupd_arg, "--broadcast-address=127.0.0.1"]);
        let (tcp, http) = (nsqd.tcp_addr(), nsqd.http_addr());
        let dat = nsqd.data_path().join("nsqd.dat");
        expect_lines(
            "nsqd registered",
            || nsqd.logs(),
            "nsqd",
            &[format!(
                "INFO: LOOKUPD({l}): peer info {{TCPPort:{} HTTPPort:{} Version:1.3.0 BroadcastAddress:127.0.0.1}}",
                l.port(),
                lhttp.port()
            )],
        )
        .await;

        // Topic and channel over HTTP.
        assert_eq!(http_post(http, "/topic/create?topic=render", b"").unwrap().status, 200);
        assert_eq!(
            http_post(http, "/channel/create?topic=render&channel=workers", b"").unwrap().status,
            200
        );
        // A consumer: IDENTIFY, SUB, then a fatal error ends it.
        let mut c = RawConn::connect(tcp).await;
        c.identify(json!({"client_id": "c1", "hostname": "h1", "user_agent": "logs-test/1"}))
            .await;
        c.sub("render", "workers").await;
        c.write_raw(b"FOO\n").await;
        c.expect_closed_within(WAIT).await;
        // A bad magic.
        let mut bad = RawConn::connect_without_magic(tcp).await;
        bad.write_raw(b"XXXX").await;
        bad.expect_closed_within(WAIT).await;
        // Reads stay out of INFO on both daemons.
        assert_eq!(http_get(lhttp, "/nodes").unwrap().status, 200);
        assert_eq!(http_get(http, "/stats?format=json").unwrap().status, 200);
        // Lookupd's own topic API.
        assert_eq!(http_post(lhttp, "/topic/create?topic=lk", b"").unwrap().status, 200);
        assert_eq!(http_post(lhttp, "/topic/delete?topic=lk", b"").unwrap().status, 200);
        // Deletions.
        assert_eq!(
            http_post(http, "/channel/delete?topic=render&channel=workers", b"").unwrap().status,
            200
        );
        assert_eq!(http_post(http, "/topic/delete?topic=render", b"").unwrap().status, 200);

        let nsqd_lines: Vec<String> = [
            "INFO: nsqd v1.3.0 ({ANY}built w/{ANY})".to_string(),
            "INFO: ID: {N}".into(),
            format!("INFO: NSQ: persisting topic/channel metadata to {}", dat.display()),
            format!("INFO: LOOKUP({l}): adding peer"),
            format!("INFO: LOOKUP connecting to {l}"),
            format!("INFO: TCP: listening on {tcp}"),
            format!("INFO: HTTP: listening on {http}"),
            "INFO: TOPIC(render): created".into(),
            format!(
                "INFO: CI: querying nsqlookupd http://127.0.0.1:{}/channels?topic=render",
                lhttp.port()
            ),
            format!("INFO: LOOKUPD({l}): topic REGISTER render"),
            "INFO: 200 POST /topic/create?topic=render ({ADDR}) {DUR}".into(),
            "INFO: TOPIC(render): new channel(workers)".into(),
            format!("INFO: LOOKUPD({l}): channel REGISTER render workers"),
            "INFO: 200 POST /channel/create?topic=render&channel=workers ({ADDR}) {DUR}".into(),
            "INFO: TCP: new client({ADDR})".into(),
            "INFO: CLIENT({ADDR}): desired protocol magic '  V2'".into(),
            "INFO: [{ADDR}] IDENTIFY: {ClientID:c1 Hostname:h1 HeartbeatInterval:0 \
             OutputBufferSize:0 OutputBufferTimeout:0 FeatureNegotiation:false TLSv1:false \
             Deflate:false DeflateLevel:0 Snappy:false SampleRate:0 UserAgent:logs-test/1 \
             MsgTimeout:0}"
                .into(),
            "ERROR: [{ADDR}] - E_INVALID invalid command FOO".into(),
            "INFO: PROTOCOL(V2): [{ADDR}] exiting ioloop".into(),
            "INFO: PROTOCOL(V2): [{ADDR}] exiting messagePump".into(),
            "INFO: CLIENT({ADDR}): desired protocol magic 'XXXX'".into(),
            "ERROR: client({ADDR}) bad protocol magic 'XXXX'".into(),
            "INFO: TOPIC(render): deleting channel workers".into(),
            "INFO: CHANNEL(workers): deleting".into(),
            format!("INFO: LOOKUPD({l}): channel UNREGISTER render workers"),
            "INFO: TOPIC(render): deleting".into(),
            format!("INFO: LOOKUPD({l}): topic UNREGISTER render"),
            "INFO: 200 POST /topic/delete?topic=render ({ADDR}) {DUR}".into(),
        ]
        .into();
        expect_lines("nsqd logged every action", || nsqd.logs(), "nsqd", &nsqd_lines).await;

        let lookupd_lines: Vec<String> = [
            "INFO: nsqlookupd v1.3.0 ({ANY}built w/{ANY})".to_string(),
            "INFO: TCP: new client({ADDR})".into(),
            "INFO: CLIENT({ADDR}): desired protocol magic '  V1'".into(),
            format!(
                "INFO: CLIENT({{ADDR}}): IDENTIFY Address:127.0.0.1 TCP:{} HTTP:{} Version:1.3.0",
                tcp.port(),
                http.port()
            ),
            "INFO: DB: client({ADDR}) REGISTER category:client key: subkey:".into(),
            "INFO: DB: client({ADDR}) REGISTER category:topic key:render subkey:".into(),
            "INFO: DB: client({ADDR}) REGISTER category:channel key:render subkey:workers".into(),
            "INFO: DB: client({ADDR}) UNREGISTER category:channel key:render subkey:workers".into(),
            "INFO: DB: client({ADDR}) UNREGISTER category:topic key:render subkey:".into(),
            "INFO: DB: adding topic(lk)".into(),
            "INFO: 200 POST /topic/create?topic=lk ({ADDR}) {DUR}".into(),
            "INFO: DB: removing topic(lk)".into(),
        ]
        .into();
        expect_lines("lookupd logged every action", || lookupd.logs(), "nsqlookupd", &lookupd_lines)
            .await;

        // nsqd going away ends its lookupd connection with upstream's line, and nsqd says bye.
        nsqd.terminate();
        expect_lines("nsqd said bye", || nsqd.logs(), "nsqd", &["INFO: NSQ: bye".to_string()]).await;
        expect_lines(
            "lookupd saw nsqd go",
            || lookupd.logs(),
            "nsqlookupd",
            &["INFO: PROTOCOL(V1): [{ADDR}] exiting ioloop".to_string()],
        )
        .await;

        let (nlogs, llogs) = (nsqd.logs(), lookupd.logs());
        check_layout(&nlogs, "nsqd");
        check_layout(&llogs, "nsqlookupd");
        for logs in [&nlogs, &llogs] {
            assert!(!logs.contains(" GET /"), "a read logged at INFO:\n{logs}");
        }
    })
    .await;
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_format_json_writes_one_object_per_line() {
    let lookupd = NsqlookupdProcess::start(&["--log-format=json"]);
    let l = lookupd.tcp_addr();
    let lookupd_arg = format!("--lookupd-tcp-address={l}");
    let nsqd = NsqdProcess::start(&["--log-format=json", &lookupd_arg]);
    assert_eq!(
        http_post(nsqd.http_addr(), "/topic/create?topic=j", b"")
            .unwrap()
            .status,
        200
    );
    let topic_line = wait_until(WAIT, "nsqd logged the topic as JSON", || {
        nsqd.logs()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).map_err(|e| format!("{e}: {l}")))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .find(|v| v["message"] == "TOPIC(j): created")
            .ok_or_else(|| "no TOPIC(j) line yet".to_string())
    })
    .await
    .unwrap_or_else(|e| nsqd.fail(&e));
    assert_eq!(topic_line["app"], "nsqd", "{topic_line}");
    assert_eq!(topic_line["level"], "INFO", "{topic_line}");
    assert!(topic_line["timestamp"].is_string(), "{topic_line}");
    wait_until(WAIT, "lookupd logged the registration as JSON", || {
        lookupd
            .logs()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).map_err(|e| format!("{e}: {l}")))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .find(|v| {
                v["app"] == "nsqlookupd"
                    && v["message"]
                        .as_str()
                        .is_some_and(|m| m.ends_with("REGISTER category:topic key:j subkey:"))
            })
            .ok_or_else(|| "no REGISTER line yet".to_string())
    })
    .await
    .unwrap_or_else(|e| lookupd.fail(&e));
}
