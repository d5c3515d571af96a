//! Projects: created from approved requests by their requesters, seen by
//! their members, moved by the job runtime (dispensing, revocation,
//! expiry) and resumed by operators.

use serde_json::json;
use tre_domain::{Action, Object, Project, ProjectCommand, ProjectId, RequestId, authorize};
use tre_store::{AuditRecord, NewProject, ProjectMove, StoreError};

use crate::{App, Caller, System, Who};

impl App {
    /// Creates the project of an approved request and enqueues its
    /// dispense.
    ///
    /// The request records its project in the same write, guarded by the
    /// request's version and exact document: a revocation or expiry that
    /// commits first makes this write fail (and the command, redone on a
    /// fresh read, refuse), and one that commits after sees the project, so
    /// the two can never both commit unseen by each other. One project per
    /// request; none past the request's end date, nor for an owner who is
    /// no longer an authorized user of the environment.
    pub async fn create_project(
        &self,
        caller: &Caller,
        request_id: &RequestId,
    ) -> Result<Project, StoreError> {
        let created = self
            .store
            .retrying(|| async {
                // never a copy: this decides who receives data
                let current = self.store.request_in_environment(request_id).await?;
                let (request, env) = (&current.stored.request, &current.env);
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
                    .store
                    .user(request.owner.as_str())
                    .await?
                    .ok_or_else(|| StoreError::not_found("user", request.owner.as_str()))?
                    .actor();
                let at = tre_store::now();
                let (project, recorded, effect) = Project::create(
                    ProjectId(tre_store::new_id()),
                    request,
                    env,
                    &owner,
                    &caller.actor.id,
                    at,
                )?;
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
                self.store
                    .insert_project(NewProject {
                        project: &project,
                        request_before: &current.stored,
                        request_after: &recorded,
                        effect: &effect,
                        created_by: caller.actor.id.as_str(),
                        audit,
                        at,
                    })
                    .await?;
                Ok(project)
            })
            .await;
        // the request changed: this process's copy of it is stale
        self.requests.forget(request_id.as_str());
        created
    }

    /// A project as `who` may see it: a person, if a member while an
    /// authorized user of its environment (nobody else, admins included);
    /// the job runtime, any.
    pub async fn project<'a>(
        &self,
        who: impl Into<Who<'a>>,
        id: &ProjectId,
    ) -> Result<Project, StoreError> {
        match who.into() {
            Who::Person(caller) => Ok(self.project_for(caller, id, Action::ViewProject).await?.0),
            Who::System(_) => self.store.project(id).await,
        }
    }

    /// The project of a request, if one was created: for the job runtime
    /// (revoking or expiring it with its request).
    pub async fn project_of_request(
        &self,
        _system: &System,
        request: &RequestId,
    ) -> Result<Option<Project>, StoreError> {
        self.store.project_of_request(request).await
    }

    /// Moves a project for the job runtime: dispensing started or done,
    /// failed, revoked, expired, deprovisioned.
    pub async fn project_command(
        &self,
        system: &System,
        id: &ProjectId,
        command: ProjectCommand,
    ) -> Result<Project, StoreError> {
        self.move_project(id, command, "system", &system.trace_id)
            .await
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
        self.store
            .retrying(|| async {
                let (project, version) = self.store.project_with_version(id).await?;
                let (next, effects) = project.apply(command.clone())?;
                let at = tre_store::now();
                let audit = AuditRecord {
                    actor,
                    action: command.action(),
                    object_type: "project",
                    object_id: id.as_str(),
                    environment_id: project.environment_id.as_str(),
                    details: json!({"from": project.state, "to": next.state, "failure": next.failure}),
                    trace_id,
                    claim: None,
                };
                self.store
                    .save_project_move(ProjectMove {
                        next: &next,
                        version,
                        effects: &effects,
                        audit,
                        at,
                    })
                    .await?;
                Ok(next)
            })
            .await
    }
}
