//! The registration DB: which nsqd (producer) announced which topic and
//! channel, when it was last heard from, and which of its topics are
//! tombstoned.
//!
//! Keys are (category, key, subkey): `client` ("", ""), `topic` (topic, ""),
//! `channel` (topic, channel). Each key maps producer ids (the nsqd's TCP
//! remote address) to a producer entry. As upstream, keys stay when their last
//! producer leaves (only `#ephemeral` ones go), so topics stay listed until
//! deleted over HTTP. A `*` key or subkey in a query matches anything.
//!
//! The DB is pure state behind one std `Mutex`: every method is one short
//! critical section with no I/O and no `.await`, and takes the current time
//! as an argument so tests can drive the clock.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nsq_protocol::lookup::GO_ZERO_TIME_UNIX_NANOS;
use nsq_protocol::names::EPHEMERAL_SUFFIX;
use serde::Serialize;

/// The three kinds of registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    Channel,
    Client,
    Topic,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Channel => "channel",
            Category::Client => "client",
            Category::Topic => "topic",
        }
    }
}

/// One registration key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Registration {
    pub category: Category,
    pub key: String,
    pub subkey: String,
}

impl Registration {
    pub fn client() -> Self {
        Registration {
            category: Category::Client,
            key: String::new(),
            subkey: String::new(),
        }
    }

    pub fn topic(topic: &str) -> Self {
        Registration {
            category: Category::Topic,
            key: topic.to_owned(),
            subkey: String::new(),
        }
    }

    pub fn channel(topic: &str, channel: &str) -> Self {
        Registration {
            category: Category::Channel,
            key: topic.to_owned(),
            subkey: channel.to_owned(),
        }
    }

    /// Upstream's match, with `*` as a wildcard for key and subkey.
    fn matches(&self, category: Category, key: &str, subkey: &str) -> bool {
        self.category == category
            && (key == "*" || self.key == key)
            && (subkey == "*" || self.subkey == subkey)
    }
}

/// The `"category:key:subkey"` form /debug uses.
impl std::fmt::Display for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.category.as_str(), self.key, self.subkey)
    }
}

/// A moment on both clocks: monotonic for liveness and tombstone expiry,
/// wall-clock nanoseconds for what /debug reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub mono: Instant,
    pub unix_nanos: i64,
}

impl Stamp {
    /// Now, on tokio's clock (so tests that pause time control liveness).
    pub fn now() -> Self {
        let unix_nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        Stamp {
            mono: tokio::time::Instant::now().into_std(),
            unix_nanos,
        }
    }

    /// `self` moved forward by `d` on both clocks.
    pub fn after(self, d: Duration) -> Self {
        Stamp {
            mono: self.mono + d,
            unix_nanos: self
                .unix_nanos
                .saturating_add(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
        }
    }

    fn since(self, earlier: Stamp) -> Duration {
        self.mono.saturating_duration_since(earlier.mono)
    }
}

/// What an nsqd told us about itself, as /lookup shows it (field order is
/// upstream's wire order). 1.3.0's lookupd keeps no topology fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerInfo {
    pub remote_address: String,
    pub hostname: String,
    pub broadcast_address: String,
    pub tcp_port: i64,
    pub http_port: i64,
    pub version: String,
}

/// A connected, identified nsqd.
#[derive(Debug, Clone)]
struct Peer {
    info: Arc<PeerInfo>,
    /// Which TCP connection owns this id, so that a late cleanup of an old
    /// connection cannot remove a newer one that reused the address.
    conn: u64,
    last_update: Stamp,
}

/// One producer under one registration. The tombstone belongs here, not to
/// the peer: tombstoning topic A of a node leaves its topic B visible.
#[derive(Debug, Clone, Copy, Default)]
struct Producer {
    tombstoned_at: Option<Stamp>,
}

/// A producer in a /nodes answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub info: Arc<PeerInfo>,
    /// The node's topics and, index for index, whether each is tombstoned.
    pub topics: Vec<String>,
    pub tombstones: Vec<bool>,
}

