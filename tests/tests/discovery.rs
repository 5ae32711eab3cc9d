//! Discovery end to end: real nsqd processes registering with real nsqlookupd processes, checked
//! through lookupd's HTTP API the way consumers and nsqadmin read it, across lookupd restarts,
//! nsqd crashes and freezes, tombstones, deletions, a dead lookupd and malformed V1 clients.
//!
//! Every nsqd here announces `--broadcast-address=127.0.0.1`, so what lookupd publishes is an
//! address a consumer on this machine can dial whatever the hostname resolves to. Every change
//! is awaited by polling lookupd with a deadline ([`wait_until`]); nothing sleeps to
//! synchronise.

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nsq_test_support::{
    http_request, wait_until, within, within_for, Daemon, LookupRead, NsqdProcess,
    NsqlookupdProcess, RawLookupConn,
};
use serde_json::{json, Value};
use tokio_nsq::{
    NSQChannel, NSQConfigShared, NSQConsumerConfig, NSQConsumerConfigSources,
    NSQConsumerLookupConfig, NSQEvent, NSQTopic,
};

/// How long a registration change may take to show in lookupd. nsqd pushes each change at once
/// over a connection it keeps open; the rest is slack for a loaded 2-core machine.
const SETTLE: Duration = Duration::from_secs(10);

/// Start nsqd registering with `lookupds`, announcing loopback.
fn start_nsqd(lookupds: &[&NsqlookupdProcess]) -> NsqdProcess {
    let addrs: Vec<SocketAddr> = lookupds.iter().map(|l| l.tcp_addr()).collect();
    start_nsqd_with(&addrs)
}

/// Start nsqd registering with these lookupd TCP addresses, whether anything listens there or
/// not.
fn start_nsqd_with(lookupd_tcp: &[SocketAddr]) -> NsqdProcess {
    let mut args = vec!["--broadcast-address=127.0.0.1".to_owned()];
    args.extend(
        lookupd_tcp
            .iter()
            .map(|a| format!("--lookupd-tcp-address={a}")),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    NsqdProcess::start(&args)
}

/// Panic with `msg` and the logs of every daemon involved: a discovery failure is usually
/// explained by the *other* side's log.
fn fail(msg: &str, daemons: &[&Daemon]) -> ! {
    let mut text = format!("{msg}\n");
    for d in daemons {
        text.push_str(&format!(
            "--- logs of the daemon at tcp {} / http {} ---\n{}\n",
            d.tcp_addr(),
            d.http_addr(),
            d.logs()
        ));
    }
    panic!("{text}--- end of logs ---")
}

/// `GET target` expecting 200 and a JSON body; anything else is an `Err` describing it.
fn get_json(d: &Daemon, target: &str) -> Result<Value, String> {
    let r = d.http_get(target);
    if r.status != 200 {
        return Err(format!("GET {target}: {} {}", r.status, r.text()));
    }
    serde_json::from_slice(&r.body).map_err(|e| format!("GET {target}: {e}: {}", r.text()))
}

/// Whether a `/lookup` or `/nodes` producer entry is this nsqd. Matched on what a consumer
/// dials and dedupes on, `broadcast_address:tcp_port`.
fn is_nsqd(producer: &Value, nsqd: &Daemon) -> bool {
    producer["broadcast_address"] == "127.0.0.1" && producer["tcp_port"] == nsqd.tcp_addr().port()
}

/// This nsqd's entry in a `/lookup` or `/nodes` answer.
fn entry_of(answer: &Value, nsqd: &Daemon) -> Option<Value> {
    answer["producers"]
        .as_array()?
        .iter()
        .find(|p| is_nsqd(p, nsqd))
        .cloned()
}

/// Wait until `/lookup?topic=` on `lookupd` answers 200 and `ok` holds for the answer.
async fn wait_lookup(
    lookupd: &Daemon,
    topic: &str,
    limit: Duration,
    what: &str,
    ok: impl Fn(&Value) -> bool,
    logs: &[&Daemon],
) -> Value {
    // `#` would start a URL fragment: ephemeral names must be escaped.
    let target = format!("/lookup?topic={}", topic.replace('#', "%23"));
    wait_until(limit, what, || {
        let v = get_json(lookupd, &target)?;
        if ok(&v) {
            Ok(v)
        } else {
            Err(v.to_string())
        }
    })
    .await
    .unwrap_or_else(|e| fail(&e, logs))
}

/// Wait until lookupd lists `nsqd` for `topic`; returns the whole `/lookup` answer.
async fn wait_listed(lookupd: &Daemon, topic: &str, nsqd: &Daemon) -> Value {
    let what = format!("lookupd lists nsqd {} for {topic}", nsqd.tcp_addr());
    wait_lookup(
        lookupd,
        topic,
        SETTLE,
        &what,
        |v| entry_of(v, nsqd).is_some(),
        &[lookupd, nsqd],
    )
    .await
}

/// Wait until lookupd still knows `topic` (200) but no longer lists `nsqd` for it.
async fn wait_unlisted(lookupd: &Daemon, topic: &str, nsqd: &Daemon, limit: Duration) -> Value {
    let what = format!("lookupd stops listing nsqd {} for {topic}", nsqd.tcp_addr());
    wait_lookup(
        lookupd,
        topic,
        limit,
        &what,
        |v| entry_of(v, nsqd).is_none(),
        &[lookupd, nsqd],
    )
    .await
}

/// Create `topic` on nsqd (which registers it) by publishing one message over a fresh
/// connection.
async fn publish_one(nsqd: &NsqdProcess, topic: &str, body: &[u8]) {
    let mut c = nsqd.connect_identified().await;
    c.publish(topic, body).await;
}

/// The sorted strings of a JSON array (lookupd's lists are unordered).
fn sorted(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| panic!("expected an array, got {v}"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("not a string: {s}"))
                .to_owned()
        })
        .collect();
    out.sort();
    out
}

