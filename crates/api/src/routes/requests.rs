//! Access requests as their owners see them: drafting, editing,
//! collaborators, submission, withdrawal, revocation, the selection summary
//! and the history.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use tre_domain::AccessRequest;
use tre_domain::{EnvironmentId, NewRequest, RequestCommand, RequestId, RequestUpdate, UserId};
use tre_store::{Page as ListPage, RequestRole};

use super::{Endpoint, Items, Result, body, created, limit, op};
use crate::extract::Params;
use crate::guard::{Allowed, EditsRequest, RevokesRequest};
use crate::{ApiError, AppState, Auth, Body};

pub(super) fn endpoints() -> Vec<Endpoint> {
    use Method as M;
    vec![
        op(
            M::POST,
            "/v1/requests",
            "Draft an access request",
            Some(body::<CreateRequestBody>),
            post(create_request),
        )
        .returns(body::<AccessRequest>),
        op(
            M::GET,
            "/v1/requests",
            "The caller's requests by role and state",
            None,
            get(list_requests),
        )
        .returns(body::<ListPage<AccessRequest>>)
        .query::<RequestQuery>(),
        op(
            M::GET,
            "/v1/requests/{id}",
            "One request",
            None,
            get(get_request),
        )
        .returns(body::<AccessRequest>),
        op(
            M::PATCH,
            "/v1/requests/{id}",
            "Edit a draft or a request in revision (owner)",
            Some(body::<RequestUpdate>),
            patch(update_request),
        )
        .returns(body::<AccessRequest>),
        op(
            M::PUT,
            "/v1/requests/{id}/collaborators",
            "Set the collaborators (owner)",
            Some(body::<Collaborators>),
            put(put_collaborators),
        )
        .returns(body::<AccessRequest>),
        op(
            M::POST,
            "/v1/requests/{id}/submit",
            "Submit or resubmit (owner)",
            None,
            post(submit),
        )
        .returns(body::<AccessRequest>),
        op(
            M::POST,
            "/v1/requests/{id}/withdraw",
            "Withdraw (owner)",
            None,
            post(withdraw),
        )
        .returns(body::<AccessRequest>),
        op(
            M::POST,
            "/v1/requests/{id}/revoke",
            "Revoke an approved request (admins)",
            Some(body::<Revocation>),
            post(revoke),
        )
        .returns(body::<AccessRequest>),
        op(
            M::GET,
            "/v1/requests/{id}/summary",
            "The selection summary of the current round: participants, rows and fields per dataset, collections; disclosure-controlled (owner, collaborators, reviewers; admins without the fields)",
            None,
            get(request_summary),
        )
        .returns(body::<tre_domain::summary::SelectionSummary>)
        .errors(&[
            (404, "no such request, or the caller may not see it"),
            (409, "computing: the round's cohort is not counted yet (Retry-After)"),
        ]),
        op(
            M::GET,
            "/v1/requests/{id}/history",
            "State changes and decisions, in order",
            None,
            get(request_history),
        )
        .returns(body::<Items<tre_store::HistoryEntry>>),
    ]
}

// The body of `POST /v1/requests`, for the API document only: the handler
// parses it in two steps (`#[serde(flatten)]` loses the path of a field
// that does not fit).
/// A new draft access request to an environment.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct CreateRequestBody {
    /// The environment the request is made to.
    environment_id: String,
    #[serde(flatten)]
    request: NewRequest,
}

/// `{environment_id, ...NewRequest}`. Parsed in two steps (not with
/// `#[serde(flatten)]`, which loses the path of a field that does not fit).
async fn create_request(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Body(mut body): Body<serde_json::Map<String, serde_json::Value>>,
) -> Result<Response> {
    let environment = match body.remove("environment_id") {
        Some(serde_json::Value::String(id)) => EnvironmentId(id),
        _ => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                "expected the environment's id (a string)",
            )
            .with_field("environment_id"));
        }
    };
    let new: NewRequest = crate::parse(&serde_json::to_vec(&body).expect("a map serializes"))?;
    Ok(created(
        state.app.create_request(&caller, &environment, new).await?,
    ))
}

