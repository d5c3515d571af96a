//! Projects as stored: a new project written with its request and its
//! dispense job; a project's moves with their jobs. Who may create, see
//! or move one is the application's (`tre-app`).

use sqlx::Row;
use tre_domain::{AccessRequest, Effect, Project, ProjectId, ProjectState, RequestId, Timestamp};

use crate::audit::{self, AuditRecord};
use crate::writes::{Guard, Insert, Statement, Writes};
use crate::{Store, StoreError, StoredRequest, docs, outbox};

/// A new project, as its creation writes it: the project, its request as
/// it records the project (`request_after`), decided on `request_before`,
/// and the dispense it asks for.
pub struct NewProject<'a> {
    pub project: &'a Project,
    pub request_before: &'a StoredRequest,
    pub request_after: &'a AccessRequest,
    pub effect: &'a Effect,
    /// Who started the dispense job.
    pub created_by: &'a str,
    pub audit: AuditRecord<'a>,
    pub at: Timestamp,
}

/// A project's move, decided on the project at `version`: its next state
/// and the jobs it asks for.
pub struct ProjectMove<'a> {
    pub next: &'a Project,
    pub version: i64,
    pub effects: &'a [Effect],
    pub audit: AuditRecord<'a>,
    pub at: Timestamp,
}

impl Store {
    /// Writes a new project, its request as it records the project, the
    /// dispense job and the audit event, if the request is still exactly
    /// `request_before` and approved (else a write conflict).
    pub async fn insert_project(&self, new: NewProject<'_>) -> Result<(), StoreError> {
        let NewProject {
            project,
            request_before,
            request_after,
            effect,
            created_by,
            audit,
            at,
        } = new;
        let request_id = &project.request_id;
        let guard = Statement {
            sql: "UPDATE requests SET doc = $1, version = version + 1, updated_at = $2 \
                  WHERE id = $3 AND version = $4 AND doc = $5 AND state = 'approved'",
            args: vec![
                docs::encode(request_after).into(),
                at.0.into(),
                request_id.as_str().into(),
                request_before.version.into(),
                request_before.doc.clone().into(),
            ],
        };
        let row = Insert::new(
            "INSERT INTO projects (id, request_id, environment_id, state, doc, version, created_at, updated_at)",
            "",
        )
        .row(vec![
            project.id.as_str().into(),
            request_id.as_str().into(),
            project.environment_id.as_str().into(),
            project.state.as_str().into(),
            docs::encode(project).into(),
            1.into(),
            at.0.into(),
            at.0.into(),
        ]);
        self.write(
            Writes::new(audit, at)
                .guard(Guard::Changes(guard), format!("request {request_id}"))
                .insert(row)
                .insert(outbox::insert(std::slice::from_ref(effect), created_by, at)),
        )
        .await
    }

    /// A project as stored, and its version.
    pub async fn project_with_version(&self, id: &ProjectId) -> Result<(Project, i64), StoreError> {
        self.load_project(id).await
    }

    /// A project and its environment, as stored.
    pub async fn project_in_environment(
        &self,
        id: &ProjectId,
    ) -> Result<(Project, tre_domain::Environment), StoreError> {
        let (project, _) = self.load_project(id).await?;
        let (environment, _) = self
            .load_environment(&self.pool, &project.environment_id)
            .await?;
        Ok((project, environment))
    }

    /// Writes a project's move if the project is still at `version` (else
    /// a write conflict): its next state, its jobs, and, when it ended,
    /// the end of its workspaces, with its audit event, in one transaction.
    pub async fn save_project_move(&self, change: ProjectMove<'_>) -> Result<(), StoreError> {
        let ProjectMove {
            next,
            version,
            effects,
            audit,
            at,
        } = change;
        let id = &next.id;
        let mut tx = self.begin().await?;
        let updated = sqlx::query(
            "UPDATE projects SET state = $1, doc = $2, version = version + 1, updated_at = $3 WHERE id = $4 AND version = $5",
        )
        .bind(next.state.as_str())
        .bind(docs::encode(next))
        .bind(at.0)
        .bind(id.as_str())
        .bind(version)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::WriteConflict(format!("project {id}")));
        }
        outbox::enqueue(&mut tx, effects, "", at).await?;
        // an ended project's workspaces end with it, in this transaction
        if matches!(next.state, ProjectState::Revoked | ProjectState::Expired) {
            crate::workspaces::end_all(&mut tx, id, at).await?;
        }
        audit::append(&mut tx, audit, at).await?;
        self.commit(tx).await
    }

    pub(crate) async fn load_project(&self, id: &ProjectId) -> Result<(Project, i64), StoreError> {
        docs::load(
            &self.pool,
            "SELECT doc, version FROM projects WHERE id = $1",
            "project",
            id.as_str(),
        )
        .await
    }

    /// The project of a request, if one was created (as stored: who may see it is the application's).
    pub async fn project_of_request(&self, id: &RequestId) -> Result<Option<Project>, StoreError> {
        let row = sqlx::query("SELECT id, doc FROM projects WHERE request_id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            let id: String = r.try_get(0)?;
            let doc: String = r.try_get(1)?;
            docs::decode("project", &id, &doc)
        })
        .transpose()
    }
}
