//! The reviewers' selection summary: the true counts of each submission
//! round, written by the cohort count job, and read back (released under
//! the environment's disclosure rules by the application, for those who
//! may see the request).

use std::collections::HashMap;

use sqlx::Row;
use tre_domain::disclosure::DisclosureRules;
use tre_domain::summary::{self, SelectionCounts, SelectionSummary};
use tre_domain::{AccessRequest, EnvironmentId, RequestId};

use crate::{Store, StoreError, now};

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

    /// The true counts of a submission round, as the cohort count job
    /// recorded them; `None` until it has.
    pub async fn selection_counts(
        &self,
        id: &RequestId,
        round: u32,
    ) -> Result<Option<SelectionCounts>, StoreError> {
        let row =
            sqlx::query("SELECT body FROM request_summaries WHERE request_id = $1 AND round = $2")
                .bind(id.as_str())
                .bind(i64::from(round))
                .fetch_optional(&self.pool)
                .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let body: String = row.try_get(0)?;
        serde_json::from_str(&body)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                object: "selection summary",
                id: id.to_string(),
                message: e.to_string(),
            })
    }

    /// The summaries of the current rounds of `requests`, which the caller
    /// has already been allowed to see as they are (a review queue): one
    /// query for all. A request whose round is not counted yet has none.
    pub async fn summaries_for(
        &self,
        requests: &[AccessRequest],
    ) -> Result<HashMap<RequestId, SelectionSummary>, StoreError> {
        let mut out = HashMap::new();
        if requests.is_empty() {
            return Ok(out);
        }
        let placeholders: Vec<String> = (1..=requests.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT request_id, round, body FROM request_summaries WHERE request_id IN ({})",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for request in requests {
            query = query.bind(request.id.as_str());
        }
        let rows = query.fetch_all(&self.pool).await?;
        let mut rules: HashMap<EnvironmentId, DisclosureRules> = HashMap::new();
        for row in rows {
            let id: String = row.try_get(0)?;
            let round: i64 = row.try_get(1)?;
            let Some(request) = requests
                .iter()
                .find(|r| r.id.as_str() == id && i64::from(r.round) == round)
            else {
                continue; // an earlier round's
            };
            let body: String = row.try_get(2)?;
            let counts: SelectionCounts =
                serde_json::from_str(&body).map_err(|e| StoreError::Corrupt {
                    object: "selection summary",
                    id: id.clone(),
                    message: e.to_string(),
                })?;
            if !rules.contains_key(&request.environment_id) {
                let env = self.environment(&request.environment_id).await?;
                rules.insert(
                    request.environment_id.clone(),
                    DisclosureRules::of(&env.policies),
                );
            }
            out.insert(
                request.id.clone(),
                summary::release(
                    &counts,
                    request.selection.as_ref(),
                    &rules[&request.environment_id],
                ),
            );
        }
        Ok(out)
    }
}
