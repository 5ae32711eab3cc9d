//! The options that may change while nsqd runs (`PUT /config/:opt`: the
//! lookupd list and the log level). `GET /config/:opt`'s view of every
//! option is in `http/config.rs`.

use std::sync::{Mutex, MutexGuard};

use nsq_app::logging::{LiveLogLevel, LogHandle, LogLevel};

use crate::options::Options;

/// Live values, each behind its own short std Mutex taken only by `/config`
/// handlers and readers of that one value.
pub struct LiveOptions {
    /// Held while the lookup peers are being swapped, so two concurrent PUTs
    /// cannot leave the list and the connected peers disagreeing.
    lookupd_tcp_addresses: Mutex<Vec<String>>,
    log_level: LiveLogLevel,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LiveOptions {
    pub fn new(opts: &Options) -> Self {
        LiveOptions {
            lookupd_tcp_addresses: Mutex::new(opts.lookupd_tcp_address.clone()),
            log_level: LiveLogLevel::new(opts.log_level),
        }
    }

    pub fn lookupd_tcp_addresses(&self) -> Vec<String> {
        lock(&self.lookupd_tcp_addresses).clone()
    }

    /// Replace the lookupd list; `reconnect` dials the new peers and drops
    /// removed ones while the list is held.
    pub fn set_lookupd_tcp_addresses(&self, addrs: Vec<String>, reconnect: impl FnOnce(&[String])) {
        let mut cur = lock(&self.lookupd_tcp_addresses);
        reconnect(&addrs);
        *cur = addrs;
    }

    pub fn log_level(&self) -> LogLevel {
        self.log_level.get()
    }

    /// Change the level of the live log output (when a handle is attached).
    pub fn set_log_level(&self, level: LogLevel) {
        self.log_level.set(level);
    }

    /// Attach the process's log handle; only the first call counts.
    pub fn attach_log(&self, handle: LogHandle) {
        self.log_level.attach(handle);
    }
}
