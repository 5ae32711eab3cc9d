//! The consumer's flow control over its connections: how many messages
//! they may be offered together (max-in-flight, backoff), how that is
//! spread as RDY, and RDY taking turns when connections outnumber it.

use std::sync::atomic::Ordering;

use nsq_protocol::Command;
use tracing::debug;

use super::{ConnEntry, State};
use crate::rdy::per_connection_rdy;
use crate::Config;

/// How many messages the connections together may be offered now.
fn budget(st: &State) -> u64 {
    if st.stopping || st.backoff.is_paused() {
        0
    } else if st.backoff.level() > 0 {
        // Backing off: one message at a time tests the water.
        1
    } else {
        st.max_in_flight
    }
}

/// Send every connection the RDY it should have now (`now`: the
/// consumer's ms clock), where that changed. With at least as much budget
/// as connections, each gets an even share. With less, RDY 1 goes to
/// `budget` of them: those that hold it keep it, then those that never had
/// it, then the others by how long ago they gave it up; [`redistribute`]
/// makes holders give it up.
pub(super) fn rebalance(st: &mut State, now: u64) {
    let budget = budget(st);
    let mut open: Vec<u64> = st
        .conns
        .iter()
        .filter(|(_, c)| !c.closing)
        .map(|(id, _)| *id)
        .collect();
    let share = if open.len() as u64 <= budget {
        None
    } else {
        open.sort_by_key(|id| {
            let c = &st.conns[id];
            (c.rdy == 0, c.released_at, *id)
        });
        Some(usize::try_from(budget).unwrap_or(usize::MAX))
    };
    let n = open.len();
    for (rank, id) in open.into_iter().enumerate() {
        let c = st.conns.get_mut(&id).expect("listed above");
        let target = match share {
            None => per_connection_rdy(budget, n, c.max_rdy),
            Some(turns) => u64::from(rank < turns).min(c.max_rdy),
        };
        set_rdy(c, target, now);
    }
    // A closing connection's RDY is already 0 at nsqd (CLS sets it).
    for c in st.conns.values_mut().filter(|c| c.closing) {
        c.rdy = 0;
    }
}

/// Send `RDY target` to an open connection if that is news to it.
fn set_rdy(c: &mut ConnEntry, target: u64, now: u64) {
    if target == c.rdy {
        return;
    }
    if c.rdy == 0 {
        c.granted_at = now;
    } else if target == 0 {
        c.released_at = Some(now);
    }
    c.rdy = target;
    let _ = c.tx.send(Command::Rdy(target));
}

