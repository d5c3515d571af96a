//! What the fleet's maintenance asks beyond single jobs: the pools an
//! operator paused, and the finished jobs to clean away.

use std::collections::BTreeSet;

use sqlx::Row;
use tre_jobs::JobState;
use tre_time::Timestamp;

use crate::{SqlJobError, SqlJobStore};

impl SqlJobStore {
    /// The pools paused now.
    pub async fn paused_pools(&self) -> Result<BTreeSet<String>, SqlJobError> {
        sqlx::query("SELECT pool FROM pool_controls WHERE paused <> 0")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| Ok(row.try_get(0)?))
            .collect()
    }
}

impl SqlJobStore {
    /// Removes finished jobs (done or discarded) finished before `before`,
    /// in batches of `batch`; how many. Dead ones stay for an operator.
    pub async fn remove_finished(&self, before: Timestamp, batch: i64) -> Result<u64, SqlJobError> {
        // the finished jobs' partial index (migration 0011) names them
        let sql = format!(
            "DELETE FROM outbox WHERE job_key IN (SELECT job_key FROM outbox \
             WHERE state IN ('{}', '{}') AND finished_at < $1 LIMIT $2)",
            JobState::Done.as_str(),
            JobState::Discarded.as_str()
        );
        delete_in_batches(&self.pool, &sql, before, batch).await
    }
}

/// Runs `delete` (binding `before` as $1 and `batch` as $2) until it
/// removes fewer than `batch` rows: each batch its own short statement.
pub async fn delete_in_batches(
    pool: &sqlx::AnyPool,
    delete: &str,
    before: Timestamp,
    batch: i64,
) -> Result<u64, SqlJobError> {
    let mut removed = 0;
    loop {
        let done = sqlx::query(sqlx::AssertSqlSafe(delete.to_owned()))
            .bind(before.0)
            .bind(batch)
            .execute(pool)
            .await?
            .rows_affected();
        removed += done;
        if done < batch.max(1) as u64 {
            return Ok(removed);
        }
    }
}
