//! `nsq-job`: fire jobs (one shard message per item), run shards as worker
//! commands, and show a job's status from nsqd.
//!
//! A job is a topic; a fire publishes one shard per item (see
//! `nsq_protocol::job` for the body layout). `work` subscribes with a
//! declared capacity, so nsqd hands it shards by load, and runs the command
//! once per shard.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes};
use clap::{Parser, Subcommand};
use nsq_app::duration::GoDuration;
use nsq_protocol::job::Shard;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;
use tracing::{error, info, warn};

use crate::{Result, ToolError};
use nsq::{handler_fn, Config, Consumer, HandlerError, Message, Producer};

/// How long an HTTP request to nsqd may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Parser, Debug, Clone)]
#[command(
    name = "nsq-job",
    about = "fire jobs, run their shards, show their status"
)]
pub struct JobOptions {
    #[command(subcommand)]
    pub command: Option<JobCommand>,
    /// print version string
    #[arg(long)]
    pub version: bool,
}

#[derive(Subcommand, Debug, Clone)]
pub enum JobCommand {
    /// Publish one fire of a job: one shard message per item; prints the fire id.
    Submit(SubmitOptions),
    /// Run a command once per shard given to this worker.
    Work(WorkOptions),
    /// Show a job's fires, shards and workers.
    Status(StatusOptions),
}

#[derive(Parser, Debug, Clone)]
pub struct SubmitOptions {
    /// nsqd TCP address to publish to
    #[arg(long)]
    pub nsqd_tcp_address: Option<String>,
    /// nsqd HTTP address to publish to
    #[arg(long)]
    pub nsqd_http_address: Option<String>,
    /// job (topic) name
    #[arg(long)]
    pub job: String,
    /// number of shard items (0..N-1)
    #[arg(long)]
    pub shards: u32,
    /// load of every shard
    #[arg(long)]
    pub load: Option<u32>,
    /// load per shard, comma separated (one per item)
    #[arg(long)]
    pub loads: Option<String>,
    /// parameters per item: "0=a,1=b,..."
    #[arg(long, default_value = "")]
    pub params: String,
    /// payload given to every shard's command on stdin
    #[arg(long, default_value = "")]
    pub payload: String,
}

#[derive(Parser, Debug, Clone)]
pub struct WorkOptions {
    /// lookupd HTTP address (may be given multiple times)
    #[arg(long)]
    pub lookupd_http_address: Vec<String>,
    /// nsqd TCP address (may be given multiple times)
    #[arg(long)]
    pub nsqd_tcp_address: Vec<String>,
    /// job (topic) name
    #[arg(long)]
    pub job: String,
    /// load units this worker runs at once
    #[arg(long)]
    pub capacity: u64,
    /// channel the workers of this job share
    #[arg(long, default_value = "workers")]
    pub channel: String,
    /// this worker's name (NSQ_WORKER_ID; default host-pid)
    #[arg(long, default_value = "")]
    pub worker_id: String,
    /// first requeue delay of a failed shard; grows with its attempts
    #[arg(long, default_value = "1s")]
    pub requeue_delay: GoDuration,
    /// message timeout asked of nsqd; running shards are touched at half of it
    #[arg(long, default_value = "60s")]
    pub msg_timeout: GoDuration,
    /// on SIGTERM, how long to wait for running shards
    #[arg(long, default_value = "10m")]
    pub stop_timeout: GoDuration,
    /// the command and its arguments, after `--`
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Parser, Debug, Clone)]
pub struct StatusOptions {
    /// nsqd HTTP address (may be given multiple times)
    #[arg(long)]
    pub nsqd_http_address: Vec<String>,
    /// lookupd HTTP address, to ask every nsqd it knows (may be given multiple times)
    #[arg(long)]
    pub lookupd_http_address: Vec<String>,
    /// only this job
    #[arg(long)]
    pub job: Option<String>,
    /// print nsqd's JSON as is
    #[arg(long)]
    pub json: bool,
}

