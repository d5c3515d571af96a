//! The `/v1` routes. Each handler authenticates, parses and calls the store.

use std::collections::BTreeSet;

use axum::extract::{Path, State};
use axum::http::Method;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, patch, post, put};
use axum::{Json, Router};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tre_domain::{AccessRequest, Environment, Project};
use tre_domain::{
    DecisionInput, EnvironmentCommand, EnvironmentId, Inventory, NewEnvironment, NewRequest,
    Policies, Principal, ProjectId, RequestCommand, RequestId, RequestUpdate, ReviewPipeline,
    UserId, Verdict, Visibility,
};
use tre_store::{AuditQuery, DispenseProgress, Page as ListPage, RequestRole};

use crate::extract::Params;
use crate::{ApiError, AppState, Auth, Body};

/// One operation of the API. The router and `/openapi.json` are both built
/// from [`endpoints`], so the documentation cannot drift from the routes.
pub(crate) struct Endpoint {
    pub(crate) method: Method,
    pub(crate) path: &'static str,
    pub(crate) summary: &'static str,
    /// The JSON Schema of the body it takes.
    pub(crate) body: Option<BodySchema>,
    /// The JSON Schema of its success answer (else: an object).
    pub(crate) response: Option<BodySchema>,
    /// Whether it needs a bearer token.
    pub(crate) auth: bool,
    /// It answers an SVG image, not JSON.
    pub(crate) svg: bool,
    /// It answers plain text (Prometheus' format), not JSON.
    pub(crate) text: bool,
    /// It takes a tab-separated text body, not JSON.
    pub(crate) tsv: bool,
    /// Error statuses documented one by one (each also falls under the
    /// `default` error answer), with what they mean here.
    pub(crate) errors: &'static [(u16, &'static str)],
    handler: MethodRouter<AppState>,
}

/// Registers a body's schema (and those it refers to) with the generator
/// and returns a reference to it.
pub(crate) type BodySchema = fn(&mut SchemaGenerator) -> Schema;

pub(crate) fn body<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

pub(crate) fn op(
    method: Method,
    path: &'static str,
    summary: &'static str,
    body: Option<BodySchema>,
    handler: MethodRouter<AppState>,
) -> Endpoint {
    Endpoint {
        auth: !matches!(path, "/healthz" | "/readyz" | "/openapi.json" | "/metrics"),
        method,
        path,
        summary,
        body,
        response: None,
        svg: false,
        text: false,
        tsv: false,
        errors: &[],
        handler,
    }
}

impl Endpoint {
    /// Documents what it answers on success.
    pub(crate) fn returns(mut self, schema: BodySchema) -> Self {
        self.response = Some(schema);
        self
    }

    /// Documents the error statuses it answers, with their meaning.
    pub(crate) fn errors(mut self, errors: &'static [(u16, &'static str)]) -> Self {
        self.errors = errors;
        self
    }

    /// Documents plain text as what it answers on success.
    pub(crate) fn text(mut self) -> Self {
        self.text = true;
        self
    }

    /// Documents a tab-separated text body as what it takes.
    pub(crate) fn tsv(mut self) -> Self {
        self.tsv = true;
        self
    }

    /// Documents an SVG image as what it answers on success.
    pub(crate) fn svg(mut self) -> Self {
        self.svg = true;
        self
    }
}

/// Every operation: these and the operators' (`/v1/ops`).
pub(crate) fn all_endpoints() -> Vec<Endpoint> {
    let mut all = endpoints();
    all.extend(crate::showcase::endpoints());
    all.extend(crate::files::endpoints());
    all.extend(crate::tokens::endpoints());
    all.extend(crate::ops::endpoints());
    all
}

