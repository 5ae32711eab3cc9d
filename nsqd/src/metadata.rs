//! `nsqd.dat`: which topics and channels exist and which are paused, so they
//! survive a restart. Upstream's JSON layout, replaced atomically.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub const FILE_NAME: &str = "nsqd.dat";

/// Which changes to the set of topics and channels `nsqd.dat` already holds.
/// `--durable` waits on it: a message acknowledged into a new topic or
/// channel must not depend on a metadata file that does not name it yet.
#[derive(Debug)]
pub struct Progress {
    changes: AtomicU64,
    saved: watch::Sender<u64>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            changes: AtomicU64::new(0),
            saved: watch::Sender::new(0),
        }
    }
}

impl Progress {
    /// Count a change; call after making it.
    pub fn changed(&self) {
        self.changes.fetch_add(1, Ordering::SeqCst);
    }

    /// The changes made so far; read before taking the snapshot to save.
    pub fn current(&self) -> u64 {
        self.changes.load(Ordering::SeqCst)
    }

    /// A snapshot taken after `current()` returned `upto` is on disk.
    pub fn saved(&self, upto: u64) {
        self.saved.send_if_modified(|s| {
            let newer = upto > *s;
            if newer {
                *s = upto;
            }
            newer
        });
    }

    /// Wait, at most `limit`, until the first `upto` changes are on disk.
    pub async fn wait_saved(&self, upto: u64, limit: Duration) -> io::Result<()> {
        if *self.saved.borrow() >= upto {
            return Ok(());
        }
        let mut rx = self.saved.subscribe();
        let saved = tokio::time::timeout(limit, rx.wait_for(|&s| s >= upto))
            .await
            .is_ok_and(|r| r.is_ok());
        if saved {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "{FILE_NAME} could not be saved within {limit:?}"
            )))
        }
    }
}
const LOCK_NAME: &str = ".nsqd.lock";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// Upstream writes `null` here when it has no topics (Go's nil slice).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub topics: Vec<TopicMeta>,
    #[serde(default)]
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: String,
    #[serde(default)]
    pub paused: bool,
    /// `null` for a topic without (durable) channels, as upstream writes it.
    #[serde(default)]
    pub channels: Option<Vec<ChannelMeta>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelMeta {
    pub name: String,
    #[serde(default)]
    pub paused: bool,
    /// Ours (upstream ignores unknown fields): server-side max attempts,
    /// written only when set.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_attempts: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_topic: Option<String>,
}

/// A list that may be `null` in upstream's files reads as empty.
fn null_as_empty<'de, D, T>(de: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(de)?.unwrap_or_default())
}

fn is_zero(n: &u16) -> bool {
    *n == 0
}

/// The metadata in `dir`, or `None` when there is none yet.
pub fn load(dir: &Path) -> io::Result<Option<Metadata>> {
    let path = dir.join(FILE_NAME);
    let data = match fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    serde_json::from_slice(&data).map(Some).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("failed to parse metadata {}: {e}", path.display()),
        )
    })
}

/// Write `meta` to `dir` so that a crash at any moment leaves either the old
/// file or the new one: write a temporary file, fsync it, rename it over the
/// old one, fsync the directory.
pub fn store(dir: &Path, meta: &Metadata) -> io::Result<()> {
    let data = serde_json::to_vec(meta).map_err(io::Error::other)?;
    write_atomically(&dir.join(FILE_NAME), &data)
}

/// Replace `path` with `data` atomically (temp file, fsync, rename, fsync dir).
pub fn write_atomically(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp: PathBuf = path.with_extension(format!("{}.tmp", rand::random::<u32>()));
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// An exclusive lock on a data directory, held for the life of the process
/// (released when dropped or when the process dies).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

/// Lock `dir` so that a second nsqd on the same data path refuses to start.
pub fn lock_dir(dir: &Path) -> io::Result<DirLock> {
    fs::create_dir_all(dir)?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_NAME))?;
    match file.try_lock() {
        Ok(()) => Ok(DirLock { _file: file }),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!(
                "cannot flock directory {} (possibly in use by another instance of nsqd)",
                dir.display()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_layout_round_trips() {
        let raw = r#"{"topics":[{"name":"t","paused":false,"channels":[{"name":"c","paused":true}]},{"name":"u","paused":true,"channels":null}],"version":"1.3.0"}"#;
        let meta: Metadata = serde_json::from_str(raw).unwrap();
        assert!(meta.topics[0].channels.as_ref().unwrap()[0].paused);
        assert_eq!(serde_json::to_string(&meta).unwrap(), raw);
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        store(dir.path(), &meta).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(meta));
        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(FILE_NAME)]);
    }

    #[test]
    fn upstreams_null_lists_read_as_empty() {
        // What upstream 1.3.0 writes with no topics, and with a topic
        // without channels: Go marshals an empty slice as `null`.
        let meta: Metadata = serde_json::from_str(r#"{"topics":null,"version":"1.3.0"}"#).unwrap();
        assert!(meta.topics.is_empty());
        let meta: Metadata = serde_json::from_str(r#"{"version":"1.3.0"}"#).unwrap();
        assert!(meta.topics.is_empty());
        let meta: Metadata = serde_json::from_str(
            r#"{"topics":[{"name":"t","paused":false,"channels":null}],"version":"1.3.0"}"#,
        )
        .unwrap();
        assert_eq!(meta.topics[0].channels, None);
    }

    #[test]
    fn channel_options_are_extra_fields_only_when_set() {
        let raw = r#"{"topics":[{"name":"t","paused":false,"channels":[{"name":"c","paused":false,"max_attempts":3,"dead_letter_topic":"graveyard"},{"name":"d","paused":false}]}],"version":"1.3.0"}"#;
        let meta: Metadata = serde_json::from_str(raw).unwrap();
        let chans = meta.topics[0].channels.as_ref().unwrap();
        assert_eq!(chans[0].max_attempts, 3);
        assert_eq!(chans[0].dead_letter_topic.as_deref(), Some("graveyard"));
        assert_eq!(chans[1].max_attempts, 0);
        assert_eq!(serde_json::to_string(&meta).unwrap(), raw);
    }

    #[test]
    fn a_second_lock_on_the_same_dir_fails() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock_dir(dir.path()).unwrap();
        let err = lock_dir(dir.path()).unwrap_err();
        assert!(
            err.to_string()
                .contains("possibly in use by another instance of nsqd"),
            "{err}"
        );
        drop(first);
        lock_dir(dir.path()).unwrap();
    }

    #[test]
    fn corrupt_metadata_is_an_error_not_an_empty_server() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), b"{nope").unwrap();
        assert!(load(dir.path()).is_err());
    }
}
