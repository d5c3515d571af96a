//! The queue abstraction: how job keys reach workers. Only this module and
//! `redis_queue` know about concrete queues, so a breaking apalis upgrade
//! touches this crate alone.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::{Executor, Pool, QueueError};

/// Flips to `true` when the process should stop.
pub type Shutdown = watch::Receiver<bool>;

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What travels through the queue: just enough to find the job in SQL.
/// Nothing deduplicates messages: a duplicate finds its job leased or done
/// in SQL and is a no-op, and a re-dispatch must never be swallowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobMessage {
    pub key: String,
    pub kind: String,
    /// Attempts made before this dispatch (for logs).
    #[serde(default)]
    pub attempt: i64,
}

/// A queue that dispatches job keys to worker pools.
pub trait JobQueue: Send + Sync + 'static {
    /// Hands a job to its pool's queue.
    fn dispatch(&self, pool: Pool, message: JobMessage) -> BoxFuture<'_, Result<(), QueueError>>;

    /// Hands many jobs to a pool's queue (in one round trip where the queue
    /// can). On an error some of them may have been handed over: the relay
    /// marks none queued, so they are dispatched again (duplicates are
    /// harmless).
    fn dispatch_many(
        &self,
        pool: Pool,
        messages: Vec<JobMessage>,
    ) -> BoxFuture<'_, Result<(), QueueError>> {
        Box::pin(async move {
            for message in messages {
                self.dispatch(pool, message).await?;
            }
            Ok(())
        })
    }

    /// Serves one pool until `shutdown`: runs received jobs with `executor`,
    /// at most `concurrency` at a time. On shutdown it stops taking jobs and
    /// gives in-flight ones up to `drain` to finish; those still running are
    /// released back to `pending` so another worker takes them at once.
    fn serve(
        &self,
        pool: Pool,
        concurrency: usize,
        executor: Arc<Executor>,
        shutdown: Shutdown,
        drain: Duration,
    ) -> BoxFuture<'static, Result<(), QueueError>>;

    /// Whether queued messages outlive this process. The embedded queue's do
    /// not: at start-up everything marked queued is handed back to the relay.
    fn is_durable(&self) -> bool;

    /// How many messages of `pool` wait in the queue, not yet taken by a
    /// worker. The reconciler compares it with the jobs SQL has as queued:
    /// fewer messages than jobs means some were lost (a Redis restart, a
    /// message consumed by a claim that failed), and only then does it hand
    /// jobs back, so a pool without workers never piles up copies.
    fn backlog(&self, pool: Pool) -> BoxFuture<'_, Result<u64, QueueError>>;

    /// Whether the queue answers (`/readyz`).
    fn health(&self) -> BoxFuture<'_, Result<(), QueueError>>;

    /// Removes what the queue still keeps of messages already handled, and
    /// returns how many it removed. SQL holds each job's record; a queue
    /// that keeps finished messages (apalis-redis keeps every task's data
    /// and status until told otherwise) would otherwise grow without end.
    /// The maintenance loop calls it every reconcile interval.
    fn forget_finished(&self) -> BoxFuture<'_, Result<u64, QueueError>> {
        Box::pin(async { Ok(0) })
    }
}

