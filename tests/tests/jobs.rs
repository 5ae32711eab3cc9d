//! Job-shard dispatch and server-side max attempts against the real nsqd:
//! dead letters on REQ and on timeout, kept across a restart.

use std::time::Duration;

use nsq_tests::{wait_until, within, NsqdProcess};
use serde_json::json;

/// Generous bound for state another process changes on its own.
const SETTLE: Duration = Duration::from_secs(10);

fn channel_stats(nsqd: &NsqdProcess, topic: &str, channel: &str) -> serde_json::Value {
    let stats = nsqd
        .http_get(&format!("/stats?format=json&topic={topic}"))
        .json();
    stats["topics"]
        .as_array()
        .and_then(|ts| ts.first())
        .and_then(|t| t["channels"].as_array())
        .and_then(|cs| cs.iter().find(|c| c["channel_name"] == channel))
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_messages_go_to_the_dead_letter_topic() {
    within(async {
        let nsqd = NsqdProcess::start(&[]);
        assert_eq!(nsqd.http_post("/topic/create?topic=orders", b"").status, 200);
        assert_eq!(
            nsqd.http_post("/channel/create?topic=orders&channel=billing", b"").status,
            200
        );
        // Unset: /stats keeps upstream's keys exactly.
        let plain = channel_stats(&nsqd, "orders", "billing");
        assert!(plain.get("max_attempts").is_none(), "{plain}");
        assert!(plain.get("dead_letter_topic").is_none(), "{plain}");

        // Bad input is refused with upstream-style names.
        let r = nsqd.http_post("/channel/max_attempts?topic=orders&channel=billing", b"");
        assert_eq!((r.status, r.json()["message"].clone()), (400, json!("MISSING_ARG_MAX_ATTEMPTS")));
        let r = nsqd.http_post("/channel/max_attempts?topic=orders&channel=billing&max_attempts=x", b"");
        assert_eq!((r.status, r.json()["message"].clone()), (400, json!("INVALID_ARG_MAX_ATTEMPTS")));
        let r = nsqd.http_post(
            "/channel/max_attempts?topic=orders&channel=billing&max_attempts=2&dead_letter_topic=orders",
            b"",
        );
        assert_eq!((r.status, r.json()["message"].clone()), (400, json!("INVALID_ARG_DEAD_LETTER_TOPIC")));
        let r = nsqd.http_post("/channel/max_attempts?topic=orders&channel=nope&max_attempts=2", b"");
        assert_eq!((r.status, r.json()["message"].clone()), (404, json!("CHANNEL_NOT_FOUND")));

        let r = nsqd.http_post("/channel/max_attempts?topic=orders&channel=billing&max_attempts=2", b"");
        assert_eq!(r.status, 200, "{}", r.text());
        let s = channel_stats(&nsqd, "orders", "billing");
        assert_eq!((s["max_attempts"].clone(), s["dead_letter_topic"].clone()), (json!(2), json!("orders.dead")));

        let mut c = nsqd.connect().await;
        c.identify_ok(json!({"msg_timeout": 1000})).await;
        c.sub("orders", "billing").await;
        c.rdy(1).await;
        let mut p = nsqd.connect().await;
        p.publish("orders", b"poison").await;

        // Attempt 1: REQ. Attempt 2: REQ again, which exhausts it.
        let m1 = c.read_message().await;
        assert_eq!(m1.attempts, 1);
        c.req(m1.id, 0).await;
        let m2 = c.read_message().await;
        assert_eq!((m2.id, m2.attempts), (m1.id, 2));
        c.req(m2.id, 0).await;

        // Attempts 1 and 2 of a second message time out instead.
        p.publish("orders", b"slow").await;
        let s1 = c.read_message_within(SETTLE).await;
        assert_eq!((s1.attempts, &s1.body[..]), (1, &b"slow"[..]));
        let s2 = c.read_message_within(SETTLE).await;
        assert_eq!((s2.id, s2.attempts), (s1.id, 2));

        wait_until(SETTLE, "both messages are in orders.dead", || {
            let s = channel_stats(&nsqd, "orders", "billing");
            let dead = nsqd.http_get("/stats?format=json&topic=orders.dead").json();
            let depth = dead["topics"][0]["depth"].as_u64().unwrap_or(0);
            if s["dead_count"] == 2 && depth == 2 && s["depth"] == 0 && s["in_flight_count"] == 0 {
                Ok(())
            } else {
                Err(format!("channel {s}, dead topic depth {depth}"))
            }
        })
        .await
        .unwrap_or_else(|e| nsqd.fail(&e));

        // The dead letters carry the original bodies.
        let mut d = nsqd.connect().await;
        d.identify_ok(json!({})).await;
        d.sub("orders.dead", "inspect").await;
        d.rdy(2).await;
        let mut bodies: Vec<Vec<u8>> = d.read_messages(2).await.into_iter().map(|m| m.body.to_vec()).collect();
        bodies.sort();
        assert_eq!(bodies, vec![b"poison".to_vec(), b"slow".to_vec()]);

        // The option survives a restart, through nsqd.dat.
        drop((c, p, d));
        let nsqd = nsqd.restart(&[]);
        let s = channel_stats(&nsqd, "orders", "billing");
        assert_eq!(s["max_attempts"], 2, "{s}");
        let r = nsqd.http_post(
            "/channel/max_attempts?topic=orders&channel=billing&max_attempts=0",
            b"",
        );
        assert_eq!(r.status, 200);
        let s = channel_stats(&nsqd, "orders", "billing");
        assert!(s.get("max_attempts").is_none(), "{s}");
    })
    .await;
}
