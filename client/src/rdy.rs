//! The consumer's flow-control arithmetic, kept pure so it is unit-tested:
//! how max-in-flight is spread over connections, and the backoff levels.

use std::time::Duration;

/// The RDY each of `conns` connections gets: an even share of
/// `max_in_flight`, at least 1, never above what nsqd accepts (go-nsq and
/// pynsq use the same rule). With fewer `max_in_flight` than connections the
/// consumer instead gives RDY 1 to some of them in turns.
pub fn per_connection_rdy(max_in_flight: u64, conns: usize, max_rdy_count: u64) -> u64 {
    if conns == 0 {
        return 0;
    }
    (max_in_flight / conns as u64).max(1).min(max_rdy_count)
}

/// What the consumer must do to its connections after a handler result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackoffAction {
    /// Nothing changes.
    None,
    /// RDY 0 everywhere for this long; then RDY 1 on one connection, whose
    /// next result decides whether to go further down or up.
    Pause(Duration),
    /// Backoff is over: every connection returns to its normal RDY.
    Resume,
}

/// go-nsq's backoff: each failure raises the level, each success lowers it;
/// the pause at level n is `multiplier × 2^(n−1)`, capped. Results that
/// arrive while paused are ignored: they belong to messages taken before the
/// pause and say nothing new.
#[derive(Debug, Clone)]
pub struct Backoff {
    multiplier: Duration,
    max: Duration,
    level: u32,
    paused: bool,
}

impl Backoff {
    /// A zero `multiplier` disables backoff altogether.
    pub fn new(multiplier: Duration, max: Duration) -> Backoff {
        Backoff {
            multiplier,
            max,
            level: 0,
            paused: false,
        }
    }

    pub fn level(&self) -> u32 {
        self.level
    }

    /// True while the pause timer runs (all connections at RDY 0).
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// The pause at `level` (≥ 1).
    pub fn duration(&self, level: u32) -> Duration {
        let factor = 1u32
            .checked_shl(level.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.multiplier.saturating_mul(factor).min(self.max)
    }

    pub fn on_failure(&mut self) -> BackoffAction {
        if self.multiplier.is_zero() || self.paused {
            return BackoffAction::None;
        }
        // Stop raising once the pause is at its cap: more levels would only
        // need more successes to climb back.
        if self.level == 0 || self.duration(self.level) < self.max {
            self.level += 1;
        }
        self.paused = true;
        BackoffAction::Pause(self.duration(self.level))
    }

    pub fn on_success(&mut self) -> BackoffAction {
        if self.paused || self.level == 0 {
            return BackoffAction::None;
        }
        self.level -= 1;
        if self.level == 0 {
            BackoffAction::Resume
        } else {
            self.paused = true;
            BackoffAction::Pause(self.duration(self.level))
        }
    }

    /// The pause timer ran out: results count again.
    pub fn timer_fired(&mut self) {
        self.paused = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rdy_is_an_even_share_at_least_one_capped_by_the_server() {
        assert_eq!(per_connection_rdy(100, 0, 2500), 0);
        assert_eq!(per_connection_rdy(100, 1, 2500), 100);
        assert_eq!(per_connection_rdy(100, 3, 2500), 33);
        assert_eq!(per_connection_rdy(2, 5, 2500), 1);
        assert_eq!(per_connection_rdy(10_000, 2, 2500), 2500);
        assert_eq!(per_connection_rdy(1, 1, 2500), 1);
    }

    #[test]
    fn backoff_levels_rise_on_failure_and_fall_on_success() {
        let s = Duration::from_secs(1);
        let mut b = Backoff::new(s, Duration::from_secs(8));
        assert_eq!(b.on_success(), BackoffAction::None);
        assert_eq!(b.on_failure(), BackoffAction::Pause(s));
        // While paused, results are ignored.
        assert_eq!(b.on_failure(), BackoffAction::None);
        assert_eq!(b.on_success(), BackoffAction::None);
        b.timer_fired();
        assert_eq!(b.on_failure(), BackoffAction::Pause(2 * s));
        b.timer_fired();
        assert_eq!(b.on_failure(), BackoffAction::Pause(4 * s));
        b.timer_fired();
        assert_eq!(b.on_failure(), BackoffAction::Pause(8 * s));
        b.timer_fired();
        // Capped: the level stops rising once the pause hits the maximum.
        assert_eq!(b.on_failure(), BackoffAction::Pause(8 * s));
        assert_eq!(b.level(), 4);
        b.timer_fired();
        assert_eq!(b.on_success(), BackoffAction::Pause(4 * s));
        b.timer_fired();
        assert_eq!(b.on_success(), BackoffAction::Pause(2 * s));
        b.timer_fired();
        assert_eq!(b.on_success(), BackoffAction::Pause(s));
        b.timer_fired();
        assert_eq!(b.on_success(), BackoffAction::Resume);
        assert_eq!(b.level(), 0);
        assert!(!b.is_paused());
    }

    #[test]
    fn zero_multiplier_disables_backoff() {
        let mut b = Backoff::new(Duration::ZERO, Duration::from_secs(1));
        assert_eq!(b.on_failure(), BackoffAction::None);
        assert_eq!(b.level(), 0);
    }

    #[test]
    fn huge_levels_do_not_overflow() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(120));
        assert_eq!(b.duration(40), Duration::from_secs(120));
        assert_eq!(b.duration(u32::MAX), Duration::from_secs(120));
    }
}
