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
        nsq_app::url::parse_query(raw).map(|pairs| Query { pairs })
    }

    /// The first value given for `key`, as upstream's `Get`.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key.as_bytes())
            .map(|(_, v)| v.as_slice())
    }
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
