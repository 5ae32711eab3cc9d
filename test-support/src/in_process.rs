//! Daemons run inside the test process, for the nsqd and nsqlookupd crates' own tests: a real
//! `nsqd::Server` or `nsqlookupd::Lookupd` on loopback port 0 (nsqd with a temporary
//! `--data-path`), whose internals a test may inspect, plus the bounds those tests run under.
//!
//! Unlike [`crate::NsqdProcess`] nothing here starts a binary, so nothing is built first.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use nsqd::{Options, Server};
use tokio_util::sync::CancellationToken;

use crate::http::{http_keepalive, HttpResponse};

/// Longest wait for one step (a request, a frame, a start).
pub const STEP: Duration = Duration::from_secs(10);
/// Longest a whole in-process test may take.
pub const TEST: Duration = Duration::from_secs(60);

/// `#[in_process::test]`: `#[tokio::test]` with the body run by [`within`].
pub use nsq_test_macros::in_process_test as test;

/// Run a test body under [`TEST`].
pub async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(TEST, f).await.expect("test timed out")
}

/// A running in-process nsqd; stopped (and its data path removed) on drop.
pub struct Nsqd {
    pub tcp: SocketAddr,
    pub http: SocketAddr,
    pub inner: Arc<nsqd::Nsqd>,
    stop: CancellationToken,
    pub data: tempfile::TempDir,
}

impl Drop for Nsqd {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A running nsqd on 127.0.0.1 port 0 (TCP and HTTP) with extra flags.
pub async fn start(args: &[&str]) -> Nsqd {
    start_with(args, |_| {}).await
}

/// As [`start`], with a hook on the bound server before it runs.
pub async fn start_with(args: &[&str], hook: impl FnOnce(&Server)) -> Nsqd {
    let data = tempfile::tempdir().expect("temporary data path");
    let data_arg = format!("--data-path={}", data.path().display());
    let mut argv = vec![
        "nsqd",
        "--tcp-address=127.0.0.1:0",
        "--http-address=127.0.0.1:0",
        "--node-id=1",
        data_arg.as_str(),
    ];
    argv.extend_from_slice(args);
    let opts: Options = nsq_app::flags::try_parse_options("nsqd", argv.iter().map(Into::into), &[])
        .unwrap_or_else(|e| panic!("nsqd flags {argv:?}: {e}"));
    let server = tokio::time::timeout(STEP, Server::bind(opts))
        .await
        .expect("nsqd bind timed out")
        .expect("nsqd binds");
    hook(&server);
    let tcp = server.tcp_addr();
    let http = server.http_addr().expect("HTTP listener");
    let inner = server.nsqd();
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move { server.run(s.cancelled_owned()).await });
    Nsqd {
        tcp,
        http,
        inner,
        stop,
        data,
    }
}

/// A running in-process nsqlookupd with `opts`.
pub async fn start_lookupd(opts: nsqlookupd::Options) -> nsqlookupd::Lookupd {
    tokio::time::timeout(STEP, nsqlookupd::Lookupd::new(opts))
        .await
        .expect("lookupd start timed out")
        .expect("lookupd starts")
}

/// Something with an HTTP listener to send [`http`] requests to.
pub trait HttpAddr {
    fn http_addr(&self) -> SocketAddr;
}

impl HttpAddr for Nsqd {
    fn http_addr(&self) -> SocketAddr {
        self.http
    }
}

impl HttpAddr for nsqlookupd::Lookupd {
    fn http_addr(&self) -> SocketAddr {
        nsqlookupd::Lookupd::http_addr(self)
    }
}

impl HttpAddr for SocketAddr {
    fn http_addr(&self) -> SocketAddr {
        *self
    }
}

/// POST `target` with an empty body and assert nsqd's empty 200 answer
/// ([`HttpResponse::assert_empty_ok`]).
pub async fn post_ok(to: &impl HttpAddr, target: &str) {
    http(to, "POST", target, b"").await.assert_empty_ok();
}

/// `method target` with no body, asserting nsqd's error answer: `status` and
/// `{"message": name}` ([`HttpResponse::assert_error`]).
pub async fn http_error(to: &impl HttpAddr, method: &str, target: &str, status: u16, name: &str) {
    http(to, method, target, b"")
        .await
        .assert_error(status, name);
}

/// One request as curl sends it (see [`http_keepalive`]), without extra headers.
pub async fn http(to: &impl HttpAddr, method: &str, target: &str, body: &[u8]) -> HttpResponse {
    http_keepalive(to.http_addr(), method, target, &[], body).await
}
