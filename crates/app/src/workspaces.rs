//! A project's workspaces: the compute its members register to analyse the
//! data, each a service identity bound to that one project. Made, listed
//! and revoked by the project's members (never by a workspace), while the
//! project lives; every act audited.

use serde_json::json;
use tre_domain::{Action, Denied, ProjectId};
use tre_store::{
    AuditRecord, NewWorkspace, StoreError, TokenInfo, Workspace, check_workspace_name,
};

use crate::project_data::not_ended;
use crate::{App, Caller};

impl App {
    /// Registers a workspace for the project (its members); returns it and
    /// its first token (shown once).
    pub async fn create_workspace(
        &self,
        caller: &Caller,
        id: &ProjectId,
        new: NewWorkspace,
    ) -> Result<(Workspace, TokenInfo, String), StoreError> {
        check_workspace_name(&new.name)?;
        let environment = self.member_of_live_project(caller, id).await?;
        let audit = AuditRecord {
            actor: caller.actor.id.as_str(),
            action: "project.workspace_create",
            object_type: "project",
            object_id: id.as_str(),
            environment_id: &environment,
            // the store names the identity and token it made
            details: json!({}),
            trace_id: &caller.trace_id,
            claim: caller.idempotency.as_ref(),
        };
        self.store.insert_workspace(id, new, audit).await
    }

    /// The project's workspaces, revoked ones too (its members).
    pub async fn workspaces(
        &self,
        caller: &Caller,
        id: &ProjectId,
    ) -> Result<Vec<Workspace>, StoreError> {
        self.member_of_live_project(caller, id).await?;
        self.store.project_workspaces(id).await
    }

    /// Revokes a workspace (its members): every API process refuses its
    /// tokens within a second. Revoking twice changes nothing.
    pub async fn revoke_workspace(
        &self,
        caller: &Caller,
        id: &ProjectId,
        name: &str,
    ) -> Result<Workspace, StoreError> {
        let environment = self.member_of_live_project(caller, id).await?;
        let audit = AuditRecord {
            actor: caller.actor.id.as_str(),
            action: "project.workspace_revoke",
            object_type: "project",
            object_id: id.as_str(),
            environment_id: &environment,
            details: json!({"workspace": name}),
            trace_id: &caller.trace_id,
            claim: caller.idempotency.as_ref(),
        };
        self.store.save_workspace_revocation(id, name, audit).await
    }

    /// Checks that a person (not a workspace) who is a member of the live
    /// project acts; returns the project's environment id.
    async fn member_of_live_project(
        &self,
        caller: &Caller,
        id: &ProjectId,
    ) -> Result<String, StoreError> {
        let (project, _) = self.project_for(caller, id, Action::ViewProject).await?;
        if caller.actor.workspace_of.is_some() {
            return Err(StoreError::Forbidden(Denied {
                reason: "a workspace cannot manage workspaces",
                conceal: false,
            }));
        }
        not_ended(&project)?;
        Ok(project.environment_id.to_string())
    }
}
