//! nsqlookupd: the NSQ discovery daemon. nsqd instances announce their
//! topics and channels over TCP protocol V1 (port 4160); consumers and
//! nsqadmin ask over HTTP (port 4161) who has what. All state is in memory;
//! several lookupds never talk to each other.
//!
//! [`Lookupd::new`] binds both listeners and starts serving, so tests can
//! pass port 0 and read [`Lookupd::tcp_addr`] and [`Lookupd::http_addr`].

mod error;
mod http;
mod json;
mod metrics;
pub mod options;
mod protocol_v1;
mod query;
pub mod registration_db;
mod router;
mod server;

pub use error::{Error, Result};
pub use options::Options;
pub use registration_db::RegistrationDb;
pub use server::Lookupd;
