//! What both ends of an NSQ V2 connection share beneath the protocol: the
//! compressed streams IDENTIFY negotiates (Snappy framing, raw DEFLATE) and
//! the TLS file reading and signature checks. Used by nsqd and by the `nsq`
//! client; I/O adaptors, so they live here rather than in the pure
//! `nsq-protocol` crate, and client-safe, so not in the daemon skeleton.

pub mod compress;
pub mod tls;
