//! People and their API tokens: platform admins make users and disable
//! them; everyone manages their own tokens (platform admins anyone's); the
//! operator (someone with the database, through the `tre` CLI) may do all
//! of it, audited as `operator`.

use serde_json::json;
use tre_domain::{Action, DomainError, Object, UserId, authorize};
use tre_store::{
    AuditRecord, IdempotencyClaim, NewToken, NewUser, StoreError, TokenInfo, User, UserStatus,
    check_token_name,
};

use crate::{App, Caller};

/// Who acts on people and tokens: a person through the API, or the
/// operator.
#[derive(Debug, Clone, Copy)]
pub enum TokenActor<'a> {
    Caller(&'a Caller),
    Operator { trace_id: &'a str },
}

impl<'a> TokenActor<'a> {
    fn id(&self) -> &'a str {
        match self {
            Self::Caller(c) => c.actor.id.as_str(),
            Self::Operator { .. } => "operator",
        }
    }

    fn trace_id(&self) -> &'a str {
        match self {
            Self::Caller(c) => &c.trace_id,
            Self::Operator { trace_id } => trace_id,
        }
    }

    fn claim(&self) -> Option<&'a IdempotencyClaim> {
        match self {
            Self::Caller(c) => c.idempotency.as_ref(),
            Self::Operator { .. } => None,
        }
    }

    /// Whether they may manage `user`'s tokens: their own, or anyone's for
    /// platform admins and the operator.
    fn may_act_for(&self, user: &UserId) -> Result<(), StoreError> {
        match self {
            Self::Operator { .. } => Ok(()),
            Self::Caller(c) if c.actor.id == *user => Ok(()),
            Self::Caller(c) => authorize(&c.actor, Action::ManageUsers, &Object::Platform)
                .map_err(StoreError::Forbidden),
        }
    }

    /// The audit event of their `action` on `user` (details as given).
    fn audit(&self, action: &'static str, user: &'a UserId) -> AuditRecord<'a> {
        AuditRecord {
            actor: self.id(),
            action,
            object_type: "user",
            object_id: user.as_str(),
            environment_id: "",
            details: json!({}),
            trace_id: self.trace_id(),
            claim: self.claim(),
        }
    }
}

impl App {
    /// Creates a user on behalf of a platform admin; returns the user and
    /// their API token, which is not stored and cannot be shown again.
    pub async fn create_user(
        &self,
        caller: &Caller,
        new: NewUser,
    ) -> Result<(User, String), StoreError> {
        authorize(&caller.actor, Action::ManageUsers, &Object::Platform)
            .map_err(StoreError::Forbidden)?;
        self.store
            .insert_user(caller.actor.id.as_str(), &caller.trace_id, new)
            .await
    }

    /// Makes a token for `user`; returns it and its secret (shown once).
    pub async fn create_token(
        &self,
        actor: TokenActor<'_>,
        user: &UserId,
        new: NewToken,
    ) -> Result<(TokenInfo, String), StoreError> {
        actor.may_act_for(user)?;
        check_token_name(&new.name)?;
        self.store
            .insert_user_token(user, new, actor.audit("token.create", user))
            .await
    }

    /// The tokens of `user`, newest first (revoked and expired ones too).
    pub async fn tokens(
        &self,
        actor: TokenActor<'_>,
        user: &UserId,
    ) -> Result<Vec<TokenInfo>, StoreError> {
        actor.may_act_for(user)?;
        self.store.user_tokens(user).await
    }

    /// Revokes a token: every API process refuses it within a second. A
    /// token of someone else is unknown to a caller who may not act for
    /// them (not found, so ids cannot be probed). Revoking twice changes
    /// nothing.
    pub async fn revoke_token(
        &self,
        actor: TokenActor<'_>,
        token: &str,
    ) -> Result<TokenInfo, StoreError> {
        let info = self
            .store
            .token(token)
            .await?
            .ok_or_else(|| StoreError::not_found("token", token))?;
        if actor.may_act_for(&info.user_id).is_err() {
            return Err(StoreError::not_found("token", token));
        }
        if info.revoked_at.is_some() {
            return Ok(info);
        }
        let user = info.user_id.clone();
        let mut audit = actor.audit("token.revoke", &user);
        audit.details = json!({"token": info.id, "name": info.name});
        self.store.save_token_revocation(info, audit).await
    }

    /// Disables a user (platform admins, or the operator): every token of
    /// theirs stops working within a second, and the admins of each
    /// environment whose pipeline they review are told, with the requests
    /// waiting at their stages. `disabled = false` enables them again.
    pub async fn set_user_disabled(
        &self,
        actor: TokenActor<'_>,
        user: &UserId,
        disabled: bool,
    ) -> Result<UserStatus, StoreError> {
        if let TokenActor::Caller(c) = &actor {
            authorize(&c.actor, Action::ManageUsers, &Object::Platform)
                .map_err(StoreError::Forbidden)?;
            if c.actor.id == *user && disabled {
                return Err(DomainError::Conflict(
                    "a platform admin cannot disable themselves".into(),
                )
                .into());
            }
        }
        if self.store.user(user.as_str()).await?.is_none() {
            return Err(StoreError::not_found("user", user.as_str()));
        }
        let action = if disabled {
            "user.disable"
        } else {
            "user.enable"
        };
        self.store
            .save_user_disabled(user, disabled, actor.audit(action, user))
            .await
    }
}
