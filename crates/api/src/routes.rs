//! The `/v1` routes. Each handler authenticates, parses and calls the store.

use std::collections::BTreeSet;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tre_domain::{
    DecisionInput, EnvironmentCommand, EnvironmentId, Inventory, NewEnvironment, NewRequest,
    Policies, Principal, ProjectId, RequestCommand, RequestId, RequestUpdate, ReviewPipeline,
    UserId, Verdict, Visibility,
};
use tre_store::{AuditQuery, RequestRole};

use crate::{ApiError, AppState, Auth, Body};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route(
            "/v1/environments",
            post(create_environment).get(list_environments),
        )
        .route(
            "/v1/environments/{id}",
            get(get_environment).patch(update_environment),
        )
        .route("/v1/environments/{id}/inventory", put(put_inventory))
        .route("/v1/environments/{id}/pipeline", put(put_pipeline))
        .route("/v1/environments/{id}/members", put(put_members))
        .route("/v1/environments/{id}/admins", put(put_admins))
        .route("/v1/environments/{id}/policies", put(put_policies))
        .route("/v1/environments/{id}/visibility", put(put_visibility))
        .route(
            "/v1/environments/{id}/{transition}",
            post(change_environment_state),
        )
        .route("/v1/requests", post(create_request).get(list_requests))
        .route("/v1/reviews", get(review_queue))
        .route("/v1/projects", get(list_projects))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/requests/{id}", get(get_request).patch(update_request))
        .route("/v1/requests/{id}/collaborators", put(put_collaborators))
        .route("/v1/requests/{id}/history", get(request_history))
        .route("/v1/requests/{id}/decisions", post(decide).get(decisions))
        .route("/v1/requests/{id}/projects", post(create_project))
        .route("/v1/requests/{id}/{transition}", post(change_request_state))
        .route("/v1/projects/{id}", get(get_project))
        .route("/v1/audit", get(audit))
        .fallback(|| async { ApiError::not_found("route") })
}

type Result<T> = std::result::Result<T, ApiError>;

fn created(value: impl serde::Serialize) -> Response {
    (StatusCode::CREATED, Json(value)).into_response()
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<AppState>) -> Response {
    let database = state.store.ping().await.is_ok();
    let queue = state.queue_ready.is_none_or(|ready| ready());
    let status = if database && queue {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({"database": database, "queue": queue}))).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    limit: Option<usize>,
    cursor: Option<String>,
}

async fn create_environment(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Body(new): Body<NewEnvironment>,
) -> Result<Response> {
    Ok(created(state.store.create_environment(&caller, new).await?))
}

/// The resource center: environments the caller may discover, by id,
/// `limit` (default 50, at most 200) at a time from `cursor`.
async fn list_environments(
    State(state): State<AppState>,
    Auth(caller): Auth,
    page: std::result::Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>> {
    let Query(page) =
        page.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", e.body_text()))?;
    let limit = page.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "must be between 1 and 200",
        )
        .with_field("limit"));
    }
    let mut all = state.store.list_environments(&caller).await?;
    all.sort_by(|a, b| a.id.cmp(&b.id));
    let items: Vec<_> = all
        .into_iter()
        .filter(|e| {
            page.cursor
                .as_ref()
                .is_none_or(|c| e.id.0.as_str() > c.as_str())
        })
        .take(limit + 1)
        .collect();
    let next = (items.len() > limit).then(|| items[limit - 1].id.clone());
    let items: Vec<_> = items.into_iter().take(limit).collect();
    Ok(Json(json!({"items": items, "next_cursor": next})))
}

