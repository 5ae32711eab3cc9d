//! Process-wide log output in upstream NSQ's line format (or JSON), with a `--log-level` that can change at runtime.
//!
//! Lines look like `[nsqd] 2026/11/22 03:04:05.123456 INFO: message key=value`:
//! the prefix verbatim (upstream's defaults end in a space, e.g. `"[nsqd] "`),
//! a UTC timestamp with microseconds, and upstream's level names. Span
//! context is left out of these lines, because upstream's have none and log
//! parsers expect the message right after the level; messages that need a
//! client or topic name carry it in upstream's text (`TOPIC(t): created`).
//! `--log-format=json` (ours) writes one JSON object per line instead, with
//! every field and the enclosing spans' fields, for log pipelines.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{reload, Registry};

/// Upstream's `--log-level` values, least to most severe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogLevel {
    Debug,
    #[default]
    Info,
    Warn,
    Error,
    /// Upstream logs FATAL only right before exiting, so at this level only
    /// errors (and those last words) are shown.
    Fatal,
}

impl LogLevel {
    pub const ALL: [LogLevel; 5] = [
        LogLevel::Debug,
        LogLevel::Info,
        LogLevel::Warn,
        LogLevel::Error,
        LogLevel::Fatal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
            LogLevel::Fatal => "fatal",
        }
    }

    /// Upstream's `lg.LogLevel` is a Go int without a JSON marshaller, so
    /// `GET /config/log_level` reads as a number: DEBUG=1 ... FATAL=5.
    pub fn go_number(self) -> i64 {
        match self {
            LogLevel::Debug => 1,
            LogLevel::Info => 2,
            LogLevel::Warn => 3,
            LogLevel::Error => 4,
            LogLevel::Fatal => 5,
        }
    }

    /// The most verbose tracing level shown at this setting. tracing has no
    /// level above ERROR, so Fatal shares it.
    pub fn filter(self) -> LevelFilter {
        match self {
            LogLevel::Debug => LevelFilter::DEBUG,
            LogLevel::Info => LevelFilter::INFO,
            LogLevel::Warn => LevelFilter::WARN,
            LogLevel::Error | LogLevel::Fatal => LevelFilter::ERROR,
        }
    }

    fn from_index(i: u8) -> LogLevel {
        LogLevel::ALL[usize::from(i).min(LogLevel::ALL.len() - 1)]
    }

    fn index(self) -> u8 {
        self as u8
    }
}

impl FromStr for LogLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LogLevel::ALL
            .into_iter()
            .find(|level| level.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!("invalid log level {s:?}: must be one of debug, info, warn, error, fatal")
            })
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `--log-format`: upstream's lines (the default) or JSON objects (ours).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("invalid log format {s:?}: must be text or json")),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// Controls the level of the subscriber installed by [`init`]. Cheap to
/// clone; every clone controls the same process-wide filter.
#[derive(Clone, Debug)]
pub struct LogHandle {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// Kept apart from the filter because Error and Fatal share one filter
    /// but must read back as what was set.
    level: AtomicU8,
    /// `None` when another global subscriber was installed before ours: the
    /// handle then only records the level.
    reload: Option<reload::Handle<LevelFilter, Registry>>,
}

impl LogHandle {
    pub fn set_level(&self, level: LogLevel) {
        self.shared.level.store(level.index(), Ordering::Relaxed);
        if let Some(reload) = &self.shared.reload {
            // Fails only if the subscriber was dropped, which a global one
            // never is.
            let _ = reload.modify(|filter| *filter = level.filter());
        }
    }

    pub fn level(&self) -> LogLevel {
        LogLevel::from_index(self.shared.level.load(Ordering::Relaxed))
    }
}

/// A daemon's `log_level` as `/config` reads and sets it at run time: the
/// level, and the process's filter once the binary attached it (tests run
/// without one). Its std Mutex is taken only to read or set the level.
#[derive(Debug)]
pub struct LiveLogLevel {
    level: std::sync::Mutex<LogLevel>,
    handle: OnceLock<LogHandle>,
}

impl LiveLogLevel {
    pub fn new(level: LogLevel) -> Self {
        LiveLogLevel {
            level: std::sync::Mutex::new(level),
            handle: OnceLock::new(),
        }
    }

    /// Attach the process's log handle; only the first call counts.
    pub fn attach(&self, handle: LogHandle) {
        let _ = self.handle.set(handle);
    }

