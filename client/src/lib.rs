//! An async (tokio) NSQ client: [`Producer`] publishes to one nsqd of
//! several; [`Consumer`] subscribes to a topic's channel on direct nsqd
//! addresses or on the nsqds that lookupd knows.
#![doc = include_str!("../README.md")]

// One implementation of the compressed streams for both ends: the adaptors
// are symmetric (a compressor for what we write, a decompressor for what we
// read), and nsqd uses the same crate.
use nsq_wire::compress;
mod config;
mod conn;
mod consumer;
mod error;
mod lookup;
mod message;
mod producer;
pub mod rdy;
pub mod tls;

pub use config::{Config, OptionError};
pub use consumer::{Consumer, ConsumerStats};
pub use error::{Error, Result};
pub use message::{
    handler_fn, BoxFuture, FnHandler, Handler, HandlerError, HandlerResult, Message,
};
pub use producer::Producer;
