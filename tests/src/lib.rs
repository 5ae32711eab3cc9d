//! This package holds only the end-to-end tests under `tests/`; their helpers (daemons, HTTP,
//! raw connections, waits) live in the `nsq-test-support` crate at `test-support/`.
