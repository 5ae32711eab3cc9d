//! The numbers nsqadmin shows, in upstream's `/api/*` JSON shapes: what
//! nsqd's `/stats` and lookupd's `/nodes` say, per node, and their sums over
//! the cluster (upstream's `clusterinfo` types, field for field).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::daemon_json::{NsqdChannel, NsqdClient, NsqdLatency, NsqdTopic};

/// End-to-end latency of one node, or averaged over nodes (upstream's
/// `E2eProcessingLatencyAggregate`). Per node, `topic`/`channel`/`host`
/// are empty; the cluster-wide one names them and has host `*`.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Latency {
    pub count: i64,
    pub percentiles: Option<Vec<Percentile>>,
    pub topic: String,
    pub channel: String,
    pub host: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Percentile {
    pub quantile: f64,
    pub value: f64,
    pub min: f64,
    pub max: f64,
    pub average: f64,
    pub count: f64,
}

impl Latency {
    /// One node's figures: each percentile is its own min, max and average.
    fn from_node(l: &NsqdLatency) -> Self {
        Latency {
            count: l.count,
            percentiles: l.percentiles.as_ref().map(|ps| {
                ps.iter()
                    .map(|p| Percentile {
                        quantile: p.quantile,
                        value: p.value,
                        min: p.value,
                        max: p.value,
                        average: p.value,
                        count: 1.0,
                    })
                    .collect()
            }),
            ..Latency::default()
        }
    }

    /// Fold another node's figures in: counts add up, and each quantile
    /// keeps the min, max and (count-weighted) average over nodes.
    fn add(&mut self, other: &Latency) {
        self.host = "*".into();
        self.count += other.count;
        let Some(theirs) = &other.percentiles else {
            return;
        };
        let mine = self.percentiles.get_or_insert_with(Vec::new);
        for p in theirs {
            match mine.iter_mut().find(|m| m.quantile == p.quantile) {
                Some(m) => {
                    let total = m.count + p.count;
                    m.min = m.min.min(p.min);
                    m.max = m.max.max(p.max);
                    if total > 0.0 {
                        m.average = (m.average * m.count + p.average * p.count) / total;
                    }
                    m.count = total;
                    m.value = m.average;
                }
                None => mine.push(p.clone()),
            }
        }
        // Highest quantile first, as nsqd lists them.
        mine.sort_by(|a, b| b.quantile.total_cmp(&a.quantile));
    }
}

/// A client of a channel on one node, as nsqd reports it plus the node and
/// how long it has been connected (ns, a Go duration).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClientStats {
    pub node: String,
    pub remote_address: String,
    pub version: String,
    pub client_id: String,
    pub hostname: String,
    pub user_agent: String,
    pub connect_ts: i64,
    pub connected: i64,
    pub in_flight_count: i64,
    pub ready_count: i64,
    pub finish_count: i64,
    pub requeue_count: i64,
    pub message_count: i64,
    pub sample_rate: i64,
    pub deflate: bool,
    pub snappy: bool,
    pub authed: bool,
    pub auth_identity: String,
    pub auth_identity_url: String,
    pub tls: bool,
    pub tls_cipher_suite: String,
    pub tls_version: String,
    pub tls_negotiated_protocol: String,
    pub tls_negotiated_protocol_is_mutual: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChannelStats {
    pub node: String,
    pub hostname: String,
    pub topic_name: String,
    pub channel_name: String,
    pub depth: i64,
    pub memory_depth: i64,
    pub backend_depth: i64,
    pub in_flight_count: i64,
    pub deferred_count: i64,
    pub requeue_count: i64,
    pub timeout_count: i64,
    pub message_count: i64,
    pub client_count: i64,
    pub nodes: Option<Vec<ChannelStats>>,
    pub clients: Option<Vec<ClientStats>>,
    pub paused: bool,
    pub e2e_processing_latency: Latency,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TopicStats {
    pub node: String,
    pub hostname: String,
    pub topic_name: String,
    pub depth: i64,
    pub memory_depth: i64,
    pub backend_depth: i64,
    pub message_count: i64,
    pub nodes: Option<Vec<TopicStats>>,
    pub channels: Vec<ChannelStats>,
    pub paused: bool,
    pub e2e_processing_latency: Latency,
}

/// Where a node's numbers came from: its `broadcast_address:http_port`
/// (upstream's node key) and its hostname.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeId {
    pub addr: String,
    pub hostname: String,
}

