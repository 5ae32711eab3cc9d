//! The dashboard's files, compiled into the binary: one HTML document for
//! every page path (the script draws the page), the script and the style
//! sheet. No build step and no Node toolchain.

use hyper::StatusCode;
use serde_json::json;

use crate::context::Context;
use crate::routes::Reply;

const INDEX: &str = include_str!("../static/index.html");

/// `/static/<name>`: name, content type, bytes.
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "app.js",
        "application/javascript; charset=utf-8",
        include_bytes!("../static/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../static/app.css"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("../static/favicon.svg"),
    ),
];

/// The page, with what the script needs to know set as a global (upstream's
/// index template sets `BASE_PATH`, `IS_ADMIN` and friends the same way).
pub(crate) fn index(ctx: &Context, is_admin: bool) -> Reply {
    let config = json!({
        "version": nsq_app::VERSION,
        "base_path": ctx.base,
        "is_admin": is_admin,
        "lookupd": ctx.lookupd_mode(),
        "interval_ms": ctx.history.interval().as_millis() as u64,
    });
    // `</` cannot end the script element from inside a JSON string.
    let config = config.to_string().replace("</", "<\\/");
    Reply::Html(
        INDEX
            .replace("{{BASE}}", &ctx.base)
            .replace("{{CONFIG}}", &config),
    )
}

pub(crate) fn asset(name: &str) -> Reply {
    match FILES.iter().find(|(n, _, _)| *n == name) {
        Some((_, ct, bytes)) => Reply::Asset(ct, bytes),
        None => Reply::error(StatusCode::NOT_FOUND, "NOT_FOUND"),
    }
}
