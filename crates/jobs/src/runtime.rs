//! Background maintenance, each a named component with its own log target:
//! the relay (outbox -> queue) and the reconciler (recovers what the queue
//! or a worker lost).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use tre_time::Timestamp;
use tre_time::now;

use crate::{FinishedJobs, JobStore, JobStoreError, Retained};

use crate::queue::JobMessage;
use crate::{JobPolicy, JobQueue, Pool, Shutdown};

/// Timing of the runtime. Every field documents its default.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// How often the relay looks for due jobs. Default: 200 ms.
    pub relay_interval: Duration,
    /// Most jobs the relay hands over per pass. Default: 500.
    pub relay_batch: u32,
    /// Most messages per pool waiting in the queue (its own count). Keeps the
    /// queue's backlog bounded when a pool's workers are down or slow
    /// (apalis-redis 1.0.0 workers fail on a backlog of about 8,000 due
    /// tasks). A pool with more than half of it waiting gets nothing until
    /// its workers catch up, then a batch. Default: 2,000.
    pub max_queued_per_pool: i64,
    /// How often the reconciler runs: with `lease`, how soon a dead
    /// worker's job is taken over. Default: 2 s.
    pub reconcile_interval: Duration,
    /// A job queued this long without being claimed, in a pool whose queue
    /// holds fewer messages than SQL has queued, is taken to be lost by the
    /// queue and handed over again (a duplicate is harmless). Default: 60 s.
    pub requeue_after: Duration,
    /// How long a running job's lease lasts; its worker renews it every
    /// third of that while the handler runs, whatever the job's timeout.
    /// A worker that dies (SIGKILL, power, network) stops renewing, and its
    /// job is taken over within `lease` plus `reconcile_interval`.
    /// Default: 6 s (taken over within about 8 s).
    pub lease: Duration,
    /// How long a stopping worker waits for in-flight jobs. Default: 30 s.
    pub drain: Duration,
    /// How often the cleaner removes what its retentions let go. Default: 60 s.
    pub clean_interval: Duration,
    /// Finished jobs (done, discarded) are removed this long after they
    /// finished; dead ones stay for an operator. Default: 7 days.
    pub job_retention: Duration,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            relay_interval: Duration::from_millis(200),
            relay_batch: 500,
            max_queued_per_pool: 2_000,
            reconcile_interval: Duration::from_secs(2),
            requeue_after: Duration::from_secs(60),
            lease: Duration::from_secs(6),
            drain: Duration::from_secs(30),
            clean_interval: Duration::from_secs(60),
            job_retention: Duration::from_secs(7 * 86_400),
        }
    }
}

/// Hands due outbox jobs to the queue.
#[derive(Clone)]
pub struct Relay {
    store: Arc<dyn JobStore>,
    queue: Arc<dyn JobQueue>,
    policies: Arc<Vec<JobPolicy>>,
    batch: u32,
    max_queued_per_pool: i64,
    pauses: crate::Pauses,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").field("batch", &self.batch).finish()
    }
}

impl Relay {
    pub fn new(
        store: Arc<dyn JobStore>,
        queue: Arc<dyn JobQueue>,
        policies: &[JobPolicy],
        batch: u32,
    ) -> Self {
        Self {
            pauses: crate::Pauses::new(store.clone()),
            store,
            queue,
            policies: Arc::new(policies.to_vec()),
            batch,
            max_queued_per_pool: RuntimeOptions::default().max_queued_per_pool,
        }
    }

    /// Caps the jobs per pool handed over and not yet claimed.
    pub fn with_max_queued_per_pool(mut self, max: i64) -> Self {
        self.max_queued_per_pool = max;
        self
    }

