//! The job outbox: effects written in the same transaction as the state
//! change that asks for them. The job runtime relays due rows to the queue
//! and marks them done; until then they stay here, so losing the queue loses
//! no work.

use tre_domain::{Effect, Timestamp};
use tre_jobs::{JobState, OutboxJob};
use tre_jobs_sql::job_from_row;

use crate::writes::Insert;
use crate::{Store, StoreError, Tx};

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
        Ok(rows.iter().map(job_from_row).collect::<Result<_, _>>()?)
    }
}
