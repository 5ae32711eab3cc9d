//! Golden upstream samples (responses captured from NSQ 1.3.0 with curl) and the comparisons
//! the HTTP tests make against them: status line, header names and meaningful values, and the
//! JSON shape of the body.

use std::path::PathBuf;

use serde_json::Value;

use crate::http::{parse_head, HttpResponse};

/// Where the golden samples live: `shared/spec/samples` beside the checkout.
pub fn samples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/spec/samples")
}

/// A golden sample's body bytes (the trailing newline of the file removed).
pub fn sample_body(name: &str) -> Vec<u8> {
    let path = samples_dir().join(name);
    let body =
        std::fs::read(&path).unwrap_or_else(|e| panic!("golden sample {} - {e}", path.display()));
    body.strip_suffix(b"\n").unwrap_or(&body).to_vec()
}

/// A golden upstream sample: `<name>.headers` parsed and `<name>.json`.
pub fn sample(name: &str) -> HttpResponse {
    let path = samples_dir().join(format!("{name}.headers"));
    let head = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("golden sample {} - {e}", path.display()));
    let head = head.replace("\r\n", "\n").trim_end().replace('\n', "\r\n");
    let mut resp = parse_head(head.as_bytes())
        .unwrap_or_else(|e| panic!("golden sample {} - {e}", path.display()));
    resp.body = sample_body(&format!("{name}.json"));
    resp
}

/// The structure of a JSON value: object keys with the structure of their
/// values, the structure of the first array element (the others must agree
/// with it), scalar type names.
pub fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        Value::Array(items) => {
            let shapes: Vec<Value> = items.iter().map(shape).collect();
            if let Some(first) = shapes.first() {
                assert!(
                    shapes.iter().all(|s| compatible(s, first)),
                    "array elements differ in shape: {shapes:?}"
                );
            }
            Value::Array(shapes.into_iter().take(1).collect())
        }
        Value::String(_) => "string".into(),
        Value::Number(n) if n.is_f64() => "float".into(),
        Value::Number(_) => "int".into(),
        Value::Bool(_) => "bool".into(),
        Value::Null => "null".into(),
    }
}

/// Every object key of a JSON text in document order, to check that
/// fields come in upstream's order (a parsed `Value` sorts them).
pub fn key_order(json: &[u8]) -> Vec<String> {
    let mut keys = Vec::new();
    let mut i = 0;
    while i < json.len() {
        if json[i] != b'"' {
            i += 1;
            continue;
        }
        let start = i + 1;
        i += 1;
        while i < json.len() && json[i] != b'"' {
            i += if json[i] == b'\\' { 2 } else { 1 };
        }
        let s = String::from_utf8_lossy(&json[start..i.min(json.len())]).into_owned();
        i += 1;
        let mut j = i;
        while j < json.len() && json[j].is_ascii_whitespace() {
            j += 1;
        }
        if json.get(j) == Some(&b':') {
            keys.push(s);
        }
    }
    keys
}

/// Two shapes agree, an empty array agreeing with any array.
fn compatible(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Array(x), Value::Array(y)) => match (x.first(), y.first()) {
            (Some(x), Some(y)) => compatible(x, y),
            _ => true,
        },
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| compatible(v, w)))
        }
        _ => a == b,
    }
}

/// Compare a response with a golden sample: status line, header names as
/// sent and the values that carry meaning (Date and Content-Length vary), and
/// the JSON shape (or exact bytes) of the body.
pub fn assert_like_sample(got: &HttpResponse, name: &str) {
    let want = sample(name);
    assert_eq!(got.status_line, want.status_line, "{name}: status line");
    let names = |r: &HttpResponse| {
        let mut n: Vec<String> = r.headers.iter().map(|(k, _)| k.clone()).collect();
        n.sort();
        n
    };
    assert_eq!(names(got), names(&want), "{name}: header names");
    for (k, v) in &want.headers {
        if k != "Date" && k != "Content-Length" {
            assert_eq!(got.header(k), Some(v.as_str()), "{name}: header {k}");
        }
    }
    if want.header("Content-Type") == Some("application/json; charset=utf-8") {
        assert_eq!(
            shape(&got.json()),
            shape(&want.json()),
            "{name}: JSON shape"
        );
    } else {
        assert_eq!(got.text(), want.text(), "{name}: body");
        assert_eq!(got.body, want.body, "{name}: body bytes");
    }
}

/// [`assert_like_sample`], and the body's object keys come in the order of the sample's
/// `NAME.json` (upstream's field order).
pub fn assert_like_sample_in_order(got: &HttpResponse, name: &str) {
    assert_like_sample(got, name);
    assert_eq!(
        key_order(&got.body),
        key_order(&sample_body(&format!("{name}.json"))),
        "{name}: key order"
    );
}
