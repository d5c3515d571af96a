//! API tokens with a lifecycle (Safe People: access that can be taken
//! away). A user holds any number of named tokens, each with an expiry (at
//! most the configured maximum, 90 days by default) and a last-used time;
//! a token can be revoked, and a user disabled, which stops every token of
//! theirs. Tokens are random, shown once, stored only as their SHA-256 and
//! looked up by it (a hash compared by the database index, never a secret
//! compared in the process). Every operation is audited.
//!
//! Each process keeps the actors of tokens it has seen for a few seconds
//! (every API call authenticates). Revocation reaches every process within
//! a second: revoking or disabling bumps a counter in SQL
//! (`auth_epoch`), which each process reads at most every
//! [`EPOCH_CHECK_MS`] before trusting its cache, and forgets every cached
//! token when it moved.

use std::sync::atomic::{AtomicI64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::Row;
use tre_domain::{Actor, AdminAlert, DomainError, Effect, Timestamp, UserId};

use crate::audit::{self, AuditRecord};
use crate::users::{hash_token, new_token};
use crate::{Store, StoreError, Tx, docs, new_id, now, outbox};

/// How often, at most, a process reads the revocation counter.
pub const EPOCH_CHECK_MS: i64 = 250;

/// Longest token lifetime unless configured ([`Store::with_token_max_days`]).
pub const DEFAULT_TOKEN_MAX_DAYS: u32 = 90;

const DAY_MS: i64 = 86_400_000;

/// The revocation counter as this process last read it.
#[derive(Debug, Default)]
pub(crate) struct AuthEpoch {
    /// When it was last read (ms since the epoch).
    checked_at: AtomicI64,
    epoch: AtomicI64,
}

/// A token as its holder and platform admins see it: never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct TokenInfo {
    pub id: String,
    pub user_id: UserId,
    pub name: String,
    pub created_at: Timestamp,
    /// None only for tokens made before tokens expired.
    pub expires_at: Option<Timestamp>,
    /// When it last authenticated a call (to within a minute).
    pub last_used_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
}

/// A token to make.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// What it is for, e.g. `laptop` or `pipeline` (1 to 64 characters).
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = tre_domain::schema::NAME)
    )]
    pub name: String,
    /// Days until it expires: 1 to the configured maximum (90 unless
    /// `token_max_days` says otherwise; default: the maximum).
    #[serde(default)]
    #[schemars(range(min = 1, max = 90))]
    pub days: Option<u32>,
}

/// A user's standing, as platform admins see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct UserStatus {
    pub id: UserId,
    pub disabled: bool,
    /// Environments whose admins were told of the reviews the user can no
    /// longer do (when disabled).
    pub alerted_environments: u32,
}

const TOKEN_COLUMNS: &str = "id, user_id, name, created_at, expires_at, last_used_at, revoked_at";

fn token_from_row(row: &sqlx::any::AnyRow) -> Result<TokenInfo, StoreError> {
    let at = |name: &str| -> Result<Option<Timestamp>, StoreError> {
        Ok(row.try_get::<Option<i64>, _>(name)?.map(Timestamp))
    };
    Ok(TokenInfo {
        id: row.try_get("id")?,
        user_id: UserId(row.try_get("user_id")?),
        name: row.try_get("name")?,
        created_at: Timestamp(row.try_get("created_at")?),
        expires_at: at("expires_at")?,
        last_used_at: at("last_used_at")?,
        revoked_at: at("revoked_at")?,
    })
}

/// Checks a token name: 1 to 64 characters, no control characters.
/// Refuses a token name that is empty, longer than 64 characters or has
/// control characters.
pub fn check_token_name(name: &str) -> Result<(), DomainError> {
    if name.trim().is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(DomainError::invalid(
            "name",
            "1 to 64 characters, without control characters",
        ));
    }
    Ok(())
}

impl Store {
    /// The longest lifetime of new tokens (default
    /// [`DEFAULT_TOKEN_MAX_DAYS`]).
    pub fn with_token_max_days(mut self, days: u32) -> Self {
        self.token_max_days = days.max(1);
        self
    }

