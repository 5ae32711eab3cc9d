//! A raw NSQ V2 client for tests: exact bytes out, decoded frames in, nothing hidden.
//!
//! Unlike a real client library it answers nothing on its own (except in
//! [`RawConn::read_message`], which answers heartbeats as every client does), so a test can
//! ignore heartbeats, hold messages, or close mid-stream. Every read has a deadline; on timeout
//! the panic carries the nsqd logs when the connection was made through
//! [`crate::NsqdProcess::connect`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use nsq_protocol::frame::FrameError;
use nsq_protocol::message::MessageFrame;
use nsq_protocol::{ChannelName, Command, Frame, FrameDecoder, MessageId, TopicName, MAGIC_V2};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::logs::Logs;

/// Default bound on a single read: far above any latency nsqd should show on loopback, yet
/// short enough that a hung test says what it was waiting for.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Why [`RawConn::try_read_frame`] returned no frame.
#[derive(Debug)]
pub enum ReadError {
    /// Nothing complete arrived within the timeout.
    Timeout,
    /// The server closed the connection (EOF or reset) before a complete frame.
    Closed,
    /// The bytes are not valid frames.
    Decode(FrameError),
    Io(std::io::Error),
}

/// A topic name for tests; panics if invalid.
pub fn topic(name: &str) -> TopicName {
    TopicName::new(name.as_bytes()).unwrap_or_else(|| panic!("invalid topic name {name:?}"))
}

/// A channel name for tests; panics if invalid.
pub fn channel(name: &str) -> ChannelName {
    ChannelName::new(name.as_bytes()).unwrap_or_else(|| panic!("invalid channel name {name:?}"))
}

/// A TCP connection to `addr` with Nagle off (commands are small and tests measure latency);
/// panics after [`READ_TIMEOUT`].
pub(crate) async fn connect_tcp(addr: SocketAddr) -> TcpStream {
    let stream = tokio::time::timeout(READ_TIMEOUT, TcpStream::connect(addr))
        .await
        .unwrap_or_else(|_| panic!("connect to {addr} timed out"))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream.set_nodelay(true).expect("set TCP_NODELAY");
    stream
}

/// One raw TCP connection to nsqd.
pub struct RawConn {
    stream: TcpStream,
    /// Bytes read but not yet decoded into frames.
    buf: BytesMut,
    decoder: FrameDecoder,
    logs: Option<Logs>,
    peer: SocketAddr,
}

impl RawConn {
    /// Connect and send the V2 magic.
    pub async fn connect(addr: SocketAddr) -> RawConn {
        let mut conn = Self::connect_without_magic(addr).await;
        conn.write_raw(MAGIC_V2).await;
        conn
    }

    /// Connect without sending anything (for bad-magic and wrong-port tests).
    pub async fn connect_without_magic(addr: SocketAddr) -> RawConn {
        RawConn {
            stream: connect_tcp(addr).await,
            buf: BytesMut::with_capacity(64 * 1024),
            decoder: FrameDecoder::default(),
            logs: None,
            peer: addr,
        }
    }

    /// Attach daemon logs to report on failures.
    pub fn with_logs(mut self, logs: Logs) -> RawConn {
        self.logs = Some(logs);
        self
    }

    /// Panic with `msg` and, if known, the daemon's logs.
    pub fn fail(&self, msg: &str) -> ! {
        let msg = format!("connection to {}: {msg}", self.peer);
        match &self.logs {
            Some(logs) => logs.fail(&msg),
            None => panic!("{msg}"),
        }
    }

