//! The job runtime's persistence on SQL: [`SqlJobStore`], the adapter of
//! the [`JobStore`] port, on SQLite or PostgreSQL through sqlx's `Any`
//! driver.
//!
//! It needs none of the governance tables. On a database of its own,
//! [`SqlJobStore::open`] makes just its tables (`migrations/jobs.sql`);
//! beside the governance it serves, the store hands it its own pool
//! ([`SqlJobStore::on_pool`]), so that commands write their jobs in their
//! own transactions. `tre-jobs`'s `tests/job_store.rs` is the port's
//! conformance suite, run on both databases.
//!
//! [`SqlPool`] is how tre opens a pool on either database (the store opens
//! its pool the same way).

mod error;
mod housekeeping;
mod outbox;
mod pool;
mod port;
mod statements;

use sqlx::AnyPool;

pub use error::{SqlJobError, sql_conflict, sql_unavailable};
pub use housekeeping::delete_in_batches;
pub use outbox::job_from_row;
pub use pool::{Backend, SqlPool};
pub use tre_jobs::JobStore;

/// The tables and indexes of the job runtime, each made only when missing:
/// the same as the store's migrations leave them (a test compares them).
pub(crate) const JOB_TABLES: &str = include_str!("../migrations/jobs.sql");

/// The job runtime's statements on one pool.
#[derive(Debug, Clone)]
pub struct SqlJobStore {
    pool: AnyPool,
    backend: Backend,
}

impl SqlJobStore {
    /// The runtime's persistence on a pool opened already (the store's).
    pub fn on_pool(pool: AnyPool, backend: Backend) -> Self {
        Self { pool, backend }
    }

    /// Connects to `url` (a SQLite file, made when missing, or PostgreSQL)
    /// and makes the job tables that are missing; nothing else.
    pub async fn open(url: &str) -> Result<Self, SqlJobError> {
        let opened = SqlPool::connect(url, None, std::time::Duration::from_secs(10)).await?;
        let jobs = Self::on_pool(opened.pool, opened.backend);
        jobs.make_tables().await?;
        Ok(jobs)
    }

    /// Makes the job tables and indexes that are missing.
    pub async fn make_tables(&self) -> Result<(), SqlJobError> {
        sqlx::raw_sql(sqlx::AssertSqlSafe(JOB_TABLES))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Closes the pool (every handle sharing it).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A stored payload as JSON; unreadable text is a corrupt job, never a
/// guess.
pub(crate) fn decode_payload(key: &str, text: &str) -> Result<serde_json::Value, SqlJobError> {
    serde_json::from_str(text).map_err(|e| SqlJobError::Corrupt {
        key: key.to_owned(),
        message: e.to_string(),
    })
}
