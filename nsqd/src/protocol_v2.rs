//! TCP protocol V2: one reader task that decodes and executes commands, and
//! one writer task that owns the socket's write side, delivers messages while
//! the client has RDY room, and batches every frame into one buffer.
//!
//! A connection starts whole: its first command, when it is IDENTIFY, is
//! answered on the unsplit socket, so TLS and compression can wrap the
//! stream (TLS first, then snappy or deflate, an `OK` after each, as
//! upstream) before it is split between the two tasks (`negotiate.rs`).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use nsq_protocol::frame::{encode_error, encode_frame, encode_response};
use nsq_protocol::{
    Command, CommandDecoder, DecodeError, ErrorCode, FrameType, MessageId, ProtocolError,
    CLOSE_WAIT, HEARTBEAT, MAGIC_V2, OK,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, Instrument};

use crate::auth::AuthState;
use crate::channel::Channel;
use crate::client::{Client, ClientSettings, ClientState};
use crate::nsqd::Nsqd;
use crate::options::TlsRequired;
use crate::pending_publishes::PendingPublishes;
use crate::topic::Topic;

mod negotiate;
use negotiate::Transport;

/// Frames and events the reader hands to the writer, in order.
#[derive(Debug)]
enum ToWriter {
    Frame(FrameType, Bytes),
    Settings(ClientSettings),
}

/// How many control items may wait for the writer before the reader stops
/// reading: a client that does not read its replies stops being read.
const CONTROL_QUEUE: usize = 256;
/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 64 * 1024;
/// Output is written once this much is buffered, whatever the client asked:
/// the writer flushes whenever it runs out of work anyway, so a larger
/// threshold costs no latency and saves syscalls under load.
const MIN_WRITE_THRESHOLD: usize = 64 * 1024;
/// Messages taken from the channel in one lock section.
const TAKE_BATCH: usize = 1024;
/// How long a closing connection's writer may take to send what is queued.
const WRITER_DRAIN: Duration = Duration::from_secs(1);
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
        decoder: CommandDecoder::new(nsqd.opts.limits()),
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
    to_writer: Option<mpsc::Sender<ToWriter>>,
    /// Set when this batch of commands may have given the writer more room.
    wake_writer: bool,
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
    /// Publishes started and not yet answered (replicas' acks, disk).
    pending: PendingPublishes,
}

impl Connection {
    fn new(nsqd: Arc<Nsqd>, client: Arc<Client>) -> Self {
        let settings = nsqd.default_client_settings();
        Connection {
            client,
            subscription: Subscription::default(),
            settings,
            last_topic: None,
            to_writer: None,
            wake_writer: false,
            needs_tls: nsqd.opts.tls_required() != TlsRequired::No,
            tls: false,
            tls_common_name: String::new(),
            auth_enabled: nsqd.opts.auth_enabled(),
            auth_secret: String::new(),
            auth: None,
            pending: PendingPublishes::default(),
            nsqd,
        }
    }