    pub fn get(&self) -> LogLevel {
        *self.level.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Change the level of the live log output (when a handle is attached).
    pub fn set(&self, level: LogLevel) {
        let mut cur = self.level.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = self.handle.get() {
            h.set_level(level);
        }
        *cur = level;
    }
}

static GLOBAL: OnceLock<LogHandle> = OnceLock::new();

/// Installs the process-wide subscriber writing to stderr.
///
/// There is only one global subscriber, but tests start several servers in
/// one process, so later calls do not fail: they return a handle to the same
/// filter, set it to `level` (the latest call wins) and keep the first call's
/// prefix.
pub fn init(level: LogLevel, prefix: &str) -> LogHandle {
    init_with_format(level, prefix, LogFormat::Text)
}

/// [`init`] with a choice of [`LogFormat`]; the first call's format wins.
pub fn init_with_format(level: LogLevel, prefix: &str, format: LogFormat) -> LogHandle {
    let handle = GLOBAL
        .get_or_init(|| install(level, prefix, format))
        .clone();
    handle.set_level(level);
    handle
}

fn install(level: LogLevel, prefix: &str, format: LogFormat) -> LogHandle {
    let (filter, reload) = reload::Layer::new(level.filter());
    // Never ANSI colours: both formats are plain text, whether stderr is a
    // terminal, a pipe or journald.
    let text = (format == LogFormat::Text).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .event_format(LineFormat::new(prefix))
    });
    let json = (format == LogFormat::Json).then(|| json_layer(prefix, std::io::stderr));
    let subscriber = Registry::default().with(filter).with(text).with(json);
    let reload = tracing::subscriber::set_global_default(subscriber)
        .is_ok()
        .then_some(reload);
    LogHandle {
        shared: Arc::new(Shared {
            level: AtomicU8::new(level.index()),
            reload,
        }),
    }
}

/// The `--log-format=json` layer: one object per line with `timestamp`
/// (RFC 3339, UTC), `level`, `message`, the event's fields, `target`, the
/// enclosing spans' fields under `span`, and `app` (the prefix without
/// brackets, e.g. `nsqd`) so several daemons can share one stream.
fn json_layer<S, W>(prefix: &str, writer: W) -> impl tracing_subscriber::Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let app = prefix
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_ansi(false)
        .with_writer(AppTagged { app, inner: writer })
}

/// Wraps a writer so each JSON line gains an `"app"` member.
struct AppTagged<W> {
    app: String,
    inner: W,
}

impl<'w, W: tracing_subscriber::fmt::MakeWriter<'w>> tracing_subscriber::fmt::MakeWriter<'w>
    for AppTagged<W>
{
    type Writer = AppLine<W::Writer>;

    fn make_writer(&'w self) -> Self::Writer {
        AppLine {
            app: self.app.clone(),
            inner: self.inner.make_writer(),
        }
    }
}

/// One JSON line's writer: inserts `"app":"..",` after the opening brace.
struct AppLine<W> {
    app: String,
    inner: W,
}

impl<W: std::io::Write> std::io::Write for AppLine<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The formatter hands over each whole line in one write.
        match buf.first() {
            Some(b'{') if !self.app.is_empty() => {
                let mut line = Vec::with_capacity(buf.len() + self.app.len() + 10);
                line.extend_from_slice(b"{\"app\":");
                line.extend_from_slice(
                    serde_json::to_string(&self.app)
                        .unwrap_or_default()
                        .as_bytes(),
                );
                if buf.get(1) != Some(&b'}') {
                    line.push(b',');
                }
                line.extend_from_slice(&buf[1..]);
                self.inner.write_all(&line)?;
            }
            _ => self.inner.write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Formats one event as an upstream-style log line.
#[derive(Clone, Debug)]
pub struct LineFormat {
    prefix: String,
}

impl LineFormat {
    pub fn new(prefix: &str) -> Self {
        LineFormat {
            prefix: prefix.to_owned(),
        }
    }
}

/// Upstream's names, which differ from tracing's for WARN.
fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::TRACE | Level::DEBUG => "DEBUG",
        Level::INFO => "INFO",
        Level::WARN => "WARNING",
        Level::ERROR => "ERROR",
    }
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(
            writer,
            "{}{} {}: ",
            self.prefix,
            Timestamp(SystemTime::now()),
            level_name(event.metadata().level())
        )?;
        // Formatted apart first so that a newline or escape sequence a
        // peer slipped into a name cannot forge a line or drive a terminal.
        let mut text = String::new();
        ctx.field_format()
            .format_fields(Writer::new(&mut text), event)?;
        for c in text.chars() {
            if c.is_control() {
                write!(writer, "{}", c.escape_default())?;
            } else {
                writer.write_char(c)?;
            }
        }
        writeln!(writer)
    }
}

