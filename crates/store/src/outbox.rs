//! The job outbox: effects written in the same transaction as the state
//! change that asks for them. The job runtime relays due rows to the queue
//! and marks them done; until then they stay here, so losing the queue loses
//! no work.

use serde::Serialize;
use serde_json::Value;
use sqlx::Row;
use tre_domain::{Effect, JobState, Timestamp};

use crate::writes::Insert;
use crate::{SqlJobStore, Store, StoreError, Tx};

/// One stored job.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct OutboxJob {
    /// The deterministic idempotency key (see [`Effect::key`]).
    pub key: String,
    pub kind: String,
    pub payload: Value,
    pub state: JobState,
    pub attempts: i64,
    pub due_at: i64,
    pub created_at: i64,
    pub last_error: Option<String>,
}

/// The insert of `effects`; an effect whose key is already stored is not
/// written again.
pub(crate) fn insert(effects: &[Effect], created_by: &str, now: Timestamp) -> Insert {
    effects.iter().fold(
        Insert::new(
            "INSERT INTO outbox (job_key, kind, payload, state, attempts, due_at, created_at, updated_at, created_by)",
            "ON CONFLICT (job_key) DO NOTHING",
        ),
        |insert, effect| {
            insert.row(vec![
                effect.key().into(),
                effect.kind().into(),
                serde_json::to_string(effect)
                    .expect("effects serialize")
                    .into(),
                JobState::Pending.as_str().into(),
                0.into(),
                effect.due_at().unwrap_or(now).0.into(),
                now.0.into(),
                now.0.into(),
                created_by.into(),
            ])
        },
    )
}

/// Writes effects inside the caller's transaction (see [`insert`]).
pub(crate) async fn enqueue(
    tx: &mut Tx,
    effects: &[Effect],
    created_by: &str,
    now: Timestamp,
) -> Result<(), StoreError> {
    insert(effects, created_by, now).execute(tx).await
}

pub(crate) fn job_from_row(row: &sqlx::any::AnyRow) -> Result<OutboxJob, StoreError> {
    let key: String = row.try_get("job_key")?;
    let payload: String = row.try_get("payload")?;
    let state: String = row.try_get("state")?;
    let state = JobState::parse(&state).ok_or_else(|| StoreError::Corrupt {
        object: "outbox job",
        id: key.clone(),
        message: format!("unknown state {state:?}"),
    })?;
    Ok(OutboxJob {
        payload: crate::docs::decode("outbox job", &key, &payload)?,
        key,
        kind: row.try_get("kind")?,
        state,
        attempts: row.try_get("attempts")?,
        due_at: row.try_get("due_at")?,
        created_at: row.try_get("created_at")?,
        last_error: row.try_get("last_error")?,
    })
}

impl Store {
    /// Jobs in the outbox, oldest first; `state` filters.
    pub async fn outbox_jobs(
        &self,
        state: Option<JobState>,
        limit: u32,
    ) -> Result<Vec<OutboxJob>, StoreError> {
        let rows = sqlx::query(
            "SELECT job_key, kind, payload, state, attempts, due_at, created_at, last_error FROM outbox \
             WHERE ($1 = '' OR state = $1) ORDER BY created_at, job_key LIMIT $2",
        )
        .bind(state.map_or("", JobState::as_str))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_from_row).collect()
    }
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
    ) -> Result<bool, StoreError> {
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
    ) -> Result<u64, StoreError> {
        let now = crate::now();
        let mut added = 0;
        // 9 parameters a row: far under both databases' limits
        for chunk in jobs.chunks(500) {
            let insert = chunk.iter().fold(
                Insert::new(
                    "INSERT INTO outbox (job_key, kind, payload, state, attempts, due_at, created_at, updated_at, created_by)",
                    "ON CONFLICT (job_key) DO NOTHING",
                ),
                |insert, (kind, key, payload, due)| {
                    insert.row(vec![
                        key.as_str().into(),
                        (*kind).into(),
                        payload.to_string().into(),
                        JobState::Pending.as_str().into(),
                        0.into(),
                        due.0.into(),
                        now.0.into(),
                        now.0.into(),
                        "".into(),
                    ])
                },
            );
            added += insert.execute_on(&self.pool).await?;
        }
        Ok(added)
    }

    /// One stored job.
    pub async fn job(&self, key: &str) -> Result<Option<OutboxJob>, StoreError> {
        let row = sqlx::query(
            "SELECT job_key, kind, payload, state, attempts, due_at, created_at, last_error FROM outbox WHERE job_key = $1",
        )
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(job_from_row).transpose()
    }
}
