//! Waiting briefly for a peer's next bytes before a reader parks: a
//! bounded, adaptive busy-poll of the socket, shared by the readers that
//! wait on one answer at a time (a publisher's next command, a link's next
//! record on the holder, the peer's acknowledgement on the origin).
//!
//! A client that publishes one message at a time sends its next command
//! a few tens of microseconds after our answer; on a replicated pair each
//! of those publishes also crosses the link and back. Parking a reader and
//! letting the CPU go idle can cost more than that on a virtual machine:
//! the bytes must wake the runtime's poller, and an idle vCPU must be
//! woken by the host (about 25 µs each way on the 2-vCPU VM we measure
//! on; about 20 µs a round trip trying the socket instead). Where the
//! other end shares our CPU, though, parking is as quick or quicker. So
//! each reader measures how long its cycle (its wait, then the work on
//! what came) takes both ways now and then, and keeps the quicker one.
//!
//! The cost stays bounded: a try happens only after a small read that
//! drained the socket, lasts at most the reader's window and gives the
//! CPU to any other thread that wants it between tries; a reader whose
//! bytes did not come within the window stops trying until a wait is
//! short again. An idle server, or a reader whose peer pauses, spins not
//! at all, and a long pause is not counted in a trial.

use std::io::{self, Read};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::net::tcp::OwnedReadHalf;

/// Bytes one try takes off the socket: a few small commands. More than
/// this is read by the runtime's ordinary read.
const TRY_BYTES: usize = 4096;
/// A parked wait at most this many windows long makes spinning worth a
/// try again.
const HOPEFUL_WINDOWS: u32 = 4;
/// Waits timed per way in a trial; the first few after a switch are not
/// counted, while the scheduler settles the threads into the new pattern.
const TRIAL_WAITS: u32 = 48;
const SETTLE_WAITS: u32 = 16;
/// Waits between trials: enough that the trials of the slower way stay
/// well under 1% of the round trips, out of the 99th percentile, also
/// where three readers take turns in each (a publish on a replicated
/// pair: the publisher's connection, the link's holder, its origin).
const KEEP_WAITS: u32 = 32768;

/// The read side of a connection, as the spin sees it.
pub(crate) trait ReadNow {
    /// Read what the socket holds now, without waiting and without the
    /// runtime's readiness; `None` when this transport cannot (TLS and
    /// compression keep state between the socket and the bytes).
    fn read_now(&mut self, scratch: &mut [u8]) -> Option<io::Result<usize>>;
}

impl ReadNow for OwnedReadHalf {
    fn read_now(&mut self, scratch: &mut [u8]) -> Option<io::Result<usize>> {
        // The runtime made the socket non-blocking: this returns at once,
        // with `WouldBlock` when there is nothing. The runtime's readiness
        // is left as it is; at worst its next read finds nothing and waits.
        let sock = socket2::SockRef::from(self.as_ref());
        Some((&*sock).read(scratch))
    }
}

/// Which way of waiting is on trial, or kept.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    TrySpin,
    TryPark { spin: Duration },
    Keep,
}

/// One reader's spin state.
pub(crate) struct Spin {
    /// How long a spin tries; zero turns spinning off.
    window: Duration,
    /// The last read drained the socket, so the next one would park.
    drained: bool,
    /// The last wait was short enough for a spin to catch it.
    hopeful: bool,
    /// Spinning is the way kept (or on trial).
    spinning: bool,
    phase: Phase,
    /// Waits seen in this phase, and the cycles timed in a trial.
    waits: u32,
    cycles: Vec<Duration>,
    /// When the current wait for the peer began.
    waiting_since: Option<Instant>,
    /// When the previous one began: a cycle is from one to the next (our
    /// wait, then the work on what came, such as a command and its
    /// answer); `None` after a pause.
    last_wait: Option<Instant>,
    /// Where a try's bytes land before they join the input; allocated on
    /// the first try, so connections that never spin do not pay for it.
    scratch: Vec<u8>,
}

impl Spin {
    pub(crate) fn new(window: Duration) -> Self {
        Spin {
            window,
            drained: false,
            hopeful: true,
            spinning: true,
            phase: Phase::TrySpin,
            waits: 0,
            cycles: Vec::new(),
            waiting_since: None,
            last_wait: None,
            scratch: Vec::new(),
        }
    }

    /// The runtime's read returned `n` bytes into `room` free bytes.
    pub(crate) fn read_done(&mut self, n: usize, room: usize) {
        // Only small reads count: a client sending large batches is
        // after throughput, and its reads would only be cut into tries.
        self.drained = n < room && n < TRY_BYTES;
        if let Some(at) = self.waiting_since.take() {
            // A peer back soon may be worth a spin again. Soon is a few
            // windows: a parked wait includes the wake-ups a spin saves
            // (on a quiet VM, about 30 µs of a 45 µs wait).
            self.hopeful = at.elapsed() <= self.window * HOPEFUL_WINDOWS;
            if !self.hopeful {
                // A pause (an idle link's pings, a client thinking), not
                // a cycle either way would shorten: not timed.
                self.last_wait = None;
            }
        }
    }

