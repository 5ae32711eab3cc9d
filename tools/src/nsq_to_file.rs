//! `nsq_to_file`: consume topics and write each message as a line to rotating files, finishing messages only once they are on disk.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use nsq_app::http_client::HttpClient;
use nsq_app::GoDuration;
use regex::Regex;
use tokio::sync::oneshot;
use tracing::{error, info, warn};

use crate::file_logger::{filename_format, FileLogger, FileSettings};
use crate::source::SourceOptions;
use crate::{Result, ToolError};
use nsq::{handler_fn, Config, Consumer, HandlerError};

/// Upstream's `nsq_to_file` flags.
#[derive(Parser, Debug, Clone)]
#[command(about = "Write the messages of NSQ topics to rotating files.")]
pub struct ToFileOptions {
    /// nsq topic (may be given multiple times)
    #[arg(long)]
    pub topic: Vec<String>,
    /// nsq channel
    #[arg(long, default_value = "nsq_to_file")]
    pub channel: String,
    /// Where messages are read from.
    #[command(flatten)]
    pub source: SourceOptions,
    /// only log topics matching this regular expression; without --topic, topics are found through lookupd
    #[arg(long, default_value = "")]
    pub topic_pattern: String,
    /// how often the topic list is asked of lookupd (with --topic-pattern and no --topic)
    #[arg(long, default_value = "1m")]
    pub topic_refresh: GoDuration,
    /// timeout for HTTP connect (lookupd topic queries)
    #[arg(long, default_value = "2s")]
    pub http_client_connect_timeout: GoDuration,
    /// timeout for an HTTP request (lookupd topic queries)
    #[arg(long, default_value = "5s")]
    pub http_client_request_timeout: GoDuration,
    /// directory to write output files to
    #[arg(long, default_value = "/tmp")]
    pub output_dir: PathBuf,
    /// directory for files being written, moved to --output-dir once closed (default: write in --output-dir)
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// strftime compatible format for <DATETIME> in filename format (UTC)
    #[arg(long, default_value = "%Y-%m-%d_%H")]
    pub datetime_format: String,
    /// output filename format (<TOPIC>, <HOST>, <PID>, <DATETIME>, <REV> are replaced. <REV> is required when output is gzipped or rotated)
    #[arg(long, default_value = "<TOPIC>.<HOST><REV>.<DATETIME>.log")]
    pub filename_format: String,
    /// value to output in log filename in place of hostname. <SHORT_HOST> and <HOSTNAME> are valid replacement tokens
    #[arg(long, default_value = "")]
    pub host_identifier: String,
    /// gzip compression level (1-9, 1=BestSpeed, 9=BestCompression)
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub gzip_level: u32,
    /// gzip output files.
    #[arg(long)]
    pub gzip: bool,
    /// skip writing empty files (always the case here: a file is opened by its first message)
    #[arg(long)]
    pub skip_empty_files: bool,
    /// rotate the file when it grows bigger than `rotate-size` bytes
    #[arg(long, default_value_t = 0)]
    pub rotate_size: u64,
    /// rotate the file every duration
    #[arg(long, default_value = "0s")]
    pub rotate_interval: GoDuration,
    /// sync and rotate-check interval while messages are flowing
    #[arg(long, default_value = "30s")]
    pub sync_interval: GoDuration,
}

impl ToFileOptions {
    /// Upstream's checks; the topic pattern, compiled.
    fn validate(&self) -> Result<Option<Regex>> {
        let bad = |s: &str| Err(ToolError::Config(s.to_owned()));
        if self.topic.is_empty() && self.topic_pattern.is_empty() {
            return bad("--topic or --topic-pattern required");
        }
        self.source.check()?;
        if self.topic.is_empty() && self.source.lookupd_http_address.is_empty() {
            return bad("--lookupd-http-address must be specified when no --topic specified");
        }
        if self.topic_pattern.is_empty() {
            return Ok(None);
        }
        Regex::new(&self.topic_pattern)
            .map(Some)
            .map_err(|e| ToolError::Config(format!("invalid --topic-pattern: {e}")))
    }

