//! `/config/:opt`: `GET` reads any option by its config-file key, valued as
//! upstream's JSON encoding of its `Options` struct; `PUT` changes the live
//! ones (see `config.rs`).

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use nsq_app::logging::LogLevel;
use serde_json::{json, Value};

use super::{json, read_body, Reply};
use crate::nsqd::Nsqd;
use crate::options::Options;

const fn bad(name: &'static str) -> (StatusCode, &'static str) {
    (StatusCode::BAD_REQUEST, name)
}

/// `GET /config/:opt` reads an option by its config-file key; `PUT` sets
/// `nsqlookupd_tcp_addresses` (a JSON array) or `log_level` (raw text), then
/// answers with the new value.
pub(super) async fn config(nsqd: &Arc<Nsqd>, req: Request<Incoming>, opt: &str) -> Reply {
    if req.method() == Method::PUT {
        let max = nsqd.opts.max_msg_size as u64;
        let body = read_body(req, max, "INVALID_VALUE").await?;
        if body.is_empty() {
            return Err((StatusCode::PAYLOAD_TOO_LARGE, "INVALID_VALUE"));
        }
        match opt {
            "nsqlookupd_tcp_addresses" => {
                // Go decodes `null` into an empty list without complaint.
                let addrs: Option<Vec<String>> =
                    serde_json::from_slice(&body).map_err(|_| bad("INVALID_VALUE"))?;
                nsqd.live
                    .set_lookupd_tcp_addresses(addrs.unwrap_or_default(), |a| {
                        nsqd.lookup.set_addresses(nsqd.clone(), a)
                    });
            }
            "log_level" => {
                let level: LogLevel = std::str::from_utf8(&body)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or(bad("INVALID_VALUE"))?;
                nsqd.live.set_log_level(level);
            }
            _ => return Err(bad("INVALID_OPTION")),
        }
    }
    let value = option_value(nsqd, opt).ok_or(bad("INVALID_OPTION"))?;
    Ok(json(&value))
}

/// `GET /config/log_level`'s number for `level` (see `LogLevel::go_number`).
pub fn log_level_number(level: LogLevel) -> i64 {
    level.go_number()
}

/// Upstream's `TLSRequired` int: 0 not required, 1 required except HTTP,
/// 2 required; a client auth policy raises 0 to 2 as upstream does at start.
fn tls_required_number(o: &Options) -> i64 {
    let n = match o.tls_required.as_str() {
        "true" | "1" => 2,
        "tcp-https" => 1,
        _ => 0,
    };
    if n == 0 && !o.tls_client_auth_policy.is_empty() {
        2
    } else {
        n
    }
}

/// Go's `tls.VersionTLS1x` constants, which upstream stores.
fn tls_min_version_number(v: &str) -> i64 {
    match v.to_ascii_lowercase().as_str() {
        "ssl3.0" => 0x0300,
        "tls1.1" => 0x0302,
        "tls1.2" => 0x0303,
        "tls1.3" => 0x0304,
        _ => 0x0301,
    }
}

/// The advertised port: the flag, or (0) the port actually listened on, as
/// upstream fills it in at startup.
fn broadcast_port(flag: u16, actual: Option<u16>) -> i64 {
    i64::from(if flag > 0 { flag } else { actual.unwrap_or(0) })
}

/// The value of the option whose config-file key is `key`, as upstream's
/// `getOptByCfgName` would encode it; `None` for an unknown key.
pub fn option_value(nsqd: &Nsqd, key: &str) -> Option<Value> {
    let o = &nsqd.opts;
    Some(match key {
        "id" => json!(o.effective_node_id()),
        "log_level" => json!(log_level_number(nsqd.live.log_level())),
        "broadcast_address" => json!(o.broadcast_address()),
        "broadcast_tcp_port" => json!(broadcast_port(
            o.broadcast_tcp_port,
            Some(nsqd.tcp_addr().port())
        )),
        "broadcast_http_port" => json!(broadcast_port(
            o.broadcast_http_port,
            nsqd.http_addr().map(|a| a.port())
        )),
        "nsqlookupd_tcp_addresses" => json!(nsqd.live.lookupd_tcp_addresses()),
        "auth_http_addresses" => json!(o.auth_http_address),
        // Upstream rewrites the prefix with the host key at startup, so the
        // value read back is the effective one.
        "statsd_prefix" => json!(crate::statsd::prefix(nsqd)),
        "e2e_processing_latency_percentiles" => {
            // A nil Go slice when none is configured.
            let p = o.e2e_percentiles().unwrap_or_default();
            if p.is_empty() {
                Value::Null
            } else {
                json!(p)
            }
        }
        "tls_required" => json!(tls_required_number(o)),
        "tls_min_version" => json!(tls_min_version_number(&o.tls_min_version)),
        // `durable` is ours, beyond upstream.
        _ => {
            return nsq_app::option_field_json!(key, o,
                plain: [
                    log_prefix, tcp_address, http_address, https_address,
                    auth_http_request_method, data_path, mem_queue_size, max_bytes_per_file,
                    sync_every, queue_scan_selection_count, queue_scan_worker_pool_max,
                    max_msg_size, max_body_size, max_rdy_count, max_output_buffer_size,
                    max_channel_consumers, job_min_workers, statsd_address, statsd_mem_stats,
                    statsd_udp_packet_size, statsd_exclude_ephemeral, tls_cert, tls_key,
                    tls_client_auth_policy, tls_root_ca_file, deflate, max_deflate_level,
                    snappy, topology_region, topology_zone, enable_experiment, durable,
                ],
                durations: [
                    http_client_connect_timeout, http_client_request_timeout, sync_timeout,
                    msg_timeout, max_msg_timeout, max_req_timeout, max_heartbeat_interval,
                    max_output_buffer_timeout, min_output_buffer_timeout, output_buffer_timeout,
                    job_settle_time, statsd_interval, e2e_processing_latency_window_time,
                ],
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_numbers_for_enums() {
        assert_eq!(log_level_number(LogLevel::Debug), 1);
        assert_eq!(log_level_number(LogLevel::Fatal), 5);
        assert_eq!(tls_min_version_number("tls1.0"), 769);
        assert_eq!(tls_min_version_number("TLS1.2"), 771);
        let mut o = Options::default();
        assert_eq!(tls_required_number(&o), 0);
        o.tls_required = "tcp-https".into();
        assert_eq!(tls_required_number(&o), 1);
        o.tls_required = "false".into();
        o.tls_client_auth_policy = "require".into();
        assert_eq!(tls_required_number(&o), 2);
    }
}
