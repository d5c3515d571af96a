//! Environments: creation by platform admins, configuration and state changes
//! by their admins, discovery by their authorized users.

use serde_json::json;
use sqlx::{Executor, Row};
use tre_domain::{
    AccessRequest, Action, Actor, AdminAlert, DomainError, Effect, Environment, EnvironmentCommand,
    EnvironmentId, NewEnvironment, Object, Principal, RequestId, RequestState, StoreRoot,
    Timestamp, UserId, authorize,
};

use crate::audit::{self, AuditRecord};
use crate::{Caller, Store, StoreError, Tx, docs, new_id, now, outbox};

/// The refusal of a source root that overlaps the project output store.
fn overlaps_output(output: &StoreRoot, source: &StoreRoot) -> String {
    format!(
        "{source} overlaps the project output store ({output}): projects' data would be readable as an environment's source"
    )
}

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

impl Store {
    /// Whether the users a configuration command names exist and the
    /// groups it names have members (a mistyped group would authorize
    /// nobody): the check a change makes first, for dry runs too.
    pub async fn check_people(&self, command: &EnvironmentCommand) -> Result<(), StoreError> {
        match command {
            EnvironmentCommand::SetAdmins(admins) => {
                self.ensure_users_exist(admins, "admins").await?;
            }
            EnvironmentCommand::SetPipeline(pipeline) => {
                for (i, stage) in pipeline.stages.iter().enumerate() {
                    self.ensure_users_exist(
                        &stage.reviewers,
                        &format!("pipeline.stages[{i}].reviewers"),
                    )
                    .await?;
                }
            }
            EnvironmentCommand::PatchPipeline(patch) => {
                for (i, stage) in patch.stages.iter().enumerate() {
                    self.ensure_users_exist(
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
                self.ensure_users_exist(&users, field).await?;
                let groups: Vec<String> = members
                    .iter()
                    .filter_map(|m| match m {
                        Principal::Group(g) => Some(g.clone()),
                        Principal::User(_) => None,
                    })
                    .collect();
                self.ensure_groups_in_use(groups.iter().map(String::as_str), field)
                    .await?;
            }
            _ => {}
        }
        Ok(())
    }
    pub(crate) async fn load_environment<'e, E>(
        &self,
        executor: E,
        id: &EnvironmentId,
    ) -> Result<(Environment, i64), StoreError>
    where
        E: Executor<'e, Database = sqlx::Any>,
    {
        docs::load(
            executor,
            "SELECT doc, version FROM environments WHERE id = $1",
            "environment",
            id.as_str(),
        )
        .await
    }

    /// An environment as stored, and its version: what a command whose
    /// write is guarded by that version decides on.
    pub async fn environment_with_version(
        &self,
        id: &EnvironmentId,
    ) -> Result<(Environment, i64), StoreError> {
        self.load_environment(&self.pool, id).await
    }

    pub(crate) async fn save_environment(
        tx: &mut Tx,
        env: &Environment,
        version: i64,
    ) -> Result<(), StoreError> {
        let updated = sqlx::query(
            "UPDATE environments SET name = $1, state = $2, visibility = $3, doc = $4, version = version + 1, updated_at = $5 \
             WHERE id = $6 AND version = $7",
        )
        .bind(&env.name)
        .bind(env.state.as_str())
        .bind(env.visibility.as_str())
        .bind(docs::encode(env))
        .bind(now().0)
        .bind(env.id.as_str())
        .bind(version)
        .execute(&mut **tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::WriteConflict(format!("environment {}", env.id)));
        }
        write_index(tx, env).await
    }

    /// Fills the list index of environments that have none (those written
    /// before it existed); run at start-up.
    pub(crate) async fn index_unindexed_environments(&self) -> Result<(), StoreError> {
        let rows = sqlx::query(
            "SELECT id, doc FROM environments e WHERE NOT EXISTS \
             (SELECT 1 FROM environment_index i WHERE i.environment_id = e.id)",
        )
        .fetch_all(&self.pool)
        .await?;
        for row in rows {
            let id: String = row.try_get(0)?;
            let env: Environment = docs::decode("environment", &id, &row.try_get::<String, _>(1)?)?;
            let mut tx = self.begin().await?;
            write_index(&mut tx, &env).await?;
            tx.commit().await?;
        }
        Ok(())
    }

