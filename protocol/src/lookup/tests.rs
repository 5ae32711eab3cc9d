use super::*;

fn topic(s: &str) -> TopicName {
    s.parse().unwrap()
}

fn channel(s: &str) -> ChannelName {
    s.parse().unwrap()
}

fn encoded(cmd: &LookupCommand) -> Vec<u8> {
    let mut buf = BytesMut::new();
    cmd.encode(&mut buf);
    buf.to_vec()
}

fn identified() -> LookupDecoder {
    let mut d = LookupDecoder::new();
    d.set_identified();
    d
}

/// Decode everything in `bytes`, expecting exactly one command.
fn decode_one(d: &mut LookupDecoder, bytes: &[u8]) -> Result<LookupCommand, LookupDecodeError> {
    let mut buf = BytesMut::from(bytes);
    let cmd = d.decode(&mut buf)?.expect("a whole command");
    assert!(buf.is_empty(), "left over: {buf:?}");
    Ok(cmd)
}

fn decode_err(d: &mut LookupDecoder, bytes: &[u8]) -> String {
    let mut buf = BytesMut::from(bytes);
    match d.decode(&mut buf) {
        Err(LookupDecodeError::Protocol(e)) => String::from_utf8(e.to_wire()).unwrap(),
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

const IDENTITY_JSON: &[u8] = br#"{"broadcast_address":"h","hostname":"vm","http_port":4151,"tcp_port":4150,"version":"1.3.0"}"#;

fn identity() -> PeerIdentity {
    PeerIdentity {
        broadcast_address: "h".into(),
        hostname: "vm".into(),
        http_port: 4151,
        tcp_port: 4150,
        topology_region: None,
        topology_zone: None,
        version: "1.3.0".into(),
    }
}

#[test]
fn golden_commands() {
    assert_eq!(encoded(&LookupCommand::Ping), b"PING\n");
    let (t, c, eph) = (topic("t"), channel("c"), channel("c#ephemeral"));
    let register = |channel: Option<&ChannelName>| LookupCommand::Register {
        topic: t.clone(),
        channel: channel.cloned(),
    };
    let unregister = |channel: Option<&ChannelName>| LookupCommand::Unregister {
        topic: t.clone(),
        channel: channel.cloned(),
    };
    for (cmd, wire) in [
        (register(None), &b"REGISTER t\n"[..]),
        (register(Some(&eph)), b"REGISTER t c#ephemeral\n"),
        (unregister(None), b"UNREGISTER t\n"),
        (unregister(Some(&c)), b"UNREGISTER t c\n"),
    ] {
        assert_eq!(encoded(&cmd), wire, "{cmd:?}");
    }
    let mut want = b"IDENTIFY\n".to_vec();
    want.extend_from_slice(&(IDENTITY_JSON.len() as u32).to_be_bytes());
    want.extend_from_slice(IDENTITY_JSON);
    assert_eq!(encoded(&LookupCommand::identify(&identity())), want);
}

#[test]
fn golden_identity_json() {
    assert_eq!(identity().to_json(), IDENTITY_JSON);
    let with_topology = PeerIdentity {
        topology_region: Some(String::new()),
        topology_zone: Some("z".into()),
        ..identity()
    };
    assert_eq!(
        with_topology.to_json(),
        br#"{"broadcast_address":"h","hostname":"vm","http_port":4151,"tcp_port":4150,"topology_region":"","topology_zone":"z","version":"1.3.0"}"#
    );
    let info = LookupdInfo {
        broadcast_address: "lookupd".into(),
        hostname: "host".into(),
        http_port: 4161,
        tcp_port: 4160,
        version: "1.3.0".into(),
    };
    assert_eq!(
        info.to_json(),
        br#"{"broadcast_address":"lookupd","hostname":"host","http_port":4161,"tcp_port":4160,"version":"1.3.0"}"#
    );
    assert_eq!(LookupdInfo::parse(&info.to_json()).unwrap(), info);
    // nsqd only needs the address and ports; missing keys are zero.
    let partial = LookupdInfo::parse(br#"{"http_port":1,"extra":true}"#).unwrap();
    assert_eq!(partial.http_port, 1);
    assert_eq!(partial.broadcast_address, "");
}

#[test]
fn golden_replies() {
    let mut buf = BytesMut::new();
    encode_reply(&mut buf, OK);
    assert_eq!(&buf[..], b"\x00\x00\x00\x02OK");
    buf.clear();
    encode_reply(&mut buf, BAD_PROTOCOL);
    assert_eq!(&buf[..], b"\x00\x00\x00\x0eE_BAD_PROTOCOL");
    buf.clear();
    encode_error(&mut buf, &ProtocolError::invalid("invalid command FOO"));
    assert_eq!(&buf[..], b"\x00\x00\x00\x1dE_INVALID invalid command FOO");
}

#[test]
fn decode_round_trip_every_command() {
    let cmds = [
        LookupCommand::Ping,
        LookupCommand::identify(&identity()),
        LookupCommand::Register {
            topic: topic("t"),
            channel: None,
        },
        LookupCommand::Register {
            topic: topic("t"),
            channel: Some(channel("c")),
        },
        LookupCommand::Unregister {
            topic: topic("t"),
            channel: Some(channel("c")),
        },
        LookupCommand::Unregister {
            topic: topic("t"),
            channel: None,
        },
    ];
    let mut all = BytesMut::new();
    for c in &cmds {
        c.encode(&mut all);
    }
    // Feed one byte at a time: the decoder must resume wherever it stopped.
    let mut d = LookupDecoder::new();
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for &b in all.iter() {
        buf.put_u8(b);
        while let Some(cmd) = d.decode(&mut buf).unwrap() {
            if matches!(cmd, LookupCommand::Identify(_)) {
                d.set_identified();
            }
            got.push(cmd);
        }
    }
    assert_eq!(got, cmds);
    assert!(d.is_idle());
    assert!(buf.is_empty());
}

#[test]
fn lines_are_trimmed_like_go() {
    let mut d = identified();
    assert_eq!(
        decode_one(&mut d, b"PING\r\n").unwrap(),
        LookupCommand::Ping
    );
    assert_eq!(
        decode_one(&mut d, b" \tPING extra\x0b\n").unwrap(),
        LookupCommand::Ping
    );
    // U+00A0 (no-break space) is white space to Go's TrimSpace.
    assert_eq!(
        decode_one(&mut d, "REGISTER t\u{a0}\n".as_bytes()).unwrap(),
        LookupCommand::Register {
            topic: topic("t"),
            channel: None
        }
    );
    // Split on single spaces: a double space makes an empty channel,
    // which means "topic only"; extra params are ignored.
    assert_eq!(
        decode_one(&mut d, b"REGISTER t  c\n").unwrap(),
        LookupCommand::Register {
            topic: topic("t"),
            channel: None
        }
    );
    assert_eq!(
        decode_one(&mut d, b"UNREGISTER t c extra\n").unwrap(),
        LookupCommand::Unregister {
            topic: topic("t"),
            channel: Some(channel("c"))
        }
    );
    assert_eq!(trim_go_space(b"\xff x \xff"), b"\xff x \xff");
    assert_eq!(trim_go_space("\u{3000}x\u{2028}".as_bytes()), b"x");
    assert_eq!(trim_go_space(b" \n"), b"");
}

/// Upstream's error for each command sent before IDENTIFY; the IDENTIFY check comes before
/// name validation.
const BEFORE_IDENTIFY: &[(&str, &str)] = &[
    ("UNREGISTER bad!name\n", "E_INVALID client must IDENTIFY"),
    ("FOO bar\n", "E_INVALID invalid command FOO"),
    ("\n", "E_INVALID invalid command "),
];

/// Upstream's error for each command sent after IDENTIFY.
const AFTER_IDENTIFY: &[(&str, &str)] = &[
    ("IDENTIFY\n", "E_INVALID cannot IDENTIFY again"),
    (
        "REGISTER\n",
        "E_INVALID REGISTER insufficient number of params",
    ),
    (
        "UNREGISTER \n",
        "E_INVALID UNREGISTER insufficient number of params",
    ),
    (
        "REGISTER bad!topic c\n",
        "E_BAD_TOPIC REGISTER topic name 'bad!topic' is not valid",
    ),
    (
        "UNREGISTER  c\n",
        "E_BAD_TOPIC UNREGISTER topic name '' is not valid",
    ),
    (
        "REGISTER t bad/chan\n",
        "E_BAD_CHANNEL REGISTER channel name 'bad/chan' is not valid",
    ),
    (
        "UNREGISTER t bad/chan\n",
        "E_BAD_CHANNEL UNREGISTER channel name 'bad/chan' is not valid",
    ),
];

#[test]
fn upstream_error_texts() {
    let mut fresh = LookupDecoder::new();
    assert_eq!(
        decode_err(&mut fresh, b"REGISTER t c\n"),
        "E_INVALID client must IDENTIFY"
    );
    for (input, want) in BEFORE_IDENTIFY {
        let got = decode_err(&mut LookupDecoder::new(), input.as_bytes());
        assert_eq!(got, *want, "{input:?}");
    }
    for (input, want) in AFTER_IDENTIFY {
        assert_eq!(
            decode_err(&mut identified(), input.as_bytes()),
            *want,
            "{input:?}"
        );
    }
    // PING is allowed before IDENTIFY.
    assert_eq!(
        decode_one(&mut LookupDecoder::new(), b"PING\n").unwrap(),
        LookupCommand::Ping
    );
}

#[test]
fn identify_body_sizes() {
    assert_eq!(
        decode_err(&mut LookupDecoder::new(), b"IDENTIFY\n\xff\xff\xff\xff"),
        "E_BAD_BODY IDENTIFY invalid body size -1"
    );
    let mut big = b"IDENTIFY\n".to_vec();
    big.extend_from_slice(&((MAX_IDENTIFY_BODY + 1) as u32).to_be_bytes());
    assert_eq!(
        decode_err(&mut LookupDecoder::new(), &big),
        format!(
            "E_BAD_BODY IDENTIFY body too big {} > {MAX_IDENTIFY_BODY}",
            MAX_IDENTIFY_BODY + 1
        )
    );
    // A zero-size body is read (and then fails to decode as JSON).
    assert_eq!(
        decode_one(&mut LookupDecoder::new(), b"IDENTIFY\n\x00\x00\x00\x00").unwrap(),
        LookupCommand::Identify(Bytes::new())
    );
}

#[test]
fn eof_errors() {
    let mut d = LookupDecoder::new();
    assert_eq!(d.eof_error(), None);
    let mut buf = BytesMut::from(&b"IDENTIFY\n\x00\x00"[..]);
    assert_eq!(d.decode(&mut buf).unwrap(), None);
    assert_eq!(
        d.eof_error().unwrap().to_wire(),
        b"E_BAD_BODY IDENTIFY failed to read body size"
    );
    buf.put_slice(b"\x00\x05{}");
    assert_eq!(d.decode(&mut buf).unwrap(), None);
    assert_eq!(
        d.eof_error().unwrap().to_wire(),
        b"E_BAD_BODY IDENTIFY failed to read body"
    );
    // A partial line at EOF gets no reply, as upstream.
    let mut d = LookupDecoder::new();
    let mut buf = BytesMut::from(&b"PIN"[..]);
    assert_eq!(d.decode(&mut buf).unwrap(), None);
    assert_eq!(d.eof_error(), None);
}

#[test]
fn long_line_is_refused() {
    let mut d = LookupDecoder::new();
    let mut buf = BytesMut::from(&vec![b'A'; MAX_LINE_LEN][..]);
    assert_eq!(d.decode(&mut buf), Err(LookupDecodeError::LineTooLong));
    let mut buf = BytesMut::from(&vec![b'A'; MAX_LINE_LEN - 1][..]);
    assert_eq!(LookupDecoder::new().decode(&mut buf), Ok(None));
}

fn parse_err(body: &[u8]) -> String {
    String::from_utf8(PeerIdentity::parse(body).unwrap_err().to_wire()).unwrap()
}

#[test]
fn identity_parse_like_go() {
    assert_eq!(PeerIdentity::parse(IDENTITY_JSON).unwrap(), identity());
    // Unknown keys ignored, topology kept, remote_address overwritten later.
    let p = PeerIdentity::parse(
        br#"{"version":"1.3.0","tcp_port":1,"http_port":2,"broadcast_address":"b","hostname":"h","topology_zone":"z","remote_address":"x","new":[1]}"#,
    )
    .unwrap();
    assert_eq!(p.topology_zone.as_deref(), Some("z"));
    assert_eq!(p.topology_region, None);
    // Case-insensitive key match, as Go's decoder.
    let p = PeerIdentity::parse(
        br#"{"Version":"1.3.0","TCP_PORT":1,"http_port":2,"Broadcast_Address":"b"}"#,
    )
    .unwrap();
    assert_eq!((p.tcp_port, p.broadcast_address.as_str()), (1, "b"));
    // Go accepts any non-zero int as a port.
    assert_eq!(
        PeerIdentity::parse(
            br#"{"version":"v","tcp_port":-1,"http_port":70000,"broadcast_address":"b"}"#
        )
        .unwrap()
        .http_port,
        70000
    );
    // Invalid UTF-8 in a string is replaced, not refused.
    let p = PeerIdentity::parse(
        b"{\"version\":\"1\",\"tcp_port\":1,\"http_port\":2,\"broadcast_address\":\"b\",\"hostname\":\"a\xffb\"}",
    )
    .unwrap();
    assert_eq!(p.hostname, "a\u{fffd}b");

    let missing = "E_BAD_BODY IDENTIFY missing fields";
    let decode = "E_BAD_BODY IDENTIFY failed to decode JSON body";
    assert_eq!(parse_err(b"null"), missing);
    assert_eq!(parse_err(b"{}"), missing);
    assert_eq!(
        parse_err(br#"{"version":"1","tcp_port":1,"http_port":0,"broadcast_address":"b"}"#),
        missing
    );
    assert_eq!(
        parse_err(br#"{"version":"","tcp_port":1,"http_port":2,"broadcast_address":"b"}"#),
        missing
    );
    assert_eq!(
        parse_err(br#"{"version":"1","tcp_port":1,"http_port":2,"broadcast_address":null}"#),
        missing
    );
    assert_eq!(parse_err(b""), decode);
    assert_eq!(parse_err(b"{"), decode);
    assert_eq!(parse_err(b"[]"), decode);
    assert_eq!(parse_err(b"{} x"), decode);
    assert_eq!(parse_err(br#"{"tcp_port":"4150"}"#), decode);
    assert_eq!(parse_err(br#"{"tcp_port":4150.0}"#), decode);
    assert_eq!(parse_err(br#"{"hostname":5}"#), decode);
    assert_eq!(parse_err(br#"{"remote_address":true}"#), decode);
}

#[test]
fn replies_for_nsqd() {
    assert_eq!(
        LookupReply::classify(Bytes::from_static(b"OK")),
        LookupReply::Ok
    );
    assert_eq!(
        LookupReply::classify(Bytes::from_static(
            b"E_BAD_TOPIC REGISTER topic name 'x!' is not valid"
        )),
        LookupReply::Error {
            code: "E_BAD_TOPIC".into(),
            text: "REGISTER topic name 'x!' is not valid".into()
        }
    );
    assert_eq!(
        LookupReply::classify(Bytes::from_static(BAD_PROTOCOL)),
        LookupReply::Error {
            code: "E_BAD_PROTOCOL".into(),
            text: String::new()
        }
    );
    let json = Bytes::from_static(b"{\"tcp_port\":4160}");
    assert_eq!(LookupReply::classify(json.clone()), LookupReply::Data(json));

    let d = ReplyDecoder::new(16);
    let mut buf = BytesMut::from(&b"\x00\x00\x00\x02O"[..]);
    assert_eq!(d.decode(&mut buf), Ok(None));
    buf.put_slice(b"K\x00\x00");
    assert_eq!(d.decode(&mut buf), Ok(Some(Bytes::from_static(b"OK"))));
    assert_eq!(d.decode(&mut buf), Ok(None));
    buf.put_slice(b"\x00\x11");
    assert_eq!(
        d.decode(&mut buf),
        Err(ReplyTooBig {
            size: 17,
            limit: 16
        })
    );
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn arb_name() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9._-]{1,54}(#ephemeral)?"
    }

    fn arb_command() -> impl Strategy<Value = LookupCommand> {
        prop_oneof![
            Just(LookupCommand::Ping),
            (arb_name(), proptest::option::of(arb_name())).prop_map(|(t, c)| {
                LookupCommand::Register {
                    topic: topic(&t),
                    channel: c.map(|c| channel(&c)),
                }
            }),
            (arb_name(), proptest::option::of(arb_name())).prop_map(|(t, c)| {
                LookupCommand::Unregister {
                    topic: topic(&t),
                    channel: c.map(|c| channel(&c)),
                }
            }),
        ]
    }

    proptest! {
        /// However the stream is cut into reads, the same commands come out.
        #[test]
        fn any_split_decodes_the_same(
            cmds in proptest::collection::vec(arb_command(), 1..12),
            cut in 1usize..64,
        ) {
            let mut all = BytesMut::new();
            LookupCommand::identify(&identity()).encode(&mut all);
            for c in &cmds {
                c.encode(&mut all);
            }
            let mut d = LookupDecoder::new();
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for chunk in all.chunks(cut) {
                buf.extend_from_slice(chunk);
                while let Some(cmd) = d.decode(&mut buf).unwrap() {
                    if matches!(cmd, LookupCommand::Identify(_)) {
                        d.set_identified();
                    } else {
                        got.push(cmd);
                    }
                }
            }
            prop_assert_eq!(got, cmds);
        }

        /// Arbitrary bytes, before or after IDENTIFY, never panic the
        /// decoder: they decode, wait for more, or get an error.
        #[test]
        fn garbage_is_refused_not_panicked_on(
            bytes in proptest::collection::vec(any::<u8>(), 0..2048),
            identified in any::<bool>(),
        ) {
            let mut d = LookupDecoder::new();
            if identified {
                d.set_identified();
            }
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = d.decode(&mut buf) {}
            prop_assert!(buf.len() <= bytes.len());
        }
    }
}

/// A hostile peer declares a large IDENTIFY body and sends nothing more:
/// the decoder must not reserve the declared size up front (found by the
/// hostile-input property test: 262,245 bytes reserved after 13 arrived).
#[test]
fn an_identify_header_alone_reserves_no_more_than_a_read() {
    let mut d = LookupDecoder::new();
    let mut buf = BytesMut::new();
    buf.extend_from_slice(b"IDENTIFY\n");
    buf.extend_from_slice(&(MAX_IDENTIFY_BODY as u32).to_be_bytes());
    buf.extend_from_slice(b"e");
    assert!(d.decode(&mut buf).unwrap().is_none());
    assert!(buf.capacity() <= 128 * 1024, "{}", buf.capacity());
}

/// The same for a reply read by nsqd from nsqlookupd.
#[test]
fn a_reply_header_alone_reserves_no_more_than_a_read() {
    let d = ReplyDecoder::new(u64::from(u32::MAX));
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&(u32::MAX - 1).to_be_bytes());
    assert!(d.decode(&mut buf).unwrap().is_none());
    assert!(buf.capacity() <= 128 * 1024, "{}", buf.capacity());
}
