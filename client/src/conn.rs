//! One connection to nsqd: magic and IDENTIFY, the TLS and compression
//! upgrades and AUTH it negotiates, then a reader task that answers
//! heartbeats and a writer task that batches commands.

use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use nsq_protocol::message::MessageFrame;
use nsq_protocol::{Command, Frame, FrameDecoder, IdentifyRequest, HEARTBEAT, MAGIC_V2};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, Instrument};

use crate::compress::{Codec, Compressor, Decompressor};
use crate::{Config, Error, Result};

/// The read side of a connection, whatever it is layered on (TCP, TLS,
/// decompression).
type Reader = Box<dyn AsyncRead + Send + Unpin>;
/// The write side likewise.
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// Largest frame accepted. nsqd keeps frames near `--max-msg-size` (1 MiB by
/// default); this only stops a corrupt size from growing the buffer without end.
const MAX_FRAME: usize = 64 * 1024 * 1024;

/// A writer flushes once this much is encoded even if more commands wait,
/// so one burst of FINs cannot hold back the socket indefinitely.
const WRITE_BATCH: usize = 64 * 1024;

/// How long `close` waits for nsqd to close its side after our EOF.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// What nsqd reported at IDENTIFY that the client acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// The highest RDY nsqd accepts (`--max-rdy-count`).
    pub max_rdy_count: u64,
    /// How long nsqd waits for FIN/REQ/TOUCH before redelivering.
    pub msg_timeout: Duration,
    pub tls_v1: bool,
    pub snappy: bool,
    /// `Some(level)` when nsqd granted DEFLATE.
    pub deflate: Option<u32>,
    pub auth_required: bool,
}

impl Negotiated {
    /// What an old nsqd that answers IDENTIFY with plain `OK` implies (the
    /// same fallback nsqjs uses).
    const LEGACY: Negotiated = Negotiated {
        max_rdy_count: 2500,
        msg_timeout: Duration::from_secs(60),
        tls_v1: false,
        snappy: false,
        deflate: None,
        auth_required: false,
    };

    fn parse(data: &[u8]) -> Result<Negotiated> {
        if !data.starts_with(b"{") {
            return Ok(Negotiated::LEGACY);
        }
        // Read as loose JSON rather than `IdentifyResponse`: a server that
        // leaves out a key we do not use is still a server we can talk to.
        let v: serde_json::Value = serde_json::from_slice(data).map_err(|e| Error::Unexpected {
            command: "IDENTIFY",
            reply: e.to_string(),
        })?;
        let granted = |key: &str| v[key].as_bool() == Some(true);
        Ok(Negotiated {
            tls_v1: granted("tls_v1"),
            snappy: granted("snappy"),
            deflate: granted("deflate").then(|| {
                // nsqd answers with the level it settled on (1..=9).
                v["deflate_level"].as_u64().unwrap_or(6).clamp(1, 9) as u32
            }),
            auth_required: granted("auth_required"),
            max_rdy_count: v["max_rdy_count"]
                .as_u64()
                .unwrap_or(Negotiated::LEGACY.max_rdy_count),
            msg_timeout: v["msg_timeout"]
                .as_u64()
                .map(Duration::from_millis)
                .unwrap_or(Negotiated::LEGACY.msg_timeout),
        })
    }
}

/// What the reader task hands on. Heartbeats never appear: the reader
/// answers them itself.
#[derive(Debug)]
pub(crate) enum Event {
    Response(Bytes),
    Error(String),
    Message(MessageFrame),
    /// The socket is gone; `None` for a clean end of stream.
    Closed(Option<Error>),
}

enum Out {
    Cmd(Command),
    /// Flush what is queued, then shut down the write side.
    Close,
}

/// The sending side of a connection; cheap to clone into handler tasks.
#[derive(Clone, Debug)]
pub(crate) struct ConnTx {
    tx: mpsc::UnboundedSender<Out>,
}

