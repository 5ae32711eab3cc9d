//! A connection's output, shared by its reader and writer tasks. Frames go
//! out in the order they were made; whichever task finds the output free
//! delivers messages and writes, so a reply, or the next messages after a
//! FIN, needs no hop to the writer task while that task is idle. The reader
//! never waits on a slow socket here: what the socket does not take at once
//! is left for the writer task.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::MutexGuard;
use tokio::time::{timeout, Instant};

use super::out_buf::OutBuf;
use super::{Subscription, MIN_WRITE_THRESHOLD, TAKE_BATCH};
use crate::client::{Client, ClientSettings};
use crate::message::Message;
use crate::replica_hooks::ReplicaHooks;

/// Output the reader may leave unwritten before it waits for the socket
/// itself: a client that does not read its replies stops being read.
const MAX_UNWRITTEN: usize = 4 * MIN_WRITE_THRESHOLD;

/// Replies made while the other task held the output, and a settings change
/// from a late IDENTIFY; the next holder takes them first, in order.
#[derive(Default)]
struct Queued {
    frames: BytesMut,
    settings: Option<ClientSettings>,
}

/// What both tasks of a connection share for writing.
pub(super) struct Shared<W> {
    pub client: Arc<Client>,
    subscription: Subscription,
    /// Drops what a peer took over before it is delivered.
    replicas: Option<Arc<dyn ReplicaHooks>>,
    queued: Mutex<Queued>,
    output: tokio::sync::Mutex<Output<W>>,
    /// Bumped when the settings change, so the writer task resets its
    /// heartbeat.
    settings_changes: AtomicU64,
    /// The reader is done: the writer sends what is left and stops.
    closed: AtomicBool,
}

/// The socket's write side and what is buffered for it; held by one task
/// at a time.
pub(super) struct Output<W> {
    write: W,
    out: OutBuf,
    batch: Vec<Message>,
    pub settings: ClientSettings,
}

impl<W: AsyncWrite + Unpin> Shared<W> {
    pub fn new(
        client: Arc<Client>,
        subscription: Subscription,
        replicas: Option<Arc<dyn ReplicaHooks>>,
        settings: ClientSettings,
        write: W,
    ) -> Arc<Self> {
        Arc::new(Shared {
            client,
            subscription,
            replicas,
            queued: Mutex::new(Queued::default()),
            output: tokio::sync::Mutex::new(Output {
                write,
                out: OutBuf::with_capacity(MIN_WRITE_THRESHOLD * 2),
                batch: Vec::with_capacity(TAKE_BATCH),
                settings,
            }),
            settings_changes: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        })
    }

    pub fn settings_changes(&self) -> u64 {
        self.settings_changes.load(Ordering::Acquire)
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The reader is done; wake the writer task to finish up.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.client.wake.notify_one();
    }

    fn queued_len(&self) -> usize {
        let q = self.queued.lock().unwrap_or_else(|e| e.into_inner());
        q.frames.len()
    }

    /// Leave frames and a settings change for the next holder of the
    /// output.
    pub fn queue(&self, frames: &mut BytesMut, settings: Option<ClientSettings>) {
        let mut q = self.queued.lock().unwrap_or_else(|e| e.into_inner());
        q.frames.extend_from_slice(frames);
        if settings.is_some() {
            q.settings = settings;
        }
        frames.clear();
    }

    /// The output, waiting for the other task to release it.
    pub async fn lock(&self) -> MutexGuard<'_, Output<W>> {
        let mut guard = self.output.lock().await;
        guard.take_queued(self);
        guard
    }

    /// From the reader: write `frames` (and apply `settings`) now if the
    /// output is free, delivering whatever room the client has while at it
    /// (`deliver`: a FIN or RDY may have made some); otherwise queue them
    /// for the writer task and wake it.
    pub async fn offer(
        &self,
        frames: &mut BytesMut,
        settings: Option<ClientSettings>,
        deliver: bool,
    ) -> Result<(), &'static str> {
        let mut guard = match self.output.try_lock() {
            Ok(guard) => guard,
            Err(_) if self.queued_len() < MAX_UNWRITTEN => {
                self.queue(frames, settings);
                self.client.wake.notify_one();
                return Ok(());
            }
            // Backpressure: stop reading a client that does not read.
            Err(_) => self.output.lock().await,
        };
        guard.take_queued(self);
        if let Some(s) = settings {
            guard.apply(s, self);
        }
        guard.out.tail().extend_from_slice(frames);
        frames.clear();
        loop {
            let more = deliver && guard.fill(self);
            let write = !more || guard.out.len() >= guard.threshold();
            if write && !guard.write_now()? {
                if guard.out.len() > MAX_UNWRITTEN {
                    // Backpressure: stop reading a client that does not
                    // read.
                    guard.flush().await?;
                    continue;
                }
                self.client.wake.notify_one();
                return Ok(());
            }
            if !more {
                return Ok(());
            }
        }
    }
}

