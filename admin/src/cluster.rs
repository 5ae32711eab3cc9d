//! Asking the cluster: every lookupd (or, without lookupds, every configured
//! nsqd) for topics and nodes, every node for its `/stats`, and forwarding
//! admin actions to the daemons that must carry them out.
//!
//! Upstream's rule for failures is kept: when every request of a question
//! fails the question fails (`UPSTREAM_ERROR`, 502); when only some do, the
//! answer is built from the rest and the failures become a warning.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use hyper::Method;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokio::task::JoinSet;

use nsq_app::http_client::HttpClient;

use crate::daemon_json::{LookupdProducer, NsqdInfo, NsqdStats};
use crate::stats::{join_host_port, mark_out_of_date, Producer, ProducerTopic};

mod error;
pub use error::NodeError;

/// Failures of some requests of a question that still has an answer.
pub type Warnings = Vec<String>;

/// An answer built from the sources that answered, or the reason none did.
pub type Answer<T> = Result<(T, Warnings), NodeError>;

/// Where the cluster is read from: lookupds (the usual setup) or a fixed
/// list of nsqds (`--nsqd-http-address`).
#[derive(Debug, Clone)]
pub enum Sources {
    Lookupd(Vec<String>),
    Nsqd(Vec<String>),
}

/// One nsqd as nsqadmin knows it: how it describes itself and the address
/// its HTTP API is reached at.
#[derive(Debug, Clone)]
pub struct Node {
    pub producer: Producer,
    /// In lookupd mode, `broadcast_address:http_port`; with
    /// `--nsqd-http-address`, the address as configured.
    pub fetch_addr: String,
}

/// Cheap to clone; clones share the lookupd list, which
/// `PUT /config/nsqlookupd_http_addresses` may replace while running.
#[derive(Debug, Clone)]
pub struct Cluster {
    client: HttpClient,
    /// Read at the start of each question; the lock is never held across a
    /// request.
    lookupds: Arc<RwLock<Vec<String>>>,
    nsqds: Arc<Vec<String>>,
    /// Every request's outcome, for `/metrics`.
    counters: Arc<crate::metrics::Counters>,
}

/// Percent-encode a query value (topic and channel names may hold `#`).
pub use nsq_app::url::query_escape as enc;

/// Split results into answers and failures; all failed (and at least one
/// asked) is a failure of the whole question.
fn settle<T>(results: Vec<Result<T, NodeError>>) -> Answer<Vec<T>> {
    let asked = results.len();
    let mut ok = Vec::new();
    let mut errs = Vec::new();
    for r in results {
        match r {
            Ok(v) => ok.push(v),
            Err(e) => errs.push(e),
        }
    }
    if asked > 0 && ok.is_empty() {
        return Err(NodeError::AllFailed(errs));
    }
    Ok((ok, errs.iter().map(ToString::to_string).collect()))
}

#[derive(Deserialize)]
struct TopicsBody {
    #[serde(default)]
    topics: Vec<String>,
}

#[derive(Deserialize)]
struct ChannelsBody {
    #[serde(default)]
    channels: Vec<String>,
}

#[derive(Deserialize)]
struct ProducersBody {
    #[serde(default)]
    producers: Vec<LookupdProducer>,
}

/// What a node's `/stats` is asked for: all of it or one topic (and one
/// channel of it), with or without each channel's clients.
#[derive(Debug, Clone, Copy, Default)]
pub struct StatsQuery<'a> {
    pub topic: Option<&'a str>,
    pub channel: Option<&'a str>,
    pub include_clients: bool,
}

impl<'a> StatsQuery<'a> {
    /// One topic, without clients.
    pub fn topic(topic: &'a str) -> Self {
        StatsQuery {
            topic: Some(topic),
            ..StatsQuery::default()
        }
    }

    /// One channel of a topic, with its clients.
    pub fn channel(topic: &'a str, channel: &'a str) -> Self {
        StatsQuery {
            topic: Some(topic),
            channel: Some(channel),
            include_clients: true,
        }
    }

    /// Everything, with every channel's clients.
    pub fn with_clients() -> Self {
        StatsQuery {
            include_clients: true,
            ..StatsQuery::default()
        }
    }
}

impl Cluster {
    pub fn new(client: HttpClient, lookupds: Vec<String>, nsqds: Vec<String>) -> Self {
        Cluster {
            client,
            lookupds: Arc::new(RwLock::new(lookupds)),
            nsqds: Arc::new(nsqds),
            counters: Arc::default(),
        }
    }

    /// Lookupds when any are configured (upstream's precedence), else the
    /// configured nsqds.
    pub fn sources(&self) -> Sources {
        let lookupds = self.lookupds();
        if lookupds.is_empty() {
            Sources::Nsqd(self.nsqds.as_ref().clone())
        } else {
            Sources::Lookupd(lookupds)
        }
    }

