//! Environments: created by platform admins, configured and moved between
//! states by their admins, discovered by their authorized users.

use serde_json::json;
use tre_domain::{
    Action, AdminAlert, Effect, Environment, EnvironmentCommand, EnvironmentId, NewEnvironment,
    Object, Principal, UserId, authorize, environment_change,
};
use tre_store::{AuditRecord, EnvironmentChange, StoreError};

use crate::{App, Caller, Who};

/// A summary of a command for the audit log: what changed, never data.
fn audit_details(command: &EnvironmentCommand) -> serde_json::Value {
    match command {
        EnvironmentCommand::UpdateDetails { name, description } => {
            json!({"name": name, "description_changed": description.is_some()})
        }
        EnvironmentCommand::SetInventory(inventory) => json!({
            "datasets": inventory.datasets.iter().map(|d| &d.name).collect::<Vec<_>>(),
            "collections": inventory.collections.iter().map(|c| &c.name).collect::<Vec<_>>(),
        }),
        EnvironmentCommand::SetFiles(files) => {
            json!({"file_inventory": files.id, "files": files.files, "bytes": files.bytes})
        }
        EnvironmentCommand::SetPipeline(pipeline) => json!({"stages": pipeline.stages}),
        EnvironmentCommand::PatchPipeline(patch) => json!({"changed": patch.stages}),
        EnvironmentCommand::SetMembers(members) => json!({"members": members}),
        EnvironmentCommand::ChangeMembers { add, remove } => json!({"add": add, "remove": remove}),
        EnvironmentCommand::SetAdmins(admins) => json!({"admins": admins}),
        EnvironmentCommand::SetPolicies(policies) => json!({"policies": policies}),
        EnvironmentCommand::PatchPolicies(patch) => json!({"changed": patch}),
        EnvironmentCommand::SetVisibility(v) => json!({"visibility": v}),
        EnvironmentCommand::Publish
        | EnvironmentCommand::EnterMaintenance
        | EnvironmentCommand::Reactivate => {
            json!({})
        }
    }
}

/// `env` as `caller` sees it, if they may discover it at all (the one
/// rule of the resource center, whatever chose the environments).
pub(crate) fn discovered(caller: &Caller, env: Environment) -> Option<Environment> {
    authorize(
        &caller.actor,
        Action::DiscoverEnvironment,
        &Object::Environment(&env),
    )
    .is_ok()
    .then(|| env.seen_by(&caller.actor))
}

/// What a command asks of its environment's admins' rights: a change of
/// state or of configuration.
fn action_of(command: &EnvironmentCommand) -> Action {
    if command.changes_state() {
        Action::ChangeEnvironmentState
    } else {
        Action::ConfigureEnvironment
    }
}

impl App {
    /// Creates an environment in `draft` (platform admins only), with the
    /// source root its data lives in.
    pub async fn create_environment(
        &self,
        caller: &Caller,
        new: NewEnvironment,
    ) -> Result<Environment, StoreError> {
        authorize(&caller.actor, Action::CreateEnvironment, &Object::Platform)
            .map_err(StoreError::Forbidden)?;
        self.store.check_source_root(&new.source)?;
        self.store.ensure_users_exist(&new.admins, "admins").await?;
        let env = Environment::create(EnvironmentId(tre_store::new_id()), &caller.actor.id, new)?;
        let audit = AuditRecord {
            actor: caller.actor.id.as_str(),
            action: "environment.create",
            object_type: "environment",
            object_id: env.id.as_str(),
            environment_id: env.id.as_str(),
            details: json!({"name": env.name, "admins": env.admins, "source": env.source}),
            trace_id: &caller.trace_id,
            claim: caller.idempotency.as_ref(),
        };
        self.store
            .insert_environment(&env, audit, tre_store::now())
            .await?;
        Ok(env)
    }

