//! Taking over the disk queues an upstream nsqd left in the data path.
//!
//! Upstream names its segments as we do (`<name>.diskqueue.NNNNNN.dat`) but
//! writes `[i32 length][message]` records without checksums and keeps its
//! positions in `<name>.diskqueue.meta.dat`. Left alone, those files would
//! be read as ours and set aside as damaged, losing the backlog of anyone
//! who swaps binaries. Instead, before a queue is opened, upstream's files
//! are renamed out of the way (data first, meta last, so an interrupted
//! rename is finished on the next start), their unread records converted to
//! our record payload, and deleted once the caller has stored the messages.

use std::fs;
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use nsq_protocol::{MessageId, MESSAGE_HEADER_LEN};
use tracing::{info, warn};

use crate::message::Message;

/// Upstream's positions: `depth\nreadFile,readPos\nwriteFile,writePos\n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct UpstreamMeta {
    read_file: u64,
    read_pos: u64,
    write_file: u64,
    write_pos: u64,
}

fn parse_meta(text: &str) -> Option<UpstreamMeta> {
    let mut lines = text.lines();
    lines.next()?.trim().parse::<i64>().ok()?;
    let pair = |l: Option<&str>| -> Option<(u64, u64)> {
        let (f, p) = l?.trim().split_once(',')?;
        Some((f.parse().ok()?, p.parse().ok()?))
    };
    let (read_file, read_pos) = pair(lines.next())?;
    let (write_file, write_pos) = pair(lines.next())?;
    Some(UpstreamMeta {
        read_file,
        read_pos,
        write_file,
        write_pos,
    })
}

fn meta_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.diskqueue.meta.dat"))
}

fn staged_meta_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.diskqueue.upstream.meta.dat"))
}

fn data_path(dir: &Path, name: &str, file: u64) -> PathBuf {
    dir.join(format!("{name}.diskqueue.{file:06}.dat"))
}

fn staged_data_path(dir: &Path, name: &str, file: u64) -> PathBuf {
    dir.join(format!("{name}.diskqueue.upstream.{file:06}.dat"))
}

/// Upstream queue files staged for import, if any.
pub struct Import {
    dir: PathBuf,
    name: String,
    meta: UpstreamMeta,
}

