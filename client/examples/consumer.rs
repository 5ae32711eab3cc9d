//! Consume a topic with `nsq::Consumer`, finding nsqds through lookupd.
//!
//! Start the demo cluster (nsqlookupd on 4160/4161, nsqd on 4150/4151),
//! run this, then publish (e.g. with the producer example):
//!
//! ```text
//! scripts/cluster.sh                       # in one terminal
//! cargo run -p nsq --example consumer      # in another
//! cargo run -p nsq --example producer      # in a third
//! cargo run -p nsq --example consumer -- test mychannel 127.0.0.1:4161
//! ```
//!
//! Arguments: topic, channel, lookupd HTTP address (defaults shown above:
//! `test`, `example`, `127.0.0.1:4161`). Ctrl-C stops gracefully: messages
//! being handled are finished first.

use nsq::{handler_fn, Config, Consumer};

mod common;

#[tokio::main]
async fn main() -> Result<(), nsq::Error> {
    common::init_logging();
    let [topic, channel, lookupd] = common::args(["test", "example", "127.0.0.1:4161"]);

    let config = Config {
        max_in_flight: 100,
        ..Config::default()
    };
    let consumer = Consumer::new(&topic, &channel, config)?;
    consumer.add_handler(
        handler_fn(|msg| async move {
            println!(
                "{} (attempt {}) from {}: {}",
                msg.id,
                msg.attempts,
                msg.nsqd_address(),
                String::from_utf8_lossy(&msg.body)
            );
            Ok(())
        })
        .on_give_up(|msg| eprintln!("giving up on {} after {} attempts", msg.id, msg.attempts)),
    );
    consumer.connect_to_lookupd(&lookupd).await?;
    println!("consuming {topic}/{channel}; Ctrl-C to stop");
    let _ = tokio::signal::ctrl_c().await;
    consumer.stop().await;
    Ok(())
}
