//! What an environment's admins see of the projects made from it: state,
//! dispense progress, why a dispense failed, and who has access to what
//! until when; never the data, its manifest or its objects.

use serde::Serialize;
use sqlx::Row;
use tre_domain::{AccessRequest, EnvironmentId, Project, Timestamp};

use crate::{DispenseProgress, Store, StoreError, docs};

/// What a project gives access to: its approved request's title,
/// collections and end.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ProjectGrant {
    pub request_title: String,
    pub collections: Vec<String>,
    /// When the access ends.
    pub expires_at: Option<Timestamp>,
}

/// A project as its environment's admins oversee it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ProjectOverview {
    #[serde(flatten)]
    pub project: Project,
    pub progress: DispenseProgress,
    pub access: ProjectGrant,
}

impl Store {
    /// The projects made from environment `id`, each with its request, in
    /// id order after `after`: at most `limit + 1` (one more shows there
    /// are more).
    pub async fn environment_project_rows(
        &self,
        id: &EnvironmentId,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(Project, AccessRequest)>, StoreError> {
        let rows = sqlx::query(
            "SELECT p.id, p.doc, r.doc AS request FROM projects p JOIN requests r ON r.id = p.request_id \
             WHERE p.environment_id = $1 AND p.id > $2 ORDER BY p.id LIMIT $3",
        )
        .bind(id.as_str())
        .bind(after)
        .bind(i64::try_from(limit + 1).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let project_id: String = row.try_get(0)?;
            let project: Project =
                docs::decode("project", &project_id, &row.try_get::<String, _>(1)?)?;
            let request: AccessRequest = docs::decode(
                "request",
                project.request_id.as_str(),
                &row.try_get::<String, _>(2)?,
            )?;
            out.push((project, request));
        }
        Ok(out)
    }
}
