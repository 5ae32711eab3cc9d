//! The output files of `nsq_to_file`: naming (upstream's `<TOPIC>.<HOST><REV>.<DATETIME>.log`), rotation by size, interval and datetime, gzip members, and fsync before messages are finished.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use flate2::write::GzEncoder;
use flate2::Compression;

/// What the file names and rotation depend on.
#[derive(Debug, Clone)]
pub struct FileSettings {
    pub output_dir: PathBuf,
    /// Where a file is written while open; closed files move to
    /// `output_dir`, so a reader of `output_dir` sees only whole files.
    pub work_dir: Option<PathBuf>,
    /// The name with `<TOPIC>`, `<HOST>` and `<PID>` filled in; `<REV>` and
    /// `<DATETIME>` are filled in per file.
    pub filename_format: String,
    pub datetime_format: String,
    /// Compression level when gzipping.
    pub gzip: Option<u32>,
    /// Rotate once a file holds more than this many (uncompressed) bytes; 0: never.
    pub rotate_size: u64,
    /// Rotate files older than this; zero: never.
    pub rotate_interval: Duration,
}

/// A file name template that cannot tell rotated or gzipped files apart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("missing <REV> in --filename-format when gzip, rotation, or work dir enabled")]
pub struct MissingRev;

/// Upstream's rules for the name template: `<REV>` is needed (and kept)
/// only when files can rotate or are gzipped, and gzipped names end `.gz`.
pub fn filename_format(
    template: &str,
    topic: &str,
    host: &str,
    gzip: bool,
    rotates: bool,
) -> Result<String, MissingRev> {
    let mut f = template.to_owned();
    if gzip || rotates {
        if !f.contains("<REV>") {
            return Err(MissingRev);
        }
    } else {
        f = f.replace("<REV>", "");
    }
    f = f
        .replace("<TOPIC>", topic)
        .replace("<HOST>", host)
        .replace("<PID>", &std::process::id().to_string());
    if gzip && !f.ends_with(".gz") {
        f.push_str(".gz");
    }
    Ok(f)
}

