//! The accept loop every listener of every binary shares: stop on
//! cancellation, and back off instead of spinning when accepting fails; and
//! the open-file limit those connections count against.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const FIRST_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Bind a listener for a Go-style address: `:4160` (or an empty host) means
/// every interface, IPv6 and IPv4 where the system allows, and an empty
/// address means an ephemeral port, as Go's `net.Listen` does.
pub async fn listen(addr: &str) -> io::Result<TcpListener> {
    let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);
    let (host, port) = match addr.rsplit_once(':') {
        Some((host, port)) => (host, port),
        None if addr.is_empty() => ("", ""),
        None => return Err(invalid("missing port in address".into())),
    };
    let port: u16 = if port.is_empty() {
        0
    } else {
        port.parse()
            .map_err(|_| invalid(format!("invalid port {port:?}")))?
    };
    if host.is_empty() {
        return match TcpListener::bind(("::", port)).await {
            Ok(l) => Ok(l),
            Err(_) => TcpListener::bind(("0.0.0.0", port)).await,
        };
    }
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    TcpListener::bind((host, port)).await
}

/// Raise the soft open-file limit to the hard one, as Go's runtime does at
/// start (a systemd unit's usual soft 1024 would otherwise cap nsqd near a
/// thousand connections), and log the limit in force. Returns it.
pub fn raise_open_file_limit() -> Option<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("cannot read the open file limit: {e}");
            return None;
        }
    };
    let limit = if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                tracing::warn!("cannot raise the open file limit from {soft} to {hard}: {e}");
                soft
            }
        }
    } else {
        soft
    };
    tracing::info!("open file limit {limit} (connections, data files and sockets count)");
    Some(limit)
}

/// Accept connections on `listener` until `cancel` fires, handing each to
/// `on_conn` (which spawns its task). Accept errors (out of file descriptors
/// and the like) are logged and retried after a growing pause, as Go's
/// servers do, so the connections already open keep being served.
pub async fn accept_loop(
    listener: &TcpListener,
    cancel: &CancellationToken,
    what: &str,
    mut on_conn: impl FnMut(TcpStream, SocketAddr),
) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, remote)) => {
                backoff = FIRST_BACKOFF;
                on_conn(stream, remote);
            }
            Err(e) => {
                tracing::warn!("{what}: accept error: {e}; retrying in {backoff:?}");
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    if let Ok(addr) = listener.local_addr() {
        tracing::info!("{what}: closing {addr}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_open_file_limit_ends_at_the_hard_one() {
        use nix::sys::resource::{getrlimit, Resource};
        let limit = raise_open_file_limit().unwrap();
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!((soft, limit), (hard, hard));
    }

    #[tokio::test]
    async fn listens_on_go_style_addresses() {
        let l = listen("127.0.0.1:0").await.unwrap();
        assert!(l.local_addr().unwrap().ip().is_loopback());
        let l = listen("[::1]:0").await;
        // IPv6 may be off on the machine; the address still parses.
        if let Ok(l) = l {
            assert!(l.local_addr().unwrap().is_ipv6());
        }
        let err = listen("127.0.0.1").await.unwrap_err();
        assert_eq!(err.to_string(), "missing port in address");
        let err = listen("127.0.0.1:http").await.unwrap_err();
        assert_eq!(err.to_string(), "invalid port \"http\"");
    }

    #[tokio::test]
    async fn hands_over_connections_and_stops_when_cancelled() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cancel = CancellationToken::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let c = cancel.clone();
        let task = tokio::spawn(async move {
            accept_loop(&listener, &c, "TEST", |_, remote| {
                let _ = tx.send(remote);
            })
            .await
        });
        let client = TcpStream::connect(addr).await.unwrap();
        let seen = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(seen, client.local_addr().unwrap());
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }
}
