//! A project's workspaces, for its members: register the compute that
//! analyses the data (a token bound to the project alone, shown once), list
//! them, revoke one. With the environment's default `download` policy,
//! `workspace`, only these read the project's objects.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use schemars::JsonSchema;
use serde::Serialize;
use tre_domain::ProjectId;
use tre_store::{NewWorkspace, TokenInfo, Workspace};

use super::{Endpoint, Items, Result, body, op};
use crate::guard::{Allowed, MemberOfProject};
use crate::{AppState, Auth, Body};

pub(super) fn endpoints() -> Vec<Endpoint> {
    use Method as M;
    vec![
        op(
            M::POST,
            "/v1/projects/{id}/workspaces",
            "Register a workspace (members): a service identity whose token reaches this project's data only; the token is in this answer only (a replay with the same Idempotency-Key answers without it, `secret_withheld: true`)",
            Some(body::<NewWorkspace>),
            post(create),
        )
        .returns(body::<CreatedWorkspace>)
        .errors(&[
            (409, "conflict: the project has a workspace of that name"),
            (410, "gone: the project was revoked or expired"),
        ]),
        op(
            M::GET,
            "/v1/projects/{id}/workspaces",
            "The project's workspaces, revoked ones too (members)",
            None,
            get(list),
        )
        .returns(body::<Items<Workspace>>)
        .errors(&[(410, "gone: the project was revoked or expired")]),
        op(
            M::DELETE,
            "/v1/projects/{id}/workspaces/{name}",
            "Revoke a workspace (members): every API process refuses its token within a second",
            None,
            delete(revoke),
        )
        .returns(body::<Workspace>)
        .errors(&[(410, "gone: the project was revoked or expired")]),
    ]
}

/// A workspace just registered, with its token: shown this once.
#[derive(Debug, Serialize, JsonSchema)]
struct CreatedWorkspace {
    workspace: Workspace,
    token: TokenInfo,
    /// The bearer token of the workspace, in the answer that registered it
    /// only: tre keeps only its hash, so a replay of the call (the same
    /// `Idempotency-Key`) answers without it and with `secret_withheld`.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    /// True on a replay: the secret was shown once and is not kept. Revoke
    /// the workspace and register another.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    secret_withheld: bool,
}

async fn create(
    State(state): State<AppState>,
    Allowed(caller, _): Allowed<MemberOfProject>,
    Path(id): Path<String>,
    Body(new): Body<NewWorkspace>,
) -> Result<Response> {
    let (workspace, token, secret) = state
        .app
        .create_workspace(&caller, &ProjectId(id), new)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedWorkspace {
            workspace,
            token,
            secret: Some(secret),
            secret_withheld: false,
        }),
    )
        .into_response())
}

async fn list(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Response> {
    let items = state.app.workspaces(&caller, &ProjectId(id)).await?;
    Ok(Json(serde_json::json!({"items": items})).into_response())
}

async fn revoke(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response> {
    Ok(Json(
        state
            .app
            .revoke_workspace(&caller, &ProjectId(id), &name)
            .await?,
    )
    .into_response())
}
