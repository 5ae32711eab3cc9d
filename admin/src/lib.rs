//! nsqadmin: NSQ's web dashboard. It stores nothing of the cluster: every
//! page and `/api/*` answer asks the lookupds (or the configured nsqds) and
//! each nsqd's `/stats` at that moment, and admin actions are forwarded to
//! the daemons that carry them out. What it does keep is the last hour of
//! samples for the rate and depth charts (`history`).
//!
//! [`NsqAdmin::new`] binds and starts serving, so tests can pass port 0 and
//! read [`NsqAdmin::http_addr`].

mod api;
mod assets;
pub mod cluster;
mod config;
mod csrf;
pub mod daemon_json;
pub mod history;
mod http;
mod jobs;
pub mod metrics;
pub mod notify;
pub mod options;
mod server;
pub mod stats;

pub use options::Options;
pub use server::{Error, NsqAdmin};