    async fn run<R, W>(mut self, mut read: R, write: W, input: Input, first: Option<Command>)
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(CONTROL_QUEUE);
        self.to_writer = Some(tx);
        let stop = self.client.stop.clone();
        let writer = tokio::spawn(
            Writer::new(
                self.client.clone(),
                self.subscription.clone(),
                self.settings.clone(),
                rx,
                stop.clone(),
            )
            .with_replicas(self.nsqd.replicas.clone())
            .run(write)
            .in_current_span(),
        );
        if let Err(reason) = self.read_loop(&mut read, &stop, input, first).await {
            debug!(reason, "closing connection");
        }
        // Dropping the sender lets the writer flush what is queued (a final
        // error frame, say) and then stop; one that cannot write for a while
        // is stopped.
        self.to_writer = None;
        tokio::pin!(writer);
        if timeout(WRITER_DRAIN, &mut writer).await.is_err() {
            stop.cancel();
            let _ = writer.await;
        }
        // Leaving the channel is the `Registration`'s job, panic or not.
    }

    async fn read_loop<R: AsyncRead + Unpin>(
        &mut self,
        read: &mut R,
        stop: &CancellationToken,
        input: Input,
        mut first: Option<Command>,
    ) -> Result<(), &'static str> {
        let Input {
            mut buf,
            mut decoder,
        } = input;
        let mut clock = CommandClock::default();
        loop {
            loop {
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
                            self.answer_publish(r).await?;
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
            if std::mem::take(&mut self.wake_writer) {
                self.client.wake.notify_one();
            }
            // A decompressing reader can hand out data for a long time
            // without ever waiting on the socket (a deflate bomb of NOPs):
            // give other connections a turn after each buffer's worth.
            tokio::task::yield_now().await;
            shrink_after_burst(&mut buf);
            if buf.capacity() - buf.len() < READ_CHUNK / 4 {
                buf.reserve(READ_CHUNK);
            }
            let deadline = clock.deadline(&self.settings);
            let n = tokio::select! {
                _ = stop.cancelled() => return Err("connection stopped"),
                // A publish's answer is sent as soon as it is safe, also
                // while the client sends nothing more.
                r = self.pending.next() => {
                    self.answer_publish(r).await?;
                    continue;
                }
                r = read_with_deadline(read, &mut buf, deadline) => r,
            };
            let n = match n {
                Ok(n) => n,
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

    /// Send a command's error, if any, after the answers of the publishes
    /// before it; `Err` when it closes the connection.
    async fn answered(&mut self, r: Result<(), ProtocolError>) -> Result<(), &'static str> {
        if let Err(e) = r {
            self.settle_publishes().await?;
            let fatal = e.is_fatal();
            self.send_error_now(e).await;
            if fatal {
                return Err("fatal client error");
            }
        }
        Ok(())
    }

    /// Answer every started publish, in order.
    async fn settle_publishes(&mut self) -> Result<(), &'static str> {
        while !self.pending.is_empty() {
            let r = self.pending.next().await;
            self.answer_publish(r).await?;
        }
        Ok(())
    }

    /// `OK` for a publish that is safe, its error otherwise; `Err` when
    /// that closes the connection.
    async fn answer_publish(&mut self, r: Result<(), ProtocolError>) -> Result<(), &'static str> {
        match r {
            Ok(()) => {
                self.send_response(Bytes::from_static(OK)).await;
                Ok(())
            }
            Err(e) => {
                let fatal = e.is_fatal();
                self.send_error_now(e).await;
                if fatal {
                    Err("fatal client error")
                } else {
                    Ok(())
                }
            }
        }
    }

    async fn send(&mut self, item: ToWriter) {
        if let Some(tx) = &self.to_writer {
            let _ = tx.send(item).await;
        }
    }

    async fn send_response(&mut self, data: Bytes) {
        self.send(ToWriter::Frame(FrameType::Response, data)).await;
    }

    /// Send an error that closes the connection, after the answers of the
    /// publishes before it.
    async fn send_error(&mut self, e: ProtocolError) {
        let _ = self.settle_publishes().await;
        self.send_error_now(e).await;
    }

    async fn send_error_now(&mut self, e: ProtocolError) {
        log_error(self.client.remote_addr, &e);
        self.send(ToWriter::Frame(FrameType::Error, Bytes::from(e.to_wire())))
            .await;
    }

    /// Execute one command; an `Err` is sent as an error frame.
    async fn exec(&mut self, cmd: Command) -> Result<(), ProtocolError> {
        if self.needs_tls && !matches!(cmd, Command::Identify(_)) {
            return Err(ProtocolError::invalid(format!(
                "cannot {} in current state (TLS required)",
                cmd.name()
            )));
        }
        match cmd {
            Command::Nop => Ok(()),
            Command::Fin(id) => self.fin(id),
            Command::Rdy(n) => self.rdy(n),
            Command::Req { id, timeout_ms } => self.req(id, timeout_ms),
            Command::Touch(id) => self.touch(id),
            Command::Pub { topic, body } => {
                self.publish("PUB", ErrorCode::PubFailed, topic, vec![body], None)
                    .await
            }
            Command::Mpub { topic, bodies } => {
                self.publish("MPUB", ErrorCode::MpubFailed, topic, bodies, None)
                    .await
            }
            Command::Dpub {
                topic,
                defer_ms,
                body,
            } => {
                let defer = Some(Duration::from_millis(defer_ms));
                self.publish("DPUB", ErrorCode::DpubFailed, topic, vec![body], defer)
                    .await
            }
            Command::Sub { topic, channel } => self.sub(topic, channel).await,
            Command::Cls => self.cls().await,
            Command::Identify(body) => {
                // Past the first command the socket is split: a later
                // IDENTIFY is answered, but grants no upgrade.
                let (resp, _) = self.identify(&body, false)?;
                self.send(ToWriter::Settings(self.settings.clone())).await;
                self.send_response(resp).await;
                Ok(())
            }
            Command::Auth(secret) => self.auth(&secret).await,
        }
    }

    /// The error for a command whose parameters the decoder refused, in
    /// upstream's order: `--tls-required` first, then the client's state,
    /// and only then the parameters. `None`: ignore the command (RDY while
    /// closing, however garbled).
    fn refusal(&self, verb: &str, params_error: ProtocolError) -> Option<ProtocolError> {
        use ClientState::{Closing, Init, Subscribed};
        if self.needs_tls && verb != "IDENTIFY" {
            return Some(ProtocolError::invalid(format!(
                "cannot {verb} in current state (TLS required)"
            )));
        }
        let allowed: &[ClientState] = match verb {
            "RDY" if self.client.state() == Closing => return None,
            "RDY" => &[Subscribed],
            "FIN" | "REQ" | "TOUCH" => &[Subscribed, Closing],
            "SUB" | "AUTH" | "IDENTIFY" => &[Init],
            _ => return Some(params_error),
        };
        if let Err(e) = self.require_state(verb, allowed) {
            return Some(e);
        }
        if verb == "SUB" && self.settings.heartbeat_interval.is_none() {
            return Some(ProtocolError::invalid(
                "cannot SUB with heartbeats disabled",
            ));
        }
        Some(params_error)
    }

    fn require_state(&self, cmd: &str, allowed: &[ClientState]) -> Result<(), ProtocolError> {
        if allowed.contains(&self.client.state()) {
            Ok(())
        } else {
            Err(ProtocolError::invalid(format!(
                "cannot {cmd} in current state"
            )))
        }
    }

    fn subscribed_channel(&self) -> Result<&Arc<Channel>, ProtocolError> {
        self.subscription
            .get()
            .ok_or_else(|| ProtocolError::invalid("client not subscribed"))
    }

    async fn sub(
        &mut self,
        topic: nsq_protocol::TopicName,
        channel: nsq_protocol::ChannelName,
    ) -> Result<(), ProtocolError> {
        self.require_state("SUB", &[ClientState::Init])?;
        if self.settings.heartbeat_interval.is_none() {
            return Err(ProtocolError::invalid(
                "cannot SUB with heartbeats disabled",
            ));
        }
        self.check_auth("SUB", topic.as_str(), channel.as_str())
            .await?;
        // An ephemeral channel may be going away as its last client leaves:
        // try once more after a short pause, as upstream does.
        let mut tries = 0;
        let channel = loop {
            let (_, ch) = self.nsqd.get_topic_channel(&topic, &channel);
            match ch.add_client(self.client.clone()) {
                Ok(()) => break ch,
                Err(crate::channel::JoinError::Exiting) if tries == 0 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(crate::channel::JoinError::Exiting) => {
                    return Err(ProtocolError::new(
                        ErrorCode::SubFailed,
                        "SUB failed to deleted topic/channel",
                    ))
                }
                Err(e) => {
                    return Err(ProtocolError::new(
                        ErrorCode::SubFailed,
                        format!("SUB failed {e}"),
                    ))
                }
            }
        };
        let _ = self.subscription.set(channel);
        self.client.set_state(ClientState::Subscribed);
        self.send_response(Bytes::from_static(OK)).await;
        Ok(())
    }

    fn rdy(&mut self, count: u64) -> Result<(), ProtocolError> {
        if self.client.state() == ClientState::Closing {
            // Upstream ignores RDY after CLS.
            return Ok(());
        }
        self.require_state("RDY", &[ClientState::Subscribed])?;
        let max = self.nsqd.opts.max_rdy_count as u64;
        if count > max {
            // Upstream keeps the count in an int64: a huge one prints negative.
            return Err(ProtocolError::invalid(format!(
                "RDY count {} out of range 0-{max}",
                count as i64
            )));
        }
        self.client.set_ready_count(count);
        self.wake_writer = true;
        Ok(())
    }

    fn fin(&mut self, id: MessageId) -> Result<(), ProtocolError> {
        self.require_state("FIN", &[ClientState::Subscribed, ClientState::Closing])?;
        let channel = self.subscribed_channel()?;
        let result = match id.to_u64() {
            Some(n) => channel.finish(self.client.id, n),
            None => Err(crate::channel::InFlightError::NotInFlight),
        };
        result.map_err(|e| {
            ProtocolError::new(ErrorCode::FinFailed, format!("FIN {id} failed {e}"))
        })?;
        self.client.finish_count.fetch_add(1, Ordering::Relaxed);
        self.wake_writer = true;
        Ok(())
    }

    fn req(&mut self, id: MessageId, timeout_ms: u64) -> Result<(), ProtocolError> {
        self.require_state("REQ", &[ClientState::Subscribed, ClientState::Closing])?;
        let channel = self.subscribed_channel()?;
        // Upstream clamps an out-of-range delay silently.
        let delay = Duration::from_millis(timeout_ms).min(*self.nsqd.opts.max_req_timeout);
        let result = match id.to_u64() {
            Some(n) => channel.requeue(self.client.id, n, delay, Instant::now()),
            None => Err(crate::channel::InFlightError::NotInFlight),
        };
        result.map_err(|e| {
            ProtocolError::new(ErrorCode::ReqFailed, format!("REQ {id} failed {e}"))
        })?;
        self.nsqd.publish_dead_letters(channel);
        self.client.requeue_count.fetch_add(1, Ordering::Relaxed);
        self.wake_writer = true;
        Ok(())
    }

    fn touch(&mut self, id: MessageId) -> Result<(), ProtocolError> {
        self.require_state("TOUCH", &[ClientState::Subscribed, ClientState::Closing])?;
        let channel = self.subscribed_channel()?;
        let result = match id.to_u64() {
            Some(n) => channel.touch(self.client.id, n, self.settings.msg_timeout, Instant::now()),
            None => Err(crate::channel::InFlightError::NotInFlight),
        };
        result.map_err(|e| {
            ProtocolError::new(ErrorCode::TouchFailed, format!("TOUCH {id} failed {e}"))
        })
    }

    async fn cls(&mut self) -> Result<(), ProtocolError> {
        self.require_state("CLS", &[ClientState::Subscribed])?;
        self.client.set_state(ClientState::Closing);
        self.send_response(Bytes::from_static(CLOSE_WAIT)).await;
        Ok(())
    }

    async fn publish(
        &mut self,
        verb: &'static str,
        code: ErrorCode,
        topic: nsq_protocol::TopicName,
        bodies: Vec<Bytes>,
        defer: Option<Duration>,
    ) -> Result<(), ProtocolError> {
        self.check_auth(verb, topic.as_str(), "").await?;
        let topic = match &self.last_topic {
            Some(t) if t.name == topic && !t.is_deleted() => t.clone(),
            _ => {
                let t = self.nsqd.get_topic(&topic);
                self.last_topic = Some(t.clone());
                t
            }
        };
        let n = bodies.len() as u64;
        let failed = move |e| ProtocolError::new(code, format!("{verb} failed {e}"));
        let wait = match self.nsqd.start_publish(&topic, bodies, defer) {
            Ok(wait) => wait,
            Err(e) => return Err(failed(e)),
        };
        let (nsqd, client) = (self.nsqd.clone(), self.client.clone());
        match wait {
            // Safe already, and nothing before it waits: answered at once.
            None if self.pending.is_empty() => {
                nsqd.count_publish(&client, &topic.name, n);
                self.send_response(Bytes::from_static(OK)).await;
                return Ok(());
            }
            wait => self.pending.push(Box::pin(async move {
                if let Some(wait) = wait {
                    wait.await.map_err(failed)?;
                }
                nsqd.count_publish(&client, &topic.name, n);
                Ok(())
            })),
        }
        Ok(())
    }
}

