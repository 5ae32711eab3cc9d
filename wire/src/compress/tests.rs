//! Round trips against the crates' own coders, chunk and CRC checks, and hostile input.

use super::*;
use bytes::BytesMut;
use flate2::Compression;
use std::io::{Read, Write};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn sample(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i * 7 % 251) as u8 ^ (i / 300) as u8)
        .collect()
}

async fn compress(codec: Codec, parts: &[&[u8]]) -> Vec<u8> {
    let mut c = Compressor::new(Vec::new(), codec);
    for p in parts {
        c.write_all(p).await.unwrap();
        c.flush().await.unwrap();
    }
    c.inner
}

async fn decompress(codec: Codec, wire: &[u8]) -> io::Result<Vec<u8>> {
    let mut d = Decompressor::new(wire, codec, BytesMut::new());
    let mut out = Vec::new();
    d.read_to_end(&mut out).await?;
    Ok(out)
}

#[tokio::test]
async fn snappy_output_reads_back_with_the_snap_crate() {
    let big = sample(200_000);
    let wire = compress(Codec::Snappy, &[b"OK", &big, &[0u8; 100]]).await;
    assert!(wire.starts_with(SNAPPY_STREAM_ID));
    let mut got = Vec::new();
    snap::read::FrameDecoder::new(&wire[..])
        .read_to_end(&mut got)
        .unwrap();
    let mut want = b"OK".to_vec();
    want.extend_from_slice(&big);
    want.extend_from_slice(&[0u8; 100]);
    assert_eq!(got, want);
}

#[tokio::test]
async fn snap_crate_output_reads_back() {
    let big = sample(300_000);
    let mut enc = snap::write::FrameEncoder::new(Vec::new());
    enc.write_all(&big).unwrap();
    let wire = enc.into_inner().unwrap();
    assert_eq!(decompress(Codec::Snappy, &wire).await.unwrap(), big);
}

#[tokio::test]
async fn snappy_rejects_a_bad_checksum_and_a_missing_identifier() {
    let mut wire = compress(Codec::Snappy, &[b"hello world"]).await;
    let last = wire.len() - 1;
    wire[last] ^= 1;
    assert!(decompress(Codec::Snappy, &wire).await.is_err());
    let wire = compress(Codec::Snappy, &[b"hello world"]).await;
    assert!(decompress(Codec::Snappy, &wire[SNAPPY_STREAM_ID.len()..])
        .await
        .is_err());
}

#[tokio::test]
async fn deflate_is_raw_and_each_flush_is_decodable() {
    let big = sample(150_000);
    let first = compress(Codec::Deflate(6), &[b"OK"]).await;
    // A sync flush ends with an empty stored block: 00 00 ff ff.
    assert!(first.ends_with(&[0, 0, 0xff, 0xff]));
    let mut got = Vec::new();
    // flate2's raw reader (no zlib header) decodes what was flushed.
    let _ = flate2::read::DeflateDecoder::new(&first[..]).read_to_end(&mut got);
    assert_eq!(got, b"OK");
    let wire = compress(Codec::Deflate(9), &[b"OK", &big]).await;
    let mut want = b"OK".to_vec();
    want.extend_from_slice(&big);
    assert_eq!(decompress(Codec::Deflate(9), &wire).await.unwrap(), want);
}

#[tokio::test]
async fn deflate_from_flate2_reads_back_across_split_reads() {
    let big = sample(100_000);
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), Compression::new(1));
    enc.write_all(&big).unwrap();
    enc.flush().unwrap();
    let wire = enc.get_ref().clone();
    // Feed the stream a few bytes at a time through a duplex pipe.
    let (mut a, b) = tokio::io::duplex(7);
    let writer = tokio::spawn(async move {
        for c in wire.chunks(5) {
            a.write_all(c).await.unwrap();
        }
    });
    let mut d = Decompressor::new(b, Codec::Deflate(1), BytesMut::new());
    let mut got = vec![0u8; big.len()];
    d.read_exact(&mut got).await.unwrap();
    writer.await.unwrap();
    assert_eq!(got, big);
}

#[tokio::test]
async fn a_deflate_bomb_is_inflated_only_as_far_as_it_is_read() {
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), Compression::best());
    let block = b"NOP\n".repeat(64 * 1024);
    for _ in 0..128 {
        enc.write_all(&block).unwrap();
    }
    enc.flush().unwrap();
    let wire = enc.get_ref().clone();
    assert!(wire.len() < 64 * 1024);
    let mut d = Decompressor::new(&wire[..], Codec::Deflate(9), BytesMut::new());
    let mut got = [0u8; 8];
    d.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"NOP\nNOP\n");
    assert!(
        d.plain.capacity() <= 2 * READ_CHUNK,
        "holds {} decoded bytes",
        d.plain.capacity()
    );
}

#[tokio::test]
async fn snappy_refuses_an_oversized_chunk_before_buffering_it() {
    let mut wire = SNAPPY_STREAM_ID.to_vec();
    // A data chunk header claiming 16 MiB.
    wire.extend_from_slice(&[0x00, 0xff, 0xff, 0xff]);
    wire.extend_from_slice(&[0u8; 64]);
    assert!(decompress(Codec::Snappy, &wire).await.is_err());
    // Skippable padding of any length is dropped as it streams past.
    let mut wire = SNAPPY_STREAM_ID.to_vec();
    wire.extend_from_slice(&[0xfe, 0x00, 0x00, 0x02]);
    wire.extend_from_slice(&vec![0u8; 0x20000]);
    wire.extend_from_slice(&compress(Codec::Snappy, &[b"after"]).await[SNAPPY_STREAM_ID.len()..]);
    assert_eq!(decompress(Codec::Snappy, &wire).await.unwrap(), b"after");
}

/// What a hostile peer may send after negotiating compression: bytes,
/// or a valid stream of highly compressible data with garbage after it.
fn hostile_wire() -> impl proptest::strategy::Strategy<Value = (bool, Vec<u8>)> {
    use proptest::prelude::*;
    prop_oneof![
        (
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 0..2048)
        ),
        (0usize..100, proptest::collection::vec(any::<u8>(), 0..64)).prop_map(|(cut, tail)| {
            // One 16 MiB bomb, built once; each case cuts it somewhere.
            static BOMB: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
            let bomb = BOMB.get_or_init(|| {
                let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), Compression::best());
                let block = vec![b'A'; 1024 * 1024];
                for _ in 0..16 {
                    enc.write_all(&block).unwrap();
                }
                enc.flush().unwrap();
                enc.get_ref().clone()
            });
            let mut wire = bomb[..bomb.len() * (cut + 1) / 100].to_vec();
            wire.extend(tail);
            (false, wire)
        }),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
    /// Whatever arrives, decoding never panics and never holds more
    /// than a couple of reads' worth, decoded or not.
    #[test]
    fn hostile_compressed_input_stays_bounded((snappy, wire) in hostile_wire()) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let codec = if snappy { Codec::Snappy } else { Codec::Deflate(6) };
            let mut d = Decompressor::new(&wire[..], codec, BytesMut::new());
            let mut chunk = [0u8; 4096];
            // Read a bounded amount: a bomb may stand for gigabytes.
            for _ in 0..256 {
                match d.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                proptest::prop_assert!(d.plain.capacity() <= 2 * READ_CHUNK);
                proptest::prop_assert!(d.raw.capacity() <= 2 * READ_CHUNK + wire.len());
            }
            Ok(())
        })?;
    }
}
