//! Checks on the harness itself, so later end-to-end tests can rely on it: readiness, HTTP,
//! signals, restart on the same data directory, nsqlookupd startup and restart on the same
//! addresses, and polling with a deadline.

use std::time::Duration;

use nsq_test_support::{wait_until, NsqdProcess, NsqlookupdProcess};

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn nsqd_starts_ready_stops_and_restarts_on_its_data_dir() {
    let mut nsqd = NsqdProcess::start(&[]);
    assert!(nsqd.tcp_addr().ip().is_loopback() && nsqd.tcp_addr().port() != 0);
    assert!(nsqd.http_addr().ip().is_loopback() && nsqd.http_addr().port() != 0);
    assert!(nsqd.logs().contains("TCP: listening on"), "{}", nsqd.logs());
    let info = nsqd.http_get("/info").json();
    assert_eq!(info["version"], "1.3.0", "{info}");
    let mut c = nsqd.connect_identified().await;
    c.publish("harness", b"x").await;

    // SIGTERM ends the process; a restart reuses the same data directory on new ports.
    // (Not `stop()`, which also demands exit 0: see signals.rs for the startup race that
    // can make an early SIGTERM fatal.)
    let data = nsqd.data_path().to_path_buf();
    nsqd.terminate();
    assert!(!nsqd.is_running());
    let mut nsqd = nsqd.restart(&[]);
    assert_eq!(nsqd.data_path(), data);
    assert!(nsqd.is_running());

    // SIGKILL is reported as death by signal, not as an exit code.
    let status = nsqd.kill();
    assert!(!status.success() && status.code().is_none(), "{status}");

    // A test-owned directory works too, and outlives the process.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nsqd = NsqdProcess::start_with_data_dir(dir.path(), &[]);
    assert_eq!(nsqd.data_path(), dir.path());
    nsqd.terminate();
    assert!(dir.path().is_dir());
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn nsqlookupd_starts_ready() {
    let mut lookupd = NsqlookupdProcess::start(&[]);
    assert_eq!(lookupd.http_get("/ping").text(), "OK");
    assert!(lookupd.tcp_addr().port() != 0);
    lookupd.terminate();
    assert!(!lookupd.is_running());
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn nsqlookupd_restarts_on_the_same_addresses() {
    let lookupd = NsqlookupdProcess::start(&[]);
    let (tcp, http) = (lookupd.tcp_addr(), lookupd.http_addr());
    // An HTTP exchange first, so the old process leaves a TIME_WAIT socket on its port.
    assert_eq!(lookupd.http_get("/ping").text(), "OK");
    let lookupd = lookupd.restart(&[]);
    assert_eq!((lookupd.tcp_addr(), lookupd.http_addr()), (tcp, http));
    assert_eq!(lookupd.http_get("/ping").text(), "OK");
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_until_returns_the_first_success_or_what_it_last_saw() {
    let mut probes = 0;
    let got = wait_until(Duration::from_secs(10), "three probes", || {
        probes += 1;
        if probes >= 3 {
            Ok(probes)
        } else {
            Err(probes)
        }
    })
    .await;
    assert_eq!(got, Ok(3));
    let err = wait_until(Duration::from_millis(50), "the impossible", || {
        Err::<(), _>("still nothing")
    })
    .await
    .unwrap_err();
    assert!(
        err.contains("the impossible") && err.contains("still nothing"),
        "{err}"
    );
}