/// Upstream logs every failed command at ERROR as `[ADDR] - CODE text`.
fn log_error(addr: SocketAddr, e: &ProtocolError) {
    error!("[{addr}] - {e}");
}

/// After a large command the read buffer is much bigger than what it
/// holds: give the memory back instead of keeping a connection's largest
/// MPUB for its whole life. Whatever is left over moves to a fresh buffer.
fn shrink_after_burst(buf: &mut BytesMut) {
    if buf.capacity() > 4 * READ_CHUNK && buf.len() <= READ_CHUNK {
        let mut fresh = BytesMut::with_capacity(READ_CHUNK);
        fresh.extend_from_slice(buf);
        *buf = fresh;
    }
}

/// When the command being read must be complete: two heartbeat intervals
/// from when nsqd started waiting for it (after the previous command ran),
/// as upstream sets its read deadline once per command. Measured per
/// command, not per read, so a client trickling one byte at a time cannot
/// hold a connection (and its partly read body) forever.
#[derive(Debug, Default)]
struct CommandClock {
    deadline: Option<Instant>,
}

impl CommandClock {
    /// A command was read and executed: the next one gets a fresh clock.
    fn command_done(&mut self) {
        self.deadline = None;
    }

    fn deadline(&mut self, settings: &ClientSettings) -> Option<Instant> {
        let Some(heartbeat) = settings.heartbeat_interval else {
            self.deadline = None;
            return None;
        };
        Some(
            *self
                .deadline
                .get_or_insert_with(|| Instant::now() + heartbeat * 2),
        )
    }
}

