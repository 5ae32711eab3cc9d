//! Harness for end-to-end tests that start the real `nsqd` / `nsqlookupd` binaries.
//!
//! - [`binary`]: path to a binary, built once per test process with `cargo build`.
//! - [`NsqdProcess`] / [`NsqlookupdProcess`]: a daemon on loopback port 0, ready (listeners
//!   announced, `/ping` = `OK`) when `start` returns; SIGKILL/SIGTERM helpers; killed on drop.
//! - [`http_get`] / [`http_post`]: a blocking HTTP/1.1 client returning status, headers, body.
//! - [`RawConn`]: a raw V2 protocol client with per-read deadlines.
//! - [`within`]: bound a whole async test in time.
//!
//! Every wait has a deadline; timeouts panic with the daemon's collected logs. Nothing binds a
//! fixed port and nothing sleeps to synchronise.
//!
//! ```no_run
//! # async fn demo() {
//! use nsq_tests::{within, NsqdProcess};
//! within(async {
//!     let nsqd = NsqdProcess::start(&["--msg-timeout=5s"]);
//!     let mut c = nsqd.connect().await;
//!     c.identify_ok(serde_json::json!({})).await;
//!     c.publish("t", b"hello").await;
//! })
//! .await;
//! # }
//! ```

pub mod binary;
pub mod daemon;
pub mod http;
pub mod raw;

use std::future::Future;
use std::time::Duration;

pub use binary::binary;
pub use daemon::{Daemon, Logs, NsqdProcess, NsqlookupdProcess};
pub use http::{http_get, http_post, http_request, HttpResponse};
pub use raw::{channel, describe, topic, RawConn, ReadError, READ_TIMEOUT};

/// The bound on one whole end-to-end test.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Run `fut` to completion or panic after [`TEST_TIMEOUT`].
pub async fn within<F: Future>(fut: F) -> F::Output {
    within_for(TEST_TIMEOUT, fut).await
}

/// Run `fut` to completion or panic after `limit`.
pub async fn within_for<F: Future>(limit: Duration, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(out) => out,
        Err(_) => panic!("test did not finish within {limit:?}"),
    }
}
