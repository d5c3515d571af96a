//! Runs one job: claim it in SQL, run its handler under the policy's
//! timeout while a heartbeat renews its short lease, record the outcome in
//! SQL. Every way a job can end badly (a permanent error, a transient one
//! on the last attempt, a timeout, a panic, attempts used up by a worker
//! that died) goes through one dead-letter path, which runs the kind's
//! [`JobHandler::on_dead`].

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{ClaimedJob, FailOutcome, JobStoreError};
use futures::FutureExt;
use tracing::{Instrument, info, info_span, warn};
use tre_time::Timestamp;
use tre_time::now;

use crate::batch::Batcher;
use crate::{JobError, JobPolicy, JobStore, Metrics, Pool};

/// What a handler gets besides the job. (What a handler works on, a store
/// or a client, it holds itself: the runtime knows nothing of it.)
#[derive(Debug, Clone)]
pub struct JobContext {
    /// The worker's unique name (host, pid, random): the lease owner.
    pub worker: String,
}

/// Performs one kind (or several kinds) of job. Must be idempotent: a job
/// may run again after a crash between its effect and its completion.
pub trait JobHandler: Send + Sync + 'static {
    fn kinds(&self) -> Vec<&'static str>;
    fn handle<'a>(
        &'a self,
        job: &'a ClaimedJob,
        ctx: &'a JobContext,
    ) -> Pin<Box<dyn Future<Output = Result<(), JobError>> + Send + 'a>>;

    /// Called once a job of this handler is dead-lettered (after the dead
    /// letter is recorded), e.g. to mark what it was working on failed.
    /// Best effort: a crash in between leaves it to an operator.
    fn on_dead<'a>(
        &'a self,
        _job: &'a ClaimedJob,
        _message: &'a str,
        _ctx: &'a JobContext,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async {})
    }
}

/// The outcome of [`Executor::execute`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecOutcome {
    Succeeded,
    /// Failed; retried at this time.
    Retrying(Timestamp),
    Dead(String),
    /// Nothing to do: done already, leased elsewhere, not due, unknown, or
    /// a kind this process does not handle.
    Skipped,
    /// The worker lost its lease while running (took longer than the lease).
    LeaseLost,
}

/// How long a worker keeps trying to reach the database for one job (to
/// claim it, or record its outcome) while the database is unavailable
/// (restarting, failing over): past that, the job's lease runs out and the
/// reconciler hands it on.
const DATABASE_PATIENCE: Duration = Duration::from_secs(30);

