//! Environments as stored: their documents, guarded by a version, and the
//! list index of who may find and review each. Who may create, configure
//! or discover one is the application's (`tre-app`); what a change sets off
//! beyond itself is the domain's (`tre_domain::environment_change`), read
//! here in the change's own transaction.

use sqlx::{Executor, Row};
use tre_domain::{
    AccessRequest, Actor, DomainError, Effect, Environment, EnvironmentId, Principal, RequestId,
    RequestState, StoreRoot, Timestamp, UserId, environment_change,
};

use crate::audit::{self, AuditRecord};
use crate::{Store, StoreError, Tx, docs, now, outbox};

/// A change to an environment, decided by the application: written only if
/// the environment is still at `version`, with the effects it queues (the
/// ones the requests it touches owe are added here, read in the same
/// transaction) and its audit event.
pub struct EnvironmentChange<'a> {
    pub before: &'a Environment,
    pub next: &'a Environment,
    pub version: i64,
    pub effects: Vec<Effect>,
    /// Who started the jobs the change queues.
    pub created_by: &'a str,
    pub audit: AuditRecord<'a>,
    pub at: Timestamp,
}

/// The refusal of a source root that overlaps the project output store.
fn overlaps_output(output: &StoreRoot, source: &StoreRoot) -> String {
    format!(
        "{source} overlaps the project output store ({output}): projects' data would be readable as an environment's source"
    )
}

impl Store {
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
    /// root may overlap it, which [`Store::check_source_root`] refuses and
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

    /// Writes a new environment, its list index and its audit event.
    pub async fn insert_environment(
        &self,
        env: &Environment,
        audit: AuditRecord<'_>,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO environments (id, name, state, visibility, doc, version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 1, $6, $6)",
        )
        .bind(env.id.as_str())
        .bind(&env.name)
        .bind(env.state.as_str())
        .bind(env.visibility.as_str())
        .bind(docs::encode(env))
        .bind(at.0)
        .execute(&mut *tx)
        .await?;
        write_index(&mut tx, env).await?;
        audit::append(&mut tx, audit, at).await?;
        self.commit(tx).await
    }

    /// An environment as stored (who may see it is the application's:
    /// `App::environment`).
    pub async fn environment(&self, id: &EnvironmentId) -> Result<Environment, StoreError> {
        Ok(self.load_environment(&self.pool, id).await?.0)
    }

    /// Every environment, by id.
    pub(crate) async fn list_all_environments(&self) -> Result<Vec<Environment>, StoreError> {
        self.environments_in("SELECT id, doc FROM environments ORDER BY id")
            .await
    }

    /// Every environment, by name (then id).
    pub async fn environments_by_name(&self) -> Result<Vec<Environment>, StoreError> {
        self.environments_in("SELECT id, doc FROM environments ORDER BY name, id")
            .await
    }

    /// The environments `sql` selects (their id and document), in its order.
    async fn environments_in(&self, sql: &'static str) -> Result<Vec<Environment>, StoreError> {
        let rows = sqlx::query(sql).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                let id: String = row.try_get(0)?;
                let doc: String = row.try_get(1)?;
                docs::decode("environment", &id, &doc)
            })
            .collect()
    }

    /// Writes a change decided on the environment at `change.version`
    /// ([`StoreError::WriteConflict`] when it moved since), with the effects
    /// the requests it touches owe (`environment_change::change_alerts`,
    /// read in this transaction) before the change's own, and its audit
    /// event.
    pub async fn save_environment_change(
        &self,
        change: EnvironmentChange<'_>,
    ) -> Result<(), StoreError> {
        let EnvironmentChange {
            before,
            next,
            version,
            effects,
            created_by,
            audit,
            at,
        } = change;
        let mut tx = self.begin().await?;
        Self::save_environment(&mut tx, next, version).await?;
        let approved = if environment_change::owners_may_lose_access(before, next) {
            approved_owners(&mut tx, &next.id).await?
        } else {
            Vec::new()
        };
        let waiting = if environment_change::reviewers_changed(before, next) {
            in_review(&mut tx, &next.id).await?
        } else {
            Vec::new()
        };
        let mut queued = environment_change::change_alerts(before, next, &approved, &waiting, at);
        queued.extend(effects);
        outbox::enqueue(&mut tx, &queued, created_by, at).await?;
        audit::append(&mut tx, audit, at).await?;
        self.commit(tx).await
    }
}

/// The owners of the environment's approved requests, each with the request.
async fn approved_owners(
    tx: &mut Tx,
    environment: &EnvironmentId,
) -> Result<Vec<(RequestId, Actor)>, StoreError> {
    let rows = sqlx::query(
        "SELECT r.id, u.id AS owner, u.platform_admin, u.groups_json FROM requests r \
         JOIN users u ON u.id = r.owner_id WHERE r.environment_id = $1 AND r.state = 'approved' ORDER BY r.id",
    )
    .bind(environment.as_str())
    .fetch_all(&mut **tx)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let owner: String = row.try_get("owner")?;
        let groups: String = row.try_get("groups_json")?;
        let actor = Actor {
            groups: docs::decode("user", &owner, &groups)?,
            id: UserId(owner),
            platform_admin: row.try_get::<i64, _>("platform_admin")? != 0,
            workspace_of: None,
        };
        out.push((RequestId(row.try_get(0)?), actor));
    }
    Ok(out)
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
