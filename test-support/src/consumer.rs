//! The `nsq` crate's `Consumer` as the client tests drive it: one that reports every body it
//! handles, connected to daemons started here, and the receiving end that collects them.

use std::future::Future;

use nsq::{handler_fn, Config, Consumer, HandlerResult, Message};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};

use crate::NsqdProcess;

/// A consumer of `topic`/`channel` whose handler is `handle`, called with each message and a
/// sender for what the test should see, which arrives on the returned receiver.
pub fn reporting_consumer<T, F, Fut>(
    topic: &str,
    channel: &str,
    config: Config,
    handle: F,
) -> (Consumer, UnboundedReceiver<T>)
where
    T: Send + 'static,
    F: Fn(Message, UnboundedSender<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let consumer = Consumer::new(topic, channel, config).expect("valid topic and channel");
    consumer.add_handler(handler_fn(move |msg| handle(msg, tx.clone())));
    (consumer, rx)
}

/// A consumer of `topic`/`channel` whose handler reports every body it sees (as text) on the
/// returned channel and answers FIN.
pub fn recording_consumer(
    topic: &str,
    channel: &str,
    config: Config,
) -> (Consumer, UnboundedReceiver<String>) {
    reporting_consumer(topic, channel, config, |msg, tx| async move {
        let _ = tx.send(String::from_utf8_lossy(&msg.body).into_owned());
        Ok(())
    })
}

/// Connect `consumer` straight to each of `nsqds` (no lookupd), failing on any error.
pub async fn connect_to<'a>(consumer: &Consumer, nsqds: impl IntoIterator<Item = &'a NsqdProcess>) {
    for nsqd in nsqds {
        let addr = nsqd.tcp_addr().to_string();
        if let Err(e) = consumer.connect_to_nsqd(&addr).await {
            nsqd.fail(&format!("connecting a consumer to {addr}: {e}"));
        }
    }
}

/// The next `n` values from `rx`, in order of arrival; panics if the senders are gone first
/// (the test's own bound, `within`, limits the wait).
pub async fn receive<T>(rx: &mut UnboundedReceiver<T>, n: usize) -> Vec<T> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        got.push(
            rx.recv()
                .await
                .expect("the handler's sender outlives the test"),
        );
    }
    got
}

/// The default configuration but for `max_in_flight`, the setting consumer tests vary most.
pub fn max_in_flight(n: u64) -> Config {
    Config {
        max_in_flight: n,
        ..Config::default()
    }
}
