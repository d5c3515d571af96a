//! Safe People over HTTP: a user's API tokens (`/v1/tokens`: their own;
//! platform admins anyone's with `?user=`), and platform admins disabling
//! and enabling users. A new token's secret is in the answer that makes it
//! and nowhere else.

use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tre_app::Caller;
use tre_app::TokenActor;
use tre_app::{Permission, Target};
use tre_domain::UserId;
use tre_domain::authz::Action;
use tre_store::{NewToken, TokenInfo, UserStatus};

use super::{Endpoint, body, op};
use crate::extract::Params;
use crate::{ApiError, AppState, Auth, Body};

type Result<T> = std::result::Result<T, ApiError>;

pub(crate) fn endpoints() -> Vec<Endpoint> {
    vec![
        op(
            Method::GET,
            "/v1/tokens",
            "The caller's API tokens, newest first, never their secrets (platform admins: anyone's with ?user=)",
            None,
            get(list),
        )
        .returns(body::<Vec<TokenInfo>>)
        .query::<WhoseTokens>()
        .errors(&[(403, "forbidden: another user's tokens, and not a platform admin")]),
        op(
            Method::POST,
            "/v1/tokens",
            "Make an API token for the caller (platform admins: for anyone with ?user=); its secret is in this answer only (a replay with the same Idempotency-Key answers without it, `secret_withheld: true`: revoke that token and make another)",
            Some(body::<NewToken>),
            post(create),
        )
        .returns(body::<CreatedToken>)
        .query::<WhoseTokens>()
        .errors(&[
            (403, "forbidden: another user's token, and not a platform admin"),
            (404, "no such user"),
            (422, "invalid: a name of 1 to 64 characters, days from 1 to the configured maximum"),
        ]),
        op(
            Method::DELETE,
            "/v1/tokens/{id}",
            "Revoke a token: every API process refuses it within a second (its holder, or a platform admin)",
            None,
            delete(revoke),
        )
        .returns(body::<TokenInfo>)
        .errors(&[(404, "no such token, or the caller may not revoke it")]),
        op(
            Method::POST,
            "/v1/users/{id}/disable",
            "Disable a user: every token of theirs stops working within a second; the admins of environments whose stages they review are told (platform admins)",
            None,
            post(disable),
        )
        .returns(body::<UserStatus>)
        .errors(&[
            (403, "forbidden: not a platform admin"),
            (404, "no such user"),
            (409, "conflict: a platform admin cannot disable themselves"),
        ]),
        op(
            Method::POST,
            "/v1/users/{id}/enable",
            "Enable a disabled user again: their tokens that are neither revoked nor expired work again (platform admins)",
            None,
            post(enable),
        )
        .returns(body::<UserStatus>)
        .errors(&[(403, "forbidden: not a platform admin"), (404, "no such user")]),
    ]
}

/// Whose tokens: the caller's unless a platform admin names another user.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct WhoseTokens {
    /// A user's handle; default: the caller.
    #[schemars(regex(pattern = tre_domain::schema::HANDLE))]
    user: Option<String>,
}

impl WhoseTokens {
    /// The user named, else the caller; a malformed handle is refused.
    fn user(self, caller: &Caller) -> Result<UserId> {
        match self.user {
            None => Ok(caller.actor.id.clone()),
            Some(user) if tre_domain::schema::is_handle(&user) => Ok(UserId(user)),
            Some(_) => Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                "expected a user's handle: 1 to 64 of A-Z a-z 0-9 . _ - @",
            )
            .with_field("user")),
        }
    }
}

/// A token just made, with its secret: shown this once.
#[derive(Debug, Serialize, JsonSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub token: TokenInfo,
    /// The bearer token itself, in the answer that made it only: tre keeps
    /// only its hash, so a replay of the call (the same `Idempotency-Key`)
    /// answers without it and with `secret_withheld`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// True on a replay: the secret was shown once and is not kept. Revoke
    /// this token (its `id`) and make another.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub secret_withheld: bool,
}

/// Whose token a call makes, once the caller may make it: their own, or
/// (platform admins) anyone's; decided before the body is read.
struct TokenFor(UserId);

impl FromRequestParts<AppState> for TokenFor {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let Auth(caller) = Auth::from_request_parts(parts, state).await?;
        let Params(whose) = Params::<WhoseTokens>::from_request_parts(parts, state).await?;
        let user = whose.user(&caller)?;
        if user != caller.actor.id {
            state
                .app
                .authorize(
                    &caller,
                    Target::Platform,
                    Permission::To(Action::ManageUsers),
                )
                .await?;
        }
        Ok(Self(user))
    }
}

async fn list(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Params(whose): Params<WhoseTokens>,
) -> Result<Json<Vec<TokenInfo>>> {
    let user = whose.user(&caller)?;
    Ok(Json(
        state.app.tokens(TokenActor::Caller(&caller), &user).await?,
    ))
}

async fn create(
    State(state): State<AppState>,
    Auth(caller): Auth,
    TokenFor(user): TokenFor,
    Body(new): Body<NewToken>,
) -> Result<Response> {
    let (token, secret) = state
        .app
        .create_token(TokenActor::Caller(&caller), &user, new)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token,
            secret: Some(secret),
            secret_withheld: false,
        }),
    )
        .into_response())
}

async fn revoke(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Json<TokenInfo>> {
    Ok(Json(
        state
            .app
            .revoke_token(TokenActor::Caller(&caller), &id)
            .await?,
    ))
}

async fn disable(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Json<UserStatus>> {
    set_disabled(&state, &caller, id, true).await
}

async fn enable(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Json<UserStatus>> {
    set_disabled(&state, &caller, id, false).await
}

async fn set_disabled(
    state: &AppState,
    caller: &Caller,
    id: String,
    disabled: bool,
) -> Result<Json<UserStatus>> {
    Ok(Json(
        state
            .app
            .set_user_disabled(TokenActor::Caller(caller), &UserId(id), disabled)
            .await?,
    ))
}
