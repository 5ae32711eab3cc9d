//! In-process tests of protocol V2 with golden wire bytes: a real `Server` on
//! port 0, a raw TCP client, and the exact frames upstream sends.

use std::time::Duration;

use nsq_protocol::{Command, MessageId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use nsq_test_support::in_process::{self, start, Nsqd};

const WAIT: Duration = Duration::from_secs(10);

struct Conn(TcpStream);

impl Conn {
    async fn open(nsqd: &Nsqd) -> Conn {
        let mut s = TcpStream::connect(nsqd.tcp).await.unwrap();
        s.write_all(b"  V2").await.unwrap();
        Conn(s)
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.0.write_all(bytes).await.unwrap();
    }

    /// Send `bytes` and expect `OK` back.
    async fn send_ok(&mut self, bytes: &[u8]) {
        self.send(bytes).await;
        self.expect_ok().await;
    }

    async fn cmd(&mut self, c: Command) {
        let mut b = bytes::BytesMut::new();
        c.encode(&mut b);
        self.send(&b).await;
    }

    async fn identify(&mut self, json: &str) {
        let mut b = b"IDENTIFY\n".to_vec();
        b.extend_from_slice(&(json.len() as u32).to_be_bytes());
        b.extend_from_slice(json.as_bytes());
        self.send(&b).await;
    }

    /// One whole frame, header included, exactly as received.
    async fn raw_frame(&mut self) -> Vec<u8> {
        let mut head = [0u8; 4];
        timeout(WAIT, self.0.read_exact(&mut head))
            .await
            .expect("frame in time")
            .expect("connection open");
        let size = u32::from_be_bytes(head) as usize;
        let mut rest = vec![0u8; size];
        timeout(WAIT, self.0.read_exact(&mut rest))
            .await
            .unwrap()
            .unwrap();
        let mut all = head.to_vec();
        all.extend(rest);
        all
    }

    /// Frame type and data.
    async fn frame(&mut self) -> (u32, Vec<u8>) {
        let f = self.raw_frame().await;
        (
            u32::from_be_bytes([f[4], f[5], f[6], f[7]]),
            f[8..].to_vec(),
        )
    }

    async fn expect(&mut self, frame_type: u32, data: &str) {
        let (t, d) = self.frame().await;
        assert_eq!(
            (t, String::from_utf8_lossy(&d).to_string()),
            (frame_type, data.to_string())
        );
    }

    async fn expect_ok(&mut self) {
        self.expect(0, "OK").await;
    }

    /// The server closed the connection (after any frames already read).
    async fn expect_closed(&mut self) {
        let mut b = [0u8; 64];
        let n = timeout(WAIT, self.0.read(&mut b))
            .await
            .expect("closed in time")
            .unwrap_or(0);
        assert_eq!(n, 0, "expected EOF, got {:?}", &b[..n]);
    }

    /// Nothing arrives for a short while (commands with no reply).
    async fn expect_silence(&mut self) {
        let mut b = [0u8; 64];
        assert!(timeout(Duration::from_millis(200), self.0.read(&mut b))
            .await
            .is_err());
    }
}

fn frame_bytes(frame_type: u32, data: &[u8]) -> Vec<u8> {
    let mut v = ((data.len() + 4) as u32).to_be_bytes().to_vec();
    v.extend_from_slice(&frame_type.to_be_bytes());
    v.extend_from_slice(data);
    v
}

async fn fatal(nsqd: &Nsqd, setup: &[&[u8]], want: &str) {
    let mut c = Conn::open(nsqd).await;
    for s in setup {
        c.send(s).await;
    }
    // Setup commands may earn an OK (SUB) before the error arrives.
    let (t, d) = loop {
        let (t, d) = c.frame().await;
        if (t, d.as_slice()) != (0, &b"OK"[..]) {
            break (t, d);
        }
    };
    assert_eq!(
        (t, String::from_utf8_lossy(&d).to_string()),
        (1, want.to_string())
    );
    c.expect_closed().await;
}

#[in_process::test]
async fn bad_magic_gets_e_bad_protocol() {
    let n = start(&[]).await;
    let mut s = TcpStream::connect(n.tcp).await.unwrap();
    s.write_all(b"  V1").await.unwrap();
    let mut got = Vec::new();
    timeout(WAIT, s.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, frame_bytes(1, b"E_BAD_PROTOCOL"));
}

#[in_process::test]
async fn identify_plain_and_negotiated() {
    let n = start(&["--max-rdy-count=200"]).await;
    let mut c = Conn::open(&n).await;
    c.identify(r#"{"client_id":"x"}"#).await;
    assert_eq!(c.raw_frame().await, frame_bytes(0, b"OK"));

    let mut c = Conn::open(&n).await;
    c.identify(r#"{"feature_negotiation":true,"msg_timeout":5000,"output_buffer_size":-1,"sample_rate":7}"#)
        .await;
    c.expect(
        0,
        r#"{"max_rdy_count":200,"version":"1.3.0","max_msg_timeout":900000,"msg_timeout":5000,"tls_v1":false,"deflate":false,"deflate_level":6,"max_deflate_level":6,"snappy":false,"sample_rate":7,"auth_required":false,"output_buffer_size":1,"output_buffer_timeout":0}"#,
    )
    .await;
}

#[in_process::test]
async fn identify_errors_are_upstreams() {
    let n = start(&[]).await;
    for (json, want) in [
        (
            r#"{"heartbeat_interval":100}"#,
            "E_BAD_BODY IDENTIFY heartbeat interval (100) is invalid",
        ),
        (
            r#"{"heartbeat_interval":60001}"#,
            "E_BAD_BODY IDENTIFY heartbeat interval (60001) is invalid",
        ),
        (
            r#"{"output_buffer_timeout":10}"#,
            "E_BAD_BODY IDENTIFY output buffer timeout (10) is invalid",
        ),
        (
            r#"{"output_buffer_size":63}"#,
            "E_BAD_BODY IDENTIFY output buffer size (63) is invalid",
        ),
        (
            r#"{"sample_rate":100}"#,
            "E_BAD_BODY IDENTIFY sample rate (100) is invalid",
        ),
        (
            r#"{"msg_timeout":999}"#,
            "E_BAD_BODY IDENTIFY msg timeout (999) is invalid",
        ),
        // Validation order: heartbeat first.
        (
            r#"{"msg_timeout":1,"heartbeat_interval":5}"#,
            "E_BAD_BODY IDENTIFY heartbeat interval (5) is invalid",
        ),
        ("{nope", "E_BAD_BODY IDENTIFY failed to decode JSON body"),
    ] {
        let mut c = Conn::open(&n).await;
        c.identify(json).await;
        c.expect(1, want).await;
        c.expect_closed().await;
    }
    // IDENTIFY once subscribed.
    fatal(
        &n,
        &[b"SUB t c\n", b"IDENTIFY\n\x00\x00\x00\x02{}"],
        "E_INVALID cannot IDENTIFY in current state",
    )
    .await;
}

#[in_process::test]
async fn subscribe_deliver_finish() {
    let n = start(&[]).await;
    let mut p = Conn::open(&n).await;
    p.send_ok(b"PUB t\n\x00\x00\x00\x05hello").await;

    let mut c = Conn::open(&n).await;
    c.send(b"SUB t c\n").await;
    assert_eq!(c.raw_frame().await, frame_bytes(0, b"OK"));
    c.send(b"RDY 1\n").await;
    let (t, data) = c.frame().await;
    assert_eq!(t, 2);
    assert_eq!(data.len(), 26 + 5);
    assert_eq!(&data[8..10], &[0, 1], "first delivery has attempts 1");
    let id = &data[10..26];
    assert!(id
        .iter()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert_eq!(&data[26..], b"hello");
    let ts = i64::from_be_bytes(data[..8].try_into().unwrap());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    assert!(
        ts <= now && now - ts < 60_000_000_000,
        "timestamp is publish time in ns"
    );

    let mut fin = b"FIN ".to_vec();
    fin.extend_from_slice(id);
    fin.push(b'\n');
    c.send(&fin).await;
    c.expect_silence().await;
    // A second FIN is the one kind of error that keeps the connection.
    c.send(&fin).await;
    c.expect(
        1,
        &format!(
            "E_FIN_FAILED FIN {} failed ID not in flight",
            String::from_utf8_lossy(id)
        ),
    )
    .await;
    c.send(b"NOP\n").await;
    c.send_ok(b"PUB t\n\x00\x00\x00\x01x").await;
    // Subscribed connections may publish; the new message comes back to us.
    let (t, data) = c.frame().await;
    assert_eq!((t, &data[26..]), (2, &b"x"[..]));
}

#[in_process::test]
async fn req_and_touch_replies() {
    let n = start(&[]).await;
    let mut c = Conn::open(&n).await;
    c.send_ok(b"SUB t c\n").await;
    c.send_ok(b"PUB t\n\x00\x00\x00\x01a").await;
    c.send(b"RDY 1\n").await;
    let (_, data) = c.frame().await;
    let id = MessageId::from_slice(&data[10..26]).unwrap();
    c.cmd(Command::Touch(id)).await;
    c.expect_silence().await;
    c.cmd(Command::Req { id, timeout_ms: 0 }).await;
    // Requeued at once: redelivered with attempts 2.
    let (t, again) = c.frame().await;
    assert_eq!(
        (t, &again[8..10], &again[10..26]),
        (2, &[0u8, 2][..], &data[10..26])
    );
    let bogus = MessageId(*b"0000000000000000");
    c.cmd(Command::Req {
        id: bogus,
        timeout_ms: 10,
    })
    .await;
    c.expect(
        1,
        "E_REQ_FAILED REQ 0000000000000000 failed ID not in flight",
    )
    .await;
    c.cmd(Command::Touch(bogus)).await;
    c.expect(
        1,
        "E_TOUCH_FAILED TOUCH 0000000000000000 failed ID not in flight",
    )
    .await;
    c.send(b"FIN 0123456789ABCDEF\n").await;
    c.expect(
        1,
        "E_FIN_FAILED FIN 0123456789ABCDEF failed ID not in flight",
    )
    .await;
    fatal(
        &n,
        &[b"SUB t c2\n", b"REQ 0123 1\n"],
        "E_INVALID invalid message ID",
    )
    .await;
}

#[in_process::test]
async fn another_clients_message_is_not_ours() {
    let n = start(&[]).await;
    let mut a = Conn::open(&n).await;
    a.send_ok(b"SUB t c\nRDY 1\n").await;
    let mut b = Conn::open(&n).await;
    b.send_ok(b"SUB t c\n").await;
    b.send_ok(b"PUB t\n\x00\x00\x00\x01a").await;
    let (_, data) = a.frame().await;
    let id = String::from_utf8_lossy(&data[10..26]).to_string();
    b.send(format!("FIN {id}\n").as_bytes()).await;
    b.expect(
        1,
        &format!("E_FIN_FAILED FIN {id} failed client does not own message"),
    )
    .await;
}

#[in_process::test]
async fn state_errors() {
    let n = start(&[]).await;
    fatal(&n, &[b"RDY 1\n"], "E_INVALID cannot RDY in current state").await;
    fatal(
        &n,
        &[b"FIN 0123456789abcdef\n"],
        "E_INVALID cannot FIN in current state",
    )
    .await;
    fatal(
        &n,
        &[b"REQ 0123456789abcdef 0\n"],
        "E_INVALID cannot REQ in current state",
    )
    .await;
    fatal(
        &n,
        &[b"TOUCH 0123456789abcdef\n"],
        "E_INVALID cannot TOUCH in current state",
    )
    .await;
    fatal(&n, &[b"CLS\n"], "E_INVALID cannot CLS in current state").await;
    fatal(
        &n,
        &[b"SUB t c\n", b"SUB t c\n"],
        "E_INVALID cannot SUB in current state",
    )
    .await;
    fatal(
        &n,
        &[b"SUB t c\n", b"RDY 2501\n"],
        "E_INVALID RDY count 2501 out of range 0-2500",
    )
    .await;
    fatal(
        &n,
        &[b"AUTH\n\x00\x00\x00\x01s"],
        "E_AUTH_DISABLED AUTH disabled",
    )
    .await;
    fatal(&n, &[b"HELLO\n"], "E_INVALID invalid command HELLO").await;
    fatal(
        &n,
        &[
            b"IDENTIFY\n\x00\x00\x00\x19{\"heartbeat_interval\":-1}",
            b"SUB t c\n",
        ],
        "E_INVALID cannot SUB with heartbeats disabled",
    )
    .await;
    fatal(
        &n,
        &[b"PUB t\n\x00\x00\x00\x00"],
        "E_BAD_MESSAGE PUB invalid message body size 0",
    )
    .await;
}

/// Texts and answers checked against upstream 1.3.0's binary: a client's
/// state is checked before its command's parameters; RDY prints its count
/// as Go's int64 does; a short MPUB names the part that is missing.
#[in_process::test]
async fn upstream_order_and_texts_for_odd_commands() {
    let n = start(&[]).await;
    // Go decodes `null` into nothing and invalid UTF-8 into U+FFFD.
    for body in [&b"null"[..], b"{\"client_id\":\"\xff\xfe\"}"] {
        let mut c = Conn::open(&n).await;
        let mut cmd = b"IDENTIFY\n".to_vec();
        cmd.extend_from_slice(&(body.len() as u32).to_be_bytes());
        cmd.extend_from_slice(body);
        c.send(&cmd).await;
        assert_eq!(c.raw_frame().await, frame_bytes(0, b"OK"));
    }
    for (line, verb) in [
        (&b"FIN\n"[..], "FIN"),
        (b"FIN abc\n", "FIN"),
        (b"REQ\n", "REQ"),
        (b"REQ 0123456789abcdef\n", "REQ"),
        (b"TOUCH\n", "TOUCH"),
        (b"RDY x\n", "RDY"),
    ] {
        fatal(
            &n,
            &[line],
            &format!("E_INVALID cannot {verb} in current state"),
        )
        .await;
    }
    fatal(
        &n,
        &[b"SUB t c\n", b"SUB t\n"],
        "E_INVALID cannot SUB in current state",
    )
    .await;
    fatal(
        &n,
        &[b"SUB t c\n", b"AUTH x\n"],
        "E_INVALID cannot AUTH in current state",
    )
    .await;
    fatal(
        &n,
        &[
            b"IDENTIFY\n\x00\x00\x00\x19{\"heartbeat_interval\":-1}",
            b"SUB t\n",
        ],
        "E_INVALID cannot SUB with heartbeats disabled",
    )
    .await;
    // After CLS, upstream ignores RDY, even one it could not parse.
    let mut c = Conn::open(&n).await;
    c.send_ok(b"SUB t c\nCLS\nRDY x\nNOP\nFIN\n").await;
    assert_eq!(c.raw_frame().await, frame_bytes(0, b"CLOSE_WAIT"));
    c.expect(1, "E_INVALID FIN insufficient number of params")
        .await;
    fatal(
        &n,
        &[b"SUB t c\n", b"RDY 18446744073709551615\n"],
        "E_INVALID RDY count -1 out of range 0-2500",
    )
    .await;
    fatal(
        &n,
        &[b"SUB t c\n", b"RDY 9223372036854775808\n"],
        "E_INVALID RDY count -9223372036854775808 out of range 0-2500",
    )
    .await;
    for (bytes, want) in [
        (
            &b"MPUB t\n\x00\x00\x00\x20\x00\x00"[..],
            "E_BAD_BODY MPUB failed to read message count",
        ),
        (
            b"MPUB t\n\x00\x00\x00\x20\x00\x00\x00\x02",
            "E_BAD_MESSAGE MPUB failed to read message(0) body size",
        ),
        (
            b"MPUB t\n\x00\x00\x00\x20\x00\x00\x00\x02\x00\x00",
            "E_BAD_MESSAGE MPUB failed to read message(0) body size",
        ),
        (
            b"MPUB t\n\x00\x00\x00\x20\x00\x00\x00\x02\x00\x00\x00\x05ab",
            "E_BAD_MESSAGE MPUB failed to read message body",
        ),
        (
            b"MPUB t\n\x00\x00\x00\x20\x00\x00\x00\x02\x00\x00\x00\x01a",
            "E_BAD_MESSAGE MPUB failed to read message(1) body size",
        ),
    ] {
        let mut c = Conn::open(&n).await;
        c.send(bytes).await;
        c.0.shutdown().await.unwrap();
        assert_eq!(c.raw_frame().await, frame_bytes(1, want.as_bytes()));
        c.expect_closed().await;
    }
    // 1.3.0 has no topology fields in its IDENTIFY answer.
    let mut c = Conn::open(&n).await;
    c.identify(r#"{"feature_negotiation":true}"#).await;
    c.expect(0, r#"{"max_rdy_count":2500,"version":"1.3.0","max_msg_timeout":900000,"msg_timeout":60000,"tls_v1":false,"deflate":false,"deflate_level":6,"max_deflate_level":6,"snappy":false,"sample_rate":0,"auth_required":false,"output_buffer_size":16384,"output_buffer_timeout":250}"#).await;
}

#[in_process::test]
async fn cls_replies_close_wait_and_ignores_later_rdy() {
    let n = start(&[]).await;
    let mut c = Conn::open(&n).await;
    c.send_ok(b"SUB t c\n").await;
    c.send(b"CLS\n").await;
    assert_eq!(c.raw_frame().await, frame_bytes(0, b"CLOSE_WAIT"));
    c.send_ok(b"RDY 5\nPUB t\n\x00\x00\x00\x01z").await;
    // RDY after CLS was ignored: the message is not delivered to us.
    c.expect_silence().await;
}

#[in_process::test]
async fn publishes_are_answered_in_order() {
    let n = start(&["--max-req-timeout=1h"]).await;
    let mut c = Conn::open(&n).await;
    let mut b = bytes::BytesMut::new();
    Command::Pub {
        topic: "t".parse().unwrap(),
        body: "a".into(),
    }
    .encode(&mut b);
    Command::Mpub {
        topic: "t".parse().unwrap(),
        bodies: vec!["b".into(), "c".into()].into(),
    }
    .encode(&mut b);
    Command::Dpub {
        topic: "t".parse().unwrap(),
        defer_ms: 100,
        body: "d".into(),
    }
    .encode(&mut b);
    b.extend_from_slice(b"DPUB t 3600001\n");
    c.send_ok(&b).await;
    c.expect_ok().await;
    c.expect_ok().await;
    c.expect(1, "E_INVALID DPUB timeout 3600001 out of range 0-3600000")
        .await;
    c.expect_closed().await;
}

/// Publishes arriving faster than one read takes are answered together
/// (nsqd reads what is already there before it writes), yet every one is
/// answered, in order, and so is a publish after the client paused.
#[in_process::test]
async fn a_stream_of_publishes_is_answered_whole() {
    let n = start(&[]).await;
    let mut c = Conn::open(&n).await;
    let mut b = bytes::BytesMut::new();
    for i in 0..40u8 {
        Command::Mpub {
            topic: "t".parse().unwrap(),
            bodies: vec![bytes::Bytes::from(vec![i; 200]); 50].into(),
        }
        .encode(&mut b);
    }
    b.extend_from_slice(b"MPUB t\n\x00\x00\x00\x04\x00\x00\x00\x00");
    c.send(&b).await;
    for _ in 0..40 {
        c.expect_ok().await;
    }
    c.expect(1, "E_BAD_BODY MPUB invalid message count 0").await;
    c.expect_closed().await;
    let mut c = Conn::open(&n).await;
    c.send_ok(b"PUB t\n\x00\x00\x00\x01x").await;
    let stats = n.inner.topic("t").unwrap().stats().0;
    assert_eq!(stats.message_count, 40 * 50 + 1);
}

#[in_process::test]
async fn heartbeats_are_sent_and_a_silent_client_is_dropped() {
    let n = start(&[]).await;
    let mut c = Conn::open(&n).await;
    c.identify(r#"{"heartbeat_interval":1000}"#).await;
    c.expect_ok().await;
    assert_eq!(c.raw_frame().await, frame_bytes(0, b"_heartbeat_"));
    // Two missed heartbeats: the server closes. Read until EOF.
    let mut rest = Vec::new();
    timeout(WAIT, c.0.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
}

/// The read deadline (two heartbeats) covers a whole command, as upstream's
/// does, not each read: a body trickled one byte at a time, each well inside
/// the deadline, is cut off with upstream's text once the command as a
/// whole has taken too long.
#[in_process::test]
async fn a_command_trickled_byte_by_byte_is_cut_off() {
    let n = start(&[]).await;
    let mut c = Conn::open(&n).await;
    c.identify(r#"{"heartbeat_interval":1000}"#).await;
    c.expect_ok().await;
    // 100 body bytes at one per 700 ms would take 70 s.
    c.send(b"PUB t\n\x00\x00\x00\x64").await;
    let (mut r, mut w) = c.0.split();
    let trickle = async {
        loop {
            tokio::time::sleep(Duration::from_millis(700)).await;
            if w.write_all(b"x").await.is_err() {
                return;
            }
        }
    };
    let mut received = Vec::new();
    tokio::select! {
        _ = trickle => {}
        got = timeout(WAIT, r.read_to_end(&mut received)) => {
            got.expect("the trickling client was cut off in time").unwrap();
        }
    }
    let heartbeat = frame_bytes(0, b"_heartbeat_");
    let mut rest = &received[..];
    while rest.starts_with(&heartbeat) {
        rest = &rest[heartbeat.len()..];
    }
    assert_eq!(
        rest,
        frame_bytes(1, b"E_BAD_MESSAGE PUB failed to read message body")
    );
}

#[in_process::test]
async fn a_line_past_16k_closes_without_an_error_frame() {
    let n = start(&[]).await;
    let mut c = Conn::open(&n).await;
    c.send(&vec![b'A'; 16 * 1024]).await;
    c.expect_closed().await;
}

/// Poll a condition on server state until it holds (see [`nsq_test_support::poll`]).
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    nsq_test_support::poll(what, || std::future::ready(cond().then_some(()))).await
}

#[in_process::test]
async fn a_consumer_that_stops_reading_is_cut_off() {
    let n = start(&["--mem-queue-size=100000"]).await;
    let mut c = Conn::open(&n).await;
    c.identify(r#"{"heartbeat_interval":1000}"#).await;
    c.expect_ok().await;
    c.send_ok(b"SUB t c\nRDY 2500\n").await;
    // 2500 messages of 64 KiB are far more than the socket buffers hold, so
    // the writer blocks; it must give up within a heartbeat interval.
    let mut p = Conn::open(&n).await;
    let body = bytes::Bytes::from(vec![b'x'; 64 * 1024]);
    for _ in 0..50 {
        p.cmd(Command::Mpub {
            topic: "t".parse().unwrap(),
            bodies: vec![body.clone(); 50].into(),
        })
        .await;
        p.expect_ok().await;
    }
    let client_id = n.inner.clients_snapshot()[0].id;
    eventually("the stalled consumer to be disconnected", || {
        n.inner
            .clients_snapshot()
            .iter()
            .all(|cl| cl.id != client_id)
    })
    .await;
    // Its in-flight messages went back to the channel.
    let ch = n.inner.topic("t").unwrap().channel("c").unwrap();
    eventually("in-flight messages to return", || {
        ch.stats().in_flight_count == 0
    })
    .await;
    assert_eq!(ch.stats().depth, 2500);
}

#[in_process::test]
async fn ephemeral_channel_and_topic_go_with_their_last_client() {
    let n = start(&[]).await;
    let mut c = Conn::open(&n).await;
    c.send_ok(b"SUB t#ephemeral c#ephemeral\n").await;
    let mut d = Conn::open(&n).await;
    d.send_ok(b"SUB durable c#ephemeral\n").await;
    assert!(n.inner.topic("t#ephemeral").is_some());
    drop(c);
    eventually("the ephemeral topic to go", || {
        n.inner.topic("t#ephemeral").is_none()
    })
    .await;
    drop(d);
    let topic = n.inner.topic("durable").unwrap();
    eventually("the ephemeral channel to go", || {
        topic.channel("c#ephemeral").is_none()
    })
    .await;
    // A durable topic stays without channels.
    assert!(n.inner.topic("durable").is_some());
}

#[in_process::test]
async fn batched_fins_answer_in_command_order() {
    let n = start(&[]).await;
    let mut c = Conn::open(&n).await;
    c.send_ok(b"SUB t c\n").await;
    let mut p = Conn::open(&n).await;
    p.cmd(Command::Mpub {
        topic: "t".parse().unwrap(),
        bodies: vec!["a".into(), "b".into()].into(),
    })
    .await;
    p.expect_ok().await;
    c.send(b"RDY 2\n").await;
    let (_, m1) = c.frame().await;
    let (_, m2) = c.frame().await;
    // One write: two good FINs around a bad one, then a PUB. The bad FIN's
    // error comes before the PUB's OK, and the good ones take effect.
    let mut w = Vec::new();
    for id in [&m1[10..26], b"00000000000000ff", &m2[10..26]] {
        w.extend_from_slice(b"FIN ");
        w.extend_from_slice(id);
        w.push(b'\n');
    }
    w.extend_from_slice(b"PUB u\n\x00\x00\x00\x01z");
    c.send(&w).await;
    c.expect(
        1,
        "E_FIN_FAILED FIN 00000000000000ff failed ID not in flight",
    )
    .await;
    c.expect_ok().await;
    let ch = n.inner.topic("t").unwrap().channel("c").unwrap();
    assert_eq!(ch.stats().in_flight_count, 0);
}
