//! The commands of a subscribed or publishing connection: state checks,
//! SUB, RDY, FIN, REQ, TOUCH, CLS and the publishes, and the replies they
//! hand to the writer.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use nsq_protocol::frame::{encode_error, encode_frame};
use nsq_protocol::{
    Bodies, Command, ErrorCode, FrameType, MessageId, ProtocolError, CLOSE_WAIT, OK,
};
use tokio::time::Instant;
use tracing::error;

use super::Connection;
use crate::channel::Channel;
use crate::channel::InFlightError;
use crate::client::ClientState;

impl Connection {
    /// Send a command's error, if any, after the answers of the publishes
    /// before it; `Err` when it closes the connection.
    pub(super) async fn answered(
        &mut self,
        r: Result<(), ProtocolError>,
    ) -> Result<(), &'static str> {
        if let Err(e) = r {
            self.settle_publishes().await?;
            let fatal = e.is_fatal();
            self.send_error_now(e);
            if fatal {
                return Err("fatal client error");
            }
        }
        Ok(())
    }

    /// Answer every started publish, in order.
    pub(super) async fn settle_publishes(&mut self) -> Result<(), &'static str> {
        while !self.pending.is_empty() {
            let r = self.pending.next().await;
            self.answer_publish(r)?;
        }
        Ok(())
    }

    /// Answer a publish (`first`, the oldest) and every later one that is
    /// already safe, never waiting for one that is not: an ack covers
    /// several publishes, and their answers then leave in one write.
    pub(super) fn answer_publishes(
        &mut self,
        first: Result<(), ProtocolError>,
    ) -> Result<(), &'static str> {
        self.answer_publish(first)?;
        while let Some(r) = self.pending.ready() {
            self.answer_publish(r)?;
        }
        Ok(())
    }

    /// `OK` for a publish that is safe, its error otherwise; `Err` when
    /// that closes the connection.
    pub(super) fn answer_publish(
        &mut self,
        r: Result<(), ProtocolError>,
    ) -> Result<(), &'static str> {
        match r {
            Ok(()) => {
                self.send_response(OK);
                Ok(())
            }
            Err(e) => {
                let fatal = e.is_fatal();
                self.send_error_now(e);
                if fatal {
                    Err("fatal client error")
                } else {
                    Ok(())
                }
            }
        }
    }

    pub(super) fn send_response(&mut self, data: &[u8]) {
        encode_frame(&mut self.replies, FrameType::Response, data);
    }

    /// Send an error that closes the connection, after the answers of the
    /// publishes and FINs before it.
    pub(super) async fn send_error(&mut self, e: ProtocolError) {
        let _ = self.settle_publishes().await;
        self.send_error_now(e);
    }

    /// Send an error after the FINs before it.
    pub(super) fn send_error_now(&mut self, e: ProtocolError) {
        // Earlier FINs first, so every error goes out in command order.
        self.settle_fins();
        log_error(self.client.remote_addr, &e);
        encode_error(&mut self.replies, &e);
    }

    /// Execute one command; an `Err` is sent as an error frame.
    pub(super) async fn exec(&mut self, cmd: Command) -> Result<(), ProtocolError> {
        if !matches!(cmd, Command::Fin(_)) {
            self.settle_fins();
        }
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
                self.publish("PUB", ErrorCode::PubFailed, topic, vec![body].into(), None)
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
                self.publish(
                    "DPUB",
                    ErrorCode::DpubFailed,
                    topic,
                    vec![body].into(),
                    defer,
                )
                .await
            }
            Command::Sub { topic, channel } => self.sub(topic, channel).await,
            Command::Cls => self.cls().await,
            Command::Identify(body) => {
                // Past the first command the socket is split: a later
                // IDENTIFY is answered, but grants no upgrade.
                let (resp, _) = self.identify(&body, false)?;
                self.new_settings = Some(self.settings.clone());
                self.send_response(&resp);
                Ok(())
            }
            Command::Auth(secret) => self.auth(&secret).await,
        }
    }

    /// The error for a command whose parameters the decoder refused, in
    /// upstream's order: `--tls-required` first, then the client's state,
    /// and only then the parameters. `None`: ignore the command (RDY while
    /// closing, however garbled).
    pub(super) fn refusal(&self, verb: &str, params_error: ProtocolError) -> Option<ProtocolError> {
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

    pub(super) fn require_state(
        &self,
        cmd: &str,
        allowed: &[ClientState],
    ) -> Result<(), ProtocolError> {
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
        self.send_response(OK);
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
        self.may_deliver = true;
        Ok(())
    }

    /// FIN is checked at once and settled with the others of this read
    /// (`settle_fins`) before any later command runs. An ID nsqd never hands
    /// out (not 16 lowercase hex digits) fails at once, after the FINs
    /// before it.
    fn fin(&mut self, id: MessageId) -> Result<(), ProtocolError> {
        self.require_state("FIN", &[ClientState::Subscribed, ClientState::Closing])?;
        self.subscribed_channel()?;
        match id.to_u64() {
            Some(n) => self.fins.push(n),
            None => {
                self.settle_fins();
                return Err(fin_failed(id, InFlightError::NotInFlight));
            }
        }
        Ok(())
    }

    /// Whether a FIN read now may skip the command machinery
    /// (`reading::take_fin`): it would pass `fin`'s checks, and no earlier
    /// publish waits for its answer, so a failure is still told in order.
    pub(super) fn takes_fast_fins(&self) -> bool {
        !self.needs_tls
            && self.pending.is_empty()
            && matches!(
                self.client.state(),
                ClientState::Subscribed | ClientState::Closing
            )
            && self.subscription.get().is_some()
    }

    /// Finish the gathered FINs in one lock section of the channel; the
    /// errors go out in order, as if each FIN had run alone.
    pub(super) fn settle_fins(&mut self) {
        if self.fins.is_empty() {
            return;
        }
        let fins = std::mem::take(&mut self.fins);
        let mut failed: Vec<(usize, InFlightError)> = Vec::new();
        if let Some(channel) = self.subscription.get() {
            channel.finish_many(self.client.id, &fins, |at, e| failed.push((at, e)));
        }
        let finished = (fins.len() - failed.len()) as u64;
        self.client
            .finish_count
            .fetch_add(finished, Ordering::Relaxed);
        self.may_deliver |= finished > 0;
        for (i, e) in failed {
            self.send_error_now(fin_failed(MessageId::from_u64(fins[i]), e));
        }
        // Keep the allocation for the next read's FINs.
        self.fins = fins;
        self.fins.clear();
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
        self.may_deliver = true;
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
        self.send_response(CLOSE_WAIT);
        Ok(())
    }

    async fn publish(
        &mut self,
        verb: &'static str,
        code: ErrorCode,
        topic: nsq_protocol::TopicName,
        bodies: Bodies,
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
                self.send_response(OK);
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

/// Upstream's error for a FIN that could not act.
fn fin_failed(id: MessageId, e: InFlightError) -> ProtocolError {
    ProtocolError::new(ErrorCode::FinFailed, format!("FIN {id} failed {e}"))
}

/// Upstream logs every failed command at ERROR as `[ADDR] - CODE text`.
pub(super) fn log_error(addr: SocketAddr, e: &ProtocolError) {
    error!("[{addr}] - {e}");
}