/// A loopback address where nothing listens: bound to get a free port, then released.
fn dead_address() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a probe listener");
    l.local_addr().expect("probe listener address")
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_shows_in_lookup_topics_channels_and_nodes() {
    let lookupd = NsqlookupdProcess::start(&[]);
    let nsqd = start_nsqd(&[&lookupd]);
    let logs: &[&Daemon] = &[&lookupd, &nsqd];
    // PUB creates the topic (REGISTER t), SUB the channel (REGISTER t c).
    publish_one(&nsqd, "disc_reg", b"x").await;
    let _sub = nsqd.subscriber("disc_reg", "disc_reg_c").await;

    let lookup = wait_lookup(
        &lookupd,
        "disc_reg",
        SETTLE,
        "lookupd lists the producer and channel disc_reg_c",
        |v| entry_of(v, &nsqd).is_some() && v["channels"] == json!(["disc_reg_c"]),
        logs,
    )
    .await;
    let producers = lookup["producers"].as_array().expect("producers array");
    assert_eq!(producers.len(), 1, "{lookup}");
    let p = &producers[0];
    // The peer object's keys: go-nsq, pynsq and nsqadmin read these names. Topology keys
    // are tolerated but not required: nsqlookupd 1.3.0 (2023-12) predates topology-aware
    // consumption, and only later lookupds echo what nsqd sends.
    let keys: HashSet<&str> = p
        .as_object()
        .expect("producer object")
        .keys()
        .map(String::as_str)
        .filter(|k| !k.starts_with("topology_"))
        .collect();
    let expected: HashSet<&str> =
        "remote_address hostname broadcast_address tcp_port http_port version"
            .split(' ')
            .collect();
    assert_eq!(keys, expected, "{p}");
    assert_eq!(p["broadcast_address"], "127.0.0.1", "{p}");
    assert_eq!(p["tcp_port"], nsqd.tcp_addr().port(), "{p}");
    assert_eq!(p["http_port"], nsqd.http_addr().port(), "{p}");
    assert_eq!(p["version"], "1.3.0", "{p}");
    for k in ["topology_zone", "topology_region"] {
        assert!(!matches!(p.get(k), Some(v) if v != ""), "{p}");
    }
    let info = get_json(&nsqd, "/info").unwrap_or_else(|e| fail(&e, logs));
    assert_eq!(p["hostname"], info["hostname"], "{p} vs nsqd /info {info}");
    // remote_address is nsqd's end of its lookupd connection, not its listener.
    let remote: SocketAddr = p["remote_address"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("remote_address is not ip:port: {p}"));
    assert!(remote.ip().is_loopback(), "{p}");

    let topics = get_json(&lookupd, "/topics").unwrap_or_else(|e| fail(&e, logs));
    assert_eq!(sorted(&topics["topics"]), ["disc_reg"], "{topics}");
    let channels =
        get_json(&lookupd, "/channels?topic=disc_reg").unwrap_or_else(|e| fail(&e, logs));
    assert_eq!(sorted(&channels["channels"]), ["disc_reg_c"], "{channels}");

    let nodes = get_json(&lookupd, "/nodes").unwrap_or_else(|e| fail(&e, logs));
    let node_list = nodes["producers"].as_array().expect("producers array");
    assert_eq!(node_list.len(), 1, "{nodes}");
    let node = &node_list[0];
    for k in &expected {
        assert_eq!(
            node[*k], p[*k],
            "/nodes and /lookup disagree on {k}: {nodes}"
        );
    }
    // Parallel arrays: nsqadmin indexes one by the other.
    assert_eq!(node["topics"], json!(["disc_reg"]), "{nodes}");
    assert_eq!(node["tombstones"], json!([false]), "{nodes}");
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_configured_lookupd_learns_the_producer() {
    let l1 = NsqlookupdProcess::start(&[]);
    let l2 = NsqlookupdProcess::start(&[]);
    let nsqd = start_nsqd(&[&l1, &l2]);
    publish_one(&nsqd, "disc_two", b"x").await;
    let mut remotes = HashSet::new();
    for l in [&l1, &l2] {
        let lookup = wait_listed(l, "disc_two", &nsqd).await;
        let p = entry_of(&lookup, &nsqd).expect("listed");
        remotes.insert(p["remote_address"].clone());
        let nodes = get_json(l, "/nodes").unwrap_or_else(|e| fail(&e, &[l, &nsqd]));
        assert_eq!(
            nodes["producers"].as_array().map(Vec::len),
            Some(1),
            "{nodes}"
        );
        assert_eq!(
            nodes["producers"][0]["topics"],
            json!(["disc_two"]),
            "{nodes}"
        );
    }
    // One connection per lookupd: lookupds never talk to each other, each heard it itself.
    assert_eq!(remotes.len(), 2, "{remotes:?}");
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_lookupd_gets_everything_registered_again_within_seconds() {
    let lookupd = NsqlookupdProcess::start(&[]);
    let nsqd = start_nsqd(&[&lookupd]);
    publish_one(&nsqd, "disc_restart", b"x").await;
    publish_one(&nsqd, "disc_restart_bare", b"x").await;
    let _sub = nsqd.subscriber("disc_restart", "c1").await;
    wait_lookup(
        &lookupd,
        "disc_restart",
        SETTLE,
        "lookupd lists the producer and channel c1",
        |v| entry_of(v, &nsqd).is_some() && v["channels"] == json!(["c1"]),
        &[&lookupd, &nsqd],
    )
    .await;

    // All lookupd state is in memory: the new process starts empty, on the same addresses.
    let lookupd = lookupd.restart(&[]);
    let restarted = Instant::now();
    // nsqd keeps a read pending on its lookupd socket, so it sees the close at once and
    // redials within its backoff cap (2 s); upstream would wait for its next PING (15 s).
    let limit = Duration::from_secs(5);
    wait_lookup(
        &lookupd,
        "disc_restart",
        limit,
        "the restarted lookupd lists the producer and channel c1 again",
        |v| entry_of(v, &nsqd).is_some() && v["channels"] == json!(["c1"]),
        &[&lookupd, &nsqd],
    )
    .await;
    // A topic without channels is registered too (a bare `REGISTER topic`).
    let left = limit.saturating_sub(restarted.elapsed());
    wait_lookup(
        &lookupd,
        "disc_restart_bare",
        left,
        "the restarted lookupd lists the channel-less topic again",
        |v| entry_of(v, &nsqd).is_some(),
        &[&lookupd, &nsqd],
    )
    .await;
    assert!(restarted.elapsed() < limit, "{:?}", restarted.elapsed());
    let nodes = get_json(&lookupd, "/nodes").unwrap_or_else(|e| fail(&e, &[&lookupd, &nsqd]));
    assert_eq!(
        sorted(&nodes["producers"][0]["topics"]),
        ["disc_restart", "disc_restart_bare"],
        "{nodes}"
    );
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookupd_started_after_nsqd_gets_the_registration_within_seconds() {
    // nsqd starts with a lookupd address where nothing listens yet and keeps redialling.
    let tcp = dead_address();
    let nsqd = start_nsqd_with(&[tcp]);
    publish_one(&nsqd, "disc_late", b"x").await;

    let lookupd = NsqlookupdProcess::start_on(tcp, SocketAddr::from(([127, 0, 0, 1], 0)), &[]);
    let started = Instant::now();
    // The reconnect backoff is capped at 2 s.
    let limit = Duration::from_secs(5);
    wait_lookup(
        &lookupd,
        "disc_late",
        limit,
        "the late lookupd lists the producer",
        |v| entry_of(v, &nsqd).is_some(),
        &[&lookupd, &nsqd],
    )
    .await;
    assert!(started.elapsed() < limit, "{:?}", started.elapsed());
}

/// Upstream's channel pre-creation: an nsqd creating a topic asks its lookupds which channels
/// the topic has elsewhere and creates the durable ones before delivering, so a message
/// published to a new nsqd is not lost to a channel whose consumers have not found it yet.
#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_topic_on_another_nsqd_gets_the_channels_lookupd_knows() {
    let lookupd = NsqlookupdProcess::start(&[]);
    let a = start_nsqd(&[&lookupd]);
    let b = start_nsqd(&[&lookupd]);
    let logs: &[&Daemon] = &[&lookupd, &a, &b];
    let _durable = a.subscriber("disc_pre", "c").await;
    // Kept connected so the ephemeral channel exists while b creates the topic.
    let _ephemeral = a.subscriber("disc_pre", "e#ephemeral").await;
    wait_lookup(
        &lookupd,
        "disc_pre",
        SETTLE,
        "lookupd knows both channels of a",
        |v| sorted(&v["channels"]) == ["c", "e#ephemeral"],
        logs,
    )
    .await;
    // b only asks the lookupds it is connected to: make sure it is, via a registration
    // that can only have been sent on an established connection.
    publish_one(&b, "disc_pre_ready", b"x").await;
    wait_listed(&lookupd, "disc_pre_ready", &b).await;

    publish_one(&b, "disc_pre", b"held for c").await;
    // Nobody has subscribed to c on b, so only pre-creation can register it there.
    let registered = |debug: &Value, key: &str| {
        debug[key]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| is_nsqd(p, &b)))
    };
    let debug = wait_until(SETTLE, "b registers channel c of disc_pre", || {
        let debug = get_json(&lookupd, "/debug")?;
        if registered(&debug, "channel:disc_pre:c") {
            Ok(debug)
        } else {
            Err(debug.to_string())
        }
    })
    .await
    .unwrap_or_else(|e| fail(&e, logs));
    // Ephemeral channels are not pre-created.
    assert!(
        !registered(&debug, "channel:disc_pre:e#ephemeral"),
        "{debug}"
    );

    // The message published before any consumer of b went to the pre-created channel.
    let mut consumer = b.subscriber("disc_pre", "c").await;
    consumer.rdy(1).await;
    let m = consumer.read_message().await;
    assert_eq!(&m.body[..], b"held for c");
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_or_stopped_nsqd_leaves_lookup_when_its_connection_closes() {
    let lookupd = NsqlookupdProcess::start(&[]);
    let mut killed = start_nsqd(&[&lookupd]);
    let mut stopped = start_nsqd(&[&lookupd]);
    for n in [&killed, &stopped] {
        publish_one(n, "disc_kill", b"x").await;
        wait_listed(&lookupd, "disc_kill", n).await;
    }

    // SIGKILL: no UNREGISTER, only the kernel closing the socket.
    killed.kill();
    wait_unlisted(&lookupd, "disc_kill", &killed, SETTLE).await;
    // SIGTERM: as upstream, nsqd just closes its lookupd connections on the way out (its
    // topics persist, so it does not UNREGISTER them).
    stopped.terminate();
    wait_unlisted(&lookupd, "disc_kill", &stopped, SETTLE).await;

    let logs: &[&Daemon] = &[&lookupd, &killed, &stopped];
    let nodes = get_json(&lookupd, "/nodes").unwrap_or_else(|e| fail(&e, logs));
    assert_eq!(nodes["producers"], json!([]), "{nodes}");
    let debug = get_json(&lookupd, "/debug").unwrap_or_else(|e| fail(&e, logs));
    assert_eq!(debug, json!({}), "no registration may keep a dead peer");
    // As upstream, the keys outlive their producers: the topic stays listed.
    let topics = get_json(&lookupd, "/topics").unwrap_or_else(|e| fail(&e, logs));
    assert_eq!(sorted(&topics["topics"]), ["disc_kill"], "{topics}");
}

/// A frozen nsqd keeps its TCP connection (the kernel holds it open) but stops PINGing, so only
/// lookupd's liveness check can drop it.
///
/// Liveness is judged from IDENTIFY and PING alone and nsqd PINGs every 15 s, so an
/// inactive-producer timeout under 15 s would drop a healthy nsqd just as well. 20 s is the
/// shortest window in which SIGSTOP is what makes the difference; a second nsqd, registered
/// first and never stopped, proves that its PING is what keeps it listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_nsqd_leaves_lookup_after_the_inactive_timeout() {
    const INACTIVE: Duration = Duration::from_secs(20);
    within(async {
        let lookupd = NsqlookupdProcess::start(&["--inactive-producer-timeout=20s"]);
        let live = start_nsqd(&[&lookupd]);
        publish_one(&live, "disc_frozen", b"x").await;
        wait_listed(&lookupd, "disc_frozen", &live).await;

        let frozen_started = Instant::now();
        let frozen = start_nsqd(&[&lookupd]);
        publish_one(&frozen, "disc_frozen", b"x").await;
        wait_listed(&lookupd, "disc_frozen", &frozen).await;
        frozen.signal(Signal::SIGSTOP);

        let logs: &[&Daemon] = &[&lookupd, &live, &frozen];
        wait_lookup(
            &lookupd,
            "disc_frozen",
            INACTIVE + SETTLE,
            "lookupd drops the frozen nsqd",
            |v| entry_of(v, &frozen).is_none(),
            logs,
        )
        .await;
        // Its IDENTIFY came after the process started, so the timeout cannot have run out
        // before this.
        let gone_after = frozen_started.elapsed();
        assert!(gone_after >= INACTIVE, "dropped after only {gone_after:?}");
        // The frozen nsqd registered after the live one, so the live one's IDENTIFY alone
        // would have expired too: its PING kept it.
        let lookup =
            get_json(&lookupd, "/lookup?topic=disc_frozen").unwrap_or_else(|e| fail(&e, logs));
        if entry_of(&lookup, &live).is_none() {
            fail(&format!("the live nsqd was dropped too: {lookup}"), logs);
        }
        let nodes = get_json(&lookupd, "/nodes").unwrap_or_else(|e| fail(&e, logs));
        assert!(entry_of(&nodes, &frozen).is_none(), "{nodes}");
        assert!(entry_of(&nodes, &live).is_some(), "{nodes}");
        // Inactive is not unregistered: the connection is open, so the entry is still there.
        let debug = get_json(&lookupd, "/debug").unwrap_or_else(|e| fail(&e, logs));
        let frozen_entries = debug["client::"]
            .as_array()
            .map_or(0, |c| c.iter().filter(|p| is_nsqd(p, &frozen)).count());
        assert_eq!(frozen_entries, 1, "{debug}");

        // Thawed, it finds its 15 s PING overdue and sends it at once, which makes it active.
        frozen.signal(Signal::SIGCONT);
        wait_listed(&lookupd, "disc_frozen", &frozen).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstone_hides_a_producer_for_its_lifetime_and_only_for_that_topic() {
    // Long enough that the GET right after the POST cannot be late on a loaded machine.
    const LIFETIME: Duration = Duration::from_secs(4);
    within(async {
        let lookupd = NsqlookupdProcess::start(&["--tombstone-lifetime=4s"]);
        let a = start_nsqd(&[&lookupd]);
        let b = start_nsqd(&[&lookupd]);
        let logs: &[&Daemon] = &[&lookupd, &a, &b];
        for n in [&a, &b] {
            publish_one(n, "disc_tomb", b"x").await;
            wait_listed(&lookupd, "disc_tomb", n).await;
        }
        publish_one(&a, "disc_tomb_other", b"x").await;
        wait_listed(&lookupd, "disc_tomb_other", &a).await;

        let before = Instant::now();
        let node = format!("127.0.0.1:{}", a.http_addr().port());
        let r = lookupd.http_post(
            &format!("/topic/tombstone?topic=disc_tomb&node={node}"),
            b"",
        );
        assert_eq!((r.status, r.text().as_str()), (200, ""), "{r:?}");
        let lookup =
            get_json(&lookupd, "/lookup?topic=disc_tomb").unwrap_or_else(|e| fail(&e, logs));
        let checked = before.elapsed();
        assert!(
            checked < LIFETIME,
            "too slow to check the tombstone: {checked:?}"
        );
        if entry_of(&lookup, &a).is_some() || entry_of(&lookup, &b).is_none() {
            fail(&format!("only {node} should be hidden: {lookup}"), logs);
        }
        let other =
            get_json(&lookupd, "/lookup?topic=disc_tomb_other").unwrap_or_else(|e| fail(&e, logs));
        if entry_of(&other, &a).is_none() {
            fail(
                &format!("the tombstone leaked to another topic: {other}"),
                logs,
            );
        }
        // /nodes keeps the node and flags the topic, in the same position as in `topics`.
        let nodes = get_json(&lookupd, "/nodes").unwrap_or_else(|e| fail(&e, logs));
        let na = entry_of(&nodes, &a).unwrap_or_else(|| fail(&format!("{nodes}"), logs));
        let mut flags: Vec<(String, bool)> = na["topics"]
            .as_array()
            .expect("topics")
            .iter()
            .zip(na["tombstones"].as_array().expect("tombstones"))
            .map(|(t, f)| (t.as_str().unwrap().to_owned(), f.as_bool().unwrap()))
            .collect();
        flags.sort();
        assert_eq!(
            flags,
            [
                ("disc_tomb".to_owned(), true),
                ("disc_tomb_other".to_owned(), false)
            ],
            "{nodes}"
        );
        assert_eq!(
            na["topics"].as_array().map(Vec::len),
            na["tombstones"].as_array().map(Vec::len)
        );

        // After its lifetime the producer is back, though nothing re-registered it.
        wait_listed(&lookupd, "disc_tomb", &a).await;
        let back_after = before.elapsed();
        assert!(
            back_after >= LIFETIME,
            "visible again after only {back_after:?}"
        );
    })
    .await;
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_channel_and_topic_leave_lookupd_with_their_last_consumer() {
    let lookupd = NsqlookupdProcess::start(&[]);
    let nsqd = start_nsqd(&[&lookupd]);
    let logs: &[&Daemon] = &[&lookupd, &nsqd];
    let durable = nsqd.subscriber("disc_eph", "kept").await;
    let eph = nsqd.subscriber("disc_eph", "gone#ephemeral").await;
    let eph_topic = nsqd.subscriber("disc_eph_t#ephemeral", "c#ephemeral").await;
    wait_lookup(
        &lookupd,
        "disc_eph",
        SETTLE,
        "lookupd knows both channels",
        |v| sorted(&v["channels"]) == ["gone#ephemeral", "kept"],
        logs,
    )
    .await;
    wait_listed(&lookupd, "disc_eph_t#ephemeral", &nsqd).await;

    // The last consumer leaving deletes an ephemeral channel on nsqd (UNREGISTER t c), and
    // lookupd drops an ephemeral key with its last producer.
    eph.abort();
    eph_topic.abort();
    durable.abort();
    wait_until(
        SETTLE,
        "lookupd forgets the ephemeral channel and topic",
        || {
            let channels = get_json(&lookupd, "/channels?topic=disc_eph")?;
            let topics = get_json(&lookupd, "/topics")?;
            let now = (sorted(&channels["channels"]), sorted(&topics["topics"]));
            if now == (vec!["kept".to_owned()], vec!["disc_eph".to_owned()]) {
                Ok(())
            } else {
                Err(format!("{now:?}"))
            }
        },
    )
    .await
    .unwrap_or_else(|e| fail(&e, logs));
    // A durable channel outlives its consumers on nsqd, so it stays registered.
    let debug = get_json(&lookupd, "/debug").unwrap_or_else(|e| fail(&e, logs));
    assert!(debug["channel:disc_eph:kept"].is_array(), "{debug}");
    let lookup = get_json(&lookupd, "/lookup?topic=disc_eph_t%23ephemeral");
    assert!(
        lookup.is_err(),
        "the ephemeral topic should be unknown: {lookup:?}"
    );
}

/// Upstream keeps a durable channel's (and topic's) key when its last producer unregisters, so
/// `/channels` and `/topics` keep listing it; what a deletion on nsqd changes is who is
/// registered under the key (`/debug`), `/lookup`'s producers and `/nodes`' topics.
#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_channel_and_topic_on_nsqd_unregisters_them() {
    let lookupd = NsqlookupdProcess::start(&[]);
    let nsqd = start_nsqd(&[&lookupd]);
    let logs: &[&Daemon] = &[&lookupd, &nsqd];
    publish_one(&nsqd, "disc_del", b"x").await;
    publish_one(&nsqd, "disc_del_kept", b"x").await;
    // SUB creates the channels; they outlive the connections (durable).
    for c in ["c1", "c2"] {
        let _sub = nsqd.subscriber("disc_del", c).await;
    }
    wait_lookup(
        &lookupd,
        "disc_del",
        SETTLE,
        "lookupd knows both channels",
        |v| entry_of(v, &nsqd).is_some() && sorted(&v["channels"]) == ["c1", "c2"],
        logs,
    )
    .await;

    let r = nsqd.http_post("/channel/delete?topic=disc_del&channel=c1", b"");
    assert_eq!(r.status, 200, "{r:?}");
    wait_until(
        SETTLE,
        "nsqd is no longer registered for channel c1",
        || {
            let debug = get_json(&lookupd, "/debug")?;
            if debug.get("channel:disc_del:c1").is_none() && debug["channel:disc_del:c2"].is_array()
            {
                Ok(())
            } else {
                Err(debug.to_string())
            }
        },
    )
    .await
    .unwrap_or_else(|e| fail(&e, logs));
    let channels =
        get_json(&lookupd, "/channels?topic=disc_del").unwrap_or_else(|e| fail(&e, logs));
    assert_eq!(
        sorted(&channels["channels"]),
        ["c1", "c2"],
        "upstream keeps the key: {channels}"
    );
    let lookup = get_json(&lookupd, "/lookup?topic=disc_del").unwrap_or_else(|e| fail(&e, logs));
    assert!(
        entry_of(&lookup, &nsqd).is_some(),
        "the topic is still there: {lookup}"
    );

    let r = nsqd.http_post("/topic/delete?topic=disc_del", b"");
    assert_eq!(r.status, 200, "{r:?}");
    wait_unlisted(&lookupd, "disc_del", &nsqd, SETTLE).await;
    let debug = get_json(&lookupd, "/debug").unwrap_or_else(|e| fail(&e, logs));
    let left: Vec<&String> = debug
        .as_object()
        .expect("debug map")
        .keys()
        .filter(|k| k.contains("disc_del:"))
        .collect();
    assert!(left.is_empty(), "still registered under {left:?}: {debug}");
    let nodes = get_json(&lookupd, "/nodes").unwrap_or_else(|e| fail(&e, logs));
    assert_eq!(
        nodes["producers"][0]["topics"],
        json!(["disc_del_kept"]),
        "{nodes}"
    );
    assert_eq!(
        nodes["producers"][0]["tombstones"],
        json!([false]),
        "{nodes}"
    );
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_with_one_dead_lookupd_still_discovers_and_consumes() {
    let lookupd = NsqlookupdProcess::start(&[]);
    let nsqd = start_nsqd(&[&lookupd]);
    let logs: &[&Daemon] = &[&lookupd, &nsqd];
    let mut publisher = nsqd.connect_identified().await;
    // Published before any channel exists: the topic holds it for the first channel.
    publisher.publish("disc_consume", b"before").await;
    wait_listed(&lookupd, "disc_consume", &nsqd).await;

    let dead = dead_address();
    let sources = NSQConsumerLookupConfig::new()
        .set_poll_interval(Duration::from_millis(100))
        .set_addresses(HashSet::from([
            format!("http://{dead}"),
            format!("http://{}", lookupd.http_addr()),
        ]));
    let mut consumer = NSQConsumerConfig::new(
        NSQTopic::new("disc_consume").expect("valid topic"),
        NSQChannel::new("disc_consume_c").expect("valid channel"),
    )
    .set_max_in_flight(10)
    .set_sources(NSQConsumerConfigSources::Lookup(sources))
    // tokio-nsq flushes writes on a 250 ms timer by default; FINs would lag behind it.
    .set_shared(NSQConfigShared::new().set_flush_interval(Duration::from_millis(10)))
    .build();

    let mut got = Vec::new();
    let mut published_after = false;
    let consumed = within_for(SETTLE * 2, async {
        while got.len() < 2 {
            match consumer.consume().await {
                // Connected through what the live lookupd published: publish live too.
                Some(NSQEvent::Healthy()) if !published_after => {
                    publisher.publish("disc_consume", b"after").await;
                    published_after = true;
                }
                Some(NSQEvent::Message(m)) => {
                    got.push(String::from_utf8_lossy(&m.body).into_owned());
                    m.finish().await;
                }
                Some(NSQEvent::Unhealthy()) => return Err("the connection to nsqd failed"),
                Some(_) => {}
                None => return Err("the consumer stopped"),
            }
        }
        Ok(())
    })
    .await;
    if let Err(e) = consumed {
        fail(&format!("{e}; got {got:?}"), logs);
    }
    got.sort();
    assert_eq!(got, ["after", "before"]);
}

/// The body nsqd sends with IDENTIFY, for raw clients posing as one.
fn raw_identity() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "version": "1.3.0",
        "tcp_port": 1,
        "http_port": 2,
        "hostname": "raw",
        "broadcast_address": "127.0.0.2",
        "topology_zone": "",
        "topology_region": "",
    }))
    .expect("serialise identity")
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_v1_commands_get_upstream_errors_and_lookupd_keeps_serving() {
    let lookupd = NsqlookupdProcess::start(&[]);
    let nsqd = start_nsqd(&[&lookupd]);
    let logs: &[&Daemon] = &[&lookupd, &nsqd];
    publish_one(&nsqd, "disc_bad", b"x").await;
    let before = wait_listed(&lookupd, "disc_bad", &nsqd).await;
    let before = entry_of(&before, &nsqd).expect("listed");

    // Bad magic: a bare size-prefixed E_BAD_PROTOCOL, then close.
    let mut c = RawLookupConn::connect_without_magic(lookupd.tcp_addr()).await;
    // Only the magic: bytes left unread when lookupd closes would turn its FIN into a
    // reset that can overtake the reply.
    c.write_raw(b"  V2").await;
    assert_eq!(c.read_reply().await, "E_BAD_PROTOCOL");
    c.expect_closed().await;

    // (whether to IDENTIFY first, what to send, upstream's exact error)
    let cases: &[(bool, &[u8], &str)] = &[
        (false, b"BOGUS\n", "E_INVALID invalid command BOGUS"),
        (
            false,
            b"REGISTER disc_bad\n",
            "E_INVALID client must IDENTIFY",
        ),
        (
            false,
            b"UNREGISTER disc_bad\n",
            "E_INVALID client must IDENTIFY",
        ),
        (
            false,
            b"IDENTIFY\n\x00\x00\x00\x09{not json",
            "E_BAD_BODY IDENTIFY failed to decode JSON body",
        ),
        (
            false,
            b"IDENTIFY\n\x00\x00\x00\x02{}",
            "E_BAD_BODY IDENTIFY missing fields",
        ),
        (
            true,
            b"IDENTIFY\n\x00\x00\x00\x02{}",
            "E_INVALID cannot IDENTIFY again",
        ),
        (
            true,
            b"REGISTER\n",
            "E_INVALID REGISTER insufficient number of params",
        ),
        (
            true,
            b"REGISTER bad!topic\n",
            "E_BAD_TOPIC REGISTER topic name 'bad!topic' is not valid",
        ),
        (
            true,
            b"UNREGISTER disc_bad bad!chan\n",
            "E_BAD_CHANNEL UNREGISTER channel name 'bad!chan' is not valid",
        ),
    ];
    for (identify, input, want) in cases {
        let mut c = RawLookupConn::connect(lookupd.tcp_addr()).await;
        if *identify {
            c.send_identify(&raw_identity()).await;
            let reply = c.read_reply().await;
            let info: Value = serde_json::from_str(&reply)
                .unwrap_or_else(|e| panic!("IDENTIFY reply is not JSON ({e}): {reply}"));
            assert_eq!(info["tcp_port"], lookupd.tcp_addr().port(), "{info}");
            assert_eq!(info["version"], "1.3.0", "{info}");
        }
        c.write_raw(input).await;
        let got = c.read_reply().await;
        if got != *want {
            fail(
                &format!(
                    "{:?}: expected {want:?}, got {got:?}",
                    String::from_utf8_lossy(input)
                ),
                logs,
            );
        }
        // Every V1 error is fatal.
        c.expect_closed().await;
    }

    // Others were not disturbed: a well-behaved client is answered, nsqd's own connection
    // (same remote address) is still registered and still carries new registrations.
    let mut c = RawLookupConn::connect(lookupd.tcp_addr()).await;
    c.write_raw(b"PING\n").await;
    assert_eq!(c.read_reply().await, "OK");
    match c.try_read_reply(Duration::from_millis(50)).await {
        LookupRead::Timeout => {}
        other => fail(&format!("PING: connection not kept open: {other:?}"), logs),
    }
    let after = get_json(&lookupd, "/lookup?topic=disc_bad").unwrap_or_else(|e| fail(&e, logs));
    let after = entry_of(&after, &nsqd).unwrap_or_else(|| fail("nsqd was dropped", logs));
    assert_eq!(after["remote_address"], before["remote_address"]);
    publish_one(&nsqd, "disc_bad_after", b"x").await;
    wait_listed(&lookupd, "disc_bad_after", &nsqd).await;
    // The raw clients that identified are gone with their connections.
    wait_until(SETTLE, "/nodes lists only nsqd", || {
        let nodes = get_json(&lookupd, "/nodes")?;
        match nodes["producers"].as_array() {
            Some(p) if p.len() == 1 && is_nsqd(&p[0], &nsqd) => Ok(()),
            _ => Err(nodes.to_string()),
        }
    })
    .await
    .unwrap_or_else(|e| fail(&e, logs));
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_put_moves_nsqd_to_another_lookupd_at_runtime() {
    let old = NsqlookupdProcess::start(&[]);
    let new = NsqlookupdProcess::start(&[]);
    let nsqd = start_nsqd(&[&old]);
    let logs: &[&Daemon] = &[&old, &new, &nsqd];
    publish_one(&nsqd, "disc_config", b"x").await;
    let _sub = nsqd.subscriber("disc_config", "c").await;
    wait_listed(&old, "disc_config", &nsqd).await;

    let wanted = json!([new.tcp_addr().to_string()]);
    let body = serde_json::to_vec(&wanted).expect("serialise addresses");
    let r = http_request(
        nsqd.http_addr(),
        "PUT",
        "/config/nsqlookupd_tcp_addresses",
        &body,
    )
    .unwrap_or_else(|e| fail(&format!("PUT /config: {e}"), logs));
    assert_eq!(r.status, 200, "{r:?}");
    // Upstream answers with the option's new value.
    assert_eq!(r.json(), wanted, "{r:?}");
    let got =
        get_json(&nsqd, "/config/nsqlookupd_tcp_addresses").unwrap_or_else(|e| fail(&e, logs));
    assert_eq!(got, wanted);

    // The new lookupd gets the full sync, channels included; the old one loses the peer
    // when nsqd closes that connection.
    wait_lookup(
        &new,
        "disc_config",
        SETTLE,
        "the new lookupd lists the producer and channel c",
        |v| entry_of(v, &nsqd).is_some() && v["channels"] == json!(["c"]),
        logs,
    )
    .await;
    wait_unlisted(&old, "disc_config", &nsqd, SETTLE).await;
    let nodes = get_json(&old, "/nodes").unwrap_or_else(|e| fail(&e, logs));
    assert_eq!(nodes["producers"], json!([]), "{nodes}");
}

/// A lookupd that stops answering (frozen: connections still accepted by the kernel) makes
/// nsqd's commands miss their 1 s deadline; nsqd drops the connection and keeps redialling, and
/// once lookupd answers again it gets a full registration, including what changed meanwhile,
/// and no stale peer from the abandoned connections.
#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_lookupd_gets_everything_registered_once_it_answers_again() {
    let lookupd = NsqlookupdProcess::start(&[]);
    let nsqd = start_nsqd(&[&lookupd]);
    let logs: &[&Daemon] = &[&lookupd, &nsqd];
    publish_one(&nsqd, "disc_thaw_before", b"x").await;
    let listed = wait_listed(&lookupd, "disc_thaw_before", &nsqd).await;
    let old_remote = entry_of(&listed, &nsqd).expect("listed")["remote_address"].clone();

    // nsqd's REGISTER gets no reply: wait for nsqd to log that it gave up on the connection
    // (this implementation's warning; counted, so an earlier one cannot satisfy the wait).
    let nsqd_logs = nsqd.log_handle();
    let reconnects = || nsqd_logs.snapshot().matches("reconnecting in").count();
    let before = reconnects();
    lookupd.signal(Signal::SIGSTOP);
    publish_one(&nsqd, "disc_thaw_during", b"x").await;
    let gave_up = wait_until(SETTLE, "nsqd drops the unresponsive lookupd", || {
        if reconnects() > before {
            Ok(())
        } else {
            Err("no reconnect logged")
        }
    })
    .await;
    // Thaw before judging the wait: every later step needs lookupd answering.
    lookupd.signal(Signal::SIGCONT);
    gave_up.unwrap_or_else(|e| fail(&e, logs));

    // The abandoned connections (the old one, and redials that timed out in the frozen
    // accept queue) are processed and dropped after the thaw, so wait for the settled state:
    // one peer, on a new connection, holding both topics.
    wait_until(
        SETTLE,
        "nsqd is registered once, anew, with both topics",
        || {
            let nodes = get_json(&lookupd, "/nodes")?;
            let remote = match nodes["producers"].as_array() {
                Some(p) if p.len() == 1 && is_nsqd(&p[0], &nsqd) => p[0]["remote_address"].clone(),
                _ => return Err(nodes.to_string()),
            };
            if remote == old_remote {
                return Err(format!("still the pre-freeze connection: {nodes}"));
            }
            for topic in ["disc_thaw_before", "disc_thaw_during"] {
                let lookup = get_json(&lookupd, &format!("/lookup?topic={topic}"))?;
                if entry_of(&lookup, &nsqd).map(|p| p["remote_address"].clone())
                    != Some(remote.clone())
                {
                    return Err(format!("{topic}: {lookup}"));
                }
            }
            Ok(())
        },
    )
    .await
    .unwrap_or_else(|e| fail(&e, logs));
}
