//! Projects: created from approved requests by their requesters, moved by
//! the job runtime.

use serde_json::json;
use tre_domain::{Action, Object, Project, ProjectCommand, ProjectId, RequestId, authorize};

use crate::audit::{self, AuditRecord};
use crate::{Caller, Store, StoreError, docs, new_id, now, outbox};

impl Store {
    /// Creates the project of an approved request and enqueues its dispense.
    /// One project per request: a second attempt is a conflict.
    pub async fn create_project(
        &self,
        caller: &Caller,
        request_id: &RequestId,
    ) -> Result<Project, StoreError> {
        let mut tx = self.begin().await?;
        let (request, _) = self.load_request(&mut *tx, request_id).await?;
        let (env, _) = self
            .load_environment(&mut *tx, &request.environment_id)
            .await?;
        authorize(
            &caller.actor,
            Action::CreateProject,
            &Object::Request {
                environment: &env,
                request: &request,
            },
        )
        .map_err(|d| StoreError::denied("request", request_id.as_str(), d))?;
        let at = now();
        let (project, effect) =
            Project::create(ProjectId(new_id()), &request, &env, &caller.actor.id, at)?;
        let inserted = sqlx::query(
            "INSERT INTO projects (id, request_id, environment_id, state, doc, version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 1, $6, $6) ON CONFLICT (request_id) DO NOTHING",
        )
        .bind(project.id.as_str())
        .bind(request_id.as_str())
        .bind(env.id.as_str())
        .bind(project.state.as_str())
        .bind(docs::encode(&project))
        .bind(at.0)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(tre_domain::DomainError::Conflict(format!(
                "request {request_id} already has a project"
            ))
            .into());
        }
        outbox::enqueue(&mut tx, &[effect], caller.actor.id.as_str(), at).await?;
        audit::append(
            &mut tx,
            AuditRecord {
                actor: caller.actor.id.as_str(),
                action: "project.create",
                object_type: "project",
                object_id: project.id.as_str(),
                environment_id: env.id.as_str(),
                details: json!({"request": request_id, "inventory_version": project.inventory_version, "members": project.members}),
                trace_id: &caller.trace_id,
            },
            at,
        )
        .await?;
        self.commit(tx).await?;
        Ok(project)
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

    /// A project its members may see (nobody else, admins included).
    pub async fn project(&self, caller: &Caller, id: &ProjectId) -> Result<Project, StoreError> {
        let (project, _) = self.load_project(id).await?;
        authorize(
            &caller.actor,
            Action::ViewProject,
            &Object::Project(&project),
        )
        .map_err(|d| StoreError::denied("project", id.as_str(), d))?;
        Ok(project)
    }

    /// Moves a project on behalf of the job runtime (`system`).
    pub async fn project_command(
        &self,
        id: &ProjectId,
        command: ProjectCommand,
        trace_id: &str,
    ) -> Result<Project, StoreError> {
        self.retrying(|| async {
            let (project, version) = self.load_project(id).await?;
            let (next, effects) = project.apply(command.clone())?;
            let at = now();
            let mut tx = self.begin().await?;
            let updated = sqlx::query(
                "UPDATE projects SET state = $1, doc = $2, version = version + 1, updated_at = $3 WHERE id = $4 AND version = $5",
            )
            .bind(next.state.as_str())
            .bind(docs::encode(&next))
            .bind(at.0)
            .bind(id.as_str())
            .bind(version)
            .execute(&mut *tx)
            .await?;
            if updated.rows_affected() == 0 {
                return Err(StoreError::WriteConflict(format!("project {id}")));
            }
            outbox::enqueue(&mut tx, &effects, "", at).await?;
            audit::append(
                &mut tx,
                AuditRecord {
                    actor: "system",
                    action: command.action(),
                    object_type: "project",
                    object_id: id.as_str(),
                    environment_id: project.environment_id.as_str(),
                    details: json!({"from": project.state, "to": next.state, "failure": next.failure}),
                    trace_id,
                },
                at,
            )
            .await?;
            self.commit(tx).await?;
            Ok(next)
        })
        .await
    }
}
