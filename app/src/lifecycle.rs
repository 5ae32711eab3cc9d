//! A daemon's life: the start its `main` shares (logging, limits, signal
//! handlers), and the stop every daemon begins its shutdown with: cancel the
//! token tree (listeners stop accepting, connections and background tasks
//! wind down), then wait for the tracked tasks, at most a grace period.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What a daemon's `main` does between its flags and its server: log as
/// `level`/`prefix`/`format` say, raise the open-file limit, log the version,
/// warn about the deprecated `--verbose`, and install the SIGINT/SIGTERM
/// handlers, before any listener is up so a SIGTERM never finds one without
/// them. Returns the log handle (for `PUT /config/log_level`) and the future
/// that resolves on the signal.
pub fn start(
    prog: &str,
    level: crate::LogLevel,
    prefix: &str,
    format: crate::LogFormat,
    verbose: bool,
) -> (crate::LogHandle, impl Future<Output = ()> + Send + 'static) {
    let log = crate::logging::init_with_format(level, prefix, format);
    crate::net::raise_open_file_limit();
    tracing::info!("{}", crate::flags::version_string(prog));
    if verbose {
        tracing::warn!("--verbose is deprecated and has no effect; use --log-level=debug");
    }
    (log, crate::signal::shutdown_signal())
}

/// A daemon that could not start: upstream logs why and exits 1.
pub fn exit_failed(prog: &str, e: impl std::fmt::Display) -> ! {
    tracing::error!("failed to instantiate {prog} - {e}");
    std::process::exit(1)
}

/// Cancel `cancel`, close `tracker` and wait for its tasks at most `grace`.
/// Returns false (and logs what is still open) when the grace ran out.
pub async fn stop(
    cancel: &CancellationToken,
    tracker: &TaskTracker,
    grace: Duration,
    open: &str,
) -> bool {
    cancel.cancel();
    tracker.close();
    let done = tokio::time::timeout(grace, tracker.wait()).await.is_ok();
    if !done {
        tracing::warn!("shutdown: {open} still open after {grace:?}");
    }
    done
}

/// A daemon's task tree: the token that tells its tasks to stop and the
/// tracker that waits for them. Dropping it cancels without waiting.
#[derive(Debug, Default)]
pub struct Tasks {
    pub cancel: CancellationToken,
    pub tracker: TaskTracker,
}

impl Tasks {
    /// Spawn, under this tree, the task `start` makes from its token and
    /// tracker (a server loop that spawns tasks of its own takes both).
    pub fn spawn<F>(&self, start: impl FnOnce(CancellationToken, TaskTracker) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker
            .spawn(start(self.cancel.clone(), self.tracker.clone()));
    }

    /// [`stop`] these tasks.
    pub async fn stop(&self, grace: Duration, open: &str) -> bool {
        stop(&self.cancel, &self.tracker, grace, open).await
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waits_for_tasks_and_gives_up_after_the_grace() {
        let (cancel, tracker) = (CancellationToken::new(), TaskTracker::new());
        let c = cancel.clone();
        tracker.spawn(async move { c.cancelled().await });
        assert!(stop(&cancel, &tracker, Duration::from_secs(1), "tasks").await);
        let (cancel, tracker) = (CancellationToken::new(), TaskTracker::new());
        tracker.spawn(std::future::pending::<()>());
        assert!(!stop(&cancel, &tracker, Duration::from_secs(1), "tasks").await);
    }
}