/// Runs `call` until it succeeds, fails for another reason than an
/// unavailable database, or [`DATABASE_PATIENCE`] runs out.
async fn patiently<T, F, Fut>(what: &str, mut call: F) -> Result<T, JobStoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, JobStoreError>>,
{
    let deadline = Instant::now() + DATABASE_PATIENCE;
    let mut pause = Duration::from_millis(50);
    loop {
        match call().await {
            Err(e) if e.is_unavailable() && Instant::now() + pause < deadline => {
                warn!(error = %e, "database unavailable: will {what} again in {pause:?}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            done => return done,
        }
    }
}

/// The message of a panic payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Runs jobs for the handlers registered with it.
pub struct Executor {
    ctx: JobContext,
    /// The jobs' persistence (claims, leases, outcomes).
    jobs: Arc<dyn JobStore>,
    policies: HashMap<&'static str, JobPolicy>,
    handlers: HashMap<&'static str, Arc<dyn JobHandler>>,
    /// How long a running job's lease lasts; renewed every third of it.
    lease: Duration,
    metrics: Arc<Metrics>,
    pauses: crate::Pauses,
    /// Claims and completions made together go as one statement.
    claims: Claims,
    completions: Completions,
    /// Successes being recorded in the background (see
    /// [`Executor::execute_releasing`]).
    recording: Arc<Recording>,
}

/// A count of background recordings, and a wake-up when it reaches zero.
#[derive(Default)]
struct Recording {
    count: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
}

/// A worker's claims: a key in, the job (if it was free) out.
type Claims = Batcher<String, Result<Option<ClaimedJob>, JobStoreError>>;
/// A worker's completions: a key in, whether the lease still held out.
type Completions = Batcher<String, Result<bool, JobStoreError>>;

/// Most claims or completions in one statement.
const BATCH: usize = 64;

/// The batching loops of one worker's claims and completions. A batch that
/// fails (the database went away) is redone one call at a time, so each
/// caller gets its own error to judge.
fn batchers(store: &Arc<dyn JobStore>, worker: &str, lease: Duration) -> (Claims, Completions) {
    let lease_ms = lease.as_millis() as i64;
    let (store_c, worker_c) = (store.clone(), worker.to_owned());
    let claims = Batcher::spawn(BATCH, move |keys: Vec<String>| {
        let (store, worker) = (store_c.clone(), worker_c.clone());
        async move {
            match store.claim_jobs(&keys, &worker, lease_ms, now()).await {
                Ok(mut claimed) => keys
                    .iter()
                    .map(|key| {
                        Ok(claimed
                            .iter()
                            .position(|c| c.key == *key)
                            .map(|i| claimed.swap_remove(i)))
                    })
                    .collect(),
                Err(_) => {
                    let mut one_by_one = Vec::with_capacity(keys.len());
                    for key in &keys {
                        one_by_one.push(store.claim_job(key, &worker, lease_ms, now()).await);
                    }
                    one_by_one
                }
            }
        }
    });
    let (store_d, worker_d) = (store.clone(), worker.to_owned());
    let completions = Batcher::spawn(BATCH, move |keys: Vec<String>| {
        let (store, worker) = (store_d.clone(), worker_d.clone());
        async move {
            match store.complete_jobs(&keys, &worker, now()).await {
                Ok(done) => keys.iter().map(|key| Ok(done.contains(key))).collect(),
                Err(_) => {
                    let mut one_by_one = Vec::with_capacity(keys.len());
                    for key in &keys {
                        one_by_one.push(store.complete_job(key, &worker, now()).await);
                    }
                    one_by_one
                }
            }
        }
    });
    (claims, completions)
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("worker", &self.ctx.worker)
            .field("kinds", &self.handlers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Executor {
    /// An executor claiming and recording through `jobs` as `worker`.
    pub fn new(
        jobs: Arc<dyn JobStore>,
        worker: String,
        policies: &[JobPolicy],
        lease: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (claims, completions) = batchers(&jobs, &worker, lease);
        Self {
            pauses: crate::Pauses::new(jobs.clone()),
            jobs,
            claims,
            completions,
            recording: Arc::default(),
            ctx: JobContext { worker },
            policies: policies.iter().map(|p| (p.kind, p.clone())).collect(),
            handlers: HashMap::new(),
            lease,
            metrics,
        }
    }

    /// Registers a handler for the kinds it declares (that have a policy).
    pub fn register(&mut self, handler: Arc<dyn JobHandler>) {
        for kind in handler.kinds() {
            assert!(
                self.policies.contains_key(kind),
                "no policy for job kind {kind}"
            );
            let earlier = self.handlers.insert(kind, handler.clone());
            assert!(earlier.is_none(), "job kind {kind} has two handlers");
        }
    }

    pub fn worker(&self) -> &str {
        &self.ctx.worker
    }

    /// The jobs' persistence this executor claims and records through.
    pub fn jobs(&self) -> &Arc<dyn JobStore> {
        &self.jobs
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The pool a kind is dispatched to.
    pub fn pool_of(&self, kind: &str) -> Option<Pool> {
        self.policies.get(kind).map(|p| p.pool)
    }

    /// Whether this process runs jobs of `kind`.
    pub fn handles(&self, kind: &str) -> bool {
        self.handlers.contains_key(kind)
    }

    /// Drives `run`, renewing the lease every third of it meanwhile.
    async fn with_heartbeat<F: Future>(&self, key: &str, run: F) -> F::Output {
        let beat = self.lease / 3;
        let renew = async {
            loop {
                tokio::time::sleep(beat).await;
                let until = Timestamp(now().0 + self.lease.as_millis() as i64);
                match self.jobs.extend_lease(key, &self.ctx.worker, until).await {
                    Ok(true) => {}
                    Ok(false) => warn!(job = key, "lease lost while running"),
                    Err(e) => warn!(job = key, error = %e, "could not renew the lease"),
                }
            }
        };
        tokio::pin!(run);
        tokio::select! {
            out = &mut run => out,
            _ = renew => unreachable!("the heartbeat never ends"),
        }
    }

    /// Runs the job with this key if it is due and free. Never fails: every
    /// outcome is recorded in SQL (a store error leaves the lease to expire,
    /// and the reconciler hands the job on).
    pub async fn execute(&self, key: &str, kind: &str) -> ExecOutcome {
        self.run(key, kind, None).await
    }

    /// [`Executor::execute`] for a pool: returns as soon as the handler
    /// succeeded, so the pool's slot serves the next job while the success
    /// is recorded (with others, in one statement) in the background. A
    /// crash before it is recorded leaves the job to its lease, and it runs
    /// again: handlers are idempotent, as for a crash a moment later.
    pub async fn execute_releasing(self: &Arc<Self>, key: &str, kind: &str) -> ExecOutcome {
        self.run(key, kind, Some(self.clone())).await
    }

    /// Waits (at most a lease) until the successes being recorded in the
    /// background are in SQL: a pool calls it when it stops, so a worker
    /// that shuts down does not leave finished jobs to run again.
    pub async fn settle(&self) {
        use std::sync::atomic::Ordering;
        let _ = tokio::time::timeout(self.lease, async {
            loop {
                let idle = self.recording.idle.notified();
                if self.recording.count.load(Ordering::Acquire) == 0 {
                    return;
                }
                idle.await;
            }
        })
        .await;
    }

    /// Records a handler's success; `started` times the job.
    async fn record_success(&self, key: &str, kind: &str, started: Instant) -> ExecOutcome {
        match patiently("record the completion", || async {
            self.completions
                .call(key.to_owned())
                .await
                .unwrap_or_else(|| {
                    Err(JobStoreError::Failed(
                        "the completion loop has stopped".into(),
                    ))
                })
        })
        .await
        {
            Ok(true) => {
                self.metrics.count(kind, "succeeded");
                info!(
                    took_ms = started.elapsed().as_millis() as u64,
                    "job succeeded"
                );
                ExecOutcome::Succeeded
            }
            Ok(false) => ExecOutcome::LeaseLost,
            Err(e) => {
                warn!(error = %e, "could not record completion; the job will run again");
                ExecOutcome::LeaseLost
            }
        }
    }

    /// Runs a job; with `detach`, a success is recorded by a task of its
    /// own and `Succeeded` returned at once.
    async fn run(&self, key: &str, kind: &str, detach: Option<Arc<Self>>) -> ExecOutcome {
        let (Some(policy), Some(handler)) = (self.policies.get(kind), self.handlers.get(kind))
        else {
            self.metrics.count(kind, "skipped");
            return ExecOutcome::Skipped;
        };
        if self.pauses.is_paused(policy.pool).await {
            // left queued: the reconciler hands it back, and the relay holds
            // it until the pool is resumed
            self.metrics.count(kind, "paused");
            return ExecOutcome::Skipped;
        }
        let store = &self.jobs;
        let claimed = match patiently("claim the job", || async {
            self.claims
                .call(key.to_owned())
                .await
                .unwrap_or_else(|| Err(JobStoreError::Failed("the claim loop has stopped".into())))
        })
        .await
        {
            Ok(Some(job)) => job,
            Ok(None) => {
                self.metrics.count(kind, "skipped");
                return ExecOutcome::Skipped;
            }
            Err(e) => {
                warn!(job = key, error = %e, "could not claim job; the reconciler will hand it on");
                return ExecOutcome::Skipped;
            }
        };
        let request = claimed
            .payload
            .get("request")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_owned();
        let span = info_span!("job", job = key, kind, attempt = claimed.attempt, request = %request, worker = %self.ctx.worker);
        async {
            if claimed.attempt > policy.max_attempts {
                // its last attempt's worker died: dead-letter, do not run
                let why = format!(
                    "{} (gave up: all {} attempts used, the last one's worker stopped without finishing)",
                    claimed.last_error.as_deref().unwrap_or("no error recorded"),
                    policy.max_attempts
                );
                let outcome = patiently("dead-letter the job", || {
                    store.give_up_exhausted(key, &self.ctx.worker, &why, now())
                })
                .await;
                return self.after_failure(handler, &claimed, kind, why, outcome).await;
            }
            self.metrics.count(kind, "started");
            let started = Instant::now();
            let run = std::panic::AssertUnwindSafe(handler.handle(&claimed, &self.ctx))
                .catch_unwind();
            let result = match self
                .with_heartbeat(key, tokio::time::timeout(policy.timeout, run))
                .await
            {
                Ok(Ok(result)) => result,
                Ok(Err(panic)) => {
                    self.metrics.count(kind, "panicked");
                    Err(JobError::Transient(format!(
                        "the handler panicked: {}",
                        panic_message(panic.as_ref())
                    )))
                }
                Err(_) => Err(JobError::Transient(format!(
                    "timed out after {:?}",
                    policy.timeout
                ))),
            };
            self.metrics.observe(kind, started.elapsed());
            match result {
                Ok(()) => match detach {
                    Some(this) => {
                        use std::sync::atomic::Ordering;
                        let (key, kind) = (key.to_owned(), kind.to_owned());
                        this.recording.count.fetch_add(1, Ordering::AcqRel);
                        tokio::spawn(
                            async move {
                                this.record_success(&key, &kind, started).await;
                                if this.recording.count.fetch_sub(1, Ordering::AcqRel) == 1 {
                                    this.recording.idle.notify_waiters();
                                }
                            }
                            .in_current_span(),
                        );
                        ExecOutcome::Succeeded
                    }
                    None => self.record_success(key, kind, started).await,
                },
                Err(JobError::Superseded(why)) => {
                    match patiently("record the job as superseded", || {
                        store.supersede_job(key, &self.ctx.worker, &why, now())
                    })
                    .await
                    {
                        Ok(true) => {
                            self.metrics.count(kind, "superseded");
                            info!(reason = %why, "job superseded; its work is not done");
                            ExecOutcome::Skipped
                        }
                        Ok(false) => ExecOutcome::LeaseLost,
                        Err(e) => {
                            warn!(error = %e, "could not record the job as superseded");
                            ExecOutcome::LeaseLost
                        }
                    }
                }
                Err(error) => {
                    let (retry_at, message) = match &error {
                        JobError::Transient(m) if claimed.attempt < policy.max_attempts => {
                            let delay = policy.backoff(claimed.attempt);
                            (
                                Some(Timestamp(now().0 + delay.as_millis() as i64)),
                                m.clone(),
                            )
                        }
                        JobError::Transient(m) => (
                            None,
                            format!(
                                "{m} (attempt {} of {})",
                                claimed.attempt, policy.max_attempts
                            ),
                        ),
                        JobError::Permanent(m) => (None, format!("permanent: {m}")),
                        JobError::Superseded(_) => unreachable!("handled above"),
                    };
                    let outcome = patiently("record the failure", || {
                        store.fail_job(key, &self.ctx.worker, &message, retry_at, now())
                    })
                    .await;
                    self.after_failure(handler, &claimed, kind, message, outcome)
                        .await
                }
            }
        }
        .instrument(span)
        .await
    }

    /// The one place a failed attempt ends: counted, logged, and when the
    /// job is dead, the kind's follow-up run.
    async fn after_failure(
        &self,
        handler: &Arc<dyn JobHandler>,
        claimed: &ClaimedJob,
        kind: &str,
        message: String,
        recorded: Result<FailOutcome, JobStoreError>,
    ) -> ExecOutcome {
        match recorded {
            Ok(FailOutcome::RetryAt(at)) => {
                self.metrics.count(kind, "retried");
                warn!(error = %message, retry_at = at.0, "job failed; will retry");
                ExecOutcome::Retrying(at)
            }
            Ok(FailOutcome::Dead) => {
                self.metrics.count(kind, "failed");
                self.metrics.count(kind, "dead");
                warn!(error = %message, "job dead-lettered");
                handler.on_dead(claimed, &message, &self.ctx).await;
                ExecOutcome::Dead(message)
            }
            Ok(FailOutcome::LeaseLost) => ExecOutcome::LeaseLost,
            Err(e) => {
                warn!(error = %e, "could not record failure; the lease will expire");
                ExecOutcome::LeaseLost
            }
        }
    }
}