impl ClientStats {
    fn from_node(node: &NodeId, c: &NsqdClient, now_s: i64) -> Self {
        ClientStats {
            node: node.addr.clone(),
            remote_address: c.remote_address.clone(),
            version: c.version.clone(),
            client_id: c.client_id.clone(),
            hostname: c.hostname.clone(),
            user_agent: c.user_agent.clone(),
            connect_ts: c.connect_ts,
            connected: (now_s - c.connect_ts).max(0) * 1_000_000_000,
            in_flight_count: c.in_flight_count,
            ready_count: c.ready_count,
            finish_count: c.finish_count,
            requeue_count: c.requeue_count,
            message_count: c.message_count,
            sample_rate: c.sample_rate,
            deflate: c.deflate,
            snappy: c.snappy,
            authed: c.authed,
            auth_identity: c.auth_identity.clone(),
            auth_identity_url: c.auth_identity_url.clone(),
            tls: c.tls,
            tls_cipher_suite: c.tls_cipher_suite.clone(),
            tls_version: c.tls_version.clone(),
            tls_negotiated_protocol: c.tls_negotiated_protocol.clone(),
            tls_negotiated_protocol_is_mutual: c.tls_negotiated_protocol_is_mutual,
        }
    }
}

impl ChannelStats {
    /// One node's channel. `clients` is `None` when nsqd was asked without
    /// them, an empty list when it has none.
    pub fn from_node(node: &NodeId, topic: &str, c: &NsqdChannel, now_s: i64) -> Self {
        ChannelStats {
            node: node.addr.clone(),
            hostname: node.hostname.clone(),
            topic_name: topic.to_owned(),
            channel_name: c.channel_name.clone(),
            depth: c.depth,
            memory_depth: c.depth - c.backend_depth,
            backend_depth: c.backend_depth,
            in_flight_count: c.in_flight_count,
            deferred_count: c.deferred_count,
            requeue_count: c.requeue_count,
            timeout_count: c.timeout_count,
            message_count: c.message_count,
            client_count: c.client_count,
            nodes: None,
            clients: c.clients.as_ref().map(|cs| {
                cs.iter()
                    .map(|cl| ClientStats::from_node(node, cl, now_s))
                    .collect()
            }),
            paused: c.paused,
            e2e_processing_latency: Latency::from_node(&c.e2e_processing_latency),
        }
    }

    /// The channel over every node that has it: sums, paused if any node
    /// is, every node's figures under `nodes` and every client together.
    pub fn aggregate(topic: &str, channel: &str, per_node: Vec<ChannelStats>) -> Self {
        let mut all = ChannelStats {
            node: "*".into(),
            hostname: String::new(),
            topic_name: topic.to_owned(),
            channel_name: channel.to_owned(),
            depth: 0,
            memory_depth: 0,
            backend_depth: 0,
            in_flight_count: 0,
            deferred_count: 0,
            requeue_count: 0,
            timeout_count: 0,
            message_count: 0,
            client_count: 0,
            nodes: None,
            clients: Some(Vec::new()),
            paused: false,
            e2e_processing_latency: Latency {
                topic: topic.to_owned(),
                channel: channel.to_owned(),
                host: "*".into(),
                ..Latency::default()
            },
        };
        for c in &per_node {
            all.depth += c.depth;
            all.memory_depth += c.memory_depth;
            all.backend_depth += c.backend_depth;
            all.in_flight_count += c.in_flight_count;
            all.deferred_count += c.deferred_count;
            all.requeue_count += c.requeue_count;
            all.timeout_count += c.timeout_count;
            all.message_count += c.message_count;
            all.client_count += c.client_count;
            all.paused |= c.paused;
            all.e2e_processing_latency.add(&c.e2e_processing_latency);
            if let (Some(mine), Some(theirs)) = (&mut all.clients, &c.clients) {
                mine.extend(theirs.iter().cloned());
            }
        }
        if let Some(cs) = &mut all.clients {
            cs.sort_by(|a, b| (&a.hostname, &a.node).cmp(&(&b.hostname, &b.node)));
        }
        let mut nodes = per_node;
        nodes.sort_by(|a, b| (&a.hostname, &a.node).cmp(&(&b.hostname, &b.node)));
        all.nodes = Some(nodes);
        all
    }
}