async fn get_request(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Response> {
    Ok(Json(state.app.request(&caller, &RequestId(id)).await?).into_response())
}

async fn command(
    state: &AppState,
    caller: &tre_app::Caller,
    id: String,
    command: RequestCommand,
) -> Result<Response> {
    Ok(Json(
        state
            .app
            .request_command(caller, &RequestId(id), command)
            .await?,
    )
    .into_response())
}

async fn update_request(
    State(state): State<AppState>,
    Allowed(caller, _): Allowed<EditsRequest>,
    Path(id): Path<String>,
    Body(update): Body<RequestUpdate>,
) -> Result<Response> {
    command(&state, &caller, id, RequestCommand::Update(update)).await
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Collaborators {
    #[serde(deserialize_with = "tre_domain::schema::unique")]
    collaborators: BTreeSet<UserId>,
}

async fn put_collaborators(
    State(state): State<AppState>,
    Allowed(caller, _): Allowed<EditsRequest>,
    Path(id): Path<String>,
    Body(body): Body<Collaborators>,
) -> Result<Response> {
    command(
        &state,
        &caller,
        id,
        RequestCommand::SetCollaborators(body.collaborators),
    )
    .await
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Revocation {
    /// Why, for the record: 1 to 20,000 characters, not blank.
    #[schemars(length(min = 1, max = 20_000), regex(pattern = tre_domain::schema::REQUIRED_TEXT))]
    reason: String,
}

async fn submit(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Response> {
    command(&state, &caller, id, RequestCommand::Submit).await
}

async fn withdraw(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Response> {
    command(&state, &caller, id, RequestCommand::Withdraw).await
}

async fn revoke(
    State(state): State<AppState>,
    Allowed(caller, _): Allowed<RevokesRequest>,
    Path(id): Path<String>,
    Body(body): Body<Revocation>,
) -> Result<Response> {
    command(
        &state,
        &caller,
        id,
        RequestCommand::Revoke {
            reason: body.reason,
        },
    )
    .await
}

async fn request_summary(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Response> {
    match state.app.selection_summary(&caller, &RequestId(id)).await? {
        Some(summary) => Ok(Json(summary).into_response()),
        None => Err(ApiError::computing(
            "the summary is made when the submitted cohort is counted; try again shortly",
        )),
    }
}

async fn request_history(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Response> {
    Ok(
        Json(json!({"items": state.app.request_history(&caller, &RequestId(id)).await?}))
            .into_response(),
    )
}

/// Which of the caller's requests, a page at a time.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RequestQuery {
    /// The caller's part in them; all when absent.
    #[serde(default)]
    #[schemars(schema_with = "role_names")]
    role: Option<String>,
    /// Only requests in this state.
    #[serde(default)]
    #[schemars(schema_with = "state_names")]
    state: Option<String>,
    /// 1 to 200; default 50.
    #[schemars(range(min = 1, max = 200))]
    limit: Option<usize>,
    /// The `next_cursor` of the page before.
    cursor: Option<String>,
}

fn role_names(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"enum": ["owner", "collaborator", "reviewer", null]})
}

fn state_names(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut names: Vec<serde_json::Value> = STATES.iter().map(|s| (*s).into()).collect();
    names.push(serde_json::Value::Null);
    schemars::json_schema!({"enum": names})
}

const STATES: [&str; 9] = [
    "draft",
    "checking",
    "in_review",
    "in_revision",
    "approved",
    "rejected",
    "withdrawn",
    "revoked",
    "expired",
];

/// The caller's requests: `role=owner|collaborator|reviewer` (all when
/// absent), `state=...`, paged by `limit` and `cursor`.
async fn list_requests(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Params(q): Params<RequestQuery>,
) -> Result<Response> {
    let role = match q.role.as_deref() {
        None => None,
        Some(r) => Some(RequestRole::parse(r).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                "expected owner, collaborator or reviewer",
            )
            .with_field("role")
        })?),
    };
    if let Some(s) = &q.state
        && !STATES.contains(&s.as_str())
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!("expected one of {}", STATES.join(", ")),
        )
        .with_field("state"));
    }
    let page = state
        .app
        .list_requests(
            &caller,
            role,
            q.state.as_deref(),
            q.cursor.as_deref().unwrap_or(""),
            limit(q.limit)?,
        )
        .await?;
    Ok(Json(page).into_response())
}