    /// Write bytes as they are.
    pub async fn write_raw(&mut self, bytes: &[u8]) {
        let write = self.stream.write_all(bytes);
        match tokio::time::timeout(READ_TIMEOUT, write).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.fail(&format!("write failed: {e}")),
            Err(_) => self.fail("write timed out"),
        }
    }

    /// Like [`Self::write_raw`] but reports failure instead of panicking (the server may have
    /// closed the connection on purpose).
    pub async fn try_write_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match tokio::time::timeout(READ_TIMEOUT, self.stream.write_all(bytes)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
        }
    }

    /// Encode and send one command.
    pub async fn send(&mut self, cmd: &Command) {
        let mut out = BytesMut::new();
        cmd.encode(&mut out);
        self.write_raw(&out).await;
    }

    /// Read the next frame, waiting at most `timeout`.
    pub async fn try_read_frame(&mut self, timeout: Duration) -> Result<Frame, ReadError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(frame)) => return Ok(frame),
                Ok(None) => {}
                Err(e) => return Err(ReadError::Decode(e)),
            }
            let read = self.stream.read_buf(&mut self.buf);
            match tokio::time::timeout_at(deadline, read).await {
                Err(_) => return Err(ReadError::Timeout),
                Ok(Ok(0)) => return Err(ReadError::Closed),
                Ok(Ok(_)) => {}
                Ok(Err(e)) if is_reset(&e) => return Err(ReadError::Closed),
                Ok(Err(e)) => return Err(ReadError::Io(e)),
            }
        }
    }

    /// Read the next frame within `timeout`, panicking otherwise.
    pub async fn read_frame_within(&mut self, timeout: Duration) -> Frame {
        match self.try_read_frame(timeout).await {
            Ok(f) => f,
            Err(e) => self.fail(&format!("no frame within {timeout:?}: {e:?}")),
        }
    }

    /// Read the next frame within [`READ_TIMEOUT`].
    pub async fn read_frame(&mut self) -> Frame {
        self.read_frame_within(READ_TIMEOUT).await
    }

    /// Read raw bytes (not frames) until at least `n` arrived or the server closed; for talking
    /// to something that is not speaking V2 (e.g. the HTTP port).
    pub async fn read_raw(&mut self, n: usize) -> Bytes {
        let deadline = tokio::time::Instant::now() + READ_TIMEOUT;
        while self.buf.len() < n {
            let read = self.stream.read_buf(&mut self.buf);
            match tokio::time::timeout_at(deadline, read).await {
                Err(_) => self.fail(&format!("fewer than {n} bytes within {READ_TIMEOUT:?}")),
                Ok(Ok(0)) => break,
                Ok(Ok(_)) => {}
                Ok(Err(e)) if is_reset(&e) => break,
                Ok(Err(e)) => self.fail(&format!("read: {e}")),
            }
        }
        self.buf.split().freeze()
    }

    /// Expect a response frame with exactly `data`.
    pub async fn expect_response(&mut self, data: &[u8]) {
        match self.read_frame().await {
            Frame::Response(d) if d == data => {}
            other => self.fail(&format!(
                "expected response {:?}, got {}",
                String::from_utf8_lossy(data),
                describe(&other)
            )),
        }
    }

    /// Expect a response frame `OK`.
    pub async fn expect_ok(&mut self) {
        self.expect_response(b"OK").await
    }

    /// Expect an error frame and return its text.
    pub async fn expect_error(&mut self) -> String {
        match self.read_frame().await {
            Frame::Error(d) => String::from_utf8_lossy(&d).into_owned(),
            other => self.fail(&format!(
                "expected an error frame, got {}",
                describe(&other)
            )),
        }
    }

    /// Wait until the server closes the connection, returning the frames it sent until then.
    /// Panics if it is still open after `timeout`.
    pub async fn expect_closed_within(&mut self, timeout: Duration) -> Vec<Frame> {
        let deadline = Instant::now() + timeout;
        let mut frames = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.try_read_frame(left).await {
                Ok(f) => frames.push(f),
                Err(ReadError::Closed) => return frames,
                Err(e) => self.fail(&format!(
                    "expected the server to close within {timeout:?}, got {e:?} after {} frames",
                    frames.len()
                )),
            }
        }
    }

    /// Send IDENTIFY with `json` and return the reply frame.
    pub async fn identify(&mut self, json: serde_json::Value) -> Frame {
        let body = serde_json::to_vec(&json).expect("serialise IDENTIFY body");
        self.send(&Command::Identify(Bytes::from(body))).await;
        self.read_frame().await
    }

    /// IDENTIFY with `json` sent as it is (no feature negotiation) and expect `OK`.
    pub async fn identify_plain(&mut self, json: &str) {
        self.send(&Command::Identify(Bytes::copy_from_slice(json.as_bytes())))
            .await;
        self.expect_ok().await;
    }

    /// IDENTIFY with feature negotiation and return the parsed JSON reply.
    pub async fn identify_ok(&mut self, mut json: serde_json::Value) -> serde_json::Value {
        json["feature_negotiation"] = serde_json::Value::Bool(true);
        match self.identify(json).await {
            Frame::Response(d) => serde_json::from_slice(&d).unwrap_or_else(|e| {
                self.fail(&format!(
                    "IDENTIFY reply is not JSON ({e}): {:?}",
                    String::from_utf8_lossy(&d)
                ))
            }),
            other => self.fail(&format!("IDENTIFY failed: {}", describe(&other))),
        }
    }

    /// `SUB topic channel` and expect `OK`.
    pub async fn sub(&mut self, topic_name: &str, channel_name: &str) {
        self.send(&Command::Sub {
            topic: topic(topic_name),
            channel: channel(channel_name),
        })
        .await;
        self.expect_ok().await;
    }

    /// `RDY n` (no reply).
    pub async fn rdy(&mut self, n: u64) {
        self.send(&Command::Rdy(n)).await;
    }

    /// `FIN id` (no reply on success).
    pub async fn fin(&mut self, id: MessageId) {
        self.send(&Command::Fin(id)).await;
    }

    /// `REQ id timeout_ms` (no reply on success).
    pub async fn req(&mut self, id: MessageId, timeout_ms: u64) {
        self.send(&Command::Req { id, timeout_ms }).await;
    }

    /// `PUB topic body` and expect `OK`.
    pub async fn publish(&mut self, topic_name: &str, body: &[u8]) {
        self.send(&Command::Pub {
            topic: topic(topic_name),
            body: Bytes::copy_from_slice(body),
        })
        .await;
        self.expect_ok().await;
    }

    /// `DPUB topic defer_ms body` and expect `OK`.
    pub async fn publish_deferred(&mut self, topic_name: &str, defer_ms: u64, body: &[u8]) {
        self.send(&Command::Dpub {
            topic: topic(topic_name),
            defer_ms,
            body: Bytes::copy_from_slice(body),
        })
        .await;
        self.expect_ok().await;
    }

    /// `MPUB topic bodies` and expect `OK`.
    pub async fn publish_multi(&mut self, topic_name: &str, bodies: &[&[u8]]) {
        self.send(&Command::Mpub {
            topic: topic(topic_name),
            bodies: bodies.iter().map(|b| Bytes::copy_from_slice(b)).collect(),
        })
        .await;
        self.expect_ok().await;
    }

    /// Wait (at most `timeout`) for the next message, answering heartbeats with `NOP` as real
    /// clients do. Any other frame is a failure.
    pub async fn read_message_within(&mut self, timeout: Duration) -> MessageFrame {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.try_read_frame(left).await {
                Ok(Frame::Message(m)) => return m,
                Ok(Frame::Response(d)) if d == nsq_protocol::HEARTBEAT => {
                    self.send(&Command::Nop).await
                }
                Ok(other) => self.fail(&format!("expected a message, got {}", describe(&other))),
                Err(e) => self.fail(&format!("no message within {timeout:?}: {e:?}")),
            }
        }
    }

    /// [`Self::read_message_within`] with [`READ_TIMEOUT`].
    pub async fn read_message(&mut self) -> MessageFrame {
        self.read_message_within(READ_TIMEOUT).await
    }

    /// Read messages until `n` arrived, answering heartbeats.
    pub async fn read_messages(&mut self, n: usize) -> Vec<MessageFrame> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            out.push(self.read_message().await);
        }
        out
    }

    /// Close the connection abruptly (both directions), as a crashed consumer would.
    pub fn abort(self) {
        // Dropping the tokio stream closes the socket; the server sees EOF or a reset.
        drop(self.stream);
    }
}

fn is_reset(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::UnexpectedEof
    )
}

/// A readable one-line description of a frame for failure messages.
pub fn describe(frame: &Frame) -> String {
    match frame {
        Frame::Response(d) => format!("response {:?}", String::from_utf8_lossy(d)),
        Frame::Error(d) => format!("error {:?}", String::from_utf8_lossy(d)),
        Frame::Message(m) => format!(
            "message id={} attempts={} body={:?}",
            m.id,
            m.attempts,
            String::from_utf8_lossy(&m.body)
        ),
    }
}