/// The shards of one fire, from the submit options.
pub fn build_fire(o: &SubmitOptions, fire: &str) -> Result<Vec<Bytes>> {
    let bad = |m: String| ToolError::Config(m);
    if o.shards == 0 {
        return Err(bad("--shards must be at least 1".into()));
    }
    let loads: Vec<u32> = match (&o.load, &o.loads) {
        (Some(_), Some(_)) => return Err(bad("use --load or --loads, not both".into())),
        (Some(l), None) => vec![*l; o.shards as usize],
        (None, None) => vec![1; o.shards as usize],
        (None, Some(list)) => {
            let v = list
                .split(',')
                .map(|s| s.trim().parse::<u32>())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| bad(format!("--loads: {e}")))?;
            if v.len() != o.shards as usize {
                return Err(bad(format!(
                    "--loads has {} values for {} shards",
                    v.len(),
                    o.shards
                )));
            }
            v
        }
    };
    if loads.contains(&0) {
        return Err(bad("a shard's load must be at least 1".into()));
    }
    let mut params = vec![String::new(); o.shards as usize];
    for pair in o.params.split(',').filter(|p| !p.is_empty()) {
        let (item, value) = pair
            .split_once('=')
            .ok_or_else(|| bad(format!("--params: {pair:?} is not ITEM=VALUE")))?;
        let item: usize = item
            .trim()
            .parse()
            .map_err(|_| bad(format!("--params: bad item {item:?}")))?;
        let slot = params
            .get_mut(item)
            .ok_or_else(|| bad(format!("--params: item {item} is not below --shards")))?;
        *slot = value.to_string();
    }
    (0..o.shards)
        .map(|item| {
            Shard {
                job: o.job.clone(),
                fire: fire.to_string(),
                item,
                load: loads[item as usize],
                param: params[item as usize].clone(),
                payload: Bytes::from(o.payload.clone().into_bytes()),
            }
            .encode()
            .map_err(|e| bad(e.to_string()))
        })
        .collect()
}

/// A fire id: milliseconds since the epoch and a random suffix.
pub fn new_fire_id() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{ms:x}-{:04x}", rand::random::<u16>())
}

/// `submit`: returns the fire id.
pub async fn submit(o: &SubmitOptions) -> Result<String> {
    o.job
        .parse::<nsq_protocol::TopicName>()
        .map_err(|_| ToolError::Config(format!("--job: {:?} is not a valid topic name", o.job)))?;
    let fire = new_fire_id();
    let bodies = build_fire(o, &fire)?;
    match (&o.nsqd_tcp_address, &o.nsqd_http_address) {
        (Some(addr), None) => {
            let p = Producer::new(addr.clone(), Config::default());
            let r = p.multi_publish(&o.job, bodies).await;
            p.stop().await;
            r?;
        }
        (None, Some(addr)) => {
            // Binary MPUB: [u32 count] then [u32 size][body] per message.
            let mut body = Vec::new();
            body.put_u32(bodies.len() as u32);
            for b in &bodies {
                body.put_u32(b.len() as u32);
                body.put_slice(b);
            }
            let path = format!("/mpub?topic={}&binary=true", o.job);
            http(addr, hyper::Method::POST, &path, Bytes::from(body)).await?;
        }
        _ => {
            return Err(ToolError::Config(
                "use --nsqd-tcp-address or --nsqd-http-address (one)".into(),
            ))
        }
    }
    Ok(fire)
}

async fn http(addr: &str, method: hyper::Method, path: &str, body: Bytes) -> Result<Bytes> {
    let url = format!("http://{addr}{path}");
    let client = nsq_app::http_client::HttpClient::new(HTTP_TIMEOUT, HTTP_TIMEOUT);
    let (status, body) = client.request(method.clone(), &url, None, body).await?;
    if !(200..300).contains(&status) {
        return Err(ToolError::Config(format!(
            "{method} {url}: status {status}: {}",
            String::from_utf8_lossy(&body)
        )));
    }
    Ok(body)
}

/// nsqd's `/job/status` JSON.
pub async fn fetch_status(addr: &str, job: Option<&str>) -> Result<Value> {
    let path = match job {
        Some(j) => format!("/job/status?job={j}"),
        None => "/job/status".to_string(),
    };
    let body = http(addr, hyper::Method::GET, &path, Bytes::new()).await?;
    serde_json::from_slice(&body).map_err(|e| ToolError::Config(format!("bad status JSON: {e}")))
}

