//! How long an HTTP client may hold a connection without finishing a
//! request, for every daemon's HTTP port (upstream has no limit, so a
//! slowloris client keeps a connection, and a file descriptor, forever).
//!
//! - header: the time a client has to send a complete request header,
//!   counted from when the server is ready for it (hyper's header read
//!   timeout); so a keep-alive connection left idle that long is closed too.
//! - idle: a connection on which no byte moves either way for this long is
//!   closed (a request body that stops coming, a client that stops reading
//!   its answer). Handlers answer well within it.
//!
//! A serve loop builds its `http1::Builder` from [`HttpTimeouts::builder`],
//! wraps its stream with [`HttpTimeouts::watch`], and drops the connection
//! when the returned [`IdleWatch`] fires.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::TokioTimer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Our defaults for `--http-header-timeout` and `--http-idle-timeout`.
pub const DEFAULT_HEADER: Duration = Duration::from_secs(30);
pub const DEFAULT_IDLE: Duration = Duration::from_secs(60);

/// `--http-header-timeout` and `--http-idle-timeout`, flattened into every
/// daemon's flags.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct HttpTimeoutFlags {
    /// Ours: time an HTTP client has to send a whole request header, counted
    /// from when the server is ready for it (so also how long an idle
    /// keep-alive connection stays open); 0 = no limit.
    #[arg(long, default_value = "30s")]
    pub http_header_timeout: crate::GoDuration,
    /// Ours: an HTTP connection on which no byte moves either way for this
    /// long is closed (a stalled request body, a client that stops
    /// reading); 0 = no limit.
    #[arg(long, default_value = "1m0s")]
    pub http_idle_timeout: crate::GoDuration,
}

impl HttpTimeoutFlags {
    pub fn timeouts(&self) -> HttpTimeouts {
        HttpTimeouts {
            header: self.http_header_timeout.0,
            idle: self.http_idle_timeout.0,
        }
    }
}

/// The two limits; zero turns one off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpTimeouts {
    pub header: Duration,
    pub idle: Duration,
}

impl Default for HttpTimeouts {
    fn default() -> Self {
        HttpTimeouts {
            header: DEFAULT_HEADER,
            idle: DEFAULT_IDLE,
        }
    }
}

impl HttpTimeouts {
    /// An HTTP/1 server builder with the header timeout set.
    pub fn builder(&self) -> http1::Builder {
        let mut b = http1::Builder::new();
        b.timer(TokioTimer::new());
        b.header_read_timeout((!self.header.is_zero()).then_some(self.header));
        b
    }

    /// `stream`, counting when bytes last moved, and the watch that fires
    /// once none have for the idle timeout.
    pub fn watch<S>(&self, stream: S) -> (Watched<S>, IdleWatch) {
        let epoch = Instant::now();
        let last = Arc::new(AtomicU64::new(0));
        (
            Watched {
                inner: stream,
                epoch,
                last: Arc::clone(&last),
            },
            IdleWatch {
                idle: self.idle,
                epoch,
                last,
            },
        )
    }
}

/// A stream that notes the time of its last read or write.
#[derive(Debug)]
pub struct Watched<S> {
    inner: S,
    epoch: Instant,
    /// Milliseconds after `epoch` of the last byte moved; shared with the
    /// connection's [`IdleWatch`].
    last: Arc<AtomicU64>,
}

impl<S> Watched<S> {
    fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last.store(ms, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Fires when the watched connection has been silent for the idle timeout.
#[derive(Debug)]
pub struct IdleWatch {
    idle: Duration,
    epoch: Instant,
    last: Arc<AtomicU64>,
}

impl IdleWatch {
    /// Resolves once no byte has moved for the idle timeout (never when it
    /// is zero).
    pub async fn expired(self) {
        if self.idle.is_zero() {
            return std::future::pending().await;
        }
        loop {
            let last = self.epoch + Duration::from_millis(self.last.load(Ordering::Relaxed));
            let deadline = last + self.idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn the_watch_fires_only_after_silence() {
        let t = HttpTimeouts {
            header: Duration::from_secs(1),
            idle: Duration::from_secs(10),
        };
        let (a, mut b) = tokio::io::duplex(64);
        let (mut a, watch) = t.watch(a);
        let watch = tokio::spawn(watch.expired());
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            b.write_all(b"x").await.unwrap();
            let mut one = [0u8; 1];
            a.read_exact(&mut one).await.unwrap();
            assert!(!watch.is_finished(), "traffic keeps the connection");
        }
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert!(watch.is_finished(), "silence closes it");
    }

    #[tokio::test(start_paused = true)]
    async fn zero_turns_the_idle_timeout_off() {
        let t = HttpTimeouts {
            header: Duration::ZERO,
            idle: Duration::ZERO,
        };
        let (a, _b) = tokio::io::duplex(64);
        let (_a, watch) = t.watch(a);
        let watch = tokio::spawn(watch.expired());
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(!watch.is_finished());
    }
}
