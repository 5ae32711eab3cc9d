//! Protocol V1 over real TCP against an in-process nsqlookupd: the
//! handshake, every command, upstream's error texts, and that one client's
//! mistake never affects the others.

use std::time::Duration;

use nsq_test_support::in_process;
use nsq_test_support::in_process::{http, start_lookupd};
use nsq_test_support::poll;
use nsq_test_support::raw_lookup::{identify_body, identify_cmd, RawLookupConn};
use nsqlookupd::Options;
use serde_json::json;

#[in_process::test]
async fn bad_magic_gets_e_bad_protocol_and_close() {
    let lookupd = start_lookupd(Options::for_tests()).await;
    let mut c = RawLookupConn::connect_without_magic(lookupd.tcp_addr()).await;
    c.write_raw(b"  V2").await;
    assert_eq!(c.read_reply().await, "E_BAD_PROTOCOL");
    c.expect_closed().await;
}

#[in_process::test]
async fn identify_reply_describes_this_lookupd() {
    let lookupd = start_lookupd(Options::for_tests()).await;
    let mut c = RawLookupConn::connect(lookupd.tcp_addr()).await;
    let body = identify_body(4150, 4151);
    c.write_raw(&identify_cmd(&body)).await;
    let raw = c.read_reply().await;
    // Keys sorted as Go's map encoding does; the ports are the bound ones.
    let expected = format!(
        r#"{{"broadcast_address":"127.0.0.1","hostname":"{}","http_port":{},"tcp_port":{},"version":"1.3.0"}}"#,
        nsq_app::os_hostname(),
        lookupd.http_addr().port(),
        lookupd.tcp_addr().port()
    );
    assert_eq!(raw, expected);
    assert_eq!(c.command(b"PING\n").await, "OK");
}

#[in_process::test]
async fn register_unregister_and_disconnect() {
    let lookupd = start_lookupd(Options::for_tests()).await;
    let mut c = RawLookupConn::identified(lookupd.tcp_addr(), 24150, 24151).await;
    let me = c.local_addr();
    assert_eq!(c.command(b"REGISTER X c1\n").await, "OK");
    assert_eq!(c.command(b"REGISTER X eph#ephemeral\n").await, "OK");
    assert_eq!(c.command(b"REGISTER Y\n").await, "OK");

    let lookup = http(&lookupd, "GET", "/lookup?topic=X", b"").await.json();
    assert_eq!(lookup["channels"], json!(["c1", "eph#ephemeral"]));
    assert_eq!(
        lookup["producers"],
        json!([{
            "remote_address": me,
            "hostname": "vm",
            "broadcast_address": "127.0.0.1",
            "tcp_port": 24150,
            "http_port": 24151,
            "version": "1.3.0"
        }])
    );
    let topics = http(&lookupd, "GET", "/topics", b"").await.json();
    assert_eq!(topics, json!({"topics": ["X", "Y"]}));

    // The ephemeral channel goes with its last producer; c1 stays.
    assert_eq!(c.command(b"UNREGISTER X eph#ephemeral\n").await, "OK");
    assert_eq!(c.command(b"UNREGISTER X c1\n").await, "OK");
    let channels = http(&lookupd, "GET", "/channels?topic=X", b"").await.json();
    assert_eq!(channels, json!({"channels": ["c1"]}));
    // Unregistering the topic drops this producer from it.
    assert_eq!(c.command(b"UNREGISTER X\n").await, "OK");
    let lookup = http(&lookupd, "GET", "/lookup?topic=X", b"").await.json();
    assert_eq!(lookup["producers"], json!([]));

    // Closing the connection removes the producer everywhere, keys stay.
    drop(c);
    poll("the producer to go with its connection", || async {
        let nodes = http(&lookupd, "GET", "/nodes", b"").await.json();
        (nodes["producers"] == json!([])).then_some(())
    })
    .await;
    let lookup = http(&lookupd, "GET", "/lookup?topic=Y", b"").await.json();
    assert_eq!(lookup, json!({"channels": [], "producers": []}));
    let topics = http(&lookupd, "GET", "/topics", b"").await.json();
    assert_eq!(topics, json!({"topics": ["X", "Y"]}));
}

#[in_process::test]
async fn pipelined_commands_are_answered_in_order() {
    let lookupd = start_lookupd(Options::for_tests()).await;
    let mut c = RawLookupConn::connect(lookupd.tcp_addr()).await;
    let mut batch = b"PING\n".to_vec();
    batch.extend_from_slice(&identify_cmd(&identify_body(1, 2)));
    batch.extend_from_slice(b"REGISTER a b\nUNREGISTER a b\r\nPING\n");
    c.write_raw(&batch).await;
    assert_eq!(c.read_reply().await, "OK");
    assert!(c.read_reply().await.starts_with("{\"broadcast_address\""));
    for _ in 0..3 {
        assert_eq!(c.read_reply().await, "OK");
    }
}

