//! nsqadmin's jobs page end to end: `/api/jobs` shows what nsqd's
//! `/job/status` says (shards pending, running on a worker, done, dead, with
//! attempts; worker load and capacity), with the dead letters waiting; the
//! requeue action moves dead letters back to the job topic, where a worker
//! gets them again, and they are gone from the dead-letter topic; an nsqd
//! that does not answer is listed as unreachable.

use std::net::{SocketAddr, TcpListener};

use bytes::Bytes;
use nsq_protocol::job::Shard;
use nsq_test_support::admin::{AdminCluster, SETTLE};
use nsq_test_support::{wait_until, NsqadminProcess, NsqdProcess};
use serde_json::{json, Value};

fn shard(item: u32, load: u32) -> Shard {
    Shard {
        job: "render".into(),
        fire: "f1".into(),
        item,
        load,
        param: format!("p{item}"),
        payload: Bytes::from_static(b"frame"),
    }
}

/// The `render`/`workers` entry of `/api/jobs`.
fn render_job(body: &Value) -> Option<Value> {
    body["jobs"]
        .as_array()?
        .iter()
        .find(|j| j["job"] == "render" && j["channel"] == "workers")
        .cloned()
}

/// Shard `item` of fire f1 in the job entry's (only) node.
fn shard_of(job: &Value, item: u32) -> Value {
    job["nodes"][0]["fires"]
        .as_array()
        .and_then(|fs| fs.iter().find(|f| f["fire"] == "f1"))
        .and_then(|f| f["shards"].as_array())
        .and_then(|ss| ss.iter().find(|s| s["item"] == item))
        .cloned()
        .unwrap_or(Value::Null)
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_page_shows_status_and_requeues_dead_letters() {
    let c = AdminCluster::start(&[]);
    c.nsqd_dead_letter_channel("render", "workers").await;

    // The fire is queued before the worker joins, so dispatch sees it whole.
    let bodies: Vec<Bytes> = [(0, 2), (1, 1), (2, 3)]
        .into_iter()
        .map(|(item, load)| shard(item, load).encode().unwrap())
        .collect();
    let mut p = c.nsqd.connect().await;
    p.publish_multi("render", &bodies.iter().map(|b| &b[..]).collect::<Vec<_>>())
        .await;
    let identify = json!({"capacity": 5, "client_id": "w1"});
    let mut worker = c.nsqd.consumer(identify, "render", "workers", 10).await;

    // Heaviest first within capacity 5: items 2 (load 3) and 0 (load 2).
    let first = worker.read_messages(2).await;
    let item = |m: &nsq_protocol::message::MessageFrame| Shard::decode(&m.body).unwrap().item;
    let (m2, m0) = match (item(&first[0]), item(&first[1])) {
        (2, 0) => (&first[0], &first[1]),
        (0, 2) => (&first[1], &first[0]),
        other => c.fail(&format!("first shards {other:?}")),
    };
    let original_body = m0.body.clone();
    worker.fin(m2.id).await;
    // One attempt allowed: giving item 0 back makes it a dead letter.
    worker.req(m0.id, 0).await;
    // Item 1 comes next and stays running.
    let m1 = worker.read_message_within(SETTLE).await;
    assert_eq!(item(&m1), 1);

    let job = wait_until(SETTLE, "/api/jobs shows done, dead, running", || {
        let body = c.admin_json("/api/jobs");
        let job = render_job(&body).ok_or_else(|| body.to_string())?;
        let (s0, s1, s2) = (shard_of(&job, 0), shard_of(&job, 1), shard_of(&job, 2));
        if s2["state"] == "done"
            && s0["state"] == "dead"
            && s1["state"] == "running"
            && job["dead_letters"] == 1
        {
            Ok(job)
        } else {
            Err(body.to_string())
        }
    })
    .await
    .unwrap_or_else(|e| c.fail(&e));
    let node = &job["nodes"][0];
    assert_eq!(node["node"], json!(c.node()), "{job}");
    assert_eq!(job["dead_letter_topic"], "render.dead", "{job}");
    assert_eq!(node["dead_letter_topic"], "render.dead", "{job}");
    let s1 = shard_of(&job, 1);
    assert_eq!(
        (
            s1["worker"].clone(),
            s1["attempts"].clone(),
            s1["load"].clone(),
            s1["param"].clone()
        ),
        (json!("w1"), json!(1), json!(1), json!("p1")),
        "{job}"
    );
    assert_eq!(shard_of(&job, 0)["attempts"], 1, "{job}");
    let workers = node["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 1, "{job}");
    assert_eq!(
        (
            workers[0]["worker"].clone(),
            workers[0]["load"].clone(),
            workers[0]["capacity"].clone()
        ),
        (json!("w1"), json!(1), json!(5)),
        "{job}"
    );
    assert_eq!(
        (job["load"].clone(), job["capacity"].clone()),
        (json!(1), json!(5))
    );
    assert_eq!(
        (
            job["done"].clone(),
            job["dead"].clone(),
            job["running"].clone()
        ),
        (json!(1), json!(1), json!(1))
    );
    let body = c.admin_json("/api/jobs?job=other");
    assert_eq!(body["jobs"], json!([]), "{body}");
    let health = c.admin_json("/api/jobs")["nodes"].clone();
    assert_eq!(
        health,
        json!([{"node": c.node(), "hostname": health[0]["hostname"], "reachable": true}])
    );

    // The page is served and linked from the nav.
    let page = c.admin.request("GET", "/jobs", &[], b"");
    assert_eq!(page.status, 200);
    assert!(
        page.text().contains("/jobs\" data-link>Jobs</a>"),
        "{}",
        page.text()
    );

    // Bad requests.
    let r = c
        .admin
        .request("POST", "/api/jobs/render", &[], br#"{"action":"explode"}"#);
    assert_eq!(
        (r.status, r.json()["message"].clone()),
        (400, json!("INVALID_ACTION"))
    );
    let r = c
        .admin
        .request("POST", "/api/jobs/render", &[], b"not json");
    assert_eq!(
        (r.status, r.json()["message"].clone()),
        (400, json!("INVALID_BODY"))
    );
    let r = c.admin.request("GET", "/api/jobs/render", &[], b"");
    assert_eq!(r.status, 405);

    // Requeue: the dead letter goes back to the job topic...
    let r = c
        .admin
        .request("POST", "/api/jobs/render", &[], br#"{"action":"requeue"}"#);
    let body = r.json();
    assert_eq!(r.status, 200, "{body}");
    assert_eq!(body["requeued"], 1, "{body}");
    assert_eq!(body["message"], "", "{body}");
    assert_eq!(
        body["nodes"][0]["dead_channel"], "nsqadmin_requeue",
        "{body}"
    );
    // ...where the worker (load 1 of 5) gets it again, body unchanged.
    let again = worker.read_message_within(SETTLE).await;
    assert_eq!(again.body, original_body);
    assert_eq!(again.attempts, 1, "a requeued dead letter starts afresh");
    worker.fin(again.id).await;
    worker.fin(m1.id).await;

    // ...and is gone from the dead-letter topic.
    wait_until(SETTLE, "render.dead is empty and all shards done", || {
        let dead = c.nsqd_topic("render.dead").ok_or("no render.dead")?;
        let chan = c
            .nsqd_channel("render.dead", "nsqadmin_requeue")
            .ok_or_else(|| dead.to_string())?;
        let body = c.admin_json("/api/jobs");
        let job = render_job(&body).ok_or_else(|| body.to_string())?;
        if dead["depth"] == 0
            && chan["depth"] == 0
            && chan["in_flight_count"] == 0
            && chan["message_count"] == 1
            && job["dead_letters"] == 0
            && job["running"] == 0
        {
            Ok(())
        } else {
            Err(format!("{dead} / {body}"))
        }
    })
    .await
    .unwrap_or_else(|e| c.fail(&e));

    // Nothing left: requeue moves nothing and says so.
    let r = c
        .admin
        .request("POST", "/api/jobs/render", &[], br#"{"action":"requeue"}"#);
    assert_eq!(
        (r.status, r.json()["requeued"].clone()),
        (200, json!(0)),
        "{}",
        r.text()
    );
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeue_uses_the_configured_dead_letter_topic_and_its_channel() {
    let nsqd = NsqdProcess::start(&["--broadcast-address=127.0.0.1"]);
    nsqd.create_channel("render", "workers");
    nsqd.post_ok(
        "/channel/max_attempts?topic=render&channel=workers&max_attempts=1&dead_letter_topic=render_failed",
        b"",
    );
    // Someone already watches the dead-letter topic on channel "inspect":
    // its backlog is there, so that is the channel requeue drains.
    nsqd.create_channel("render_failed", "inspect");
    let admin = NsqadminProcess::start_with_nsqds(&[nsqd.http_addr()], &[]);

    // Two dead letters: delivered once each and given back.
    let identify = json!({"capacity": 10, "client_id": "w"});
    let mut worker = nsqd.consumer(identify, "render", "workers", 10).await;
    let mut p = nsqd.connect().await;
    for item in [0, 1] {
        p.publish("render", &shard(item, 1).encode().unwrap()).await;
    }
    for m in worker.read_messages(2).await {
        worker.req(m.id, 0).await;
    }
    wait_until(SETTLE, "both dead letters wait on render_failed", || {
        let body = admin.request("GET", "/api/jobs", &[], b"").json();
        let job = render_job(&body).ok_or_else(|| body.to_string())?;
        if job["dead_letter_topic"] == "render_failed" && job["dead_letters"] == 2 {
            Ok(())
        } else {
            Err(body.to_string())
        }
    })
    .await
    .unwrap_or_else(|e| nsqd.fail(&e));

    let r = admin.request(
        "POST",
        "/api/jobs/render",
        &[],
        br#"{"action":"requeue","channel":"workers"}"#,
    );
    let body = r.json();
    assert_eq!(r.status, 200, "{body}");
    assert_eq!(body["requeued"], 2, "{body}");
    assert_eq!(body["nodes"][0]["dead_channel"], "inspect", "{body}");
    let mut items: Vec<u32> = worker
        .read_messages(2)
        .await
        .iter()
        .map(|m| Shard::decode(&m.body).unwrap().item)
        .collect();
    items.sort_unstable();
    assert_eq!(items, [0, 1]);
    let stats = nsqd
        .http_get("/stats?format=json&topic=render_failed")
        .json();
    let inspect = &stats["topics"][0]["channels"][0];
    assert_eq!(
        (
            inspect["channel_name"].clone(),
            inspect["depth"].clone(),
            inspect["in_flight_count"].clone()
        ),
        (json!("inspect"), json!(0), json!(0)),
        "{stats}"
    );
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_nsqd_is_listed_on_the_jobs_page() {
    let nsqd = NsqdProcess::start(&["--broadcast-address=127.0.0.1"]);
    let dead: SocketAddr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let admin = NsqadminProcess::start_with_nsqds(&[nsqd.http_addr(), dead], &[]);
    let r = admin.request("GET", "/api/jobs", &[], b"");
    let body = r.json();
    assert_eq!(r.status, 200, "{body}");
    let nodes = body["nodes"].as_array().unwrap();
    let down = nodes
        .iter()
        .find(|n| n["node"] == dead.to_string())
        .unwrap_or_else(|| admin.fail(&body.to_string()));
    assert_eq!(down["reachable"], false, "{body}");
    assert!(!down["error"].as_str().unwrap_or("").is_empty(), "{body}");
    assert!(nodes.iter().any(|n| n["reachable"] == true), "{body}");
    assert!(
        body["message"].as_str().unwrap().starts_with("WARNING: "),
        "{body}"
    );
    assert_eq!(body["jobs"], json!([]));
}
