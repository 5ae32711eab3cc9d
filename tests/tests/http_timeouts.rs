//! Every HTTP port (nsqd, nsqlookupd, nsqadmin) drops clients that hold a
//! connection without finishing a request: one that sends its header a byte
//! a second (slowloris) is cut off at `--http-header-timeout`, one that
//! stops sending its body is cut off at `--http-idle-timeout`.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use nsq_test_support::{NsqadminProcess, NsqdProcess, NsqlookupdProcess};

const FLAGS: [&str; 2] = ["--http-header-timeout=1s", "--http-idle-timeout=2s"];
/// Far beyond both timeouts: a client still connected then was never cut off.
const GIVE_UP: Duration = Duration::from_secs(40);

/// Whether the server has closed `s`, waiting at most `wait` for news.
fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            // An answer (e.g. 408) may come first; the close follows.
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// Send a request header one byte a second; `Ok(bytes sent)` once the
/// server hangs up, `Err` if it let the whole header in.
fn slowloris(addr: SocketAddr) -> Result<usize, String> {
    let mut s = TcpStream::connect(addr).unwrap();
    let header = format!(
        "GET /ping HTTP/1.1\r\nHost: {addr}\r\nX-Padding: {}\r\n\r\n",
        "x".repeat(10)
    );
    for (i, b) in header.bytes().enumerate() {
        if s.write_all(&[b]).is_err() {
            return Ok(i);
        }
        // Reading with a one-second limit paces the bytes, and notices
        // the close as soon as it happens.
        if closed_within(&mut s, Duration::from_secs(1)) {
            return Ok(i + 1);
        }
    }
    Err(format!(
        "{addr} accepted a {}-byte header sent over {}s",
        header.len(),
        header.len()
    ))
}

/// Send a whole header announcing a body, then nothing; `Ok` once the
/// server hangs up.
fn stalled_body(addr: SocketAddr, target: &str) -> Result<(), String> {
    let mut s = TcpStream::connect(addr).unwrap();
    let header = format!(
        "POST {target} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{"
    );
    s.write_all(header.as_bytes()).unwrap();
    let start = Instant::now();
    while start.elapsed() < GIVE_UP {
        if closed_within(&mut s, Duration::from_secs(1)) {
            return Ok(());
        }
    }
    Err(format!(
        "{addr} kept a stalled request body open for {GIVE_UP:?}"
    ))
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_stalled_clients_are_cut_off_on_every_http_port() {
    let nsqd = NsqdProcess::start(&FLAGS);
    let lookupd = NsqlookupdProcess::start(&FLAGS);
    let admin_flags: Vec<&str> = FLAGS.to_vec();
    let admin = NsqadminProcess::start_with_nsqds(&[nsqd.http_addr()], &admin_flags);
    let ports = [
        ("nsqd", nsqd.http_addr(), "/pub?topic=t"),
        ("nsqlookupd", lookupd.http_addr(), "/topic/create?topic=t"),
        ("nsqadmin", admin.http_addr(), "/api/topics"),
    ];
    // All at once: each takes a few seconds of waiting.
    let checks = ports.map(|(name, addr, target)| {
        let target = target.to_string();
        tokio::task::spawn_blocking(move || {
            let slow = slowloris(addr).map_err(|e| format!("{name}: {e}"))?;
            stalled_body(addr, &target).map_err(|e| format!("{name}: {e}"))?;
            Ok::<_, String>((name, slow))
        })
    });
    for check in checks {
        match check.await.unwrap() {
            Ok((name, sent)) => eprintln!("{name}: slowloris cut off after {sent} bytes"),
            Err(e) => panic!("{e}"),
        }
    }
    // The daemons still serve.
    assert_eq!(nsqd.http_get("/ping").status, 200);
    assert_eq!(lookupd.http_get("/ping").status, 200);
    assert_eq!(admin.http_get("/ping").status, 200);
}
