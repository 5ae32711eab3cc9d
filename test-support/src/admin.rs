//! A whole cluster for nsqadmin's tests: one nsqlookupd, one nsqd registered
//! with it (announcing loopback), and nsqadmin reading the lookupd.

use std::time::Duration;

use serde_json::Value;

use crate::daemon::{Daemon, NsqadminProcess, NsqdProcess, NsqlookupdProcess};
use crate::wait_until;

/// How long a change may take to reach nsqadmin's answers: nsqd registers
/// with lookupd at once; the rest is slack for a loaded 2-core machine.
pub const SETTLE: Duration = Duration::from_secs(15);

pub struct AdminCluster {
    // Field order: nsqadmin goes first, then nsqd, then the lookupd.
    pub admin: NsqadminProcess,
    pub nsqd: NsqdProcess,
    pub lookupd: NsqlookupdProcess,
}

impl AdminCluster {
    /// Start the three daemons; `admin_args` go to nsqadmin (the lookupd
    /// address is added).
    pub fn start(admin_args: &[&str]) -> AdminCluster {
        let lookupd = NsqlookupdProcess::start(&[]);
        let nsqd = NsqdProcess::start(&[
            &format!("--lookupd-tcp-address={}", lookupd.tcp_addr()),
            "--broadcast-address=127.0.0.1",
        ]);
        let admin = NsqadminProcess::start_with_lookupds(&[lookupd.http_addr()], admin_args);
        AdminCluster {
            admin,
            nsqd,
            lookupd,
        }
    }

    /// nsqd's node key as nsqadmin names it (`broadcast_address:http_port`).
    pub fn node(&self) -> String {
        format!("127.0.0.1:{}", self.nsqd.http_addr().port())
    }

    /// Panic with `msg` and every daemon's logs.
    pub fn fail(&self, msg: &str) -> ! {
        let part = |name: &str, d: &Daemon| format!("--- {name} logs ---\n{}\n", d.logs());
        panic!(
            "{msg}\n{}{}{}--- end of logs ---",
            part("nsqadmin", &self.admin),
            part("nsqd", &self.nsqd),
            part("nsqlookupd", &self.lookupd)
        )
    }

    /// GET `target` on nsqadmin, which must answer 200 with JSON.
    pub fn admin_json(&self, target: &str) -> Value {
        let r = self.admin.request("GET", target, &[], b"");
        if r.status != 200 {
            self.fail(&format!("GET {target}: {} {}", r.status, r.text()));
        }
        r.json()
    }

    /// nsqd's own `/stats` for `topic` as JSON.
    pub fn nsqd_topic(&self, topic: &str) -> Option<Value> {
        let stats = self.nsqd.http_get("/stats?format=json").json();
        stats["topics"]
            .as_array()?
            .iter()
            .find(|t| t["topic_name"] == topic)
            .cloned()
    }

    /// nsqd's own `/stats` for one channel as JSON.
    pub fn nsqd_channel(&self, topic: &str, channel: &str) -> Option<Value> {
        self.nsqd_topic(topic)?["channels"]
            .as_array()?
            .iter()
            .find(|c| c["channel_name"] == channel)
            .cloned()
    }

    /// Create `topic` (and `channel`) on nsqd directly and wait until
    /// nsqadmin sees nsqd as its producer.
    /// [`Self::nsqd_topic_channel`], and the channel gives a message up after one attempt
    /// (`max_attempts=1`), so a requeue sends it to the dead letters.
    pub async fn nsqd_dead_letter_channel(&self, topic: &str, channel: &str) {
        self.nsqd_topic_channel(topic, channel).await;
        let target =
            format!("/channel/max_attempts?topic={topic}&channel={channel}&max_attempts=1");
        let r = self.nsqd.http_post(&target, b"");
        if r.status != 200 {
            self.fail(&format!("nsqd {target}: {} {}", r.status, r.text()));
        }
    }

    pub async fn nsqd_topic_channel(&self, topic: &str, channel: &str) {
        for target in [
            format!("/topic/create?topic={topic}"),
            format!("/channel/create?topic={topic}&channel={channel}"),
        ] {
            let r = self.nsqd.http_post(&target, b"");
            if r.status != 200 {
                self.fail(&format!("nsqd {target}: {} {}", r.status, r.text()));
            }
        }
        let target = format!("/api/topics/{topic}");
        if let Err(e) = wait_until(SETTLE, "nsqadmin sees the topic on nsqd", || {
            let r = self.admin.request("GET", &target, &[], b"");
            match r.status {
                200 => Ok(()),
                s => Err(format!("{s} {}", r.text())),
            }
        })
        .await
        {
            self.fail(&e);
        }
    }
}