    /// An environment as `who` may see it: a person one they may discover,
    /// as [`Environment::seen_by`] them; the job runtime whole.
    pub async fn environment<'a>(
        &self,
        who: impl Into<Who<'a>>,
        id: &EnvironmentId,
    ) -> Result<Environment, StoreError> {
        match who.into() {
            Who::Person(caller) => self.environment_at(caller, id).await.map(|(env, _)| env),
            Who::System(_) => self.store.environment(id).await,
        }
    }

    /// [`App::environment`] with its revision (what a change made on what
    /// was read names: see [`App::configure_environment_at`]).
    pub async fn environment_at(
        &self,
        caller: &Caller,
        id: &EnvironmentId,
    ) -> Result<(Environment, i64), StoreError> {
        let (env, revision) = self
            .environment_for(caller, id, Action::DiscoverEnvironment)
            .await?;
        Ok((env.seen_by(&caller.actor), revision))
    }

    /// The environment `caller` means to `action` (configure it, change its
    /// state), with its revision, or the refusal the change itself would
    /// get: for what must be prepared before the change (an inventory
    /// checked against the source). Unredacted.
    pub async fn environment_for(
        &self,
        caller: &Caller,
        id: &EnvironmentId,
        action: Action,
    ) -> Result<(Environment, i64), StoreError> {
        let (env, revision) = self.store.environment_with_version(id).await?;
        // an action on an environment the caller may not see is concealed
        // by the rule itself (see `authorize`)
        authorize(&caller.actor, action, &Object::Environment(&env))
            .map_err(|d| StoreError::denied("environment", id.as_str(), d))?;
        Ok((env, revision))
    }

    /// The resource center: every environment the caller may discover, by
    /// name, as they may see it.
    pub async fn list_environments(&self, caller: &Caller) -> Result<Vec<Environment>, StoreError> {
        Ok(self
            .store
            .environments_by_name()
            .await?
            .into_iter()
            .filter_map(|env| discovered(caller, env))
            .collect())
    }

    /// Whether the users a configuration command names exist and the
    /// groups it names have members (a mistyped group would authorize
    /// nobody): the check a change makes first, for dry runs too.
    pub async fn check_people(&self, command: &EnvironmentCommand) -> Result<(), StoreError> {
        let store = &self.store;
        match command {
            EnvironmentCommand::SetAdmins(admins) => {
                store.ensure_users_exist(admins, "admins").await?;
            }
            EnvironmentCommand::SetPipeline(pipeline) => {
                for (i, stage) in pipeline.stages.iter().enumerate() {
                    store
                        .ensure_users_exist(
                            &stage.reviewers,
                            &format!("pipeline.stages[{i}].reviewers"),
                        )
                        .await?;
                }
            }
            EnvironmentCommand::PatchPipeline(patch) => {
                for (i, stage) in patch.stages.iter().enumerate() {
                    store
                        .ensure_users_exist(
                            &stage.add_reviewers,
                            &format!("stages[{i}].add_reviewers"),
                        )
                        .await?;
                }
            }
            EnvironmentCommand::SetMembers(members)
            | EnvironmentCommand::ChangeMembers { add: members, .. } => {
                let field = match command {
                    EnvironmentCommand::ChangeMembers { .. } => "add",
                    _ => "members",
                };
                // collected first: a closure held across the await would make the
                // future's `Send` bound not general enough for axum handlers
                let users: Vec<UserId> = members
                    .iter()
                    .filter_map(|m| match m {
                        Principal::User(u) => Some(u.clone()),
                        Principal::Group(_) => None,
                    })
                    .collect();
                store.ensure_users_exist(&users, field).await?;
                let groups: Vec<String> = members
                    .iter()
                    .filter_map(|m| match m {
                        Principal::Group(g) => Some(g.clone()),
                        Principal::User(_) => None,
                    })
                    .collect();
                store
                    .ensure_groups_in_use(groups.iter().map(String::as_str), field)
                    .await?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Configures an environment or changes its state (its admins only).
    pub async fn configure_environment(
        &self,
        caller: &Caller,
        id: &EnvironmentId,
        command: EnvironmentCommand,
    ) -> Result<Environment, StoreError> {
        self.configure_environment_at(caller, id, command, None)
            .await
            .map(|(env, _)| env)
    }

    /// [`App::configure_environment`] on the environment's revision
    /// `expected` (what the caller read): [`StoreError::Stale`] when it
    /// changed since. The new environment with its revision.
    pub async fn configure_environment_at(
        &self,
        caller: &Caller,
        id: &EnvironmentId,
        command: EnvironmentCommand,
        expected: Option<i64>,
    ) -> Result<(Environment, i64), StoreError> {
        let action = action_of(&command);
        // Only someone who may make the change learns whether the users it
        // names exist (else anyone signed in could probe for user names).
        self.environment_for(caller, id, action).await?;
        // Users named by the command must exist; checked before the write
        // (users are never deleted).
        self.check_people(&command).await?;
        let changed = self
            .store
            .retrying(|| async {
                let (env, version) = self.store.environment_with_version(id).await?;
                if let Some(expected) = expected
                    && expected != version
                {
                    return Err(StoreError::Stale {
                        object: "environment",
                        id: id.to_string(),
                        expected,
                        current: version,
                    });
                }
                authorize(&caller.actor, action, &Object::Environment(&env))
                    .map_err(|d| StoreError::denied("environment", id.as_str(), d))?;
                let next = env.apply(command.clone())?;
                let at = tre_store::now();
                let mut effects: Vec<Effect> = environment_change::showcase_due(&env, &next)
                    .into_iter()
                    .collect();
                // a disclosure policy loosened: audited, and the other admins told
                let loosened = env.policies.loosenings(&next.policies);
                if !loosened.is_empty() {
                    effects.push(Effect::AlertAdmins {
                        environment: next.id.clone(),
                        raised_at: at,
                        alert: AdminAlert::PoliciesLoosened {
                            by: caller.actor.id.clone(),
                            loosened: loosened.clone(),
                        },
                    });
                }
                let mut details = audit_details(&command);
                if command.changes_state() {
                    details = json!({"from": env.state, "to": next.state});
                }
                if !loosened.is_empty() {
                    details["loosened"] = json!(loosened);
                }
                let reviewer_changes = env.pipeline.reviewer_changes(&next.pipeline);
                if !reviewer_changes.is_empty() {
                    details["reviewer_changes"] = json!(reviewer_changes);
                }
                self.store
                    .save_environment_change(EnvironmentChange {
                        before: &env,
                        next: &next,
                        version,
                        effects,
                        created_by: caller.actor.id.as_str(),
                        audit: AuditRecord {
                            actor: caller.actor.id.as_str(),
                            action: command.action(),
                            object_type: "environment",
                            object_id: id.as_str(),
                            environment_id: id.as_str(),
                            details,
                            trace_id: &caller.trace_id,
                            claim: caller.idempotency.as_ref(),
                        },
                        at,
                    })
                    .await?;
                Ok((next, version + 1))
            })
            .await;
        // a command here decides on this process's copy: it is stale now
        self.environments.forget(id.as_str());
        changed
    }
}
