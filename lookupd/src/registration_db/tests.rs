//! Unit tests for the registration DB, on an injected clock.

use super::*;

const TIMEOUT: Duration = Duration::from_secs(300);
const LIFETIME: Duration = Duration::from_secs(45);

fn db() -> RegistrationDb {
    RegistrationDb::new(TIMEOUT, LIFETIME)
}

fn t0() -> Stamp {
    Stamp {
        mono: Instant::now(),
        unix_nanos: 1_700_000_000_000_000_000,
    }
}

fn peer(id: &str, http_port: i64) -> PeerInfo {
    PeerInfo {
        remote_address: id.to_owned(),
        hostname: "host".into(),
        broadcast_address: "nsqd".into(),
        tcp_port: 4150,
        http_port,
        version: "1.3.0".into(),
    }
}

/// A DB where peer `a` (connection 1) has identified, and the time it did.
fn db_with_peer_a() -> (RegistrationDb, Stamp) {
    let db = db();
    let now = t0();
    db.identify(1, peer("a", 1), now);
    (db, now)
}

fn producer_ids(db: &RegistrationDb, topic: &str, now: Stamp) -> Vec<String> {
    db.lookup(topic, now)
        .expect("topic exists")
        .producers
        .iter()
        .map(|p| p.remote_address.clone())
        .collect()
}

#[test]
fn register_lookup_and_listing() {
    let db = db();
    let now = t0();
    assert!(db.identify(1, peer("10.0.0.1:1", 4151), now));
    assert_eq!(
        db.register("10.0.0.1:1", "t", Some("c")),
        vec![Registration::channel("t", "c"), Registration::topic("t")]
    );
    // Registering again adds nothing.
    assert_eq!(db.register("10.0.0.1:1", "t", Some("c")), vec![]);
    assert_eq!(
        db.register("10.0.0.1:1", "t", Some("d")),
        vec![Registration::channel("t", "d")]
    );
    db.register("10.0.0.1:1", "u", None);

    assert_eq!(db.topics(), vec!["t", "u"]);
    assert_eq!(db.channels("t"), vec!["c", "d"]);
    assert_eq!(db.channels("u"), Vec::<String>::new());
    assert_eq!(db.channels("nope"), Vec::<String>::new());
    let lookup = db.lookup("t", now).unwrap();
    assert_eq!(lookup.channels, vec!["c", "d"]);
    assert_eq!(*lookup.producers[0], peer("10.0.0.1:1", 4151));
    assert_eq!(db.lookup("nope", now), None);
}

#[test]
fn unregister_channel_keeps_key_unless_ephemeral() {
    let (db, now) = db_with_peer_a();
    db.identify(2, peer("b", 2), now);
    db.register("a", "t", Some("c"));
    db.register("a", "t", Some("e#ephemeral"));
    db.register("b", "t", Some("e#ephemeral"));

    let out = db.unregister("a", "t", Some("c"));
    assert_eq!(out.removed, vec![Registration::channel("t", "c")]);
    assert_eq!(db.channels("t"), vec!["c", "e#ephemeral"]);

    // Another producer still has the ephemeral channel: the key stays.
    db.unregister("a", "t", Some("e#ephemeral"));
    assert_eq!(db.channels("t"), vec!["c", "e#ephemeral"]);
    db.unregister("b", "t", Some("e#ephemeral"));
    assert_eq!(db.channels("t"), vec!["c"]);

    // Unregistering what was never registered changes nothing.
    assert_eq!(
        db.unregister("a", "t", Some("zzz")),
        Unregistered::default()
    );
}

#[test]
fn unregister_topic_drops_its_channels() {
    let (db, now) = db_with_peer_a();
    db.register("a", "t", Some("c"));
    db.register("a", "t", Some("d"));
    db.register("a", "x#ephemeral", None);

    let out = db.unregister("a", "t", None);
    assert_eq!(out.removed, vec![Registration::topic("t")]);
    assert_eq!(
        out.unexpected,
        vec![
            Registration::channel("t", "c"),
            Registration::channel("t", "d")
        ]
    );
    // Non-ephemeral keys stay, without producers.
    assert_eq!(db.topics(), vec!["t", "x#ephemeral"]);
    assert_eq!(db.channels("t"), vec!["c", "d"]);
    assert!(db.lookup("t", now).unwrap().producers.is_empty());

    db.unregister("a", "x#ephemeral", None);
    assert_eq!(db.topics(), vec!["t"]);
}

#[test]
fn disconnect_removes_producer_everywhere_but_keeps_keys() {
    let db = db();
    let now = t0();
    db.identify(7, peer("a", 1), now);
    db.register("a", "t", Some("c"));
    // A stale connection id must not remove the current one.
    assert_eq!(db.remove_peer("a", 6), vec![]);
    assert_eq!(producer_ids(&db, "t", now), vec!["a"]);

    let removed = db.remove_peer("a", 7);
    assert_eq!(
        removed,
        vec![
            Registration::channel("t", "c"),
            Registration::client(),
            Registration::topic("t"),
        ]
    );
    assert_eq!(db.topics(), vec!["t"]);
    assert_eq!(db.channels("t"), vec!["c"]);
    assert!(producer_ids(&db, "t", now).is_empty());
    assert!(db.nodes(now).is_empty());
    assert!(db.debug().is_empty());
    assert_eq!(db.ping("a", 7, now), None);
}