/// `YYYY/MM/DD HH:MM:SS.micro` in UTC. UTC rather than upstream's local time
/// because finding the local offset portably needs a timezone database,
/// and servers usually run in UTC anyway.
struct Timestamp(SystemTime);

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let since_epoch = self.0.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since_epoch.as_secs();
        let (year, month, day) = crate::calendar::civil_from_days((secs / 86_400) as i64);
        let secs_of_day = secs % 86_400;
        write!(
            f,
            "{year:04}/{month:02}/{day:02} {:02}:{:02}:{:02}.{:06}",
            secs_of_day / 3_600,
            secs_of_day / 60 % 60,
            secs_of_day % 60,
            since_epoch.subsec_micros()
        )
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    #[test]
    fn levels_parse_case_insensitively_and_print_lowercase() {
        for (text, level) in [
            ("debug", LogLevel::Debug),
            ("INFO", LogLevel::Info),
            ("Warn", LogLevel::Warn),
            ("error", LogLevel::Error),
            ("FATAL", LogLevel::Fatal),
        ] {
            assert_eq!(text.parse::<LogLevel>(), Ok(level));
            assert_eq!(level.to_string(), text.to_lowercase());
        }
        let err = "warning".parse::<LogLevel>().unwrap_err();
        assert!(err.contains("debug, info, warn, error, fatal"), "{err}");
        assert_eq!(LogLevel::default(), LogLevel::Info);
    }

    #[test]
    fn fatal_shows_errors_only() {
        assert_eq!(LogLevel::Fatal.filter(), LevelFilter::ERROR);
        assert_eq!(LogLevel::Warn.filter(), LevelFilter::WARN);
        assert_eq!(LogLevel::Debug.filter(), LevelFilter::DEBUG);
    }

    #[test]
    fn timestamps_are_go_log_style() {
        let at = |secs: u64, micros: u64| {
            Timestamp(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros))
                .to_string()
        };
        assert_eq!(at(0, 0), "1970/01/01 00:00:00.000000");
        assert_eq!(at(951_782_400, 1), "2000/02/29 00:00:00.000001");
        assert_eq!(at(1_795_316_645, 123_456), "2026/11/22 03:04:05.123456");
        assert_eq!(at(4_102_444_799, 999_999), "2099/12/31 23:59:59.999999");
    }

    /// Collects output so a test can read the formatted lines.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_match_upstream_layout() {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = Registry::default().with(LevelFilter::DEBUG).with(
            tracing_subscriber::fmt::layer()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .event_format(LineFormat::new("[nsqd] ")),
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(topic = "t1", "TOPIC: created");
            tracing::warn!("slow");
            let span = tracing::info_span!("client", remote = "127.0.0.1:5");
            span.in_scope(|| tracing::error!("gone"));
            tracing::debug!("detail");
            tracing::trace!("hidden by the filter");
            tracing::info!("client(a\nINFO: forged\u{1b}[31m)");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        // `[nsqd] ` + `YYYY/MM/DD HH:MM:SS.micro` + ` `
        let rest = |line: &str| line["[nsqd] ".len() + 27..].to_owned();
        assert!(lines.iter().all(|l| l.starts_with("[nsqd] ")));
        assert_eq!(lines[0].as_bytes()["[nsqd] ".len() + 4], b'/');
        assert_eq!(rest(lines[0]), "INFO: TOPIC: created topic=\"t1\"");
        assert_eq!(rest(lines[1]), "WARNING: slow");
        // Span context stays out of the line, as upstream has none.
        assert_eq!(rest(lines[2]), "ERROR: gone");
        assert_eq!(rest(lines[3]), "DEBUG: detail");
        assert_eq!(rest(lines[4]), "INFO: client(a\\nINFO: forged\\x1b[31m)");
    }

    #[test]
    fn json_lines_carry_app_fields_and_spans() {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = Registry::default()
            .with(LevelFilter::INFO)
            .with(json_layer("[nsqd] ", move || writer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("client", remote = "127.0.0.1:5");
            span.in_scope(|| tracing::info!(topic = "t1", "TOPIC(t1): created"));
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert!(!text.contains('\u{1b}'), "no ANSI escapes: {text:?}");
        let v: serde_json::Value = serde_json::from_str(text.trim()).expect(&text);
        assert_eq!(v["app"], "nsqd");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["message"], "TOPIC(t1): created");
        assert_eq!(v["topic"], "t1");
        assert_eq!(v["span"]["remote"], "127.0.0.1:5");
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'), "{v}");
    }

    #[test]
    fn formats_parse() {
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("TEXT".parse::<LogFormat>(), Ok(LogFormat::Text));
        assert!("xml".parse::<LogFormat>().is_err());
        assert_eq!(LogFormat::default().to_string(), "text");
    }

    #[test]
    fn init_twice_shares_one_adjustable_filter() {
        let first = init(LogLevel::Warn, "[test] ");
        assert_eq!(first.level(), LogLevel::Warn);
        let second = init(LogLevel::Debug, "[other] ");
        assert_eq!(first.level(), LogLevel::Debug);
        second.set_level(LogLevel::Fatal);
        assert_eq!(first.level(), LogLevel::Fatal);
        assert_eq!(second.level(), LogLevel::Fatal);
        assert!(!tracing::enabled!(Level::WARN));
        assert!(tracing::enabled!(Level::ERROR));
        first.set_level(LogLevel::Info);
        assert!(tracing::enabled!(Level::INFO));
        assert!(!tracing::enabled!(Level::DEBUG));
    }
}