    /// One pass: returns how many jobs were handed over.
    pub async fn run_once(&self) -> Result<usize, JobStoreError> {
        // what each pool may still take: the queue counts its own backlog
        // (cheap, and what the bound protects), SQL is not scanned for it
        let mut room: HashMap<Pool, i64> = HashMap::new();
        for pool in Pool::ALL {
            if !self.policies.iter().any(|p| p.pool == pool) {
                continue; // no kind of ours goes there
            }
            let backlog = match self.queue.backlog(pool).await {
                Ok(n) => i64::try_from(n).unwrap_or(i64::MAX),
                Err(e) => {
                    warn!(target: "tre::relay", %pool, error = %e, "cannot read the queue's backlog");
                    continue;
                }
            };
            // a pool with more than half its bound still waiting is topped
            // up later, in one batch, not a few jobs every pass
            if backlog > self.max_queued_per_pool / 2 {
                continue;
            }
            if self.pauses.is_paused(pool).await {
                continue; // an operator paused the pool: hold its jobs
            }
            room.insert(pool, self.max_queued_per_pool - backlog);
        }
        // only the kinds of pools with room are read, each up to its
        // pool's room (and the batch)
        let kinds: Vec<(&str, u32)> = self
            .policies
            .iter()
            .filter_map(|p| {
                let most = (*room.get(&p.pool)?).min(i64::from(self.batch));
                Some((p.kind, u32::try_from(most).ok()?))
            })
            .collect();
        let due = self.store.due_jobs(now(), &kinds).await?;
        // the oldest first, within each pool's room and the batch
        let mut by_pool: HashMap<Pool, Vec<JobMessage>> = HashMap::new();
        for job in due.into_iter().take(self.batch as usize) {
            let Some(policy) = self.policies.iter().find(|p| p.kind == job.kind) else {
                continue; // only kinds with a policy were asked for
            };
            let left = room.entry(policy.pool).or_default();
            if *left <= 0 {
                continue;
            }
            *left -= 1;
            by_pool.entry(policy.pool).or_default().push(JobMessage {
                key: job.key,
                kind: job.kind,
                attempt: job.attempts,
            });
        }
        let mut sent = 0;
        for (pool, messages) in by_pool {
            let keys: Vec<String> = messages.iter().map(|m| m.key.clone()).collect();
            // Dispatch first, then mark: a crash in between only duplicates
            // messages, which the SQL claim makes harmless.
            match self.queue.dispatch_many(pool, messages).await {
                Ok(()) => {
                    self.store.mark_queued_many(&keys, now()).await?;
                    sent += keys.len();
                }
                Err(e) => {
                    warn!(target: "tre::relay", %pool, error = %e, "queue refused jobs; will try again");
                }
            }
        }
        Ok(sent)
    }
}

/// Hands back orphaned jobs (their worker's lease ran out) and jobs whose
/// queue message was lost.
#[derive(Clone)]
pub struct Reconciler {
    store: Arc<dyn JobStore>,
    queue: Arc<dyn JobQueue>,
    policies: Arc<Vec<JobPolicy>>,
    requeue_after: Duration,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler")
            .field("requeue_after", &self.requeue_after)
            .finish()
    }
}

impl Reconciler {
    pub fn new(
        store: Arc<dyn JobStore>,
        queue: Arc<dyn JobQueue>,
        policies: &[JobPolicy],
        requeue_after: Duration,
    ) -> Self {
        Self {
            store,
            queue,
            policies: Arc::new(policies.to_vec()),
            requeue_after,
        }
    }

    /// Has the queue forget the messages it handled (see
    /// [`JobQueue::forget_finished`]).
    pub async fn forget_finished(&self) -> Result<u64, crate::QueueError> {
        self.queue.forget_finished().await
    }

    /// One pass: returns how many jobs were recovered.
    pub async fn run_once(&self) -> Result<u64, JobStoreError> {
        let now = now();
        let mut recovered = self.store.recover_orphaned(now).await?;
        let cutoff = Timestamp(now.0 - self.requeue_after.as_millis() as i64);
        let queued: HashMap<String, i64> = self.store.queued_by_kind().await?.into_iter().collect();
        for pool in Pool::ALL {
            let kinds: Vec<&str> = self
                .policies
                .iter()
                .filter(|p| p.pool == pool)
                .map(|p| p.kind)
                .collect();
            let in_sql: i64 = kinds.iter().filter_map(|k| queued.get(*k)).sum();
            if in_sql == 0 {
                continue;
            }
            let backlog = match self.queue.backlog(pool).await {
                Ok(n) => n as i64,
                Err(e) => {
                    warn!(target: "tre::reconciler", %pool, error = %e, "cannot read the queue's backlog");
                    continue;
                }
            };
            if backlog >= in_sql {
                continue; // every queued job still has its message
            }
            for key in self.store.stale_queued(&kinds, cutoff).await? {
                if self.store.requeue_lost(&key, now).await? {
                    recovered += 1;
                }
            }
        }
        if recovered > 0 {
            info!(target: "tre::reconciler", recovered, "handed lost or orphaned jobs back to the relay");
        }
        Ok(recovered)
    }
}

/// Removes what its retentions let go, in batches, so the tables do not
/// grow without end: finished jobs, and whatever else it was handed (see
/// [`Retained`]).
#[derive(Clone)]
pub struct Cleaner {
    retained: Vec<Arc<dyn Retained>>,
    metrics: Arc<crate::Metrics>,
}

