//! Query-string parameters parsed with Go's `url.ParseQuery` rules, which
//! decide what upstream treats as present, missing or malformed.

/// Parsed `key=value` pairs in request order; values are raw bytes because
/// percent-escapes may decode to anything.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Query {
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Query {
    /// `None` when Go would report an error: a `;` in a pair or a bad
    /// percent-escape. Empty pairs are skipped; `key` alone has value "".
    pub fn parse(raw: &str) -> Option<Self> {
        let mut pairs = Vec::new();
        let mut failed = false;
        for piece in raw.split('&') {
            // Go keeps parsing after an error but reports it, and upstream
            // refuses the request on any error.
            if piece.contains(';') {
                failed = true;
                continue;
            }
            if piece.is_empty() {
                continue;
            }
            let (key, value) = piece.split_once('=').unwrap_or((piece, ""));
            match (unescape(key), unescape(value)) {
                (Some(k), Some(v)) => pairs.push((k, v)),
                _ => failed = true,
            }
        }
        (!failed).then_some(Query { pairs })
    }

    /// The first value given for `key`, as upstream's `Get`.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key.as_bytes())
            .map(|(_, v)| v.as_slice())
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Go's `QueryUnescape`: `+` is a space, `%XX` must be two hex digits.
fn unescape(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hi = hex(*b.get(i + 1)?)?;
                let lo = hex(*b.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' => {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_parse_query_rules() {
        let q = Query::parse("topic=a%23ephemeral&topic=second&node=h+x:1&flag").unwrap();
        assert_eq!(q.get("topic"), Some(&b"a#ephemeral"[..]));
        assert_eq!(q.get("node"), Some(&b"h x:1"[..]));
        assert_eq!(q.get("flag"), Some(&b""[..]));
        assert_eq!(q.get("channel"), None);
        assert_eq!(Query::parse("").unwrap(), Query::default());
        assert_eq!(Query::parse("&&=x").unwrap().get(""), Some(&b"x"[..]));
        assert_eq!(Query::parse("topic=%zz"), None);
        assert_eq!(Query::parse("topic=%4"), None);
        assert_eq!(Query::parse("topic=a;b=c"), None);
        assert_eq!(
            Query::parse("topic=%ff").unwrap().get("topic"),
            Some(&[0xff][..])
        );
    }
}
