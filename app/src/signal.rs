//! Waiting for the operator's request to stop (SIGINT or SIGTERM), which starts graceful shutdown.

use std::future::Future;

/// Install SIGINT and SIGTERM handlers now and return a future that resolves
/// on the first of them. Call it before binding any listener: until the
/// handlers exist, SIGTERM keeps its default action and kills the process
/// without a graceful shutdown.
///
/// If a handler cannot be installed the failure is logged and that signal is
/// simply not awaited: resolving would shut the server down at once, which is
/// worse than needing a harder kill.
#[cfg(unix)]
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};

    let listen = |kind: SignalKind, name: &str| match signal(kind) {
        Ok(stream) => Some(stream),
        Err(err) => {
            tracing::error!("cannot listen for {name}: {err}");
            None
        }
    };
    let mut interrupt = listen(SignalKind::interrupt(), "SIGINT");
    let mut terminate = listen(SignalKind::terminate(), "SIGTERM");
    async move {
        tokio::select! {
            _ = received(interrupt.as_mut()) => tracing::info!("received SIGINT, shutting down"),
            _ = received(terminate.as_mut()) => tracing::info!("received SIGTERM, shutting down"),
        }
    }
}

#[cfg(unix)]
async fn received(stream: Option<&mut tokio::signal::unix::Signal>) {
    match stream {
        Some(stream) => {
            stream.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// Outside Unix only Ctrl-C exists.
#[cfg(not(unix))]
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    async {
        match tokio::signal::ctrl_c().await {
            Ok(()) => tracing::info!("received Ctrl-C, shutting down"),
            Err(err) => {
                tracing::error!("cannot listen for Ctrl-C: {err}");
                std::future::pending::<()>().await
            }
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn resolves_on_sigterm_sent_before_the_first_poll() {
        // The handlers exist as soon as the call returns: a signal sent
        // before the future is ever polled must not kill the test process.
        let shutdown = shutdown_signal();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(10), shutdown)
            .await
            .expect("shutdown_signal should resolve after SIGTERM");
    }
}
