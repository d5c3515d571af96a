//! The reviewers' selection summary: the true counts of each submission
//! round, written by the cohort count job, and read back released under the
//! environment's disclosure rules by those who may see the request.

use sqlx::Row;
use tre_domain::RequestId;
use tre_domain::disclosure::DisclosureRules;
use tre_domain::summary::{self, SelectionCounts, SelectionSummary};

use crate::{Caller, Store, StoreError, now};

impl Store {
    /// Records a round's counts; the first write wins (a retried job
    /// counts the same).
    pub async fn save_selection_counts(
        &self,
        request: &RequestId,
        counts: &SelectionCounts,
    ) -> Result<(), StoreError> {
        let body = serde_json::to_string(counts).expect("counts serialize");
        sqlx::query(
            "INSERT INTO request_summaries (request_id, round, body, computed_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (request_id, round) DO NOTHING",
        )
        .bind(request.as_str())
        .bind(i64::from(counts.round))
        .bind(body)
        .bind(now().0)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The selection summary of the request's current round, for those who
    /// may see the request (owner, collaborators, reviewers, the
    /// environment's admins; the admins without the selection's fields).
    /// `None` until the round's cohort is counted.
    pub async fn selection_summary(
        &self,
        caller: &Caller,
        id: &RequestId,
    ) -> Result<Option<SelectionSummary>, StoreError> {
        let request = self.request(caller, id).await?;
        let row =
            sqlx::query("SELECT body FROM request_summaries WHERE request_id = $1 AND round = $2")
                .bind(id.as_str())
                .bind(i64::from(request.round))
                .fetch_optional(&self.pool)
                .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let body: String = row.try_get(0)?;
        let counts: SelectionCounts =
            serde_json::from_str(&body).map_err(|e| StoreError::Corrupt {
                object: "selection summary",
                id: id.to_string(),
                message: e.to_string(),
            })?;
        let env = self.system_environment(&request.environment_id).await?;
        Ok(Some(summary::release(
            &counts,
            request.selection.as_ref(),
            &DisclosureRules::of(&env.policies),
        )))
    }
}