    fn settings(&self, topic: &str) -> Result<FileSettings> {
        let hostname = nsq_app::os_hostname();
        let short = hostname.split('.').next().unwrap_or_default().to_owned();
        let host = if self.host_identifier.is_empty() {
            short
        } else {
            self.host_identifier
                .replace("<SHORT_HOST>", &short)
                .replace("<HOSTNAME>", &hostname)
        };
        let rotates =
            self.rotate_size > 0 || !self.rotate_interval.0.is_zero() || self.work_dir.is_some();
        let format = filename_format(&self.filename_format, topic, &host, self.gzip, rotates)?;
        Ok(FileSettings {
            output_dir: self.output_dir.clone(),
            work_dir: self.work_dir.clone(),
            filename_format: format,
            datetime_format: self.datetime_format.clone(),
            gzip: self.gzip.then_some(self.gzip_level),
            rotate_size: self.rotate_size,
            rotate_interval: self.rotate_interval.0,
        })
    }
}

/// A message for the writer thread, and where to say it is on disk.
type Record = (Bytes, oneshot::Sender<std::io::Result<()>>);

/// Owns one topic's files: writes what the handlers send and answers them
/// once it is fsynced: when `batch` messages wait, when no more are queued
/// (the consumer is momentarily starved), or every `sync_interval`. Ends,
/// closing the file, when every sender is gone.
fn writer_loop(
    mut logger: FileLogger,
    records: std_mpsc::Receiver<Record>,
    batch: usize,
    sync_interval: Duration,
) -> std::io::Result<()> {
    let mut waiting: Vec<oneshot::Sender<std::io::Result<()>>> = Vec::new();
    let mut last_sync = std::time::Instant::now();
    let answer = |waiting: &mut Vec<oneshot::Sender<_>>, r: &std::io::Result<()>| {
        for w in waiting.drain(..) {
            let _ = w.send(match r {
                Ok(()) => Ok(()),
                Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
            });
        }
    };
    loop {
        let next = if waiting.is_empty() {
            // Idle: wake now and then to close a file past its rotate interval.
            records.recv_timeout(Duration::from_secs(1))
        } else {
            records
                .try_recv()
                .map_err(|_| std_mpsc::RecvTimeoutError::Timeout)
        };
        match next {
            Ok((body, done)) => {
                if !waiting.is_empty() && logger.needs_rotation() {
                    // Closing syncs: those waiting are durable in the old file.
                    let r = logger.close();
                    answer(&mut waiting, &r);
                    r?;
                }
                if let Err(e) = logger.write(&body) {
                    let _ = done.send(Err(std::io::Error::new(e.kind(), e.to_string())));
                    answer(
                        &mut waiting,
                        &Err(std::io::Error::new(e.kind(), "write failed")),
                    );
                    return Err(e);
                }
                waiting.push(done);
                if waiting.len() >= batch || last_sync.elapsed() >= sync_interval {
                    let r = logger.sync();
                    last_sync = std::time::Instant::now();
                    answer(&mut waiting, &r);
                    r?;
                }
            }
            Err(std_mpsc::RecvTimeoutError::Timeout) => {
                if !waiting.is_empty() {
                    let r = logger.sync();
                    last_sync = std::time::Instant::now();
                    answer(&mut waiting, &r);
                    r?;
                } else if logger.current_path().is_some() && logger.needs_rotation() {
                    // Nothing new to write: close, and open the next file
                    // with the next message, so no empty files appear.
                    logger.close()?;
                }
            }
            Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                let r = logger.close();
                answer(&mut waiting, &r);
                return r;
            }
        }
    }
}

