//! The access-log line every daemon writes per HTTP request, in upstream's words.
//!
//! Upstream logs `200 GET /nodes (127.0.0.1:5000) 59.918µs` at INFO for
//! every request. Reads are what dashboards and consumers poll (nsqadmin's
//! sampler alone makes a `/nodes` line every few seconds on each lookupd,
//! Prometheus a `/metrics` line per scrape), so ours logs GET and HEAD at
//! DEBUG and keeps INFO for requests that change something, whose lines
//! are the ones an operator looks for.

use std::net::SocketAddr;
use std::time::Duration;

use hyper::{Method, Uri};

/// Log one finished request: `STATUS METHOD URI (REMOTE) ELAPSED`. The
/// elapsed time prints as Go prints a duration for the small values seen
/// here (`59.918µs`, `3.135075ms`), which is what Rust's `Debug` gives.
pub fn log_request(status: u16, method: &Method, uri: &Uri, remote: SocketAddr, elapsed: Duration) {
    if is_read(method) {
        tracing::debug!("{status} {method} {uri} ({remote}) {elapsed:?}");
    } else {
        tracing::info!("{status} {method} {uri} ({remote}) {elapsed:?}");
    }
}

/// Requests that only read: logged at DEBUG.
pub fn is_read(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_quiet_and_changes_are_not() {
        assert!(is_read(&Method::GET));
        assert!(is_read(&Method::HEAD));
        assert!(!is_read(&Method::POST));
        assert!(!is_read(&Method::PUT));
        assert!(!is_read(&Method::DELETE));
    }
}
