//! The job runtime's persistence, as a port: everything the relay, the
//! reconciler, the pauses, the fleet's load and the executor ask of SQL
//! about jobs, and nothing about governance. The runtime holds it as
//! `Arc<dyn JobStore>`.
//!
//! Its adapter is `tre_jobs_sql::SqlJobStore` (the outbox on SQLite or
//! PostgreSQL), on a database of its own or, through `Store::jobs`, on the
//! database of the governance it serves, whose commands then write their
//! jobs in their own transactions. `tests/job_store.rs` is the port's
//! conformance suite, run on both databases without governance tables.

use std::collections::BTreeSet;

use async_trait::async_trait;
use serde_json::Value;
use tre_time::Timestamp;

use crate::{ClaimedJob, DueJob, FailOutcome, JobStoreError, OutboxJob};

/// What the job runtime asks of the SQL that is the jobs' truth. Every
/// transition is conditional on the job's state (and, for a running job,
/// on its lease), so at most one worker holds a job at a time whatever the
/// queue delivers; see [`JobState`](crate::JobState) for the states.
#[async_trait]
pub trait JobStore: Send + Sync + std::fmt::Debug + 'static {
    /// Enqueues a job of `kind` under its idempotency `key`, due at `due`;
    /// false when a job with that key exists already. (Commands enqueue
    /// their effects in their own transactions; this is for tools, tests
    /// and other services.)
    async fn enqueue_job(
        &self,
        kind: &str,
        key: &str,
        payload: &Value,
        due: Timestamp,
    ) -> Result<bool, JobStoreError>;

    /// One job as stored.
    async fn job(&self, key: &str) -> Result<Option<OutboxJob>, JobStoreError>;

    /// For each `(kind, most)`, the oldest `most` pending jobs of that kind
    /// due by `now`; all of them oldest first.
    async fn due_jobs(
        &self,
        now: Timestamp,
        kinds: &[(&str, u32)],
    ) -> Result<Vec<DueJob>, JobStoreError>;

    /// Per kind, the jobs due and not yet taken by a worker, and when the
    /// oldest of them fell due (milliseconds).
    async fn due_by_kind(&self, now: Timestamp) -> Result<Vec<(String, i64, i64)>, JobStoreError>;

    /// How many jobs of each kind are queued but not yet claimed.
    async fn queued_by_kind(&self) -> Result<Vec<(String, i64)>, JobStoreError>;

    /// Records that pending jobs were handed to the queue; returns how many
    /// were still pending.
    async fn mark_queued_many(&self, keys: &[String], now: Timestamp)
    -> Result<u64, JobStoreError>;

    /// Leases a due, free job for `worker` until `now + lease_ms`, counting
    /// an attempt; `None` when it is not there to take.
    async fn claim_job(
        &self,
        key: &str,
        worker: &str,
        lease_ms: i64,
        now: Timestamp,
    ) -> Result<Option<ClaimedJob>, JobStoreError>;

    /// [`JobStore::claim_job`] for many keys in one statement: the claimed
    /// ones, in no particular order.
    async fn claim_jobs(
        &self,
        keys: &[String],
        worker: &str,
        lease_ms: i64,
        now: Timestamp,
    ) -> Result<Vec<ClaimedJob>, JobStoreError>;

    /// Marks a job `worker` holds done; false when the lease was lost.
    async fn complete_job(
        &self,
        key: &str,
        worker: &str,
        now: Timestamp,
    ) -> Result<bool, JobStoreError>;

    /// [`JobStore::complete_job`] for many keys in one statement: the keys
    /// it marked.
    async fn complete_jobs(
        &self,
        keys: &[String],
        worker: &str,
        now: Timestamp,
    ) -> Result<Vec<String>, JobStoreError>;

    /// Extends a lease the worker still holds.
    async fn extend_lease(
        &self,
        key: &str,
        worker: &str,
        until: Timestamp,
    ) -> Result<bool, JobStoreError>;

    /// Records a failed attempt: pending again at `retry_at`, or dead.
    async fn fail_job(
        &self,
        key: &str,
        worker: &str,
        error: &str,
        retry_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<FailOutcome, JobStoreError>;

    /// Ends a running job `discarded`: its handler found it no longer
    /// applies. False when the lease was lost.
    async fn supersede_job(
        &self,
        key: &str,
        worker: &str,
        why: &str,
        now: Timestamp,
    ) -> Result<bool, JobStoreError>;

    /// Dead-letters a job claimed with its attempts used up.
    async fn give_up_exhausted(
        &self,
        key: &str,
        worker: &str,
        why: &str,
        now: Timestamp,
    ) -> Result<FailOutcome, JobStoreError>;

    /// Gives back a job the worker holds but did not finish (shutdown).
    async fn release_job(&self, key: &str, worker: &str) -> Result<bool, JobStoreError>;

    /// Hands back to pending the jobs whose lease ran out; how many.
    async fn recover_orphaned(&self, now: Timestamp) -> Result<u64, JobStoreError>;

    /// Queued jobs of `kinds` handed over before `queued_before` and still
    /// unclaimed, oldest first.
    async fn stale_queued(
        &self,
        kinds: &[&str],
        queued_before: Timestamp,
    ) -> Result<Vec<String>, JobStoreError>;

    /// Hands a queued job back to pending (its message was lost).
    async fn requeue_lost(&self, key: &str, now: Timestamp) -> Result<bool, JobStoreError>;

    /// Hands every queued job back to pending (the queue lost them all).
    async fn requeue_all_queued(&self, now: Timestamp) -> Result<u64, JobStoreError>;

    /// The pools an operator paused for the whole fleet.
    async fn paused_pools(&self) -> Result<BTreeSet<String>, JobStoreError>;

    /// Removes finished jobs (done, discarded) finished before `before`,
    /// in batches of `batch`; how many. Dead jobs stay.
    async fn remove_finished(&self, before: Timestamp, batch: i64) -> Result<u64, JobStoreError>;
}
