//! JSON output escaped the way Go's `encoding/json` escapes it, so response
//! bodies match upstream's bytes, not just their meaning.
//!
//! Go escapes `<`, `>` and `&` (HTML safety), U+2028 and U+2029 (JavaScript
//! safety), and every control character other than `\n`, `\r`, `\t` as
//! `\u00XX`; serde_json does none of the first five and writes `\b`, `\f`.
//! Hostnames and addresses come from peers, so the difference can show.

use std::io::{self, Write};

use serde::Serialize;
use serde_json::ser::{CharEscape, Formatter, Serializer};

#[derive(Debug, Clone, Copy, Default)]
struct GoFormatter;

impl Formatter for GoFormatter {
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let escape = match c {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            writer.write_all(&fragment.as_bytes()[start..i])?;
            writer.write_all(escape.as_bytes())?;
            start = i + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }

    fn write_char_escape<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        escape: CharEscape,
    ) -> io::Result<()> {
        let s: &[u8] = match escape {
            CharEscape::Quote => b"\\\"",
            CharEscape::ReverseSolidus => b"\\\\",
            CharEscape::Solidus => b"/",
            CharEscape::LineFeed => b"\\n",
            CharEscape::CarriageReturn => b"\\r",
            CharEscape::Tab => b"\\t",
            CharEscape::Backspace => b"\\u0008",
            CharEscape::FormFeed => b"\\u000c",
            CharEscape::AsciiControl(byte) => {
                return write!(writer, "\\u{byte:04x}");
            }
        };
        writer.write_all(s)
    }
}

/// Serialize `value` as Go would. Only maps with string keys and plain
/// structs reach here, which cannot fail to serialize.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    let mut ser = Serializer::with_formatter(&mut out, GoFormatter);
    if value.serialize(&mut ser).is_err() {
        out.clear();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_go() {
        let s = "a<b>&c\u{2028}\u{2029}\"\\/\n\r\t\u{8}\u{c}\u{1}é";
        assert_eq!(
            String::from_utf8(to_vec(&s)).unwrap(),
            r#""a\u003cb\u003e\u0026c\u2028\u2029\"\\/\n\r\t\u0008\u000c\u0001é""#
        );
        let map: std::collections::BTreeMap<&str, Vec<i64>> =
            [("b", vec![1]), ("a", vec![])].into();
        assert_eq!(to_vec(&map), br#"{"a":[],"b":[1]}"#);
    }
}
