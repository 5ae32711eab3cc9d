//! What a daemon wrote, line by line, kept for the failure messages of every helper that
//! talks to it (a process, a raw connection).

use std::sync::{Arc, Mutex};

/// Everything a daemon wrote to stdout and stderr, line by line, for failure messages.
///
/// Cloned into each reader thread and into [`crate::RawConn`]s; the mutex is held only to push or copy
/// lines.
#[derive(Clone, Default)]
pub struct Logs {
    lines: Arc<Mutex<Vec<String>>>,
}

impl Logs {
    pub(crate) fn push(&self, line: String) {
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line);
    }

    /// All lines so far, joined with newlines.
    pub fn snapshot(&self) -> String {
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }

    /// Whether any line so far contains `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|l| l.contains(needle))
    }

    /// Panic with `msg` followed by the collected logs.
    pub fn fail(&self, msg: &str) -> ! {
        panic!(
            "{msg}\n--- daemon logs ---\n{}\n--- end of logs ---",
            self.snapshot()
        )
    }
}