/// One producer entry as /debug shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebugProducer {
    pub id: String,
    pub info: Arc<PeerInfo>,
    pub last_update: i64,
    pub tombstoned: bool,
    pub tombstoned_at: i64,
}

/// A /lookup answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    pub channels: Vec<String>,
    pub producers: Vec<Arc<PeerInfo>>,
}

#[derive(Debug, Default)]
struct Inner {
    registrations: BTreeMap<Registration, BTreeMap<String, Producer>>,
    peers: HashMap<String, Peer>,
}

impl Inner {
    /// Keys matching the query; a direct lookup when there is no wildcard.
    fn find(&self, category: Category, key: &str, subkey: &str) -> Vec<Registration> {
        if key != "*" && subkey != "*" {
            let r = Registration {
                category,
                key: key.to_owned(),
                subkey: subkey.to_owned(),
            };
            return if self.registrations.contains_key(&r) {
                vec![r]
            } else {
                Vec::new()
            };
        }
        self.registrations
            .keys()
            .filter(|r| r.matches(category, key, subkey))
            .cloned()
            .collect()
    }

    /// Add a producer; false when it was already there (its tombstone stays).
    fn add_producer(&mut self, reg: Registration, id: &str) -> bool {
        let producers = self.registrations.entry(reg).or_default();
        if producers.contains_key(id) {
            return false;
        }
        producers.insert(id.to_owned(), Producer::default());
        true
    }

    /// Remove a producer: (whether it was there, how many are left).
    fn remove_producer(&mut self, reg: &Registration, id: &str) -> (bool, usize) {
        match self.registrations.get_mut(reg) {
            Some(producers) => {
                let removed = producers.remove(id).is_some();
                (removed, producers.len())
            }
            None => (false, 0),
        }
    }

    fn is_active(&self, id: &str, now: Stamp, timeout: Duration) -> bool {
        self.peers
            .get(id)
            .is_some_and(|p| now.since(p.last_update) <= timeout)
    }
}

/// Why a producer entry is hidden from /lookup: tombstoned less than
/// `lifetime` ago.
fn is_tombstoned(p: &Producer, now: Stamp, lifetime: Duration) -> bool {
    p.tombstoned_at.is_some_and(|at| now.since(at) < lifetime)
}

/// Ephemeral topics and channels exist only while someone has them, so their
/// keys go with their last producer (other keys stay until deleted).
fn remove_if_ephemeral_and_empty(inner: &mut Inner, reg: &Registration, name: &str, left: usize) {
    if left == 0 && name.ends_with(EPHEMERAL_SUFFIX) {
        inner.registrations.remove(reg);
    }
}

/// What UNREGISTER changed, for logging.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Unregistered {
    pub removed: Vec<Registration>,
    /// Channels dropped by a topic-only UNREGISTER; upstream warns about
    /// these because nsqd unregisters its channels first.
    pub unexpected: Vec<Registration>,
}

/// The registration DB. Locked by the TCP connection tasks (IDENTIFY,
/// REGISTER, UNREGISTER, PING, disconnect) and the HTTP handlers; each method
/// is one critical section.
#[derive(Debug)]
pub struct RegistrationDb {
    inner: Mutex<Inner>,
    inactive_producer_timeout: Duration,
    tombstone_lifetime: Duration,
}

