//! Runs one job: claim it in SQL, run its handler under the policy's
//! timeout, record the outcome in SQL.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{Instrument, info, info_span, warn};
use tre_domain::Timestamp;
use tre_store::{ClaimedJob, FailOutcome, Store, now};

use crate::{JobError, JobPolicy, Metrics, Pool};

/// What a handler gets besides the job.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub store: Store,
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

/// Jobs whose timeout exceeds this renew their lease while they run.
const LONG_JOB: Duration = Duration::from_secs(120);
/// How often a long job renews its lease (which lasts three beats plus the
/// grace).
const HEARTBEAT: Duration = Duration::from_secs(5);

/// Runs jobs for the handlers registered with it.
pub struct Executor {
    ctx: JobContext,
    policies: HashMap<&'static str, JobPolicy>,
    handlers: HashMap<&'static str, Arc<dyn JobHandler>>,
    /// Added to a job's timeout to make its lease: how long a dead worker
    /// holds a job before the reconciler hands it on.
    lease_grace: Duration,
    metrics: Arc<Metrics>,
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
    pub fn new(
        store: Store,
        worker: String,
        policies: &[JobPolicy],
        lease_grace: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            ctx: JobContext { store, worker },
            policies: policies.iter().map(|p| (p.kind, p.clone())).collect(),
            handlers: HashMap::new(),
            lease_grace,
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
            self.handlers.insert(kind, handler.clone());
        }
    }

    pub fn worker(&self) -> &str {
        &self.ctx.worker
    }

    pub fn store(&self) -> &Store {
        &self.ctx.store
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

    /// Drives `run`, renewing the lease every `heartbeat` meanwhile.
    async fn with_heartbeat<F: Future>(
        &self,
        key: &str,
        heartbeat: Option<Duration>,
        lease: Duration,
        run: F,
    ) -> F::Output {
        let Some(beat) = heartbeat else {
            return run.await;
        };
        let renew = async {
            loop {
                tokio::time::sleep(beat).await;
                let until = Timestamp(now().0 + lease.as_millis() as i64);
                match self
                    .ctx
                    .store
                    .extend_lease(key, &self.ctx.worker, until)
                    .await
                {
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
        let (Some(policy), Some(handler)) = (self.policies.get(kind), self.handlers.get(kind))
        else {
            self.metrics.count(kind, "skipped");
            return ExecOutcome::Skipped;
        };
        // Short jobs hold their lease for their whole timeout; long ones
        // (dispensing) hold a short lease renewed by a heartbeat, so a
        // crashed worker's job is handed on within seconds, not hours.
        let heartbeat = (policy.timeout > LONG_JOB).then_some(HEARTBEAT);
        let lease = match heartbeat {
            Some(beat) => beat * 3 + self.lease_grace,
            None => policy.timeout + self.lease_grace,
        };
        let store = &self.ctx.store;
        let claimed = match store
            .claim_job(
                key,
                &self.ctx.worker,
                lease.as_millis() as i64,
                policy.max_attempts,
                now(),
            )
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
            self.metrics.count(kind, "started");
            let started = Instant::now();
            let run = tokio::time::timeout(policy.timeout, handler.handle(&claimed, &self.ctx));
            let result = match self.with_heartbeat(key, heartbeat, lease, run).await {
                Ok(result) => result,
                Err(_) => Err(JobError::Transient(format!(
                    "timed out after {:?}",
                    policy.timeout
                ))),
            };
            self.metrics.observe(kind, started.elapsed());
            match result {
                Ok(()) => match store.complete_job(key, &self.ctx.worker, now()).await {
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
                },
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
                    };
                    match store
                        .fail_job(key, &self.ctx.worker, &message, retry_at, now())
                        .await
                    {
                        Ok(FailOutcome::RetryAt(at)) => {
                            self.metrics.count(kind, "retried");
                            warn!(error = %message, retry_at = at.0, "job failed; will retry");
                            ExecOutcome::Retrying(at)
                        }
                        Ok(FailOutcome::Dead) => {
                            self.metrics.count(kind, "failed");
                            self.metrics.count(kind, "dead");
                            warn!(error = %message, "job dead-lettered");
                            handler.on_dead(&claimed, &message, &self.ctx).await;
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
        }
        .instrument(span)
        .await
    }
}