#[test]
fn inactive_producers_expire_and_ping_revives() {
    let db = db();
    let start = t0();
    db.identify(1, peer("a", 1), start);
    db.identify(2, peer("b", 2), start);
    db.register("a", "t", None);
    db.register("b", "t", None);

    // Exactly at the timeout a producer still counts as active.
    let edge = start.after(TIMEOUT);
    assert_eq!(producer_ids(&db, "t", edge), vec!["a", "b"]);
    assert_eq!(db.ping("b", 2, edge), Some(TIMEOUT));

    let later = start.after(TIMEOUT + Duration::from_nanos(1));
    assert_eq!(producer_ids(&db, "t", later), vec!["b"]);
    let nodes = db.nodes(later);
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].info.remote_address, "b");

    // The wrong connection cannot refresh a peer.
    assert_eq!(db.ping("a", 2, later), None);
    assert_eq!(
        db.ping("a", 1, later),
        Some(TIMEOUT + Duration::from_nanos(1))
    );
    assert_eq!(producer_ids(&db, "t", later), vec!["a", "b"]);
    // /debug still lists inactive producers, with their last update.
    assert_eq!(
        db.debug()["topic:t:"][0].last_update,
        later.unix_nanos,
        "ping moved the wall-clock stamp"
    );
}

#[test]
fn tombstones_hide_one_topic_for_their_lifetime() {
    let db = db();
    let start = t0();
    db.identify(1, peer("a", 4151), start);
    db.identify(2, peer("b", 4152), start);
    for id in ["a", "b"] {
        db.register(id, "t", Some("c"));
        db.register(id, "u", None);
    }

    assert_eq!(db.tombstone("t", "nsqd:4151", start), 1);
    assert_eq!(db.tombstone("t", "nowhere:1", start), 0);
    assert_eq!(producer_ids(&db, "t", start), vec!["b"]);
    // Only that topic: the node's other topic is still served.
    assert_eq!(producer_ids(&db, "u", start), vec!["a", "b"]);

    // /nodes keeps tombstoned nodes and flags the topic, parallel arrays.
    let nodes = db.nodes(start);
    assert_eq!(nodes[0].topics, vec!["t", "u"]);
    assert_eq!(nodes[0].tombstones, vec![true, false]);
    assert_eq!(nodes[1].tombstones, vec![false, false]);

    // Re-registering does not clear the tombstone.
    db.register("a", "t", Some("c"));
    assert_eq!(producer_ids(&db, "t", start), vec!["b"]);

    let debug = db.debug();
    let entry = debug["topic:t:"].iter().find(|p| p.id == "a").unwrap();
    assert!(entry.tombstoned);
    assert_eq!(entry.tombstoned_at, start.unix_nanos);
    let entry = debug["topic:u:"].iter().find(|p| p.id == "a").unwrap();
    assert!(!entry.tombstoned);
    assert_eq!(entry.tombstoned_at, GO_ZERO_TIME_UNIX_NANOS);

    // Still hidden just before the lifetime ends, visible from then on.
    let almost = start.after(LIFETIME - Duration::from_nanos(1));
    assert_eq!(producer_ids(&db, "t", almost), vec!["b"]);
    let after = start.after(LIFETIME);
    assert_eq!(producer_ids(&db, "t", after), vec!["a", "b"]);
    assert_eq!(db.nodes(after)[0].tombstones, vec![false, false]);
    // The flag itself stays set, as upstream's /debug shows.
    assert!(db.debug()["topic:t:"][0].tombstoned);

    // UNREGISTER then REGISTER starts a fresh, untombstoned entry.
    db.tombstone("t", "nsqd:4151", after);
    db.unregister("a", "t", None);
    db.register("a", "t", None);
    assert_eq!(producer_ids(&db, "t", after), vec!["a", "b"]);
}

#[test]
fn http_side_create_and_delete() {
    let db = db();
    let now = t0();
    db.add_registration(Registration::channel("t", "c"));
    db.add_registration(Registration::topic("t"));
    db.add_registration(Registration::topic("t"));
    assert_eq!(db.topics(), vec!["t"]);
    assert_eq!(db.lookup("t", now).unwrap().channels, vec!["c"]);
    // Keys without producers do not show in /debug.
    assert!(db.debug().is_empty());

    assert!(!db.delete_channel("t", "missing"));
    assert!(db.delete_channel("t", "c"));
    assert!(db.channels("t").is_empty());

    db.add_registration(Registration::channel("t", "c"));
    db.add_registration(Registration::channel("other", "c"));
    db.add_registration(Registration::topic("other"));
    assert_eq!(
        db.delete_topic("t"),
        vec![Registration::channel("t", "c"), Registration::topic("t")]
    );
    assert_eq!(db.topics(), vec!["other"]);
    assert!(db.delete_topic("t").is_empty());
}

#[test]
fn wildcards_as_upstream() {
    let (db, now) = db_with_peer_a();
    db.register("a", "t", Some("c"));
    db.register("a", "u", Some("c"));
    assert_eq!(db.channels("*"), vec!["c", "c"]);
    let all = db.lookup("*", now).unwrap();
    assert_eq!(all.channels, vec!["c", "c"]);
    assert_eq!(all.producers.len(), 1, "one entry per peer");
    db.delete_topic("*");
    assert!(db.topics().is_empty());
    // The client registration is not a topic and survives.
    assert_eq!(db.nodes(now).len(), 1);
}

#[test]
fn debug_shape() {
    let (db, now) = db_with_peer_a();
    db.register("a", "X", Some("c1"));
    let debug = db.debug();
    let keys: Vec<_> = debug.keys().cloned().collect();
    assert_eq!(keys, vec!["channel:X:c1", "client::", "topic:X:"]);
    let p = &debug["client::"][0];
    assert_eq!(p.id, "a");
    assert_eq!(p.last_update, now.unix_nanos);
    assert!(!p.tombstoned);
}
