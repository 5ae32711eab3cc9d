//! A raw client for nsqlookupd's TCP protocol (V1): exact bytes out, size-prefixed replies in.
//!
//! Deliberately not built on the protocol crate's lookup codec, so end-to-end tests check the
//! wire format lookupd really speaks rather than agreeing with a shared (possibly wrong)
//! implementation. Every read has a deadline.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::raw::READ_TIMEOUT;

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
    /// Connect and send the V1 magic.
    pub async fn connect(addr: SocketAddr) -> RawLookupConn {
        let mut conn = Self::connect_without_magic(addr).await;
        conn.write_raw(MAGIC_V1).await;
        conn
    }

    /// Connect without sending anything (for bad-magic tests).
    pub async fn connect_without_magic(addr: SocketAddr) -> RawLookupConn {
        let stream = tokio::time::timeout(READ_TIMEOUT, TcpStream::connect(addr))
            .await
            .unwrap_or_else(|_| panic!("connect to {addr} timed out"))
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream.set_nodelay(true).expect("set TCP_NODELAY");
        RawLookupConn {
            stream,
            buf: BytesMut::with_capacity(4096),
            peer: addr,
        }
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
        let mut out = b"IDENTIFY\n".to_vec();
        let size = u32::try_from(body.len()).expect("body fits in u32");
        out.extend_from_slice(&size.to_be_bytes());
        out.extend_from_slice(body);
        self.write_raw(&out).await;
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
            LookupRead::Closed => {}
            other => panic!(
                "lookupd {}: expected the connection to close, got {other:?}",
                self.peer
            ),
        }
    }
}
