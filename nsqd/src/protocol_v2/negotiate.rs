//! IDENTIFY and AUTH: feature negotiation on the whole socket (TLS, then
//! snappy or deflate, an `OK` after each upgrade, as upstream), and the
//! auth server's grants that SUB and the publishes are checked against.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use nsq_protocol::frame::encode_frame;
use nsq_protocol::{
    Command, DecodeError, ErrorCode, FrameType, IdentifyRequest, IdentifyResponse, ProtocolError,
    OK,
};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};
use tracing::{info, warn};

use super::{
    log_error, read_with_deadline, BoxRead, BoxWrite, CommandClock, Connection, Input, ReadFailed,
    READ_CHUNK,
};
use crate::auth::{AuthQuery, AuthState};
use crate::client::ClientState;
use crate::compress::{Codec, Compressor, Decompressor};

/// Upstream's deadline for a client's TLS handshake; also bounds each
/// frame of the upgrade sequence.
const UPGRADE_DEADLINE: Duration = Duration::from_secs(5);

/// The socket once IDENTIFY is done: plain TCP keeps its lock-free halves;
/// TLS or compression makes boxed halves.
pub(super) enum Transport {
    Plain(TcpStream),
    Upgraded(BoxRead, BoxWrite),
}

/// What IDENTIFY granted beyond settings.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Upgrades {
    tls: bool,
    codec: Option<Codec>,
}

/// Write one frame straight to the socket and flush it, within a deadline:
/// the frames of the upgrade sequence go out before the writer task exists.
async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    frame_type: FrameType,
    data: &[u8],
) -> Result<(), &'static str> {
    let mut buf = BytesMut::with_capacity(8 + data.len());
    encode_frame(&mut buf, frame_type, data);
    let fut = async {
        w.write_all(&buf).await?;
        w.flush().await
    };
    match timeout(UPGRADE_DEADLINE, fut).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err("write error"),
        Err(_) => Err("write timed out"),
    }
}