    /// Declares where project data is dispensed: no environment's source
    /// root may overlap it, which [`Store::create_environment`] refuses and
    /// [`Store::check_output_root`] checks at start-up.
    pub fn with_output_root(mut self, root: StoreRoot) -> Self {
        self.output_root = Some(std::sync::Arc::new(root));
        self
    }

    /// Fails (naming the environment) when an environment's source root
    /// overlaps the output store declared with [`Store::with_output_root`]:
    /// workers and servers refuse to start rather than dispense from or into
    /// the other's data.
    pub async fn check_output_root(&self) -> Result<(), StoreError> {
        let Some(output) = &self.output_root else {
            return Ok(());
        };
        for env in self.list_all_environments().await? {
            if let Some(source) = env.source.as_ref().filter(|s| s.overlaps(output)) {
                return Err(StoreError::Config(format!(
                    "object_store: environment {} ({:?}) has source root {}",
                    env.id,
                    env.name,
                    overlaps_output(output, source)
                )));
            }
        }
        Ok(())
    }

    /// Refuses (as invalid `source`) a source root that overlaps the output
    /// store declared with [`Store::with_output_root`].
    pub fn check_source_root(&self, source: &StoreRoot) -> Result<(), StoreError> {
        match self.output_root.as_deref() {
            Some(output) if source.overlaps(output) => {
                Err(DomainError::invalid("source", overlaps_output(output, source)).into())
            }
            _ => Ok(()),
        }
    }

