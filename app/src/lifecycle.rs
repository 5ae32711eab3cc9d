//! The stop every daemon begins its shutdown with: cancel the token tree
//! (listeners stop accepting, connections and background tasks wind down),
//! then wait for the tracked tasks, at most a grace period.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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