    /// Try the socket for up to the window when the last read drained it
    /// and spinning pays on this reader; the bytes read are appended to
    /// `buf`. `None`: nothing came (or no try was made), so wait in the
    /// runtime.
    pub(crate) fn input<R: ReadNow>(
        &mut self,
        read: &mut R,
        buf: &mut BytesMut,
    ) -> Option<io::Result<usize>> {
        self.input_unless(read, buf, || false)
    }

    /// [`Self::input`], giving up the tries as soon as `give_way` says
    /// other work of this task waits (a link's records to write).
    pub(crate) fn input_unless<R: ReadNow>(
        &mut self,
        read: &mut R,
        buf: &mut BytesMut,
        mut give_way: impl FnMut() -> bool,
    ) -> Option<io::Result<usize>> {
        if self.window.is_zero() || !self.drained {
            return None;
        }
        let start = Instant::now();
        self.waiting_since = Some(start);
        if let Some(last) = self.last_wait.replace(start) {
            self.cycle(start - last);
        }
        if !(self.spinning && self.hopeful) {
            return None;
        }
        if self.scratch.is_empty() {
            self.scratch = vec![0; TRY_BYTES];
        }
        loop {
            if give_way() {
                return None;
            }
            match read.read_now(&mut self.scratch[..])? {
                Ok(n) => {
                    buf.extend_from_slice(&self.scratch[..n]);
                    self.drained = n < TRY_BYTES;
                    self.waiting_since = None;
                    return Some(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Some(Err(e)),
            }
            if start.elapsed() >= self.window {
                // Timed on to the end of the wait in the runtime.
                self.hopeful = false;
                return None;
            }
            // A peer on this CPU gets to run and send what we wait for.
            std::thread::yield_now();
        }
    }

    /// One cycle took `took`: count it for the way on trial, and
    /// move on to the next phase when this one is done.
    fn cycle(&mut self, took: Duration) {
        self.waits += 1;
        if self.phase != Phase::Keep && self.waits > SETTLE_WAITS {
            self.cycles.push(took);
        }
        let next = match self.phase {
            Phase::TrySpin if self.waits >= TRIAL_WAITS => Some(Phase::TryPark {
                spin: median(&mut self.cycles),
            }),
            Phase::TryPark { spin } if self.waits >= TRIAL_WAITS => {
                // Spinning costs CPU: keep it only for a clear gain.
                self.spinning = spin * 10 < median(&mut self.cycles) * 9;
                Some(Phase::Keep)
            }
            Phase::Keep if self.waits >= KEEP_WAITS => Some(Phase::TrySpin),
            _ => None,
        };
        if let Some(phase) = next {
            self.phase = phase;
            match phase {
                Phase::TrySpin => self.spinning = true,
                Phase::TryPark { .. } => self.spinning = false,
                Phase::Keep => {}
            }
            self.waits = 0;
            self.cycles.clear();
        }
    }
}

/// The median, robust to the odd cycle a preemption made long.
fn median(cycles: &mut [Duration]) -> Duration {
    if cycles.is_empty() {
        return Duration::ZERO;
    }
    cycles.sort_unstable();
    cycles[cycles.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A socket that answers tries from a script.
    struct Script(VecDeque<io::Result<Vec<u8>>>);

    impl ReadNow for Script {
        fn read_now(&mut self, scratch: &mut [u8]) -> Option<io::Result<usize>> {
            let next = self
                .0
                .pop_front()
                .unwrap_or_else(|| Err(io::ErrorKind::WouldBlock.into()));
            Some(next.map(|bytes| {
                scratch[..bytes.len()].copy_from_slice(&bytes);
                bytes.len()
            }))
        }
    }

    fn would_block() -> io::Result<Vec<u8>> {
        Err(io::ErrorKind::WouldBlock.into())
    }

    #[test]
    fn tries_only_after_a_read_that_drained_the_socket() {
        let mut spin = Spin::new(Duration::from_secs(5));
        let mut sock = Script(VecDeque::from([Ok(b"NOP\n".to_vec())]));
        let mut buf = BytesMut::new();
        // Nothing read yet: wait in the runtime.
        assert!(spin.input(&mut sock, &mut buf).is_none());
        // A full read leaves more on the socket for the runtime's read.
        spin.read_done(100, 100);
        assert!(spin.input(&mut sock, &mut buf).is_none());
        // A large batch that drained the socket: no tries either.
        spin.read_done(TRY_BYTES, 2 * TRY_BYTES);
        assert!(spin.input(&mut sock, &mut buf).is_none());
        spin.read_done(10, 100);
        assert_eq!(spin.input(&mut sock, &mut buf).unwrap().unwrap(), 4);
        assert_eq!(&buf[..], b"NOP\n");
    }

    #[test]
    fn keeps_trying_until_the_client_sends_and_passes_errors_on() {
        let mut spin = Spin::new(Duration::from_secs(5));
        spin.read_done(1, 100);
        let mut sock = Script(VecDeque::from([
            would_block(),
            Err(io::ErrorKind::Interrupted.into()),
            would_block(),
            Ok(b"PUB t\n".to_vec()),
            Err(io::ErrorKind::ConnectionReset.into()),
        ]));
        let mut buf = BytesMut::new();
        assert_eq!(spin.input(&mut sock, &mut buf).unwrap().unwrap(), 6);
        let err = spin.input(&mut sock, &mut buf).unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    }

    #[test]
    fn a_client_slower_than_the_window_stops_the_tries() {
        let mut spin = Spin::new(Duration::from_micros(200));
        spin.read_done(1, 100);
        let mut buf = BytesMut::new();
        let mut sock = Script(VecDeque::new());
        assert!(spin.input(&mut sock, &mut buf).is_none(), "window passed");
        // The runtime's read then took longer than a few windows: no tries.
        std::thread::sleep(Duration::from_millis(2));
        spin.read_done(1, 100);
        let mut sock = Script(VecDeque::from([Ok(b"x".to_vec())]));
        assert!(spin.input(&mut sock, &mut buf).is_none());
        assert_eq!(sock.0.len(), 1, "not tried");
        // A quick one makes tries worth it again.
        spin.read_done(1, 100);
        assert_eq!(spin.input(&mut sock, &mut buf).unwrap().unwrap(), 1);
    }

    #[test]
    fn gives_way_to_other_work_and_tries_again_next_time() {
        let mut spin = Spin::new(Duration::from_secs(5));
        spin.read_done(1, 100);
        let script = [would_block(), would_block(), Ok(b"x".to_vec())];
        let (mut sock, mut buf, mut asked) = (Script(script.into()), BytesMut::new(), 0);
        let tried = spin.input_unless(&mut sock, &mut buf, || {
            asked += 1;
            asked > 2
        });
        assert!(
            tried.is_none() && sock.0.len() == 1,
            "two tries, then gave way"
        );
        // Woken quickly in the runtime after all: still worth a spin.
        spin.read_done(1, 100);
        let got = spin.input(&mut sock, &mut buf).map(Result::unwrap);
        assert_eq!((got, &buf[..]), (Some(1), &b"x"[..]));
    }

    #[test]
    fn a_pause_is_not_timed_as_a_cycle() {
        let mut spin = Spin::new(Duration::from_millis(50));
        // Parking: each wait ends in the runtime's read.
        spin.spinning = false;
        let mut sock = Script(VecDeque::new());
        // A wait after `pause`; how many cycles were timed by then.
        let mut wait_after = |pause: Duration| {
            std::thread::sleep(pause);
            spin.read_done(1, 100);
            assert!(spin.input(&mut sock, &mut BytesMut::new()).is_none());
            spin.waits
        };
        assert_eq!(wait_after(Duration::ZERO), 0, "the first wait");
        assert_eq!(wait_after(Duration::ZERO), 1, "a short one: timed");
        // Far longer than HOPEFUL_WINDOWS windows: a pause (an idle
        // link's pings), which would drown a trial.
        assert_eq!(wait_after(Duration::from_millis(250)), 1, "not timed");
        assert_eq!(wait_after(Duration::ZERO), 2, "the next cycle is again");
    }

    #[test]
    fn zero_window_never_tries() {
        let mut spin = Spin::new(Duration::ZERO);
        spin.read_done(1, 100);
        let mut sock = Script(VecDeque::from([Ok(b"x".to_vec())]));
        assert!(spin.input(&mut sock, &mut BytesMut::new()).is_none());
        assert_eq!(sock.0.len(), 1);
    }

    /// Run a trial of both ways with these cycle times; whether spinning
    /// is kept.
    fn trial(spin_cycle: Duration, park_cycle: Duration) -> bool {
        let mut spin = Spin::new(Duration::from_micros(50));
        assert!(spin.spinning, "a connection starts on a spin trial");
        for _ in 0..TRIAL_WAITS {
            spin.cycle(spin_cycle);
        }
        assert!(!spin.spinning, "then parks for its trial");
        for i in 0..TRIAL_WAITS {
            // The odd preempted cycle does not sway the median.
            let odd = i % 7 == 0;
            spin.cycle(if odd {
                Duration::from_millis(5)
            } else {
                park_cycle
            });
        }
        assert_eq!(spin.phase, Phase::Keep);
        spin.spinning
    }

    #[test]
    fn keeps_the_quicker_way_and_spins_only_for_a_clear_gain() {
        let us = Duration::from_micros;
        assert!(trial(us(20), us(50)));
        assert!(!trial(us(20), us(17)));
        assert!(!trial(us(20), us(21)), "a tie parks: spinning costs CPU");
    }

    #[test]
    fn tries_both_ways_again_after_a_while() {
        let mut spin = Spin::new(Duration::from_micros(50));
        for _ in 0..2 * TRIAL_WAITS {
            spin.cycle(Duration::from_micros(20));
        }
        assert!(!spin.spinning);
        for _ in 0..KEEP_WAITS {
            spin.cycle(Duration::from_micros(20));
        }
        assert_eq!(spin.phase, Phase::TrySpin);
        assert!(spin.spinning);
    }
}
