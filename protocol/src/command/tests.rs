use super::*;
use proptest::prelude::*;

fn topic(s: &str) -> TopicName {
    s.parse().unwrap()
}

fn decode_all(input: &[u8]) -> Result<Vec<Command>, DecodeError> {
    let mut d = CommandDecoder::new(Limits::default());
    let mut buf = BytesMut::from(input);
    let mut out = Vec::new();
    while let Some(c) = d.decode(&mut buf)? {
        out.push(c);
    }
    assert!(buf.is_empty(), "bytes left over: {buf:?}");
    Ok(out)
}

fn decode_err(input: &[u8]) -> String {
    match decode_all(input) {
        Err(e) if e.protocol_error().is_some() => e.to_string(),
        other => panic!("expected an error for {input:?}, got {other:?}"),
    }
}

fn encoded(cmd: &Command) -> Vec<u8> {
    let mut buf = BytesMut::new();
    cmd.encode(&mut buf);
    buf.to_vec()
}

#[test]
fn golden_encodings() {
    let id = MessageId(*b"0123456789abcdef");
    let cases: Vec<(Command, &[u8])> = vec![
        (Command::Nop, b"NOP\n"),
        (Command::Cls, b"CLS\n"),
        (Command::Rdy(2500), b"RDY 2500\n"),
        (Command::Fin(id), b"FIN 0123456789abcdef\n"),
        (Command::Touch(id), b"TOUCH 0123456789abcdef\n"),
        (
            Command::Req {
                id,
                timeout_ms: 500,
            },
            b"REQ 0123456789abcdef 500\n",
        ),
        (
            Command::Sub {
                topic: topic("t"),
                channel: "c#ephemeral".parse().unwrap(),
            },
            b"SUB t c#ephemeral\n",
        ),
        (
            Command::Pub {
                topic: topic("t"),
                body: Bytes::from_static(b"hi"),
            },
            b"PUB t\n\x00\x00\x00\x02hi",
        ),
        (
            Command::Dpub {
                topic: topic("t"),
                defer_ms: 1000,
                body: Bytes::from_static(b"x"),
            },
            b"DPUB t 1000\n\x00\x00\x00\x01x",
        ),
        (
            Command::Mpub {
                topic: topic("t"),
                bodies: vec![Bytes::from_static(b"a"), Bytes::from_static(b"bc")].into(),
            },
            b"MPUB t\n\x00\x00\x00\x0f\x00\x00\x00\x02\x00\x00\x00\x01a\x00\x00\x00\x02bc",
        ),
        (
            Command::Identify(Bytes::from_static(b"{}")),
            b"IDENTIFY\n\x00\x00\x00\x02{}",
        ),
        (
            Command::Auth(Bytes::from_static(b"secret")),
            b"AUTH\n\x00\x00\x00\x06secret",
        ),
    ];
    for (cmd, wire) in cases {
        assert_eq!(encoded(&cmd), wire, "encoding {cmd:?}");
        assert_eq!(
            decode_all(wire).unwrap(),
            vec![cmd.clone()],
            "decoding {wire:?}"
        );
    }
}

#[test]
fn line_details() {
    // A trailing \r is dropped; RDY without a count means 1; an empty count is 0.
    assert_eq!(decode_all(b"NOP\r\n").unwrap(), vec![Command::Nop]);
    assert_eq!(decode_all(b"RDY\n").unwrap(), vec![Command::Rdy(1)]);
    assert_eq!(decode_all(b"RDY \n").unwrap(), vec![Command::Rdy(0)]);
    // Extra parameters are ignored, as upstream does.
    assert_eq!(decode_all(b"NOP x y\n").unwrap(), vec![Command::Nop]);
    assert_eq!(
        decode_all(b"REQ 0123456789abcdef 10 extra\n").unwrap(),
        vec![Command::Req {
            id: MessageId(*b"0123456789abcdef"),
            timeout_ms: 10
        }]
    );
}