async fn get_environment(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Response> {
    Ok(Json(state.store.environment(&caller, &EnvironmentId(id)).await?).into_response())
}

async fn configure(
    state: &AppState,
    caller: &tre_store::Caller,
    id: String,
    command: EnvironmentCommand,
) -> Result<Response> {
    Ok(Json(
        state
            .store
            .configure_environment(caller, &EnvironmentId(id), command)
            .await?,
    )
    .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvironmentDetails {
    name: Option<String>,
    description: Option<String>,
}

async fn update_environment(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Body(details): Body<EnvironmentDetails>,
) -> Result<Response> {
    let command = EnvironmentCommand::UpdateDetails {
        name: details.name,
        description: details.description,
    };
    configure(&state, &caller, id, command).await
}

async fn put_inventory(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Body(inventory): Body<Inventory>,
) -> Result<Response> {
    configure(
        &state,
        &caller,
        id,
        EnvironmentCommand::SetInventory(inventory),
    )
    .await
}

async fn put_pipeline(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Body(pipeline): Body<ReviewPipeline>,
) -> Result<Response> {
    configure(
        &state,
        &caller,
        id,
        EnvironmentCommand::SetPipeline(pipeline),
    )
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Members {
    members: BTreeSet<Principal>,
}

async fn put_members(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Body(body): Body<Members>,
) -> Result<Response> {
    configure(
        &state,
        &caller,
        id,
        EnvironmentCommand::SetMembers(body.members),
    )
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Admins {
    admins: BTreeSet<UserId>,
}

async fn put_admins(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Body(body): Body<Admins>,
) -> Result<Response> {
    configure(
        &state,
        &caller,
        id,
        EnvironmentCommand::SetAdmins(body.admins),
    )
    .await
}

async fn put_policies(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Body(policies): Body<Policies>,
) -> Result<Response> {
    configure(
        &state,
        &caller,
        id,
        EnvironmentCommand::SetPolicies(policies),
    )
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VisibilityBody {
    visibility: Visibility,
}

async fn put_visibility(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Body(body): Body<VisibilityBody>,
) -> Result<Response> {
    configure(
        &state,
        &caller,
        id,
        EnvironmentCommand::SetVisibility(body.visibility),
    )
    .await
}

async fn change_environment_state(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((id, transition)): Path<(String, String)>,
) -> Result<Response> {
    let command = match transition.as_str() {
        "publish" => EnvironmentCommand::Publish,
        "maintenance" => EnvironmentCommand::EnterMaintenance,
        "reactivate" => EnvironmentCommand::Reactivate,
        _ => return Err(ApiError::not_found("route")),
    };
    configure(&state, &caller, id, command).await
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
        state
            .store
            .create_request(&caller, &environment, new)
            .await?,
    ))
}

async fn get_request(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Response> {
    Ok(Json(state.store.request(&caller, &RequestId(id)).await?).into_response())
}

async fn command(
    state: &AppState,
    caller: &tre_store::Caller,
    id: String,
    command: RequestCommand,
) -> Result<Response> {
    Ok(Json(
        state
            .store
            .request_command(caller, &RequestId(id), command)
            .await?,
    )
    .into_response())
}

async fn update_request(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Body(update): Body<RequestUpdate>,
) -> Result<Response> {
    command(&state, &caller, id, RequestCommand::Update(update)).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Collaborators {
    collaborators: BTreeSet<UserId>,
}

async fn put_collaborators(
    State(state): State<AppState>,
    Auth(caller): Auth,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Revocation {
    reason: String,
}

async fn change_request_state(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((id, transition)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response> {
    let cmd = match transition.as_str() {
        "submit" => RequestCommand::Submit,
        "withdraw" => RequestCommand::Withdraw,
        "revoke" => {
            let body: Revocation = crate::parse(&body)?;
            RequestCommand::Revoke {
                reason: body.reason,
            }
        }
        _ => return Err(ApiError::not_found("route")),
    };
    command(&state, &caller, id, cmd).await
}

async fn request_history(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Response> {
    Ok(
        Json(json!({"items": state.store.request_history(&caller, &RequestId(id)).await?}))
            .into_response(),
    )
}

/// `{stage, decision: approve|reject|return, comment, final?}`; `stage` is
/// the 0-based index the request shows in its `stage` field.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    stage: usize,
    decision: Verdict,
    #[serde(default)]
    comment: String,
    #[serde(default, rename = "final")]
    is_final: bool,
}

async fn decide(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Body(body): Body<DecisionBody>,
) -> Result<Response> {
    let input = DecisionInput {
        stage: body.stage,
        verdict: body.decision,
        is_final: body.is_final,
        comment: body.comment,
    };
    Ok(created(
        state.store.decide(&caller, &RequestId(id), input).await?,
    ))
}

async fn decisions(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Response> {
    Ok(
        Json(json!({"items": state.store.decisions(&caller, &RequestId(id)).await?}))
            .into_response(),
    )
}

async fn create_project(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Response> {
    Ok(created(
        state.store.create_project(&caller, &RequestId(id)).await?,
    ))
}

async fn get_project(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Response> {
    Ok(Json(state.store.project(&caller, &ProjectId(id)).await?).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditParams {
    environment: Option<String>,
    object: Option<String>,
    after: Option<i64>,
    limit: Option<u32>,
}

async fn audit(
    State(state): State<AppState>,
    Auth(caller): Auth,
    params: std::result::Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response> {
    let Query(params) =
        params.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", e.body_text()))?;
    let query = AuditQuery {
        environment: params.environment.map(EnvironmentId),
        object_id: params.object,
        after_seq: params.after.unwrap_or(0),
        limit: params.limit.unwrap_or(100),
    };
    let items = state.store.audit_events(&caller, &query).await?;
    let next = items.last().map(|e| e.seq);
    Ok(Json(json!({"items": items, "next_cursor": next})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestQuery {
    role: Option<String>,
    state: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

const STATES: [&str; 8] = [
    "draft",
    "in_review",
    "in_revision",
    "approved",
    "rejected",
    "withdrawn",
    "revoked",
    "expired",
];

fn limit(limit: Option<usize>) -> Result<usize> {
    let limit = limit.unwrap_or(50);
    if (1..=200).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "must be between 1 and 200",
        )
        .with_field("limit"))
    }
}

fn query<T>(
    q: std::result::Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", e.body_text()))
}

/// The caller's requests: `role=owner|collaborator|reviewer` (all when
/// absent), `state=...`, paged by `limit` and `cursor`.
async fn list_requests(
    State(state): State<AppState>,
    Auth(caller): Auth,
    q: std::result::Result<Query<RequestQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response> {
    let q = query(q)?;
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
        .store
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

/// Requests waiting on a stage the caller reviews and has not decided.
async fn review_queue(State(state): State<AppState>, Auth(caller): Auth) -> Result<Response> {
    Ok(Json(json!({"items": state.store.review_queue(&caller).await?})).into_response())
}

async fn list_projects(
    State(state): State<AppState>,
    Auth(caller): Auth,
    q: std::result::Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> Result<Response> {
    let q = query(q)?;
    let page = state
        .store
        .list_projects(&caller, q.cursor.as_deref().unwrap_or(""), limit(q.limit)?)
        .await?;
    Ok(Json(page).into_response())
}

/// A job (state, attempts, last error), for the user whose call started it.
async fn get_job(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Response> {
    Ok(Json(state.store.job_for(&caller, &id).await?).into_response())
}
