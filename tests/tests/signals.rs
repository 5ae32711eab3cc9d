//! Signal handling of the real binaries: SIGTERM is a graceful shutdown (exit 0) from the
//! moment a daemon reports ready, as upstream's (go-svc installs its handlers before Start).

use nsq_test_support::{within, NsqdProcess, NsqlookupdProcess};

/// How many start/SIGTERM rounds: the race below has a window of microseconds to
/// milliseconds, so one round rarely hits it.
const ROUNDS: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nsqd_sigterm_right_after_ready_is_graceful() {
    within(async {
        for round in 0..ROUNDS {
            let mut nsqd = NsqdProcess::start(&[]);
            let status = nsqd.terminate();
            if !status.success() {
                nsqd.fail(&format!(
                    "round {round}: SIGTERM right after /ping OK gave {status}"
                ));
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nsqlookupd_sigterm_right_after_ready_is_graceful() {
    within(async {
        for round in 0..ROUNDS {
            let mut lookupd = NsqlookupdProcess::start(&[]);
            let status = lookupd.terminate();
            if !status.success() {
                lookupd.fail(&format!(
                    "round {round}: SIGTERM right after /ping OK gave {status}"
                ));
            }
        }
    })
    .await;
}
