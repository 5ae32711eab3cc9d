//! Replicated nsqd pairs: every message a node accepts is also held by its
//! peers (`--replica`), so losing a whole machine loses nothing that was
//! acknowledged. Primary-backup with timeouts, no consensus.
//!
//! # Roles
//! Each node is the *origin* of the messages published to it and the
//! *holder* of a shadow copy of each peer's. A pair is `A --replica=B` plus
//! `B --replica=A`: two links, one per direction, each opened by the origin
//! to the holder's `--replication-address`. Only the origin delivers.
//!
//! # The link (see `wire.rs` for the bytes)
//! The holder sends a challenge (`Auth`); the origin sends `Hello` (its
//! replication address as identity, and an incarnation drawn at process
//! start) and its answer and own challenge (`Auth`); the holder refuses
//! origins it does not list in `--replica` or that fail the challenge, and
//! answers the origin's, which refuses a holder that fails it
//! (`--replication-secret-file`, `peer_auth.rs`; without it the proofs are
//! zeros and not checked). Until then neither side accepts a frame larger
//! than a Hello. The holder then tells the origin which of its messages it
//! *took over* (`TakenOver` frames) and sends `Welcome`. The origin then
//! sends `Reset` and a full copy (`full_copy.rs`: channels created, paused;
//! each topic's and channel's queued, in-flight and deferred messages, from
//! memory and from the disk queues they spilled to), interleaved with the
//! live stream of records, each with a sequence number:
//! `Append` (a publish), `Finish` (ids FINished on a channel, batched every
//! 25 ms), `Meta` (channel created/deleted/emptied/paused, topic
//! deleted/emptied/paused). The holder applies each record to its shadow of
//! that origin and answers `Ack` with the highest sequence applied. The
//! origin sends `Ping` when idle; either side drops the link after
//! `--replica-timeout` without hearing from the other.
//!
//! # States (per peer, as the origin sees it)
//! * `down`: no link. Publishes do not wait for it.
//! * `catching_up`: linked, but the peer has not yet acknowledged everything
//!   up to the point where it fell behind (the end of the full copy, or the
//!   last record sent when an ack took longer than `--replica-timeout`). It
//!   receives every record but publishes do not wait for it.
//!
//! A publish waits for its acknowledgement without holding up the next one:
//! a TCP connection starts up to 64 publishes (`pending_publishes.rs`) and
//! answers them in order, so the records of many publishes travel in one
//! write and one `Ack` covers them all.
//! * `in_sync`: a publish (PUB, MPUB, DPUB, HTTP /pub, /mpub) is answered
//!   only once every in-sync peer acknowledged it; one that does not within
//!   `--replica-timeout` becomes `catching_up`. With `--replica-min-acks=N`
//!   a publish is refused (E_PUB_FAILED / HTTP 503) when fewer than N peers
//!   are in sync or fewer than N acknowledged it.
//! * `taken_over`: this node took over the peer's shadow (below).
//!
//! # Failures
//! * Origin dies (or is cut off) for `--replica-takeover-after`, or
//!   `POST /replica/takeover?peer=ADDR`: the holder *takes over*: every
//!   unfinished shadow message goes into this node's topic and channel of
//!   the same name (created, hence registered with nsqlookupd) under a fresh
//!   id, and is delivered to this node's consumers. The holder remembers the
//!   original ids.
//! * Origin returns (same process after a partition, or restarted with its
//!   data or an empty disk): in its `Hello` exchange the holder first takes
//!   over whatever it still holds if the origin restarted (a restart lost
//!   the origin's memory), then sends the ids it took over; the origin drops
//!   those messages when they come up for delivery (FINishing them), and
//!   only then starts replicating again with a full copy. A restarted node
//!   waits (at most `--replica-timeout` per peer) for this exchange before
//!   it accepts TCP consumers.
//! * Holder dies: the origin's link goes `down`; when the holder returns
//!   (empty), the origin sends a full copy.
//! * Partition while both serve: after `--replica-takeover-after` each side
//!   takes over the other's shadow and delivers it — messages the other side
//!   also delivers are then duplicated. When the link heals each side drops
//!   what the other took over. Duplicates, never losses: a copy is dropped
//!   only once its origin reported it finished.
//!
//! What may be delivered twice: messages in flight (or finished and not yet
//! reported, at most ~25 ms of FINs) when a node died; after a partition,
//! what both sides delivered during it.
//!
//! # Durable holders
//! A holder running `--durable` journals every record it applies
//! (`journal.rs`, under `<data-path>/replication/`) and fsyncs before it
//! acknowledges. A thread of its own writes and fsyncs the journal in
//! groups (`journal_writer.rs`) while the link goes on reading and
//! applying, so one fsync covers whatever arrived during the previous one
//! and each `Ack` covers a group. A copy survives the holder's own crash: restarted, it
//! replays the journal, and takes the shadow over if the origin does not
//! return within `--replica-takeover-after` (both machines lost power). An
//! origin that does return sends `Reset` and a full copy as usual. Once the
//! journal has grown well past what the shadow keeps in memory it is
//! rewritten as a snapshot: the memory part, and references to the spill
//! queues (below) with the ids finished in them, written only once those
//! queues' writes are fsynced.
//!
//! # Memory bound
//! A shadow channel keeps `--mem-queue-size` messages in memory, and so
//! does what a shadow topic holds before its first channel (or while
//! paused); past that, the holder appends the rest to a disk queue of its
//! own (`spill.rs`, `~replica~<origin>~<topic>~<channel>` or
//! `~replica~<origin>~<topic>~~held` in `--data-path`, names no topic can
//! take), durable or not. FINs of spilled messages go into a set bounded by
//! the spilled count and are skipped when a takeover reads the queue back
//! (then deletes it). A topic's first channel gets what the topic held: the
//! held queue is read back into the channel's copy (on the link task: a
//! large held queue holds up acknowledgements meanwhile, and past
//! `--replica-timeout` the origin reconnects and sends a full copy). A spill queue is
//! removed by a takeover, a `Reset` (full copy), the channel's emptying or
//! deletion on the origin, and once the origin finished everything in it:
//! when the count of its FINs says so (or says half, since a full copy may
//! spill a message twice) the queue is scanned, removed if every message in
//! it is finished, else its count is rebuilt from what it holds (FINs of
//! ids inside its range that it never held may have been counted). The
//! scan runs in a task of its own per origin, not on the link: reading a
//! large queue does not hold up acknowledgements. [`origin_state::SHADOW_MAX_BYTES`] per origin
//! still bounds the memory part (many channels with a large
//! `--mem-queue-size`): a holder past it drops the link and the origin sees
//! the peer `down`.
//!
//! # Limits of this version
//! * A non-durable holder keeps its shadow across a clean stop: it then
//!   writes the same snapshot a durable holder's journal is rewritten as
//!   (memory part, spill queues with their FINs, the origin's last Hello,
//!   so a returning origin that restarted meanwhile is recognised), reads
//!   it once at start and removes it. While it runs it saves the part that
//!   refers to its spill queues every [`state::SAVE_EVERY`] when anything
//!   changed, so after `kill -9` it keeps what it spilled (FINs of the last
//!   seconds may be lost: duplicates at a takeover); its memory part is
//!   lost, as with any non-durable queue. Spill files no saved snapshot
//!   refers to are removed at start.
//! * The link is authenticated (with a secret) but not encrypted: message
//!   bodies cross it in the clear.
//!
//! # Files
//! The core knows replication only through `replica_hooks.rs` (the seam:
//! `ReplicaHooks`, implemented in `hooks.rs`) and the channel seam; the
//! server opens `Replication` (`state.rs`), hands its hooks to nsqd and
//! starts it. `link.rs` is an origin's queue towards one peer,
//! `origin.rs` the task that sends it and `full_copy.rs` what a peer gets
//! on (re)connecting; `holder.rs` serves incoming links into
//! `origin_state.rs` (`shadow.rs`, `spill.rs`, `journal.rs` written by
//! `journal_writer.rs`); `takeover.rs` and
//! `return_filter.rs` are the two halves of a takeover; `peer_auth.rs` the
//! shared-secret challenge; `wire.rs` the bytes and `codec.rs` reading them.

pub mod batch;
pub mod codec;
pub mod full_copy;
pub mod held_set;
pub mod holder;
pub mod hooks;
pub mod journal;
pub mod journal_writer;
pub mod link;
pub mod metrics;
pub mod origin;
pub mod origin_state;
pub mod peer_auth;
pub mod return_filter;
pub mod shadow;
pub mod spill;
pub mod state;
pub mod takeover;
pub mod wire;

pub use crate::replica_hooks::{ReplicaReport, ReplicationError};

/// How long the origin's link reader may try its socket for an
/// acknowledgement before it parks (`crate::spin`): a lone publish
/// crosses the link and back, and each wake-up of a parked reader is one
/// an idle vCPU must wait for. The peer answers within a few tens of µs.
const ACK_SPIN: std::time::Duration = std::time::Duration::from_micros(50);
/// How long the holder may try its socket for the next record: a lone
/// publisher's next one comes a whole round trip after the last
/// acknowledgement (the origin's answer, the publisher's turn, the next
/// publish), so a longer window than the origin's.
const RECORD_SPIN: std::time::Duration = std::time::Duration::from_micros(100);
pub use state::{Config, Replication};
