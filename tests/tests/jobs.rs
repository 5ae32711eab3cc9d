//! Job-shard dispatch and server-side max attempts against the real nsqd:
//! dead letters on REQ and on timeout, kept across a restart; capacity
//! declared in IDENTIFY, and a hung worker losing its shards at its timeout.

use std::time::Duration;

use bytes::Bytes;
use nsq_protocol::job::{peek_load, Shard};
use nsq_protocol::message::MessageFrame;
use nsq_test_support::{wait_until, NsqdProcess};
use serde_json::json;

/// Generous bound for state another process changes on its own.
const SETTLE: Duration = Duration::from_secs(10);

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_messages_go_to_the_dead_letter_topic() {
    let nsqd = NsqdProcess::start(&[]);
    nsqd.create_channel("orders", "billing");
    // Unset: /stats keeps upstream's keys exactly.
    let plain = nsqd.channel_stats("orders", "billing");
    assert!(plain.get("max_attempts").is_none(), "{plain}");
    assert!(plain.get("dead_letter_topic").is_none(), "{plain}");

    // Bad input is refused with upstream-style names.
    for (query, status, name) in [
        ("channel=billing", 400, "MISSING_ARG_MAX_ATTEMPTS"),
        (
            "channel=billing&max_attempts=x",
            400,
            "INVALID_ARG_MAX_ATTEMPTS",
        ),
        (
            "channel=billing&max_attempts=2&dead_letter_topic=orders",
            400,
            "INVALID_ARG_DEAD_LETTER_TOPIC",
        ),
        ("channel=nope&max_attempts=2", 404, "CHANNEL_NOT_FOUND"),
    ] {
        let r = nsqd.http_post(&format!("/channel/max_attempts?topic=orders&{query}"), b"");
        assert_eq!(
            (r.status, r.json()["message"].clone()),
            (status, json!(name)),
            "{query}"
        );
    }

    nsqd.post_ok(
        "/channel/max_attempts?topic=orders&channel=billing&max_attempts=2",
        b"",
    );
    let s = nsqd.channel_stats("orders", "billing");
    assert_eq!(
        (s["max_attempts"].clone(), s["dead_letter_topic"].clone()),
        (json!(2), json!("orders.dead"))
    );

    let identify = json!({"msg_timeout": 1000});
    let mut c = nsqd.consumer(identify, "orders", "billing", 1).await;
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
        let s = nsqd.channel_stats("orders", "billing");
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
    let mut d = nsqd.subscriber("orders.dead", "inspect").await;
    d.rdy(2).await;
    let mut bodies: Vec<Vec<u8>> = d
        .read_messages(2)
        .await
        .into_iter()
        .map(|m| m.body.to_vec())
        .collect();
    bodies.sort();
    assert_eq!(bodies, vec![b"poison".to_vec(), b"slow".to_vec()]);

    // The option survives a restart, through nsqd.dat.
    drop((c, p, d));
    let nsqd = nsqd.restart(&[]);
    let s = nsqd.channel_stats("orders", "billing");
    assert_eq!(s["max_attempts"], 2, "{s}");
    let r = nsqd.http_post(
        "/channel/max_attempts?topic=orders&channel=billing&max_attempts=0",
        b"",
    );
    assert_eq!(r.status, 200);
    let s = nsqd.channel_stats("orders", "billing");
    assert!(s.get("max_attempts").is_none(), "{s}");
}

/// The shard items `messages` carry, sorted.
fn sorted_items(messages: &[MessageFrame]) -> Vec<u32> {
    let mut items: Vec<u32> = messages
        .iter()
        .map(|m| peek_load(&m.body).unwrap().item)
        .collect();
    items.sort();
    items
}

