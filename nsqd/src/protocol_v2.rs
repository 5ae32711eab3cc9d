//! TCP protocol V2: one reader task that decodes and executes commands, and
//! one writer task for what arrives from elsewhere (messages for an idle
//! client, heartbeats, writes the socket could not take at once). Either
//! task writes when it finds the output free (`output.rs`): a reply goes
//! out from the reader with no hop between tasks.
//!
//! A connection starts whole: its first command, when it is IDENTIFY, is
//! answered on the unsplit socket, so TLS and compression can wrap the
//! stream (TLS first, then snappy or deflate, an `OK` after each, as
//! upstream) before it is split between the two tasks (`negotiate.rs`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use nsq_protocol::frame::{encode_error, encode_frame};
use nsq_protocol::{Command, CommandDecoder, DecodeError, FrameType, ProtocolError, MAGIC_V2};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, Instrument};

use crate::auth::AuthState;
use crate::channel::Channel;
use crate::client::{Client, ClientSettings};
use crate::nsqd::Nsqd;
use crate::options::TlsRequired;
use crate::pending_publishes::PendingPublishes;
use crate::topic::Topic;

mod commands;
mod negotiate;
mod out_buf;
mod output;
mod reading;
mod spin;
mod writer;
use commands::log_error;
use negotiate::Transport;
use output::Shared;
use reading::{read_with_deadline, shrink_after_burst, take_fin, CommandClock, ReadFailed};
use spin::{ReadNow, Spin};

/// Room for the next read: a read's worth, or after a read that filled all
/// the room it had (the client sends faster than it is read) a burst's
/// worth, so a busy publisher is read in a fifth of the system calls (each
/// also sent the client a window update), and its replies go out in fewer
/// writes. After a read that did not fill, a burst's buffer is given back.
fn make_room(buf: &mut BytesMut, filled: bool) {
    let want = match filled {
        true => BURST_READ,
        false => {
            shrink_after_burst(buf);
            READ_CHUNK
        }
    };
    if buf.capacity() - buf.len() < want / 4 {
        buf.reserve(want);
    }
}

/// Read what the socket has ready now, without waiting. `None` when it has
/// nothing yet, or has ended or failed: the next waiting read says which.
/// A read that would wait leaves a no-op waker behind; the read loop's own
/// read, which always follows, replaces it.
fn read_ready<R: AsyncRead + Unpin>(read: &mut R, buf: &mut BytesMut) -> Option<usize> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::pin!(read.read_buf(buf)).poll(&mut cx) {
        std::task::Poll::Ready(Ok(n)) if n > 0 => Some(n),
        _ => None,
    }
}
use writer::Writer;

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 64 * 1024;
/// Bytes read at a time while the client keeps the socket full
/// (`make_room`): as much as `shrink_after_burst` lets a buffer keep.
const BURST_READ: usize = 4 * READ_CHUNK;
/// Input one connection's reader decodes before it yields to the others: a
/// publisher's four burst reads (their answers then go out in one write), a
/// subscriber's four reads of FINs.
const TURN_BYTES: usize = 4 * BURST_READ;
const SUBSCRIBER_TURN_BYTES: usize = 4 * READ_CHUNK;
/// Output is written once this much is buffered, whatever the client asked:
/// the writer flushes whenever it runs out of work anyway, so a larger
/// threshold costs no latency and saves syscalls under load.
const MIN_WRITE_THRESHOLD: usize = 64 * 1024;
/// Messages taken from the channel in one lock section.
const TAKE_BATCH: usize = 1024;
/// How long a closing connection's writer may take to send what is queued.
const WRITER_DRAIN: Duration = Duration::from_secs(1);
/// How long a drained connection's reader tries the socket before it
/// parks (`spin.rs`).
const SPIN_WINDOW: Duration = Duration::from_micros(50);
type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// Bytes read and not yet decoded, and the decoder's state.
struct Input {
    buf: BytesMut,
    decoder: CommandDecoder,
}