fn endpoints() -> Vec<Endpoint> {
    use Method as M;
    vec![
        op(M::GET, "/healthz", "The process is up", None, get(healthz)),
        op(
            M::GET,
            "/readyz",
            "The database (and queue) answer",
            None,
            get(readyz),
        ),
        op(
            M::GET,
            "/openapi.json",
            "This document",
            None,
            get(crate::openapi::document),
        ),
        op(
            M::GET,
            "/metrics",
            "Prometheus metrics",
            None,
            get(crate::metrics::page),
        )
        .text(),
        op(
            M::POST,
            "/v1/environments",
            "Create an environment (platform admins)",
            Some(body::<NewEnvironment>),
            post(create_environment),
        )
        .returns(body::<Environment>),
        op(
            M::GET,
            "/v1/environments",
            "The resource center: environments the caller may discover",
            None,
            get(list_environments),
        )
        .returns(body::<ListPage<Environment>>),
        op(
            M::GET,
            "/v1/environments/{id}",
            "One environment",
            None,
            get(get_environment),
        )
        .returns(body::<Environment>),
        op(
            M::PATCH,
            "/v1/environments/{id}",
            "Rename or describe (admins)",
            Some(body::<EnvironmentDetails>),
            patch(update_environment),
        )
        .returns(body::<Environment>),
        op(
            M::PUT,
            "/v1/environments/{id}/inventory",
            "Set (draft) or stage (maintenance) the inventory",
            Some(body::<Inventory>),
            put(put_inventory),
        )
        .returns(body::<Environment>),
        op(
            M::PUT,
            "/v1/environments/{id}/pipeline",
            "Set the review pipeline (only reviewers after publish)",
            Some(body::<ReviewPipeline>),
            put(put_pipeline),
        )
        .returns(body::<Environment>),
        op(
            M::PUT,
            "/v1/environments/{id}/members",
            "Set the authorized users and groups",
            Some(body::<Members>),
            put(put_members),
        )
        .returns(body::<Environment>),
        op(
            M::PUT,
            "/v1/environments/{id}/admins",
            "Set the environment's admins",
            Some(body::<Admins>),
            put(put_admins),
        )
        .returns(body::<Environment>),
        op(
            M::PUT,
            "/v1/environments/{id}/policies",
            "Set the custodian's policies",
            Some(body::<Policies>),
            put(put_policies),
        )
        .returns(body::<Environment>),
        op(
            M::PUT,
            "/v1/environments/{id}/visibility",
            "Make public or private",
            Some(body::<VisibilityBody>),
            put(put_visibility),
        )
        .returns(body::<Environment>),
        op(
            M::POST,
            "/v1/environments/{id}/publish",
            "draft -> active",
            None,
            post(publish),
        )
        .returns(body::<Environment>),
        op(
            M::POST,
            "/v1/environments/{id}/maintenance",
            "active -> maintenance",
            None,
            post(maintenance),
        )
        .returns(body::<Environment>),
        op(
            M::POST,
            "/v1/environments/{id}/reactivate",
            "maintenance -> active",
            None,
            post(reactivate),
        )
        .returns(body::<Environment>),
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
        .returns(body::<ListPage<AccessRequest>>),
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
        op(
            M::POST,
            "/v1/requests/{id}/decisions",
            "Decide the current stage (its reviewers)",
            Some(body::<DecisionBody>),
            post(decide),
        )
        .returns(body::<AccessRequest>),
        op(
            M::GET,
            "/v1/requests/{id}/decisions",
            "Every decision of the request",
            None,
            get(decisions),
        )
        .returns(body::<Items<tre_domain::Decision>>),
        op(
            M::POST,
            "/v1/requests/{id}/projects",
            "Create the project of an approved request",
            None,
            post(create_project),
        )
        .returns(body::<Project>),
        op(
            M::GET,
            "/v1/reviews",
            "The caller's review queue, each request with its selection summary",
            None,
            get(review_queue),
        )
        .returns(body::<ListPage<ReviewItem>>),
        op(
            M::GET,
            "/v1/projects",
            "The caller's projects",
            None,
            get(list_projects),
        )
        .returns(body::<ListPage<Project>>),
        op(
            M::GET,
            "/v1/projects/{id}",
            "One project (members only): state, dispense progress (units, rows, bytes, bulk files and their bytes) and, once ready, its manifest",
            None,
            get(get_project),
        )
        .returns(body::<ProjectView>),
        op(
            M::GET,
            "/v1/jobs/{id}",
            "A job the caller's call started",
            None,
            get(get_job),
        )
        .returns(body::<tre_store::OutboxJob>),
        op(
            M::GET,
            "/v1/audit",
            "Audit events (environment or platform admins)",
            None,
            get(audit),
        )
        .returns(body::<AuditPage>),
        op(
            M::GET,
            "/v1/notifications",
            "The caller's inbox, newest first",
            None,
            get(notifications),
        )
        .returns(body::<Items<tre_store::Notification>>),
    ]
}

