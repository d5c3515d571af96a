//! Projects: created from approved requests by their requesters, moved by
//! the job runtime.

use serde_json::json;
use tre_domain::{
    Action, Object, Project, ProjectCommand, ProjectId, ProjectState, RequestId, authorize,
};

use crate::audit::{self, AuditRecord};
use crate::writes::{Guard, Insert, Statement, Writes};
use crate::{Caller, Store, StoreError, docs, new_id, now, outbox};

/// Whether `caller` may do `action` on `project` of `environment`.
pub(crate) fn may(
    caller: &Caller,
    action: Action,
    environment: &tre_domain::Environment,
    project: &Project,
) -> Result<(), StoreError> {
    authorize(
        &caller.actor,
        action,
        &Object::Project {
            environment,
            project,
        },
    )
    .map_err(|d| StoreError::denied("project", project.id.as_str(), d))
}

impl Store {
    /// Creates the project of an approved request and enqueues its dispense.
    ///
    /// The request records its project in the same write, guarded by the
    /// request's version and exact document: a revocation or expiry that
    /// commits first makes this write fail (and the command, redone on a
    /// fresh read, refuse), and one that commits after sees the project, so
    /// the two can never both commit unseen by each other. One project per
    /// request; none past the request's end date, nor for an owner who is no
    /// longer an authorized user of the environment.
    pub async fn create_project(
        &self,
        caller: &Caller,
        request_id: &RequestId,
    ) -> Result<Project, StoreError> {
        self.retrying(|| async {
            // never a cached copy: this decides who receives data
            let loaded = self.request_in_environment(request_id).await?;
            let (request, env) = (&loaded.stored.request, &loaded.env);
            authorize(
                &caller.actor,
                Action::CreateProject,
                &Object::Request {
                    environment: env,
                    request,
                },
            )
            .map_err(|d| StoreError::denied("request", request_id.as_str(), d))?;
            let owner = self
                .user(request.owner.as_str())
                .await?
                .ok_or_else(|| StoreError::not_found("user", request.owner.as_str()))?
                .actor();
            let at = now();
            let (project, recorded, effect) = Project::create(
                ProjectId(new_id()),
                request,
                env,
                &owner,
                &caller.actor.id,
                at,
            )?;
            let request_doc = docs::encode(&recorded);
            let guard = Statement {
                sql: "UPDATE requests SET doc = $1, version = version + 1, updated_at = $2 \
                      WHERE id = $3 AND version = $4 AND doc = $5 AND state = 'approved'",
                args: vec![
                    request_doc.clone().into(),
                    at.0.into(),
                    request_id.as_str().into(),
                    loaded.stored.version.into(),
                    loaded.stored.doc.clone().into(),
                ],
            };
            let row = Insert::new(
                "INSERT INTO projects (id, request_id, environment_id, state, doc, version, created_at, updated_at)",
                "",
            )
            .row(vec![
                project.id.as_str().into(),
                request_id.as_str().into(),
                env.id.as_str().into(),
                project.state.as_str().into(),
                docs::encode(&project).into(),
                1.into(),
                at.0.into(),
                at.0.into(),
            ]);
            let audit = AuditRecord {
                actor: caller.actor.id.as_str(),
                action: "project.create",
                object_type: "project",
                object_id: project.id.as_str(),
                environment_id: env.id.as_str(),
                details: json!({
                    "request": request_id,
                    "inventory_version": project.inventory_version,
                    "members": project.members,
                    "selection": recorded.selection_digest(),
                }),
                trace_id: &caller.trace_id,
                claim: caller.idempotency.as_ref(),
            };
            self.write(
                Writes::new(audit, at)
                    .guard(Guard::Changes(guard), format!("request {request_id}"))
                    .insert(row)
                    .insert(outbox::insert(
                        std::slice::from_ref(&effect),
                        caller.actor.id.as_str(),
                        at,
                    )),
            )
            .await?;
            Ok(project)
        })
        .await
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

    /// A project its members may see while authorized users of its
    /// environment (nobody else, admins included).
    pub async fn project(&self, caller: &Caller, id: &ProjectId) -> Result<Project, StoreError> {
        Ok(self.project_for(caller, id, Action::ViewProject).await?.0)
    }

    /// A project and its environment, once `caller` may do `action` on it.
    pub(crate) async fn project_for(
        &self,
        caller: &Caller,
        id: &ProjectId,
        action: Action,
    ) -> Result<(Project, tre_domain::Environment), StoreError> {
        let (project, _) = self.load_project(id).await?;
        let (environment, _) = self
            .load_environment(&self.pool, &project.environment_id)
            .await?;
        may(caller, action, &environment, &project)?;
        Ok((project, environment))
    }

    /// Refuses a project that ended (revoked, expired): what it held is no
    /// longer served nor managed.
    pub(crate) fn not_ended(project: &Project) -> Result<(), StoreError> {
        if matches!(project.state, ProjectState::Revoked | ProjectState::Expired) {
            return Err(StoreError::Gone {
                object: "project",
                id: project.id.to_string(),
                state: project.state.to_string(),
            });
        }
        Ok(())
    }

    /// Moves a project on behalf of the job runtime (`system`).
    pub async fn project_command(
        &self,
        id: &ProjectId,
        command: ProjectCommand,
        trace_id: &str,
    ) -> Result<Project, StoreError> {
        self.move_project(id, command, "system", trace_id).await
    }

    /// Resumes a failed dispense (a new round runs its unfinished units):
    /// an operator's act (platform admins), audited under the caller.
    pub async fn retry_project(
        &self,
        caller: &Caller,
        id: &ProjectId,
    ) -> Result<Project, StoreError> {
        authorize(&caller.actor, Action::OperateJobs, &Object::Platform)
            .map_err(StoreError::Forbidden)?;
        self.move_project(
            id,
            ProjectCommand::Retry,
            caller.actor.id.as_str(),
            &caller.trace_id,
        )
        .await
    }

    async fn move_project(
        &self,
        id: &ProjectId,
        command: ProjectCommand,
        actor: &str,
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
            // an ended project's workspaces end with it, in this transaction
            if matches!(next.state, ProjectState::Revoked | ProjectState::Expired) {
                crate::workspaces::end_all(&mut tx, id, at).await?;
            }
            audit::append(
                &mut tx,
                AuditRecord {
                    actor,
                    action: command.action(),
                    object_type: "project",
                    object_id: id.as_str(),
                    environment_id: project.environment_id.as_str(),
                    details: json!({"from": project.state, "to": next.state, "failure": next.failure}),
                    trace_id,
                    claim: None,
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
