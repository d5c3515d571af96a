//! A project's workspaces as stored: the compute its members register to
//! analyse the data. Each is a service identity bound to that one project
//! (its tokens see the project and read its data as the environment's
//! `download` policy allows, and reach nothing else: `tre_domain::authz`),
//! written with its first token and audit event, and all ended in the same
//! transaction as the project's revocation or expiry. Who may make, list
//! or revoke them is the application's (`tre-app`: the project's members).

use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::Row;
use tre_domain::{DomainError, ProjectId, Timestamp, UserId};

use crate::audit::{self, AuditRecord};
use crate::tokens::{TokenInfo, bump_epoch};
use crate::users::{hash_token, new_token};
use crate::{Store, StoreError, Tx, now};

/// One workspace of a project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Workspace {
    pub project_id: ProjectId,
    /// Unique in the project: 1 to 20 of `A-Z a-z 0-9 _ -`.
    pub name: String,
    /// The identity its tokens act as.
    pub user_id: UserId,
    pub created_by: UserId,
    pub created_at: Timestamp,
    /// When it was revoked (by a member, or with the project); its tokens
    /// are refused from then on.
    pub revoked_at: Option<Timestamp>,
}

/// A workspace to register.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWorkspace {
    /// 1 to 20 of `A-Z a-z 0-9 _ -`, unique in the project.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]{1,20}$"))]
    pub name: String,
}

/// Refuses a workspace name that is not 1 to 20 of `A-Z a-z 0-9 _ -`.
pub fn check_workspace_name(name: &str) -> Result<(), DomainError> {
    let ok = (1..=20).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(DomainError::invalid(
            "name",
            "must be 1 to 20 of A-Z a-z 0-9 _ -",
        ))
    }
}

fn workspace_from_row(row: &sqlx::any::AnyRow) -> Result<Workspace, StoreError> {
    Ok(Workspace {
        project_id: ProjectId(row.try_get("project_id")?),
        name: row.try_get("name")?,
        user_id: UserId(row.try_get("user_id")?),
        created_by: UserId(row.try_get("created_by")?),
        created_at: Timestamp(row.try_get("created_at")?),
        revoked_at: row.try_get::<Option<i64>, _>("revoked_at")?.map(Timestamp),
    })
}

/// Ends every workspace of `project` in `tx` (the project's revocation or
/// expiry): their identities are disabled and every process told.
pub(crate) async fn end_all(
    tx: &mut Tx,
    project: &ProjectId,
    at: Timestamp,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE workspaces SET revoked_at = $1 WHERE project_id = $2 AND revoked_at IS NULL",
    )
    .bind(at.0)
    .bind(project.as_str())
    .execute(&mut **tx)
    .await?;
    disable_revoked(tx, project, at).await
}

/// Disables the identities of `project`'s workspaces revoked at `at` (in
/// `tx`, just before) and tells every process, so their tokens are refused.
async fn disable_revoked(
    tx: &mut Tx,
    project: &ProjectId,
    at: Timestamp,
) -> Result<(), StoreError> {
    let disabled = sqlx::query(
        "UPDATE users SET disabled_at = $1 WHERE disabled_at IS NULL AND id IN \
         (SELECT user_id FROM workspaces WHERE project_id = $2 AND revoked_at = $1)",
    )
    .bind(at.0)
    .bind(project.as_str())
    .execute(&mut **tx)
    .await?;
    if disabled.rows_affected() > 0 {
        bump_epoch(tx).await?;
    }
    Ok(())
}

impl Store {
    /// Writes workspace `new` of project `id` made by `audit`'s actor: its
    /// identity, its first token (returned with its secret, shown once) and
    /// `audit`, whose details name them; a conflict when the project has a
    /// workspace of that name.
    pub async fn insert_workspace(
        &self,
        id: &ProjectId,
        new: NewWorkspace,
        mut audit: AuditRecord<'_>,
    ) -> Result<(Workspace, TokenInfo, String), StoreError> {
        let created_by = UserId(audit.actor.to_owned());
        let at = now();
        let user = format!("ws.{}.{}", new.name, id.as_str());
        let mut tx = self.begin().await?;
        // the identity first: a workspace refers to it
        sqlx::query(
            "INSERT INTO users (id, platform_admin, groups_json, token_hash, created_at, email, workspace_of) \
             VALUES ($1, 0, '[]', $2, $3, NULL, $4) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&user)
        .bind(hash_token(&new_token()))
        .bind(at.0)
        .bind(id.as_str())
        .execute(&mut *tx)
        .await?;
        let inserted = sqlx::query(
            "INSERT INTO workspaces (project_id, name, user_id, created_by, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (project_id, name) DO NOTHING",
        )
        .bind(id.as_str())
        .bind(&new.name)
        .bind(&user)
        .bind(created_by.as_str())
        .bind(at.0)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(DomainError::Conflict(format!(
                "the project already has a workspace named {:?}",
                new.name
            ))
            .into());
        }
        let (token, secret) = self
            .insert_token(&mut tx, &user, "workspace", None, at)
            .await?;
        audit.details = json!({"workspace": new.name, "identity": user, "token": token.id});
        audit::append(&mut tx, audit, at).await?;
        self.commit(tx).await?;
        let workspace = Workspace {
            project_id: id.clone(),
            name: new.name,
            user_id: UserId(user),
            created_by,
            created_at: at,
            revoked_at: None,
        };
        Ok((workspace, token, secret))
    }

    /// The project's workspaces, revoked ones too, by name.
    pub async fn project_workspaces(&self, id: &ProjectId) -> Result<Vec<Workspace>, StoreError> {
        let rows = sqlx::query(
            "SELECT project_id, name, user_id, created_by, created_at, revoked_at FROM workspaces \
             WHERE project_id = $1 ORDER BY name",
        )
        .bind(id.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(workspace_from_row).collect()
    }

    /// Revokes workspace `name` of project `id` with `audit`: its identity
    /// is disabled and every API process refuses its tokens within a
    /// second. Revoking twice changes nothing (nor audits again).
    pub async fn save_workspace_revocation(
        &self,
        id: &ProjectId,
        name: &str,
        audit: AuditRecord<'_>,
    ) -> Result<Workspace, StoreError> {
        let at = now();
        let mut tx = self.begin().await?;
        let row = sqlx::query(
            "SELECT project_id, name, user_id, created_by, created_at, revoked_at FROM workspaces \
             WHERE project_id = $1 AND name = $2",
        )
        .bind(id.as_str())
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::not_found("workspace", name))?;
        let mut workspace = workspace_from_row(&row)?;
        if workspace.revoked_at.is_some() {
            return Ok(workspace);
        }
        sqlx::query("UPDATE workspaces SET revoked_at = $1 WHERE project_id = $2 AND name = $3")
            .bind(at.0)
            .bind(id.as_str())
            .bind(name)
            .execute(&mut *tx)
            .await?;
        disable_revoked(&mut tx, id, at).await?;
        audit::append(&mut tx, audit, at).await?;
        self.commit(tx).await?;
        workspace.revoked_at = Some(at);
        Ok(workspace)
    }
}
