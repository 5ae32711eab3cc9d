//! Hostile input against the pure decoders, many cases per run (set
//! `PROPTEST_CASES` to change how many): the V2 command decoder, the
//! lookupd V1 decoder and the IDENTIFY body parser. Whatever the bytes and
//! however they are cut into reads, nothing panics, and the read buffer
//! never holds much more than the bytes that actually arrived: a size in a
//! header is a claim, not a reason to allocate.

use bytes::{BufMut, BytesMut};
use nsq_protocol::lookup::LookupDecoder;
use nsq_protocol::{CommandDecoder, IdentifyRequest, Limits};
use proptest::prelude::*;

/// Slack a decoder may reserve beyond what arrived: one read's worth of
/// room on top of doubling what is there.
const SLACK: usize = 256 * 1024;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(2048)
}

/// Bytes that look like commands often enough to get past the line: known
/// verbs, then parameters and a big-endian size that is often huge.
fn v2_stream() -> impl Strategy<Value = Vec<u8>> {
    let verb = prop_oneof![
        Just(&b"PUB t"[..]),
        Just(&b"MPUB t"[..]),
        Just(&b"DPUB t 10"[..]),
        Just(&b"IDENTIFY"[..]),
        Just(&b"AUTH"[..]),
        Just(&b"RDY 5"[..]),
        Just(&b"FIN 0123456789abcdef"[..]),
        Just(&b"REQ 0123456789abcdef 100"[..]),
        Just(&b"NOP"[..]),
        Just(&b"SUB t c"[..]),
    ];
    let piece = (
        verb,
        any::<i32>(),
        prop_oneof![Just(0i32), Just(1), Just(4), Just(1 << 20), any::<i32>()],
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(verb, size, inner, tail)| {
            let mut v = verb.to_vec();
            v.push(b'\n');
            v.put_i32(size);
            v.put_i32(inner);
            v.extend_from_slice(&tail);
            v
        });
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..4096),
        proptest::collection::vec(piece, 1..8).prop_map(|p| p.concat()),
    ]
}

/// Feed `data` to `decode` in reads of `cut` bytes, as a socket would.
fn feed<E>(
    data: &[u8],
    cut: usize,
    mut decode: impl FnMut(&mut BytesMut) -> Result<bool, E>,
) -> Result<(), TestCaseError> {
    let mut buf = BytesMut::new();
    let mut arrived = 0usize;
    for chunk in data.chunks(cut.max(1)) {
        buf.extend_from_slice(chunk);
        arrived += chunk.len();
        loop {
            match decode(&mut buf) {
                Ok(true) => continue,
                Ok(false) => break,
                Err(_) => return Ok(()),
            }
        }
        prop_assert!(
            buf.capacity() <= 2 * arrived + SLACK,
            "{} bytes reserved after {} arrived",
            buf.capacity(),
            arrived
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn v2_decoder_survives_anything(data in v2_stream(), cut in 1usize..700) {
        let mut d = CommandDecoder::new(Limits::default());
        feed(&data, cut, |buf| d.decode(buf).map(|c| c.is_some()))?;
        // Whatever state it ended in, the EOF text is well formed.
        if let Some(e) = d.eof_error() {
            prop_assert!(!e.to_wire().is_empty());
        }
    }

    #[test]
    fn v2_decoder_with_tiny_limits_survives_anything(data in v2_stream(), cut in 1usize..64) {
        let limits = Limits { max_msg_size: 16, max_body_size: 64, max_req_timeout_ms: 10 };
        let mut d = CommandDecoder::new(limits);
        feed(&data, cut, |buf| d.decode(buf).map(|c| c.is_some()))?;
    }

    #[test]
    fn lookupd_v1_decoder_survives_anything(
        data in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..4096),
            (prop_oneof![Just(&b"IDENTIFY\n"[..]), Just(&b"REGISTER t c\n"[..]), Just(&b"PING\n"[..])],
             any::<i32>(), proptest::collection::vec(any::<u8>(), 0..128))
                .prop_map(|(l, s, t)| { let mut v = l.to_vec(); v.put_i32(s); v.extend(t); v }),
        ],
        identified in any::<bool>(),
        cut in 1usize..700,
    ) {
        let mut d = LookupDecoder::new();
        if identified {
            d.set_identified();
        }
        feed(&data, cut, |buf| d.decode(buf).map(|c| c.is_some()))?;
    }

    #[test]
    fn identify_bodies_never_panic(
        body in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..512),
            "\\{(\"[a-z_]{1,20}\":(null|-?[0-9]{1,20}|true|\"[^\"]{0,8}\"),?){0,6}\\}"
                .prop_map(String::into_bytes),
        ]
    ) {
        let _ = IdentifyRequest::parse(&body);
    }
}