/// Move an upstream queue's files out of our names, if `dir` has one for
/// `name` (or a half-finished earlier move). Call before opening our queue.
pub fn stage(dir: &Path, name: &str) -> io::Result<Option<Import>> {
    let meta_file = meta_path(dir, name);
    let staged_meta = staged_meta_path(dir, name);
    let text = match fs::read_to_string(&meta_file) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    if let Some(text) = text {
        let meta = parse_meta(&text).ok_or_else(|| {
            io::Error::new(
                ErrorKind::InvalidData,
                format!(
                    "cannot parse upstream disk queue metadata {}",
                    meta_file.display()
                ),
            )
        })?;
        for file in meta.read_file..=meta.write_file {
            match fs::rename(
                data_path(dir, name, file),
                staged_data_path(dir, name, file),
            ) {
                Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        fs::rename(&meta_file, &staged_meta)?;
        fs::File::open(dir)?.sync_all()?;
    }
    let text = match fs::read_to_string(&staged_meta) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = parse_meta(&text).ok_or_else(|| {
        io::Error::new(
            ErrorKind::InvalidData,
            format!("cannot parse {}", staged_meta.display()),
        )
    })?;
    Ok(Some(Import {
        dir: dir.to_path_buf(),
        name: name.to_string(),
        meta,
    }))
}

impl Import {
    /// The unread messages, as our disk record payloads, oldest first.
    /// A record that cannot be parsed ends its file, as upstream's reader
    /// would give up on it; what was readable is kept.
    pub fn payloads(&self) -> io::Result<Vec<Vec<u8>>> {
        let m = self.meta;
        let mut out = Vec::new();
        for file in m.read_file..=m.write_file {
            let data = match fs::read(staged_data_path(&self.dir, &self.name, file)) {
                Ok(d) => d,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let start = if file == m.read_file {
                m.read_pos as usize
            } else {
                0
            };
            let end = if file == m.write_file {
                (m.write_pos as usize).min(data.len())
            } else {
                data.len()
            };
            let mut at = start;
            while at + 4 <= end {
                let len = u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
                    as usize;
                let Some(record) = data
                    .get(at + 4..at + 4 + len)
                    .filter(|_| at + 4 + len <= end)
                else {
                    warn!(queue = %self.name, file, offset = at, "upstream record truncated; the rest of this file is skipped");
                    break;
                };
                match convert(record) {
                    Some(payload) => out.push(payload),
                    None => {
                        warn!(queue = %self.name, file, offset = at, "upstream record unreadable, skipped")
                    }
                }
                at += 4 + len;
            }
        }
        Ok(out)
    }

    /// Delete the staged files: call once the messages are stored in ours.
    pub fn finish(self) -> io::Result<()> {
        for file in self.meta.read_file..=self.meta.write_file {
            match fs::remove_file(staged_data_path(&self.dir, &self.name, file)) {
                Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        fs::remove_file(staged_meta_path(&self.dir, &self.name))?;
        info!(queue = %self.name, "upstream disk queue imported");
        Ok(())
    }
}

/// Upstream's message encoding (`[i64 ts][u16 attempts][16 hex id][body]`)
/// to our disk payload. An ID that is not our hex form gets a stand-in
/// derived from its bytes: IDs are opaque to clients.
fn convert(record: &[u8]) -> Option<Vec<u8>> {
    if record.len() <= MESSAGE_HEADER_LEN {
        return None;
    }
    let timestamp = i64::from_be_bytes(record[..8].try_into().ok()?);
    let attempts = u16::from_be_bytes([record[8], record[9]]);
    let raw_id = MessageId::from_slice(&record[10..26])?;
    let id = raw_id
        .to_u64()
        .unwrap_or_else(|| u64::from(crc32fast::hash(&record[10..26])) << 20);
    let msg = Message {
        id,
        timestamp,
        attempts,
        body: Bytes::copy_from_slice(&record[26..]),
    };
    let mut out = Vec::new();
    msg.encode_disk(0, &mut out);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Write an upstream queue: `records` split over files of `per_file`.
    pub(crate) fn write_upstream(dir: &Path, name: &str, bodies: &[&[u8]], read_pos_skip: usize) {
        let mut data = Vec::new();
        let mut read_pos = 0;
        for (i, b) in bodies.iter().enumerate() {
            if i == read_pos_skip {
                read_pos = data.len();
            }
            let mut rec = Vec::new();
            rec.extend_from_slice(&1_700_000_000_000_000_000i64.to_be_bytes());
            rec.extend_from_slice(&1u16.to_be_bytes());
            rec.extend_from_slice(MessageId::from_u64(i as u64 + 1).as_bytes());
            rec.extend_from_slice(b);
            data.extend_from_slice(&(rec.len() as u32).to_be_bytes());
            data.extend_from_slice(&rec);
        }
        fs::write(data_path(dir, name, 0), &data).unwrap();
        fs::write(
            meta_path(dir, name),
            format!(
                "{}\n0,{read_pos}\n0,{}\n",
                bodies.len() - read_pos_skip,
                data.len()
            ),
        )
        .unwrap();
    }

    #[test]
    fn unread_upstream_records_become_ours_and_the_files_go() {
        let dir = tempfile::tempdir().unwrap();
        write_upstream(dir.path(), "t:c", &[b"a", b"bb", b"ccc"], 1);
        let import = stage(dir.path(), "t:c").unwrap().expect("found");
        // Our segment name is free again.
        assert!(!data_path(dir.path(), "t:c", 0).exists());
        let payloads = import.payloads().unwrap();
        let msgs: Vec<Message> = payloads
            .iter()
            .map(|p| Message::decode_disk(&Bytes::from(p.clone())).unwrap().0)
            .collect();
        assert_eq!(
            msgs.iter().map(|m| &m.body[..]).collect::<Vec<_>>(),
            vec![&b"bb"[..], b"ccc"]
        );
        assert_eq!((msgs[0].id, msgs[0].attempts), (2, 1));
        import.finish().unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(stage(dir.path(), "t:c").unwrap().is_none());
    }

    #[test]
    fn an_interrupted_staging_is_finished() {
        let dir = tempfile::tempdir().unwrap();
        write_upstream(dir.path(), "t", &[b"x"], 0);
        // As if a crash hit after the data file moved but before the meta did.
        fs::rename(
            data_path(dir.path(), "t", 0),
            staged_data_path(dir.path(), "t", 0),
        )
        .unwrap();
        let import = stage(dir.path(), "t").unwrap().expect("found");
        assert_eq!(import.payloads().unwrap().len(), 1);
    }

    #[test]
    fn upstream_meta_format() {
        assert_eq!(
            parse_meta("3\n1,40\n2,100\n"),
            Some(UpstreamMeta {
                read_file: 1,
                read_pos: 40,
                write_file: 2,
                write_pos: 100
            })
        );
        assert_eq!(parse_meta("nope"), None);
    }
}