/// Why reading the socket stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadFailed {
    TimedOut,
    Io,
}

impl ReadFailed {
    fn reason(self) -> &'static str {
        match self {
            ReadFailed::TimedOut => "command not complete within two heartbeat intervals",
            ReadFailed::Io => "read error",
        }
    }
}

async fn read_with_deadline<R: AsyncRead + Unpin>(
    read: &mut R,
    buf: &mut BytesMut,
    deadline: Option<Instant>,
) -> Result<usize, ReadFailed> {
    let r = match deadline {
        Some(at) => tokio::time::timeout_at(at, read.read_buf(buf))
            .await
            .map_err(|_| ReadFailed::TimedOut)?,
        None => read.read_buf(buf).await,
    };
    r.map_err(|_| ReadFailed::Io)
}

/// The writer task: owns the socket's write side.
struct Writer {
    client: Arc<Client>,
    subscription: Subscription,
    settings: ClientSettings,
    control: mpsc::Receiver<ToWriter>,
    stop: CancellationToken,
    out: BytesMut,
    batch: Vec<crate::message::Message>,
    /// Drops what a peer took over before it is delivered.
    replicas: Option<Arc<dyn crate::replica_hooks::ReplicaHooks>>,
}

impl Writer {
    fn new(
        client: Arc<Client>,
        subscription: Subscription,
        settings: ClientSettings,
        control: mpsc::Receiver<ToWriter>,
        stop: CancellationToken,
    ) -> Self {
        Writer {
            client,
            subscription,
            settings,
            control,
            stop,
            out: BytesMut::with_capacity(MIN_WRITE_THRESHOLD * 2),
            batch: Vec::with_capacity(TAKE_BATCH),
            replicas: None,
        }
    }