impl TopicStats {
    /// One node's topic with its channels (without their clients unless
    /// `clients` is set; then absent lists become empty ones).
    pub fn from_node(node: &NodeId, t: &NsqdTopic, now_s: i64) -> Self {
        TopicStats {
            node: node.addr.clone(),
            hostname: node.hostname.clone(),
            topic_name: t.topic_name.clone(),
            depth: t.depth,
            memory_depth: t.depth - t.backend_depth,
            backend_depth: t.backend_depth,
            message_count: t.message_count,
            nodes: None,
            channels: t
                .channels
                .iter()
                .map(|c| ChannelStats::from_node(node, &t.topic_name, c, now_s))
                .collect(),
            paused: t.paused,
            e2e_processing_latency: Latency::from_node(&t.e2e_processing_latency),
        }
    }

    /// The topic over every node that has it; each channel summed over its
    /// nodes (a channel on one node only is that node's figures, as
    /// upstream shows it).
    pub fn aggregate(topic: &str, per_node: Vec<TopicStats>) -> Self {
        let mut all = TopicStats {
            node: "*".into(),
            hostname: String::new(),
            topic_name: topic.to_owned(),
            depth: 0,
            memory_depth: 0,
            backend_depth: 0,
            message_count: 0,
            nodes: None,
            channels: Vec::new(),
            paused: false,
            e2e_processing_latency: Latency {
                topic: topic.to_owned(),
                host: "*".into(),
                ..Latency::default()
            },
        };
        let mut channels: BTreeMap<String, Vec<ChannelStats>> = BTreeMap::new();
        for t in &per_node {
            all.depth += t.depth;
            all.memory_depth += t.memory_depth;
            all.backend_depth += t.backend_depth;
            all.message_count += t.message_count;
            all.paused |= t.paused;
            all.e2e_processing_latency.add(&t.e2e_processing_latency);
            for c in &t.channels {
                channels
                    .entry(c.channel_name.clone())
                    .or_default()
                    .push(c.clone());
            }
        }
        all.channels = channels
            .into_iter()
            .map(|(name, mut cs)| {
                if cs.len() == 1 {
                    cs.pop().expect("one")
                } else {
                    let mut agg = ChannelStats::aggregate(topic, &name, cs);
                    agg.clients = None;
                    agg
                }
            })
            .collect();
        let mut nodes = per_node;
        nodes.sort_by(|a, b| (&a.hostname, &a.node).cmp(&(&b.hostname, &b.node)));
        all.nodes = Some(nodes);
        all
    }
}

// ---- lookupd and nsqd node descriptions ----------------------------------

/// A node as lookupd's `/nodes` lists it (or as nsqd's `/info` describes
/// itself), in upstream's `Producer` shape.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Producer {
    pub remote_addresses: Vec<String>,
    pub remote_address: String,
    pub hostname: String,
    pub broadcast_address: String,
    pub tcp_port: u16,
    pub http_port: u16,
    pub version: String,
    pub topics: Vec<ProducerTopic>,
    pub out_of_date: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProducerTopic {
    pub topic: String,
    pub tombstoned: bool,
}

impl Producer {
    /// Upstream's node key, `broadcast_address:http_port`.
    pub fn http_address(&self) -> String {
        join_host_port(&self.broadcast_address, self.http_port)
    }

    pub fn node_id(&self) -> NodeId {
        NodeId {
            addr: self.http_address(),
            hostname: self.hostname.clone(),
        }
    }
}

/// `host:port`, bracketing IPv6 literals as Go's `net.JoinHostPort` does.
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `major.minor.patch` of a version string; anything unparsable is 0.0.0,
/// as upstream treats it.
pub fn parse_version(v: &str) -> (u64, u64, u64) {
    let core = v.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    if parts.len() != 3 {
        return (0, 0, 0);
    }
    match (parts[0].parse(), parts[1].parse(), parts[2].parse()) {
        (Ok(a), Ok(b), Ok(c)) => (a, b, c),
        _ => (0, 0, 0),
    }
}

