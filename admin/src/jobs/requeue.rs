//! Requeueing a job's dead letters: a consumer (the `nsq` crate's) on the
//! dead-letter topic's channel that publishes each message back to the job
//! over HTTP, and FINs it only once that succeeded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::Method;
use nsq::{handler_fn, Config, Consumer, HandlerError, Message};
use tokio::sync::Notify;

use nsq_app::http_client::HttpClient;

use super::IDLE;
use crate::cluster::{enc, Node, NodeError};

/// What stopped a requeue early.
#[derive(Debug, thiserror::Error)]
pub(super) enum RequeueError {
    /// Subscribing failed: nsqd unreachable, a bad name, an error answer.
    #[error("{0}")]
    Nsq(#[from] nsq::Error),
    #[error("nsqd closed the connection")]
    Closed,
    #[error(transparent)]
    Publish(#[from] NodeError),
}

/// The node's TCP address: the host it is fetched at, its TCP port.
fn tcp_addr(node: &Node) -> String {
    let host = node
        .fetch_addr
        .rsplit_once(':')
        .map_or(node.fetch_addr.as_str(), |(h, _)| h);
    format!("{host}:{}", node.producer.tcp_port)
}

/// One node's requeue: its dead letters of `dead`/`dead_channel` go back
/// to `job`, at most `limit` of them.
#[derive(Clone, Copy)]
pub(super) struct Requeue<'a> {
    pub node: &'a Node,
    pub dead: &'a str,
    pub dead_channel: &'a str,
    pub job: &'a str,
    pub limit: u64,
}

/// Where the handler tells the requeue how far it got.
struct Progress {
    moved: AtomicU64,
    limit: u64,
    /// The first publish that failed; its message went back to the channel.
    failed: Mutex<Option<NodeError>>,
    /// Notified after every message handled.
    handled: Notify,
}

impl Progress {
    fn done(&self) -> bool {
        self.moved.load(Ordering::Relaxed) >= self.limit
            || self.failed.lock().expect("requeue lock").is_some()
    }
}

/// Move up to `limit` messages of `dead`/`dead_channel` to `job` on `node`:
/// how many moved, and what stopped it early, if something went wrong. It
/// stops at the limit, at the first failed publish, or when no message came
/// for [`IDLE`] (the rest is in flight elsewhere).
pub(super) async fn requeue(c: &HttpClient, what: Requeue<'_>) -> (u64, Option<RequeueError>) {
    let config = Config {
        user_agent: format!("nsqadmin/{} nsq-rs", nsq_app::VERSION),
        // One at a time: each is published before the next is taken.
        max_in_flight: 1,
        // A dead letter that cannot be published stays a dead letter; the
        // consumer must never FIN it unhandled.
        max_attempts: 0,
        dial_timeout: IDLE,
        stop_timeout: IDLE,
        ..Config::default()
    };
    let consumer = match Consumer::new(what.dead, what.dead_channel, config) {
        Ok(c) => c,
        Err(e) => return (0, Some(e.into())),
    };
    let progress = Arc::new(Progress {
        moved: AtomicU64::new(0),
        limit: what.limit,
        failed: Mutex::new(None),
        handled: Notify::new(),
    });
    let pub_url = format!(
        "http://{}/pub?topic={}",
        what.node.fetch_addr,
        enc(what.job)
    );
    let (client, handler_progress) = (c.clone(), progress.clone());
    consumer.add_handler(handler_fn(move |msg: Message| {
        let (client, progress, url) = (client.clone(), handler_progress.clone(), pub_url.clone());
        async move {
            let result = move_one(&client, &progress, &url, &msg).await;
            progress.handled.notify_one();
            result
        }
    }));
    let mut error = consumer
        .connect_to_nsqd(&tcp_addr(what.node))
        .await
        .err()
        .map(RequeueError::from);
    if error.is_none() {
        while !progress.done() {
            if tokio::time::timeout(IDLE, progress.handled.notified())
                .await
                .is_err()
            {
                // Nothing arrived for a while: the rest is in flight
                // elsewhere, unless the connection is gone.
                if consumer.connected_nsqds().is_empty() {
                    error = Some(RequeueError::Closed);
                }
                break;
            }
        }
    }
    // CLS, and wait for CLOSE_WAIT: by then nsqd has carried out every FIN.
    consumer.stop().await;
    let failed = progress.failed.lock().expect("requeue lock").take();
    let error = error.or(failed.map(RequeueError::from));
    (progress.moved.load(Ordering::Relaxed), error)
}

/// Publish one dead letter to the job. A message past the limit, or after a
/// failure, goes straight back to the channel.
async fn move_one(
    client: &HttpClient,
    progress: &Progress,
    url: &str,
    msg: &Message,
) -> Result<(), HandlerError> {
    let back = |why: String| {
        Err(HandlerError::new(std::io::Error::other(why))
            .requeue_after(Duration::ZERO)
            .without_backoff())
    };
    if progress.done() {
        return back("requeue is done".into());
    }
    let published = client
        .request(Method::POST, url, None, msg.body.clone())
        .await
        .map_err(NodeError::from)
        .and_then(|(status, body)| match status {
            200 => Ok(()),
            s => Err(NodeError::status("POST", url, s, &body)),
        });
    match published {
        Ok(()) => {
            progress.moved.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => {
            let why = e.to_string();
            progress
                .failed
                .lock()
                .expect("requeue lock")
                .get_or_insert(e);
            back(why)
        }
    }
}
