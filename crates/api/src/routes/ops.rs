//! `/v1/ops`: the job runtime's operator controls over HTTP, for platform
//! admins (the same as `tre jobs`): find jobs, retry or discard many at once
//! after a dry run, pause and resume pools for the fleet, and each pool's
//! due work. Every change is audited under the caller.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tre_app::Caller;
use tre_domain::{Action, Object, authorize};
use tre_jobs::{FleetLoad, Pool};
use tre_jobs::{JobState, OutboxJob};
use tre_store::{BulkOutcome, JobChange, JobFilter, Page as ListPage, StoreError};

use super::{Endpoint, body, op};
use crate::extract::Params;
use crate::guard::{Allowed, OperatesJobs};
use crate::{ApiError, AppState, Auth, Body};

type Result<T> = std::result::Result<T, ApiError>;

pub(crate) fn endpoints() -> Vec<Endpoint> {
    use Method as M;
    vec![
        op(
            M::GET,
            "/v1/ops/jobs",
            "Jobs by state, kind, pool, age and payload text, by key (platform admins)",
            None,
            get(list_jobs),
        )
        .returns(body::<ListPage<OutboxJob>>)
        .query::<ListQuery>(),
        op(
            M::POST,
            "/v1/ops/jobs/retry",
            "Put matching dead jobs back with fresh attempts; dry_run only counts (platform admins)",
            Some(body::<BulkBody>),
            post(retry_jobs),
        )
        .returns(body::<BulkOutcome>),
        op(
            M::POST,
            "/v1/ops/jobs/discard",
            "Give matching pending, queued or dead jobs up; dry_run only counts (platform admins)",
            Some(body::<BulkBody>),
            post(discard_jobs),
        )
        .returns(body::<BulkOutcome>),
        op(
            M::POST,
            "/v1/ops/pools/{pool}/pause",
            "Stop the fleet dispatching and claiming a pool's jobs (platform admins)",
            None,
            post(pause),
        )
        .returns(body::<PoolState>),
        op(
            M::POST,
            "/v1/ops/pools/{pool}/resume",
            "Let the fleet run a paused pool's jobs again (platform admins)",
            None,
            post(resume),
        )
        .returns(body::<PoolState>),
        op(
            M::GET,
            "/v1/ops/stats",
            "Jobs per state, each pool's due work and oldest wait, unrunnable kinds, paused pools (platform admins)",
            None,
            get(stats),
        ),
    ]
}

/// Which jobs (every part optional) and whether only to count them.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct BulkBody {
    /// Only these jobs.
    #[serde(default)]
    keys: Vec<String>,
    state: Option<JobState>,
    /// Only these kinds.
    #[serde(default)]
    kinds: Vec<String>,
    /// Only the kinds of this pool: notify, review or dispense.
    #[serde(default)]
    #[schemars(schema_with = "pool_name")]
    pool: Option<String>,
    /// Only jobs created more than this many seconds ago.
    older_than_s: Option<u64>,
    /// Only jobs whose payload contains this text.
    payload_contains: Option<String>,
    /// Only count and list what would change.
    #[serde(default)]
    dry_run: bool,
}

/// Which jobs, a page at a time.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Only jobs in this state.
    #[schemars(with = "Option<JobState>")]
    state: Option<String>,
    /// Only jobs of this kind.
    kind: Option<String>,
    /// Only the kinds of this pool.
    #[serde(default)]
    #[schemars(schema_with = "pool_name")]
    pool: Option<String>,
    /// Only jobs created more than this many seconds ago.
    older_than_s: Option<u64>,
    /// Only jobs whose payload contains this text.
    payload: Option<String>,
    /// 1 to 200; default 50.
    #[schemars(range(min = 1, max = 200))]
    limit: Option<usize>,
    /// The `next_cursor` of the page before.
    cursor: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
struct PoolState {
    pool: String,
    paused: bool,
}

/// A pool's name, or null.
fn pool_name(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut names: Vec<serde_json::Value> = Pool::ALL.iter().map(|p| p.as_str().into()).collect();
    names.push(serde_json::Value::Null);
    schemars::json_schema!({"enum": names})
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message).with_field(field)
}

