//! What every nsqadmin request handler shares.

use std::sync::Arc;

use hyper::HeaderMap;
use nsq_app::logging::LiveLogLevel;

use crate::cluster::{Cluster, Sources};
use crate::history::History;
use crate::notify::Notifier;
use crate::Options;

/// Everything a request handler needs; fixed at startup (the history locks
/// itself).
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) cluster: Cluster,
    pub(crate) history: Arc<History>,
    pub(crate) notifier: Notifier,
    /// `--base-path` as a prefix: empty, or `/name` without a trailing slash.
    pub(crate) base: String,
    /// The options as given (what `/config` reads; the lookupd list lives
    /// in `cluster`, the log level in `log_level`).
    pub(crate) opts: Options,
    pub(crate) log_level: LiveLogLevel,
}

impl Context {
    /// Upstream's rule: with no `--admin-user` everyone may act; otherwise
    /// only a request whose `--acl-http-header` names one of them.
    pub(crate) fn is_admin(&self, headers: &HeaderMap) -> bool {
        let users = &self.opts.admin_user;
        if users.is_empty() {
            return true;
        }
        headers
            .get(self.opts.acl_http_header.as_str())
            .and_then(|v| v.to_str().ok())
            .is_some_and(|user| users.iter().any(|u| u == user))
    }

    pub(crate) fn lookupd_mode(&self) -> bool {
        matches!(self.cluster.sources(), Sources::Lookupd(_))
    }
}