    fn with_replicas(mut self, r: Option<Arc<dyn crate::replica_hooks::ReplicaHooks>>) -> Self {
        self.replicas = r;
        self
    }

    async fn run<W: AsyncWrite + Unpin>(mut self, mut write: W) {
        let result = self.write_loop(&mut write).await;
        if let Err(reason) = result {
            debug!(reason, "writer stopping");
        }
        let _ = self.flush(&mut write).await;
        let _ = write.shutdown().await;
        // Whatever ended the writer ends the connection.
        self.stop.cancel();
    }

    fn heartbeat_timer(&self) -> Option<tokio::time::Interval> {
        self.settings.heartbeat_interval.map(|hb| {
            let mut t = tokio::time::interval_at(Instant::now() + hb, hb);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        })
    }

    async fn write_loop<W: AsyncWrite + Unpin>(
        &mut self,
        write: &mut W,
    ) -> Result<(), &'static str> {
        let mut heartbeat = self.heartbeat_timer();
        loop {
            // Replies first, so SUB's OK precedes the first message.
            loop {
                match self.control.try_recv() {
                    Ok(item) => {
                        if self.apply(item) {
                            heartbeat = self.heartbeat_timer();
                        }
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => return Ok(()),
                }
                self.maybe_write(write).await?;
            }
            self.deliver(write).await?;
            self.flush(write).await?;
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => return Ok(()),
                item = self.control.recv() => match item {
                    Some(item) => {
                        if self.apply(item) {
                            heartbeat = self.heartbeat_timer();
                        }
                    }
                    None => return Ok(()),
                },
                _ = self.client.wake.notified() => {}
                _ = tick(&mut heartbeat) => encode_response(&mut self.out, HEARTBEAT),
            }
        }
    }

    /// Queue a control item's bytes; true when the settings changed.
    fn apply(&mut self, item: ToWriter) -> bool {
        match item {
            ToWriter::Frame(FrameType::Error, data) => {
                encode_frame(&mut self.out, FrameType::Error, &data);
                false
            }
            ToWriter::Frame(t, data) => {
                encode_frame(&mut self.out, t, &data);
                false
            }
            ToWriter::Settings(s) => {
                self.settings = s;
                true
            }
        }
    }

    /// Send messages while the client has room and the channel has messages.
    async fn deliver<W: AsyncWrite + Unpin>(&mut self, write: &mut W) -> Result<(), &'static str> {
        let Some(channel) = self.subscription.get().cloned() else {
            return Ok(());
        };
        loop {
            let room = self.client.capacity() as usize;
            if room == 0 {
                return Ok(());
            }
            let consumed = channel.take(
                &self.client,
                room.min(TAKE_BATCH),
                self.settings.msg_timeout,
                self.settings.sample_rate,
                Instant::now(),
                &mut self.batch,
            );
            if let Some(r) = &self.replicas {
                r.filter_delivery(&channel, self.client.id, &mut self.batch);
            }
            if self.batch.is_empty() {
                if consumed > 0 {
                    // Everything taken was sampled out: there may be more.
                    continue;
                }
                return Ok(());
            }
            for m in self.batch.drain(..) {
                m.encode_frame(&mut self.out);
            }
            self.maybe_write(write).await?;
        }
    }

    fn write_threshold(&self) -> usize {
        self.settings.output_buffer_size.max(MIN_WRITE_THRESHOLD)
    }

    async fn maybe_write<W: AsyncWrite + Unpin>(
        &mut self,
        write: &mut W,
    ) -> Result<(), &'static str> {
        if self.out.len() >= self.write_threshold() {
            self.flush(write).await?;
        }
        Ok(())
    }

    /// Write everything buffered. A client that cannot take it within one
    /// heartbeat interval is cut off, so a stalled reader cannot make nsqd
    /// hold its output forever.
    async fn flush<W: AsyncWrite + Unpin>(&mut self, write: &mut W) -> Result<(), &'static str> {
        if self.out.is_empty() {
            return Ok(());
        }
        // Flushing matters for TLS and compression, which hold bytes back;
        // on a plain socket it is free.
        let fut = async {
            write.write_all(&self.out).await?;
            write.flush().await
        };
        let r = match self.settings.heartbeat_interval {
            Some(hb) => timeout(hb, fut).await.map_err(|_| "write timed out")?,
            None => fut.await,
        };
        r.map_err(|_| "write error")?;
        self.out.clear();
        if self.out.capacity() > 4 * MIN_WRITE_THRESHOLD * 4 {
            // Do not keep a huge buffer around after one burst.
            self.out = BytesMut::with_capacity(MIN_WRITE_THRESHOLD * 2);
        }
        Ok(())
    }
}

async fn tick(timer: &mut Option<tokio::time::Interval>) {
    match timer {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
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
