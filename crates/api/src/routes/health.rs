//! Liveness, readiness, this document and the metrics page (no token).

use axum::Json;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::{Endpoint, public};
use tre_store::Store;

use crate::{AppState, QueueHealth};

pub(super) fn endpoints() -> Vec<Endpoint> {
    use Method as M;
    vec![
        public(M::GET, "/healthz", "The process is up", get(healthz)),
        public(
            M::GET,
            "/readyz",
            "The database (and queue) answer",
            get(readyz),
        ),
        public(
            M::GET,
            "/openapi.json",
            "This document",
            get(crate::openapi::document),
        ),
        public(
            M::GET,
            "/metrics",
            "Prometheus metrics",
            get(crate::metrics::page),
        )
        .text(),
    ]
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// How long `/readyz` waits for each dependency.
const READY_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether the database and the queue answer, now.
pub(crate) async fn dependencies(state: &AppState) -> (bool, bool) {
    readiness_of(state.store(), state.queue_health.as_ref()).await
}

/// Whether `store` and the queue `health` asks (none: nothing to ask)
/// answer within [`READY_WITHIN`].
async fn readiness_of(store: &Store, health: Option<&QueueHealth>) -> (bool, bool) {
    let database = matches!(
        tokio::time::timeout(READY_WITHIN, store.ping()).await,
        Ok(Ok(()))
    );
    let queue = match health {
        None => true,
        Some(health) => matches!(
            tokio::time::timeout(READY_WITHIN, health()).await,
            Ok(Ok(()))
        ),
    };
    (database, queue)
}

/// A `/readyz` answer for a process on `store` and the queue `health` asks:
/// 200 when both answer now, else 503 (with `Retry-After`); the body says
/// which. The API's, and every worker's (`tre worker --metrics-listen`).
pub async fn readiness(store: &Store, health: Option<&QueueHealth>) -> Response {
    let (database, queue) = readiness_of(store, health).await;
    let mut response = Json(json!({"database": database, "queue": queue})).into_response();
    if !(database && queue) {
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        response
            .headers_mut()
            .insert("retry-after", axum::http::HeaderValue::from_static("1"));
    }
    response
}

/// Ready when the database and the queue both answer, now.
async fn readyz(State(state): State<AppState>) -> Response {
    readiness(state.store(), state.queue_health.as_ref()).await
}
