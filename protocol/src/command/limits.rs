//! The sizes and delays a decoder accepts, from nsqd's options.

/// Size limits the decoder enforces (nsqd's `--max-msg-size`,
/// `--max-body-size`, `--max-req-timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_msg_size: u64,
    pub max_body_size: u64,
    pub max_req_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_msg_size: 1024 * 1024,
            max_body_size: 5 * 1024 * 1024,
            max_req_timeout_ms: 3_600_000,
        }
    }
}
