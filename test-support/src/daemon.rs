//! Starting, watching and stopping the real `nsqd` and `nsqlookupd` processes.
//!
//! Every daemon is started on `127.0.0.1:0` for both listeners; the ports it got are read from
//! its own `TCP: listening on ADDR` / `HTTP: listening on ADDR` log lines (the readiness signal
//! upstream also prints), and then `GET /ping` must answer `OK`. No fixed ports, no sleeps:
//! every wait polls with a deadline and, on timeout, panics with everything the daemon logged.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::binary::binary;
use crate::http::{http_get, http_post, HttpResponse};
pub use crate::logs::Logs;
use crate::raw::RawConn;

/// `Deref`/`DerefMut` to the [`Daemon`] a process type wraps (its `daemon` field), so every
/// daemon's generic helpers (logs, signals, HTTP) work on each.
macro_rules! derefs_to_daemon {
    ($process:ty) => {
        impl std::ops::Deref for $process {
            type Target = Daemon;
            fn deref(&self) -> &Daemon {
                &self.daemon
            }
        }

        impl std::ops::DerefMut for $process {
            fn deref_mut(&mut self) -> &mut Daemon {
                &mut self.daemon
            }
        }
    };
}

/// How long a daemon may take to announce its listeners and answer `/ping`. Generous because a
/// loaded 2-core CI machine may still be linking other test binaries while this one starts.
pub const START_DEADLINE: Duration = Duration::from_secs(20);
/// How long a daemon may take to exit after SIGTERM.
pub const STOP_DEADLINE: Duration = Duration::from_secs(15);
/// Interval between readiness probes. Short: it bounds latency, not correctness.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A listener address announced in the logs.
enum Announce {
    Tcp(SocketAddr),
    Http(SocketAddr),
}

/// Parse `... TCP: listening on 127.0.0.1:1234` (and the HTTP twin) out of a log line.
fn parse_announce(line: &str) -> Option<Announce> {
    for (marker, make) in [
        (
            "TCP: listening on ",
            Announce::Tcp as fn(SocketAddr) -> Announce,
        ),
        ("HTTP: listening on ", Announce::Http),
    ] {
        if let Some(pos) = line.find(marker) {
            let rest = &line[pos + marker.len()..];
            // A `--log-format=json` line ends the address with a quote.
            let token = rest.split(|c: char| c.is_whitespace() || c == '"').next()?;
            return token.parse().ok().map(make);
        }
    }
    None
}

/// Copy one output stream into `logs` line by line, reporting listener announcements.
fn pump(stream: impl Read + Send + 'static, logs: Logs, tx: mpsc::Sender<Announce>) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line).trim_end().to_owned();
                    if let Some(a) = parse_announce(&text) {
                        // The receiver is gone once startup is over; later lines only matter
                        // for the logs.
                        let _ = tx.send(a);
                    }
                    logs.push(text);
                }
            }
        }
    });
}

/// One running daemon process with TCP and HTTP listeners. Killed on drop.
pub struct Daemon {
    name: String,
    child: Child,
    /// Set once the child has been reaped, so Drop and later calls do not wait again.
    exit: Option<ExitStatus>,
    /// `None` for a daemon that has no TCP listener (nsqadmin).
    tcp: Option<SocketAddr>,
    http: SocketAddr,
    logs: Logs,
}

impl Daemon {
    /// Start binary `name` with `args`, wait for both listener announcements and `/ping`.
    pub fn spawn(name: &str, args: &[OsString]) -> Daemon {
        Self::spawn_with(name, &[], args, true, "/ping")
    }

    /// As [`Daemon::spawn`], run through `wrapper` (a command that execs the rest, such as
    /// `prlimit --nofile=64:64`).
    pub fn spawn_wrapped(name: &str, wrapper: &[&str], args: &[OsString]) -> Daemon {
        Self::spawn_with(name, wrapper, args, true, "/ping")
    }

