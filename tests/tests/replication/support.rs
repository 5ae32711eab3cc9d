//! What the replication tests share: a pair of nsqds on their own loopback
//! addresses with a lookupd, a ledger of acknowledged and delivered
//! messages, publishers, consumers that find nodes through lookupd, and
//! nftables partitions that the test creates and removes itself.

// Shared by several test binaries, each using a part.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use nsq_protocol::{Command, Frame};
use nsq_test_support::{channel, http_get, topic, wait_until, Daemon, NsqlookupdProcess, RawConn};

pub const TOPIC: &str = "orders";
pub const CHANNEL: &str = "c";
/// Each consumer connection's RDY: the in-flight window per node.
pub const RDY: u64 = 50;
pub const TAKEOVER_AFTER: Duration = Duration::from_secs(2);

/// A free port on `ip` (bound and released; the node binds it right after).
fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("cannot bind {ip}:0 ({e}): 127.0.0.0/8 must be loopback"))
        .port()
}

/// One nsqd of a pair, with fixed addresses so it can come back as itself.
pub struct Node {
    pub ip: String,
    tcp: u16,
    http: u16,
    pub repl: u16,
    peer: String,
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
    extra: Vec<String>,
    pub daemon: Option<Daemon>,
}

impl Node {
    fn new(ip: &str, extra: &[&str]) -> Node {
        let tmp = tempfile::Builder::new()
            .prefix("nsqd-repl-")
            .tempdir()
            .expect("data dir");
        Node {
            ip: ip.to_string(),
            tcp: free_port(ip),
            http: free_port(ip),
            repl: free_port(ip),
            peer: String::new(),
            dir: tmp.path().join("data"),
            _tmp: tmp,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            daemon: None,
        }
    }

    /// Flags for the next start (in place of those given at creation).
    pub fn set_extra(&mut self, extra: &[&str]) {
        self.extra = extra.iter().map(|s| s.to_string()).collect();
    }

    pub fn repl_addr(&self) -> String {
        format!("{}:{}", self.ip, self.repl)
    }

    pub fn tcp_addr(&self) -> SocketAddr {
        format!("{}:{}", self.ip, self.tcp).parse().unwrap()
    }

    pub fn http_addr(&self) -> SocketAddr {
        format!("{}:{}", self.ip, self.http).parse().unwrap()
    }

    pub fn start(&mut self, lookupd: SocketAddr) {
        std::fs::create_dir_all(&self.dir).unwrap();
        let mut args: Vec<OsString> = vec![
            format!("--tcp-address={}", self.tcp_addr()).into(),
            format!("--http-address={}", self.http_addr()).into(),
            format!("--broadcast-address={}", self.ip).into(),
            format!("--lookupd-tcp-address={lookupd}").into(),
            format!("--data-path={}", self.dir.display()).into(),
            format!("--replication-address={}", self.repl_addr()).into(),
            format!("--replica={}", self.peer).into(),
            "--replica-timeout=1s".into(),
            format!("--replica-takeover-after={}s", TAKEOVER_AFTER.as_secs()).into(),
        ];
        args.extend(self.extra.iter().map(OsString::from));
        self.daemon = Some(Daemon::spawn("nsqd", &args));
    }

    pub fn d(&self) -> &Daemon {
        self.daemon.as_ref().expect("node running")
    }