/// `strftime` for the conversions upstream's default and common formats
/// use (`%Y %m %d %H %M %S %%`), in UTC: the datetime in file names.
pub fn strftime(format: &str, t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = nsq_app::calendar::civil_from_days(days as i64);
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&format!("{y:04}")),
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('H') => out.push_str(&format!("{:02}", rem / 3600)),
            Some('M') => out.push_str(&format!("{:02}", rem / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", rem % 60)),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

enum Sink {
    Plain(File),
    Gzip(GzEncoder<File>),
}

/// One topic's current output file.
pub struct FileLogger {
    settings: FileSettings,
    sink: Option<Sink>,
    /// The name without `<REV>` filled in: a new one (the hour changed)
    /// restarts the revision count.
    filename: String,
    path: PathBuf,
    rev: u32,
    opened: Instant,
    size: u64,
}

impl FileLogger {
    pub fn new(settings: FileSettings) -> FileLogger {
        FileLogger {
            settings,
            sink: None,
            filename: String::new(),
            path: PathBuf::new(),
            rev: 0,
            opened: Instant::now(),
            size: 0,
        }
    }

    /// The file being written, if one is open.
    pub fn current_path(&self) -> Option<&Path> {
        self.sink.as_ref().map(|_| self.path.as_path())
    }

    fn current_filename(&self) -> String {
        let datetime = strftime(&self.settings.datetime_format, SystemTime::now());
        self.settings
            .filename_format
            .replace("<DATETIME>", &datetime)
    }

    /// Whether the next message belongs in a new file.
    pub fn needs_rotation(&self) -> bool {
        self.sink.is_none()
            || self.current_filename() != self.filename
            || (!self.settings.rotate_interval.is_zero()
                && self.opened.elapsed() > self.settings.rotate_interval)
            || (self.settings.rotate_size > 0 && self.size > self.settings.rotate_size)
    }

    /// Appends one message and a newline (not yet durable: see [`FileLogger::sync`]).
    pub fn write(&mut self, body: &[u8]) -> io::Result<()> {
        if self.needs_rotation() {
            self.open_next()?;
        }
        let sink: &mut dyn Write = match self.sink.as_mut().expect("opened above") {
            Sink::Plain(f) => f,
            Sink::Gzip(g) => g,
        };
        sink.write_all(body)?;
        sink.write_all(b"\n")?;
        self.size += body.len() as u64 + 1;
        Ok(())
    }

    /// Makes everything written so far durable. A gzip file gets its
    /// current member finished and a new one started, so a crash loses at
    /// most the unsynced tail, never the readability of what was synced.
    pub fn sync(&mut self) -> io::Result<()> {
        match self.sink.take() {
            None => Ok(()),
            Some(Sink::Plain(f)) => {
                let r = f.sync_data();
                self.sink = Some(Sink::Plain(f));
                r
            }
            Some(Sink::Gzip(g)) => {
                let f = g.finish()?;
                f.sync_data()?;
                let level = self.settings.gzip.unwrap_or(6);
                self.sink = Some(Sink::Gzip(GzEncoder::new(f, Compression::new(level))));
                Ok(())
            }
        }
    }

    /// Finishes and fsyncs the current file, if any, and moves it from the
    /// work directory to the output directory.
    pub fn close(&mut self) -> io::Result<()> {
        match self.sink.take() {
            None => return Ok(()),
            Some(Sink::Plain(f)) => f.sync_all()?,
            Some(Sink::Gzip(g)) => g.finish()?.sync_all()?,
        }
        if self.settings.work_dir.is_some() {
            let name = self.path.file_name().expect("a file name").to_owned();
            let dest = self.settings.output_dir.join(name);
            // Names are claimed in both directories when opened, so this
            // replaces nothing.
            if dest.exists() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "{} exists; {} left in place",
                        dest.display(),
                        self.path.display()
                    ),
                ));
            }
            std::fs::rename(&self.path, &dest).or_else(|_| {
                // Another filesystem: copy, sync, then remove the original.
                std::fs::copy(&self.path, &dest)?;
                File::open(&dest)?.sync_all()?;
                std::fs::remove_file(&self.path)
            })?;
            tracing::info!(from = %self.path.display(), to = %dest.display(), "moved");
            self.path = dest;
        }
        Ok(())
    }

    fn open_next(&mut self) -> io::Result<()> {
        self.close()?;
        let filename = self.current_filename();
        if filename != self.filename {
            self.rev = 0;
        } else {
            self.rev += 1;
        }
        self.filename = filename;
        self.opened = Instant::now();
        std::fs::create_dir_all(&self.settings.output_dir)?;
        let dir = self
            .settings
            .work_dir
            .clone()
            .unwrap_or_else(|| self.settings.output_dir.clone());
        std::fs::create_dir_all(&dir)?;
        // Files that cannot be appended to safely (gzip members, interval
        // rotation, files that move when closed) are created fresh; an
        // existing one bumps the revision.
        let exclusive = self.settings.gzip.is_some()
            || !self.settings.rotate_interval.is_zero()
            || self.settings.work_dir.is_some();
        loop {
            let name = self.filename.replace("<REV>", &format!("-{:06}", self.rev));
            if self.settings.work_dir.is_some() && self.settings.output_dir.join(&name).exists() {
                self.rev += 1;
                continue;
            }
            let path = dir.join(name);
            let mut open = OpenOptions::new();
            open.write(true);
            if exclusive {
                open.create_new(true);
            } else {
                open.create(true).append(true);
            }
            let file = match open.open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    self.rev += 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            self.size = file.metadata()?.len();
            if self.settings.rotate_size > 0 && self.size > self.settings.rotate_size {
                self.rev += 1;
                continue;
            }
            tracing::info!(path = %path.display(), "opening");
            self.path = path;
            self.sink = Some(match self.settings.gzip {
                Some(level) => Sink::Gzip(GzEncoder::new(file, Compression::new(level))),
                None => Sink::Plain(file),
            });
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_upstreams_template_rules() {
        let t = "<TOPIC>.<HOST><REV>.<DATETIME>.log";
        assert_eq!(
            filename_format(t, "t", "h", false, false).unwrap(),
            "t.h.<DATETIME>.log"
        );
        assert_eq!(
            filename_format(t, "t", "h", true, false).unwrap(),
            "t.h<REV>.<DATETIME>.log.gz"
        );
        assert!(filename_format("<TOPIC>.log", "t", "h", false, true).is_err());
    }

    #[test]
    fn strftime_formats_utc() {
        // 2021-03-04 05:06:07 UTC
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_614_834_367);
        assert_eq!(strftime("%Y-%m-%d_%H", t), "2021-03-04_05");
        assert_eq!(strftime("%M:%S %% %q", t), "06:07 % %q");
        assert_eq!(strftime("%Y-%m-%d", SystemTime::UNIX_EPOCH), "1970-01-01");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(strftime("%Y-%m-%d", leap), "2000-02-29");
    }

    #[test]
    fn size_rotation_makes_numbered_files_holding_every_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = FileLogger::new(FileSettings {
            output_dir: dir.path().to_owned(),
            work_dir: None,
            filename_format: "t.h<REV>.x.log".into(),
            datetime_format: "%Y".into(),
            gzip: None,
            rotate_size: 20,
            rotate_interval: Duration::ZERO,
        });
        for i in 0..10 {
            f.write(format!("message {i}").as_bytes()).unwrap();
        }
        f.close().unwrap();
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        // 10 bytes a line: the third line goes over 20, so files of 3 lines.
        assert_eq!(
            names,
            [
                "t.h-000000.x.log",
                "t.h-000001.x.log",
                "t.h-000002.x.log",
                "t.h-000003.x.log"
            ]
        );
        let all: String = names
            .iter()
            .map(|n| std::fs::read_to_string(dir.path().join(n)).unwrap())
            .collect();
        let want: String = (0..10).map(|i| format!("message {i}\n")).collect();
        assert_eq!(all, want);
    }
}