    /// Start a daemon that only listens for HTTP (nsqadmin): wait for that
    /// announcement and `ping` (e.g. `/ping` below a base path).
    pub fn spawn_http_only(name: &str, args: &[OsString], ping: &str) -> Daemon {
        Self::spawn_with(name, &[], args, false, ping)
    }

    fn spawn_with(
        name: &str,
        wrapper: &[&str],
        args: &[OsString],
        needs_tcp: bool,
        ping: &str,
    ) -> Daemon {
        let path = binary(name);
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(&path);
                c
            }
            None => Command::new(&path),
        };
        let mut child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()));
        let logs = Logs::default();
        let (tx, rx) = mpsc::channel();
        pump(
            child.stderr.take().expect("piped stderr"),
            logs.clone(),
            tx.clone(),
        );
        pump(child.stdout.take().expect("piped stdout"), logs.clone(), tx);

        let deadline = Instant::now() + START_DEADLINE;
        let (mut tcp, mut http) = (None, None);
        while (needs_tcp && tcp.is_none()) || http.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Announce::Tcp(a)) => tcp = Some(a),
                Ok(Announce::Http(a)) => http = Some(a),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    logs.fail(&format!(
                        "{name} did not announce its listeners within {START_DEADLINE:?} \
                         (args {args:?})"
                    ));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Both output streams closed: the process is exiting. Reap it for the
                    // status, bounded in case it closed its outputs but lingers.
                    let status = wait_deadline(&mut child, Instant::now() + STOP_DEADLINE);
                    logs.fail(&format!(
                        "{name} exited before announcing its listeners: {status:?} (args {args:?})"
                    ));
                }
            }
        }
        let mut daemon = Daemon {
            name: name.to_owned(),
            child,
            exit: None,
            tcp,
            http: http.expect("loop ends with an HTTP address"),
            logs,
        };
        daemon.wait_ping(ping, deadline);
        daemon
    }

    /// Poll `GET ping` until it answers 200 `OK`.
    fn wait_ping(&mut self, ping: &str, deadline: Instant) {
        loop {
            let last = match http_get(self.http, ping) {
                Ok(r) if r.status == 200 && r.body == b"OK" => return,
                Ok(r) => format!("{} {:?}", r.status, r.text()),
                Err(e) => e.to_string(),
            };
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exit = Some(status);
                self.fail(&format!("{} exited during startup: {status}", self.name));
            }
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "{} {ping} did not answer OK within {START_DEADLINE:?}; last: {last}",
                    self.name
                ));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp
            .unwrap_or_else(|| self.fail(&format!("{} has no TCP listener", self.name)))
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything logged so far.
    pub fn logs(&self) -> String {
        self.logs.snapshot()
    }

    /// A handle on the logs that outlives borrows of the daemon (for connections, threads).
    pub fn log_handle(&self) -> Logs {
        self.logs.clone()
    }

    /// Panic with `msg` and the logs.
    pub fn fail(&self, msg: &str) -> ! {
        self.logs.fail(msg)
    }

    /// Whether the process is still running (reaps it if it has exited).
    pub fn is_running(&mut self) -> bool {
        if self.exit.is_some() {
            return false;
        }
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.exit = Some(status);
                false
            }
            Ok(None) => true,
            Err(e) => self.fail(&format!("try_wait on {}: {e}", self.name)),
        }
    }

    /// Send `sig` without waiting for anything, e.g. SIGSTOP/SIGCONT to freeze a daemon while
    /// its sockets stay open.
    pub fn signal(&self, sig: Signal) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits in i32"));
        // ESRCH only if the process is already gone, which the wait that follows reports.
        let _ = kill(pid, sig);
    }

    /// SIGKILL, as a crash or an OOM kill would, and reap. Returns the exit status.
    pub fn kill(&mut self) -> ExitStatus {
        if let Some(status) = self.exit {
            return status;
        }
        self.signal(Signal::SIGKILL);
        let status = self.wait_until(Instant::now() + STOP_DEADLINE);
        status.unwrap_or_else(|| self.fail(&format!("{} survived SIGKILL", self.name)))
    }

    /// SIGTERM and wait (bounded by [`STOP_DEADLINE`]) for the process to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        if let Some(status) = self.exit {
            return status;
        }
        self.signal(Signal::SIGTERM);
        match self.wait_until(Instant::now() + STOP_DEADLINE) {
            Some(status) => status,
            None => {
                self.signal(Signal::SIGKILL);
                let _ = self.wait_until(Instant::now() + STOP_DEADLINE);
                self.fail(&format!(
                    "{} did not exit within {STOP_DEADLINE:?} of SIGTERM",
                    self.name
                ))
            }
        }
    }

    /// Graceful stop that must succeed: SIGTERM, then the exit status must be 0.
    pub fn stop(&mut self) {
        let status = self.terminate();
        if !status.success() {
            self.fail(&format!("{} exited with {status} after SIGTERM", self.name));
        }
    }

    fn wait_until(&mut self, deadline: Instant) -> Option<ExitStatus> {
        let status = wait_deadline(&mut self.child, deadline);
        if status.is_some() {
            self.exit = status;
        }
        status
    }

    /// `GET target` on the HTTP port; panics (with logs) on I/O errors, not on HTTP errors.
    pub fn http_get(&self, target: &str) -> HttpResponse {
        http_get(self.http, target)
            .unwrap_or_else(|e| self.fail(&format!("GET {target} on {}: {e}", self.name)))
    }

    /// `POST target` with `body` on the HTTP port; panics (with logs) on I/O errors.
    pub fn http_post(&self, target: &str, body: &[u8]) -> HttpResponse {
        http_post(self.http, target, body)
            .unwrap_or_else(|e| self.fail(&format!("POST {target} on {}: {e}", self.name)))
    }
}

