//! The TCP side (port 4160): the protocol magic, then nsqd's V1 commands
//! (IDENTIFY, REGISTER, UNREGISTER, PING) applied to the registration DB.
//! A connection's registrations end with the connection.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use nsq_protocol::lookup::{
    encode_error, encode_reply, LookupCommand, LookupDecodeError, LookupDecoder, LookupdInfo,
    PeerIdentity, BAD_PROTOCOL, OK,
};
use nsq_protocol::{ProtocolError, MAGIC_V1};

use crate::context::Context;
use crate::json;
use crate::registration_db::{PeerInfo, Registration, Stamp};

/// Accept nsqd connections until cancelled, one task each on `tracker`.
pub(crate) async fn serve(
    listener: TcpListener,
    ctx: Arc<Context>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    nsq_app::net::accept_loop(&listener, &cancel, "TCP", |stream, remote| {
        let remote = go_addr(remote);
        let span = tracing::info_span!("client", remote = %remote);
        tracker.spawn(handle(stream, remote, Arc::clone(&ctx), cancel.clone()).instrument(span));
    })
    .await;
}

/// A remote address as Go prints it: IPv4 clients of a dual-stack listener
/// appear as `1.2.3.4:5`, not `[::ffff:1.2.3.4]:5`. It becomes the peer id
/// and `remote_address` that /lookup shows.
fn go_addr(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, v6.port())).to_string(),
            None => addr.to_string(),
        },
        SocketAddr::V4(_) => addr.to_string(),
    }
}

async fn handle(
    mut stream: TcpStream,
    remote: String,
    ctx: Arc<Context>,
    cancel: CancellationToken,
) {
    tracing::info!("TCP: new client({remote})");
    let mut magic = [0u8; 4];
    let read = tokio::select! {
        _ = cancel.cancelled() => return,
        r = stream.read_exact(&mut magic) => r,
    };
    if let Err(e) = read {
        tracing::error!("failed to read protocol version - {e}");
        return;
    }
    tracing::info!(
        "CLIENT({remote}): desired protocol magic '{}'",
        String::from_utf8_lossy(&magic)
    );
    if &magic != MAGIC_V1 {
        tracing::error!(
            "client({remote}) bad protocol magic '{}'",
            String::from_utf8_lossy(&magic)
        );
        let mut out = BytesMut::new();
        encode_reply(&mut out, BAD_PROTOCOL);
        let _ = stream.write_all(&out).await;
        return;
    }
    let mut client = Client {
        ctx: Arc::clone(&ctx),
        remote,
        conn: ctx.next_conn_id(),
        decoder: LookupDecoder::new(),
    };
    client.io_loop(&mut stream, &cancel).await;
    tracing::info!("PROTOCOL(V1): [{}] exiting ioloop", client.remote);
    if client.decoder.is_identified() {
        for reg in ctx.db.remove_peer(&client.remote, client.conn) {
            tracing::info!(
                "DB: client({}) UNREGISTER category:{} key:{} subkey:{}",
                client.remote,
                reg.category.as_str(),
                reg.key,
                reg.subkey
            );
        }
    }
}

/// One nsqd connection.
struct Client {
    ctx: Arc<Context>,
    /// Go-formatted remote address: the peer id once identified.
    remote: String,
    conn: u64,
    decoder: LookupDecoder,
}

impl Client {
    /// Read, decode and answer until the peer leaves, an error ends the
    /// connection, or shutdown. Replies to every command decoded from one
    /// read go out in one write.
    async fn io_loop(&mut self, stream: &mut TcpStream, cancel: &CancellationToken) {
        let mut input = BytesMut::with_capacity(4096);
        let mut out = BytesMut::with_capacity(256);
        loop {
            let fatal = loop {
                match self.decoder.decode(&mut input) {
                    Ok(Some(cmd)) => match self.exec(cmd) {
                        Ok(reply) => encode_reply(&mut out, &reply),
                        Err(e) => break Some(e),
                    },
                    Ok(None) => break None,
                    Err(LookupDecodeError::Protocol(e)) => break Some(e),
                    Err(LookupDecodeError::LineTooLong) => {
                        tracing::error!("[{}] - command line too long, closing", self.remote);
                        let _ = stream.write_all(&out).await;
                        return;
                    }
                }
            };
            if let Some(e) = fatal {
                // Every V1 error is fatal: answer, then close.
                tracing::error!("[{}] - {e}", self.remote);
                encode_error(&mut out, &e);
                let _ = stream.write_all(&out).await;
                return;
            }
            if !out.is_empty() {
                if let Err(e) = stream.write_all(&out).await {
                    tracing::error!("[{}] - write failed - {e}", self.remote);
                    return;
                }
                out.clear();
            }
            let read = tokio::select! {
                _ = cancel.cancelled() => return,
                r = stream.read_buf(&mut input) => r,
            };
            match read {
                Ok(0) => {
                    // Upstream still answers a command cut short by EOF.
                    if let Some(e) = self.decoder.eof_error() {
                        tracing::error!("[{}] - {e}", self.remote);
                        encode_error(&mut out, &e);
                        let _ = stream.write_all(&out).await;
                    }
                    return;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!("[{}] - read failed - {e}", self.remote);
                    return;
                }
            }
        }
    }

