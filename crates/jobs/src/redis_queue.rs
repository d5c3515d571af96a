//! The Redis queue, through apalis-redis 1.0.0. Known sharp edges of that
//! version, and what this module does about each (pinned by tests in
//! `tests/apalis_edges.rs`):
//! - `connect()` uses a 500 ms response timeout after which a worker's
//!   polling fails and it stops: we build the connection ourselves with
//!   [`RedisQueueOptions::response_timeout`], and serving restarts a worker
//!   that ends in error.
//! - `missed_heartbeats` defaults to 10 (not the documented 2), and the
//!   heartbeat to 30 s: we set both explicitly.
//! - A worker name reused within the heartbeat window is a fatal error: names
//!   are unique per process (pool, host, pid, random).
//! - An idempotency key (`idempotency_ttl` must be set for it to work at
//!   all) is kept for its whole TTL and never deleted, even once its message
//!   was consumed: a re-dispatch within the TTL is silently dropped. A job
//!   whose message was consumed by a claim that failed (the database was
//!   restarting) then sat `queued` until the key expired. We use no keys:
//!   duplicates are harmless (claims happen in SQL), and the reconciler
//!   re-dispatches only when the queue holds fewer messages than SQL has
//!   queued ([`JobQueue::backlog`]), so copies never pile up.
//! - A backlog of about 8,000 due tasks makes `fetch_next` fail ("too many
//!   results to unpack") and the worker die, again at every restart: the
//!   relay keeps each pool's backlog under `max_queued_per_pool`.
//! - `vacuum()` can delete a task still waiting to retry: never called;
//!   storage retries ignore `max_attempts`: not used (attempts live in SQL).
//! - After a fetch finds the queue empty, a worker parks until its next
//!   heartbeat: jobs wait up to the heartbeat interval (5 s here) at low
//!   load. Workers therefore poll with a short interval that backs off while
//!   idle ([`RedisQueueOptions::poll_interval`]).
//! - Redis Cluster is not supported; standalone Redis (and Sentinel) is.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apalis::prelude::*;
use apalis_core::backend::Vacuum as _;
use apalis_redis::RedisStorage;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tracing::{error, info, warn};

use crate::queue::{BoxFuture, JobMessage};
use crate::{Executor, JobQueue, Pool, QueueError, Shutdown};

/// Settings of the Redis queue. Every field documents its default.
#[derive(Debug, Clone)]
pub struct RedisQueueOptions {
    /// `redis://HOST:PORT/DB`. No default.
    pub url: String,
    /// Prefix of every queue name (`{namespace}:{pool}`), so several
    /// deployments or tests share one Redis. Default: `tre`.
    pub namespace: String,
    /// How often workers report they are alive. Default: 5 s.
    pub heartbeat: Duration,
    /// Missed heartbeats before a worker's messages are re-enqueued by
    /// apalis (the SQL lease recovers the job independently). Default: 3.
    pub missed_heartbeats: usize,
    /// Redis response timeout (apalis's own connect uses 500 ms). Default: 10 s.
    pub response_timeout: Duration,
    /// Messages a worker fetches per poll. Default (`None`): the pool's
    /// concurrency. A worker polls only when one of its tasks is free, and
    /// holds what it fetched until its tasks take it, so a fetch of its
    /// concurrency keeps a worker of short jobs busy between polls (a fetch
    /// of 10 for 16 tasks: 3,100-3,800 no-op jobs/s through the durable path
    /// in `tre-bench queue`; of 16: 4,100-5,100) while a worker of long jobs
    /// holds back at most that many from the rest of its fleet.
    pub batch_size: Option<usize>,
    /// How often an idle worker looks for work at first; it backs off while
    /// nothing comes, up to `max_poll_interval`. Default: 1 ms.
    pub poll_interval: Duration,
    /// Default: 10 ms (the longest an idle worker takes to notice a job; an
    /// idle worker costs Redis about 100 small scripts a second per pool).
    pub max_poll_interval: Duration,
}

impl RedisQueueOptions {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            namespace: "tre".into(),
            heartbeat: Duration::from_secs(5),
            missed_heartbeats: 3,
            response_timeout: Duration::from_secs(10),
            batch_size: None,
            poll_interval: Duration::from_millis(1),
            max_poll_interval: Duration::from_millis(10),
        }
    }
}