/// Reap `child` if it exits before `deadline`.
fn wait_deadline(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL_INTERVAL),
            Ok(None) | Err(_) => return None,
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.exit.is_none() {
            // Never leave a daemon behind a failed test; SIGKILL cannot be ignored.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Where an nsqd keeps its data: a temporary directory it owns, or one the test owns.
enum DataDir {
    Owned(TempDir),
    Borrowed(PathBuf),
}

impl DataDir {
    fn path(&self) -> &Path {
        match self {
            DataDir::Owned(t) => t.path(),
            DataDir::Borrowed(p) => p,
        }
    }
}

/// A running `nsqd` on loopback port 0 with a private data directory.
///
/// Derefs to [`Daemon`] for addresses, logs, signals and HTTP.
pub struct NsqdProcess {
    // Field order matters: the daemon is dropped (killed) before its data dir is removed.
    daemon: Daemon,
    data: DataDir,
}

impl NsqdProcess {
    /// Start nsqd with a fresh temporary data directory plus `extra_args`
    /// (e.g. `["--msg-timeout=1s"]`).
    pub fn start(extra_args: &[&str]) -> NsqdProcess {
        let dir = tempfile::Builder::new()
            .prefix("nsqd-e2e-")
            .tempdir()
            .expect("create nsqd data dir");
        Self::start_in(DataDir::Owned(dir), extra_args)
    }

    /// Start nsqd on an existing data directory (which the caller keeps alive), e.g. to restart
    /// on what a previous nsqd left behind.
    pub fn start_with_data_dir(data_dir: &Path, extra_args: &[&str]) -> NsqdProcess {
        Self::start_in(DataDir::Borrowed(data_dir.to_path_buf()), extra_args)
    }

    /// Start a new nsqd on this one's data directory, after killing this one if it still runs
    /// (use [`Daemon::terminate`] or [`Daemon::kill`] first to choose how it stops). The
    /// temporary directory moves to the new process.
    pub fn restart(mut self, extra_args: &[&str]) -> NsqdProcess {
        self.daemon.kill();
        let NsqdProcess { daemon, data } = self;
        drop(daemon);
        Self::start_in(data, extra_args)
    }

    /// Start nsqd (fresh data directory) through `wrapper`, e.g. `["prlimit", "--nofile=64:64",
    /// "--"]` to run it under a low open-file limit.
    pub fn start_wrapped(wrapper: &[&str], extra_args: &[&str]) -> NsqdProcess {
        let dir = tempfile::Builder::new()
            .prefix("nsqd-e2e-")
            .tempdir()
            .expect("create nsqd data dir");
        Self::start_in_wrapped(DataDir::Owned(dir), wrapper, extra_args)
    }

    fn start_in(data: DataDir, extra_args: &[&str]) -> NsqdProcess {
        Self::start_in_wrapped(data, &[], extra_args)
    }

    fn start_in_wrapped(data: DataDir, wrapper: &[&str], extra_args: &[&str]) -> NsqdProcess {
        let mut args: Vec<OsString> = vec![
            "--tcp-address=127.0.0.1:0".into(),
            "--http-address=127.0.0.1:0".into(),
        ];
        let mut data_arg = OsString::from("--data-path=");
        data_arg.push(data.path().as_os_str());
        args.push(data_arg);
        args.extend(extra_args.iter().map(|a| OsStr::new(a).to_os_string()));
        let daemon = Daemon::spawn_wrapped("nsqd", wrapper, &args);
        NsqdProcess { daemon, data }
    }

    pub fn data_path(&self) -> &Path {
        self.data.path()
    }

    /// A raw V2 connection (magic sent) whose timeouts report this nsqd's logs.
    pub async fn connect(&self) -> RawConn {
        RawConn::connect(self.tcp_addr())
            .await
            .with_logs(self.log_handle())
    }

    /// A raw connection to the TCP port that has sent nothing yet, not even the magic.
    pub async fn connect_without_magic(&self) -> RawConn {
        RawConn::connect_without_magic(self.tcp_addr())
            .await
            .with_logs(self.log_handle())
    }

    /// [`Self::connect`], then IDENTIFY with no options (feature negotiation on).
    pub async fn connect_identified(&self) -> RawConn {
        let mut c = self.connect().await;
        c.identify_ok(serde_json::json!({})).await;
        c
    }

    /// A consumer: [`Self::connect`], IDENTIFY with `identify`, `SUB topic channel`, `RDY rdy`.
    pub async fn consumer(
        &self,
        identify: serde_json::Value,
        topic: &str,
        channel: &str,
        rdy: u64,
    ) -> RawConn {
        let mut c = self.connect().await;
        c.identify_ok(identify).await;
        c.sub(topic, channel).await;
        c.rdy(rdy).await;
        c
    }

    /// [`Self::connect_identified`], then `SUB topic channel` (answered `OK`); `RDY` is 0.
    pub async fn subscriber(&self, topic: &str, channel: &str) -> RawConn {
        let mut c = self.connect_identified().await;
        c.sub(topic, channel).await;
        c
    }
}

derefs_to_daemon!(NsqdProcess);

/// A running `nsqlookupd` on loopback port 0. Derefs to [`Daemon`].
pub struct NsqlookupdProcess {
    daemon: Daemon,
}

impl NsqlookupdProcess {
    pub fn start(extra_args: &[&str]) -> NsqlookupdProcess {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self::start_on(any, any, extra_args)
    }

    /// Start on these listener addresses, e.g. the ones a killed lookupd had, so that nsqds
    /// configured with its address find the new process.
    pub fn start_on(tcp: SocketAddr, http: SocketAddr, extra_args: &[&str]) -> NsqlookupdProcess {
        let mut args: Vec<OsString> = vec![
            format!("--tcp-address={tcp}").into(),
            format!("--http-address={http}").into(),
            // Announce loopback, so registrations are reachable wherever the hostname points.
            "--broadcast-address=127.0.0.1".into(),
        ];
        args.extend(extra_args.iter().map(|a| OsStr::new(a).to_os_string()));
        NsqlookupdProcess {
            daemon: Daemon::spawn("nsqlookupd", &args),
        }
    }

    /// SIGKILL this lookupd (all its state is in memory, so it is gone) and start a new one on
    /// the same TCP and HTTP addresses with `extra_args`. Its listeners set SO_REUSEADDR (tokio's
    /// do on Unix, as Go's do), so the old connections' TIME_WAIT does not block the bind.
    pub fn restart(mut self, extra_args: &[&str]) -> NsqlookupdProcess {
        let (tcp, http) = (self.tcp_addr(), self.http_addr());
        self.daemon.kill();
        drop(self);
        Self::start_on(tcp, http, extra_args)
    }
}

derefs_to_daemon!(NsqlookupdProcess);

/// A running `nsqadmin` on loopback port 0. Derefs to [`Daemon`] (HTTP only).
pub struct NsqadminProcess {
    daemon: Daemon,
}

impl NsqadminProcess {
    /// Start nsqadmin reading from these lookupds (HTTP addresses), plus `extra_args`.
    pub fn start_with_lookupds(lookupds: &[SocketAddr], extra_args: &[&str]) -> NsqadminProcess {
        Self::start("--lookupd-http-address", lookupds, extra_args)
    }

    /// Start nsqadmin reading these nsqds directly (HTTP addresses), plus `extra_args`.
    pub fn start_with_nsqds(nsqds: &[SocketAddr], extra_args: &[&str]) -> NsqadminProcess {
        Self::start("--nsqd-http-address", nsqds, extra_args)
    }

    /// Start nsqadmin with `source_flag=ADDR` for each of `sources`, plus `extra_args`.
    fn start(source_flag: &str, sources: &[SocketAddr], extra_args: &[&str]) -> NsqadminProcess {
        let mut args: Vec<OsString> = vec!["--http-address=127.0.0.1:0".into()];
        args.extend(sources.iter().map(|a| format!("{source_flag}={a}").into()));
        args.extend(extra_args.iter().map(|a| OsStr::new(a).to_os_string()));
        // Every path, /ping included, lives under --base-path.
        let base = extra_args
            .iter()
            .rev()
            .find_map(|a| a.strip_prefix("--base-path="))
            .map(|b| b.trim_matches('/'))
            .filter(|b| !b.is_empty())
            .map(|b| format!("/{b}"))
            .unwrap_or_default();
        NsqadminProcess {
            daemon: Daemon::spawn_http_only("nsqadmin", &args, &format!("{base}/ping")),
        }
    }

    /// `method target` with `headers` and `body`; panics (with logs) on I/O errors.
    /// A body goes typed `application/json` unless `headers` type it, as
    /// the dashboard sends it (nsqadmin refuses other types on actions).
    pub fn request(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> HttpResponse {
        let mut headers = headers.to_vec();
        let typed = headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
        if !typed && (!body.is_empty() || method == "POST") {
            headers.push(("Content-Type", "application/json"));
        }
        crate::http::http_request_with_headers(self.http_addr(), method, target, &headers, body)
            .unwrap_or_else(|e| self.fail(&format!("{method} {target} on nsqadmin: {e}")))
    }
}

derefs_to_daemon!(NsqadminProcess);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_announcements() {
        let line = "[nsqd] 2026/11/22 03:24:59.329289 INFO: TCP: listening on 127.0.0.1:34763";
        assert!(matches!(parse_announce(line), Some(Announce::Tcp(a)) if a.port() == 34763));
        let line = "[nsqlookupd] 2026/11/22 INFO: HTTP: listening on 127.0.0.1:44059";
        assert!(matches!(parse_announce(line), Some(Announce::Http(a)) if a.port() == 44059));
        assert!(parse_announce("INFO: TCP: closing 127.0.0.1:1").is_none());
    }
}
