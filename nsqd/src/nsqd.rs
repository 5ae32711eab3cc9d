//! The nsqd server: its listeners, its topics, its clients, the timer scan,
//! and the order in which it starts and stops.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nsq_protocol::{Bodies, TopicName};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::channel::{Channel, ChannelLimits};
use crate::client::Client;
use crate::disk_io::{DiskIo, DiskIoOptions};
use crate::disk_queue::DiskQueueOptions;
use crate::id_map::IdMap;
use crate::lookup::Lookup;
use crate::metadata::{self, DirLock};
use crate::options::{Options, OptionsError};
use crate::replica_hooks::{ReplicaHooks, ReplicaRefused, ReplicationError};
use crate::topic::{PumpContext, PutError, Topic};
use nsq_app::http_client::HttpClient;

mod clients;
mod lookup_view;
mod persistence;
mod registry;
pub use clients::BadSetting;

/// `--durable`: how long a publish waits for `nsqd.dat` to name a new topic
/// or channel before it is refused.
const METADATA_WAIT: Duration = Duration::from_secs(10);

/// Errors that stop nsqd from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Options(#[from] OptionsError),
    #[error(transparent)]
    Listen(#[from] nsq_app::net::ListenError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Replication(#[from] ReplicationError),
    /// The stop could not store what was held in memory (a full or failing
    /// disk): counted so it is never mistaken for a clean stop.
    #[error("shutdown: {messages} messages lost (the disk refused them), {queues} disk queues not synced")]
    LostAtShutdown { messages: u64, queues: u64 },
}

pub type Result<T> = std::result::Result<T, Error>;

