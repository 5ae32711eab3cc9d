//! Publish a few messages with `nsq::Producer`.
//!
//! Start the demo cluster (nsqlookupd on 4160/4161, nsqd on 4150/4151) and run:
//!
//! ```text
//! scripts/cluster.sh                       # in one terminal
//! cargo run -p nsq --example producer      # in another
//! cargo run -p nsq --example producer -- 127.0.0.1:4150 test 100
//! ```
//!
//! Arguments: nsqd TCP address, topic, message count (defaults shown above).

use std::time::Duration;

use nsq::{Config, Producer};

#[tokio::main]
async fn main() -> Result<(), nsq::Error> {
    // RUST_LOG overrides; info shows connections, discovery and stop.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:4150".into());
    let topic = args.next().unwrap_or_else(|| "test".into());
    let count: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(10);

    let producer = Producer::new(addr, Config::default());
    for i in 0..count {
        producer.publish(&topic, format!("message {i}")).await?;
    }
    // One MPUB is all or nothing.
    producer
        .multi_publish(&topic, ["batch a", "batch b", "batch c"])
        .await?;
    // Delivered to consumers five seconds from now.
    producer
        .deferred_publish(&topic, Duration::from_secs(5), "deferred")
        .await?;
    producer.stop().await;
    println!("published {} messages to {topic}", count + 4);
    Ok(())
}