impl ConnTx {
    pub(crate) fn send(&self, cmd: Command) -> Result<()> {
        self.tx.send(Out::Cmd(cmd)).map_err(|_| Error::Closed)
    }

    pub(crate) fn close(&self) {
        let _ = self.tx.send(Out::Close);
    }
}

/// Test stand-in for a connection's writer: what was sent through a [`ConnTx`].
#[cfg(test)]
pub(crate) struct SentCommands(mpsc::UnboundedReceiver<Out>);

#[cfg(test)]
impl SentCommands {
    pub(crate) fn pair() -> (ConnTx, SentCommands) {
        let (tx, rx) = mpsc::unbounded_channel();
        (ConnTx { tx }, SentCommands(rx))
    }

    /// The commands sent since the last call, as their wire names and args.
    pub(crate) fn take(&mut self) -> Vec<String> {
        let mut v = Vec::new();
        while let Ok(out) = self.0.try_recv() {
            if let Out::Cmd(cmd) = out {
                let mut buf = BytesMut::new();
                cmd.encode(&mut buf);
                v.push(String::from_utf8_lossy(&buf).trim_end().to_owned());
            }
        }
        v
    }
}

/// A connected, identified nsqd connection.
pub(crate) struct Conn {
    pub(crate) addr: String,
    pub(crate) negotiated: Negotiated,
    pub(crate) tx: ConnTx,
    writer: JoinHandle<()>,
    reader: JoinHandle<()>,
}

impl Conn {
    /// Connect, send the magic and IDENTIFY, wait for the answer, upgrade to
    /// TLS and compression as negotiated, AUTH if nsqd asks, then start the
    /// reader (frames go to `events`) and the writer.
    pub(crate) async fn connect(
        addr: &str,
        config: &Config,
        events: mpsc::UnboundedSender<Event>,
    ) -> Result<Conn> {
        let connect_err = |source| Error::Connect {
            addr: addr.to_owned(),
            source,
        };
        // Read the TLS files before dialing: a bad path is the caller's
        // error, not the network's.
        let tls = if config.tls_v1 {
            Some(crate::tls::client_config(config)?)
        } else {
            None
        };
        let mut stream = tokio::time::timeout(config.dial_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| connect_err(io::ErrorKind::TimedOut.into()))?
            .map_err(connect_err)?;
        // Commands are small and latency matters (FIN, RDY); batching is done
        // by the writer task, not by Nagle.
        stream.set_nodelay(true)?;
        let decoder = FrameDecoder {
            max_frame: MAX_FRAME,
        };
        let step = |what: &'static str| move |_| Error::Timeout(what);

        let mut out = BytesMut::from(&MAGIC_V2[..]);
        Command::Identify(Bytes::from(identify(config).to_json())).encode(&mut out);
        stream.write_all(&out).await?;
        let mut buf = BytesMut::with_capacity(16 * 1024);
        let reply = tokio::time::timeout(
            config.dial_timeout,
            read_frame(&mut stream, &mut buf, &decoder),
        )
        .await
        .map_err(step("the IDENTIFY reply"))??;
        let negotiated = Negotiated::parse(&response("IDENTIFY", reply)?)?;
        debug!(addr, ?negotiated, "identified");

        // nsqd sends nothing more until the TLS handshake, so any byte
        // read beyond the reply would be lost under TLS.
        if negotiated.tls_v1 && !buf.is_empty() {
            return Err(Error::Unexpected {
                command: "IDENTIFY",
                reply: format!("{} bytes before the TLS handshake", buf.len()),
            });
        }
        let (mut rd, mut wr): (Reader, Writer) = match (tls, negotiated.tls_v1) {
            (Some(tls), true) => {
                let name = crate::tls::server_name(addr)?;
                let connector = tokio_rustls::TlsConnector::from(tls);
                let tls =
                    tokio::time::timeout(config.dial_timeout, connector.connect(name, stream))
                        .await
                        .map_err(step("the TLS handshake"))??;
                let (r, w) = tokio::io::split(tls);
                (Box::new(r), Box::new(w))
            }
            (Some(_), false) => return Err(Error::TlsRefused(addr.to_owned())),
            (None, _) => {
                let (r, w) = stream.into_split();
                (Box::new(r), Box::new(w))
            }
        };
        if negotiated.tls_v1 {
            expect_ok(&mut rd, &mut buf, &decoder, config, "TLS").await?;
        }
        let codec = match (negotiated.snappy, negotiated.deflate) {
            (true, _) => Some(Codec::Snappy),
            (false, Some(level)) => Some(Codec::Deflate(level)),
            (false, None) => None,
        };
        if let Some(codec) = codec {
            rd = Box::new(Decompressor::new(rd, codec, buf.split()));
            wr = Box::new(Compressor::new(wr, codec));
            expect_ok(&mut rd, &mut buf, &decoder, config, "compression").await?;
        }
        if negotiated.auth_required {
            let secret = config.auth_secret.as_ref().ok_or(Error::AuthRequired)?;
            let mut out = BytesMut::new();
            Command::Auth(Bytes::from(secret.clone())).encode(&mut out);
            wr.write_all(&out).await?;
            wr.flush().await?;
            let reply =
                tokio::time::timeout(config.dial_timeout, read_frame(&mut rd, &mut buf, &decoder))
                    .await
                    .map_err(step("the AUTH reply"))??;
            let granted = response("AUTH", reply)?;
            debug!(addr, reply = %String::from_utf8_lossy(&granted), "authenticated");
        }

        let (tx, rx) = mpsc::unbounded_channel();
        let tx = ConnTx { tx };
        let span = tracing::debug_span!("nsqd", addr);
        let reader =
            tokio::spawn(read_loop(rd, buf, decoder, tx.clone(), events).instrument(span.clone()));
        let writer = tokio::spawn(write_loop(wr, rx).instrument(span));
        Ok(Conn {
            addr: addr.to_owned(),
            negotiated,
            tx,
            writer,
            reader,
        })
    }