    /// Inserts a token for `user` (in `tx`); returns it and its secret.
    pub(crate) async fn insert_token(
        &self,
        tx: &mut Tx,
        user: &str,
        name: &str,
        days: Option<u32>,
        at: Timestamp,
    ) -> Result<(TokenInfo, String), StoreError> {
        let max = self.token_max_days;
        let days = days.unwrap_or(max);
        if days == 0 || days > max {
            return Err(DomainError::invalid(
                "days",
                format!("a token lives 1 to {max} days (the configured maximum)"),
            )
            .into());
        }
        let secret = new_token();
        let info = TokenInfo {
            id: new_id(),
            user_id: UserId(user.to_owned()),
            name: name.to_owned(),
            created_at: at,
            expires_at: Some(Timestamp(at.0 + i64::from(days) * DAY_MS)),
            last_used_at: None,
            revoked_at: None,
        };
        sqlx::query(
            "INSERT INTO api_tokens (id, user_id, name, token_hash, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&info.id)
        .bind(user)
        .bind(name)
        .bind(hash_token(&secret))
        .bind(at.0)
        .bind(info.expires_at.map(|t| t.0))
        .execute(&mut **tx)
        .await?;
        Ok((info, secret))
    }

    /// Writes a new token for `user` with `audit` (whose details name it);
    /// returns it and its secret (shown once). Not found when there is no
    /// such user.
    pub async fn insert_user_token(
        &self,
        user: &UserId,
        new: NewToken,
        mut audit: AuditRecord<'_>,
    ) -> Result<(TokenInfo, String), StoreError> {
        if self.user(user.as_str()).await?.is_none() {
            return Err(StoreError::not_found("user", user.as_str()));
        }
        let at = now();
        let mut tx = self.begin().await?;
        let (info, secret) = self
            .insert_token(&mut tx, user.as_str(), &new.name, new.days, at)
            .await?;
        audit.details = json!({"token": info.id, "name": info.name, "expires_at": info.expires_at});
        audit::append(&mut tx, audit, at).await?;
        self.commit(tx).await?;
        Ok((info, secret))
    }

    /// The tokens of `user`, newest first (revoked and expired ones too).
    pub async fn user_tokens(&self, user: &UserId) -> Result<Vec<TokenInfo>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE user_id = $1 ORDER BY created_at DESC, id DESC"
        )))
        .bind(user.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(token_from_row).collect()
    }

    /// A token, if there is one with that id.
    pub async fn token(&self, id: &str) -> Result<Option<TokenInfo>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(token_from_row)
        .transpose()
    }

    /// Revokes token `info` with `audit`: every API process refuses it
    /// within a second, this one at once.
    pub async fn save_token_revocation(
        &self,
        info: TokenInfo,
        audit: AuditRecord<'_>,
    ) -> Result<TokenInfo, StoreError> {
        let at = now();
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(at.0)
            .bind(&info.id)
            .execute(&mut *tx)
            .await?;
        bump_epoch(&mut tx).await?;
        audit::append(&mut tx, audit, at).await?;
        self.commit(tx).await?;
        self.tokens_cache.clear();
        Ok(TokenInfo {
            revoked_at: Some(at),
            ..info
        })
    }

    /// Disables `user` (or enables them again, `disabled = false`) with
    /// `audit` (its details, how many environments were told, are set
    /// here): every token of theirs stops working within a second, and the
    /// admins of each environment whose pipeline they review are told, with
    /// the requests waiting at their stages. Nothing changes, nor is
    /// audited, when they already are so.
    pub async fn save_user_disabled(
        &self,
        user: &UserId,
        disabled: bool,
        mut audit: AuditRecord<'_>,
    ) -> Result<UserStatus, StoreError> {
        if self.user(user.as_str()).await?.is_none() {
            return Err(StoreError::not_found("user", user.as_str()));
        }
        let at = now();
        let mut tx = self.begin().await?;
        let update = if disabled {
            sqlx::query("UPDATE users SET disabled_at = $1 WHERE id = $2 AND disabled_at IS NULL")
                .bind(at.0)
        } else {
            sqlx::query(
                "UPDATE users SET disabled_at = NULL WHERE id = $1 AND disabled_at IS NOT NULL",
            )
        };
        let changed = update
            .bind(user.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        let mut alerted = 0;
        if changed {
            bump_epoch(&mut tx).await?;
            if disabled {
                let alerts = reviewer_alerts(&mut tx, user, at).await?;
                alerted = alerts.len() as u32;
                outbox::enqueue(&mut tx, &alerts, audit.actor, at).await?;
            }
            audit.details = json!({"alerted_environments": alerted});
            audit::append(&mut tx, audit, at).await?;
        }
        self.commit(tx).await?;
        self.tokens_cache.clear();
        Ok(UserStatus {
            id: user.clone(),
            disabled,
            alerted_environments: alerted,
        })
    }

    /// The actor a bearer token belongs to, if it is live: not revoked,
    /// not expired, its user not disabled. Found actors are kept in this
    /// process for a few seconds (every API call authenticates), never
    /// past their token's expiry, and forgotten as soon as any revocation
    /// is seen (see the module's documentation).
    pub async fn authenticate(&self, token: &str) -> Result<Option<Actor>, StoreError> {
        let at = now();
        self.check_revocations(at).await?;
        let hash = hash_token(token);
        if let Some((actor, expires)) = self.tokens_cache.get(&hash)
            && expires.is_none_or(|e| e > at.0)
        {
            return Ok(Some(actor));
        }
        let row = sqlx::query(
            "SELECT u.id, u.platform_admin, u.groups_json, u.workspace_of, t.id AS token_id, t.expires_at, t.last_used_at \
             FROM api_tokens t JOIN users u ON u.id = t.user_id \
             WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND u.disabled_at IS NULL \
             AND (t.expires_at IS NULL OR t.expires_at > $2)",
        )
        .bind(&hash)
        .bind(at.0)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let id: String = row.try_get("id")?;
        let groups: String = row.try_get("groups_json")?;
        let actor = Actor {
            groups: docs::decode("user", &id, &groups)?,
            id: UserId(id),
            platform_admin: row.try_get::<i64, _>("platform_admin")? != 0,
            workspace_of: row
                .try_get::<Option<String>, _>("workspace_of")?
                .map(tre_domain::ProjectId),
        };
        let expires: Option<i64> = row.try_get("expires_at")?;
        let last_used: Option<i64> = row.try_get("last_used_at")?;
        if last_used.is_none_or(|t| at.0 - t > 60_000) {
            let token_id: String = row.try_get("token_id")?;
            sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
                .bind(at.0)
                .bind(token_id)
                .execute(&self.pool)
                .await?;
        }
        self.tokens_cache.put(hash, (actor.clone(), expires));
        Ok(Some(actor))
    }

    /// Forgets every cached token: the next call of each reads the
    /// database (for changes made by hand, and tests).
    pub fn forget_cached_tokens(&self) {
        self.tokens_cache.clear();
    }

    /// Forgets the cached tokens if a revocation happened since the last
    /// look (at most one look per [`EPOCH_CHECK_MS`] per process; callers
    /// meanwhile trust the cache).
    async fn check_revocations(&self, at: Timestamp) -> Result<(), StoreError> {
        let last = self.auth_epoch.checked_at.load(Ordering::Acquire);
        if at.0 - last < EPOCH_CHECK_MS
            || self
                .auth_epoch
                .checked_at
                .compare_exchange(last, at.0, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return Ok(());
        }
        let epoch: i64 = sqlx::query("SELECT epoch FROM auth_epoch WHERE id = 1")
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        if self.auth_epoch.epoch.swap(epoch, Ordering::AcqRel) != epoch {
            self.tokens_cache.clear();
        }
        Ok(())
    }
}

