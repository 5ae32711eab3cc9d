//! Go's `%q` formatting of strings, which upstream uses in error texts such as
//! `E_BAD_TOPIC PUB topic name "x y" is not valid`.

/// Quote bytes the way Go's `strconv.Quote` does: printable text stays as is,
/// `"` and `\` are escaped, control bytes and invalid UTF-8 become escapes.
pub fn go_quote(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    let mut rest = bytes;
    while !rest.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(valid) => {
                push_chars(&mut out, valid);
                rest = &[];
            }
            Err(err) => {
                let (valid, tail) = rest.split_at(err.valid_up_to());
                // The prefix was checked by `from_utf8` just above.
                push_chars(&mut out, std::str::from_utf8(valid).unwrap_or_default());
                let bad = err.error_len().unwrap_or(tail.len()).max(1);
                for b in &tail[..bad] {
                    out.push_str(&format!("\\x{b:02x}"));
                }
                rest = &tail[bad..];
            }
        }
    }
    out.push('"');
    out
}

fn push_chars(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => {
                let n = c as u32;
                if n > 0xffff {
                    out.push_str(&format!("\\U{n:08x}"));
                } else {
                    out.push_str(&format!("\\u{n:04x}"));
                }
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::go_quote;

    #[test]
    fn quotes_like_go() {
        assert_eq!(go_quote(b"abc"), "\"abc\"");
        assert_eq!(go_quote(b"a b"), "\"a b\"");
        assert_eq!(go_quote(b"a\"b\\"), "\"a\\\"b\\\\\"");
        assert_eq!(go_quote(b"t\n\x01"), "\"t\\n\\x01\"");
        assert_eq!(go_quote(b"\xff!"), "\"\\xff!\"");
        assert_eq!(go_quote("é".as_bytes()), "\"é\"");
        assert_eq!(go_quote(b""), "\"\"");
    }
}
