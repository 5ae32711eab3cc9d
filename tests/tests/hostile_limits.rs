//! Running out of file descriptors: nsqd raises its soft open-file limit to
//! the hard one at start (as Go's runtime does) and says so; when even that
//! is exhausted, accepting backs off instead of spinning, the clients
//! already connected keep being served, and new ones are accepted again
//! once descriptors free up.

use std::time::Duration;

use nsq_test_support::{wait_until, NsqdProcess, RawConn};
use tokio::net::TcpStream;

/// Tests here run nsqd through `prlimit` (scripts/test-deps/prlimit.sh).
fn require_prlimit() {
    let found = std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "prlimit is missing: run scripts/test-deps/prlimit.sh"
    );
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_soft_open_file_limit_is_raised_to_the_hard_one() {
    require_prlimit();
    let nsqd = NsqdProcess::start_wrapped(&["prlimit", "--nofile=64:1024", "--"], &[]);
    assert!(
        nsqd.log_handle().contains("open file limit 1024"),
        "no limit logged:\n{}",
        nsqd.logs()
    );
    // Three times what the soft limit alone would allow, each served.
    let mut conns = Vec::new();
    for _ in 0..200 {
        let c = nsqd.connect_identified().await;
        conns.push(c);
    }
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_descriptors_leave_connected_clients_served() {
    require_prlimit();
    let nsqd = NsqdProcess::start_wrapped(&["prlimit", "--nofile=64:64", "--"], &[]);
    let mut producer: RawConn = nsqd.connect().await;
    producer.identify_ok(serde_json::json!({})).await;
    // Connections the kernel completes but nsqd cannot accept them all.
    let mut flood = Vec::new();
    for _ in 0..100 {
        flood.push(TcpStream::connect(nsqd.tcp_addr()).await.unwrap());
    }
    let logs = nsqd.log_handle();
    wait_until(Duration::from_secs(10), "accepting fails", || {
        if logs.contains("Too many open files") {
            Ok(())
        } else {
            Err("no accept error yet")
        }
    })
    .await
    .unwrap_or_else(|e| nsqd.fail(&e));
    // Out of descriptors, yet the connected producer is answered.
    producer.publish("t", b"still served").await;
    drop(flood);
    // Descriptors come back: new clients and /ping are served again.
    wait_until(
        Duration::from_secs(15),
        "/ping answers again",
        || match ping_ok(&nsqd) {
            true => Ok(()),
            false => Err("no answer"),
        },
    )
    .await
    .unwrap_or_else(|e| nsqd.fail(&e));
    let _late = nsqd.connect_identified().await;
    // Backing off, not spinning: a handful of lines, not thousands.
    let errors = nsqd
        .logs()
        .lines()
        .filter(|l| l.contains("accept error"))
        .count();
    assert!(
        errors < 100,
        "{errors} accept error lines:\n{}",
        nsqd.logs()
    );
}

fn ping_ok(nsqd: &NsqdProcess) -> bool {
    nsq_test_support::http_get(nsqd.http_addr(), "/ping")
        .is_ok_and(|r| r.status == 200 && r.body == b"OK")
}

/// nsqlookupd shares the start-up step (nsqadmin too: one call in each
/// `main`, one function in `nsq_app::net`).
#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn nsqlookupd_raises_its_open_file_limit_too() {
    require_prlimit();
    let args: Vec<std::ffi::OsString> = vec![
        "--tcp-address=127.0.0.1:0".into(),
        "--http-address=127.0.0.1:0".into(),
    ];
    let lookupd = nsq_test_support::Daemon::spawn_wrapped(
        "nsqlookupd",
        &["prlimit", "--nofile=64:1024", "--"],
        &args,
    );
    assert!(
        lookupd.log_handle().contains("open file limit 1024"),
        "no limit logged:\n{}",
        lookupd.logs()
    );
}