    pub fn kill(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.kill();
        }
    }

    /// SIGTERM: memory queues are written to disk before it exits.
    pub fn stop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.stop();
        }
    }

    pub fn fail(&self, msg: &str) -> ! {
        match &self.daemon {
            Some(d) => d.fail(msg),
            None => panic!("{msg}"),
        }
    }

    /// `/stats` of this node: (state, shadow depth, takeovers) of its peer.
    pub fn replica(&self) -> Result<(String, u64, u64), String> {
        let r = http_get(self.http_addr(), "/stats?format=json").map_err(|e| e.to_string())?;
        let v = r.json();
        let p = &v["replicas"][0];
        Ok((
            p["state"].as_str().unwrap_or("?").to_string(),
            p["shadow_depth"].as_u64().unwrap_or(u64::MAX),
            p["takeovers"].as_u64().unwrap_or(0),
        ))
    }

    /// The channel's depth (memory + disk) on this node.
    pub fn depth(&self) -> Result<u64, String> {
        let r = http_get(
            self.http_addr(),
            &format!("/stats?format=json&topic={TOPIC}"),
        )
        .map_err(|e| e.to_string())?;
        let v = r.json();
        let c = &v["topics"][0]["channels"][0];
        Ok(c["depth"].as_u64().unwrap_or(0) + c["in_flight_count"].as_u64().unwrap_or(0))
    }

    /// Wait until `check` passes, or fail with this node's logs.
    pub async fn wait_for(
        &self,
        limit: Duration,
        what: &str,
        check: impl FnMut() -> Result<(), String>,
    ) {
        if let Err(e) = wait_until(limit, what, check).await {
            self.fail(&e);
        }
    }

    /// Wait until this node's log holds `text`.
    pub async fn wait_log(&self, text: &str, limit: Duration) {
        self.wait_for(limit, text, || {
            if self.d().logs().contains(text) {
                Ok(())
            } else {
                Err("not logged yet".into())
            }
        })
        .await;
    }

    /// Wait until this node sees its peer in `state`.
    pub async fn wait_state(&self, state: &str, limit: Duration) {
        let what = format!("{} sees its peer {state}", self.ip);
        self.wait_for(limit, &what, || match self.replica() {
            Ok((s, _, _)) if s == state => Ok(()),
            Ok(other) => Err(format!("{other:?}")),
            Err(e) => Err(e),
        })
        .await;
    }

    /// Wait until the channel here is empty (memory, disk and in flight).
    pub async fn wait_drained(&self, limit: Duration) {
        self.wait_for(limit, "channel drained", || match self.depth() {
            Ok(0) => Ok(()),
            other => Err(format!("depth {other:?}")),
        })
        .await;
    }

    /// Wait until every acknowledged message was delivered, or fail with
    /// this node's logs.
    pub async fn wait_delivered(&self, ledger: &Shared, limit: Duration) {
        if let Err(e) = wait_all_delivered(ledger, limit).await {
            self.fail(&e);
        }
    }

    /// Wait until `n` messages were acknowledged.
    pub async fn wait_acked(&self, ledger: &Shared, n: usize) {
        self.wait_for(Duration::from_secs(30), "enough acknowledged", || {
            let got = ledger.lock().unwrap().acked.len();
            if got >= n {
                Ok(())
            } else {
                Err(format!("{got} of {n}"))
            }
        })
        .await;
    }
}

/// A fresh stop (or slow) flag.
pub fn flag() -> Arc<AtomicBool> {
    Arc::new(AtomicBool::new(false))
}

/// Publish exactly `n` messages to `addr` (see [`publisher`]).
pub async fn publish_n(addr: SocketAddr, name: &str, n: usize, mpub_only: bool, ledger: &Shared) {
    let sent = publisher(addr, name.into(), n, mpub_only, ledger.clone(), flag()).await;
    assert_eq!(sent, n, "{name}: published {sent} of {n}");
}

/// One node whose peer is `peer` (which the test may never start).
pub fn lone_node(ip: &str, peer: &str, extra: &[&str]) -> Node {
    let mut n = Node::new(ip, extra);
    n.peer = peer.to_string();
    n
}

/// Two nsqds replicating to each other, and a lookupd.
pub struct Pair {
    pub lookupd: NsqlookupdProcess,
    pub a: Node,
    pub b: Node,
}

impl Pair {
    /// Start a pair on 127.42.`net`.2 and .3 (each test its own `net`).
    pub async fn start(net: u8, extra: &[&str]) -> Pair {
        let lookupd = NsqlookupdProcess::start(&[]);
        let mut a = Node::new(&format!("127.42.{net}.2"), extra);
        let mut b = Node::new(&format!("127.42.{net}.3"), extra);
        a.peer = b.repl_addr();
        b.peer = a.repl_addr();
        a.start(lookupd.tcp_addr());
        b.start(lookupd.tcp_addr());
        let limit = Duration::from_secs(10);
        a.wait_state("in_sync", limit).await;
        b.wait_state("in_sync", limit).await;
        for n in [&a, &b] {
            for path in [
                format!("/topic/create?topic={TOPIC}"),
                format!("/channel/create?topic={TOPIC}&channel={CHANNEL}"),
            ] {
                let r = n.d().http_post(&path, b"");
                assert_eq!(r.status, 200, "{path}: {}", r.text());
            }
        }
        Pair { lookupd, a, b }
    }