    /// Flush every queued command, shut the write side, and wait for nsqd
    /// to close its side. nsqd handles commands in order and closes only on
    /// our EOF, so once this returns it has acted on every FIN and REQ sent:
    /// a stopped consumer leaves nothing in flight behind it.
    pub(crate) async fn close(self) {
        self.tx.close();
        let _ = self.writer.await;
        let mut reader = self.reader;
        if tokio::time::timeout(CLOSE_GRACE, &mut reader)
            .await
            .is_err()
        {
            debug!(addr = %self.addr, "nsqd did not close; dropping the connection");
            reader.abort();
        }
    }
}

/// What this client asks for in IDENTIFY.
fn identify(config: &Config) -> IdentifyRequest {
    let ms = |d: Duration| d.as_millis().min(i64::MAX as u128) as i64;
    IdentifyRequest {
        client_id: Some(config.client_id.clone()),
        hostname: Some(config.hostname.clone()),
        user_agent: Some(config.user_agent.clone()),
        feature_negotiation: Some(true),
        heartbeat_interval: Some(ms(config.heartbeat_interval)),
        msg_timeout: config.msg_timeout.map(ms),
        capacity: config.job_capacity,
        tls_v1: Some(config.tls_v1),
        snappy: Some(config.snappy),
        deflate: Some(config.deflate),
        deflate_level: config.deflate.then_some(i64::from(config.deflate_level)),
        sample_rate: (config.sample_rate > 0).then_some(i64::from(config.sample_rate)),
        output_buffer_size: config.output_buffer_size,
        output_buffer_timeout: config.output_buffer_timeout.map(ms),
        ..IdentifyRequest::default()
    }
}

