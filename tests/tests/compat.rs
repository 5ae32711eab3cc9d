//! go-nsq's cheap live compatibility checks, reproduced with a raw client: the exact IDENTIFY
//! validation text, a V2 client pointed at the HTTP port, HTTP publishing, and bad magic.

use std::time::Duration;

use nsq_protocol::Frame;
use nsq_test_support::{describe, NsqdProcess, RawConn};
use serde_json::json;

/// go-nsq's `TestProducerHeartbeat` asserts this exact string.
#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn identify_heartbeat_interval_100_is_rejected_with_go_nsq_text() {
    let nsqd = NsqdProcess::start(&[]);
    let mut c = nsqd.connect().await;
    let reply = c
        .identify(json!({"feature_negotiation": true, "heartbeat_interval": 100}))
        .await;
    match reply {
        Frame::Error(d) => assert_eq!(
            String::from_utf8_lossy(&d),
            "E_BAD_BODY IDENTIFY heartbeat interval (100) is invalid"
        ),
        other => nsqd.fail(&format!("expected an error, got {}", describe(&other))),
    }
    // E_BAD_BODY is fatal: the server closes after the error frame.
    c.expect_closed_within(Duration::from_secs(5)).await;

    // 1000 ms is the smallest valid interval and must work.
    let mut c = nsqd.connect().await;
    let reply = c.identify_ok(json!({"heartbeat_interval": 1000})).await;
    assert_eq!(reply["version"], "1.3.0", "IDENTIFY reply: {reply}");
}

/// go-nsq's `TestProducerHTTPConnectionFails`: a V2 client that dialled the HTTP port must see
/// an HTTP response (its frame decoder reads the size 1213486160 = "HTTP").
#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_client_on_the_http_port_gets_an_http_response() {
    let nsqd = NsqdProcess::start(&[]);
    let mut c = RawConn::connect(nsqd.http_addr())
        .await
        .with_logs(nsqd.log_handle());
    // What go-nsq sends first: magic, then IDENTIFY. The HTTP server answers 400.
    c.write_raw(b"IDENTIFY\n\x00\x00\x00\x02{}").await;
    let got = c.read_raw(4).await;
    assert!(
        got.starts_with(b"HTTP"),
        "expected bytes starting with HTTP, got {:?}",
        String::from_utf8_lossy(&got)
    );
}

/// go-nsq's suite publishes with `POST /pub?topic=` and `POST /mpub?topic=` (newline mode)
/// and expects 200; the messages must then be consumable over TCP, in order.
#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_pub_and_mpub_are_consumable() {
    let nsqd = NsqdProcess::start(&[]);
    let topic = "http_pub";

    let r = nsqd.http_post(&format!("/pub?topic={topic}"), b"single");
    assert_eq!((r.status, r.text().as_str()), (200, "OK"), "{r:?}");
    let r = nsqd.http_post(&format!("/mpub?topic={topic}"), b"m1\nm2\nm3\n");
    assert_eq!((r.status, r.text().as_str()), (200, "OK"), "{r:?}");

    let mut c = nsqd.subscriber(topic, "ch").await;
    c.rdy(10).await;
    let msgs = c.read_messages(4).await;
    let bodies: Vec<&[u8]> = msgs.iter().map(|m| &m.body[..]).collect();
    assert_eq!(bodies, [&b"single"[..], b"m1", b"m2", b"m3"]);
    for m in &msgs {
        assert_eq!(m.attempts, 1);
        c.fin(m.id).await;
    }
    // Nothing else is pending: a round trip (PUB to another topic) answers OK right away,
    // and no error frame from the FINs comes before it.
    c.publish("other", b"x").await;
}

/// Anything but `"  V2"` gets one `E_BAD_PROTOCOL` error frame, then the connection closes.
#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_magic_gets_e_bad_protocol_and_close() {
    let nsqd = NsqdProcess::start(&[]);
    let mut c = nsqd.connect_without_magic().await;
    c.write_raw(b"  V9").await;
    let err = c.expect_error().await;
    assert!(err.starts_with("E_BAD_PROTOCOL"), "got {err:?}");
    c.expect_closed_within(Duration::from_secs(5)).await;
}