/// What the server bound before opening nsqd.
pub(crate) struct Listeners {
    pub tcp_addr: SocketAddr,
    pub http_addr: Option<SocketAddr>,
    pub https_addr: Option<SocketAddr>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Why a publish was not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Put(#[from] PutError),
    /// The disk queue could not take the messages (disk full, I/O error).
    #[error("{0}")]
    Disk(String),
    /// Fewer peers in sync or acknowledging than `--replica-min-acks`.
    #[error("replication: {0}")]
    Replica(#[from] ReplicaRefused),
}

/// Why nsqd reports itself unhealthy (a failed disk write): what `/ping`
/// and `/stats` show after `NOK - `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unhealthy(pub String);

impl From<String> for Unhealthy {
    fn from(why: String) -> Self {
        Unhealthy(why)
    }
}

impl From<&str> for Unhealthy {
    fn from(why: &str) -> Self {
        Unhealthy(why.to_owned())
    }
}

/// A publish already in its topic, waiting to be safe (see
/// [`Nsqd::start_publish`]).
pub type Published = std::pin::Pin<
    Box<dyn std::future::Future<Output = std::result::Result<(), PublishError>> + Send>,
>;

/// State shared by every task of one nsqd. The topic map and the client
/// registry each sit behind their own short std Mutex, taken to look up or
/// change membership only; message traffic locks topics and channels.
pub struct Nsqd {
    pub opts: Options,
    node_id: u16,
    limits: ChannelLimits,
    /// Sorted, because `/stats` lists topics by name.
    topics: Mutex<BTreeMap<TopicName, Arc<Topic>>>,
    clients: Mutex<IdMap<Arc<Client>>>,
    next_client_id: AtomicU64,
    /// Unix seconds.
    pub start_time: i64,
    pub(crate) tcp_addr: SocketAddr,
    pub(crate) http_addr: Option<SocketAddr>,
    pub(crate) https_addr: Option<SocketAddr>,
    /// Present when `--tls-cert`/`--tls-key` are set.
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    pub(crate) cancel: CancellationToken,
    pub(crate) tracker: TaskTracker,
    /// Registration with nsqlookupd.
    pub lookup: Lookup,
    pub(crate) http_client: HttpClient,
    /// Wakes the metadata writer after a topic or channel change.
    pub(crate) metadata_dirty: Notify,
    /// Which of those changes `nsqd.dat` holds.
    metadata_progress: Arc<metadata::Progress>,
    /// Where topics' pumps wait for their channels' writes.
    pump_ctx: Arc<PumpContext>,
    data_path: PathBuf,
    /// The I/O threads behind every disk queue.
    pub(crate) disk_io: Arc<DiskIo>,
    /// Held for the life of the server so no second nsqd shares the data path.
    _dir_lock: DirLock,
    /// `None` when healthy; else the last error (a failed disk write), which
    /// `/ping` and `/stats` report until the next success clears it.
    health: Mutex<Option<String>>,
    /// In-flight load per job worker name, over its connections (who locks:
    /// IDENTIFY of job workers, to find or make the shared counter).
    job_totals: Mutex<std::collections::HashMap<String, std::sync::Weak<AtomicU64>>>,
    /// Options `PUT /config/:opt` can change, and the log handle.
    pub live: crate::config::LiveOptions,
    /// Replicated pairs (`--replication-address`), through their seam;
    /// `None` when off.
    pub replicas: Option<Arc<dyn ReplicaHooks>>,
}

impl Nsqd {
    fn topics(&self) -> MutexGuard<'_, BTreeMap<TopicName, Arc<Topic>>> {
        self.topics.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A topic of this nsqd (on its disk I/O threads); `starting` holds
    /// delivery until its channels exist.
    fn new_topic(&self, name: TopicName, starting: bool) -> Arc<Topic> {
        let (disk, pumps) = (self.disk_io.clone(), self.pump_ctx.clone());
        let limits = self.limits.clone();
        Topic::new(
            name,
            self.node_id,
            limits,
            starting,
            Some(disk),
            Some(pumps),
        )
    }

    fn clients(&self) -> MutexGuard<'_, IdMap<Arc<Client>>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp_addr
    }

    /// `Ok` when healthy, else the error that made nsqd unhealthy.
    pub fn health(&self) -> std::result::Result<(), Unhealthy> {
        match &*self.health.lock().unwrap_or_else(|e| e.into_inner()) {
            None => Ok(()),
            Some(e) => Err(Unhealthy(e.clone())),
        }
    }

    /// Record the outcome of an operation that decides health (disk writes).
    pub fn set_health(&self, result: std::result::Result<(), Unhealthy>) {
        *self.health.lock().unwrap_or_else(|e| e.into_inner()) = result.err().map(|e| e.0);
    }

    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https_addr
    }
}

impl Nsqd {
    /// Publish to `topic` and wait until the messages are safe: in memory,
    /// or written to the disk queue. A disk failure refuses the publish and
    /// marks nsqd unhealthy until a write succeeds again.
    pub async fn publish(
        self: &Arc<Self>,
        topic: &Topic,
        bodies: impl Into<Bodies>,
        defer: Option<Duration>,
    ) -> std::result::Result<(), PublishError> {
        match self.start_publish(topic, bodies, defer)? {
            Some(wait) => wait.await,
            None => Ok(()),
        }
    }

    /// Put the messages into `topic` now (so publishes keep their order) and
    /// return the wait until they are safe (`None`: safe already): written
    /// to the disk queue when they went there, and acknowledged by the
    /// in-sync replicas. A connection may start its next publish before
    /// this one's wait ends.
    pub fn start_publish(
        self: &Arc<Self>,
        topic: &Topic,
        bodies: impl Into<Bodies>,
        defer: Option<Duration>,
    ) -> std::result::Result<Option<Published>, PublishError> {
        let replicas = self.replicas.as_ref().filter(|_| !topic.is_ephemeral());
        let keep = match replicas {
            Some(r) => r.before_put(topic)?,
            None => false,
        };
        let mut kept = Vec::new();
        let writes = topic.put_kept(bodies.into(), defer, keep.then_some(&mut kept))?;
        // Sent to the peers at once, so their copies are stored while ours
        // are written.
        let replicated = replicas
            .filter(|_| !kept.is_empty())
            .map(|r| r.replicate(topic, &kept, defer));
        if writes.is_empty() && replicated.is_none() {
            return Ok(None);
        }
        // Durable: the topic and channels these messages went to must be in
        // nsqd.dat, or a restart would not find their disk queues.
        let changes = self.metadata_progress.current();
        let nsqd = self.clone();
        let name = topic.name.clone();
        Ok(Some(Box::pin(async move {
            if !writes.is_empty() {
                nsqd.wait_written(&name, writes, changes).await?;
            }
            match replicated {
                Some(acked) => acked.await.map_err(PublishError::from),
                None => Ok(()),
            }
        })))
    }