/// The periodic turn when connections outnumber the budget: a connection
/// that has nothing in flight and received nothing for
/// `low_rdy_idle_timeout` since its turn began, or has had its turn for
/// `low_rdy_timeout`, gives RDY up, and [`rebalance`] hands it to those
/// that waited longest. (go-nsq also takes RDY from a connection whose
/// slow handler still holds its message, letting one more in flight.)
pub(super) fn redistribute(config: &Config, st: &mut State, now: u64) {
    let budget = budget(st);
    let open = st.conns.values().filter(|c| !c.closing).count() as u64;
    if budget == 0 || open <= budget {
        return;
    }
    let idle = config.low_rdy_idle_timeout.as_millis() as u64;
    let held = config.low_rdy_timeout.as_millis() as u64;
    for c in st.conns.values_mut() {
        if c.closing || c.rdy == 0 {
            continue;
        }
        let busy = c.activity.in_flight.load(Ordering::Relaxed) > 0;
        let active = c
            .activity
            .last_message
            .load(Ordering::Relaxed)
            .max(c.granted_at);
        let idle_too_long = !busy && now.saturating_sub(active) >= idle;
        if idle_too_long || now.saturating_sub(c.granted_at) >= held {
            debug!(addr = %c.addr, "RDY moves on to another nsqd");
            set_rdy(c, 0, now);
        }
    }
    rebalance(st, now);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::SentCommands;
    use crate::consumer::{ConnEntry, Origin};
    use crate::rdy::{Backoff, BackoffAction};
    use std::collections::{HashMap, HashSet};
    use std::sync::Arc;
    use std::time::Duration;

    /// `rebalance` with the budget taken from `config`, as the tests below
    /// state it.
    fn rebalance(config: &Config, st: &mut State, now: u64) {
        st.max_in_flight = config.max_in_flight;
        super::rebalance(st, now);
    }

    fn redistribute(config: &Config, st: &mut State, now: u64) {
        st.max_in_flight = config.max_in_flight;
        super::redistribute(config, st, now);
    }

    fn state(conns: &[u64]) -> (State, Vec<SentCommands>) {
        let mut st = State {
            conns: HashMap::new(),
            connecting: HashSet::new(),
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(60)),
            redistributing: false,
            stopping: false,
            max_in_flight: 1,
            work: None,
            workers_started: false,
        };
        let mut sinks = Vec::new();
        for (i, max_rdy) in conns.iter().enumerate() {
            let (tx, sink) = SentCommands::pair();
            st.conns.insert(
                i as u64,
                ConnEntry {
                    addr: format!("nsqd{i}:4150").into(),
                    origin: Origin::Direct,
                    tx,
                    max_rdy: *max_rdy,
                    rdy: 0,
                    granted_at: 0,
                    released_at: None,
                    activity: Arc::default(),
                    closing: false,
                },
            );
            sinks.push(sink);
        }
        (st, sinks)
    }

    fn config(max_in_flight: u64) -> Config {
        Config {
            max_in_flight,
            ..Config::default()
        }
    }

    /// Connection `id` last had a message at `ms`.
    fn last_message(st: &State, id: u64, ms: u64) {
        st.conns[&id]
            .activity
            .last_message
            .store(ms, Ordering::Relaxed);
    }

    /// Each connection's RDY as the consumer last set it, by index.
    fn rdys(st: &State) -> Vec<u64> {
        (0..st.conns.len() as u64)
            .map(|i| st.conns[&i].rdy)
            .collect()
    }

    #[test]
    fn rdy_is_spread_capped_and_sent_only_on_change() {
        let (mut st, mut sinks) = state(&[2500, 2500, 10]);
        rebalance(&config(90), &mut st, 0);
        assert_eq!(sinks[0].take(), ["RDY 30"]);
        assert_eq!(sinks[1].take(), ["RDY 30"]);
        // The server's max_rdy_count wins over the even share.
        assert_eq!(sinks[2].take(), ["RDY 10"]);
        rebalance(&config(90), &mut st, 0);
        assert!(sinks.iter_mut().all(|s| s.take().is_empty()));

        // A closing connection leaves its share to the others and gets no RDY
        // (CLS already set it to 0 at nsqd).
        st.conns.get_mut(&2).unwrap().closing = true;
        rebalance(&config(90), &mut st, 0);
        assert_eq!(sinks[0].take(), ["RDY 45"]);
        assert_eq!(sinks[1].take(), ["RDY 45"]);
        assert!(sinks[2].take().is_empty());
    }

    #[test]
    fn fewer_max_in_flight_than_connections_takes_turns() {
        let (mut st, mut sinks) = state(&[2500, 2500, 2500]);
        let c = Config {
            low_rdy_idle_timeout: Duration::from_millis(100),
            low_rdy_timeout: Duration::from_millis(1000),
            ..config(2)
        };
        // Never more RDY than max_in_flight: two connections get 1, one waits.
        rebalance(&c, &mut st, 0);
        assert_eq!(rdys(&st), [1, 1, 0]);
        assert_eq!(sinks[0].take(), ["RDY 1"]);
        assert_eq!(sinks[2].take(), Vec::<String>::new());

        // Both are busy and have not held RDY for long: nothing moves.
        last_message(&st, 0, 90);
        last_message(&st, 1, 90);
        redistribute(&c, &mut st, 150);
        assert_eq!(rdys(&st), [1, 1, 0]);

        // #1 goes idle: its RDY goes to #2, which never had a turn.
        last_message(&st, 0, 200);
        redistribute(&c, &mut st, 200);
        assert_eq!(rdys(&st), [1, 0, 1]);
        assert_eq!(sinks[1].take(), ["RDY 1", "RDY 0"]);
        assert_eq!(sinks[2].take(), ["RDY 1"]);

        // #0 is busy, but after low_rdy_timeout it gives way to #1, which
        // waited longest; busy #2 has had its turn for less long.
        last_message(&st, 0, 1000);
        last_message(&st, 2, 1000);
        redistribute(&c, &mut st, 1000);
        assert_eq!(rdys(&st), [0, 1, 1]);
        redistribute(&c, &mut st, 1050);
        assert_eq!(rdys(&st), [0, 1, 1]);

        // #2 goes idle: back to #0, which waited longer than #2 will.
        last_message(&st, 1, 1090);
        redistribute(&c, &mut st, 1100);
        assert_eq!(rdys(&st), [1, 1, 0]);

        // A connection closing hands its turn over at once.
        st.conns.get_mut(&1).unwrap().closing = true;
        rebalance(&c, &mut st, 1101);
        assert_eq!(rdys(&st), [1, 0, 1]);

        // Enough budget for everyone again: even shares.
        let (mut st, _sinks) = state(&[2500, 2500, 2500]);
        rebalance(&c, &mut st, 0);
        assert_eq!(rdys(&st), [1, 1, 0]);
        rebalance(&config(30), &mut st, 10);
        assert_eq!(rdys(&st), [10, 10, 10]);
        // And back: the first two keep RDY, now 1.
        rebalance(&c, &mut st, 20);
        assert_eq!(rdys(&st), [1, 1, 0]);

        // A slow handler's message keeps its connection's turn, though
        // nothing arrives, until low_rdy_timeout.
        let (mut st, _sinks) = state(&[2500, 2500]);
        let one = Config {
            max_in_flight: 1,
            ..c
        };
        rebalance(&one, &mut st, 0);
        assert_eq!(rdys(&st), [1, 0]);
        st.conns[&0].activity.in_flight.store(1, Ordering::Relaxed);
        redistribute(&one, &mut st, 500);
        assert_eq!(rdys(&st), [1, 0]);
        redistribute(&one, &mut st, 1000);
        assert_eq!(rdys(&st), [0, 1]);
    }

    #[test]
    fn backoff_pauses_everyone_then_probes_with_one_connection() {
        let (mut st, mut sinks) = state(&[2500, 2500]);
        let c = config(10);
        rebalance(&c, &mut st, 0);
        assert_eq!(sinks[0].take(), ["RDY 5"]);
        assert_eq!(sinks[1].take(), ["RDY 5"]);

        assert!(matches!(st.backoff.on_failure(), BackoffAction::Pause(_)));
        rebalance(&c, &mut st, 1);
        assert_eq!(sinks[0].take(), ["RDY 0"]);
        assert_eq!(sinks[1].take(), ["RDY 0"]);

        st.backoff.timer_fired();
        rebalance(&c, &mut st, 2);
        let probe = rdys(&st).iter().position(|&r| r == 1).expect("a probe");
        assert_eq!(rdys(&st).iter().sum::<u64>(), 1);
        assert_eq!(sinks[probe].take(), ["RDY 1"]);
        assert!(sinks[1 - probe].take().is_empty());

        // A probe that gets nothing hands RDY 1 to the other connection.
        let idle = c.low_rdy_idle_timeout.as_millis() as u64;
        redistribute(&c, &mut st, 2 + idle);
        assert_eq!(sinks[probe].take(), ["RDY 0"]);
        assert_eq!(sinks[1 - probe].take(), ["RDY 1"]);

        assert_eq!(st.backoff.on_success(), BackoffAction::Resume);
        rebalance(&c, &mut st, 3 + idle);
        assert_eq!(sinks[probe].take(), ["RDY 5"]);
        assert_eq!(sinks[1 - probe].take(), ["RDY 5"]);
    }
}
