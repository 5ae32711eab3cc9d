//! NSQ client.
pub mod bench;