/// Serve one TCP connection until it closes or nsqd shuts down.
pub(crate) async fn serve(nsqd: Arc<Nsqd>, mut stream: TcpStream, addr: SocketAddr) {
    let _ = stream.set_nodelay(true);
    info!("TCP: new client({addr})");
    let mut magic = [0u8; 4];
    let first = timeout(
        nsqd.opts.default_heartbeat() * 2,
        stream.read_exact(&mut magic),
    )
    .await;
    if !matches!(first, Ok(Ok(_))) {
        return;
    }
    let shown = String::from_utf8_lossy(&magic);
    info!("CLIENT({addr}): desired protocol magic '{shown}'");
    if &magic != MAGIC_V2 {
        error!("client({addr}) bad protocol magic '{shown}'");
        let mut buf = BytesMut::new();
        encode_frame(&mut buf, FrameType::Error, b"E_BAD_PROTOCOL");
        let _ = stream.write_all(&buf).await;
        return;
    }
    let id = nsqd.next_client_id();
    let client = Arc::new(Client::with_stop(
        id,
        addr,
        crate::message::unix_nanos() / 1_000_000_000,
        nsqd.cancel.child_token(),
    ));
    let span = tracing::info_span!("client", id, %addr);
    let registration = Registration::new(nsqd.clone(), client.clone());
    let mut conn = Connection::new(nsqd.clone(), client.clone());
    conn.subscription = registration.subscription.clone();
    let mut input = Input {
        buf: BytesMut::with_capacity(READ_CHUNK),
        decoder: CommandDecoder::new(nsqd.opts.limits())
            .with_body_buffer(crate::prefault::batch_buffer),
    };
    async move {
        match conn.negotiate(stream, &mut input).await {
            Ok((Transport::Plain(stream), first)) => {
                let (read, write) = stream.into_split();
                conn.run(read, write, input, first).await
            }
            Ok((Transport::Upgraded(read, write), first)) => {
                conn.run(read, write, input, first).await
            }
            Err(reason) => debug!(reason, "closing connection"),
        }
    }
    .instrument(span)
    .await;
    // Upstream's two lines for a connection's end, whatever ended it.
    info!("PROTOCOL(V2): [{addr}] exiting ioloop");
    info!("PROTOCOL(V2): [{addr}] exiting messagePump");
    drop(registration);
}

/// A client's place in nsqd's client list and in its channel, held for
/// as long as its connection task runs. Leaving happens on drop, so a
/// panic that unwinds the task still unregisters the client: it must never
/// linger in `/stats`, the `nsq_clients` gauge, or its channel's client set.
struct Registration {
    nsqd: Arc<Nsqd>,
    client: Arc<Client>,
    /// Shared with the connection, which sets it on SUB.
    subscription: Subscription,
}

impl Registration {
    fn new(nsqd: Arc<Nsqd>, client: Arc<Client>) -> Self {
        nsqd.add_client(client.clone());
        Registration {
            nsqd,
            client,
            subscription: Subscription::default(),
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // A panicking writer may still be running: stop it too.
        self.client.stop.cancel();
        if let Some(channel) = self.subscription.get().cloned() {
            self.nsqd.client_left_channel(&channel, self.client.id);
        }
        self.nsqd.remove_client(&self.client);
    }
}

/// The channel a connection subscribed to: set once by SUB, read by the
/// reader (FIN, REQ, TOUCH) and the writer (delivery).
type Subscription = Arc<std::sync::OnceLock<Arc<Channel>>>;

/// The reader side's state for one connection.
struct Connection {
    nsqd: Arc<Nsqd>,
    client: Arc<Client>,
    /// The channel after SUB, shared with the writer.
    subscription: Subscription,
    settings: ClientSettings,
    /// The topic last published to, to skip the topic map on repeat PUBs.
    last_topic: Option<Arc<Topic>>,
    /// Replies not yet handed to the output, in order.
    replies: BytesMut,
    /// Settings from a late IDENTIFY, not yet handed to the output.
    new_settings: Option<ClientSettings>,
    /// Set when this batch of commands may have given the client more room.
    may_deliver: bool,
    /// FINs read and checked, to settle in one go (`settle_fins`).
    fins: Vec<u64>,
    /// Publishes started and not yet answered (replicas' acks, disk).
    pending: PendingPublishes,
    /// `--tls-required` applies and this connection has not upgraded yet.
    needs_tls: bool,
    /// The connection runs over TLS.
    tls: bool,
    /// The CN of the client's TLS certificate, for the auth server.
    tls_common_name: String,
    /// `--auth-http-address` is set.
    auth_enabled: bool,
    /// The secret AUTH presented, to refresh an expired grant.
    auth_secret: String,
    auth: Option<AuthState>,
}

impl Connection {
    fn new(nsqd: Arc<Nsqd>, client: Arc<Client>) -> Self {
        let settings = nsqd.default_client_settings();
        Connection {
            client,
            subscription: Subscription::default(),
            settings,
            last_topic: None,
            replies: BytesMut::new(),
            new_settings: None,
            may_deliver: false,
            fins: Vec::new(),
            pending: PendingPublishes::default(),
            needs_tls: nsqd.opts.tls_required() != TlsRequired::No,
            tls: false,
            tls_common_name: String::new(),
            auth_enabled: nsqd.opts.auth_enabled(),
            auth_secret: String::new(),
            auth: None,
            nsqd,
        }
    }

