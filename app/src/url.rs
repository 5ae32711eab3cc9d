//! The URL codec every daemon and tool shares, with Go's `net/url` rules
//! (upstream's behaviour decides what is present, missing or malformed).

/// Go's `url.QueryEscape`: unreserved bytes stay, space becomes `+`, the
/// rest is `%XX` (topic and channel names may hold `#`; a message body put
/// in a URL may hold anything).
pub fn query_escape(s: impl AsRef<[u8]>) -> String {
    let s = s.as_ref();
    let mut out = String::with_capacity(s.len());
    for &b in s {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Go's `url.QueryUnescape`: `+` is a space, `%XX` must be two hex digits
/// (`None` otherwise). The result is raw bytes: escapes may decode to
/// anything.
pub fn query_unescape(s: &str) -> Option<Vec<u8>> {
    unescape(s, true, true)
}

/// Decode `%XX` escapes (and `+` as a space when `plus_is_space`). With
/// `strict`, a bad escape is an error; without, it stays as written.
pub fn unescape(s: &str, plus_is_space: bool, strict: bool) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let decoded =
                    (b.get(i + 1).copied().and_then(hex)).zip(b.get(i + 2).copied().and_then(hex));
                match decoded {
                    Some((hi, lo)) => {
                        out.push(hi << 4 | lo);
                        i += 3;
                    }
                    None if strict => return None,
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(out)
}

/// Go's `url.ParseQuery`: `key=value` pairs in request order, empty pairs
/// skipped, `key` alone has value "". `None` when Go reports an error: a
/// `;` in a pair (refused since Go 1.17) or a bad escape.
pub fn parse_query(raw: &str) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut pairs = Vec::new();
    for piece in raw.split('&').filter(|p| !p.is_empty()) {
        if piece.contains(';') {
            return None;
        }
        let (key, value) = piece.split_once('=').unwrap_or((piece, ""));
        pairs.push((query_unescape(key)?, query_unescape(value)?));
    }
    Some(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_go() {
        assert_eq!(query_escape("t.1_x-y~"), "t.1_x-y~");
        assert_eq!(query_escape("c#ephemeral"), "c%23ephemeral");
        assert_eq!(query_escape("a b/c"), "a+b%2Fc");
        assert_eq!(query_escape(b"a b&c=d/~*\xff"), "a+b%26c%3Dd%2F~%2A%FF");
    }

    #[test]
    fn unescapes_like_go() {
        assert_eq!(query_unescape("a+b%41").unwrap(), b"a bA");
        assert_eq!(query_unescape("%ff").unwrap(), [0xff]);
        assert_eq!(query_unescape("%zz"), None);
        assert_eq!(query_unescape("%4"), None);
        assert_eq!(unescape("a%2", false, false).unwrap(), b"a%2");
        assert_eq!(unescape("a+b", false, false).unwrap(), b"a+b");
    }

    #[test]
    fn parses_queries_like_go() {
        let q = parse_query("topic=a%23e&&flag&n=h+x").unwrap();
        let q: Vec<(&[u8], &[u8])> = q.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        assert_eq!(
            q,
            [(&b"topic"[..], &b"a#e"[..]), (b"flag", b""), (b"n", b"h x")]
        );
        assert_eq!(parse_query("a=1;b=2"), None);
        assert_eq!(parse_query("a=%zz"), None);
        assert_eq!(parse_query("").unwrap(), vec![]);
    }
}