impl Connection {
    /// Read up to the first command on the whole socket. IDENTIFY is
    /// answered here and may upgrade the socket; any other command is handed
    /// back, still to run, along with the plain socket.
    pub(super) async fn negotiate(
        &mut self,
        mut stream: TcpStream,
        input: &mut Input,
    ) -> Result<(Transport, Option<Command>), &'static str> {
        let stop = self.client.stop.clone();
        let mut clock = CommandClock::default();
        loop {
            match input.decoder.decode(&mut input.buf) {
                Ok(Some(Command::Identify(body))) => {
                    return self.identify_and_upgrade(stream, &body, input).await;
                }
                Ok(Some(cmd)) => return Ok((Transport::Plain(stream), Some(cmd))),
                Ok(None) => {}
                Err(DecodeError::LineTooLong) => return Err("command line too long"),
                Err(e) => {
                    let e = match e {
                        DecodeError::Params { verb, error } => self.refusal(verb, error),
                        other => other.protocol_error().cloned(),
                    };
                    // Nothing is ignored in the first state (RDY is refused).
                    let Some(e) = e else {
                        return Err("fatal client error");
                    };
                    log_error(self.client.remote_addr, &e);
                    write_frame(&mut stream, FrameType::Error, &e.to_wire()).await?;
                    return Err("fatal client error");
                }
            }
            if input.buf.capacity() - input.buf.len() < READ_CHUNK / 4 {
                input.buf.reserve(READ_CHUNK);
            }
            let deadline = clock.deadline(&self.settings);
            let n = tokio::select! {
                _ = stop.cancelled() => return Err("connection stopped"),
                r = read_with_deadline(&mut stream, &mut input.buf, deadline) => r,
            };
            let n = match n {
                Ok(n) => n,
                Err(e) => {
                    if e == ReadFailed::TimedOut {
                        if let Some(err) = input.decoder.eof_error() {
                            write_frame(&mut stream, FrameType::Error, &err.to_wire()).await?;
                        }
                    }
                    return Err(e.reason());
                }
            };
            if n == 0 {
                if let Some(e) = input.decoder.eof_error() {
                    write_frame(&mut stream, FrameType::Error, &e.to_wire()).await?;
                }
                return Err("client closed the connection");
            }
        }
    }

    /// Answer IDENTIFY, then upgrade in upstream's order: TLS and its `OK`
    /// inside TLS, then snappy or deflate and its `OK` compressed.
    async fn identify_and_upgrade(
        &mut self,
        mut stream: TcpStream,
        body: &[u8],
        input: &mut Input,
    ) -> Result<(Transport, Option<Command>), &'static str> {
        let (resp, up) = match self.identify(body, true) {
            Ok(r) => r,
            Err(e) => {
                log_error(self.client.remote_addr, &e);
                write_frame(&mut stream, FrameType::Error, &e.to_wire()).await?;
                return Err("fatal client error");
            }
        };
        write_frame(&mut stream, FrameType::Response, &resp).await?;
        if up == Upgrades::default() {
            return Ok((Transport::Plain(stream), None));
        }
        let (read, mut write): (BoxRead, BoxWrite) = if up.tls {
            let Some(config) = self.nsqd.tls.clone() else {
                return Err("TLS granted without a TLS configuration");
            };
            if !input.buf.is_empty() {
                // The client cannot know TLS was granted before reading the
                // reply, so bytes already here are a protocol violation.
                return Err("client sent data before the TLS handshake");
            }
            info!(
                "PROTOCOL(V2): [{}] upgrading connection to TLS",
                self.client.remote_addr
            );
            let accept = tokio_rustls::TlsAcceptor::from(config).accept(stream);
            let mut tls = match timeout(UPGRADE_DEADLINE, accept).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    warn!("TLS handshake failed: {e}");
                    return Err("TLS handshake failed");
                }
                Err(_) => return Err("TLS handshake timed out"),
            };
            {
                let mut info = self.client.info.lock().unwrap_or_else(|e| e.into_inner());
                info.tls = true;
                info.tls_info = crate::tls::TlsInfo::of(tls.get_ref().1);
            }
            self.tls_common_name = crate::tls::peer_common_name(tls.get_ref().1);
            self.tls = true;
            self.needs_tls = false;
            write_frame(&mut tls, FrameType::Response, OK).await?;
            let (r, w) = tokio::io::split(tls);
            (Box::new(r), Box::new(w))
        } else {
            let (r, w) = stream.into_split();
            (Box::new(r), Box::new(w))
        };
        let Some(codec) = up.codec else {
            return Ok((Transport::Upgraded(read, write), None));
        };
        match codec {
            Codec::Snappy => info!(
                "PROTOCOL(V2): [{}] upgrading connection to snappy",
                self.client.remote_addr
            ),
            Codec::Deflate(level) => info!(
                "PROTOCOL(V2): [{}] upgrading connection to deflate (level {level})",
                self.client.remote_addr
            ),
        }
        {
            let mut info = self.client.info.lock().unwrap_or_else(|e| e.into_inner());
            info.snappy = codec == Codec::Snappy;
            info.deflate = matches!(codec, Codec::Deflate(_));
        }
        write = Box::new(Compressor::new(write, codec));
        write_frame(&mut write, FrameType::Response, OK).await?;
        // Whatever arrived after IDENTIFY is already compressed.
        let read = Box::new(Decompressor::new(read, codec, input.buf.split()));
        Ok((Transport::Upgraded(read, write), None))
    }

    /// Apply IDENTIFY and build its reply; with `can_upgrade`, also what
    /// to upgrade to (the caller performs the upgrades).
    pub(super) fn identify(
        &mut self,
        body: &[u8],
        can_upgrade: bool,
    ) -> Result<(Bytes, Upgrades), ProtocolError> {
        self.require_state("IDENTIFY", &[ClientState::Init])?;
        let req = IdentifyRequest::parse(body)?;
        info!(
            "[{}] IDENTIFY: {}",
            self.client.remote_addr,
            req.upstream_log_text()
        );
        let settings = self
            .nsqd
            .client_settings(&req)
            .map_err(|text| ProtocolError::new(ErrorCode::BadBody, format!("IDENTIFY {text}")))?;
        {
            let mut info = self.client.info.lock().unwrap_or_else(|e| e.into_inner());
            info.client_id = req.client_id.clone().unwrap_or_default();
            info.hostname = req.hostname.clone().unwrap_or_default();
            info.user_agent = req.user_agent.clone().unwrap_or_default();
            info.topology_region = req.topology_region.clone().unwrap_or_default();
            info.topology_zone = req.topology_zone.clone().unwrap_or_default();
            info.identified = true;
            info.sample_rate = settings.sample_rate;
        }
        match req.capacity {
            Some(0) => {
                return Err(ProtocolError::new(
                    ErrorCode::BadBody,
                    "IDENTIFY capacity (0) is invalid",
                ))
            }
            Some(capacity) => {
                let name = req.client_id.clone().unwrap_or_default();
                let name = if name.is_empty() {
                    self.client.remote_addr.to_string()
                } else {
                    name
                };
                self.client.set_job(self.nsqd.job_worker(capacity, name));
            }
            None => {}
        }
        self.settings = settings.clone();
        if !req.feature_negotiation.unwrap_or(false) {
            return Ok((Bytes::from_static(OK), Upgrades::default()));
        }
        let opts = &self.nsqd.opts;
        let tls = can_upgrade && self.nsqd.tls.is_some() && req.tls_v1 == Some(true);
        let deflate = can_upgrade && opts.deflate && req.deflate == Some(true);
        let snappy = can_upgrade && opts.snappy && req.snappy == Some(true);
        // Upstream reports a level even when deflate is off.
        let mut deflate_level = 6;
        if let Some(asked) = req.deflate_level.filter(|&l| deflate && l > 0) {
            deflate_level = asked;
        }
        deflate_level = deflate_level.min(opts.max_deflate_level);
        if deflate && snappy {
            return Err(ProtocolError::new(
                ErrorCode::IdentifyFailed,
                "cannot enable both deflate and snappy compression",
            ));
        }
        let resp = IdentifyResponse {
            max_rdy_count: opts.max_rdy_count,
            version: nsq_protocol::VERSION.to_string(),
            max_msg_timeout: opts.max_msg_timeout.as_millis() as i64,
            msg_timeout: settings.msg_timeout.as_millis() as i64,
            tls_v1: tls,
            deflate,
            deflate_level,
            max_deflate_level: opts.max_deflate_level,
            snappy,
            sample_rate: i64::from(settings.sample_rate),
            auth_required: self.auth_enabled,
            output_buffer_size: settings.output_buffer_size as i64,
            output_buffer_timeout: settings
                .output_buffer_timeout
                .map_or(0, |d| d.as_millis() as i64),
            topology_region: opts.topology_region.clone(),
            topology_zone: opts.topology_zone.clone(),
        };
        let codec = if snappy {
            Some(Codec::Snappy)
        } else if deflate {
            Some(Codec::Deflate(deflate_level as u32))
        } else {
            None
        };
        Ok((Bytes::from(resp.to_json()), Upgrades { tls, codec }))
    }

    pub(super) async fn auth(&mut self, secret: &[u8]) -> Result<(), ProtocolError> {
        self.require_state("AUTH", &[ClientState::Init])?;
        if self
            .auth
            .as_ref()
            .is_some_and(AuthState::has_authorizations)
        {
            return Err(ProtocolError::invalid("AUTH already set"));
        }
        if !self.auth_enabled {
            return Err(ProtocolError::new(ErrorCode::AuthDisabled, "AUTH disabled"));
        }
        self.auth_secret = String::from_utf8_lossy(secret).into_owned();
        self.refresh_auth().await?;
        let Some(state) = self.auth.as_ref().filter(|s| s.has_authorizations()) else {
            return Err(ProtocolError::new(
                ErrorCode::Unauthorized,
                "AUTH no authorizations found",
            ));
        };
        let resp = nsq_protocol::identify::AuthResponse {
            identity: state.identity.clone(),
            identity_url: state.identity_url.clone(),
            permission_count: state.permission_count() as i64,
        };
        let json = serde_json::to_vec(&resp)
            .map_err(|e| ProtocolError::new(ErrorCode::AuthError, format!("AUTH error {e}")))?;
        self.send_response(&json);
        Ok(())
    }

    /// Ask the auth server about this connection's secret and keep the
    /// answer. Why it failed is logged, never told to the client.
    async fn refresh_auth(&mut self) -> Result<(), ProtocolError> {
        let query = AuthQuery {
            remote_ip: self.client.remote_addr.ip().to_string(),
            tls: self.tls,
            common_name: &self.tls_common_name,
            secret: &self.auth_secret,
        };
        match crate::auth::query(&self.nsqd, &query).await {
            Ok(state) => {
                let mut info = self.client.info.lock().unwrap_or_else(|e| e.into_inner());
                info.authed = state.has_authorizations();
                info.auth_identity = state.identity.clone();
                info.auth_identity_url = state.identity_url.clone();
                drop(info);
                self.auth = Some(state);
                Ok(())
            }
            Err(e) => {
                warn!("AUTH failed {e}");
                Err(ProtocolError::new(ErrorCode::AuthFailed, "AUTH failed"))
            }
        }
    }

    /// With auth on, the grant must cover `cmd` on this topic (and channel,
    /// for SUB); an expired grant is fetched again first.
    pub(super) async fn check_auth(
        &mut self,
        cmd: &str,
        topic: &str,
        channel: &str,
    ) -> Result<(), ProtocolError> {
        if !self.auth_enabled {
            return Ok(());
        }
        let expired = match &self.auth {
            Some(state) if state.has_authorizations() => state.is_expired(Instant::now()),
            _ => {
                return Err(ProtocolError::new(
                    ErrorCode::AuthFirst,
                    format!("AUTH required before {cmd}"),
                ))
            }
        };
        if expired {
            self.refresh_auth().await?;
        }
        if self
            .auth
            .as_ref()
            .is_some_and(|s| s.is_allowed(topic, channel))
        {
            Ok(())
        } else {
            // Topic and channel names need no escaping, so Rust's `{:?}`
            // quotes them exactly as Go's `%q` does.
            Err(ProtocolError::new(
                ErrorCode::Unauthorized,
                format!("AUTH failed for {cmd} on {topic:?} {channel:?}"),
            ))
        }
    }
}
