//! A command-line tool run as a real process, its output collected while it runs.

use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A tool process whose stdout and stderr are read by threads, so a full
/// pipe never blocks it, and which is killed if the test ends early.
pub struct Tool {
    child: Option<Child>,
    stdout: Option<JoinHandle<()>>,
    stderr: Option<JoinHandle<()>>,
    out: Arc<Mutex<Vec<u8>>>,
    err: Arc<Mutex<Vec<u8>>>,
}

/// What a tool left behind: exit status, stdout, stderr.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Read `r` to its end into `sink`, which the test may look at meanwhile.
fn drain(mut r: impl Read + Send + 'static, sink: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        while let Ok(n) = r.read(&mut chunk) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    })
}

impl Tool {
    /// Starts `exe` with `args`; `stdin` is written by a thread and closed.
    pub fn spawn(exe: &str, args: &[String], stdin: Option<Vec<u8>>) -> Tool {
        let mut child = Command::new(exe)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {exe}: {e}"));
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("stdin pipe");
            std::thread::spawn(move || {
                let _ = pipe.write_all(&input);
            });
        }
        let (out, err) = (Arc::default(), Arc::default());
        Tool {
            stdout: Some(drain(
                child.stdout.take().expect("stdout pipe"),
                Arc::clone(&out),
            )),
            stderr: Some(drain(
                child.stderr.take().expect("stderr pipe"),
                Arc::clone(&err),
            )),
            child: Some(child),
            out,
            err,
        }
    }

    /// What the tool has written to stderr so far.
    pub fn stderr_so_far(&self) -> String {
        String::from_utf8_lossy(&self.err.lock().unwrap()).into_owned()
    }

    /// Sends SIGTERM, the way upstream's tools are asked to stop.
    pub fn terminate(&self) {
        let pid = self.child.as_ref().expect("running").id();
        let killed = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
    }

    /// Waits for the process to exit on its own (the test's `within` bounds it).
    pub async fn finish(mut self) -> Finished {
        let mut child = self.child.take().expect("child");
        let stdout = self.stdout.take().expect("stdout");
        let stderr = self.stderr.take().expect("stderr");
        let (out, err) = (self.out.clone(), self.err.clone());
        tokio::task::spawn_blocking(move || {
            let status = child.wait().expect("wait");
            stdout.join().unwrap();
            stderr.join().unwrap();
            let text =
                |b: Arc<Mutex<Vec<u8>>>| String::from_utf8(b.lock().unwrap().clone()).unwrap();
            Finished {
                status,
                stdout: text(out),
                stderr: text(err),
            }
        })
        .await
        .unwrap()
    }
}

impl Tool {
    /// Sends SIGTERM and expects a clean exit (status 0), as upstream's tools give when asked
    /// to stop; what the tool wrote is returned.
    pub async fn stop_ok(self) -> Finished {
        self.terminate();
        let done = self.finish().await;
        assert!(done.status.success(), "{}", done.stderr);
        done
    }

    /// Runs `exe` with `args` (no stdin) and expects it to fail on its own, saying `needle` on
    /// stderr.
    pub async fn expect_failure(exe: &str, args: &[String], needle: &str) -> Finished {
        let done = Tool::spawn(exe, args, None).finish().await;
        assert!(!done.status.success(), "{exe} {args:?} succeeded");
        assert!(done.stderr.contains(needle), "{}", done.stderr);
        done
    }
}

impl Drop for Tool {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Owned arguments from string literals.
pub fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Wait for `child` to exit, at most `limit`; past it the child is killed and reaped and
/// `None` returned, so the caller can fail with whatever context it has.
pub fn wait_with_deadline(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("poll the child process") {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