impl RegistrationDb {
    pub fn new(inactive_producer_timeout: Duration, tombstone_lifetime: Duration) -> Self {
        RegistrationDb {
            inner: Mutex::new(Inner::default()),
            inactive_producer_timeout,
            tombstone_lifetime,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere cannot leave the maps half-updated in a way that
        // matters more than losing discovery altogether, so keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record an identified nsqd (id = its remote address) and add it to the
    /// `client` registration. True when the client entry is new.
    pub fn identify(&self, conn: u64, info: PeerInfo, now: Stamp) -> bool {
        let id = info.remote_address.clone();
        let mut inner = self.lock();
        inner.peers.insert(
            id.clone(),
            Peer {
                info: Arc::new(info),
                conn,
                last_update: now,
            },
        );
        inner.add_producer(Registration::client(), &id)
    }

    /// Refresh a peer's liveness; returns the time since its previous update.
    pub fn ping(&self, id: &str, conn: u64, now: Stamp) -> Option<Duration> {
        let mut inner = self.lock();
        let peer = inner.peers.get_mut(id).filter(|p| p.conn == conn)?;
        let since = now.since(peer.last_update);
        peer.last_update = now;
        Some(since)
    }

    /// REGISTER: the channel (if any) and the topic. Returns the keys this
    /// producer was newly added to.
    pub fn register(&self, id: &str, topic: &str, channel: Option<&str>) -> Vec<Registration> {
        let mut inner = self.lock();
        let mut added = Vec::new();
        let mut keys = Vec::with_capacity(2);
        if let Some(channel) = channel {
            keys.push(Registration::channel(topic, channel));
        }
        keys.push(Registration::topic(topic));
        for reg in keys {
            if inner.add_producer(reg.clone(), id) {
                added.push(reg);
            }
        }
        added
    }

    /// UNREGISTER with upstream's rules: a channel goes from that channel key
    /// (the key itself too if ephemeral and now empty); a bare topic goes from
    /// every channel of the topic and from the topic key (the key itself too
    /// if ephemeral and now empty).
    pub fn unregister(&self, id: &str, topic: &str, channel: Option<&str>) -> Unregistered {
        let mut inner = self.lock();
        let mut out = Unregistered::default();
        match channel {
            Some(channel) => {
                let reg = Registration::channel(topic, channel);
                let (removed, left) = inner.remove_producer(&reg, id);
                remove_if_ephemeral_and_empty(&mut inner, &reg, channel, left);
                if removed {
                    out.removed.push(reg);
                }
            }
            None => {
                for reg in inner.find(Category::Channel, topic, "*") {
                    if inner.remove_producer(&reg, id).0 {
                        out.unexpected.push(reg);
                    }
                }
                let reg = Registration::topic(topic);
                let (removed, left) = inner.remove_producer(&reg, id);
                remove_if_ephemeral_and_empty(&mut inner, &reg, topic, left);
                if removed {
                    out.removed.push(reg);
                }
            }
        }
        out
    }

    /// A connection closed: drop its producer from every registration (the
    /// keys stay). Returns the keys it was removed from.
    pub fn remove_peer(&self, id: &str, conn: u64) -> Vec<Registration> {
        let mut inner = self.lock();
        if !matches!(inner.peers.get(id), Some(p) if p.conn == conn) {
            return Vec::new();
        }
        inner.peers.remove(id);
        let mut removed = Vec::new();
        for (reg, producers) in inner.registrations.iter_mut() {
            if producers.remove(id).is_some() {
                removed.push(reg.clone());
            }
        }
        removed
    }

    /// Create a key with no producers (HTTP create).
    pub fn add_registration(&self, reg: Registration) {
        self.lock().registrations.entry(reg).or_default();
    }

    /// HTTP /topic/delete: every channel key of the topic and the topic key.
    /// `*` is honoured, as upstream does not validate the name.
    pub fn delete_topic(&self, topic: &str) -> Vec<Registration> {
        let mut inner = self.lock();
        let mut gone = inner.find(Category::Channel, topic, "*");
        gone.extend(inner.find(Category::Topic, topic, ""));
        for reg in &gone {
            inner.registrations.remove(reg);
        }
        gone
    }

    /// HTTP /channel/delete: false when there was no such channel key.
    pub fn delete_channel(&self, topic: &str, channel: &str) -> bool {
        let mut inner = self.lock();
        let gone = inner.find(Category::Channel, topic, channel);
        for reg in &gone {
            inner.registrations.remove(reg);
        }
        !gone.is_empty()
    }

    /// Every topic key.
    pub fn topics(&self) -> Vec<String> {
        let inner = self.lock();
        inner
            .find(Category::Topic, "*", "")
            .into_iter()
            .map(|r| r.key)
            .collect()
    }

    /// Every channel key of `topic` (`*`: of every topic, repeats included).
    pub fn channels(&self, topic: &str) -> Vec<String> {
        let inner = self.lock();
        inner
            .find(Category::Channel, topic, "*")
            .into_iter()
            .map(|r| r.subkey)
            .collect()
    }

    /// /lookup: `None` when no topic key matches. Channels are not filtered
    /// by liveness; producers are: active and not tombstoned for this topic.
    pub fn lookup(&self, topic: &str, now: Stamp) -> Option<Lookup> {
        let inner = self.lock();
        let topic_keys = inner.find(Category::Topic, topic, "");
        if topic_keys.is_empty() {
            return None;
        }
        let channels = inner
            .find(Category::Channel, topic, "*")
            .into_iter()
            .map(|r| r.subkey)
            .collect();
        // With a wildcard one peer can appear under several topics; like
        // upstream, the first entry found for a peer decides.
        let mut seen = std::collections::HashSet::new();
        let mut producers = Vec::new();
        for reg in &topic_keys {
            for (id, p) in &inner.registrations[reg] {
                if !seen.insert(id.as_str()) {
                    continue;
                }
                if !inner.is_active(id, now, self.inactive_producer_timeout)
                    || is_tombstoned(p, now, self.tombstone_lifetime)
                {
                    continue;
                }
                if let Some(peer) = inner.peers.get(id) {
                    producers.push(Arc::clone(&peer.info));
                }
            }
        }
        Some(Lookup {
            channels,
            producers,
        })
    }

    /// /nodes: every active nsqd (tombstoned ones included), with its topics
    /// and a tombstone flag per topic.
    pub fn nodes(&self, now: Stamp) -> Vec<Node> {
        let inner = self.lock();
        let Some(clients) = inner.registrations.get(&Registration::client()) else {
            return Vec::new();
        };
        let mut nodes = Vec::new();
        for id in clients.keys() {
            if !inner.is_active(id, now, self.inactive_producer_timeout) {
                continue;
            }
            let Some(peer) = inner.peers.get(id) else {
                continue;
            };
            let mut topics = Vec::new();
            let mut tombstones = Vec::new();
            for (reg, producers) in &inner.registrations {
                if reg.category != Category::Topic {
                    continue;
                }
                if let Some(p) = producers.get(id) {
                    topics.push(reg.key.clone());
                    tombstones.push(is_tombstoned(p, now, self.tombstone_lifetime));
                }
            }
            nodes.push(Node {
                info: Arc::clone(&peer.info),
                topics,
                tombstones,
            });
        }
        nodes
    }

    /// /topic/tombstone: hide the producer whose `broadcast_address:http_port`
    /// is `node` from /lookup of `topic` for the tombstone lifetime. Returns
    /// how many entries were tombstoned (upstream answers 200 regardless).
    pub fn tombstone(&self, topic: &str, node: &str, now: Stamp) -> usize {
        let mut inner = self.lock();
        let keys = inner.find(Category::Topic, topic, "");
        let Inner {
            registrations,
            peers,
        } = &mut *inner;
        let mut count = 0;
        for reg in keys {
            let Some(producers) = registrations.get_mut(&reg) else {
                continue;
            };
            for (id, p) in producers.iter_mut() {
                let Some(peer) = peers.get(id) else { continue };
                let this_node = format!("{}:{}", peer.info.broadcast_address, peer.info.http_port);
                if this_node == node {
                    p.tombstoned_at = Some(now);
                    count += 1;
                }
            }
        }
        count
    }

    /// /debug: every key that has producers, as `"category:key:subkey"`.
    /// `tombstoned` stays true after the lifetime ends, as upstream's flag.
    pub fn debug(&self) -> BTreeMap<String, Vec<DebugProducer>> {
        let inner = self.lock();
        let mut out = BTreeMap::new();
        for (reg, producers) in &inner.registrations {
            for (id, p) in producers {
                let Some(peer) = inner.peers.get(id) else {
                    continue;
                };
                out.entry(reg.to_string())
                    .or_insert_with(Vec::new)
                    .push(DebugProducer {
                        id: id.clone(),
                        info: Arc::clone(&peer.info),
                        last_update: peer.last_update.unix_nanos,
                        tombstoned: p.tombstoned_at.is_some(),
                        tombstoned_at: p
                            .tombstoned_at
                            .map_or(GO_ZERO_TIME_UNIX_NANOS, |s| s.unix_nanos),
                    });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
