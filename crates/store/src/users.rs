//! Users and groups; their API tokens are in `tokens`. Tokens are random,
//! shown once, and stored only as their SHA-256.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::Row;
use tre_domain::{Actor, DomainError, UserId};

use crate::audit::{self, AuditRecord};
use crate::{Store, StoreError, now};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewUser {
    /// The immutable handle: 1 to 64 of `A-Z a-z 0-9 . _ - @`.
    pub id: String,
    #[serde(default)]
    pub platform_admin: bool,
    #[serde(default)]
    pub groups: BTreeSet<String>,
    /// Where email notifications go; none: inbox (and webhooks) only.
    #[serde(default)]
    pub email: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: UserId,
    pub platform_admin: bool,
    pub groups: BTreeSet<String>,
    pub email: Option<String>,
    pub created_at: i64,
    /// Disabled users' tokens are refused (see `Store::set_user_disabled`).
    pub disabled: bool,
    /// The project whose workspace this identity is; none for people.
    pub workspace_of: Option<tre_domain::ProjectId>,
}

impl User {
    pub fn actor(&self) -> Actor {
        Actor {
            id: self.id.clone(),
            platform_admin: self.platform_admin,
            groups: self.groups.clone(),
            workspace_of: self.workspace_of.clone(),
        }
    }
}

fn validate(new: &NewUser) -> Result<(), DomainError> {
    if !tre_domain::schema::is_handle(&new.id) {
        return Err(DomainError::Invalid {
            field: "name".into(),
            message: "must be 1 to 64 characters of A-Z a-z 0-9 . _ - @".into(),
        });
    }
    if let Some(bad) = new
        .groups
        .iter()
        .find(|g| !tre_domain::schema::is_handle(g))
    {
        return Err(DomainError::Invalid {
            field: "groups".into(),
            message: format!("invalid group name {bad:?}"),
        });
    }
    if let Some(email) = &new.email {
        let plausible = email.len() <= 254
            && email
                .split_once('@')
                .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
            && !email
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';'));
        if !plausible {
            return Err(DomainError::Invalid {
                field: "email".into(),
                message: format!("{email:?} is not an email address"),
            });
        }
    }
    Ok(())
}

/// How long a found token's actor is reused without asking the database:
/// a bound on how long a change made by hand (a user's groups) takes to be
/// seen. Revocations and disabled users are seen within a second through
/// the revocation counter (see `tokens`).
pub(crate) const TOKEN_CACHE_TTL: Duration = Duration::from_secs(30);

/// Most tokens kept.
pub(crate) const TOKEN_CACHE_SIZE: usize = 10_000;

pub(crate) fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub(crate) fn new_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system provides randomness");
    format!("tre_{}", hex::encode(bytes))
}

fn user_from_row(row: &sqlx::any::AnyRow) -> Result<User, StoreError> {
    let id: String = row.try_get("id")?;
    let groups: String = row.try_get("groups_json")?;
    Ok(User {
        groups: crate::docs::decode("user", &id, &groups)?,
        id: UserId(id),
        platform_admin: row.try_get::<i64, _>("platform_admin")? != 0,
        email: row.try_get("email")?,
        created_at: row.try_get("created_at")?,
        disabled: row.try_get::<Option<i64>, _>("disabled_at")?.is_some(),
        workspace_of: row
            .try_get::<Option<String>, _>("workspace_of")?
            .map(tre_domain::ProjectId),
    })
}

impl Store {
    /// Creates a user as the operator (someone with direct database access,
    /// e.g. through the `tre` CLI): how the first platform admin is made.
    pub async fn bootstrap_user(
        &self,
        new: NewUser,
        trace_id: &str,
    ) -> Result<(User, String), StoreError> {
        self.insert_user("operator", trace_id, new).await
    }

    /// Writes a new user, with their first API token ("initial", the
    /// longest lifetime allowed; returned, never stored) and the audit
    /// event of `actor`'s act.
    pub async fn insert_user(
        &self,
        actor: &str,
        trace_id: &str,
        new: NewUser,
    ) -> Result<(User, String), StoreError> {
        validate(&new)?;
        let at = now();
        let mut tx = self.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO users (id, platform_admin, groups_json, token_hash, created_at, email) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&new.id)
        .bind(i64::from(new.platform_admin))
        .bind(serde_json::to_string(&new.groups).expect("groups serialize"))
        // a column older code required: the hash of a secret nobody holds
        .bind(hash_token(&new_token()))
        .bind(at.0)
        .bind(new.email.clone())
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(DomainError::Conflict(format!("user {:?} already exists", new.id)).into());
        }
        // the token handed out now is the user's first API token, named
        // "initial", with the longest lifetime allowed
        let (_, token) = self
            .insert_token(&mut tx, &new.id, "initial", None, at)
            .await?;
        audit::append(
            &mut tx,
            AuditRecord {
                actor,
                action: "user.create",
                object_type: "user",
                object_id: &new.id,
                environment_id: "",
                details: json!({"platform_admin": new.platform_admin, "groups": new.groups}),
                trace_id,
                claim: None,
            },
            at,
        )
        .await?;
        self.commit(tx).await?;
        Ok((
            User {
                id: UserId(new.id),
                platform_admin: new.platform_admin,
                groups: new.groups,
                email: new.email,
                created_at: at.0,
                disabled: false,
                workspace_of: None,
            },
            token,
        ))
    }

    pub async fn user(&self, id: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(
            "SELECT id, platform_admin, groups_json, created_at, email, disabled_at, workspace_of FROM users WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| user_from_row(&r)).transpose()
    }

    /// Every user, by name (the operator's list: `tre users list`).
    pub async fn users(&self) -> Result<Vec<User>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, platform_admin, groups_json, created_at, email, disabled_at, workspace_of FROM users ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(user_from_row).collect()
    }

    /// Fails with a validation error naming `field` unless every user exists.
    pub async fn ensure_users_exist<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a UserId>,
        field: &str,
    ) -> Result<Vec<User>, StoreError> {
        let mut users = Vec::new();
        for id in ids {
            match self.user(id.as_str()).await? {
                Some(user) => users.push(user),
                None => {
                    return Err(DomainError::Invalid {
                        field: field.into(),
                        message: format!("no user {:?}", id.as_str()),
                    }
                    .into());
                }
            }
        }
        Ok(users)
    }

    /// Groups named by `field` must have members: a mistyped group (one
    /// nobody belongs to) would authorize nobody, silently.
    pub async fn ensure_groups_in_use<'a>(
        &self,
        groups: impl IntoIterator<Item = &'a str>,
        field: &str,
    ) -> Result<(), StoreError> {
        let groups: Vec<&str> = groups.into_iter().collect();
        if groups.is_empty() {
            return Ok(());
        }
        let rows: Vec<String> = sqlx::query_scalar("SELECT DISTINCT groups_json FROM users")
            .fetch_all(&self.pool)
            .await?;
        let mut in_use = BTreeSet::new();
        for row in rows {
            let listed: Vec<String> = serde_json::from_str(&row).unwrap_or_default();
            in_use.extend(listed);
        }
        if let Some(unknown) = groups.iter().find(|g| !in_use.contains(**g)) {
            let known: Vec<&str> = in_use.iter().map(String::as_str).collect();
            return Err(DomainError::Invalid {
                field: field.into(),
                message: format!(
                    "no user is in group {unknown:?}: add users to it first (`tre users add NAME --group {unknown}`){}",
                    if known.is_empty() {
                        String::new()
                    } else {
                        format!(", or name a group in use: {}", known.join(", "))
                    }
                ),
            }
            .into());
        }
        Ok(())
    }
}
