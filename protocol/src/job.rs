//! The body of a job-shard message: which job and fire it belongs to, its
//! item number, parameter and load, then the fire's payload.
//!
//! Layout (all integers big-endian, like the rest of NSQ's wire):
//!
//! ```text
//! [8] magic   "\0NSQJOB" then version 0x01
//! [4] item    u32
//! [4] load    u32, in the worker's capacity units
//! [1] n       job name length, then n bytes of job name
//! [1] n       fire id length, then n bytes of fire id
//! [2] n       parameter length, then n bytes of parameter (UTF-8)
//! [..]        payload, to the end of the body
//! ```
//!
//! The magic starts with a NUL byte, which text messages never carry, so nsqd
//! can tell a shard from an ordinary message by its first eight bytes.

use bytes::{BufMut, Bytes};

/// The first eight bytes of every shard body (format version 1).
pub const SHARD_MAGIC: &[u8; 8] = b"\0NSQJOB\x01";

/// Why a body is not a shard.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    #[error("not a job shard (no shard header)")]
    NotAShard,
    #[error("shard header is truncated")]
    Truncated,
    #[error("shard {0} is not UTF-8")]
    NotUtf8(&'static str),
    #[error("shard {0} is too long ({1} bytes, at most {2})")]
    TooLong(&'static str, usize, usize),
}

/// One shard of one fire of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    pub job: String,
    pub fire: String,
    pub item: u32,
    pub load: u32,
    pub param: String,
    pub payload: Bytes,
}

/// The fixed-size part of the header, enough for dispatch: nsqd reads only
/// this on its hot path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardLoad {
    pub item: u32,
    pub load: u32,
}

/// Whether `body` starts like a shard.
pub fn is_shard(body: &[u8]) -> bool {
    body.starts_with(SHARD_MAGIC)
}

/// Item and load of a shard body, without reading the rest.
pub fn peek_load(body: &[u8]) -> Option<ShardLoad> {
    let rest = body.strip_prefix(SHARD_MAGIC.as_slice())?;
    if rest.len() < 8 {
        return None;
    }
    Some(ShardLoad {
        item: u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]),
        load: u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]),
    })
}

impl Shard {
    /// The message body for this shard.
    pub fn encode(&self) -> Result<Bytes, ShardError> {
        let check = |what, s: &str, max: usize| {
            if s.len() > max {
                Err(ShardError::TooLong(what, s.len(), max))
            } else {
                Ok(())
            }
        };
        check("job name", &self.job, u8::MAX as usize)?;
        check("fire id", &self.fire, u8::MAX as usize)?;
        check("parameter", &self.param, u16::MAX as usize)?;
        let mut out = Vec::with_capacity(
            SHARD_MAGIC.len()
                + 12
                + self.job.len()
                + self.fire.len()
                + self.param.len()
                + self.payload.len(),
        );
        out.put_slice(SHARD_MAGIC);
        out.put_u32(self.item);
        out.put_u32(self.load);
        out.put_u8(self.job.len() as u8);
        out.put_slice(self.job.as_bytes());
        out.put_u8(self.fire.len() as u8);
        out.put_slice(self.fire.as_bytes());
        out.put_u16(self.param.len() as u16);
        out.put_slice(self.param.as_bytes());
        out.put_slice(&self.payload);
        Ok(Bytes::from(out))
    }

    /// Parse a shard body; the payload shares `body`'s memory.
    pub fn decode(body: &Bytes) -> Result<Shard, ShardError> {
        let h = Self::decode_header(body)?;
        Ok(Shard {
            job: h.job.to_owned(),
            fire: h.fire.to_owned(),
            item: h.item,
            load: h.load,
            param: h.param.to_owned(),
            payload: body.slice(h.payload_at..),
        })
    }

    /// Parse the header only, borrowing from `body`.
    pub fn decode_header(body: &[u8]) -> Result<ShardHeader<'_>, ShardError> {
        let ShardLoad { item, load } = peek_load(body).ok_or(if is_shard(body) {
            ShardError::Truncated
        } else {
            ShardError::NotAShard
        })?;
        let mut at = SHARD_MAGIC.len() + 8;
        let mut field = |len_bytes: usize, what: &'static str| -> Result<&str, ShardError> {
            let len_end = at + len_bytes;
            let len = match body.get(at..len_end).ok_or(ShardError::Truncated)? {
                [n] => usize::from(*n),
                [a, b] => usize::from(u16::from_be_bytes([*a, *b])),
                _ => return Err(ShardError::Truncated),
            };
            let raw = body
                .get(len_end..len_end + len)
                .ok_or(ShardError::Truncated)?;
            at = len_end + len;
            std::str::from_utf8(raw).map_err(|_| ShardError::NotUtf8(what))
        };
        let job = field(1, "job name")?;
        let fire = field(1, "fire id")?;
        let param = field(2, "parameter")?;
        Ok(ShardHeader {
            job,
            fire,
            item,
            load,
            param,
            payload_at: at,
        })
    }
}

/// A shard's header read in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardHeader<'a> {
    pub job: &'a str,
    pub fire: &'a str,
    pub item: u32,
    pub load: u32,
    pub param: &'a str,
    /// Where the payload starts in the body.
    pub payload_at: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Shard {
        Shard {
            job: "resize".into(),
            fire: "f1".into(),
            item: 7,
            load: 3,
            param: "a=b".into(),
            payload: Bytes::from_static(b"hi\n"),
        }
    }

    #[test]
    fn golden_bytes() {
        let body = sample().encode().unwrap();
        let want: &[u8] = b"\0NSQJOB\x01\
            \x00\x00\x00\x07\
            \x00\x00\x00\x03\
            \x06resize\
            \x02f1\
            \x00\x03a=b\
            hi\n";
        assert_eq!(&body[..], want);
        assert_eq!(Shard::decode(&body).unwrap(), sample());
        assert_eq!(peek_load(&body), Some(ShardLoad { item: 7, load: 3 }));
    }

    #[test]
    fn empty_fields_and_payload() {
        let s = Shard {
            job: String::new(),
            fire: String::new(),
            item: 0,
            load: 0,
            param: String::new(),
            payload: Bytes::new(),
        };
        let body = s.encode().unwrap();
        assert_eq!(&body[..], b"\0NSQJOB\x01\0\0\0\0\0\0\0\0\0\0\0\0");
        assert_eq!(Shard::decode(&body).unwrap(), s);
    }

    #[test]
    fn ordinary_and_broken_bodies_are_refused() {
        assert_eq!(
            Shard::decode(&Bytes::from_static(b"hello")),
            Err(ShardError::NotAShard)
        );
        assert_eq!(peek_load(b"hello world, hello"), None);
        let body = sample().encode().unwrap();
        // Every cut inside the header is noticed; cuts in the payload are
        // just a shorter payload.
        let header_len = Shard::decode_header(&body).unwrap().payload_at;
        for cut in SHARD_MAGIC.len()..header_len {
            assert_eq!(
                Shard::decode(&body.slice(..cut)),
                Err(ShardError::Truncated),
                "cut at {cut}"
            );
        }
        let mut bad = body.to_vec();
        bad[SHARD_MAGIC.len() + 9] = 0xff; // first byte of the job name
        assert_eq!(
            Shard::decode(&Bytes::from(bad)),
            Err(ShardError::NotUtf8("job name"))
        );
    }

    #[test]
    fn overlong_fields_are_refused() {
        let mut s = sample();
        s.fire = "x".repeat(256);
        assert_eq!(s.encode(), Err(ShardError::TooLong("fire id", 256, 255)));
    }
}
