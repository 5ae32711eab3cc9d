//! nsqadmin against nodes that misbehave on purpose: a node whose `/stats`
//! never ends is cut off at `--http-client-max-body-size` and reported as
//! failing, while nsqadmin's memory stays bounded and the healthy node is
//! still shown.

use nsq_test_support::admin::SETTLE;
use nsq_test_support::fake_node::{Answer, FakeNode};
use nsq_test_support::{wait_until, NsqadminProcess, NsqdProcess};

/// The most this process has ever had resident (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    kb * 1024
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_answering_a_huge_body_is_cut_off_and_reported() {
    const GIB: u64 = 1 << 30;
    let nsqd = NsqdProcess::start(&["--broadcast-address=127.0.0.1"]);
    nsqd.create_topic("T");
    let rogue = FakeNode::start(vec![
        ("/ping", Answer::Json("\"OK\"".into())),
        ("/stats", Answer::Endless { limit: GIB }),
    ]);
    rogue.route("/info", rogue.info("rogue"));
    // A generous request timeout: the cap, not the clock, must stop it.
    let admin = NsqadminProcess::start_with_nsqds(
        &[nsqd.http_addr(), rogue.addr()],
        &[
            "--history-interval=200ms",
            "--http-client-request-timeout=120s",
        ],
    );
    let rogue_addr = rogue.addr().to_string();
    let r = admin.request("GET", "/api/nodes", &[], b"");
    let body = r.json();
    assert_eq!(r.status, 200, "{body}");
    let msg = body["message"].as_str().unwrap_or_default().to_string();
    assert!(
        msg.contains(&rogue_addr) && msg.contains("larger than"),
        "the rogue node is named as failing: {msg}"
    );
    // The healthy node is still listed.
    let nodes = body["nodes"].as_array().cloned().unwrap_or_default();
    assert!(
        nodes
            .iter()
            .any(|n| n["http_port"] == nsqd.http_addr().port()),
        "{body}"
    );
    // The sampler marks the rogue unreachable, with the reason.
    wait_until(SETTLE, "the live view marks the rogue node", || {
        let live = admin.request("GET", "/api/live", &[], b"").json();
        let nodes = live["nodes"].as_array().cloned().unwrap_or_default();
        match nodes.iter().find(|n| n["address"] == rogue_addr.as_str()) {
            Some(n) if n["reachable"] == false => Ok(()),
            _ => Err(live.to_string()),
        }
    })
    .await
    .unwrap_or_else(|e| admin.fail(&e));
    // Several answers of the rogue were read (and cut off), yet nsqadmin
    // never held one whole: its peak stays far below a GiB.
    let peak = peak_rss(admin.pid());
    assert!(
        peak < 256 << 20,
        "nsqadmin peaked at {} MiB reading a rogue node ({} MiB sent)",
        peak >> 20,
        rogue.bytes_sent() >> 20
    );
}