/// The topics being written: a consumer and a writer thread each.
struct Topics<'a> {
    opts: &'a ToFileOptions,
    config: Config,
    failed: tokio::sync::mpsc::UnboundedSender<std::io::Error>,
    names: BTreeSet<String>,
    consumers: Vec<Consumer>,
    writers: Vec<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl Topics<'_> {
    /// Start writing `topic` (once): its writer thread, then its consumer.
    async fn add(&mut self, topic: &str) -> Result<()> {
        if !self.names.insert(topic.to_owned()) {
            return Ok(());
        }
        let opts = self.opts;
        let logger = FileLogger::new(opts.settings(topic)?);
        let (tx, rx) = std_mpsc::channel::<Record>();
        let (batch, every) = (
            opts.source.max_in_flight.max(1) as usize,
            opts.sync_interval.0,
        );
        let failed = self.failed.clone();
        self.writers.push(std::thread::spawn(move || {
            let r = writer_loop(logger, rx, batch, every);
            if let Err(e) = &r {
                let _ = failed.send(std::io::Error::new(e.kind(), e.to_string()));
            }
            r
        }));
        let consumer = Consumer::new(topic, &opts.channel, self.config.clone())?;
        // std's Sender is Sync, but a Mutex keeps this independent of that.
        let tx = Mutex::new(tx);
        // One handler: lines are written in the order messages arrive.
        consumer.add_handler(handler_fn(move |msg| {
            let (done, on_disk) = oneshot::channel();
            let sent = tx
                .lock()
                .expect("record sender lock")
                .send((msg.body.clone(), done));
            async move {
                sent.map_err(|_| HandlerError::new("the file writer has stopped"))?;
                match on_disk.await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(HandlerError::new(e)),
                    Err(_) => Err(HandlerError::new("the file writer has stopped")),
                }
            }
        }));
        opts.source.connect(&consumer).await?;
        info!(topic, "writing topic");
        self.consumers.push(consumer);
        Ok(())
    }

    /// Stop the consumers (what is in flight is written and finished
    /// first), then let the writers close their files.
    async fn stop(self) -> Result<()> {
        for consumer in &self.consumers {
            consumer.stop().await;
        }
        // The handlers hold the senders: dropping the consumers ends the writers.
        drop(self.consumers);
        for w in self.writers {
            let joined = tokio::task::spawn_blocking(move || w.join())
                .await
                .map_err(|e| ToolError::Config(e.to_string()))?;
            match joined {
                Ok(r) => r?,
                Err(_) => return Err(ToolError::Config("a file writer panicked".into())),
            }
        }
        Ok(())
    }
}

/// Every topic the lookupds know (`GET /topics`); a lookupd that fails is
/// logged and skipped.
async fn lookupd_topics(client: &HttpClient, lookupds: &[String]) -> BTreeSet<String> {
    let mut topics = BTreeSet::new();
    for addr in lookupds {
        let base = if addr.starts_with("http://") || addr.starts_with("https://") {
            addr.trim_end_matches('/').to_owned()
        } else {
            format!("http://{addr}")
        };
        let url = format!("{base}/topics");
        match client.get(&url).await {
            Ok((200, body)) => {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let list = v["topics"]
                    .as_array()
                    .or_else(|| v["data"]["topics"].as_array());
                topics.extend(
                    list.into_iter()
                        .flatten()
                        .filter_map(|t| t.as_str().map(str::to_owned)),
                );
            }
            Ok((status, _)) => error!("error querying nsqlookupd ({url}) - got response {status}"),
            Err(e) => error!("error querying nsqlookupd ({url}) - {e}"),
        }
    }
    topics
}

/// Consumes every topic into its files until `shutdown` resolves or a
/// file cannot be written, then stops the consumers (waiting for what is in
/// flight to be written and finished) and closes the files. With
/// `--topic-pattern` and no `--topic`, the topics are those lookupd lists
/// that match, asked again every `--topic-refresh`.
pub async fn run(opts: ToFileOptions, shutdown: impl Future<Output = ()>) -> Result<()> {
    let pattern = opts.validate()?;
    let config = opts.source.consumer_config("nsq_to_file")?;
    let (failed_tx, mut failed_rx) = tokio::sync::mpsc::unbounded_channel::<std::io::Error>();
    let mut topics = Topics {
        opts: &opts,
        config,
        failed: failed_tx,
        names: BTreeSet::new(),
        consumers: Vec::new(),
        writers: Vec::new(),
    };
    let matches = |t: &str| pattern.as_ref().is_none_or(|p| p.is_match(t));
    let client = HttpClient::new(
        *opts.http_client_connect_timeout,
        *opts.http_client_request_timeout,
    );
    let discover = opts.topic.is_empty();
    tokio::pin!(shutdown);
    let outcome: Result<()> = async {
        for topic in &opts.topic {
            if matches(topic) {
                topics.add(topic).await?;
            } else {
                warn!(
                    "skipping topic {topic} (doesn't match pattern {})",
                    opts.topic_pattern
                );
            }
        }
        let mut refresh = tokio::time::interval(opts.topic_refresh.0.max(Duration::from_secs(1)));
        loop {
            tokio::select! {
                _ = refresh.tick(), if discover => {
                    for topic in lookupd_topics(&client, &opts.source.lookupd_http_address).await {
                        if matches(&topic) {
                            topics.add(&topic).await?;
                        }
                    }
                }
                failed = failed_rx.recv() => {
                    return match failed {
                        Some(e) => Err(ToolError::Io(e)),
                        None => Ok(()),
                    };
                }
                () = &mut shutdown => return Ok(()),
            }
        }
    }
    .await;
    let stopped = topics.stop().await;
    outcome.and(stopped)
}
