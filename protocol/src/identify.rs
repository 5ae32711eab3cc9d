//! The IDENTIFY request body a client sends and the JSON nsqd answers with
//! when the client asked for feature negotiation.

use serde::{Deserialize, Serialize};

use crate::{ErrorCode, ProtocolError};

/// IDENTIFY body. Every field is optional on the wire; unknown keys are
/// ignored, as upstream's JSON decoding does.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IdentifyRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feature_negotiation: Option<bool>,
    /// Milliseconds; -1 disables heartbeats, 0 means the server default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval: Option<i64>,
    /// Bytes; -1 disables buffering, 0 means the server default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_buffer_size: Option<i64>,
    /// Milliseconds; -1 disables timed flushes, 0 means the server default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_buffer_timeout: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_v1: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snappy: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deflate: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deflate_level: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_rate: Option<i64>,
    /// Milliseconds; 0 means the server's `--msg-timeout`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub msg_timeout: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topology_region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topology_zone: Option<String>,
    /// Job-mode extension: the load units this worker can hold at once.
    /// Plain NSQ clients never send it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u64>,
}

impl IdentifyRequest {
    /// Parse an IDENTIFY body; a body that is not a JSON object of the right
    /// types gets upstream's error.
    /// As Go's `json.Unmarshal`: `null` sets nothing, and bytes that are
    /// not UTF-8 inside strings become U+FFFD instead of failing.
    pub fn parse(body: &[u8]) -> Result<Self, ProtocolError> {
        let text = String::from_utf8_lossy(body);
        serde_json::from_str::<Option<Self>>(&text)
            .map(Option::unwrap_or_default)
            .map_err(|_| {
                ProtocolError::new(ErrorCode::BadBody, "IDENTIFY failed to decode JSON body")
            })
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The request as upstream nsqd 1.3.0 logs it (Go's `%+v` of its
    /// identify struct, absent fields as zero values), so log parsers that
    /// read `[ADDR] IDENTIFY: {...}` lines keep working.
    pub fn upstream_log_text(&self) -> String {
        let s = |v: &Option<String>| v.clone().unwrap_or_default();
        let i = |v: Option<i64>| v.unwrap_or(0);
        let b = |v: Option<bool>| v.unwrap_or(false);
        format!(
            "{{ClientID:{} Hostname:{} HeartbeatInterval:{} OutputBufferSize:{} \
             OutputBufferTimeout:{} FeatureNegotiation:{} TLSv1:{} Deflate:{} DeflateLevel:{} \
             Snappy:{} SampleRate:{} UserAgent:{} MsgTimeout:{}}}",
            s(&self.client_id),
            s(&self.hostname),
            i(self.heartbeat_interval),
            i(self.output_buffer_size),
            i(self.output_buffer_timeout),
            b(self.feature_negotiation),
            b(self.tls_v1),
            b(self.deflate),
            i(self.deflate_level),
            b(self.snappy),
            i(self.sample_rate),
            s(&self.user_agent),
            i(self.msg_timeout),
        )
    }
}

/// nsqd's answer to IDENTIFY with `feature_negotiation`. Field order is the
/// wire order; every upstream field is always present (tokio-nsq decodes
/// strictly). The topology fields are ours: sent only when configured, as
/// 1.3.0 has none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdentifyResponse {
    pub max_rdy_count: i64,
    pub version: String,
    pub max_msg_timeout: i64,
    pub msg_timeout: i64,
    pub tls_v1: bool,
    pub deflate: bool,
    pub deflate_level: i64,
    pub max_deflate_level: i64,
    pub snappy: bool,
    pub sample_rate: i64,
    pub auth_required: bool,
    pub output_buffer_size: i64,
    pub output_buffer_timeout: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub topology_region: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub topology_zone: String,
}

impl IdentifyResponse {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// nsqd's answer to AUTH.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuthResponse {
    pub identity: String,
    pub identity_url: String,
    pub permission_count: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_nsq_identify() {
        let body = br#"{"client_id":"h","deflate":false,"deflate_level":6,"feature_negotiation":true,"heartbeat_interval":30000,"hostname":"h.local","long_id":"h.local","msg_timeout":0,"output_buffer_size":16384,"output_buffer_timeout":250,"sample_rate":0,"short_id":"h","snappy":false,"tls_v1":false,"user_agent":"go-nsq/1.1.0"}"#;
        let req = IdentifyRequest::parse(body).unwrap();
        assert_eq!(req.client_id.as_deref(), Some("h"));
        assert_eq!(req.heartbeat_interval, Some(30000));
        assert_eq!(req.feature_negotiation, Some(true));
        assert_eq!(req.topology_zone, None);
    }

    #[test]
    fn nulls_and_bad_json() {
        let req = IdentifyRequest::parse(br#"{"hostname":null,"heartbeat_interval":-1}"#).unwrap();
        assert_eq!(req.hostname, None);
        assert_eq!(req.heartbeat_interval, Some(-1));
        let err = IdentifyRequest::parse(b"{nope").unwrap_err();
        assert_eq!(
            err.to_string(),
            "E_BAD_BODY IDENTIFY failed to decode JSON body"
        );
        assert!(IdentifyRequest::parse(br#"{"heartbeat_interval":"1"}"#).is_err());
    }

    #[test]
    fn response_key_order() {
        let r = IdentifyResponse {
            max_rdy_count: 2500,
            version: "1.3.0".into(),
            max_msg_timeout: 900000,
            msg_timeout: 60000,
            tls_v1: false,
            deflate: false,
            deflate_level: 6,
            max_deflate_level: 6,
            snappy: false,
            sample_rate: 0,
            auth_required: false,
            output_buffer_size: 16384,
            output_buffer_timeout: 250,
            topology_region: String::new(),
            topology_zone: String::new(),
        };
        assert_eq!(
            String::from_utf8(r.to_json()).unwrap(),
            r#"{"max_rdy_count":2500,"version":"1.3.0","max_msg_timeout":900000,"msg_timeout":60000,"tls_v1":false,"deflate":false,"deflate_level":6,"max_deflate_level":6,"snappy":false,"sample_rate":0,"auth_required":false,"output_buffer_size":16384,"output_buffer_timeout":250}"#
        );
    }

    #[test]
    fn null_and_invalid_utf8_are_accepted_as_go_does() {
        assert_eq!(
            IdentifyRequest::parse(b"null").unwrap(),
            IdentifyRequest::default()
        );
        let req = IdentifyRequest::parse(b"{\"client_id\":\"a\xff\"}").unwrap();
        assert_eq!(req.client_id.as_deref(), Some("a\u{fffd}"));
    }
}
