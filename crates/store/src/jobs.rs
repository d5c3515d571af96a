//! The outbox as the job runtime's queue of record.
//!
//! | state | meaning | who moves it out |
//! |---|---|---|
//! | `pending` | due at `due_at`; not (or no longer) in the queue | the relay: `queued` once handed to the queue; a worker may also claim it directly |
//! | `queued` | handed to the queue at `dispatched_at` | a worker: `running` (claim); the reconciler: back to `pending` when the message seems lost |
//! | `running` | leased by `lease_owner` until `lease_until` | the worker: `done`, `pending` (retry later) or `dead`; the reconciler: `pending` when the lease expired (worker died) |
//! | `done` | finished; a redelivered message is a no-op | nobody |
//! | `dead` | gave up (permanent error or attempts exhausted); `last_error` says why | an operator (retry) |
//!
//! Every transition is one conditional `UPDATE`, so at most one worker holds
//! a job at a time on either database, whatever the queue delivers.

use serde::Serialize;
use sqlx::Row;
use tre_domain::Timestamp;

use crate::{Store, StoreError};

/// A job a worker has leased.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClaimedJob {
    pub key: String,
    pub kind: String,
    pub payload: serde_json::Value,
    /// This attempt's number, from 1.
    pub attempt: i64,
    pub lease_until: i64,
}

/// What happened to a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// Back to `pending`, due again at this time.
    RetryAt(Timestamp),
    /// Given up.
    Dead,
    /// The worker no longer held the lease (another took over); nothing written.
    LeaseLost,
}

/// Jobs per state (queue depth for metrics and operators).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct JobCounts {
    pub pending: i64,
    pub queued: i64,
    pub running: i64,
    pub done: i64,
    pub dead: i64,
}

impl JobCounts {
    /// The counts as the Prometheus gauge `tre_jobs_queue_depth{state}`.
    pub fn to_prometheus(&self) -> String {
        let mut out = String::from(
            "# HELP tre_jobs_queue_depth Jobs in the outbox by state.\n# TYPE tre_jobs_queue_depth gauge\n",
        );
        for (state, n) in [
            ("pending", self.pending),
            ("queued", self.queued),
            ("running", self.running),
            ("done", self.done),
            ("dead", self.dead),
        ] {
            out.push_str(&format!("tre_jobs_queue_depth{{state=\"{state}\"}} {n}\n"));
        }
        out
    }
}

impl Store {
    /// Pending jobs that are due, oldest first, with their attempts so far:
    /// what the relay hands to the queue.
    pub async fn due_jobs(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<(String, String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT job_key, kind, attempts FROM outbox WHERE state = 'pending' AND due_at <= $1 ORDER BY due_at, job_key LIMIT $2",
        )
        .bind(now.0)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
    }