pub(crate) fn routes() -> Router<AppState> {
    all_endpoints()
        .into_iter()
        .fold(Router::new(), |router, e| router.route(e.path, e.handler))
        .fallback(|| async { ApiError::not_found("route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
}

type Result<T> = std::result::Result<T, ApiError>;

fn created(value: impl Serialize) -> Response {
    (StatusCode::CREATED, Json(value)).into_response()
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// How long `/readyz` waits for each dependency.
const READY_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Ready when the database and the queue both answer, now: 503 (with
/// `Retry-After`) and which one failed otherwise.
async fn readyz(State(state): State<AppState>) -> Response {
    let database = matches!(
        tokio::time::timeout(READY_WITHIN, state.store.ping()).await,
        Ok(Ok(()))
    );
    let queue = match &state.queue_health {
        None => true,
        Some(health) => matches!(
            tokio::time::timeout(READY_WITHIN, health()).await,
            Ok(Ok(()))
        ),
    };
    let mut response = Json(json!({"database": database, "queue": queue})).into_response();
    if !(database && queue) {
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        response
            .headers_mut()
            .insert("retry-after", axum::http::HeaderValue::from_static("1"));
    }
    response
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
    Params(page): Params<Page>,
) -> Result<Response> {
    let page = state
        .store
        .environments_page(
            &caller,
            page.cursor.as_deref().unwrap_or(""),
            limit(page.limit)?,
        )
        .await?;
    Ok(Json(page).into_response())
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

#[derive(Debug, Deserialize, JsonSchema)]
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

#[derive(Debug, Deserialize, JsonSchema)]
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

#[derive(Debug, Deserialize, JsonSchema)]
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

#[derive(Debug, Deserialize, JsonSchema)]
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

async fn publish(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Response> {
    configure(&state, &caller, id, EnvironmentCommand::Publish).await
}

async fn maintenance(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Response> {
    configure(&state, &caller, id, EnvironmentCommand::EnterMaintenance).await
}

async fn reactivate(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Response> {
    configure(&state, &caller, id, EnvironmentCommand::Reactivate).await
}

/// A list answered whole, for the API document only.
#[derive(JsonSchema)]
#[schemars(rename = "ListOf{T}")]
#[allow(dead_code)]
struct Items<T> {
    items: Vec<T>,
}

/// A page of the audit log, for the API document only.
#[derive(JsonSchema)]
#[allow(dead_code)]
struct AuditPage {
    items: Vec<tre_domain::audit::AuditEvent>,
    /// Pass as `after` for the next page; none when the page is empty.
    next_cursor: Option<i64>,
}

// The body of `POST /v1/requests`, for the API document only: the handler
// parses it in two steps (`#[serde(flatten)]` loses the path of a field
// that does not fit).
/// A new draft access request to an environment.
#[derive(JsonSchema)]
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

#[derive(Debug, Deserialize, JsonSchema)]
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

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Revocation {
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
    Auth(caller): Auth,
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
    match state
        .store
        .selection_summary(&caller, &RequestId(id))
        .await?
    {
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
        Json(json!({"items": state.store.request_history(&caller, &RequestId(id)).await?}))
            .into_response(),
    )
}

/// `{stage, decision: approve|reject|return, comment, final?}`; `stage` is
/// the 0-based index the request shows in its `stage` field.
#[derive(Debug, Deserialize, JsonSchema)]
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

/// One project with how far its dispense got and, once ready, its manifest.
#[derive(Serialize, JsonSchema)]
struct ProjectView {
    #[serde(flatten)]
    project: Project,
    progress: DispenseProgress,
    /// What the dispense wrote (files, rows, SHA-256 checksums), once the
    /// project is ready; null before.
    manifest: Option<serde_json::Value>,
}

async fn get_project(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Response> {
    let id = ProjectId(id);
    let project = state.store.project(&caller, &id).await?;
    let progress = state.store.dispense_progress(&id).await?;
    let manifest = state.store.dispense_manifest(&id).await?;
    Ok(Json(ProjectView {
        project,
        progress,
        manifest,
    })
    .into_response())
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
    Params(params): Params<AuditParams>,
) -> Result<Response> {
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

pub(crate) fn limit(limit: Option<usize>) -> Result<usize> {
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

/// Requests waiting on a stage the caller reviews and has not decided,
/// paged by `limit` and `cursor`.
/// A request waiting for the caller's decision, with what it would release.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ReviewItem {
    #[serde(flatten)]
    request: AccessRequest,
    /// The selection summary of its current round; `null` until its cohort
    /// is counted.
    summary: Option<tre_domain::summary::SelectionSummary>,
}

async fn review_queue(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Params(q): Params<Page>,
) -> Result<Response> {
    let page = state
        .store
        .review_queue(&caller, q.cursor.as_deref().unwrap_or(""), limit(q.limit)?)
        .await?;
    let mut summaries = state.store.summaries_for(&page.items).await?;
    let items: Vec<ReviewItem> = page
        .items
        .into_iter()
        .map(|request| ReviewItem {
            summary: summaries.remove(&request.id),
            request,
        })
        .collect();
    Ok(Json(ListPage {
        items,
        next_cursor: page.next_cursor,
    })
    .into_response())
}

async fn list_projects(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Params(q): Params<Page>,
) -> Result<Response> {
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InboxQuery {
    limit: Option<usize>,
}

/// The caller's notifications (review requests, outcomes, reminders).
async fn notifications(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Params(q): Params<InboxQuery>,
) -> Result<Response> {
    let items = state
        .store
        .inbox(&caller.actor.id, limit(q.limit)? as u32)
        .await?;
    Ok(Json(json!({"items": items})).into_response())
}