    /// Wait for a publish's disk writes (and, durable, for `nsqd.dat`).
    async fn wait_written(
        &self,
        topic: &TopicName,
        writes: Vec<crate::backlog::DiskWrite>,
        changes: u64,
    ) -> std::result::Result<(), PublishError> {
        for w in writes {
            let result = w
                .await
                .unwrap_or_else(|_| Err(std::io::Error::other("disk I/O thread gone")));
            if let Err(e) = result {
                let msg = format!("disk write failed - {e}");
                error!(topic = %topic, "{msg}");
                self.set_health(Err(msg.clone().into()));
                return Err(PublishError::Disk(msg));
            }
        }
        if self.limits.durable {
            if let Err(e) = self
                .metadata_progress
                .wait_saved(changes, METADATA_WAIT)
                .await
            {
                let msg = format!("metadata not saved - {e}");
                error!(topic = %topic, "{msg}");
                self.set_health(Err(msg.clone().into()));
                return Err(PublishError::Disk(msg));
            }
        }
        self.set_health(Ok(()));
        Ok(())
    }

    /// The job channels' status, optionally of one job.
    pub fn job_status(&self, job: Option<&str>) -> Vec<crate::channel::JobStatus> {
        let now = Instant::now();
        let topics = match job {
            Some(j) => self.topic(j).into_iter().collect(),
            None => self.topics_snapshot(),
        };
        topics
            .iter()
            .flat_map(|t| t.channels())
            .filter_map(|c| c.job_status(now))
            .collect()
    }

    /// Requeue timed-out messages and release due deferred ones, for every
    /// channel. One pass costs a lock per channel.
    pub(crate) fn scan_queues(self: &Arc<Self>) {
        let now = Instant::now();
        for topic in self.topics_snapshot() {
            for channel in topic.channels() {
                channel.process_timers(now);
                self.publish_dead_letters(&channel);
            }
        }
    }

    /// Publish what `channel` set aside as exhausted to its dead-letter
    /// topic (created if missing). Called after REQ and after the timer
    /// scan, outside the channel's lock. The body is kept as is, so a dead
    /// letter can be published back to the job or topic unchanged.
    pub(crate) fn publish_dead_letters(self: &Arc<Self>, channel: &Arc<Channel>) {
        let dead = channel.take_dead();
        if dead.is_empty() {
            return;
        }
        let name = channel.dead_letter_topic();
        warn!(topic = %channel.topic_name, channel = %channel.name, dead_letter_topic = %name, count = dead.len(), "max attempts reached, moving messages to the dead-letter topic");
        let topic = self.get_topic(&name);
        let ids: Vec<u64> = dead.iter().map(|m| m.id).collect();
        let bodies: Vec<_> = dead.into_iter().map(|m| m.body).collect();
        let nsqd = self.clone();
        let channel = channel.clone();
        self.tracker.spawn(async move {
            match nsqd.publish(&topic, bodies, None).await {
                // Durable: only now may the channel's records of them go.
                Ok(()) => {
                    channel.forget(&ids);
                    if let Some(r) = &nsqd.replicas {
                        r.finished_ids(&channel, &ids);
                    }
                }
                // Durable: still the channel's, so delivered again after a
                // restart; otherwise lost, as the log says.
                Err(e) => error!(topic = %name, "dead letters not stored - {e}"),
            }
        });
    }
}

