//! A project's dispensed data as its members reach it: the objects its
//! manifest lists (nothing else is ever named or served), and every read
//! authorized under the environment's `download` policy and audited. A
//! project that ended (revoked, expired) is gone: 410 at once.

use serde_json::json;
use tre_domain::{
    Action, DomainError, Environment, Object, Project, ProjectId, ProjectState, authorize,
    check_object_path,
};
use tre_store::{AuditRecord, ObjectRead, Page, ProjectAccess, ProjectObject, StoreError};

use crate::{App, Caller};

/// Whether `caller` may do `action` on `project` of `environment`.
pub(crate) fn may(
    caller: &Caller,
    action: Action,
    environment: &Environment,
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

impl App {
    /// A project and its environment, once `caller` may do `action` on it.
    pub(crate) async fn project_for(
        &self,
        caller: &Caller,
        id: &ProjectId,
        action: Action,
    ) -> Result<(Project, Environment), StoreError> {
        let (project, environment) = self.store.project_in_environment(id).await?;
        may(caller, action, &environment, &project)?;
        Ok((project, environment))
    }

    /// Who read how much of the project's data, for the environment's
    /// admins (and platform admins): the project's reads in the audit log,
    /// counted per reader. Others learn nothing (as for the audit log).
    pub async fn project_access(
        &self,
        caller: &Caller,
        id: &ProjectId,
    ) -> Result<Vec<ProjectAccess>, StoreError> {
        // a workspace, like anyone who is not an admin, learns nothing
        let (_, environment) = self.store.project_in_environment(id).await?;
        authorize(
            &caller.actor,
            Action::ViewAudit,
            &Object::Environment(&environment),
        )
        .map_err(|d| StoreError::denied("project", id.as_str(), d))?;
        self.store.project_reads(id).await
    }

    /// The project's objects, `limit` at a time after `cursor` (a path):
    /// for its members. Gone once the project ended; a conflict before its
    /// data is ready.
    pub async fn project_objects(
        &self,
        caller: &Caller,
        id: &ProjectId,
        cursor: &str,
        limit: usize,
    ) -> Result<Page<ProjectObject>, StoreError> {
        let (objects, _) = self
            .readable_objects(caller, id, Action::ViewProject)
            .await?;
        let after: Vec<ProjectObject> = objects
            .into_iter()
            .filter(|o| o.path.as_str() > cursor)
            .take(limit + 1)
            .collect();
        Ok(Page::cut(after, limit, |o| o.path.clone()))
    }

    /// Authorizes reading one object of the project under the environment's
    /// `download` policy and records the read in the audit log (who, which
    /// object, its size, how long its URL lives) before anything is served.
    pub async fn read_project_object(
        &self,
        caller: &Caller,
        id: &ProjectId,
        path: &str,
    ) -> Result<ObjectRead, StoreError> {
        check_object_path(path)?;
        let (objects, environment) = self
            .readable_objects(caller, id, Action::ReadProjectData)
            .await?;
        let object = objects
            .into_iter()
            .find(|o| o.path == path)
            .ok_or_else(|| StoreError::not_found("object", path))?;
        let url_minutes = environment.policies.access_url_minutes;
        let at = tre_store::now();
        let expires_at = at.0 + i64::from(url_minutes) * 60_000;
        let audit = AuditRecord {
            actor: caller.actor.id.as_str(),
            action: "project.object_read",
            object_type: "project",
            object_id: id.as_str(),
            environment_id: environment.id.as_str(),
            details: json!({
                "object": object.path,
                "bytes": object.bytes,
                "url_expires_at": expires_at,
            }),
            trace_id: &caller.trace_id,
            claim: caller.idempotency.as_ref(),
        };
        self.store.record_object_read(audit, at).await?;
        Ok(ObjectRead {
            object,
            url_minutes,
        })
    }

    /// The objects of a project the caller may `action` on, with its
    /// environment.
    async fn readable_objects(
        &self,
        caller: &Caller,
        id: &ProjectId,
        action: Action,
    ) -> Result<(Vec<ProjectObject>, Environment), StoreError> {
        // membership first: who may not know the project learns nothing,
        // not even that it ended
        let (project, environment) = self.project_for(caller, id, Action::ViewProject).await?;
        not_ended(&project)?;
        match project.state {
            ProjectState::Ready => {}
            other => {
                return Err(DomainError::Conflict(format!(
                    "the project's data is not ready (state {other})"
                ))
                .into());
            }
        }
        may(caller, action, &environment, &project)?;
        Ok((self.store.manifest_objects(id).await?, environment))
    }
}
