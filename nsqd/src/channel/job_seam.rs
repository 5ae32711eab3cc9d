//! The channel's side of job dispatch: the core's `take` diverts here for
//! job channels, and `/jobs` reads the status. `jobs.rs` picks the
//! messages; this file moves them into flight with the core's one `start`.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{jobs, Channel, ChannelState, Deliver, JobStatus};
use crate::client::Client;
use crate::message::Message;

impl Channel {
    /// Seam: `take` for job channels. Job dispatch picks which messages;
    /// the core moves them into flight.
    pub(super) fn take_job(
        &self,
        st: &mut ChannelState,
        client: &Arc<Client>,
        max: usize,
        msg_timeout: Duration,
        now: Instant,
        out: &mut impl Deliver,
    ) -> usize {
        let Some(job) = st.job.as_mut() else { return 0 };
        let picks = match st.flights.client(client.id) {
            Some(_) => job.pick(&st.backlog.mem, client, max, now),
            None => Vec::new(),
        };
        let (msgs, loads) = jobs::remove_picked(&mut st.backlog.mem, picks);
        // Job dispatch reads what started, so it is kept, then handed on.
        let mut started: Vec<Message> = Vec::with_capacity(msgs.len());
        let n = (st.flights).start(
            client,
            msgs.into_iter(),
            now + msg_timeout,
            now,
            &mut started,
        );
        job.started(client, &started, &loads);
        started.iter().for_each(|m| out.deliver(m));
        self.read_ahead(st);
        if n == 0 {
            st.waiters.park(client);
        }
        n
    }

    /// The job status of this channel, or `None` for an ordinary channel.
    pub fn job_status(&self, now: Instant) -> Option<JobStatus> {
        let mut st = self.lock();
        let st = &mut *st;
        let view = jobs::View {
            job: self.topic_name.to_string(),
            channel: self.name.to_string(),
            queued: &st.backlog.mem,
            deferred: st.flights.deferred().collect(),
            running: (st.flights.in_flight())
                .map(|f| (&f.msg, st.flights.client(f.client_id)))
                .collect(),
            on_disk: st.backlog.on_disk(),
        };
        Some(st.job.as_mut()?.status(view, now))
    }
}
