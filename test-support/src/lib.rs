//! What every test crate shares: starting daemons, talking to them, waiting on them.
//!
//! Every test crate of the workspace takes this crate as a dev-dependency (production crates
//! never depend on it). It depends on the nsqd and nsqlookupd libraries for [`in_process`];
//! their integration tests depending back on it is a cycle Cargo allows, as those tests are
//! crates of their own.
//!
//! - [`binary`]: path to a binary, built once per test process with `cargo build` (or taken
//!   from `NSQ_TEST_BIN_DIR`).
//! - [`NsqdProcess`] / [`NsqlookupdProcess`]: a daemon on loopback port 0, ready (listeners
//!   announced, `/ping` = `OK`) when `start` returns; SIGKILL/SIGTERM helpers; killed on drop.
//!   [`NsqlookupdProcess::restart`] brings a lookupd back on the same addresses.
//!   [`NsqadminProcess`]: nsqadmin (HTTP only) pointed at lookupds or nsqds.
//! - [`in_process`]: an nsqd or nsqlookupd inside the test process, for the daemons' own tests.
//! - [`http_get`] / [`http_post`]: a blocking HTTP/1.1 client returning status, headers, body;
//!   [`http_keepalive`] an async one sending requests as curl does; [`samples`]: the golden
//!   upstream responses and the comparisons against them.
//! - [`RawConn`]: a raw V2 protocol client with per-read deadlines; [`RawLookupConn`] the
//!   same for nsqlookupd's V1 protocol.
//! - [`consumer`]: the `nsq` crate's consumer as its tests drive it (recording bodies,
//!   connected straight to nsqds, received n at a time).
//! - [`wait_until`] / [`poll`]: wait for a state change with a deadline instead of sleeping.
//! - [`within`]: bound a whole async test in time; [`macro@test`] (`#[nsq_test_support::test]`)
//!   is `#[tokio::test]` with the body run by `within`, the way every end-to-end test starts.
//! - [`Certs`]: a CA and a certificate for 127.0.0.1 as PEM files, for TLS tests;
//!   [`AuthServer`]: an `--auth-http-address` server answering from a script.
//!
//! Every wait has a deadline; timeouts panic with the daemon's collected logs. Nothing binds a
//! fixed port and nothing sleeps to synchronise.
//!
//! ```no_run
//! # async fn demo() {
//! use nsq_test_support::{within, NsqdProcess};
//! within(async {
//!     let nsqd = NsqdProcess::start(&["--msg-timeout=5s"]);
//!     let mut c = nsqd.connect().await;
//!     c.identify_ok(serde_json::json!({})).await;
//!     c.publish("t", b"hello").await;
//! })
//! .await;
//! # }
//! ```
//!
//! or, as a whole test (the arguments are `tokio::test`'s):
//!
//! ```no_run
//! use nsq_test_support::NsqdProcess;
//!
//! #[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
//! async fn publishes() {
//!     let nsqd = NsqdProcess::start(&[]);
//!     nsqd.connect().await.publish("t", b"hello").await;
//! }
//! ```

pub mod admin;
pub mod auth_server;
pub mod binary;
pub mod certs;
pub mod consumer;
pub mod daemon;
pub mod fake_node;
pub mod http;
pub mod in_process;
pub mod logs;
pub mod nsqd_stats;
pub mod prometheus;
pub mod raw;
pub mod raw_lookup;
pub mod samples;
pub mod tool;

use std::fmt::{Debug, Display};
use std::future::Future;
use std::time::Duration;

pub use auth_server::AuthServer;
pub use binary::{all_binaries_dir, binary, target_dir};
pub use certs::Certs;
pub use daemon::{Daemon, Logs, NsqadminProcess, NsqdProcess, NsqlookupdProcess};
pub use http::{
    http_exchange, http_get, http_keepalive, http_post, http_request, http_request_with_headers,
    HttpResponse,
};
pub use nsq_test_macros::test;
pub use raw::{channel, describe, topic, RawConn, ReadError, READ_TIMEOUT};
pub use raw_lookup::{LookupRead, RawLookupConn};

/// The bound on one whole end-to-end test.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Run `fut` to completion or panic after [`TEST_TIMEOUT`].
pub async fn within<F: Future>(fut: F) -> F::Output {
    within_for(TEST_TIMEOUT, fut).await
}

/// Run `fut` to completion or panic after `limit`.
///
/// The daemons' binaries are built (once per test process) before the
/// clock starts: on a fresh checkout that build takes longer than a test may.
pub async fn within_for<F: Future>(limit: Duration, fut: F) -> F::Output {
    // Blocking is fine here: nothing else of the test runs yet, whatever
    // the runtime's flavor.
    binary("nsqd");
    match tokio::time::timeout(limit, fut).await {
        Ok(out) => out,
        Err(_) => panic!("test did not finish within {limit:?}"),
    }
}

/// Interval between [`wait_until`] probes: it bounds how late a change is seen, not whether.
pub const WAIT_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Poll `probe` until it returns `Ok`, for at most `limit`; the way to wait for state another
/// process changes on its own (a registration reaching lookupd, a timeout expiring) without
/// sleeping a guessed amount.
///
/// On timeout returns `Err` naming `what` and the last `Err` the probe gave, so the failure
/// says what was seen instead; callers add the daemons' logs (e.g. with [`Daemon::fail`]).
/// The probe may block briefly (e.g. [`http_get`]); it runs on the test's runtime thread.
pub async fn wait_until<T, E: Display>(
    limit: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<T, E>,
) -> Result<T, String> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let last = match probe() {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "timed out after {limit:?} waiting until {what}; last seen: {last}"
            ));
        }
        tokio::time::sleep(WAIT_POLL_INTERVAL).await;
    }
}

/// `Ok` when nothing is `missing`, else an `Err` listing what is: the usual answer of a
/// [`wait_until`] probe that looks for several things at once.
pub fn nothing_missing<T: Debug>(missing: &[T]) -> Result<(), String> {
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("missing {missing:#?}"))
    }
}

/// [`wait_until`] `probe` returns `want`; on timeout the error shows the last value seen.
pub async fn wait_for_value<T: PartialEq + Debug>(
    limit: Duration,
    what: &str,
    want: T,
    mut probe: impl FnMut() -> T,
) -> Result<(), String> {
    wait_until(limit, what, || match probe() {
        got if got == want => Ok(()),
        got => Err(format!("{got:?}")),
    })
    .await
}

/// Longest [`poll`] waits.
pub const POLL_LIMIT: Duration = Duration::from_secs(10);

/// Await `probe` until it yields `Some`, panicking (naming `what`) after [`POLL_LIMIT`]; the
/// async twin of [`wait_until`] for probes that await (an HTTP request, a lookup).
pub async fn poll<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + POLL_LIMIT;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {POLL_LIMIT:?} waiting for {what}"
        );
        tokio::time::sleep(WAIT_POLL_INTERVAL).await;
    }
}