fn shard(item: u32, load: u32) -> Vec<u8> {
    Shard {
        job: "jobs".into(),
        fire: "f1".into(),
        item,
        load,
        param: String::new(),
        payload: Bytes::new(),
    }
    .encode()
    .unwrap()
    .to_vec()
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_bounds_load_and_a_hung_worker_loses_its_shards_at_its_timeout() {
    let nsqd = NsqdProcess::start(&[]);
    // IDENTIFY refuses a zero capacity.
    let mut bad = nsqd.connect().await;
    let reply = bad.identify(json!({"capacity": 0})).await;
    assert_eq!(
        reply,
        nsq_protocol::Frame::Error(Bytes::from_static(
            b"E_BAD_BODY IDENTIFY capacity (0) is invalid"
        ))
    );

    // The hung worker: capacity 3, a 1 s timeout, RDY far above.
    let identify = json!({"capacity": 3, "client_id": "hung", "msg_timeout": 1000});
    let mut hung = nsqd.consumer(identify, "jobs", "workers", 10).await;
    let mut p = nsqd.connect().await;
    let bodies = [shard(0, 2), shard(1, 2), shard(2, 1)];
    p.publish_multi("jobs", &[&bodies[0], &bodies[1], &bodies[2]])
        .await;
    // Heaviest first within capacity 3: one load-2 shard, then the
    // load-1 one; the other load-2 shard does not fit.
    let got = hung.read_messages(2).await;
    assert_eq!(sorted_items(&got), [0, 2]);
    let s = nsqd.http_get("/job/status?job=jobs").json();
    assert_eq!(s["jobs"][0]["workers"][0]["load"], 3, "{s}");
    assert_eq!(s["jobs"][0]["fires"][0]["pending"], 1, "{s}");

    // A second worker takes the pending shard; the hung one never
    // answers, so at its timeout its two shards go to the other.
    let identify = json!({"capacity": 5, "client_id": "good"});
    let mut good = nsqd.consumer(identify, "jobs", "workers", 10).await;
    let first = good.read_message().await;
    assert_eq!(peek_load(&first.body).unwrap().item, 1);
    let again = good.read_messages(2).await;
    assert_eq!(sorted_items(&again), [0, 2]);
    assert!(again.iter().all(|m| m.attempts == 2));
    for m in std::iter::once(&first).chain(&again) {
        good.fin(m.id).await;
    }
    wait_until(SETTLE, "three shards done by the good worker", || {
        let s = nsqd.http_get("/job/status?job=jobs").json();
        let f = &s["jobs"][0]["fires"][0];
        let by_good = f["shards"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|sh| sh["worker"] == "good")
            .count();
        if f["done"] == 3 && by_good == 3 {
            Ok(())
        } else {
            Err(s.to_string())
        }
    })
    .await
    .unwrap_or_else(|e| nsqd.fail(&e));
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_cycles_are_refused() {
    let nsqd = NsqdProcess::start(&[]);
    for (t, c) in [
        ("orders", "billing"),
        ("refunds", "audit"),
        ("orders.dead", "inspect"),
    ] {
        nsqd.create_channel(t, c);
    }
    let set = |t: &str, c: &str, dead: &str| {
        let dead = if dead.is_empty() {
            String::new()
        } else {
            format!("&dead_letter_topic={dead}")
        };
        nsqd.http_post(
            &format!("/channel/max_attempts?topic={t}&channel={c}&max_attempts=1{dead}"),
            b"",
        )
    };
    // orders -> refunds is fine on its own.
    let r = set("orders", "billing", "refunds");
    assert_eq!(r.status, 200, "{}", r.text());
    // refunds -> orders would close the loop: one failing message would
    // go round for ever, copied to every channel on the way.
    let r = set("refunds", "audit", "orders");
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["message"], "DEAD_LETTER_CYCLE", "{}", r.text());
    // Through default names too: orders -> orders.dead (default), then
    // orders.dead -> refunds -> ... -> orders.
    let r = set("orders", "billing", "");
    assert_eq!(r.status, 200, "{}", r.text());
    let r = set("orders.dead", "inspect", "orders");
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["message"], "DEAD_LETTER_CYCLE", "{}", r.text());
    // A chain without a loop is accepted; nothing was changed by the refusals.
    let r = set("refunds", "audit", "graveyard");
    assert_eq!(r.status, 200, "{}", r.text());
    let stats = nsqd.http_get("/stats?format=json&topic=orders.dead").json();
    let inspect = &stats["topics"][0]["channels"][0];
    assert!(inspect.get("max_attempts").is_none(), "{inspect}");
}