impl Nsqd {
    /// Take the data path (locked for the life of the server), start the
    /// disk I/O threads, and restore the topics, channels and disk queues
    /// that `nsqd.dat` lists. The listeners are already bound.
    /// `replicas`: replication's hooks, opened by the server beforehand.
    pub(crate) async fn open(
        opts: Options,
        listeners: Listeners,
        replicas: Option<Arc<dyn ReplicaHooks>>,
    ) -> Result<Arc<Nsqd>> {
        let Listeners {
            tcp_addr,
            http_addr,
            https_addr,
            tls,
        } = listeners;
        let data_path = opts.data_path();
        let dir_lock = metadata::lock_dir(&data_path)?;
        let meta = metadata::load(&data_path)?;
        let node_id = opts.effective_node_id();
        let http_client = HttpClient::new(
            *opts.http_client_connect_timeout,
            *opts.http_client_request_timeout,
        );
        let disk_io = Arc::new(DiskIo::start(DiskIoOptions {
            dir: data_path.clone(),
            queue: DiskQueueOptions {
                max_bytes_per_file: opts.max_bytes_per_file as u64,
                // The record payload carries a header before the body.
                max_msg_size: opts.max_msg_size as u64 + 64,
                sync_every: opts.sync_every.max(1) as u64,
                // --durable: a record read is kept until its message is done.
                commit_reads: opts.durable,
            },
            sync_timeout: *opts.sync_timeout,
            threads: opts.disk_io_threads(),
            durable: opts.durable,
        })?);
        let limits = ChannelLimits {
            mem_queue_size: opts.mem_queue_size as usize,
            max_msg_timeout: *opts.max_msg_timeout,
            max_channel_consumers: opts.max_channel_consumers as usize,
            e2e_window: (!opts.e2e_percentiles()?.is_empty())
                .then_some(*opts.e2e_processing_latency_window_time),
            durable: opts.durable,
            jobs: crate::channel::JobLimits {
                settle_until: (!opts.job_settle_time.is_zero())
                    .then(|| Instant::now() + *opts.job_settle_time),
                min_workers: opts.job_min_workers as usize,
            },
            // Replication hears FINs and channel pauses and emptyings.
            events: crate::channel::Events(replicas.clone().map(|r| r.channel_events())),
        };
        let live = crate::config::LiveOptions::new(&opts);
        let metadata_progress = Arc::new(metadata::Progress::default());
        let pump_ctx = Arc::new(PumpContext {
            runtime: tokio::runtime::Handle::current(),
            metadata: metadata_progress.clone(),
        });
        let nsqd = Arc::new(Nsqd {
            tcp_addr,
            http_addr,
            https_addr,
            tls,
            opts,
            node_id,
            limits,
            topics: Mutex::new(BTreeMap::new()),
            clients: Mutex::new(IdMap::default()),
            next_client_id: AtomicU64::new(0),
            start_time: crate::message::unix_nanos() / 1_000_000_000,
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
            lookup: Lookup::default(),
            http_client,
            metadata_dirty: Notify::new(),
            metadata_progress,
            pump_ctx,
            data_path,
            disk_io,
            _dir_lock: dir_lock,
            health: Mutex::new(None),
            job_totals: Mutex::new(std::collections::HashMap::new()),
            live,
            replicas,
        });
        if let Some(meta) = &meta {
            nsqd.restore(meta);
            info!(topics = meta.topics.len(), "metadata loaded");
        }
        nsqd.reopen_disk_queues().await?;
        // Upstream rewrites the metadata right after loading it.
        nsqd.write_metadata();
        Ok(nsqd)
    }

    pub(crate) fn node_id(&self) -> u16 {
        self.node_id
    }
}
