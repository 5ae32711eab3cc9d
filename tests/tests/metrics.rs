//! `/metrics` on nsqlookupd (registrations, tombstones, lookups answered) and nsqadmin (node
//! requests answered and failed, actions taken), scraped from the real binaries and parsed with
//! prometheus-parse.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use nsq_test_support::prometheus::{find, number, parse_strict, Scrape};
use nsq_test_support::{
    http_get, http_post, wait_until, NsqadminProcess, NsqdProcess, NsqlookupdProcess,
};

const WAIT: Duration = Duration::from_secs(20);

/// GET `/metrics` and parse it, refusing any line the parser would skip.
fn scrape(addr: SocketAddr) -> Result<Scrape, String> {
    let r = http_get(addr, "/metrics").map_err(|e| e.to_string())?;
    if r.status != 200 {
        return Err(format!("status {}", r.status));
    }
    assert_eq!(
        r.header("Content-Type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    parse_strict(&r.text())
}

fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    number(find(s, name, labels))
}

/// Wait until `check` holds on a scrape of `addr`; the last scrape's text on failure.
async fn wait_scrape(addr: SocketAddr, what: &str, check: impl Fn(&Scrape) -> bool) -> Scrape {
    wait_until(WAIT, what, || {
        let s = scrape(addr)?;
        if check(&s) {
            Ok(s)
        } else {
            Err(format!("{:?}", s.samples))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookupd_and_nsqadmin_serve_metrics() {
    let lookupd = NsqlookupdProcess::start(&[]);
    let lhttp = lookupd.http_addr();
    let nsqd = NsqdProcess::start(&[
        &format!("--lookupd-tcp-address={}", lookupd.tcp_addr()),
        "--broadcast-address=127.0.0.1",
    ]);
    assert_eq!(
        http_post(nsqd.http_addr(), "/topic/create?topic=a", b"")
            .unwrap()
            .status,
        200
    );
    let r = http_post(nsqd.http_addr(), "/channel/create?topic=a&channel=c", b"").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        http_post(nsqd.http_addr(), "/topic/create?topic=b", b"")
            .unwrap()
            .status,
        200
    );

    let s = wait_scrape(lhttp, "lookupd sees the node, 2 topics, 1 channel", |s| {
        value(s, "nsqlookupd_producers", &[]) == Some(1.0)
            && value(s, "nsqlookupd_topics", &[]) == Some(2.0)
            && value(s, "nsqlookupd_channels", &[]) == Some(1.0)
    })
    .await;
    assert_eq!(value(&s, "nsqlookupd_tombstones", &[]), Some(0.0));
    assert_eq!(
        value(&s, "nsqlookupd_info", &[("version", "1.3.0")]),
        Some(1.0)
    );

    assert_eq!(http_get(lhttp, "/lookup?topic=a").unwrap().status, 200);
    assert_eq!(http_get(lhttp, "/lookup?topic=a").unwrap().status, 200);
    assert_eq!(http_get(lhttp, "/lookup?topic=nope").unwrap().status, 404);
    let node = format!("127.0.0.1:{}", nsqd.http_addr().port());
    let r = http_post(lhttp, &format!("/topic/tombstone?topic=b&node={node}"), b"").unwrap();
    assert_eq!(r.status, 200);
    let s = scrape(lhttp).unwrap();
    assert_eq!(
        value(&s, "nsqlookupd_lookups_total", &[("result", "found")]),
        Some(2.0)
    );
    assert_eq!(
        value(&s, "nsqlookupd_lookups_total", &[("result", "not_found")]),
        Some(1.0)
    );
    assert_eq!(value(&s, "nsqlookupd_tombstones", &[]), Some(1.0));

    // nsqadmin over the live lookupd and one that is gone.
    let gone = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let admin = NsqadminProcess::start_with_lookupds(&[lhttp, gone], &[]);
    let r = admin.request("GET", "/api/nodes", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let r = admin.request(
        "POST",
        "/api/topics",
        &[("Content-Type", "application/json")],
        br#"{"topic":"fromadmin"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = admin.request("POST", "/api/topics/a/c", &[], br#"{"action":"pause"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let s = scrape(admin.http_addr()).unwrap();
    let ok = value(&s, "nsqadmin_node_requests_total", &[]).unwrap();
    let failed = value(&s, "nsqadmin_node_errors_total", &[]).unwrap();
    assert!(ok >= 2.0, "answered requests: {ok}");
    assert!(failed >= 1.0, "the gone lookupd's failures: {failed}");
    assert_eq!(
        value(
            &s,
            "nsqadmin_actions_total",
            &[("action", "create"), ("result", "ok")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &s,
            "nsqadmin_actions_total",
            &[("action", "pause"), ("result", "ok")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "nsqadmin_info", &[("version", "1.3.0")]),
        Some(1.0)
    );
}
