//! One look at the data directory for many queues. At start thousands of
//! queues open one after another; each listing the whole directory for its
//! own segments made a restart quadratic in the number of topics. The
//! directory is listed once, on the first open, and each queue is handed
//! its segment numbers from that list on its first open. A later open (a
//! reopen after a failed fsync) lists again: its files changed since.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::Path;

use super::parse_segment;

const MARK: &str = ".diskqueue.";

#[derive(Debug, Default)]
pub struct Listing {
    /// Queue name → its segment numbers (sorted), from the one listing.
    by_queue: Option<HashMap<String, Vec<u64>>>,
    /// Queues that were handed their list, or must scan for themselves
    /// (upstream files to take over: staging renames them first).
    handed: HashSet<String>,
    scans: u64,
}

impl Listing {
    /// The segment numbers of queue `name` in `dir` as first listed, or
    /// `None` when the queue must list them itself.
    pub fn take(&mut self, dir: &Path, name: &str) -> io::Result<Option<Vec<u64>>> {
        if self.by_queue.is_none() {
            self.by_queue = Some(self.list(dir)?);
        }
        if !self.handed.insert(name.to_string()) {
            return Ok(None);
        }
        let map = self.by_queue.as_mut().expect("listed above");
        Ok(Some(map.remove(name).unwrap_or_default()))
    }

    /// How many times the directory was listed.
    pub fn scans(&self) -> u64 {
        self.scans
    }

    fn list(&mut self, dir: &Path) -> io::Result<HashMap<String, Vec<u64>>> {
        self.scans += 1;
        let mut map: HashMap<String, Vec<u64>> = HashMap::new();
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(map),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(at) = name.rfind(MARK) else { continue };
            let (queue, rest) = (&name[..at], &name[at + MARK.len()..]);
            if rest.starts_with("upstream.") || rest == "meta.dat" {
                // Upstream's files, to be staged: this queue lists its own.
                self.handed.insert(queue.to_string());
                continue;
            }
            if let Some(n) = parse_segment(rest) {
                map.entry(queue.to_string()).or_default().push(n);
            }
        }
        for files in map.values_mut() {
            files.sort_unstable();
        }
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_listing_serves_every_first_open() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "a.diskqueue.000001.dat",
            "a.diskqueue.000000.dat",
            "a:c.diskqueue.000003.dat",
            "a.diskqueue.meta.json",
            "up.diskqueue.meta.dat",
            "up.diskqueue.000000.dat",
            "nsqd.dat",
        ] {
            fs::write(dir.path().join(f), b"").unwrap();
        }
        let mut l = Listing::default();
        assert_eq!(l.take(dir.path(), "a").unwrap(), Some(vec![0, 1]));
        assert_eq!(l.take(dir.path(), "a:c").unwrap(), Some(vec![3]));
        assert_eq!(l.take(dir.path(), "new").unwrap(), Some(vec![]));
        // Upstream's queue lists itself after staging.
        assert_eq!(l.take(dir.path(), "up").unwrap(), None);
        // A second open of a queue lists again.
        assert_eq!(l.take(dir.path(), "a").unwrap(), None);
        assert_eq!(l.scans(), 1);
    }
}