#[test]
fn error_texts_match_upstream() {
    let cases: Vec<(&[u8], &str)> = vec![
        (b"FOO\n", "E_INVALID invalid command FOO"),
        (b"\n", "E_INVALID invalid command "),
        (b"nop\n", "E_INVALID invalid command nop"),
        (b"RDY -1\n", "E_INVALID RDY could not parse count -1"),
        (b"RDY x\n", "E_INVALID RDY could not parse count x"),
        (b"FIN\n", "E_INVALID FIN insufficient number of params"),
        (b"FIN abc\n", "E_INVALID invalid message ID"),
        (
            b"REQ 0123456789abcdef\n",
            "E_INVALID REQ insufficient number of params",
        ),
        (
            b"REQ 0123456789abcdef x\n",
            "E_INVALID REQ could not parse timeout x",
        ),
        (b"REQ 012 10\n", "E_INVALID invalid message ID"),
        (b"TOUCH\n", "E_INVALID TOUCH insufficient number of params"),
        (b"TOUCH 0123456789abcdef0\n", "E_INVALID invalid message ID"),
        (
            b"SUB t\n",
            "E_INVALID SUB insufficient number of parameters",
        ),
        (
            b"SUB t! c\n",
            "E_BAD_TOPIC SUB topic name \"t!\" is not valid",
        ),
        (
            b"SUB t c!\n",
            "E_BAD_CHANNEL SUB channel name \"c!\" is not valid",
        ),
        (b"SUB  c\n", "E_BAD_TOPIC SUB topic name \"\" is not valid"),
        (b"PUB\n", "E_INVALID PUB insufficient number of parameters"),
        (
            b"PUB b@d\n",
            "E_BAD_TOPIC PUB topic name \"b@d\" is not valid",
        ),
        (
            b"PUB t\n\x00\x00\x00\x00",
            "E_BAD_MESSAGE PUB invalid message body size 0",
        ),
        (
            b"PUB t\n\xff\xff\xff\xff",
            "E_BAD_MESSAGE PUB invalid message body size -1",
        ),
        (
            b"PUB t\n\x00\x10\x00\x01",
            "E_BAD_MESSAGE PUB message too big 1048577 > 1048576",
        ),
        (
            b"MPUB\n",
            "E_INVALID MPUB insufficient number of parameters",
        ),
        (
            b"MPUB b@d\n",
            "E_BAD_TOPIC E_BAD_TOPIC MPUB topic name \"b@d\" is not valid",
        ),
        (
            b"MPUB t\n\x00\x00\x00\x00",
            "E_BAD_BODY MPUB invalid body size 0",
        ),
        (
            b"MPUB t\n\x00\x50\x00\x01",
            "E_BAD_BODY MPUB body too big 5242881 > 5242880",
        ),
        (
            b"MPUB t\n\x00\x00\x00\x08\x00\x00\x00\x00",
            "E_BAD_BODY MPUB invalid message count 0",
        ),
        (
            b"MPUB t\n\x00\x00\x00\x08\x00\x10\x00\x00",
            "E_BAD_BODY MPUB invalid message count 1048576",
        ),
        (
            b"MPUB t\n\x00\x00\x00\x08\x00\x00\x00\x01\x00\x00\x00\x00",
            "E_BAD_MESSAGE MPUB invalid message(0) body size 0",
        ),
        (
            b"MPUB t\n\x00\x00\x00\x10\x00\x00\x00\x02\x00\x00\x00\x01a\x00\x20\x00\x00",
            "E_BAD_MESSAGE MPUB message too big 2097152 > 1048576",
        ),
        (
            b"DPUB t\n",
            "E_INVALID DPUB insufficient number of parameters",
        ),
        (
            b"DPUB t! 1\n",
            "E_BAD_TOPIC DPUB topic name \"t!\" is not valid",
        ),
        (b"DPUB t -5\n", "E_INVALID DPUB could not parse timeout -5"),
        (
            b"DPUB t 3600001\n",
            "E_INVALID DPUB timeout 3600001 out of range 0-3600000",
        ),
        (
            b"DPUB t 10\n\x00\x00\x00\x00",
            "E_BAD_MESSAGE DPUB invalid message body size 0",
        ),
        (
            b"IDENTIFY\n\x00\x50\x00\x01",
            "E_BAD_BODY IDENTIFY body too big 5242881 > 5242880",
        ),
        (
            b"IDENTIFY\n\x00\x00\x00\x00",
            "E_BAD_BODY IDENTIFY invalid body size 0",
        ),
        (b"AUTH x\n", "E_INVALID AUTH invalid number of parameters"),
        (
            b"AUTH\n\xff\xff\xff\xfe",
            "E_BAD_BODY AUTH invalid body size -2",
        ),
    ];
    for (wire, want) in cases {
        assert_eq!(decode_err(wire), want, "input {wire:?}");
    }
}