    /// Creates an environment in `draft` (platform admins only), with the
    /// source root its data lives in.
    pub async fn create_environment(
        &self,
        caller: &Caller,
        new: NewEnvironment,
    ) -> Result<Environment, StoreError> {
        authorize(&caller.actor, Action::CreateEnvironment, &Object::Platform)
            .map_err(StoreError::Forbidden)?;
        self.check_source_root(&new.source)?;
        self.ensure_users_exist(&new.admins, "admins").await?;
        let env = Environment::create(EnvironmentId(new_id()), &caller.actor.id, new)?;
        let at = now();
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO environments (id, name, state, visibility, doc, version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 1, $6, $6)",
        )
        .bind(env.id.as_str())
        .bind(&env.name)
        .bind(env.state.as_str())
        .bind(env.visibility.as_str())
        .bind(docs::encode(&env))
        .bind(at.0)
        .execute(&mut *tx)
        .await?;
        write_index(&mut tx, &env).await?;
        audit::append(
            &mut tx,
            AuditRecord {
                actor: caller.actor.id.as_str(),
                action: "environment.create",
                object_type: "environment",
                object_id: env.id.as_str(),
                environment_id: env.id.as_str(),
                details: json!({"name": env.name, "admins": env.admins, "source": env.source}),
                trace_id: &caller.trace_id,
                claim: caller.idempotency.as_ref(),
            },
            at,
        )
        .await?;
        self.commit(tx).await?;
        Ok(env)
    }

    /// An environment the caller may discover, as they may see it
    /// ([`Environment::seen_by`]).
    pub async fn environment(
        &self,
        caller: &Caller,
        id: &EnvironmentId,
    ) -> Result<Environment, StoreError> {
        self.environment_at(caller, id).await.map(|(env, _)| env)
    }

    /// The environment `caller` means to `action` (configure it, change its
    /// state), with its revision, or the refusal the change itself would
    /// get: for what must be prepared before the change (an inventory
    /// checked against the source).
    pub async fn environment_for(
        &self,
        caller: &Caller,
        id: &EnvironmentId,
        action: Action,
    ) -> Result<(Environment, i64), StoreError> {
        let (env, revision) = self.load_environment(&self.pool, id).await?;
        // an action on an environment the caller may not see is concealed
        // by the rule itself (see `authorize`)
        authorize(&caller.actor, action, &Object::Environment(&env))
            .map_err(|d| StoreError::denied("environment", id.as_str(), d))?;
        Ok((env, revision))
    }

    /// [`Store::environment`] with its revision (what a change made on
    /// what was read names: see [`Store::configure_environment_at`]).
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

    /// The environment, if the caller may do `action` on it (else not
    /// found or forbidden, as [`authorize`] says); unredacted.
    pub(crate) async fn authorized_environment(
        &self,
        caller: &Caller,
        id: &EnvironmentId,
        action: Action,
    ) -> Result<Environment, StoreError> {
        self.environment_for(caller, id, action)
            .await
            .map(|(env, _)| env)
    }

    /// Every environment (system use: no authorization).
    pub(crate) async fn list_all_environments(&self) -> Result<Vec<Environment>, StoreError> {
        let rows = sqlx::query("SELECT id, doc FROM environments ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let id: String = row.try_get(0)?;
                let doc: String = row.try_get(1)?;
                docs::decode("environment", &id, &doc)
            })
            .collect()
    }

    /// The resource center: every environment the caller may discover, by name.
    pub async fn list_environments(&self, caller: &Caller) -> Result<Vec<Environment>, StoreError> {
        let rows = sqlx::query("SELECT id, doc FROM environments ORDER BY name, id")
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::new();
        for row in rows {
            let id: String = row.try_get(0)?;
            let doc: String = row.try_get(1)?;
            let env = docs::decode("environment", &id, &doc)?;
            if authorize(
                &caller.actor,
                Action::DiscoverEnvironment,
                &Object::Environment(&env),
            )
            .is_ok()
            {
                out.push(env.seen_by(&caller.actor));
            }
        }
        Ok(out)
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

    /// [`Store::configure_environment`] on the environment's revision
    /// `expected` (what the caller read): [`StoreError::Stale`] when it
    /// changed since. The new environment with its revision.
    pub async fn configure_environment_at(
        &self,
        caller: &Caller,
        id: &EnvironmentId,
        command: EnvironmentCommand,
        expected: Option<i64>,
    ) -> Result<(Environment, i64), StoreError> {
        // Only someone who may make the change learns whether the users it
        // names exist (else anyone signed in could probe for user names).
        let action = if command.changes_state() {
            Action::ChangeEnvironmentState
        } else {
            Action::ConfigureEnvironment
        };
        self.authorized_environment(caller, id, action).await?;
        // Users named by the command must exist; checked outside the write
        // transaction (users are never deleted).
        self.check_people(&command).await?;
        self.retrying(|| async {
            let mut tx = self.begin().await?;
            let (env, version) = self.load_environment(&mut *tx, id).await?;
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
            let action = if command.changes_state() {
                Action::ChangeEnvironmentState
            } else {
                Action::ConfigureEnvironment
            };
            authorize(&caller.actor, action, &Object::Environment(&env))
                .map_err(|d| StoreError::denied("environment", id.as_str(), d))?;
            let next = env.apply(command.clone())?;
            Self::save_environment(&mut tx, &next, version).await?;
            let at = now();
            let mut effects = Self::admin_alerts(&mut tx, &env, &next, at).await?;
            effects.extend(showcase_due(&env, &next));
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
            outbox::enqueue(&mut tx, &effects, caller.actor.id.as_str(), at).await?;
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
            audit::append(
                &mut tx,
                AuditRecord {
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
            )
            .await?;
            self.commit(tx).await?;
            Ok((next, version + 1))
        })
        .await
    }

    /// What a change from `before` to `after` must tell the environment's
    /// admins: owners of approved requests who are no longer authorized
    /// users, and reviewers changed on a stage where requests wait; and,
    /// for each request waiting at such a stage, a job that counts its
    /// votes again (a stage out of reach closes as returned).
    async fn admin_alerts(
        tx: &mut Tx,
        before: &Environment,
        after: &Environment,
        at: Timestamp,
    ) -> Result<Vec<Effect>, StoreError> {
        let alert = |alert| Effect::AlertAdmins {
            environment: after.id.clone(),
            raised_at: at,
            alert,
        };
        let mut alerts = Vec::new();
        if before.members != after.members || before.visibility != after.visibility {
            let rows = sqlx::query(
                "SELECT r.id, u.id AS owner, u.platform_admin, u.groups_json FROM requests r \
                 JOIN users u ON u.id = r.owner_id WHERE r.environment_id = $1 AND r.state = 'approved' ORDER BY r.id",
            )
            .bind(after.id.as_str())
            .fetch_all(&mut **tx)
            .await?;
            for row in rows {
                let owner: String = row.try_get("owner")?;
                let groups: String = row.try_get("groups_json")?;
                let actor = Actor {
                    groups: docs::decode("user", &owner, &groups)?,
                    id: UserId(owner),
                    platform_admin: row.try_get::<i64, _>("platform_admin")? != 0,
                    workspace_of: None,
                };
                if before.is_authorized_user(&actor) && !after.is_authorized_user(&actor) {
                    alerts.push(alert(AdminAlert::OwnerRemoved {
                        request: RequestId(row.try_get(0)?),
                        owner: actor.id,
                    }));
                }
            }
        }
        let changes = before.pipeline.reviewer_changes(&after.pipeline);
        if !changes.is_empty() {
            let mut waiting = vec![0u32; after.pipeline.stages.len()];
            for (stage, request) in in_review(tx, &after.id).await? {
                if let Some(n) = waiting.get_mut(stage) {
                    *n += 1;
                    // its votes, counted again with the new reviewers
                    if changes.iter().any(|c| c.stage == stage) {
                        alerts.push(Effect::RetallyStage {
                            request: request.id.clone(),
                            round: request.round,
                            stage,
                            at,
                        });
                    }
                }
            }
            for change in changes {
                let waiting = waiting.get(change.stage).copied().unwrap_or(0);
                if waiting > 0 {
                    alerts.push(alert(AdminAlert::ReviewersChanged {
                        stage: change.stage,
                        stage_id: change.stage_id,
                        added: change.added,
                        removed: change.removed,
                        waiting,
                    }));
                }
            }
        }
        Ok(alerts)
    }
}

/// The environment's requests waiting in review, each with its stage.
pub(crate) async fn in_review(
    tx: &mut Tx,
    environment: &EnvironmentId,
) -> Result<Vec<(usize, AccessRequest)>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, doc FROM requests WHERE environment_id = $1 AND state = 'in_review'",
    )
    .bind(environment.as_str())
    .fetch_all(&mut **tx)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let id: String = row.try_get(0)?;
        let request: AccessRequest = docs::decode("request", &id, &row.try_get::<String, _>(1)?)?;
        if let RequestState::InReview { stage } = request.state {
            out.push((stage, request));
        }
    }
    Ok(out)
}