/// Job keys dispatched through Redis lists managed by apalis.
#[derive(Clone)]
pub struct RedisQueue {
    conn: ConnectionManager,
    options: RedisQueueOptions,
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue")
            .field("options", &self.options)
            .finish()
    }
}

/// A name no other worker uses: host, pid and randomness (apalis treats a
/// reused name as fatal; it is also the owner of SQL leases).
pub fn worker_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{host}-{}-{nanos:08x}", std::process::id())
}

struct PoolState {
    executor: Arc<Executor>,
    in_flight: Mutex<HashSet<String>>,
}

async fn handle(message: JobMessage, state: Data<Arc<PoolState>>) -> Result<(), BoxDynError> {
    state
        .in_flight
        .lock()
        .expect("lock")
        .insert(message.key.clone());
    // Every outcome is recorded in SQL; apalis only sees success, so its own
    // retry machinery never runs.
    state
        .executor
        .execute_releasing(&message.key, &message.kind)
        .await;
    state.in_flight.lock().expect("lock").remove(&message.key);
    Ok(())
}

impl RedisQueue {
    /// Connects with our own timeouts (see the module docs).
    pub async fn connect(options: RedisQueueOptions) -> Result<Self, QueueError> {
        let client = redis::Client::open(options.url.as_str())?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(options.response_timeout))
            .set_connection_timeout(Some(options.response_timeout))
            .set_number_of_retries(6);
        let conn = ConnectionManager::new_with_config(client, config).await?;
        Ok(Self { conn, options })
    }

    pub fn options(&self) -> &RedisQueueOptions {
        &self.options
    }

    /// The apalis configuration of a pool's queue.
    pub fn apalis_config(&self, pool: Pool) -> apalis_redis::Config {
        apalis_redis::Config::default()
            .queue(format!("{}:{pool}", self.options.namespace))
            .heartbeat_interval(self.options.heartbeat)
            .missed_heartbeats(self.options.missed_heartbeats)
    }

    fn storage(&self, pool: Pool) -> RedisStorage<JobMessage> {
        RedisStorage::new(self.conn.clone()).with_config(self.apalis_config(pool))
    }

    /// The storage a worker of `concurrency` tasks fetches from.
    fn worker_storage(&self, pool: Pool, concurrency: usize) -> RedisStorage<JobMessage> {
        let fetch = self.options.batch_size.unwrap_or(concurrency).max(1);
        RedisStorage::new(self.conn.clone()).with_config(self.apalis_config(pool).batch_size(fetch))
    }

    /// The connection (for health checks and tests).
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Deletes every key of this queue's namespace, messages waiting or not,
    /// and returns how many: for a benchmark or test that used a namespace
    /// of its own. Never on a namespace a fleet serves.
    pub async fn purge(&self) -> Result<u64, QueueError> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}:*", self.options.namespace);
        let mut cursor = 0u64;
        let mut removed = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            if !keys.is_empty() {
                let n: u64 = redis::cmd("UNLINK")
                    .arg(&keys)
                    .query_async(&mut conn)
                    .await?;
                removed += n;
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }
}