/// The filter, with a pool turned into its kinds.
fn filter(
    state: &AppState,
    keys: Vec<String>,
    job_state: Option<JobState>,
    mut kinds: Vec<String>,
    pool: Option<&str>,
    older_than_s: Option<u64>,
    payload_contains: Option<String>,
) -> Result<JobFilter> {
    if let Some(pool) = pool {
        let pool = Pool::parse(pool)
            .ok_or_else(|| invalid("pool", "expected notify, review or dispense"))?;
        kinds.extend(
            state
                .policies
                .iter()
                .filter(|p| p.pool == pool)
                .map(|p| p.kind.to_owned()),
        );
    }
    Ok(JobFilter {
        keys,
        state: job_state,
        kinds,
        created_before: older_than_s.map(|s| {
            let millis = i64::try_from(s).unwrap_or(i64::MAX).saturating_mul(1000);
            tre_store::now().0.saturating_sub(millis)
        }),
        payload_contains,
    })
}

async fn list_jobs(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Params(q): Params<ListQuery>,
) -> Result<Response> {
    let job_state = match q.state.as_deref() {
        None => None,
        Some(s) => Some(JobState::parse(s).ok_or_else(|| {
            let states: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
            invalid("state", format!("expected one of {}", states.join(", ")))
        })?),
    };
    let filter = filter(
        &state,
        Vec::new(),
        job_state,
        q.kind.into_iter().collect(),
        q.pool.as_deref(),
        q.older_than_s,
        q.payload,
    )?;
    let page = state
        .app
        .list_jobs(
            &caller,
            &filter,
            q.cursor.as_deref().unwrap_or(""),
            super::limit(q.limit)?,
        )
        .await?;
    Ok(Json(page).into_response())
}

async fn bulk(
    state: &AppState,
    caller: &Caller,
    body: BulkBody,
    change: JobChange,
) -> Result<Response> {
    let dry_run = body.dry_run;
    let filter = filter(
        state,
        body.keys,
        body.state,
        body.kinds,
        body.pool.as_deref(),
        body.older_than_s,
        body.payload_contains,
    )?;
    let outcome = state
        .app
        .change_jobs(caller, &filter, dry_run, change)
        .await?;
    Ok(Json(outcome).into_response())
}

async fn retry_jobs(
    State(state): State<AppState>,
    Allowed(caller, _): Allowed<OperatesJobs>,
    Body(body): Body<BulkBody>,
) -> Result<Response> {
    bulk(&state, &caller, body, JobChange::Retry).await
}

async fn discard_jobs(
    State(state): State<AppState>,
    Allowed(caller, _): Allowed<OperatesJobs>,
    Body(body): Body<BulkBody>,
) -> Result<Response> {
    bulk(&state, &caller, body, JobChange::Discard).await
}

async fn set_paused(
    state: &AppState,
    caller: &Caller,
    pool: &str,
    paused: bool,
) -> Result<Response> {
    let pool = Pool::parse(pool).ok_or_else(|| ApiError::not_found(&format!("pool {pool}")))?;
    state
        .app
        .set_pool_paused(caller, pool.as_str(), paused)
        .await?;
    Ok(Json(PoolState {
        pool: pool.as_str().to_owned(),
        paused,
    })
    .into_response())
}

async fn pause(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(pool): Path<String>,
) -> Result<Response> {
    set_paused(&state, &caller, &pool, true).await
}

async fn resume(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(pool): Path<String>,
) -> Result<Response> {
    set_paused(&state, &caller, &pool, false).await
}

async fn stats(State(state): State<AppState>, Auth(caller): Auth) -> Result<Response> {
    authorize(&caller.actor, Action::OperateJobs, &Object::Platform)
        .map_err(|d| ApiError::from(StoreError::Forbidden(d)))?;
    let load = FleetLoad::read(&state.store().jobs(), &state.policies, tre_store::now()).await?;
    Ok(Json(json!({
        "states": state.store().jobs().job_counts().await?,
        "pools": load.pools,
        "unrunnable": load.unrunnable,
        "paused": state.store().jobs().paused_pools().await?,
    }))
    .into_response())
}