/// Rewrites the list index of `env` (see migration 0015): who may find it,
/// who reviews it.
async fn write_index(tx: &mut Tx, env: &Environment) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM environment_index WHERE environment_id = $1")
        .bind(env.id.as_str())
        .execute(&mut **tx)
        .await?;
    let mut rows: Vec<(&str, String)> = Vec::new();
    rows.extend(env.admins.iter().map(|a| ("admin", a.0.clone())));
    for member in &env.members {
        rows.push(match member {
            Principal::User(u) => ("user", u.0.clone()),
            Principal::Group(g) => ("group", g.clone()),
        });
    }
    if env.visibility == tre_domain::Visibility::Public {
        rows.push(("public", String::new()));
    }
    for stage in &env.pipeline.stages {
        rows.extend(stage.reviewers.iter().map(|r| ("reviewer", r.0.clone())));
    }
    rows.sort();
    rows.dedup();
    for (kind, principal) in rows {
        sqlx::query(
            "INSERT INTO environment_index (environment_id, kind, principal) VALUES ($1, $2, $3)",
        )
        .bind(env.id.as_str())
        .bind(kind)
        .bind(principal)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// The showcase job a change makes due: when an inventory version becomes
/// the current one of an active environment (publish, reactivate with a
/// staged inventory). Its key names the version, so a version is computed
/// once however often the environment comes back to it.
fn showcase_due(before: &Environment, after: &Environment) -> Option<Effect> {
    let version = |e: &Environment| e.inventory.as_ref().map(|i| i.version);
    let active = |e: &Environment| e.state == tre_domain::EnvironmentState::Active;
    let current = version(after)?;
    (active(after) && (!active(before) || version(before) != Some(current))).then(|| {
        Effect::ComputeShowcase {
            environment: after.id.clone(),
            version: current,
        }
    })
}
