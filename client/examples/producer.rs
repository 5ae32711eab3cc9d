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

mod common;

#[tokio::main]
async fn main() -> Result<(), nsq::Error> {
    common::init_logging();
    let [addr, topic, count] = common::args(["127.0.0.1:4150", "test", "10"]);
    let count: usize = count.parse().unwrap_or(10);

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