#[test]
fn dpub_accepts_the_inclusive_limit() {
    let cmds = decode_all(b"DPUB t 3600000\n\x00\x00\x00\x01x").unwrap();
    assert!(matches!(
        cmds[0],
        Command::Dpub {
            defer_ms: 3_600_000,
            ..
        }
    ));
}

#[test]
fn line_too_long_closes_silently() {
    let mut d = CommandDecoder::new(Limits::default());
    let mut buf = BytesMut::from(&vec![b'A'; MAX_LINE_LEN][..]);
    assert_eq!(d.decode(&mut buf), Err(DecodeError::LineTooLong));
    // One byte short of the buffer and still without a newline: wait.
    let mut d = CommandDecoder::new(Limits::default());
    let mut buf = BytesMut::from(&vec![b'A'; MAX_LINE_LEN - 1][..]);
    assert_eq!(d.decode(&mut buf), Ok(None));
}

#[test]
fn eof_errors_name_the_missing_part() {
    let mut d = CommandDecoder::new(Limits::default());
    let mut buf = BytesMut::from(&b"PUB t\n\x00\x00"[..]);
    assert_eq!(d.decode(&mut buf), Ok(None));
    assert_eq!(
        d.eof_error().unwrap().to_string(),
        "E_BAD_MESSAGE PUB failed to read message body size"
    );
    buf.extend_from_slice(b"\x00\x05ab");
    assert_eq!(d.decode(&mut buf), Ok(None));
    assert_eq!(
        d.eof_error().unwrap().to_string(),
        "E_BAD_MESSAGE PUB failed to read message body"
    );
    assert!(CommandDecoder::new(Limits::default()).eof_error().is_none());
}

#[test]
fn mpub_messages_must_fill_the_declared_body_exactly() {
    // Declared 100 bytes, the messages take 9.
    assert_eq!(
        decode_err(b"MPUB t\n\x00\x00\x00\x64\x00\x00\x00\x01\x00\x00\x00\x01aNOP\n"),
        "E_BAD_BODY MPUB body size 100 does not match its messages (9 bytes)"
    );
    // Declared 9 bytes, then a second message of 1 MiB: refused at its
    // length prefix, before any of it is buffered.
    let mut d = CommandDecoder::new(Limits::default());
    let mut buf = BytesMut::from(
        &b"MPUB t\n\x00\x00\x00\x09\x00\x00\x00\x02\x00\x00\x00\x01a\x00\x10\x00\x00"[..],
    );
    assert_eq!(
        d.decode(&mut buf).unwrap_err().to_string(),
        "E_BAD_BODY MPUB message(1) overruns the body size 9"
    );
}

#[test]
fn a_header_alone_reserves_no_more_than_a_read() {
    // Largest count the limits allow, largest body: nothing of it has arrived.
    let mut d = CommandDecoder::new(Limits::default());
    let mut buf = BytesMut::from(&b"MPUB t\n\x00\x50\x00\x00\x00\x0f\xff\xff"[..]);
    assert_eq!(d.decode(&mut buf), Ok(None));
    assert!(buf.capacity() <= 128 * 1024, "reserved {}", buf.capacity());
    assert!(matches!(d.state, State::Mpub(..)), "{:?}", d.state);
    let mut d = CommandDecoder::new(Limits::default());
    let mut buf = BytesMut::from(&b"PUB t\n\x00\x10\x00\x00"[..]);
    assert_eq!(d.decode(&mut buf), Ok(None));
    assert!(buf.capacity() <= 128 * 1024, "reserved {}", buf.capacity());
}