/// Mark every producer older than the newest one as `out_of_date`.
pub fn mark_out_of_date(producers: &mut [&mut Producer]) {
    let newest = producers
        .iter()
        .map(|p| parse_version(&p.version))
        .max()
        .unwrap_or((0, 0, 0));
    for p in producers {
        p.out_of_date = parse_version(&p.version) < newest;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon_json::{NsqdPercentile, NsqdStats};

    fn node(n: u16) -> NodeId {
        NodeId {
            addr: format!("127.0.0.1:{n}"),
            hostname: format!("h{n}"),
        }
    }

    const SAMPLE: &str = include_str!("../../../shared/spec/samples/nsqd_stats_with_client.json");

    #[test]
    fn one_node_topic_matches_upstream_sample() {
        let stats: NsqdStats = serde_json::from_str(SAMPLE).unwrap();
        let n = NodeId {
            addr: "127.0.0.1:24151".into(),
            hostname: "vm".into(),
        };
        let mut per_node = TopicStats::from_node(&n, &stats.topics[0], 0);
        // The topic page asks nsqd without clients.
        for c in &mut per_node.channels {
            c.clients = None;
        }
        let all = TopicStats::aggregate("X", vec![per_node]);
        let mut ours = serde_json::to_value(&all).unwrap();
        ours["message"] = "".into();
        let upstream: serde_json::Value = serde_json::from_str(include_str!(
            "../../../shared/spec/samples/nsqadmin_api_topic_X_with_client.json"
        ))
        .unwrap();
        assert_eq!(ours, upstream);
    }

    #[test]
    fn channel_sums_over_nodes_with_clients() {
        let stats: NsqdStats = serde_json::from_str(SAMPLE).unwrap();
        let c = &stats.topics[0].channels[0];
        let a = ChannelStats::from_node(&node(1), "X", c, 1795314097 + 3);
        let b = ChannelStats::from_node(&node(2), "X", c, 1795314097);
        let all = ChannelStats::aggregate("X", "c1", vec![b, a]);
        assert_eq!(all.node, "*");
        assert_eq!(all.depth, 6);
        assert_eq!(all.memory_depth, 6);
        assert_eq!(all.in_flight_count, 2);
        assert_eq!(all.client_count, 2);
        let nodes = all.nodes.as_ref().unwrap();
        assert_eq!(nodes[0].node, "127.0.0.1:1", "sorted by hostname");
        let clients = all.clients.as_ref().unwrap();
        assert_eq!(clients.len(), 2);
        assert_eq!(clients[0].connected, 3_000_000_000);
        assert_eq!(all.e2e_processing_latency.host, "*");
        assert_eq!(all.e2e_processing_latency.channel, "c1");
    }

    #[test]
    fn latency_averages_quantiles() {
        let mut agg = Latency::default();
        for v in [10.0, 30.0] {
            agg.add(&Latency::from_node(&NsqdLatency {
                count: 5,
                percentiles: Some(vec![
                    NsqdPercentile {
                        quantile: 0.5,
                        value: v,
                    },
                    NsqdPercentile {
                        quantile: 0.99,
                        value: v * 2.0,
                    },
                ]),
            }));
        }
        assert_eq!(agg.count, 10);
        let ps = agg.percentiles.unwrap();
        assert_eq!(ps[0].quantile, 0.99);
        assert_eq!((ps[1].min, ps[1].max, ps[1].average), (10.0, 30.0, 20.0));
        assert_eq!(ps[1].count, 2.0);
    }

    #[test]
    fn versions_and_out_of_date() {
        assert_eq!(parse_version("1.3.0"), (1, 3, 0));
        assert_eq!(parse_version("1.2.1-alpha"), (1, 2, 1));
        assert_eq!(parse_version("junk"), (0, 0, 0));
        let p = |v: &str| Producer {
            remote_addresses: vec![],
            remote_address: String::new(),
            hostname: String::new(),
            broadcast_address: "h".into(),
            tcp_port: 1,
            http_port: 2,
            version: v.into(),
            topics: vec![],
            out_of_date: false,
        };
        let mut ps = [p("1.3.0"), p("1.2.1"), p("bad")];
        mark_out_of_date(&mut ps.iter_mut().collect::<Vec<_>>());
        assert_eq!(
            ps.iter().map(|p| p.out_of_date).collect::<Vec<_>>(),
            [false, true, true]
        );
        assert_eq!(join_host_port("::1", 4151), "[::1]:4151");
    }
}