/// The HTTP addresses of the nsqds `--nsqd-http-address` names and the
/// lookupds list (`/nodes`), without repeats.
pub async fn status_nsqds(o: &StatusOptions) -> Result<Vec<String>> {
    let mut addrs = o.nsqd_http_address.clone();
    for lookupd in &o.lookupd_http_address {
        let body = http(lookupd, hyper::Method::GET, "/nodes", Bytes::new()).await?;
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| ToolError::Config(format!("bad /nodes JSON from {lookupd}: {e}")))?;
        for p in v["producers"].as_array().into_iter().flatten() {
            if let (Some(host), Some(port)) =
                (p["broadcast_address"].as_str(), p["http_port"].as_u64())
            {
                let addr = if host.contains(':') {
                    format!("[{host}]:{port}")
                } else {
                    format!("{host}:{port}")
                };
                if !addrs.contains(&addr) {
                    addrs.push(addr);
                }
            }
        }
    }
    if addrs.is_empty() {
        return Err(ToolError::Config(
            "--nsqd-http-address or --lookupd-http-address required".into(),
        ));
    }
    Ok(addrs)
}

/// `status` as text for one nsqd: its job channels, and with `--job`, the
/// fires still waiting in the topic for a first worker to subscribe.
pub async fn status_text(addr: &str, job: Option<&str>) -> Result<String> {
    let status = fetch_status(addr, job).await?;
    let mut out = format_status(&status);
    if let Some(job) = job {
        let path = format!("/stats?format=json&topic={job}");
        let body = http(addr, hyper::Method::GET, &path, Bytes::new()).await?;
        let stats: Value = serde_json::from_slice(&body).unwrap_or_default();
        let topic = stats["topics"]
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["topic_name"] == job));
        if let Some(t) = topic {
            let waiting = t["depth"].as_u64().unwrap_or(0);
            if waiting > 0 {
                out.push_str(&format!(
                    "job {job}: {waiting} shards waiting in the topic for a worker to subscribe\n"
                ));
            }
        }
    }
    Ok(out)
}

/// The status as text: per job, its workers, then per fire its shards.
pub fn format_status(status: &Value) -> String {
    // Numbers as integers, so the columns line up.
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let mut out = String::new();
    let jobs = status["jobs"].as_array().cloned().unwrap_or_default();
    if jobs.is_empty() {
        out.push_str("no job channels\n");
    }
    for j in jobs {
        out.push_str(&format!(
            "job {} channel {}",
            j["job"].as_str().unwrap_or(""),
            j["channel"].as_str().unwrap_or("")
        ));
        if j["settling"] == true {
            out.push_str(&format!(
                " (settling: {} ms left, or until {} workers)",
                n(&j["settle_remaining_ms"]),
                n(&j["min_workers"])
            ));
        }
        out.push('\n');
        for w in j["workers"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "  worker {:<24} load {:>4}/{:<4} total {:>4} shards taken {}\n",
                w["worker"].as_str().unwrap_or(""),
                n(&w["load"]),
                n(&w["capacity"]),
                n(&w["total_load"]),
                n(&w["shards_taken"])
            ));
        }
        for f in j["fires"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "  fire {}: pending {} running {} failed {} done {} dead {}\n",
                f["fire"].as_str().unwrap_or(""),
                n(&f["pending"]),
                n(&f["running"]),
                n(&f["failed"]),
                n(&f["done"]),
                n(&f["dead"])
            ));
            for s in f["shards"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "    item {:>4} load {:>4} {:<8} attempts {:>3} {} {}\n",
                    n(&s["item"]),
                    n(&s["load"]),
                    s["state"].as_str().unwrap_or(""),
                    n(&s["attempts"]),
                    s["worker"].as_str().unwrap_or(""),
                    s["param"].as_str().unwrap_or("")
                ));
            }
        }
    }
    out
}

