//! The writer task of a connection: delivers when its channel wakes it,
//! sends heartbeats, finishes writes the socket could not take at once and
//! whatever the reader queued while the output was busy, and closes the
//! write side at the end. The output itself is shared (`output.rs`).

use std::sync::Arc;

use nsq_protocol::frame::encode_response;
use nsq_protocol::HEARTBEAT;
use tokio::io::AsyncWrite;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::output::Shared;

pub(super) struct Writer<W> {
    shared: Arc<Shared<W>>,
    stop: CancellationToken,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    pub(super) fn new(shared: Arc<Shared<W>>, stop: CancellationToken) -> Self {
        Writer { shared, stop }
    }

    pub(super) async fn run(self) {
        if let Err(reason) = self.write_loop().await {
            debug!(reason, "writer stopping");
        }
        self.shared.lock().await.finish().await;
        // Whatever ended the writer ends the connection.
        self.stop.cancel();
    }

    async fn write_loop(&self) -> Result<(), &'static str> {
        let mut seen = None;
        let mut heartbeat = None;
        loop {
            {
                let mut out = tokio::select! {
                    biased;
                    _ = self.stop.cancelled() => return Ok(()),
                    out = self.shared.lock() => out,
                };
                if self.shared.is_closed() {
                    return Ok(());
                }
                // Replies first (taken by `lock`), so SUB's OK precedes the
                // first message.
                out.pump(&self.shared).await?;
                let changes = self.shared.settings_changes();
                if seen != Some(changes) {
                    seen = Some(changes);
                    heartbeat = heartbeat_timer(out.settings.heartbeat_interval);
                }
            }
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => return Ok(()),
                _ = self.shared.client.wake.notified() => {}
                _ = tick(&mut heartbeat) => {
                    encode_response(self.shared.lock().await.buffer(), HEARTBEAT);
                }
            }
        }
    }
}

fn heartbeat_timer(interval: Option<std::time::Duration>) -> Option<tokio::time::Interval> {
    interval.map(|hb| {
        let mut t = tokio::time::interval_at(Instant::now() + hb, hb);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    })
}

async fn tick(timer: &mut Option<tokio::time::Interval>) {
    match timer {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}
