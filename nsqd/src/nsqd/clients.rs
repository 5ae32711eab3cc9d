//! nsqd's client registry (every connected TCP client, by id) and what a
//! client is allowed at IDENTIFY: its settings, checked against the options,
//! and the shared load counter of a job worker.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nsq_protocol::{IdentifyRequest, TopicName};

use super::Nsqd;
use crate::client::{Client, ClientSettings};

/// An IDENTIFY number out of the range the options allow; the text is what
/// follows `E_BAD_BODY IDENTIFY `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting} ({value}) is invalid")]
pub struct BadSetting {
    pub setting: &'static str,
    pub value: i64,
}

impl Nsqd {
    pub(crate) fn next_client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn add_client(&self, client: Arc<Client>) {
        self.clients().insert(client.id, client);
    }

    pub(crate) fn remove_client(&self, client: &Client) {
        self.clients().remove(&client.id);
    }

    /// Every connected TCP client.
    pub fn clients_snapshot(&self) -> Vec<Arc<Client>> {
        let mut v: Vec<_> = self.clients().values().cloned().collect();
        v.sort_by_key(|c| c.id);
        v
    }

    /// Account a publish to the publishing client, for `/stats` producers.
    pub(crate) fn count_publish(&self, client: &Client, topic: &TopicName, n: u64) {
        client.count_publish(topic.as_str(), n);
    }

    /// Settings for a client that has not sent IDENTIFY.
    pub fn default_client_settings(&self) -> ClientSettings {
        ClientSettings {
            heartbeat_interval: Some(self.opts.default_heartbeat()),
            output_buffer_size: 16 * 1024,
            output_buffer_timeout: Some(*self.opts.output_buffer_timeout),
            msg_timeout: *self.opts.msg_timeout,
            sample_rate: 0,
        }
    }

    /// A job worker for a client that declared a capacity at IDENTIFY.
    /// Connections with the same `client_id` are one worker: they share the
    /// in-flight load total that breaks ties between workers.
    pub(crate) fn job_worker(&self, capacity: u64, name: String) -> crate::client::JobWorker {
        let mut totals = self.job_totals.lock().unwrap_or_else(|e| e.into_inner());
        totals.retain(|_, t| t.strong_count() > 0);
        let total = match totals.get(&name).and_then(|t| t.upgrade()) {
            Some(t) => t,
            None => {
                let t = Arc::new(AtomicU64::new(0));
                totals.insert(name.clone(), Arc::downgrade(&t));
                t
            }
        };
        crate::client::JobWorker {
            capacity,
            name,
            total,
        }
    }

    /// Validate IDENTIFY's numbers in upstream's order; the error text is what
    /// follows `E_BAD_BODY IDENTIFY `.
    pub fn client_settings(&self, req: &IdentifyRequest) -> Result<ClientSettings, BadSetting> {
        let o = &self.opts;
        let mut s = self.default_client_settings();
        let bad = |setting, value| BadSetting { setting, value };
        let ms = |d: Duration| d.as_millis() as i64;
        match req.heartbeat_interval.unwrap_or(0) {
            -1 => s.heartbeat_interval = None,
            0 => {}
            n if n >= 1000 && n <= ms(*o.max_heartbeat_interval) => {
                s.heartbeat_interval = Some(Duration::from_millis(n as u64))
            }
            n => return Err(bad("heartbeat interval", n)),
        }
        match req.output_buffer_timeout.unwrap_or(0) {
            -1 => s.output_buffer_timeout = None,
            0 => {}
            n if n >= ms(*o.min_output_buffer_timeout) && n <= ms(*o.max_output_buffer_timeout) => {
                s.output_buffer_timeout = Some(Duration::from_millis(n as u64))
            }
            n => return Err(bad("output buffer timeout", n)),
        }
        match req.output_buffer_size.unwrap_or(0) {
            -1 => {
                s.output_buffer_size = 1;
                s.output_buffer_timeout = None;
            }
            0 => {}
            n if n >= 64 && n <= o.max_output_buffer_size => s.output_buffer_size = n as usize,
            n => return Err(bad("output buffer size", n)),
        }
        match req.sample_rate.unwrap_or(0) {
            n @ 0..=99 => s.sample_rate = n as u8,
            n => return Err(bad("sample rate", n)),
        }
        match req.msg_timeout.unwrap_or(0) {
            0 => {}
            n if n >= 1000 && n <= ms(*o.max_msg_timeout) => {
                s.msg_timeout = Duration::from_millis(n as u64)
            }
            n => return Err(bad("msg timeout", n)),
        }
        Ok(s)
    }
}