/// Runs received messages with bounded concurrency until shutdown, then
/// drains.
async fn run_pool(
    pool: Pool,
    concurrency: usize,
    executor: Arc<Executor>,
    mut shutdown: Shutdown,
    drain: Duration,
    mut receiver: mpsc::UnboundedReceiver<JobMessage>,
    waiting: Option<Arc<AtomicU64>>,
) {
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut running: JoinSet<()> = JoinSet::new();
    let in_flight: Arc<Mutex<HashMap<tokio::task::Id, String>>> = Arc::default();
    loop {
        if *shutdown.borrow() {
            break;
        }
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("semaphore open"),
            _ = shutdown.changed() => break,
        };
        let message = tokio::select! {
            message = receiver.recv() => message,
            _ = shutdown.changed() => break,
        };
        let Some(message) = message else { break };
        if let Some(waiting) = &waiting {
            waiting.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        let executor = executor.clone();
        let in_flight_done = in_flight.clone();
        let key = message.key.clone();
        let handle = running.spawn(async move {
            executor
                .execute_releasing(&message.key, &message.kind)
                .await;
            drop(permit);
            if let Some(id) = tokio::task::try_id() {
                in_flight_done.lock().expect("lock").remove(&id);
            }
        });
        in_flight.lock().expect("lock").insert(handle.id(), key);
        while running.try_join_next().is_some() {}
    }
    info!(%pool, in_flight = running.len(), "pool stopping; draining in-flight jobs");
    let drained = tokio::time::timeout(drain, async {
        while running.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        let keys: Vec<String> = in_flight.lock().expect("lock").values().cloned().collect();
        running.abort_all();
        for key in keys {
            match executor.jobs().release_job(&key, executor.worker()).await {
                Ok(true) => warn!(job = %key, "released unfinished job at shutdown"),
                Ok(false) => {}
                Err(e) => {
                    warn!(job = %key, error = %e, "could not release job; its lease will expire")
                }
            }
        }
    }
    executor.settle().await;
}

/// The embedded queue: in-process channels. Used when no Redis is
/// configured (one process runs relay and workers). Losing it loses nothing:
/// the outbox is the record, and queued jobs are handed back at start-up.
#[derive(Debug)]
pub struct EmbeddedQueue {
    senders: HashMap<Pool, mpsc::UnboundedSender<JobMessage>>,
    receivers: Mutex<HashMap<Pool, mpsc::UnboundedReceiver<JobMessage>>>,
    /// Messages sent and not yet received, per pool.
    waiting: HashMap<Pool, Arc<AtomicU64>>,
}

impl Default for EmbeddedQueue {
    fn default() -> Self {
        let mut senders = HashMap::new();
        let mut receivers = HashMap::new();
        let mut waiting = HashMap::new();
        for pool in Pool::ALL {
            let (tx, rx) = mpsc::unbounded_channel();
            senders.insert(pool, tx);
            receivers.insert(pool, rx);
            waiting.insert(pool, Arc::default());
        }
        Self {
            senders,
            receivers: Mutex::new(receivers),
            waiting,
        }
    }
}

impl JobQueue for EmbeddedQueue {
    fn dispatch(&self, pool: Pool, message: JobMessage) -> BoxFuture<'_, Result<(), QueueError>> {
        let sent = self.senders[&pool]
            .send(message)
            .map(|()| {
                self.waiting[&pool].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            })
            .map_err(|_| QueueError::Other(format!("the embedded {pool} queue is closed")));
        Box::pin(async move { sent })
    }

    fn serve(
        &self,
        pool: Pool,
        concurrency: usize,
        executor: Arc<Executor>,
        shutdown: Shutdown,
        drain: Duration,
    ) -> BoxFuture<'static, Result<(), QueueError>> {
        let receiver = self.receivers.lock().expect("lock").remove(&pool);
        let waiting = self.waiting[&pool].clone();
        Box::pin(async move {
            let receiver = receiver.ok_or_else(|| {
                QueueError::Other(format!("the embedded {pool} pool is already being served"))
            })?;
            run_pool(
                pool,
                concurrency,
                executor,
                shutdown,
                drain,
                receiver,
                Some(waiting),
            )
            .await;
            Ok(())
        })
    }

    fn is_durable(&self) -> bool {
        false
    }

    fn backlog(&self, pool: Pool) -> BoxFuture<'_, Result<u64, QueueError>> {
        let waiting = self.waiting[&pool].load(std::sync::atomic::Ordering::Relaxed);
        Box::pin(async move { Ok(waiting) })
    }

    fn health(&self) -> BoxFuture<'_, Result<(), QueueError>> {
        let open = self.senders.values().all(|s| !s.is_closed());
        Box::pin(async move {
            if open {
                Ok(())
            } else {
                Err(QueueError::Other("the embedded queue is closed".into()))
            }
        })
    }
}
