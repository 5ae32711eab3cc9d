//! Waiting for the operator's request to stop (SIGINT or SIGTERM), which starts graceful shutdown.

/// Resolves on the first SIGINT or SIGTERM received after its first poll.
///
/// If a handler cannot be installed the failure is logged and that signal is
/// simply not awaited: resolving would shut the server down at once, which is
/// worse than needing a harder kill.
#[cfg(unix)]
pub async fn shutdown_signal() {
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
    tokio::select! {
        _ = received(interrupt.as_mut()) => tracing::info!("received SIGINT, shutting down"),
        _ = received(terminate.as_mut()) => tracing::info!("received SIGTERM, shutting down"),
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
pub async fn shutdown_signal() {
    match tokio::signal::ctrl_c().await {
        Ok(()) => tracing::info!("received Ctrl-C, shutting down"),
        Err(err) => {
            tracing::error!("cannot listen for Ctrl-C: {err}");
            std::future::pending::<()>().await
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn resolves_on_sigterm() {
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        // One poll installs the handlers; only then is it safe to send a
        // signal whose default action would kill the test process.
        tokio::select! {
            biased;
            _ = &mut shutdown => panic!("resolved before any signal"),
            _ = std::future::ready(()) => {}
        }
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