    /// Upstream's log line for a registration this client added or removed.
    fn log_db(&self, verb: &str, reg: &Registration) {
        tracing::info!(
            "DB: client({}) {verb} category:{} key:{} subkey:{}",
            self.remote,
            reg.category.as_str(),
            reg.key,
            reg.subkey
        );
    }

    fn exec(&mut self, cmd: LookupCommand) -> Result<Vec<u8>, ProtocolError> {
        let db = &self.ctx.db;
        match cmd {
            LookupCommand::Ping => {
                // PING may come before IDENTIFY; then it only gets its OK.
                if self.decoder.is_identified() {
                    if let Some(since) = db.ping(&self.remote, self.conn, Stamp::now()) {
                        tracing::debug!("CLIENT({}): pinged (last ping {since:?})", self.remote);
                    }
                }
                Ok(OK.to_vec())
            }
            LookupCommand::Identify(body) => {
                let id = PeerIdentity::parse(&body)?;
                tracing::info!(
                    "CLIENT({}): IDENTIFY Address:{} TCP:{} HTTP:{} Version:{}",
                    self.remote,
                    id.broadcast_address,
                    id.tcp_port,
                    id.http_port,
                    id.version
                );
                let info = PeerInfo {
                    remote_address: self.remote.clone(),
                    hostname: id.hostname,
                    broadcast_address: id.broadcast_address,
                    tcp_port: id.tcp_port,
                    http_port: id.http_port,
                    version: id.version,
                };
                if db.identify(self.conn, info, Stamp::now()) {
                    tracing::info!(
                        "DB: client({}) REGISTER category:client key: subkey:",
                        self.remote
                    );
                }
                self.decoder.set_identified();
                Ok(json::to_vec(&LookupdInfo {
                    broadcast_address: self.ctx.broadcast_address.clone(),
                    hostname: self.ctx.hostname.clone(),
                    http_port: i64::from(self.ctx.http_port),
                    tcp_port: i64::from(self.ctx.tcp_port),
                    version: nsq_protocol::VERSION.to_owned(),
                }))
            }
            LookupCommand::Register { topic, channel } => {
                let channel = channel.as_ref().map(|c| c.as_str());
                for reg in db.register(&self.remote, topic.as_str(), channel) {
                    self.log_db("REGISTER", &reg);
                }
                Ok(OK.to_vec())
            }
            LookupCommand::Unregister { topic, channel } => {
                let channel = channel.as_ref().map(|c| c.as_str());
                let out = db.unregister(&self.remote, topic.as_str(), channel);
                for reg in out.unexpected {
                    tracing::warn!(
                        "client({}) unexpected UNREGISTER category:channel key:{} subkey:{}",
                        self.remote,
                        reg.key,
                        reg.subkey
                    );
                }
                for reg in out.removed {
                    self.log_db("UNREGISTER", &reg);
                }
                Ok(OK.to_vec())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_addresses_print_like_go() {
        let v4: SocketAddr = "10.0.0.5:53422".parse().unwrap();
        assert_eq!(go_addr(v4), "10.0.0.5:53422");
        let mapped: SocketAddr = "[::ffff:10.0.0.5]:53422".parse().unwrap();
        assert_eq!(go_addr(mapped), "10.0.0.5:53422");
        let v6: SocketAddr = "[::1]:4160".parse().unwrap();
        assert_eq!(go_addr(v6), "[::1]:4160");
    }
}