impl JobQueue for RedisQueue {
    fn dispatch(&self, pool: Pool, message: JobMessage) -> BoxFuture<'_, Result<(), QueueError>> {
        let mut storage = self.storage(pool);
        Box::pin(async move {
            storage
                .push_task(TaskBuilder::new(message).build())
                .await
                .map_err(|e| QueueError::Other(format!("push to {pool}: {e}")))
        })
    }

    fn dispatch_many(
        &self,
        pool: Pool,
        messages: Vec<JobMessage>,
    ) -> BoxFuture<'_, Result<(), QueueError>> {
        let mut storage = self.storage(pool);
        Box::pin(async move {
            storage
                .push_bulk(messages)
                .await
                .map_err(|e| QueueError::Other(format!("push to {pool}: {e}")))
        })
    }

    fn serve(
        &self,
        pool: Pool,
        concurrency: usize,
        executor: Arc<Executor>,
        mut shutdown: Shutdown,
        drain: Duration,
    ) -> BoxFuture<'static, Result<(), QueueError>> {
        let queue = self.clone();
        Box::pin(async move {
            let state = Arc::new(PoolState {
                executor: executor.clone(),
                in_flight: Mutex::new(HashSet::new()),
            });
            // A worker that ends in error (e.g. Redis went away) is restarted
            // under a new name until shutdown.
            let mut drain_spent = false;
            while !*shutdown.borrow() {
                let name = format!("{pool}-{}", worker_name());
                info!(%pool, worker = %name, concurrency, "serving pool from Redis");
                let backend = queue.worker_storage(pool, concurrency).poll_with_backoff(
                    queue.options.poll_interval,
                    BackoffConfig::new(queue.options.max_poll_interval),
                );
                let worker = WorkerBuilder::new(name.as_str())
                    .backend(backend)
                    .data(state.clone())
                    .concurrency(concurrency.max(1))
                    .build(handle);
                let mut stop = shutdown.clone();
                let signal = async move {
                    while !*stop.borrow() {
                        if stop.changed().await.is_err() {
                            break;
                        }
                    }
                    Ok::<(), std::io::Error>(())
                };
                // apalis's graceful stop waits for every running job,
                // however long: past the drain, stop waiting for it
                let mut drained = shutdown.clone();
                let drain_over = async move {
                    let _ = drained.wait_for(|stop| *stop).await;
                    tokio::time::sleep(drain).await;
                };
                let outcome = tokio::select! {
                    outcome = worker.run_until(signal) => Some(outcome),
                    () = drain_over => None,
                };
                match outcome {
                    Some(Ok(())) => break,
                    None => {
                        drain_spent = true;
                        break;
                    }
                    Some(Err(e)) => {
                        error!(%pool, worker = %name, error = %e, "worker stopped with an error; restarting");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                            _ = shutdown.changed() => {}
                        }
                    }
                }
            }
            // apalis has stopped taking messages; let in-flight jobs finish
            // (what is left of the drain), then release what is left so
            // another worker takes it at once.
            let deadline =
                tokio::time::Instant::now() + if drain_spent { Duration::ZERO } else { drain };
            while !state.in_flight.lock().expect("lock").is_empty()
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let left: Vec<String> = state
                .in_flight
                .lock()
                .expect("lock")
                .iter()
                .cloned()
                .collect();
            for key in left {
                if let Err(e) = executor.jobs().release_job(&key, executor.worker()).await {
                    warn!(job = %key, error = %e, "could not release job; its lease will expire");
                }
            }
            executor.settle().await;
            Ok(())
        })
    }

    fn is_durable(&self) -> bool {
        true
    }

    /// Task ids waiting in the pool's active list, and those scheduled
    /// there (apalis retries, which we never ask for).
    fn backlog(&self, pool: Pool) -> BoxFuture<'_, Result<u64, QueueError>> {
        let config = self.apalis_config(pool);
        let mut conn = self.conn.clone();
        Box::pin(async move {
            let (active, scheduled): (u64, u64) = redis::pipe()
                .cmd("LLEN")
                .arg(config.active_jobs_list())
                .cmd("ZCARD")
                .arg(config.scheduled_jobs_set())
                .query_async(&mut conn)
                .await?;
            Ok(active + scheduled)
        })
    }

    /// apalis's vacuum (each finished task's data, status and result), then
    /// the set of finished task ids, which nothing of ours reads.
    fn forget_finished(&self) -> BoxFuture<'_, Result<u64, QueueError>> {
        Box::pin(async move {
            let mut removed = 0;
            for pool in Pool::ALL {
                let mut storage = self.storage(pool);
                let n = storage
                    .vacuum()
                    .await
                    .map_err(|e| QueueError::Other(format!("vacuum {pool}: {e}")))?;
                removed += n as u64;
                let mut conn = self.conn.clone();
                let _: () = redis::cmd("UNLINK")
                    .arg(self.apalis_config(pool).done_jobs_set())
                    .query_async(&mut conn)
                    .await?;
            }
            Ok(removed)
        })
    }

    fn health(&self) -> BoxFuture<'_, Result<(), QueueError>> {
        let mut conn = self.conn.clone();
        Box::pin(async move {
            let _: String = redis::cmd("PING").query_async(&mut conn).await?;
            Ok(())
        })
    }
}
