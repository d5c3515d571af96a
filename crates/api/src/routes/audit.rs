//! The hash-chained audit log, paged, for environment and platform admins.

use axum::Json;
use axum::extract::State;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use tre_domain::EnvironmentId;
use tre_store::AuditQuery;

use super::{Endpoint, Result, body, op};
use crate::extract::Params;
use crate::{AppState, Auth};

pub(super) fn endpoints() -> Vec<Endpoint> {
    use Method as M;
    vec![
        op(
            M::GET,
            "/v1/audit",
            "Audit events (environment or platform admins)",
            None,
            get(audit),
        )
        .returns(body::<AuditPage>)
        .query::<AuditParams>(),
    ]
}

/// A page of the audit log, for the API document only.
#[derive(JsonSchema)]
#[allow(dead_code)]
struct AuditPage {
    items: Vec<tre_domain::audit::AuditEntry>,
    /// Pass as `after` for the next page; none when the page is empty.
    next_cursor: Option<i64>,
}

/// Which audit events: of one environment or object, after a sequence number.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct AuditParams {
    /// Only this environment's events (its admins may ask; else platform admins).
    environment: Option<String>,
    /// Only events about this object id.
    object: Option<String>,
    /// Events after this sequence number (the `next_cursor` of the page before).
    after: Option<i64>,
    /// How many: default 100.
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
    let events = state.app.audit_events(&caller, &query).await?;
    let next = events.last().map(|e| e.seq);
    let items: Vec<tre_domain::audit::AuditEntry> = events.into_iter().map(Into::into).collect();
    Ok(Json(json!({"items": items, "next_cursor": next})).into_response())
}
