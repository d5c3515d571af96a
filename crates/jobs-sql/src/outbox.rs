//! Jobs into the outbox from outside a command (other services, tools,
//! tests), and one job as stored. Commands write their effects to the
//! outbox in their own transactions instead.

use serde_json::Value;
use sqlx::Row;
use tre_jobs::{JobState, OutboxJob};
use tre_time::Timestamp;

use crate::{SqlJobError, SqlJobStore, decode_payload};

/// A row of `SELECT job_key, kind, payload, state, attempts, due_at,
/// created_at, last_error FROM outbox` as a job.
pub fn job_from_row(row: &sqlx::any::AnyRow) -> Result<OutboxJob, SqlJobError> {
    let key: String = row.try_get("job_key")?;
    let payload: String = row.try_get("payload")?;
    let state: String = row.try_get("state")?;
    let state = JobState::parse(&state).ok_or_else(|| SqlJobError::Corrupt {
        key: key.clone(),
        message: format!("unknown state {state:?}"),
    })?;
    Ok(OutboxJob {
        payload: decode_payload(&key, &payload)?,
        key,
        kind: row.try_get("kind")?,
        state,
        attempts: row.try_get("attempts")?,
        due_at: row.try_get("due_at")?,
        created_at: row.try_get("created_at")?,
        last_error: row.try_get("last_error")?,
    })
}

impl SqlJobStore {
    /// Enqueues a job of any kind under a caller-chosen idempotency key;
    /// false when a job with that key exists already. (Commands enqueue
    /// their effects themselves; this is for other services and tools.)
    pub async fn enqueue_job(
        &self,
        kind: &str,
        key: &str,
        payload: &Value,
        due: Timestamp,
    ) -> Result<bool, SqlJobError> {
        let done = sqlx::query(
            "INSERT INTO outbox (job_key, kind, payload, state, attempts, due_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $5, 0, $4, $4, $4) ON CONFLICT (job_key) DO NOTHING",
        )
        .bind(key)
        .bind(kind)
        .bind(payload.to_string())
        .bind(due.0)
        .bind(JobState::Pending.as_str())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Enqueues many jobs (kind, key, payload, due) in as few statements as
    /// the database takes; a key stored already is skipped. Returns how
    /// many were new. (For other services and tools; commands enqueue their
    /// effects with their own writes.)
    pub async fn enqueue_jobs(
        &self,
        jobs: &[(&str, String, Value, Timestamp)],
    ) -> Result<u64, SqlJobError> {
        let now = tre_time::now();
        let mut added = 0;
        // 5 parameters a row: far under both databases' limits
        for chunk in jobs.chunks(500) {
            let rows: Vec<String> = (0..chunk.len())
                .map(|i| {
                    let n = 3 + i * 5;
                    format!(
                        "(${}, ${}, ${}, $1, 0, ${}, $2, $2, ${})",
                        n,
                        n + 1,
                        n + 2,
                        n + 3,
                        n + 4
                    )
                })
                .collect();
            let sql = format!(
                "INSERT INTO outbox (job_key, kind, payload, state, attempts, due_at, created_at, updated_at, created_by) \
                 VALUES {} ON CONFLICT (job_key) DO NOTHING",
                rows.join(", ")
            );
            let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(JobState::Pending.as_str())
                .bind(now.0);
            for (kind, key, payload, due) in chunk {
                insert = insert
                    .bind(key.as_str())
                    .bind(*kind)
                    .bind(payload.to_string())
                    .bind(due.0)
                    .bind("");
            }
            added += insert.execute(&self.pool).await?.rows_affected();
        }
        Ok(added)
    }

    /// One stored job.
    pub async fn job(&self, key: &str) -> Result<Option<OutboxJob>, SqlJobError> {
        let row = sqlx::query(
            "SELECT job_key, kind, payload, state, attempts, due_at, created_at, last_error FROM outbox WHERE job_key = $1",
        )
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(job_from_row).transpose()
    }
}