impl<W: AsyncWrite + Unpin> Output<W> {
    fn take_queued(&mut self, shared: &Shared<W>) {
        let mut q = shared.queued.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = q.settings.take() {
            self.apply(s, shared);
        }
        if !q.frames.is_empty() {
            self.out.tail().extend_from_slice(&q.frames);
            q.frames.clear();
        }
    }

    fn apply(&mut self, settings: ClientSettings, shared: &Shared<W>) {
        self.settings = settings;
        shared.settings_changes.fetch_add(1, Ordering::AcqRel);
    }

    /// Append a frame made by the writer task (a heartbeat).
    pub fn buffer(&mut self) -> &mut BytesMut {
        self.out.tail()
    }

    fn threshold(&self) -> usize {
        self.settings.output_buffer_size.max(MIN_WRITE_THRESHOLD)
    }

    /// Take one batch of messages from the channel, as many as the client
    /// has room for, into the buffer. Returns whether there may be more.
    fn fill(&mut self, shared: &Shared<W>) -> bool {
        let Some(channel) = shared.subscription.get() else {
            return false;
        };
        if self.out.len() >= self.threshold() {
            return true;
        }
        let room = shared.client.capacity() as usize;
        if room == 0 {
            return false;
        }
        let (client, max, now) = (&shared.client, room.min(TAKE_BATCH), Instant::now());
        let (timeout, rate) = (self.settings.msg_timeout, self.settings.sample_rate);
        let consumed = match &shared.replicas {
            // The frames are made as the messages go into flight.
            None => channel.take(client, max, timeout, rate, now, &mut self.out),
            // Replication may drop some first: copies, filtered.
            Some(r) => {
                let n = channel.take(client, max, timeout, rate, now, &mut self.batch);
                r.filter_delivery(channel, client.id, &mut self.batch);
                for m in self.batch.drain(..) {
                    self.out.push_message(&m);
                }
                n
            }
        };
        // Everything taken may have been sampled out: there may be more.
        consumed > 0
    }

    /// Deliver and write until the client has no room or the channel no
    /// messages, waiting for the socket as needed (the writer task).
    pub async fn pump(&mut self, shared: &Shared<W>) -> Result<(), &'static str> {
        loop {
            let more = self.fill(shared);
            if !more || self.out.len() >= self.threshold() {
                self.flush().await?;
            }
            if !more {
                return Ok(());
            }
        }
    }

    /// Write what the socket takes without waiting. Returns whether
    /// everything went out.
    /// A socket that would block leaves the reader's no-op waker behind;
    /// the writer task's next write replaces it with its own.
    fn write_now(&mut self) -> Result<bool, &'static str> {
        let mut cx = Context::from_waker(Waker::noop());
        let mut write = Pin::new(&mut self.write);
        while !self.out.is_empty() {
            match self.out.poll_write_some(write.as_mut(), &mut cx) {
                Poll::Ready(Err(_)) => return Err("write error"),
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => return Ok(false),
            }
        }
        // TLS and compression hold bytes back until flushed.
        match write.poll_flush(&mut cx) {
            Poll::Ready(Ok(())) => Ok(true),
            Poll::Ready(Err(_)) => Err("write error"),
            Poll::Pending => Ok(false),
        }
    }

    /// Write everything buffered. A client that cannot take it within one
    /// heartbeat interval is cut off, so a stalled reader cannot make nsqd
    /// hold its output forever.
    pub async fn flush(&mut self) -> Result<(), &'static str> {
        let fut = async {
            self.out.write_all(&mut self.write).await?;
            self.write.flush().await
        };
        let r = match self.settings.heartbeat_interval {
            Some(hb) => timeout(hb, fut).await.map_err(|_| "write timed out")?,
            None => fut.await,
        };
        r.map_err(|_| "write error")?;
        // Do not keep a huge buffer around after one burst.
        self.out.reset(MIN_WRITE_THRESHOLD * 2);
        Ok(())
    }

    /// Send what is left and close the write side.
    pub async fn finish(&mut self) {
        let _ = self.flush().await;
        let _ = self.write.shutdown().await;
    }
}
