//! nsqd.
