//! Choosing the destination of the next request among several (nsq_to_http's
//! endpoints, nsq_to_nsq's nsqds): round-robin, or hostpool, which skips a
//! destination that failed for a while.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How the next destination is chosen (upstream's `--mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    RoundRobin,
    /// Round-robin over the destinations not marked down; a failed one is
    /// down for a while, longer each time it fails again.
    HostPool,
}

impl Mode {
    /// Upstream's names; epsilon-greedy (a hostpool that also weighs
    /// response times) is taken as hostpool.
    pub fn parse(mode: &str) -> Result<Mode, BadMode> {
        match mode {
            "round-robin" => Ok(Mode::RoundRobin),
            "hostpool" | "epsilon-greedy" => Ok(Mode::HostPool),
            other => Err(BadMode(other.to_owned())),
        }
    }
}

/// A `--mode` this tool does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid --mode {0:?}: round-robin or hostpool")]
pub struct BadMode(pub String);

/// The endpoints and which of them are down. Locked briefly by handlers to
/// pick an address and to record its result; never across an `.await`.
pub struct Targets {
    addrs: Vec<String>,
    mode: Mode,
    next: AtomicUsize,
    /// Per address: down until this instant, and the next pause if it fails again.
    down: Mutex<Vec<(Option<Instant>, Duration)>>,
}

/// A failed address in hostpool mode rests this long first, doubling up to
/// [`MAX_REST`] (go-hostpool's schedule).
const FIRST_REST: Duration = Duration::from_secs(30);
const MAX_REST: Duration = Duration::from_secs(900);

impl Targets {
    pub fn new(addrs: Vec<String>, mode: Mode) -> Targets {
        let down = vec![(None, FIRST_REST); addrs.len()];
        Targets {
            addrs,
            mode,
            next: AtomicUsize::new(0),
            down: Mutex::new(down),
        }
    }

    /// The address at `i` (from [`Targets::pick`]).
    pub fn addr(&self, i: usize) -> &str {
        &self.addrs[i]
    }

    /// The index of the address for the next request.
    pub fn pick(&self) -> usize {
        let n = self.addrs.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        if self.mode == Mode::RoundRobin {
            return start;
        }
        let now = Instant::now();
        let down = self.down.lock().expect("targets lock");
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| down[i].0.is_none_or(|until| until <= now))
            // All down: try them anyway rather than stall.
            .unwrap_or(start)
    }

    pub fn mark(&self, i: usize, ok: bool) {
        if self.mode != Mode::HostPool {
            return;
        }
        let mut down = self.down.lock().expect("targets lock");
        let (until, rest) = &mut down[i];
        if ok {
            *until = None;
            *rest = FIRST_REST;
        } else {
            *until = Some(Instant::now() + *rest);
            *rest = (*rest * 2).min(MAX_REST);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hostpool_skips_a_failed_address_and_round_robin_does_not() {
        let addrs = vec!["a".to_string(), "b".into(), "c".into()];
        let rr = Targets::new(addrs.clone(), Mode::RoundRobin);
        rr.mark(1, false);
        assert_eq!(
            (0..6).map(|_| rr.pick()).collect::<Vec<_>>(),
            [0, 1, 2, 0, 1, 2]
        );

        let pool = Targets::new(addrs, Mode::HostPool);
        pool.mark(1, false);
        assert_eq!(
            (0..4).map(|_| pool.pick()).collect::<Vec<_>>(),
            [0, 2, 2, 0]
        );
        pool.mark(1, true);
        assert_eq!(pool.pick(), 1);
        // Everything down: still picks something.
        for i in 0..3 {
            pool.mark(i, false);
        }
        assert!(pool.pick() < 3);
    }
}
