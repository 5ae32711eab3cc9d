//! Signal handling of the real binaries: SIGTERM is a graceful shutdown (exit 0) from the
//! moment a daemon reports ready, as upstream's (go-svc installs its handlers before Start).

use std::ops::DerefMut;

use nsq_test_support::{Daemon, NsqdProcess, NsqlookupdProcess};

/// How many start/SIGTERM rounds: the race below has a window of microseconds to
/// milliseconds, so one round rarely hits it.
const ROUNDS: usize = 50;

/// Start a daemon with `start` and SIGTERM it as soon as it is ready, [`ROUNDS`] times: every
/// exit must be a success.
fn sigterm_right_after_ready<D: DerefMut<Target = Daemon>>(start: impl Fn() -> D) {
    for round in 0..ROUNDS {
        let mut daemon = start();
        let status = daemon.terminate();
        if !status.success() {
            daemon.fail(&format!(
                "round {round}: SIGTERM right after /ping OK gave {status}"
            ));
        }
    }
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn nsqd_sigterm_right_after_ready_is_graceful() {
    sigterm_right_after_ready(|| NsqdProcess::start(&[]));
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn nsqlookupd_sigterm_right_after_ready_is_graceful() {
    sigterm_right_after_ready(|| NsqlookupdProcess::start(&[]));
}