impl std::fmt::Debug for Cleaner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tables: Vec<&str> = self.retained.iter().map(|r| r.table()).collect();
        f.debug_struct("Cleaner").field("tables", &tables).finish()
    }
}

/// Rows deleted per statement (each batch is its own short transaction).
const CLEAN_BATCH: i64 = 1_000;

impl Cleaner {
    pub fn new(retained: Vec<Arc<dyn Retained>>, metrics: Arc<crate::Metrics>) -> Self {
        Self { retained, metrics }
    }

    /// One pass: the rows removed, per table.
    pub async fn run_once(&self) -> Result<Vec<(&'static str, u64)>, JobStoreError> {
        let now = now().0;
        let mut removed = Vec::with_capacity(self.retained.len());
        for retained in &self.retained {
            let before = Timestamp(now - retained.retention().as_millis() as i64);
            let n = retained.remove_before(before, CLEAN_BATCH).await?;
            self.metrics.removed(retained.table(), n);
            removed.push((retained.table(), n));
        }
        if removed.iter().any(|(_, n)| *n > 0) {
            info!(target: "tre::cleaner", ?removed, "removed what its retention let go");
        }
        Ok(removed)
    }
}

async fn tick(interval: Duration, shutdown: &mut Shutdown) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(interval) => !*shutdown.borrow(),
        _ = shutdown.changed() => false,
    }
}

/// Starts the relay, the reconciler and the cleaner until shutdown. With a
/// queue whose messages do not outlive the process, everything queued before
/// is handed back first. The cleaner removes finished jobs, and `retained`
/// besides (the process's other tables).
pub async fn spawn_maintenance(
    jobs: Arc<dyn JobStore>,
    queue: Arc<dyn JobQueue>,
    policies: &[JobPolicy],
    options: &RuntimeOptions,
    metrics: Arc<crate::Metrics>,
    shutdown: Shutdown,
    mut retained: Vec<Arc<dyn Retained>>,
) -> Result<Vec<JoinHandle<()>>, JobStoreError> {
    if !queue.is_durable() {
        let recovered = jobs.requeue_all_queued(now()).await?;
        if recovered > 0 {
            info!(target: "tre::reconciler", recovered, "embedded queue starting: handed back jobs queued before");
        }
    }
    let relay = Relay::new(jobs.clone(), queue.clone(), policies, options.relay_batch)
        .with_max_queued_per_pool(options.max_queued_per_pool);
    retained.insert(
        0,
        Arc::new(FinishedJobs {
            jobs: jobs.clone(),
            retention: options.job_retention,
        }),
    );
    let reconciler = Reconciler::new(jobs, queue, policies, options.requeue_after);
    let queue_metrics = metrics.clone();
    let cleaner = Cleaner::new(retained, metrics);
    let (relay_every, reconcile_every) = (options.relay_interval, options.reconcile_interval);
    let clean_every = options.clean_interval;
    let mut stop = shutdown.clone();
    let relay_task = tokio::spawn(async move {
        loop {
            match relay.run_once().await {
                Ok(n) if n > 0 => debug!(target: "tre::relay", sent = n, "relayed"),
                Ok(_) => {}
                Err(e) => warn!(target: "tre::relay", error = %e, "relay pass failed"),
            }
            if !tick(relay_every, &mut stop).await {
                break;
            }
        }
    });
    let mut stop = shutdown.clone();
    let reconcile_task = tokio::spawn(async move {
        loop {
            if let Err(e) = reconciler.run_once().await {
                warn!(target: "tre::reconciler", error = %e, "reconcile pass failed");
            }
            match reconciler.forget_finished().await {
                Ok(0) => {}
                Ok(n) => {
                    queue_metrics.removed("queue", n);
                    debug!(target: "tre::reconciler", forgotten = n, "queue forgot finished messages");
                }
                Err(e) => {
                    warn!(target: "tre::reconciler", error = %e, "queue could not forget finished messages")
                }
            }
            if !tick(reconcile_every, &mut stop).await {
                break;
            }
        }
    });
    let mut stop = shutdown;
    let clean_task = tokio::spawn(async move {
        // the first pass waits an interval: a fleet starting together does
        // not clean at once
        while tick(clean_every, &mut stop).await {
            if let Err(e) = cleaner.run_once().await {
                warn!(target: "tre::cleaner", error = %e, "clean pass failed");
            }
        }
    });
    Ok(vec![relay_task, reconcile_task, clean_task])
}