    async fn run<R, W>(mut self, mut read: R, write: W, input: Input, first: Option<Command>)
    where
        R: AsyncRead + ReadNow + Unpin,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let stop = self.client.stop.clone();
        let shared = Shared::new(
            self.client.clone(),
            self.subscription.clone(),
            self.nsqd.replicas.clone(),
            self.settings.clone(),
            write,
        );
        let writer = tokio::spawn(
            Writer::new(shared.clone(), stop.clone())
                .run()
                .in_current_span(),
        );
        if let Err(reason) = self
            .read_loop(&mut read, &shared, &stop, input, first)
            .await
        {
            debug!(reason, "closing connection");
        }
        // FINs read before the end still count.
        self.settle_fins();
        // The writer sends what is left (a final error frame, say) and
        // stops; one that cannot write for a while is stopped.
        shared.queue(&mut self.replies, self.new_settings.take());
        shared.close();
        tokio::pin!(writer);
        if timeout(WRITER_DRAIN, &mut writer).await.is_err() {
            stop.cancel();
            let _ = writer.await;
        }
        // Leaving the channel is the `Registration`'s job, panic or not.
    }

    fn turn_bytes(&self) -> usize {
        match self.subscription.get() {
            None => TURN_BYTES,
            Some(_) => SUBSCRIBER_TURN_BYTES,
        }
    }

    async fn read_loop<R: AsyncRead + ReadNow + Unpin, W: AsyncWrite + Unpin>(
        &mut self,
        read: &mut R,
        shared: &Shared<W>,
        stop: &CancellationToken,
        input: Input,
        mut first: Option<Command>,
    ) -> Result<(), &'static str> {
        let Input {
            mut buf,
            mut decoder,
        } = input;
        let mut clock = CommandClock::default();
        let mut spin = Spin::new(SPIN_WINDOW);
        let mut read_this_turn = 0usize;
        // The last read filled all the room it had: more may be waiting.
        let mut filled = false;
        loop {
            loop {
                // FINs, the bulk of a consumer's commands, skip the decoder
                // and the command dispatch when nothing else is pending.
                if first.is_none() && decoder.is_idle() && self.takes_fast_fins() {
                    while let Some(id) = take_fin(&mut buf) {
                        clock.command_done();
                        self.fins.push(id);
                    }
                }
                let next = match first.take() {
                    Some(cmd) => Ok(Some(cmd)),
                    None => decoder.decode(&mut buf),
                };
                match next {
                    Ok(Some(cmd)) => {
                        clock.command_done();
                        let publish = matches!(
                            cmd,
                            Command::Pub { .. } | Command::Mpub { .. } | Command::Dpub { .. }
                        );
                        if !publish {
                            // Its answer follows those of the publishes before.
                            self.settle_publishes().await?;
                        }
                        let r = self.exec(cmd).await;
                        self.answered(r).await?;
                        if self.pending.is_full() {
                            let r = self.pending.next().await;
                            self.answer_publishes(r)?;
                        }
                    }
                    Ok(None) => break,
                    Err(DecodeError::LineTooLong) => return Err("command line too long"),
                    Err(DecodeError::Protocol(e)) => {
                        self.send_error(e).await;
                        return Err("fatal client error");
                    }
                    Err(DecodeError::Params { verb, error }) => {
                        let Some(e) = self.refusal(verb, error) else {
                            continue;
                        };
                        self.send_error(e).await;
                        return Err("fatal client error");
                    }
                }
            }
            self.settle_fins();
            // A publisher's answers wait while more of its input has
            // already arrived, within this turn: one write then answers
            // several publishes and wakes the client once, not once per
            // read (each wake-up preempted the reader: most of nsqd's
            // context switches when publishing). Only after a read that
            // filled its room: a client that waits for each answer has
            // sent nothing more, and is answered without another read.
            if filled
                && !self.may_deliver
                && self.new_settings.is_none()
                && !self.replies.is_empty()
                && read_this_turn < self.turn_bytes()
            {
                make_room(&mut buf, self.subscription.get().is_none());
                let room = buf.capacity() - buf.len();
                filled = false;
                if let Some(n) = read_ready(read, &mut buf) {
                    (read_this_turn, filled) = (read_this_turn + n, n == room);
                    continue;
                }
            }
            // Replies, and the messages a FIN or RDY made room for, go out
            // from here when the writer task is not busy: no hop to it.
            let deliver = std::mem::take(&mut self.may_deliver);
            if deliver || !self.replies.is_empty() || self.new_settings.is_some() {
                shared
                    .offer(&mut self.replies, self.new_settings.take(), deliver)
                    .await?;
            }
            // A decompressing reader can hand out data for a long time
            // without ever waiting on the socket (a deflate bomb of NOPs),
            // and the coop budget alone lets one turn decode 128 reads:
            // give other connections their turn after a bounded amount of
            // input, else only when the budget (socket reads count against
            // it too) is used up.
            if read_this_turn >= self.turn_bytes() {
                read_this_turn = 0;
                tokio::task::yield_now().await;
            } else {
                tokio::task::consume_budget().await;
            }
            // Only a publisher reads in bursts: a subscriber's FINs are
            // settled, and make room for deliveries, a read at a time. One
            // whose publishes wait for replicas sends its next burst as
            // their answers arrive: it keeps its room meanwhile (given back
            // and taken anew, the fresh pages are faulted in by the read).
            let busy = filled || !self.pending.is_empty();
            make_room(&mut buf, busy && self.subscription.get().is_none());
            let room = buf.capacity() - buf.len();
            // A publisher waiting on its answers is what the spin is for; a
            // subscriber's reader only takes FINs, and its deliveries do
            // not wait on it.
            let spun = match self.pending.is_empty() && self.subscription.get().is_none() {
                true => spin.input(read, &mut buf),
                false => None,
            };
            let n = match spun {
                Some(r) => r.map_err(|_| ReadFailed::Io),
                None => {
                    let deadline = clock.deadline(&self.settings);
                    let r = tokio::select! {
                        _ = stop.cancelled() => return Err("connection stopped"),
                        // A publish's answer is sent as soon as it is safe,
                        // also while the client sends nothing more.
                        // With it, every later one its ack also made safe:
                        // their answers go out in one write.
                        r = self.pending.next() => {
                            self.answer_publishes(r)?;
                            continue;
                        }
                        r = read_with_deadline(read, &mut buf, deadline) => r,
                    };
                    if let Ok(n) = r {
                        spin.read_done(n, room);
                    }
                    r
                }
            };
            let n = match n {
                Ok(n) => {
                    (read_this_turn, filled) = (read_this_turn + n, n == room);
                    n
                }
                Err(ReadFailed::TimedOut) => {
                    // Upstream's read fails mid-command and says so.
                    if let Some(e) = decoder.eof_error() {
                        self.send_error(e).await;
                    }
                    return Err(ReadFailed::TimedOut.reason());
                }
                Err(e) => return Err(e.reason()),
            };
            if n == 0 {
                if let Some(e) = decoder.eof_error() {
                    self.send_error(e).await;
                }
                return Err("client closed the connection");
            }
        }
    }
}