    /// Consume until every acknowledged message was delivered (waiting on
    /// `serving`'s behalf, within `limit`) and `drained`'s channel is empty,
    /// then stop the consumers.
    pub async fn consume_all(
        &self,
        ledger: &Shared,
        serving: &Node,
        limit: Duration,
        drained: &Node,
    ) {
        let stop = self.consume(ledger);
        serving.wait_delivered(ledger, limit).await;
        drained.wait_drained(Duration::from_secs(10)).await;
        stop.store(true, Ordering::Relaxed);
    }

    /// Start full-speed consumers (see [`consumers`]); returns their stop flag.
    pub fn consume(&self, ledger: &Shared) -> Arc<AtomicBool> {
        let stop = flag();
        consumers(
            self.lookupd.http_addr(),
            ledger.clone(),
            stop.clone(),
            flag(),
        );
        stop
    }
}

/// What was acknowledged to publishers and what consumers received.
#[derive(Default)]
pub struct Ledger {
    pub acked: HashSet<Bytes>,
    /// Deliveries per body (each was FINished).
    pub received: HashMap<Bytes, u32>,
}

impl Ledger {
    pub fn missing(&self) -> Vec<&Bytes> {
        self.acked
            .iter()
            .filter(|b| !self.received.contains_key(*b))
            .collect()
    }

    pub fn duplicates(&self) -> u64 {
        self.received.values().map(|n| u64::from(n - 1)).sum()
    }
}

pub type Shared = Arc<Mutex<Ledger>>;

fn encode(cmd: &Command) -> BytesMut {
    let mut out = BytesMut::new();
    cmd.encode(&mut out);
    out
}

/// Publish to `addr` until `stop`, `limit` messages, or the connection
/// breaks: PUB and MPUB of 10 in turn (`mpub_only`: MPUB of 100), one
/// command in flight; each OK puts its bodies on the ledger.
pub async fn publisher(
    addr: SocketAddr,
    name: String,
    limit: usize,
    mpub_only: bool,
    ledger: Shared,
    stop: Arc<AtomicBool>,
) -> usize {
    let mut conn = RawConn::connect(addr).await;
    let mut sent = 0usize;
    for seq in 0u64.. {
        if sent >= limit || stop.load(Ordering::Relaxed) {
            break;
        }
        let body = |k: u64| Bytes::from(format!("{name}-{seq}-{k}"));
        let bodies: Vec<Bytes> = match (mpub_only, seq % 2) {
            (true, _) => (0..100).map(body).collect(),
            (false, 0) => vec![body(0)],
            (false, _) => (0..10).map(body).collect(),
        };
        let cmd = if bodies.len() == 1 {
            Command::Pub {
                topic: topic(TOPIC),
                body: bodies[0].clone(),
            }
        } else {
            Command::Mpub {
                topic: topic(TOPIC),
                bodies: bodies.clone().into(),
            }
        };
        if conn.try_write_raw(&encode(&cmd)).await.is_err() {
            break;
        }
        match conn.try_read_frame(Duration::from_secs(10)).await {
            Ok(Frame::Response(r)) if &r[..] == b"OK" => {
                sent += bodies.len();
                ledger.lock().unwrap().acked.extend(bodies);
            }
            // Refused or unanswered: not acknowledged, so not owed.
            _ => break,
        }
    }
    sent
}

