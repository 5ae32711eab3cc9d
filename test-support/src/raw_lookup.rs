//! A raw client for nsqlookupd's TCP protocol (V1): exact bytes out, size-prefixed replies in.
//!
//! Deliberately not built on the protocol crate's lookup codec, so end-to-end tests check the
//! wire format lookupd really speaks rather than agreeing with a shared (possibly wrong)
//! implementation. Every read has a deadline.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use serde_json::Value;

use crate::raw::{connect_tcp, READ_TIMEOUT};

/// The V1 protocol magic a client sends first.
pub const MAGIC_V1: &[u8] = b"  V1";

/// What came back from one read of [`RawLookupConn::try_read_reply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupRead {
    /// One size-prefixed reply (V1 replies carry no frame type; errors are text like
    /// `E_INVALID ...`).
    Reply(Vec<u8>),
    /// The server closed the connection before a complete reply.
    Closed,
    /// Nothing complete within the timeout.
    Timeout,
}

/// One raw TCP connection to nsqlookupd.
pub struct RawLookupConn {
    stream: TcpStream,
    buf: BytesMut,
    peer: SocketAddr,
}

impl RawLookupConn {
    /// Connect and IDENTIFY as an nsqd with these ports (see [`Self::identify_as_nsqd`]).
    pub async fn identified(addr: SocketAddr, tcp_port: u16, http_port: u16) -> RawLookupConn {
        let mut conn = Self::connect(addr).await;
        conn.identify_as_nsqd(tcp_port, http_port).await;
        conn
    }

    /// Connect without sending anything (for bad-magic tests).
    pub async fn connect_without_magic(addr: SocketAddr) -> RawLookupConn {
        RawLookupConn {
            stream: connect_tcp(addr).await,
            buf: BytesMut::with_capacity(4096),
            peer: addr,
        }
    }

    /// Connect and send the V1 magic.
    pub async fn connect(addr: SocketAddr) -> RawLookupConn {
        let mut conn = Self::connect_without_magic(addr).await;
        conn.write_raw(MAGIC_V1).await;
        conn
    }

    /// Write bytes as they are.
    pub async fn write_raw(&mut self, bytes: &[u8]) {
        match tokio::time::timeout(READ_TIMEOUT, self.stream.write_all(bytes)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("write to lookupd {}: {e}", self.peer),
            Err(_) => panic!("write to lookupd {} timed out", self.peer),
        }
    }

    /// `IDENTIFY\n` followed by the size-prefixed JSON body, as nsqd sends it.
    pub async fn send_identify(&mut self, body: &[u8]) {
        self.write_raw(&identify_cmd(body)).await;
    }

    /// IDENTIFY as an nsqd 1.3.0 on 127.0.0.1 with these ports; the reply as JSON.
    pub async fn identify_as_nsqd(&mut self, tcp_port: u16, http_port: u16) -> Value {
        self.send_identify(&identify_body(tcp_port, http_port))
            .await;
        let reply = self.read_reply().await;
        serde_json::from_str(&reply).unwrap_or_else(|_| panic!("IDENTIFY reply {reply:?}"))
    }

    /// Send `cmd` as it is and return the reply as text.
    pub async fn command(&mut self, cmd: &[u8]) -> String {
        self.write_raw(cmd).await;
        self.read_reply().await
    }

    /// This end's address, which lookupd names the peer by.
    pub fn local_addr(&self) -> String {
        self.stream
            .local_addr()
            .expect("a connected socket's address")
            .to_string()
    }

    /// Close the sending half, as a client that is done talking does.
    pub async fn shutdown_write(&mut self) {
        self.stream.shutdown().await.expect("half-close");
    }

    /// The next reply's size field alone (for answers that are not V1 replies, such as an
    /// HTTP server's), without consuming it.
    pub async fn peek_reply_size(&mut self) -> u32 {
        while self.buf.len() < 4 {
            match tokio::time::timeout(READ_TIMEOUT, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => panic!("lookupd {}: no reply size in time", self.peer),
                Ok(Ok(0)) | Ok(Err(_)) => panic!("lookupd {}: closed before a reply", self.peer),
                Ok(Ok(_)) => {}
            }
        }
        u32::from_be_bytes(self.buf[..4].try_into().expect("4 bytes"))
    }

    /// Whatever bytes come next, undecoded (for tests that decode replies themselves); empty
    /// once the server closed.
    pub async fn read_chunk(&mut self) -> Bytes {
        if self.buf.is_empty() {
            match tokio::time::timeout(READ_TIMEOUT, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => panic!("lookupd {}: nothing to read in time", self.peer),
                Ok(r) => {
                    r.unwrap_or_else(|e| panic!("read from lookupd {}: {e}", self.peer));
                }
            }
        }
        self.buf.split().freeze()
    }

    /// Read the next reply, waiting at most `timeout`.
    pub async fn try_read_reply(&mut self, timeout: Duration) -> LookupRead {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.buf.len() >= 4 {
                let size = u32::from_be_bytes(self.buf[..4].try_into().expect("4 bytes")) as usize;
                if self.buf.len() >= 4 + size {
                    self.buf.advance(4);
                    return LookupRead::Reply(self.buf.split_to(size).to_vec());
                }
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return LookupRead::Timeout,
                Ok(Ok(0)) | Ok(Err(_)) => return LookupRead::Closed,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// The next reply as text; panics on timeout or close.
    pub async fn read_reply(&mut self) -> String {
        match self.try_read_reply(READ_TIMEOUT).await {
            LookupRead::Reply(r) => String::from_utf8_lossy(&r).into_owned(),
            other => panic!("lookupd {}: expected a reply, got {other:?}", self.peer),
        }
    }

    /// Expect the server to close the connection (nothing more arriving first) within
    /// [`READ_TIMEOUT`]: every V1 error is fatal.
    pub async fn expect_closed(&mut self) {
        match self.try_read_reply(READ_TIMEOUT).await {
            LookupRead::Closed if self.buf.is_empty() => {}
            LookupRead::Closed => panic!(
                "lookupd {}: closed after a partial reply {:?}",
                self.peer, self.buf
            ),
            other => panic!(
                "lookupd {}: expected the connection to close, got {other:?}",
                self.peer
            ),
        }
    }
}

/// The IDENTIFY body nsqd 1.3.0 sends (as in the golden samples' setup).
pub fn identify_body(tcp_port: u16, http_port: u16) -> Vec<u8> {
    format!(
        r#"{{"broadcast_address":"127.0.0.1","hostname":"vm","http_port":{http_port},"tcp_port":{tcp_port},"topology_region":"","topology_zone":"","version":"1.3.0"}}"#
    )
    .into_bytes()
}

/// `IDENTIFY\n`, the body's size and the body: the whole command as bytes.
pub fn identify_cmd(body: &[u8]) -> Vec<u8> {
    let mut out = b"IDENTIFY\n".to_vec();
    let size = u32::try_from(body.len()).expect("body fits in u32");
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(body);
    out
}
