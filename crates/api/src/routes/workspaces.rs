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
use crate::{AppState, Auth, Body};

pub(super) fn endpoints() -> Vec<Endpoint> {
    use Method as M;
    vec![
        op(
            M::POST,
            "/v1/projects/{id}/workspaces",
            "Register a workspace (members): a service identity whose token reaches this project's data only; the token is in this answer only",
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
    /// The bearer token of the workspace. tre keeps only its hash.
    secret: String,
}

async fn create(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Body(new): Body<NewWorkspace>,
) -> Result<Response> {
    let (workspace, token, secret) = state
        .store
        .create_workspace(&caller, &ProjectId(id), new)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedWorkspace {
            workspace,
            token,
            secret,
        }),
    )
        .into_response())
}

async fn list(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Response> {
    let items = state.store.workspaces(&caller, &ProjectId(id)).await?;
    Ok(Json(serde_json::json!({"items": items})).into_response())
}

async fn revoke(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response> {
    Ok(Json(
        state
            .store
            .revoke_workspace(&caller, &ProjectId(id), &name)
            .await?,
    )
    .into_response())
}
