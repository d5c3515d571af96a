//! The showcase's stored side: each environment's secret for record keys,
//! and the true aggregates of each inventory version. Nothing here is
//! released as it is: [`Store::showcase`] applies the environment's
//! disclosure rules to what it reads.

use serde::Serialize;
use sqlx::Row;
use tre_domain::disclosure::DisclosureRules;
use tre_domain::showcase::{self, Showcase, ShowcaseAggregates};
use tre_domain::{Action, EnvironmentId, Object, authorize};

use crate::{Caller, Store, StoreError, now};

/// What `GET /v1/environments/{id}/showcase` answers.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ShowcaseView {
    pub environment: EnvironmentId,
    /// The environment's current inventory version.
    pub current_version: u32,
    /// The current version's aggregates are still being computed: `showcase`
    /// (when present) is an earlier version's.
    pub computing: bool,
    /// The released showcase of the newest computed version up to the
    /// current one; absent until the first is computed.
    pub showcase: Option<Showcase>,
}

impl Store {
    /// The environment's secret for participants' record keys, created on
    /// first use (system use: the showcase job and the cohort builder).
    pub async fn showcase_secret(
        &self,
        environment: &EnvironmentId,
    ) -> Result<Vec<u8>, StoreError> {
        let mut fresh = [0u8; 32];
        getrandom::fill(&mut fresh)
            .map_err(|e| StoreError::Config(format!("no randomness for a secret: {e}")))?;
        sqlx::query(
            "INSERT INTO showcase_secrets (environment_id, secret, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (environment_id) DO NOTHING",
        )
        .bind(environment.as_str())
        .bind(hex::encode(fresh))
        .bind(now().0)
        .execute(&self.pool)
        .await?;
        let stored: String =
            sqlx::query_scalar("SELECT secret FROM showcase_secrets WHERE environment_id = $1")
                .bind(environment.as_str())
                .fetch_one(&self.pool)
                .await?;
        hex::decode(stored).map_err(|e| StoreError::Corrupt {
            object: "showcase secret",
            id: environment.to_string(),
            message: e.to_string(),
        })
    }

    /// Records the aggregates of one inventory version; the first write
    /// wins (the computation is deterministic, a retried job writes the
    /// same).
    pub async fn save_showcase_aggregates(
        &self,
        environment: &EnvironmentId,
        aggregates: &ShowcaseAggregates,
    ) -> Result<(), StoreError> {
        let body = serde_json::to_string(aggregates).expect("aggregates serialize");
        sqlx::query(
            "INSERT INTO showcase_aggregates (environment_id, version, body, computed_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (environment_id, version) DO NOTHING",
        )
        .bind(environment.as_str())
        .bind(i64::from(aggregates.version))
        .bind(body)
        .bind(now().0)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The true aggregates of the newest computed version at or below
    /// `version` (system use).
    pub async fn showcase_aggregates(
        &self,
        environment: &EnvironmentId,
        version: u32,
    ) -> Result<Option<ShowcaseAggregates>, StoreError> {
        let row = sqlx::query(
            "SELECT body FROM showcase_aggregates WHERE environment_id = $1 AND version <= $2 \
             ORDER BY version DESC LIMIT 1",
        )
        .bind(environment.as_str())
        .bind(i64::from(version))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            let body: String = row.try_get(0)?;
            serde_json::from_str(&body).map_err(|e| StoreError::Corrupt {
                object: "showcase aggregates",
                id: environment.to_string(),
                message: e.to_string(),
            })
        })
        .transpose()
    }

    /// The environment's showcase as the caller may see it: released under
    /// its disclosure rules, never a true count.
    pub async fn showcase(
        &self,
        caller: &Caller,
        id: &EnvironmentId,
    ) -> Result<ShowcaseView, StoreError> {
        let (env, _) = self.load_environment(&self.pool, id).await?;
        authorize(
            &caller.actor,
            Action::ViewShowcase,
            &Object::Environment(&env),
        )
        .map_err(|d| StoreError::denied("environment", id.as_str(), d))?;
        let current_version = env.inventory.as_ref().map_or(0, |i| i.version);
        let aggregates = self.showcase_aggregates(id, current_version).await?;
        let rules = DisclosureRules::of(&env.policies);
        Ok(ShowcaseView {
            environment: id.clone(),
            current_version,
            computing: aggregates
                .as_ref()
                .is_none_or(|a| a.version != current_version),
            showcase: aggregates.map(|a| showcase::release(&a, &rules)),
        })
    }
}