#[test]
fn mpub_bodies_share_one_allocation() {
    let cmd = Command::Mpub {
        topic: topic("t"),
        bodies: (0..50)
            .map(|i| Bytes::from(vec![i as u8; 200]))
            .collect::<Vec<_>>()
            .into(),
    };
    let cmds = decode_all(&encoded(&cmd)).unwrap();
    let Command::Mpub { bodies, .. } = &cmds[0] else {
        panic!()
    };
    // Packed back to back, each after its length, as on the wire.
    let (data, count) = bodies.clone().into_packed();
    assert_eq!(count, 50);
    let base = data.as_ptr() as usize;
    for (i, b) in bodies.iter().enumerate() {
        assert_eq!(b.as_ptr() as usize, base + i * 204 + 4);
    }
    assert_eq!(cmds[0], cmd);
}

fn arb_name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._-]{1,54}(#ephemeral)?"
}

fn arb_body() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 1..300).prop_map(Bytes::from)
}

fn arb_command() -> impl Strategy<Value = Command> {
    let id = any::<u64>().prop_map(MessageId::from_u64);
    prop_oneof![
        Just(Command::Nop),
        Just(Command::Cls),
        (0u64..100_000).prop_map(Command::Rdy),
        id.clone().prop_map(Command::Fin),
        id.clone().prop_map(Command::Touch),
        (id, 0u64..10_000_000).prop_map(|(id, timeout_ms)| Command::Req { id, timeout_ms }),
        (arb_name(), arb_name()).prop_map(|(t, c)| Command::Sub {
            topic: t.parse().unwrap(),
            channel: c.parse().unwrap()
        }),
        (arb_name(), arb_body()).prop_map(|(t, body)| Command::Pub {
            topic: t.parse().unwrap(),
            body
        }),
        (arb_name(), 0u64..=3_600_000, arb_body()).prop_map(|(t, defer_ms, body)| Command::Dpub {
            topic: t.parse().unwrap(),
            defer_ms,
            body
        }),
        (arb_name(), proptest::collection::vec(arb_body(), 1..20)).prop_map(|(t, bodies)| {
            Command::Mpub {
                topic: t.parse().unwrap(),
                bodies: bodies.into(),
            }
        }),
        arb_body().prop_map(Command::Identify),
        arb_body().prop_map(Command::Auth),
    ]
}

proptest! {
    /// Any sequence of commands, cut into any chunks, decodes back to itself.
    #[test]
    fn round_trip_in_any_chunks(
        cmds in proptest::collection::vec(arb_command(), 1..12),
        cuts in proptest::collection::vec(1usize..700, 1..40),
    ) {
        let mut wire = BytesMut::new();
        for c in &cmds {
            c.encode(&mut wire);
        }
        let wire = wire.freeze();
        let mut d = CommandDecoder::new(Limits::default());
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut at = 0;
        let mut cut = cuts.iter().cycle();
        while at < wire.len() {
            let n = (*cut.next().unwrap()).min(wire.len() - at);
            buf.extend_from_slice(&wire[at..at + n]);
            at += n;
            while let Some(c) = d.decode(&mut buf).unwrap() {
                out.push(c);
            }
        }
        prop_assert_eq!(out, cmds);
        prop_assert!(d.is_idle());
    }

    /// Arbitrary bytes never panic the decoder, and it never buffers more than
    /// a line plus the largest legal body.
    #[test]
    fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let mut d = CommandDecoder::new(Limits::default());
        let mut buf = BytesMut::from(&data[..]);
        while let Ok(Some(_)) = d.decode(&mut buf) {}
    }
}

