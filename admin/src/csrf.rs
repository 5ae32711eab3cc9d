//! Refusing cross-site actions (CSRF): a page on another site must not be
//! able to make a visitor's browser pause, empty or delete anything.
//!
//! Two checks on every request that changes state:
//! - where it comes from: a browser says so in `Sec-Fetch-Site` (only
//!   `same-origin`, or `none` for what the user typed, pass) or, older
//!   browsers, in `Origin` (its host and port must be the `Host` asked).
//!   A request with neither header is a tool such as curl, not a browser
//!   carrying someone's session, and passes;
//! - what it carries: a POST (and a DELETE with a body, as the tombstone
//!   action) must be typed `application/json`. Browsers send a cross-site
//!   POST without asking first (a CORS preflight) only with form or
//!   `text/plain` bodies, so this alone stops the classic forged form.
//!   PUT and DELETE are never sent cross-site without a preflight, which
//!   we do not answer, so `PUT /config/*` keeps taking what upstream's
//!   users send it (`curl -X PUT -d ...`).

use hyper::header::{CONTENT_TYPE, HOST, ORIGIN};
use hyper::{HeaderMap, Method, StatusCode};

/// Why an action was refused; `message` is the API's error text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    CrossOrigin,
    NotJson,
}

impl Refusal {
    pub(crate) fn status(self) -> StatusCode {
        match self {
            Refusal::CrossOrigin => StatusCode::FORBIDDEN,
            Refusal::NotJson => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        }
    }

    pub(crate) fn message(self) -> &'static str {
        match self {
            Refusal::CrossOrigin => "CROSS_ORIGIN_FORBIDDEN",
            Refusal::NotJson => "CONTENT_TYPE_NOT_JSON",
        }
    }
}

/// Whether a state-changing request (`method` is not GET/HEAD) may run.
pub(crate) fn check(method: &Method, headers: &HeaderMap, has_body: bool) -> Result<(), Refusal> {
    if !same_origin(headers) {
        return Err(Refusal::CrossOrigin);
    }
    let needs_json = *method == Method::POST || (*method == Method::DELETE && has_body);
    if needs_json && !is_json(headers) {
        return Err(Refusal::NotJson);
    }
    Ok(())
}

fn header(headers: &HeaderMap, name: impl hyper::header::AsHeaderName) -> Option<&str> {
    headers.get(name).map(|v| v.to_str().unwrap_or("\u{0}"))
}

fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = header(headers, "sec-fetch-site") {
        // The browser's own verdict is the most reliable (it holds behind a
        // proxy that rewrites `Host`, too).
        return site.eq_ignore_ascii_case("same-origin") || site.eq_ignore_ascii_case("none");
    }
    let Some(origin) = header(headers, ORIGIN) else {
        return true;
    };
    // `Origin: null` (sandboxed frames, data: URLs) is never ours.
    let Some(authority) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    header(headers, HOST).is_some_and(|host| authority.eq_ignore_ascii_case(host))
}

fn is_json(headers: &HeaderMap) -> bool {
    header(headers, CONTENT_TYPE)
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_json_from_the_same_origin_passes() {
        let post = Method::POST;
        let json = ("content-type", "application/json");
        let host = ("host", "admin:4171");
        assert_eq!(check(&post, &headers(&[json, host]), true), Ok(()));
        assert_eq!(
            check(
                &post,
                &headers(&[json, host, ("origin", "http://admin:4171")]),
                true
            ),
            Ok(())
        );
        assert_eq!(
            check(
                &post,
                &headers(&[json, ("sec-fetch-site", "same-origin")]),
                true
            ),
            Ok(())
        );
        assert_eq!(
            check(
                &post,
                &headers(&[json, host, ("origin", "http://evil:4171")]),
                true
            ),
            Err(Refusal::CrossOrigin)
        );
        assert_eq!(
            check(&post, &headers(&[json, host, ("origin", "null")]), true),
            Err(Refusal::CrossOrigin)
        );
        assert_eq!(
            check(
                &post,
                &headers(&[json, ("sec-fetch-site", "cross-site")]),
                true
            ),
            Err(Refusal::CrossOrigin)
        );
        assert_eq!(
            check(
                &post,
                &headers(&[("content-type", "text/plain"), host]),
                true
            ),
            Err(Refusal::NotJson)
        );
        assert_eq!(
            check(&post, &headers(&[host]), false),
            Err(Refusal::NotJson)
        );
        assert_eq!(
            check(
                &post,
                &headers(&[("content-type", "Application/JSON; charset=utf-8")]),
                true
            ),
            Ok(())
        );
        // A body-less DELETE and a PUT need no type, but the same origin.
        assert_eq!(check(&Method::PUT, &headers(&[host]), true), Ok(()));
        assert_eq!(
            check(&Method::DELETE, &headers(&[host]), true),
            Err(Refusal::NotJson)
        );
        assert_eq!(check(&Method::DELETE, &headers(&[host]), false), Ok(()));
        assert_eq!(
            check(
                &Method::DELETE,
                &headers(&[host, ("origin", "https://evil")]),
                false
            ),
            Err(Refusal::CrossOrigin)
        );
    }
}