/// `work`: run until `stop` resolves, then stop taking shards and wait for
/// the running ones.
pub async fn work(mut o: WorkOptions, stop: impl std::future::Future<Output = ()>) -> Result<()> {
    if o.capacity == 0 {
        return Err(ToolError::Config("--capacity must be at least 1".into()));
    }
    if o.nsqd_tcp_address.is_empty() == o.lookupd_http_address.is_empty() {
        return Err(ToolError::Config(
            "use --nsqd-tcp-address or --lookupd-http-address (one kind)".into(),
        ));
    }
    if o.worker_id.is_empty() {
        o.worker_id = format!("{}-{}", nsq_app::os_hostname(), std::process::id());
    }
    let config = Config {
        client_id: o.worker_id.clone(),
        job_capacity: Some(o.capacity),
        // nsqd caps by load; RDY only needs to allow one shard per unit.
        max_in_flight: o.capacity,
        // nsqd's max attempts decide when a shard is dead, not the worker.
        max_attempts: 0,
        default_requeue_delay: *o.requeue_delay,
        max_requeue_delay: (*o.requeue_delay * 60).max(Duration::from_secs(60)),
        msg_timeout: Some(*o.msg_timeout),
        stop_timeout: *o.stop_timeout,
        ..Config::default()
    };
    let consumer = Consumer::new(&o.job, &o.channel, config)?;
    let runner = Arc::new(Runner {
        command: o.command.clone(),
        worker: o.worker_id.clone(),
        touch_every: *o.msg_timeout / 2,
        fatal: Notify::new(),
        fatal_reason: Mutex::new(None),
    });
    let watcher = runner.clone();
    // Up to `capacity` shards run at once (each has load at least 1); a
    // task per unit, bounded so a typo cannot ask for billions.
    let concurrency = usize::try_from(o.capacity.min(10_000)).unwrap_or(1);
    consumer.add_concurrent_handlers(
        handler_fn(move |msg: Message| {
            let runner = runner.clone();
            async move { runner.run(&msg).await }
        }),
        concurrency,
    );
    for addr in &o.nsqd_tcp_address {
        consumer.connect_to_nsqd(addr).await?;
    }
    if !o.lookupd_http_address.is_empty() {
        consumer
            .connect_to_lookupds(&o.lookupd_http_address)
            .await?;
    }
    info!(worker = %o.worker_id, job = %o.job, capacity = o.capacity, "working");
    let fatal = tokio::select! {
        () = stop => None,
        () = watcher.fatal.notified() => watcher.fatal_reason.lock().expect("fatal lock").take(),
    };
    info!("stopping: no new shards; waiting for running ones");
    consumer.stop().await;
    match fatal {
        Some(reason) => Err(ToolError::Config(reason)),
        None => Ok(()),
    }
}

struct Runner {
    command: Vec<String>,
    worker: String,
    touch_every: Duration,
    /// Notified when the command cannot be run at all, which no retry on
    /// this worker can fix: the worker stops with `fatal_reason`.
    fatal: Notify,
    fatal_reason: Mutex<Option<String>>,
}

impl Runner {
    async fn run(&self, msg: &Message) -> std::result::Result<(), HandlerError> {
        let shard = match Shard::decode(&msg.body) {
            Ok(s) => s,
            Err(e) => {
                // Not a shard: retrying cannot help; nsqd's max attempts
                // (if set) move it aside.
                return Err(HandlerError::new(e).without_backoff());
            }
        };
        let (program, args) = self
            .command
            .split_first()
            .ok_or_else(|| HandlerError::new(std::io::Error::other("no command")))?;
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .env("NSQ_JOB", &shard.job)
            .env("NSQ_JOB_FIRE", &shard.fire)
            .env("NSQ_SHARD_ITEM", shard.item.to_string())
            .env("NSQ_SHARD_PARAM", &shard.param)
            .env("NSQ_SHARD_LOAD", shard.load.to_string())
            .env("NSQ_WORKER_ID", &self.worker)
            .stdin(Stdio::piped())
            .spawn()
            .map_err(|e| {
                let reason = format!("cannot start {program:?}: {e}");
                error!("{reason}; stopping this worker");
                self.fatal_reason
                    .lock()
                    .expect("fatal lock")
                    .get_or_insert(reason);
                self.fatal.notify_one();
                // Back at once, for a worker that can run it.
                HandlerError::new(e)
                    .requeue_after(Duration::ZERO)
                    .without_backoff()
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            // A command that does not read its stdin is fine.
            let _ = stdin.write_all(&shard.payload).await;
        }
        let mut touch = tokio::time::interval(self.touch_every.max(Duration::from_millis(100)));
        touch.tick().await;
        let status = loop {
            tokio::select! {
                s = child.wait() => break s,
                _ = touch.tick() => { let _ = msg.touch(); }
            }
        }
        .map_err(|e| HandlerError::new(e).without_backoff())?;
        if status.success() {
            Ok(())
        } else {
            warn!(fire = %shard.fire, item = shard.item, attempts = msg.attempts, %status, "shard command failed; requeueing");
            Err(
                HandlerError::new(std::io::Error::other(format!("command {status}")))
                    .without_backoff(),
            )
        }
    }
}