/// Each malformed input gets upstream's exact error and the connection is
/// closed, while a well-behaved client on the same lookupd keeps working.
#[in_process::test]
async fn malformed_commands_get_upstream_errors() {
    let lookupd = start_lookupd(Options::for_tests()).await;
    let mut good = RawLookupConn::identified(lookupd.tcp_addr(), 4150, 4151).await;

    let ident = identify_cmd(&identify_body(4150, 4151));
    let cases: Vec<(Vec<u8>, Vec<u8>, &str)> = vec![
        (vec![], b"FOO\n".to_vec(), "E_INVALID invalid command FOO"),
        (vec![], b"\n".to_vec(), "E_INVALID invalid command "),
        (
            vec![],
            b"register t\n".to_vec(),
            "E_INVALID invalid command register",
        ),
        (
            vec![],
            b"REGISTER t\n".to_vec(),
            "E_INVALID client must IDENTIFY",
        ),
        (
            vec![],
            b"UNREGISTER t c\n".to_vec(),
            "E_INVALID client must IDENTIFY",
        ),
        (
            ident.clone(),
            ident.clone(),
            "E_INVALID cannot IDENTIFY again",
        ),
        (
            ident.clone(),
            b"REGISTER\n".to_vec(),
            "E_INVALID REGISTER insufficient number of params",
        ),
        (
            ident.clone(),
            b"UNREGISTER\n".to_vec(),
            "E_INVALID UNREGISTER insufficient number of params",
        ),
        (
            ident.clone(),
            b"REGISTER bad*topic\n".to_vec(),
            "E_BAD_TOPIC REGISTER topic name 'bad*topic' is not valid",
        ),
        (
            ident.clone(),
            b"UNREGISTER t bad*chan\n".to_vec(),
            "E_BAD_CHANNEL UNREGISTER channel name 'bad*chan' is not valid",
        ),
        (
            vec![],
            identify_cmd(b"{not json"),
            "E_BAD_BODY IDENTIFY failed to decode JSON body",
        ),
        (
            vec![],
            identify_cmd(br#"{"tcp_port":"4150"}"#),
            "E_BAD_BODY IDENTIFY failed to decode JSON body",
        ),
        (
            vec![],
            identify_cmd(br#"{"version":"1.3.0","tcp_port":1,"http_port":2}"#),
            "E_BAD_BODY IDENTIFY missing fields",
        ),
        (
            vec![],
            b"IDENTIFY\n\xff\xff\xff\xff".to_vec(),
            "E_BAD_BODY IDENTIFY invalid body size -1",
        ),
    ];
    for (setup, input, want) in cases {
        let mut c = RawLookupConn::connect(lookupd.tcp_addr()).await;
        if !setup.is_empty() {
            c.write_raw(&setup).await;
            c.read_reply().await;
        }
        c.write_raw(&input).await;
        assert_eq!(c.read_reply().await, want, "input {input:?}");
        c.expect_closed().await;
        // The other client is unaffected.
        assert_eq!(good.command(b"PING\n").await, "OK");
    }
    assert_eq!(good.command(b"REGISTER still.here\n").await, "OK");
}

#[in_process::test]
async fn eof_inside_identify_is_answered() {
    let lookupd = start_lookupd(Options::for_tests()).await;
    let mut c = RawLookupConn::connect(lookupd.tcp_addr()).await;
    c.write_raw(b"IDENTIFY\n\x00\x00\x00\x10{\"ver").await;
    c.shutdown_write().await;
    assert_eq!(
        c.read_reply().await,
        "E_BAD_BODY IDENTIFY failed to read body"
    );
    c.expect_closed().await;
}

#[in_process::test]
async fn over_long_line_closes_the_connection() {
    let lookupd = start_lookupd(Options::for_tests()).await;
    let mut c = RawLookupConn::connect(lookupd.tcp_addr()).await;
    c.write_raw(&vec![b'A'; 20 * 1024]).await;
    c.expect_closed().await;
}

#[in_process::test]
async fn silent_producers_become_inactive_until_they_ping() {
    let opts = Options {
        inactive_producer_timeout: Duration::from_secs(1).into(),
        ..Options::for_tests()
    };
    let lookupd = start_lookupd(opts).await;
    let mut c = RawLookupConn::identified(lookupd.tcp_addr(), 4150, 4151).await;
    c.command(b"REGISTER t\n").await;
    poll("the silent producer to become inactive", || async {
        let lookup = http(&lookupd, "GET", "/lookup?topic=t", b"").await.json();
        (lookup["producers"] == serde_json::json!([])).then_some(())
    })
    .await;
    // Inactive nodes are left out of /nodes too; the topic stays known.
    assert_eq!(
        http(&lookupd, "GET", "/nodes", b"").await.json()["producers"],
        json!([])
    );
    assert_eq!(c.command(b"PING\n").await, "OK");
    let lookup = http(&lookupd, "GET", "/lookup?topic=t", b"").await.json();
    assert_eq!(lookup["producers"].as_array().map(Vec::len), Some(1));
}

#[in_process::test]
async fn shutdown_closes_connections() {
    let lookupd = start_lookupd(Options::for_tests()).await;
    let mut c = RawLookupConn::identified(lookupd.tcp_addr(), 1, 2).await;
    lookupd.shutdown().await;
    c.expect_closed().await;
    // The connection's registrations went with it.
    assert!(lookupd.db().debug().is_empty());
    // Nothing listens any more.
    assert!(tokio::net::TcpStream::connect(lookupd.tcp_addr())
        .await
        .is_err());
}

/// What nsqd does, built only from `nsq_protocol::lookup`: encode the
/// commands, read replies with the bounded reply decoder, parse the
/// IDENTIFY reply. Proves the two sides of the crate agree with the server.
#[tokio::test]
async fn nsqd_side_types_round_trip_with_the_server() {
    use bytes::BytesMut;
    use nsq_protocol::lookup::{
        LookupCommand, LookupReply, LookupdInfo, PeerIdentity, ReplyDecoder,
    };

    async fn roundtrip(
        c: &mut RawLookupConn,
        cmd: &LookupCommand,
        rbuf: &mut BytesMut,
    ) -> LookupReply {
        let mut out = BytesMut::new();
        cmd.encode(&mut out);
        c.write_raw(&out).await;
        let decoder = ReplyDecoder::new(5 * 1024 * 1024);
        loop {
            if let Some(data) = decoder.decode(rbuf).expect("reply within bounds") {
                return LookupReply::classify(data);
            }
            let chunk = c.read_chunk().await;
            assert!(!chunk.is_empty(), "lookupd closed the connection");
            rbuf.extend_from_slice(&chunk);
        }
    }

    in_process::within(async {
        let lookupd = start_lookupd(Options::for_tests()).await;
        let mut c = RawLookupConn::connect(lookupd.tcp_addr()).await;
        let mut rbuf = BytesMut::new();
        let identity = PeerIdentity {
            broadcast_address: "nsqd.example".into(),
            hostname: "nsqd-host".into(),
            http_port: 4151,
            tcp_port: 4150,
            topology_region: Some(String::new()),
            topology_zone: Some(String::new()),
            version: "1.3.0".into(),
        };
        let LookupReply::Data(json) =
            roundtrip(&mut c, &LookupCommand::identify(&identity), &mut rbuf).await
        else {
            panic!("IDENTIFY answers with JSON");
        };
        let info = LookupdInfo::parse(&json).unwrap();
        assert_eq!(info.http_port, i64::from(lookupd.http_addr().port()));
        assert_eq!(info.broadcast_address, "127.0.0.1");

        let register = LookupCommand::Register {
            topic: "orders".parse().unwrap(),
            channel: Some("billing".parse().unwrap()),
        };
        assert_eq!(
            roundtrip(&mut c, &register, &mut rbuf).await,
            LookupReply::Ok
        );
        assert_eq!(
            roundtrip(&mut c, &LookupCommand::Ping, &mut rbuf).await,
            LookupReply::Ok
        );
        let lookup = http(&lookupd, "GET", "/lookup?topic=orders", b"")
            .await
            .json();
        assert_eq!(lookup["channels"], json!(["billing"]));
        assert_eq!(lookup["producers"][0]["broadcast_address"], "nsqd.example");
        assert_eq!(lookup["producers"][0]["hostname"], "nsqd-host");

        // A second IDENTIFY is an error reply nsqd can recognise.
        let again = roundtrip(&mut c, &LookupCommand::identify(&identity), &mut rbuf).await;
        assert_eq!(
            again,
            LookupReply::Error {
                code: "E_INVALID".into(),
                text: "cannot IDENTIFY again".into()
            }
        );
    })
    .await;
}