/// The data of a response frame; an error frame is `command`'s failure.
fn response(command: &'static str, frame: Frame) -> Result<Bytes> {
    match frame {
        Frame::Response(data) => Ok(data),
        Frame::Error(text) => Err(Error::Server {
            command,
            text: String::from_utf8_lossy(&text).into_owned(),
        }),
        Frame::Message(m) => Err(Error::Unexpected {
            command,
            reply: format!("message {}", m.id),
        }),
    }
}

/// Read the `OK` nsqd sends through a layer it just added.
async fn expect_ok(
    rd: &mut Reader,
    buf: &mut BytesMut,
    decoder: &FrameDecoder,
    config: &Config,
    what: &'static str,
) -> Result<()> {
    let reply = tokio::time::timeout(config.dial_timeout, read_frame(rd, buf, decoder))
        .await
        .map_err(|_| Error::Timeout("the upgrade's OK"))??;
    let data = response("IDENTIFY", reply)?;
    if data != nsq_protocol::OK {
        return Err(Error::Unexpected {
            command: "IDENTIFY",
            reply: format!(
                "{what} upgrade answered {:?}",
                String::from_utf8_lossy(&data)
            ),
        });
    }
    Ok(())
}

/// Read until one whole frame is buffered.
async fn read_frame<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    decoder: &FrameDecoder,
) -> Result<Frame> {
    loop {
        if let Some(frame) = decoder.decode(buf)? {
            return Ok(frame);
        }
        if rd.read_buf(buf).await? == 0 {
            return Err(Error::Closed);
        }
    }
}

async fn read_loop(
    mut rd: Reader,
    mut buf: BytesMut,
    decoder: FrameDecoder,
    tx: ConnTx,
    events: mpsc::UnboundedSender<Event>,
) {
    let end = loop {
        let frame = match read_frame(&mut rd, &mut buf, &decoder).await {
            Ok(frame) => frame,
            Err(Error::Closed) => break None,
            Err(e) => break Some(e),
        };
        let event = match frame {
            // nsqd closes a connection that stays silent for two heartbeats.
            Frame::Response(data) if data == HEARTBEAT => {
                let _ = tx.send(Command::Nop);
                continue;
            }
            Frame::Response(data) => Event::Response(data),
            Frame::Error(text) => Event::Error(String::from_utf8_lossy(&text).into_owned()),
            Frame::Message(m) => Event::Message(m),
        };
        if events.send(event).is_err() {
            // Nobody listens any more: the owner has let the connection go.
            break None;
        }
    };
    debug!(error = ?end, "reader done");
    let _ = events.send(Event::Closed(end));
}

async fn write_loop(mut wr: Writer, mut rx: mpsc::UnboundedReceiver<Out>) {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    while let Some(first) = rx.recv().await {
        let mut close = false;
        let mut next = Some(first);
        // Everything already queued goes out in one write.
        while let Some(out) = next {
            match out {
                Out::Cmd(cmd) => cmd.encode(&mut buf),
                Out::Close => {
                    close = true;
                    break;
                }
            }
            next = if buf.len() < WRITE_BATCH {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        // The flush matters for TLS and compression, which hold data back.
        if let Err(e) = async {
            wr.write_all(&buf).await?;
            wr.flush().await
        }
        .await
        {
            debug!(error = %e, "write failed");
            return;
        }
        buf.clear();
        if close {
            break;
        }
    }
    let _ = wr.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identify_reply_parsing() {
        let n = Negotiated::parse(br#"{"max_rdy_count":100,"msg_timeout":5000}"#).unwrap();
        assert_eq!(n.max_rdy_count, 100);
        assert_eq!(n.msg_timeout, Duration::from_secs(5));
        assert_eq!(Negotiated::parse(b"OK").unwrap(), Negotiated::LEGACY);
        let n = Negotiated::parse(
            br#"{"auth_required":true,"tls_v1":true,"deflate":true,"deflate_level":3,"snappy":false}"#,
        )
        .unwrap();
        assert!(n.auth_required && n.tls_v1 && !n.snappy);
        assert_eq!(n.deflate, Some(3));
    }
}
