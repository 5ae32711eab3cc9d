//! Requeueing a job's dead letters: a V2 consumer on the dead-letter topic
//! that publishes each message back to the job over HTTP and FINs it only
//! once that succeeded.

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use hyper::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use nsq_app::http_client::HttpClient;
use nsq_protocol::command::Command;
use nsq_protocol::frame::{Frame, FrameDecoder, FrameError};

use super::IDLE;
use crate::cluster::{enc, Node, NodeError};

/// What stopped a requeue early.
#[derive(Debug, thiserror::Error)]
pub(super) enum RequeueError {
    #[error("connect to {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("write to nsqd: {0}")]
    Write(io::Error),
    #[error("read from nsqd: {0}")]
    Read(io::Error),
    #[error("nsqd closed the connection")]
    Closed,
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("invalid topic {0:?}")]
    Topic(String),
    #[error("invalid channel {0:?}")]
    Channel(String),
    #[error("SUB {topic} {channel}: {answer}")]
    Subscribe {
        topic: String,
        channel: String,
        answer: String,
    },
    /// An error frame from nsqd, as it sent it.
    #[error("{0}")]
    Nsqd(String),
    #[error(transparent)]
    Publish(#[from] NodeError),
    #[error("no CLOSE_WAIT from nsqd")]
    NoCloseWait,
}

impl RequeueError {
    fn nsqd(frame: &[u8]) -> Self {
        RequeueError::Nsqd(String::from_utf8_lossy(frame).into_owned())
    }
}

/// The node's TCP address: the host it is fetched at, its TCP port.
fn tcp_addr(node: &Node) -> String {
    let host = node
        .fetch_addr
        .rsplit_once(':')
        .map_or(node.fetch_addr.as_str(), |(h, _)| h);
    format!("{host}:{}", node.producer.tcp_port)
}

/// Move up to `limit` messages of `dead`/`dead_channel` to `job` on `node`:
/// how many moved, and what stopped it early, if something went wrong.
pub(super) async fn requeue(c: &HttpClient, what: Requeue<'_>) -> (u64, Option<RequeueError>) {
    let mut moved = 0;
    let r = requeue_inner(c, what, &mut moved).await;
    (moved, r.err())
}

/// One node's requeue: its dead letters of `dead`/`dead_channel` go back
/// to `job`, at most `limit` of them.
#[derive(Clone, Copy)]
pub(super) struct Requeue<'a> {
    pub node: &'a Node,
    pub dead: &'a str,
    pub dead_channel: &'a str,
    pub job: &'a str,
    pub limit: u64,
}

async fn requeue_inner(
    c: &HttpClient,
    what: Requeue<'_>,
    moved: &mut u64,
) -> Result<(), RequeueError> {
    let Requeue {
        node,
        dead,
        dead_channel,
        job,
        limit,
    } = what;
    let addr = tcp_addr(node);
    let mut conn = V2::connect(&addr).await?;
    let sub = Command::Sub {
        topic: (dead.parse()).map_err(|_| RequeueError::Topic(dead.to_owned()))?,
        channel: (dead_channel.parse())
            .map_err(|_| RequeueError::Channel(dead_channel.to_owned()))?,
    };
    conn.send(&sub).await?;
    match conn.next(IDLE).await? {
        Some(Frame::Response(r)) if &r[..] == b"OK" => {}
        other => {
            return Err(RequeueError::Subscribe {
                topic: dead.to_owned(),
                channel: dead_channel.to_owned(),
                answer: format!("{other:?}"),
            })
        }
    }
    conn.send(&Command::Rdy(1)).await?;
    let pub_url = format!("http://{}/pub?topic={}", node.fetch_addr, enc(job));
    while *moved < limit {
        let Some(frame) = conn.next(IDLE).await? else {
            break; // nothing more arrived: the rest is in flight elsewhere
        };
        match frame {
            Frame::Response(r) if &r[..] == b"_heartbeat_" => conn.send(&Command::Nop).await?,
            Frame::Response(_) => {}
            Frame::Error(e) => return Err(RequeueError::nsqd(&e)),
            Frame::Message(m) => {
                let published = c
                    .request(Method::POST, &pub_url, None, m.body.clone())
                    .await
                    .map_err(NodeError::from)
                    .and_then(|(status, body)| match status {
                        200 => Ok(()),
                        s => Err(NodeError::status("POST", &pub_url, s, &body)),
                    });
                if let Err(e) = published {
                    let req = Command::Req {
                        id: m.id,
                        timeout_ms: 0,
                    };
                    // Closing gives it back too, should this fail.
                    let _ = conn.send(&req).await;
                    return Err(e.into());
                }
                conn.send(&Command::Fin(m.id)).await?;
                *moved += 1;
            }
        }
    }
    conn.close().await
}

/// A bare V2 consumer connection.
struct V2 {
    stream: TcpStream,
    buf: BytesMut,
    decoder: FrameDecoder,
}

impl V2 {
    async fn connect(addr: &str) -> Result<V2, RequeueError> {
        let connect = |source| RequeueError::Connect {
            addr: addr.to_owned(),
            source,
        };
        let mut stream = timeout(IDLE, TcpStream::connect(addr))
            .await
            .map_err(|_| connect(io::ErrorKind::TimedOut.into()))?
            .map_err(connect)?;
        stream
            .write_all(b"  V2")
            .await
            .map_err(RequeueError::Write)?;
        Ok(V2 {
            stream,
            buf: BytesMut::with_capacity(4096),
            decoder: FrameDecoder::default(),
        })
    }

    async fn send(&mut self, cmd: &Command) -> Result<(), RequeueError> {
        let mut out = BytesMut::new();
        cmd.encode(&mut out);
        self.stream
            .write_all(&out)
            .await
            .map_err(RequeueError::Write)
    }

    /// The next frame, or `None` when none came within `wait`.
    async fn next(&mut self, wait: Duration) -> Result<Option<Frame>, RequeueError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(f) = self.decoder.decode(&mut self.buf)? {
                return Ok(Some(f));
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return Ok(None),
                Ok(Ok(0)) => return Err(RequeueError::Closed),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(RequeueError::Read(e)),
            }
        }
    }

    /// CLS, then wait for CLOSE_WAIT: by then nsqd has carried out every
    /// FIN sent before. Messages that still arrive go back when we hang up.
    async fn close(mut self) -> Result<(), RequeueError> {
        self.send(&Command::Cls).await?;
        loop {
            match self.next(IDLE).await? {
                Some(Frame::Response(r)) if &r[..] == b"CLOSE_WAIT" => return Ok(()),
                Some(Frame::Error(e)) => return Err(RequeueError::nsqd(&e)),
                Some(_) => {}
                None => return Err(RequeueError::NoCloseWait),
            }
        }
    }
}