/// The error frame for a fatal error, for callers outside a connection.
pub fn error_frame(e: &ProtocolError) -> BytesMut {
    let mut buf = BytesMut::new();
    encode_error(&mut buf, e);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use nsq_protocol::{ChannelName, TopicName};

    async fn test_nsqd(dir: &std::path::Path) -> Arc<Nsqd> {
        let data = format!("--data-path={}", dir.display());
        let argv = [
            "nsqd",
            "--tcp-address=127.0.0.1:0",
            "--http-address=127.0.0.1:0",
            data.as_str(),
        ];
        let opts =
            nsq_app::flags::try_parse_options("nsqd", argv.iter().map(Into::into), &[]).unwrap();
        crate::Server::bind(opts).await.unwrap().nsqd()
    }

    #[test]
    fn a_full_socket_gets_burst_sized_reads_and_a_slower_one_gives_the_room_back() {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        // A read filled its room and left part of a command behind.
        buf.extend_from_slice(&[0; 60 * 1024]);
        make_room(&mut buf, true);
        assert!(buf.capacity() - buf.len() >= BURST_READ);
        // The next read did not fill: back to a read's worth.
        buf.clear();
        make_room(&mut buf, false);
        assert_eq!(buf.capacity(), READ_CHUNK);
        // A client that never fills its room never gets more.
        buf.extend_from_slice(&[0; 50 * 1024]);
        make_room(&mut buf, false);
        assert!(buf.capacity() < BURST_READ);
    }

    #[tokio::test]
    async fn a_panicking_connection_task_still_unregisters_its_client() {
        let dir = tempfile::tempdir().unwrap();
        let nsqd = test_nsqd(dir.path()).await;
        let (_, channel) = nsqd.get_topic_channel(
            &TopicName::new(b"t").unwrap(),
            &ChannelName::new(b"c").unwrap(),
        );
        let client = Arc::new(Client::with_stop(
            7,
            "127.0.0.1:1".parse().unwrap(),
            0,
            nsqd.cancel.child_token(),
        ));
        let (n, c, ch) = (nsqd.clone(), client.clone(), channel.clone());
        let task = tokio::spawn(async move {
            let registration = Registration::new(n, c.clone());
            ch.add_client(c.clone()).unwrap();
            let _ = registration.subscription.set(ch);
            panic!("a bug in a command handler");
        });
        assert!(task.await.unwrap_err().is_panic());
        assert!(nsqd.clients_snapshot().is_empty());
        assert_eq!(channel.client_count(), 0);
        assert!(client.stop.is_cancelled());
    }
}