/// One consumer connection: RDY, record and FIN every message, until the
/// connection breaks or `stop`.
async fn consume(addr: SocketAddr, ledger: Shared, stop: Arc<AtomicBool>, slow: Arc<AtomicBool>) {
    let Ok(Ok(stream)) =
        tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await
    else {
        return;
    };
    drop(stream);
    let mut c = RawConn::connect(addr).await;
    let sub = Command::Sub {
        topic: topic(TOPIC),
        channel: channel(CHANNEL),
    };
    if c.try_write_raw(&encode(&sub)).await.is_err() {
        return;
    }
    if !matches!(c.try_read_frame(Duration::from_secs(5)).await, Ok(Frame::Response(r)) if &r[..] == b"OK")
    {
        return;
    }
    if c.try_write_raw(&encode(&Command::Rdy(RDY))).await.is_err() {
        return;
    }
    while !stop.load(Ordering::Relaxed) {
        let reply = match c.try_read_frame(Duration::from_millis(500)).await {
            Ok(Frame::Message(m)) => {
                if slow.load(Ordering::Relaxed) {
                    // A consumer slower than the publishers: a backlog builds.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                *ledger
                    .lock()
                    .unwrap()
                    .received
                    .entry(m.body.clone())
                    .or_default() += 1;
                Command::Fin(m.id)
            }
            Ok(Frame::Response(r)) if &r[..] == b"_heartbeat_" => Command::Nop,
            Err(nsq_test_support::ReadError::Timeout) => continue,
            _ => return,
        };
        if c.try_write_raw(&encode(&reply)).await.is_err() {
            return;
        }
    }
}

/// Consumers that find nodes for the topic through lookupd (as clients do)
/// and keep one connection to each, reconnecting when a node comes back.
/// While `slow` is set they take 5 ms per message.
pub fn consumers(
    lookupd_http: SocketAddr,
    ledger: Shared,
    stop: Arc<AtomicBool>,
    slow: Arc<AtomicBool>,
) {
    tokio::spawn(async move {
        let live: Arc<Mutex<HashSet<SocketAddr>>> = Default::default();
        while !stop.load(Ordering::Relaxed) {
            let found = tokio::task::spawn_blocking(move || {
                http_get(lookupd_http, &format!("/lookup?topic={TOPIC}"))
            })
            .await;
            if let Ok(Ok(r)) = found {
                let v = r.json();
                for p in v["producers"].as_array().into_iter().flatten() {
                    let addr = format!(
                        "{}:{}",
                        p["broadcast_address"].as_str().unwrap_or(""),
                        p["tcp_port"]
                    );
                    let Ok(addr) = addr.parse::<SocketAddr>() else {
                        continue;
                    };
                    if live.lock().unwrap().insert(addr) {
                        let (l, s, live) = (ledger.clone(), stop.clone(), live.clone());
                        let slow = slow.clone();
                        tokio::spawn(async move {
                            consume(addr, l, s, slow).await;
                            live.lock().unwrap().remove(&addr);
                        });
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

/// Wait until every acknowledged message was delivered.
pub async fn wait_all_delivered(ledger: &Shared, limit: Duration) -> Result<(), String> {
    wait_until(limit, "every acknowledged message delivered", || {
        let l = ledger.lock().unwrap();
        let missing = l.missing();
        if missing.is_empty() {
            Ok(())
        } else {
            let sample: Vec<_> = missing.iter().take(3).collect();
            Err(format!(
                "{} of {} missing, e.g. {sample:?}",
                missing.len(),
                l.acked.len()
            ))
        }
    })
    .await
}

/// An nftables table dropping everything between two addresses, removed
/// when dropped (and at creation, in case a crashed run left it).
pub struct Partition {
    table: String,
}

fn nft(args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new("nft")
        .args(args)
        .output()
        .map_err(|e| {
            format!("cannot run nft ({e}); install it with scripts/test-deps/nftables.sh")
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl Partition {
    pub fn cut(a: &str, b: &str, net: u8) -> Partition {
        let table = format!("nsq_repl_test_{net}");
        let _ = nft(&["delete", "table", "inet", &table]);
        let rules = format!(
            "table inet {table} {{\n chain input {{\n  type filter hook input priority -10;\n  \
             ip saddr {a} ip daddr {b} drop\n  ip saddr {b} ip daddr {a} drop\n }}\n}}\n"
        );
        let fed = (|| {
            use std::io::Write;
            let mut child = std::process::Command::new("nft")
                .args(["-f", "-"])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .map_err(|e| {
                    format!("cannot run nft ({e}); install it with scripts/test-deps/nftables.sh")
                })?;
            let mut stdin = child.stdin.take().ok_or("no stdin")?;
            stdin
                .write_all(rules.as_bytes())
                .map_err(|e| e.to_string())?;
            drop(stdin);
            match child.wait() {
                Ok(s) if s.success() => Ok(()),
                other => Err(format!("nft -f - failed: {other:?}")),
            }
        })();
        if let Err(e) = fed {
            panic!("cannot create the partition (needs root and nftables): {e}");
        }
        Partition { table }
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        let _ = nft(&["delete", "table", "inet", &self.table]);
    }
}

/// Resident memory of process `pid` (`/proc/PID/statm`, 4 KiB pages).
pub fn resident_bytes(pid: u32) -> u64 {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).expect("statm");
    let pages: u64 = statm
        .split(' ')
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("resident pages");
    pages * 4096
}

/// A peer's spill files (`~replica~...`) in `dir`.
pub fn spill_files(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("~replica~"))
        .collect()
}

/// Publish `n` unique bodies of `body` bytes to `node` in MPUBs of 50,
/// each acknowledged before the next; every one goes on the ledger.
pub async fn mpub_sized(node: &Node, prefix: &str, n: usize, body: usize, ledger: &Shared) {
    let mut conn = RawConn::connect(node.tcp_addr()).await;
    for batch in 0..n.div_ceil(50) {
        let bodies: Vec<Bytes> = (0..50.min(n - batch * 50))
            .map(|k| {
                let mut b = format!("{prefix}-{batch}-{k}-").into_bytes();
                b.resize(body.max(b.len()), b'.');
                Bytes::from(b)
            })
            .collect();
        let mpub = Command::Mpub {
            topic: topic(TOPIC),
            bodies: bodies.clone().into(),
        };
        conn.write_raw(&encode(&mpub)).await;
        match conn.read_frame().await {
            Frame::Response(r) if &r[..] == b"OK" => {}
            other => node.fail(&format!("MPUB {batch}: {other:?}")),
        }
        ledger.lock().unwrap().acked.extend(bodies);
    }
}

/// Subscribe to `node`'s channel and FIN the first `n` messages it
/// delivers (on the ledger); the connection, still subscribed.
pub async fn finish_on(node: &Node, n: usize, ledger: &Shared) -> RawConn {
    let mut c = RawConn::connect(node.tcp_addr()).await;
    let sub = Command::Sub {
        topic: topic(TOPIC),
        channel: channel(CHANNEL),
    };
    c.write_raw(&encode(&sub)).await;
    c.write_raw(&encode(&Command::Rdy(RDY))).await;
    let mut got = 0;
    while got < n {
        match c.read_frame().await {
            Frame::Message(m) => {
                got += 1;
                *ledger.lock().unwrap().received.entry(m.body).or_default() += 1;
                c.write_raw(&encode(&Command::Fin(m.id))).await;
            }
            Frame::Response(_) => {}
            other => node.fail(&format!("consumer of {}: {other:?}", node.ip)),
        }
    }
    c
}

impl Node {
    /// `/stats` of this node: records sent to its peer and not yet
    /// acknowledged.
    pub fn lag(&self) -> Result<u64, String> {
        let r = http_get(self.http_addr(), "/stats?format=json").map_err(|e| e.to_string())?;
        r.json()["replicas"][0]["lag_messages"]
            .as_u64()
            .ok_or_else(|| "no lag_messages".to_string())
    }

    /// Wait until this node's peer holds `n` of its messages.
    pub async fn wait_holds(&self, peer: &Node, n: u64, limit: Duration) {
        let what = format!("{} holds {n} of {}'s messages", peer.ip, self.ip);
        peer.wait_for(limit, &what, || match peer.replica() {
            Ok((_, d, _)) if d == n => Ok(()),
            other => Err(format!("{other:?}")),
        })
        .await;
    }
}

/// Publish `n` bodies of `body` bytes to A (see [`mpub_sized`]), wait
/// until B holds them all, and check that B's resident memory grew by less
/// than `1/fraction` of what was published (its copy went to disk).
/// Returns the bytes published.
pub async fn fill_past_memory(
    pair: &Pair,
    prefix: &str,
    n: usize,
    body: usize,
    ledger: &Shared,
    fraction: u64,
) -> u64 {
    let before = resident_bytes(pair.b.d().pid());
    mpub_sized(&pair.a, prefix, n, body, ledger).await;
    pair.a
        .wait_holds(&pair.b, n as u64, Duration::from_secs(30))
        .await;
    let grown = resident_bytes(pair.b.d().pid()).saturating_sub(before);
    let published = (n * body) as u64;
    eprintln!("B grew by {grown} bytes holding {published}");
    assert!(
        grown < published / fraction,
        "B grew by {grown} bytes holding {published} bytes of A's"
    );
    published
}

/// B takes A's messages over now (`POST /replica/takeover`), `left` of them.
pub fn take_over_now(pair: &Pair, left: u64) {
    let peer = pair.a.repl_addr();
    let r = pair
        .b
        .d()
        .http_post(&format!("/replica/takeover?peer={peer}"), b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["taken_over"], left);
}

/// Consume from B until every acknowledged message was delivered and its
/// channel is empty; exactly `n` bodies, none twice.
pub async fn b_delivers_exactly(pair: &Pair, ledger: &Shared, n: usize, limit: Duration) {
    pair.consume_all(ledger, &pair.b, limit, &pair.b).await;
    let l = ledger.lock().unwrap();
    assert_eq!(l.received.len(), n, "deliveries of unknown bodies");
    assert_eq!(l.duplicates(), 0, "finished or spilled ones twice");
}
