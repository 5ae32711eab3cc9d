//! NSQ client.