    /// How many jobs of each kind are queued but not yet claimed.
    pub async fn queued_by_kind(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows =
            sqlx::query("SELECT kind, COUNT(*) FROM outbox WHERE state = 'queued' GROUP BY kind")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Records that a pending job was handed to the queue. False when a
    /// worker already took it (or it is no longer pending).
    pub async fn mark_queued(&self, key: &str, now: Timestamp) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE outbox SET state = 'queued', dispatched_at = $1, updated_at = $1 WHERE job_key = $2 AND state = 'pending'",
        )
        .bind(now.0)
        .bind(key)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Leases a due job for `worker` until `now + lease_ms`, counting an
    /// attempt. `None` when the job is done, dead, leased by someone else,
    /// not due, or unknown: the message is then a no-op. A job whose attempts
    /// are used up is moved to `dead` instead.
    pub async fn claim_job(
        &self,
        key: &str,
        worker: &str,
        lease_ms: i64,
        max_attempts: i64,
        now: Timestamp,
    ) -> Result<Option<ClaimedJob>, StoreError> {
        let row = sqlx::query(
            "UPDATE outbox SET state = 'running', lease_owner = $1, lease_until = $2, attempts = attempts + 1, updated_at = $3 \
             WHERE job_key = $4 AND state IN ('pending', 'queued') AND due_at <= $3 AND attempts < $5 \
             RETURNING kind, payload, attempts, lease_until",
        )
        .bind(worker)
        .bind(now.0 + lease_ms)
        .bind(now.0)
        .bind(key)
        .bind(max_attempts)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            sqlx::query(
                "UPDATE outbox SET state = 'dead', finished_at = $1, updated_at = $1, \
                 last_error = COALESCE(last_error, '') || ' (gave up: attempts exhausted)' \
                 WHERE job_key = $2 AND state IN ('pending', 'queued') AND attempts >= $3",
            )
            .bind(now.0)
            .bind(key)
            .bind(max_attempts)
            .execute(&self.pool)
            .await?;
            return Ok(None);
        };
        let payload: String = row.try_get("payload")?;
        Ok(Some(ClaimedJob {
            key: key.to_owned(),
            kind: row.try_get("kind")?,
            payload: crate::docs::decode("job", key, &payload)?,
            attempt: row.try_get("attempts")?,
            lease_until: row.try_get("lease_until")?,
        }))
    }

    /// Extends a lease the worker still holds (long jobs heartbeat with this).
    pub async fn extend_lease(
        &self,
        key: &str,
        worker: &str,
        until: Timestamp,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE outbox SET lease_until = $1 WHERE job_key = $2 AND state = 'running' AND lease_owner = $3",
        )
        .bind(until.0)
        .bind(key)
        .bind(worker)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks a leased job done. False when the lease was lost meanwhile.
    pub async fn complete_job(
        &self,
        key: &str,
        worker: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE outbox SET state = 'done', finished_at = $1, updated_at = $1, lease_owner = NULL, lease_until = NULL \
             WHERE job_key = $2 AND state = 'running' AND lease_owner = $3",
        )
        .bind(now.0)
        .bind(key)
        .bind(worker)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a failed attempt: back to `pending` at `retry_at`, or `dead`
    /// when `retry_at` is `None` (permanent error or last attempt).
    pub async fn fail_job(
        &self,
        key: &str,
        worker: &str,
        error: &str,
        retry_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<FailOutcome, StoreError> {
        let error: String = error.chars().take(4000).collect();
        let done = match retry_at {
            Some(at) => sqlx::query(
                "UPDATE outbox SET state = 'pending', due_at = $1, last_error = $2, updated_at = $3, lease_owner = NULL, lease_until = NULL \
                 WHERE job_key = $4 AND state = 'running' AND lease_owner = $5",
            )
            .bind(at.0)
            .bind(&error)
            .bind(now.0)
            .bind(key)
            .bind(worker)
            .execute(&self.pool)
            .await?,
            None => sqlx::query(
                "UPDATE outbox SET state = 'dead', last_error = $1, finished_at = $2, updated_at = $2, lease_owner = NULL, lease_until = NULL \
                 WHERE job_key = $3 AND state = 'running' AND lease_owner = $4",
            )
            .bind(&error)
            .bind(now.0)
            .bind(key)
            .bind(worker)
            .execute(&self.pool)
            .await?,
        };
        Ok(match (done.rows_affected(), retry_at) {
            (0, _) => FailOutcome::LeaseLost,
            (_, Some(at)) => FailOutcome::RetryAt(at),
            (_, None) => FailOutcome::Dead,
        })
    }

    /// Hands back to `pending` what the queue seems to have lost: jobs
    /// `queued` before `queued_before` and never claimed (e.g. after a Redis
    /// restart or `FLUSHALL`), and jobs whose lease expired (the worker died).
    /// Returns how many jobs were recovered.
    pub async fn recover_jobs(
        &self,
        queued_before: Timestamp,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        let lost = sqlx::query(
            "UPDATE outbox SET state = 'pending', updated_at = $1 WHERE state = 'queued' AND dispatched_at < $2",
        )
        .bind(now.0)
        .bind(queued_before.0)
        .execute(&self.pool)
        .await?;
        let orphaned = sqlx::query(
            "UPDATE outbox SET state = 'pending', updated_at = $1, lease_owner = NULL, lease_until = NULL, \
             last_error = 'worker lost its lease (crashed or stopped mid-job)' \
             WHERE state = 'running' AND lease_until < $1",
        )
        .bind(now.0)
        .execute(&self.pool)
        .await?;
        Ok(lost.rows_affected() + orphaned.rows_affected())
    }

    /// Gives back a job this worker holds but did not finish (graceful
    /// shutdown): `pending` again at once. The interrupted attempt counts,
    /// so the next dispatch is a new one (see the Redis queue's idempotency
    /// keys) and a job that keeps outliving shutdowns still runs out.
    pub async fn release_job(&self, key: &str, worker: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE outbox SET state = 'pending', lease_owner = NULL, lease_until = NULL \
             WHERE job_key = $1 AND state = 'running' AND lease_owner = $2",
        )
        .bind(key)
        .bind(worker)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Jobs per state.
    pub async fn job_counts(&self) -> Result<JobCounts, StoreError> {
        let rows = sqlx::query("SELECT state, COUNT(*) FROM outbox GROUP BY state")
            .fetch_all(&self.pool)
            .await?;
        let mut counts = JobCounts::default();
        for row in rows {
            let state: String = row.try_get(0)?;
            let n: i64 = row.try_get(1)?;
            match state.as_str() {
                "pending" => counts.pending = n,
                "queued" => counts.queued = n,
                "running" => counts.running = n,
                "done" => counts.done = n,
                "dead" => counts.dead = n,
                _ => {}
            }
        }
        Ok(counts)
    }

    /// Puts a dead job back to `pending` with fresh attempts (operators).
    pub async fn retry_dead_job(&self, key: &str, now: Timestamp) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE outbox SET state = 'pending', attempts = 0, due_at = $1, updated_at = $1, finished_at = NULL \
             WHERE job_key = $2 AND state = 'dead'",
        )
        .bind(now.0)
        .bind(key)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
