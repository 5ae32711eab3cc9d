//! Where the consuming tools read from: the flags they share (nsqd or
//! lookupd addresses, consumer options, max in flight), upstream's check of
//! them, the consumer configuration they make, and connecting consumers.

use nsq::{Config, Consumer};

use crate::{Result, ToolError};

/// The source flags of `nsq_tail`, `nsq_to_file`, `nsq_to_http` and
/// `nsq_to_nsq` (flattened into each tool's flags).
#[derive(clap::Args, Debug, Clone)]
pub struct SourceOptions {
    /// max number of messages to allow in flight
    #[arg(long, default_value_t = 200)]
    pub max_in_flight: u64,
    /// nsqd TCP address (may be given multiple times)
    #[arg(long)]
    pub nsqd_tcp_address: Vec<String>,
    /// lookupd HTTP address (may be given multiple times)
    #[arg(long)]
    pub lookupd_http_address: Vec<String>,
    /// option to pass through to the consumer: `option,value` with go-nsq's option names (may be given multiple times)
    #[arg(long)]
    pub consumer_opt: Vec<String>,
}

impl SourceOptions {
    /// Exactly one kind of address, in upstream's words.
    pub fn check(&self) -> Result<()> {
        let fail = |m: &str| Err(ToolError::Config(m.into()));
        match (
            self.nsqd_tcp_address.is_empty(),
            self.lookupd_http_address.is_empty(),
        ) {
            (true, true) => fail("--nsqd-tcp-address or --lookupd-http-address required"),
            (false, false) => fail("use --nsqd-tcp-address or --lookupd-http-address not both"),
            _ => Ok(()),
        }
    }

    /// The consumer configuration of `tool`: its user agent, the
    /// `--consumer-opt` values, then `--max-in-flight`, which wins over a
    /// consumer option as upstream's does.
    pub fn consumer_config(&self, tool: &str) -> Result<Config> {
        let mut config = user_agent_config(tool);
        crate::apply_opts(&mut config, &self.consumer_opt)?;
        config.max_in_flight = self.max_in_flight;
        Ok(config)
    }

    /// Connect `consumer` to the nsqds, or to what the lookupds know.
    pub async fn connect(&self, consumer: &Consumer) -> std::result::Result<(), nsq::Error> {
        for addr in &self.nsqd_tcp_address {
            consumer.connect_to_nsqd(addr).await?;
        }
        if !self.lookupd_http_address.is_empty() {
            consumer
                .connect_to_lookupds(&self.lookupd_http_address)
                .await?;
        }
        Ok(())
    }

    /// [`connect`](Self::connect) each of `consumers`.
    pub async fn connect_all(&self, consumers: &[Consumer]) -> std::result::Result<(), nsq::Error> {
        for consumer in consumers {
            self.connect(consumer).await?;
        }
        Ok(())
    }
}

/// A default configuration that names `tool` (and this implementation) as
/// its user agent.
pub fn user_agent_config(tool: &str) -> Config {
    Config {
        user_agent: format!("{tool}/{} nsq-rs", nsq_app::VERSION),
        ..Config::default()
    }
}