pub(crate) async fn bump_epoch(tx: &mut Tx) -> Result<(), StoreError> {
    sqlx::query("UPDATE auth_epoch SET epoch = epoch + 1 WHERE id = 1")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// For each environment whose pipeline `user` reviews (found through the
/// list index): an alert to its admins naming the stages and the requests
/// waiting at each.
async fn reviewer_alerts(
    tx: &mut Tx,
    user: &UserId,
    at: Timestamp,
) -> Result<Vec<Effect>, StoreError> {
    let reviewed: Vec<String> = sqlx::query(
        "SELECT environment_id FROM environment_index WHERE kind = 'reviewer' AND principal = $1 \
         ORDER BY environment_id",
    )
    .bind(user.as_str())
    .fetch_all(&mut **tx)
    .await?
    .iter()
    .map(|r| r.try_get(0))
    .collect::<Result<_, _>>()?;
    let mut alerts = Vec::new();
    for id in reviewed {
        let id = tre_domain::EnvironmentId(id);
        let doc: String = sqlx::query("SELECT doc FROM environments WHERE id = $1")
            .bind(id.as_str())
            .fetch_one(&mut **tx)
            .await?
            .try_get(0)?;
        let env: tre_domain::Environment = docs::decode("environment", id.as_str(), &doc)?;
        let mut waiting = vec![0u32; env.pipeline.stages.len()];
        for (stage, _) in crate::environments::in_review(tx, &env.id).await? {
            if let Some(n) = waiting.get_mut(stage) {
                *n += 1;
            }
        }
        let stages: Vec<(String, u32)> = env
            .pipeline
            .stages
            .iter()
            .zip(waiting)
            .filter(|(s, _)| s.reviewers.contains(user))
            .map(|(s, n)| (s.id.clone(), n))
            .collect();
        if stages.is_empty() {
            continue;
        }
        alerts.push(Effect::AlertAdmins {
            environment: env.id.clone(),
            raised_at: at,
            alert: AdminAlert::ReviewerDisabled {
                reviewer: user.clone(),
                stages,
            },
        });
    }
    Ok(alerts)
}
