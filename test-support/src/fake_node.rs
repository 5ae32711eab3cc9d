//! A hostile "nsqd" for nsqadmin's tests: a plain HTTP server on loopback
//! port 0 that answers each path with what the test chose (JSON carrying
//! script, or a body that never ends), so nsqadmin can be pointed at it with
//! `--nsqd-http-address` like at a real node.
//!
//! One thread per connection, `Connection: close` on every answer; the
//! server stops accepting when the [`FakeNode`] is dropped.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// What the fake node answers on one path.
#[derive(Debug, Clone)]
pub enum Answer {
    /// `200 OK` with this JSON body.
    Json(String),
    /// `200 OK`, JSON content type, no length, and a body that goes on for
    /// `limit` bytes (an opening `{"topics":[` then padding), unless the
    /// reader hangs up first.
    Endless { limit: u64 },
}

type Routes = Arc<RwLock<Vec<(&'static str, Answer)>>>;

pub struct FakeNode {
    addr: SocketAddr,
    routes: Routes,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
}

impl FakeNode {
    /// Serve `routes` (path without query → answer); other paths get 404.
    pub fn start(routes: Vec<(&'static str, Answer)>) -> FakeNode {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake node");
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let routes: Routes = Arc::new(RwLock::new(routes));
        let (stop2, sent2, routes2) = (stop.clone(), sent.clone(), routes.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let (routes, sent, stop) = (routes2.clone(), sent2.clone(), stop2.clone());
                std::thread::spawn(move || serve(stream, &routes, &sent, &stop));
            }
        });
        FakeNode {
            addr,
            routes,
            stop,
            sent,
        }
    }

    /// Answer `path` with `answer` from now on (replacing an earlier one).
    pub fn route(&self, path: &'static str, answer: Answer) {
        let mut routes = self.routes.write().unwrap();
        routes.retain(|(p, _)| *p != path);
        routes.push((path, answer));
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Body bytes written to readers so far (all paths).
    pub fn bytes_sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    /// `/info` for this node, with `hostname` as given.
    pub fn info(&self, hostname: &str) -> Answer {
        Answer::Json(
            serde_json::json!({
                "version": "1.3.0",
                "broadcast_address": "127.0.0.1",
                "hostname": hostname,
                "http_port": self.addr.port(),
                "tcp_port": 1,
            })
            .to_string(),
        )
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(stream: TcpStream, routes: &Routes, sent: &AtomicU64, stop: &AtomicBool) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim_end().is_empty() {
            break;
        }
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("/");
    let path = target.split('?').next().unwrap_or("/");
    let mut out = stream;
    let answer = routes
        .read()
        .unwrap()
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, a)| a.clone());
    match answer {
        Some(Answer::Json(body)) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            if out.write_all(head.as_bytes()).is_ok() && out.write_all(body.as_bytes()).is_ok() {
                sent.fetch_add(body.len() as u64, Ordering::SeqCst);
            }
        }
        Some(Answer::Endless { limit }) => {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{\"topics\":[";
            if out.write_all(head.as_bytes()).is_err() {
                return;
            }
            let chunk = vec![b' '; 64 * 1024];
            let mut written = 0u64;
            while written < limit && !stop.load(Ordering::SeqCst) {
                if out.write_all(&chunk).is_err() {
                    return;
                }
                written += chunk.len() as u64;
                sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            }
        }
        None => {
            let _ = out.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    }
}