#[test]
fn http_mpub_body_parsing() {
    let l = Limits::default();
    let body = Bytes::from_static(b"\x00\x00\x00\x02\x00\x00\x00\x01a\x00\x00\x00\x02bc");
    let bodies = parse_mpub_body(&body, &l).unwrap();
    assert_eq!(
        Vec::from(bodies),
        vec![Bytes::from_static(b"a"), Bytes::from_static(b"bc")]
    );
    let err = |b: &'static [u8]| {
        parse_mpub_body(&Bytes::from_static(b), &l)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(err(b""), "E_BAD_BODY MPUB failed to read message count");
    assert_eq!(
        err(b"\x00\x00\x00\x00"),
        "E_BAD_BODY MPUB invalid message count 0"
    );
    assert_eq!(
        err(b"\x00\x00\x00\x01\x00\x00\x00\x05ab"),
        "E_BAD_MESSAGE MPUB failed to read message body"
    );
    assert_eq!(
        err(b"\x00\x00\x00\x01\x00\x00\x00\x00"),
        "E_BAD_MESSAGE MPUB invalid message(0) body size 0"
    );
}

#[test]
fn decoded_mpub_bodies_are_packed_as_on_the_wire() {
    let list: Vec<Bytes> = vec!["a".into(), Bytes::new(), "bcd".into()];
    // An empty body is refused by the decoder, but the type keeps any list.
    let cmd = Command::Mpub {
        topic: topic("t"),
        bodies: vec![list[0].clone(), list[2].clone()].into(),
    };
    let cmds = decode_all(&encoded(&cmd)).unwrap();
    let Command::Mpub { bodies, .. } = &cmds[0] else {
        panic!()
    };
    assert_eq!((bodies.len(), bodies.body_bytes()), (2, 4));
    let (data, count) = bodies.clone().into_packed();
    assert_eq!(count, 2);
    assert_eq!(&data[..], b"\x00\x00\x00\x01a\x00\x00\x00\x03bcd");
    // Encoding the packed form gives the wire bytes back.
    assert_eq!(encoded(&cmds[0]), encoded(&cmd));
    // A list packs the same way, empty bodies included.
    let listed = Bodies::from(list.clone());
    assert_eq!(listed.body_bytes(), 4);
    let (data, count) = listed.clone().into_packed();
    assert_eq!(count, 3);
    assert_eq!(
        &data[..],
        b"\x00\x00\x00\x01a\x00\x00\x00\x00\x00\x00\x00\x03bcd"
    );
    assert_eq!(Vec::from(listed), list);
    assert_ne!(bodies, &Bodies::from(list));
}

#[test]
fn http_mpub_bodies_leave_trailing_bytes_out() {
    let body = Bytes::from_static(b"\x00\x00\x00\x01\x00\x00\x00\x02hi trailing");
    let bodies = parse_mpub_body(&body, &Limits::default()).unwrap();
    assert_eq!(Vec::from(bodies.clone()), vec![Bytes::from_static(b"hi")]);
    assert_eq!(
        bodies.into_packed().0,
        Bytes::from_static(b"\x00\x00\x00\x02hi")
    );
}

#[test]
fn mpub_bodies_are_copied_into_the_buffer_the_decoder_was_given() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static ASKED: AtomicUsize = AtomicUsize::new(0);
    fn counted(len: usize) -> BytesMut {
        ASKED.fetch_add(len, Ordering::Relaxed);
        BytesMut::with_capacity(len)
    }
    let cmd = Command::Mpub {
        topic: topic("t"),
        bodies: vec![Bytes::from_static(b"ab"), Bytes::from_static(b"c")].into(),
    };
    let mut d = CommandDecoder::new(Limits::default()).with_body_buffer(counted);
    let mut buf = BytesMut::from(&encoded(&cmd)[..]);
    assert_eq!(d.decode(&mut buf), Ok(Some(cmd)));
    // The packed span: two lengths and three bytes of bodies.
    assert_eq!(ASKED.load(Ordering::Relaxed), 4 + 2 + 4 + 1);
}