    pub fn lookupds(&self) -> Vec<String> {
        self.lookupds
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn nsqds(&self) -> &[String] {
        &self.nsqds
    }

    pub fn set_lookupds(&self, addrs: Vec<String>) {
        *self.lookupds.write().unwrap_or_else(|e| e.into_inner()) = addrs;
    }

    pub fn counters(&self) -> &crate::metrics::Counters {
        &self.counters
    }

    pub fn client(&self) -> &HttpClient {
        &self.client
    }

    /// Run `f` for every item at once; results in the items' order.
    pub(crate) async fn fan_out<I, T, F, Fut>(
        &self,
        items: Vec<I>,
        f: F,
    ) -> Vec<Result<T, NodeError>>
    where
        I: Send + 'static,
        T: Send + 'static,
        F: Fn(HttpClient, I) -> Fut,
        Fut: std::future::Future<Output = Result<T, NodeError>> + Send + 'static,
    {
        let mut set = JoinSet::new();
        let n = items.len();
        for (i, item) in items.into_iter().enumerate() {
            let fut = f(self.client.clone(), item);
            let counters = Arc::clone(&self.counters);
            set.spawn(async move {
                let r = fut.await;
                counters.node_request(r.is_ok());
                (i, r)
            });
        }
        let mut out: Vec<Option<Result<T, NodeError>>> = (0..n).map(|_| None).collect();
        while let Some(joined) = set.join_next().await {
            if let Ok((i, r)) = joined {
                out[i] = Some(r);
            }
        }
        out.into_iter()
            .map(|r| r.unwrap_or(Err(NodeError::TaskFailed)))
            .collect()
    }

    /// Topic names: the union over every lookupd's `/topics`, or over every
    /// nsqd's `/stats`. Sorted.
    pub async fn topics(&self) -> Answer<Vec<String>> {
        let results = match self.sources() {
            Sources::Lookupd(addrs) => {
                self.fan_out(addrs.clone(), |c, a| async move {
                    get_json::<TopicsBody>(&c, &format!("http://{a}/topics"))
                        .await
                        .map(|b| b.topics)
                })
                .await
            }
            Sources::Nsqd(addrs) => {
                self.fan_out(addrs.clone(), |c, a| async move {
                    let url = format!("http://{a}/stats?format=json&include_clients=false");
                    get_json::<NsqdStats>(&c, &url)
                        .await
                        .map(|s| s.topics.into_iter().map(|t| t.topic_name).collect())
                })
                .await
            }
        };
        let (lists, warnings) = settle(results)?;
        let all: BTreeSet<String> = lists.into_iter().flatten().collect();
        Ok((all.into_iter().collect(), warnings))
    }

    /// The channels lookupds know for `topic` (union), for topics without
    /// producers.
    pub async fn lookupd_channels(&self, topic: &str) -> Answer<Vec<String>> {
        let Sources::Lookupd(addrs) = self.sources() else {
            return Ok((Vec::new(), Vec::new()));
        };
        let topic = enc(topic);
        let results = self
            .fan_out(addrs.clone(), |c, a| {
                let url = format!("http://{a}/channels?topic={topic}");
                async move { get_json::<ChannelsBody>(&c, &url).await.map(|b| b.channels) }
            })
            .await;
        let (lists, warnings) = settle(results)?;
        let all: BTreeSet<String> = lists.into_iter().flatten().collect();
        Ok((all.into_iter().collect(), warnings))
    }

    /// Every nsqd: lookupds' `/nodes` merged by node, or each configured
    /// nsqd's `/info` with its topics from `/stats`.
    pub async fn nodes(&self) -> Answer<Vec<Node>> {
        let (mut nodes, warnings) = match self.sources() {
            Sources::Lookupd(addrs) => {
                let results = self
                    .fan_out(addrs.clone(), |c, a| async move {
                        get_json::<ProducersBody>(&c, &format!("http://{a}/nodes"))
                            .await
                            .map(|b| (a, b.producers))
                    })
                    .await;
                let (lists, warnings) = settle(results)?;
                (merge_lookupd_producers(lists, true), warnings)
            }
            Sources::Nsqd(addrs) => {
                let results = self
                    .fan_out(addrs.clone(), |c, a| async move { nsqd_node(&c, a).await })
                    .await;
                settle(results)?
            }
        };
        mark_out_of_date(
            &mut nodes
                .iter_mut()
                .map(|n| &mut n.producer)
                .collect::<Vec<_>>(),
        );
        nodes.sort_by(|a, b| {
            (&a.producer.hostname, &a.fetch_addr).cmp(&(&b.producer.hostname, &b.fetch_addr))
        });
        Ok((nodes, warnings))
    }

    /// The nsqds that have `topic`: lookupds' `/lookup` merged, or the
    /// configured nsqds whose `/stats` lists it.
    pub async fn topic_producers(&self, topic: &str) -> Answer<Vec<Node>> {
        match self.sources() {
            Sources::Lookupd(addrs) => {
                let t = enc(topic);
                let results = self
                    .fan_out(addrs.clone(), |c, a| {
                        let url = format!("http://{a}/lookup?topic={t}");
                        async move {
                            // A lookupd that does not know the topic says 404.
                            match get_json_or_404::<ProducersBody>(&c, &url).await? {
                                Some(b) => Ok((a, b.producers)),
                                None => Ok((a, Vec::new())),
                            }
                        }
                    })
                    .await;
                let (lists, warnings) = settle(results)?;
                Ok((merge_lookupd_producers(lists, false), warnings))
            }
            Sources::Nsqd(_) => {
                let (nodes, warnings) = self.nodes().await?;
                let with_topic = nodes
                    .into_iter()
                    .filter(|n| n.producer.topics.iter().any(|t| t.topic == topic))
                    .collect();
                Ok((with_topic, warnings))
            }
        }
    }

    /// Every node's `/stats`, as `q` asks.
    pub async fn stats(&self, nodes: &[Node], q: StatsQuery<'_>) -> Answer<Vec<(Node, NsqdStats)>> {
        settle(self.stats_each(nodes, q).await)
    }

    /// [`Cluster::stats`] with each node's own result, in `nodes`' order.
    pub async fn stats_each(
        &self,
        nodes: &[Node],
        q: StatsQuery<'_>,
    ) -> Vec<Result<(Node, NsqdStats), NodeError>> {
        let mut query = String::from("format=json");
        if let Some(t) = q.topic {
            query.push_str(&format!("&topic={}", enc(t)));
        }
        if let Some(c) = q.channel {
            query.push_str(&format!("&channel={}", enc(c)));
        }
        if !q.include_clients {
            query.push_str("&include_clients=false");
        }
        self.fan_out(nodes.to_vec(), |c, n| {
            let url = format!("http://{}/stats?{query}", n.fetch_addr);
            async move { get_json::<NsqdStats>(&c, &url).await.map(|s| (n, s)) }
        })
        .await
    }

    /// POST `path` (with its query) to every lookupd; none configured is
    /// nothing to do.
    pub async fn post_lookupds(&self, path: &str) -> Vec<Result<(), NodeError>> {
        let Sources::Lookupd(addrs) = self.sources() else {
            return Vec::new();
        };
        let urls = addrs.iter().map(|a| format!("http://{a}{path}")).collect();
        self.post_all(urls).await
    }

    /// POST `path` (with its query) to each of `nodes`.
    pub async fn post_nodes(&self, nodes: &[Node], path: &str) -> Vec<Result<(), NodeError>> {
        let urls = nodes
            .iter()
            .map(|n| format!("http://{}{path}", n.fetch_addr))
            .collect();
        self.post_all(urls).await
    }

    async fn post_all(&self, urls: Vec<String>) -> Vec<Result<(), NodeError>> {
        self.fan_out(urls, |c, url| async move {
            let (status, body) = c.request(Method::POST, &url, None, Bytes::new()).await?;
            if status == 200 {
                Ok(())
            } else {
                Err(NodeError::status("POST", &url, status, &body))
            }
        })
        .await
    }
}

/// Merge the producers several lookupds list into one entry per node
/// (keyed by `broadcast_address:http_port`), remembering which lookupd saw
/// it from where (`lookupd/remote_address`). With `topics`, a node's topics
/// are the union, tombstoned where any lookupd says so.
fn merge_lookupd_producers(lists: Vec<(String, Vec<LookupdProducer>)>, topics: bool) -> Vec<Node> {
    let mut by_addr: BTreeMap<String, (Producer, BTreeMap<String, bool>)> = BTreeMap::new();
    for (lookupd, producers) in lists {
        for lp in producers {
            let key = join_host_port(&lp.broadcast_address, lp.http_port);
            let entry = by_addr.entry(key).or_insert_with(|| {
                (
                    Producer {
                        remote_addresses: Vec::new(),
                        remote_address: lp.remote_address.clone(),
                        hostname: lp.hostname.clone(),
                        broadcast_address: lp.broadcast_address.clone(),
                        tcp_port: lp.tcp_port,
                        http_port: lp.http_port,
                        version: lp.version.clone(),
                        topics: Vec::new(),
                        out_of_date: false,
                    },
                    BTreeMap::new(),
                )
            });
            entry
                .0
                .remote_addresses
                .push(format!("{lookupd}/{}", lp.remote_address));
            if topics {
                for (i, t) in lp.topics.iter().enumerate() {
                    let tomb = lp.tombstones.get(i).copied().unwrap_or(false);
                    *entry.1.entry(t.clone()).or_insert(false) |= tomb;
                }
            }
        }
    }
    by_addr
        .into_iter()
        .map(|(addr, (mut p, topics))| {
            p.topics = topics
                .into_iter()
                .map(|(topic, tombstoned)| ProducerTopic { topic, tombstoned })
                .collect();
            Node {
                producer: p,
                fetch_addr: addr,
            }
        })
        .collect()
}

/// A configured nsqd as a node: its `/info`, and its topics from `/stats`.
async fn nsqd_node(c: &HttpClient, addr: String) -> Result<Node, NodeError> {
    let info: NsqdInfo = get_json(c, &format!("http://{addr}/info")).await?;
    let stats: NsqdStats = get_json(
        c,
        &format!("http://{addr}/stats?format=json&include_clients=false"),
    )
    .await?;
    let mut topics: Vec<ProducerTopic> = stats
        .topics
        .into_iter()
        .map(|t| ProducerTopic {
            topic: t.topic_name,
            tombstoned: false,
        })
        .collect();
    topics.sort();
    Ok(Node {
        producer: Producer {
            remote_addresses: Vec::new(),
            remote_address: String::new(),
            hostname: info.hostname,
            broadcast_address: info.broadcast_address,
            tcp_port: info.tcp_port,
            http_port: info.http_port,
            version: info.version,
            topics,
            out_of_date: false,
        },
        fetch_addr: addr,
    })
}

pub(crate) async fn get_json<T: DeserializeOwned>(
    c: &HttpClient,
    url: &str,
) -> Result<T, NodeError> {
    get_json_or_404(c, url)
        .await?
        .ok_or_else(|| NodeError::status("GET", url, 404, b""))
}

/// GET `url` as JSON; `None` for a 404, an error for any other non-200.
async fn get_json_or_404<T: DeserializeOwned>(
    c: &HttpClient,
    url: &str,
) -> Result<Option<T>, NodeError> {
    let (status, body) = c.get(url).await?;
    match status {
        200 => serde_json::from_slice(&body)
            .map(Some)
            .map_err(|source| NodeError::Json {
                url: url.to_owned(),
                source,
            }),
        404 => Ok(None),
        s => Err(NodeError::status("GET", url, s, &body)),
    }
}

/// Upstream's `message`: empty, or every partial failure after `WARNING: `.
pub(crate) fn warning(w: &Warnings) -> String {
    if w.is_empty() {
        String::new()
    } else {
        format!("WARNING: {}", w.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settle_keeps_partial_answers() {
        let down = |url: &str| NodeError::status("GET", url, 500, b"down ");
        let r = settle(vec![Ok(1u8), Err(down("a"))]).unwrap();
        assert_eq!(r, (vec![1], vec!["GET a: 500 down".to_string()]));
        let r = settle::<u8>(vec![Err(down("a")), Err(down("b"))]).unwrap_err();
        assert_eq!(r.to_string(), "GET a: 500 down; GET b: 500 down");
        let r = settle::<u8>(vec![]).unwrap();
        assert_eq!(r, (vec![], vec![]));
    }

    #[test]
    fn encodes_names_for_queries() {
        assert_eq!(enc("t.1_x-y"), "t.1_x-y");
        assert_eq!(enc("c#ephemeral"), "c%23ephemeral");
    }

    #[test]
    fn merges_nodes_seen_by_several_lookupds() {
        let lp = |remote: &str, topics: &[&str], tombs: &[bool]| LookupdProducer {
            remote_address: remote.into(),
            hostname: "vm".into(),
            broadcast_address: "127.0.0.1".into(),
            tcp_port: 4150,
            http_port: 4151,
            version: "1.3.0".into(),
            tombstones: tombs.to_vec(),
            topics: topics.iter().map(|s| s.to_string()).collect(),
        };
        let nodes = merge_lookupd_producers(
            vec![
                (
                    "l1:4161".into(),
                    vec![lp("127.0.0.1:5", &["b", "a"], &[false, false])],
                ),
                ("l2:4161".into(), vec![lp("127.0.0.1:6", &["a"], &[true])]),
            ],
            true,
        );
        assert_eq!(nodes.len(), 1);
        let p = &nodes[0].producer;
        assert_eq!(nodes[0].fetch_addr, "127.0.0.1:4151");
        assert_eq!(
            p.remote_addresses,
            ["l1:4161/127.0.0.1:5", "l2:4161/127.0.0.1:6"]
        );
        assert_eq!(
            p.topics,
            [
                ProducerTopic {
                    topic: "a".into(),
                    tombstoned: true
                },
                ProducerTopic {
                    topic: "b".into(),
                    tombstoned: false
                }
            ]
        );
    }
}
