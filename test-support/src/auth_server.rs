//! A scripted auth server for nsqd's `--auth-http-address`: it answers
//! each request with the next reply of its script and records the request
//! lines, so tests can check what nsqd asked and grant or refuse at will.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};

/// The server thread runs until the process ends; it holds no resources a
/// test must release.
pub struct AuthServer {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
}

impl AuthServer {
    /// Serve `replies` in order, each a JSON body sent with 200 OK; the
    /// last one repeats.
    pub fn start(replies: &[&str]) -> AuthServer {
        assert!(!replies.is_empty(), "an auth server needs a reply");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind auth server");
        let addr = listener.local_addr().expect("auth server address");
        let replies: Vec<String> = replies.iter().map(|s| s.to_string()).collect();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let Ok(clone) = stream.try_clone() else {
                    continue;
                };
                let mut reader = BufReader::new(clone);
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                }
                let n = {
                    let mut s = seen.lock().expect("requests lock");
                    s.push(line.trim().to_string());
                    s.len()
                };
                let body = &replies[(n - 1).min(replies.len() - 1)];
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        AuthServer { addr, requests }
    }

    /// The request lines received so far (`GET /auth?secret=...`).
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("requests lock").clone()
    }

    /// nsqd's flag pointing at this server.
    pub fn nsqd_arg(&self) -> String {
        format!("--auth-http-address={}", self.addr)
    }
}
