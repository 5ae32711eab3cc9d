//! The wire format's golden bytes and its refusals of hostile frames.

use super::*;

fn topic(s: &str) -> TopicName {
    s.parse().unwrap()
}

fn roundtrip(f: Frame) -> BytesMut {
    let mut out = BytesMut::new();
    f.encode(&mut out);
    let size = u32::from_be_bytes([out[0], out[1], out[2], out[3]]) as usize;
    assert_eq!(size, out.len() - 4);
    assert_eq!(Frame::decode(out.clone().freeze().slice(4..)).unwrap(), f);
    out
}

#[test]
fn golden_hello_and_ack() {
    let b = roundtrip(Frame::Hello {
        version: 1,
        origin: "a:1".into(),
        incarnation: 7,
    });
    assert_eq!(
        &b[..],
        b"\x00\x00\x00\x0f\x01\x00\x01\x03a:1\x00\x00\x00\x00\x00\x00\x00\x07"
    );
    let b = roundtrip(Frame::Ack { seq: 258 });
    assert_eq!(
        &b[..],
        b"\x00\x00\x00\x09\x07\x00\x00\x00\x00\x00\x00\x01\x02"
    );
}

#[test]
fn golden_append() {
    let two = vec![
        WireMessage {
            id: 2,
            timestamp: 3,
            attempts: 4,
            body: Bytes::from_static(b"hi"),
        },
        WireMessage {
            id: 9,
            timestamp: 8,
            attempts: 0,
            body: Bytes::new(),
        },
    ];
    let b = roundtrip(Frame::Append {
        seq: 1,
        topic: topic("t"),
        channel: None,
        due: 0,
        msgs: two.into(),
    });
    let mut want = vec![0, 0, 0, 0, 4];
    want.extend_from_slice(&1u64.to_be_bytes());
    want.extend_from_slice(b"\x01t\x00");
    want.extend_from_slice(&0i64.to_be_bytes());
    want.extend_from_slice(&2u32.to_be_bytes());
    // Every message's id, timestamp and attempts, then every body.
    want.extend_from_slice(&2u64.to_be_bytes());
    want.extend_from_slice(&3i64.to_be_bytes());
    want.extend_from_slice(&4u16.to_be_bytes());
    want.extend_from_slice(&9u64.to_be_bytes());
    want.extend_from_slice(&8i64.to_be_bytes());
    want.extend_from_slice(&0u16.to_be_bytes());
    want.extend_from_slice(&2u32.to_be_bytes());
    want.extend_from_slice(b"hi");
    want.extend_from_slice(&0u32.to_be_bytes());
    let size = (want.len() - 4) as u32;
    want[..4].copy_from_slice(&size.to_be_bytes());
    assert_eq!(&b[..], &want[..]);
}

#[test]
fn a_publish_is_its_head_then_its_bodies_as_queued() {
    let bodies = [Bytes::from_static(b"hi"), Bytes::from_static(b"yo!")];
    let batch = Packed::pack(&bodies, 2, 3);
    let mut direct = BytesMut::new();
    let head = AppendHead {
        seq: 1,
        topic: &topic("t"),
        channel: None,
        due: 5,
    };
    let tail = head.encode(&mut direct, &batch);
    assert_eq!(&tail[..], b"\0\0\0\x02hi\0\0\0\x03yo!");
    let mut want = vec![0, 0, 0, 0, 4];
    want.extend_from_slice(&1u64.to_be_bytes());
    want.extend_from_slice(b"\x01t\x00");
    want.extend_from_slice(&5i64.to_be_bytes());
    want.extend_from_slice(&2u32.to_be_bytes());
    for id in [2u64, 3] {
        want.extend_from_slice(&id.to_be_bytes());
        want.extend_from_slice(&3i64.to_be_bytes());
        want.extend_from_slice(&0u16.to_be_bytes());
    }
    want.extend_from_slice(&tail);
    let size = (want.len() - 4) as u32;
    want[..4].copy_from_slice(&size.to_be_bytes());
    direct.extend_from_slice(&tail);
    assert_eq!(&direct[..], &want[..]);
    let Frame::Append { msgs, due: 5, .. } = Frame::decode(direct.freeze().slice(4..)).unwrap()
    else {
        panic!("not an Append");
    };
    let got: Vec<_> = msgs.iter().map(|m| m.to_message()).collect();
    assert_eq!(got, batch.messages().collect::<Vec<_>>());
}

#[test]
fn every_kind_roundtrips() {
    roundtrip(Frame::Welcome { taken_over: 3 });
    roundtrip(Frame::Reset { seq: 9 });
    roundtrip(Frame::Ping { seq: 9 });
    roundtrip(Frame::Finish {
        seq: 5,
        topic: topic("t"),
        channel: "c".parse().unwrap(),
        ids: vec![1, 2, 3],
    });
    roundtrip(Frame::Meta {
        seq: 6,
        op: MetaOp::ChannelPause,
        topic: topic("t"),
        channel: Some("c".parse().unwrap()),
    });
    roundtrip(Frame::TakenOver {
        topic: topic("t"),
        ids: vec![u64::MAX],
    });
    roundtrip(Frame::Auth {
        nonce: [1; 32],
        proof: [2; 32],
    });
}

#[test]
fn lying_counts_and_names_are_refused() {
    // Finish claiming a million ids in a 30-byte frame.
    let mut p = vec![5u8];
    p.extend_from_slice(&1u64.to_be_bytes());
    p.extend_from_slice(b"\x01t\x01c");
    p.extend_from_slice(&1_000_000u32.to_be_bytes());
    assert!(matches!(
        Frame::decode(Bytes::from(p)),
        Err(WireError::Count(_))
    ));
    // A topic name with a space.
    let mut p = vec![9u8, 3];
    p.extend_from_slice(b"a b");
    p.extend_from_slice(&0u32.to_be_bytes());
    assert!(matches!(
        Frame::decode(Bytes::from(p)),
        Err(WireError::Name)
    ));
    // A body longer than the frame.
    let mut f = BytesMut::new();
    Frame::Append {
        seq: 1,
        topic: topic("t"),
        channel: None,
        due: 0,
        msgs: vec![WireMessage {
            id: 1,
            timestamp: 1,
            attempts: 0,
            body: Bytes::from_static(b"abc"),
        }]
        .into(),
    }
    .encode(&mut f);
    let cut = f.len() - 1;
    assert!(matches!(
        Frame::decode(f.clone().freeze().slice(4..cut)),
        Err(WireError::Truncated)
    ));
    // A body length that runs past the frame, the frame's size still true.
    let len_at = f.len() - 7;
    f[len_at..len_at + 4].copy_from_slice(&4u32.to_be_bytes());
    assert!(matches!(
        Frame::decode(f.freeze().slice(4..)),
        Err(WireError::Truncated)
    ));
    // A count the frame has no room for (22 bytes a message at least).
    let mut p = vec![4u8];
    p.extend_from_slice(&1u64.to_be_bytes());
    p.extend_from_slice(b"\x01t\x00");
    p.extend_from_slice(&0i64.to_be_bytes());
    p.extend_from_slice(&2u32.to_be_bytes());
    p.extend_from_slice(&[0; 40]);
    assert!(matches!(
        Frame::decode(Bytes::from(p)),
        Err(WireError::Count(2))
    ));
    assert!(matches!(
        Frame::decode(Bytes::from_static(b"\x63")),
        Err(WireError::Kind(0x63))
    ));
    assert!(matches!(
        Frame::decode(Bytes::from_static(b"\x07\0\0\0\0\0\0\0\x01\xff")),
        Err(WireError::Trailing(1))
    ));
}
