//! `/config/:opt`: read any option by its config-file key (valued as
//! upstream's JSON encoding of its `Options`), and change the lookupd list
//! or the log level while running; only from `--allow-config-from-cidr`.

use std::net::IpAddr;

use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use nsq_app::logging::LogLevel;

use crate::context::Context;
use crate::routes::{Reply, Req};

/// Whether `ip` is inside `cidr` (`a.b.c.d/n` or an IPv6 prefix); `None`
/// when `cidr` does not parse.
pub(crate) fn cidr_contains(cidr: &str, ip: IpAddr) -> Option<bool> {
    let (net, bits) = cidr.split_once('/')?;
    let net: IpAddr = net.parse().ok()?;
    let bits: u32 = bits.parse().ok()?;
    // An IPv4 client on a dual-stack socket arrives as ::ffff:a.b.c.d.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) if bits <= 32 => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            Some(u32::from(n) & mask == u32::from(a) & mask)
        }
        (IpAddr::V6(n), IpAddr::V6(a)) if bits <= 128 => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            Some(u128::from(n) & mask == u128::from(a) & mask)
        }
        (IpAddr::V4(_), IpAddr::V6(_)) | (IpAddr::V6(_), IpAddr::V4(_)) => Some(false),
        _ => None,
    }
}

/// The value of the option whose config-file key is `key`; durations in
/// nanoseconds and the log level as upstream's number, as Go encodes them.
fn option_value(ctx: &Context, key: &str) -> Option<Value> {
    let o = &ctx.opts;
    Some(match key {
        "log_level" => json!(ctx.log_level.get().go_number()),
        "nsqlookupd_http_addresses" => json!(ctx.cluster.lookupds()),
        "nsqd_http_addresses" => json!(ctx.cluster.nsqds()),
        "admin_users" => json!(o.admin_user),
        // `history_interval` and `http_client_max_body_size` are ours,
        // beyond upstream.
        _ => {
            return nsq_app::option_field_json!(key, o,
                plain: [
                    log_prefix, http_address, base_path, graphite_url, proxy_graphite,
                    statsd_counter_format, statsd_gauge_format, statsd_prefix,
                    http_client_tls_insecure_skip_verify, http_client_tls_root_ca_file,
                    http_client_tls_cert, http_client_tls_key, allow_config_from_cidr,
                    notification_http_endpoint, acl_http_header, http_client_max_body_size,
                ],
                durations: [
                    statsd_interval, http_client_connect_timeout, http_client_request_timeout,
                    history_interval,
                ],
            )
        }
    })
}

/// `GET` reads an option; `PUT` sets `nsqlookupd_http_addresses` (a JSON
/// array) or `log_level` (text), then answers with the new value.
pub(crate) fn handle(ctx: &Context, req: &Req, remote: IpAddr) -> Reply {
    let cidr = &ctx.opts.allow_config_from_cidr;
    if !cidr.is_empty() {
        match cidr_contains(cidr, remote) {
            Some(true) => {}
            Some(false) => return Reply::error(StatusCode::FORBIDDEN, "FORBIDDEN"),
            None => {
                tracing::error!("invalid --allow-config-from-cidr {cidr:?}");
                return Reply::error(StatusCode::FORBIDDEN, "FORBIDDEN");
            }
        }
    }
    let opt = req.segments[1].as_str();
    if req.method == Method::PUT {
        if req.body.is_empty() {
            return Reply::error(StatusCode::PAYLOAD_TOO_LARGE, "INVALID_VALUE");
        }
        match opt {
            "nsqlookupd_http_addresses" => {
                let Ok(addrs) = serde_json::from_slice::<Option<Vec<String>>>(&req.body) else {
                    return Reply::error(StatusCode::BAD_REQUEST, "INVALID_VALUE");
                };
                let addrs = addrs.unwrap_or_default();
                if addrs.is_empty() && ctx.cluster.nsqds().is_empty() {
                    // Nothing would be left to ask.
                    return Reply::error(StatusCode::BAD_REQUEST, "INVALID_VALUE");
                }
                tracing::info!("nsqlookupd HTTP addresses now {addrs:?}");
                ctx.cluster.set_lookupds(addrs);
            }
            "log_level" => {
                let level = std::str::from_utf8(&req.body)
                    .ok()
                    .and_then(|s| s.trim().parse::<LogLevel>().ok());
                let Some(level) = level else {
                    return Reply::error(StatusCode::BAD_REQUEST, "INVALID_VALUE");
                };
                ctx.log_level.set(level);
            }
            _ => return Reply::error(StatusCode::BAD_REQUEST, "INVALID_OPTION"),
        }
    }
    match option_value(ctx, opt) {
        Some(v) => Reply::json(&v),
        None => Reply::error(StatusCode::BAD_REQUEST, "INVALID_OPTION"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs() {
        assert_eq!(cidr_contains("127.0.0.1/8", ip("127.9.9.9")), Some(true));
        assert_eq!(cidr_contains("127.0.0.1/8", ip("10.0.0.1")), Some(false));
        assert_eq!(
            cidr_contains("127.0.0.1/8", ip("::ffff:127.0.0.2")),
            Some(true)
        );
        assert_eq!(cidr_contains("0.0.0.0/0", ip("8.8.8.8")), Some(true));
        assert_eq!(cidr_contains("fd00::/8", ip("fd12::1")), Some(true));
        assert_eq!(cidr_contains("fd00::/8", ip("127.0.0.1")), Some(false));
        assert_eq!(cidr_contains("127.0.0.1", ip("127.0.0.1")), None);
        assert_eq!(cidr_contains("127.0.0.1/33", ip("127.0.0.1")), None);
    }
}
