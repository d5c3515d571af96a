//! The HTTP API of tre, under `/v1`: what every user and other services
//! touch. Handlers are thin: they authenticate, parse, and call the store,
//! which authorizes and applies the domain's rules in one transaction.
//!
//! Every endpoint answers errors as `{"error": {"code", "message",
//! "field"}}`; every POST accepts an `Idempotency-Key`; every response
//! carries `x-request-id` (the caller's, or a new one), which is also the
//! trace id of the audit events the call causes.

mod chart;
mod error;
mod extract;
mod guard;
mod idempotency;
pub mod inventory_check;
mod linger;
mod metrics;
mod openapi;
mod routes;
mod serde_words;
mod showcase;

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::Response;
use tracing::Instrument;
use tre_store::Store;

pub use error::ApiError;
pub use extract::{Auth, Body, parse};
pub use openapi::spec as openapi;
pub use routes::health::readiness;
pub use showcase::{CohortAnswer, CohortQuery, ask as ask_showcase};

/// Largest request body accepted. 1 MiB: inventories with many fields fit.
pub const BODY_LIMIT: usize = 1 << 20;

/// Asks the job queue whether it answers: `Err` says why not.
pub type QueueHealth = std::sync::Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync,
>;

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The use cases every route goes through (so far those of access
    /// requests, projects, lists and operators; the others are still the
    /// store's, reached through [`AppState::store`]).
    pub app: tre_app::App,
    /// Checks the job queue for `/readyz`; none when this process has no
    /// queue to answer for.
    pub queue_health: Option<QueueHealth>,
    /// Request counters and durations for `/metrics`.
    pub metrics: std::sync::Arc<metrics::HttpMetrics>,
    /// The job kinds' policies (their pools), for the operators' routes.
    /// Default: none (set by [`AppState::with_policies`]).
    pub policies: std::sync::Arc<Vec<tre_jobs::JobPolicy>>,
    /// The cohort builder, with its columns per inventory version.
    /// Default: read from environments' sources as workers read them.
    pub showcase: std::sync::Arc<tre_app::CohortBuilder>,
    /// Where dispensed project data is read from (the workers' destination
    /// store). Default: none, and reads answer 503.
    pub project_data: Option<tre_dispense::stores::ProjectReader>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("store", self.store())
            .field("queue_health", &self.queue_health.is_some())
            .finish()
    }
}

impl AppState {
    /// The store the use cases write through.
    pub fn store(&self) -> &Store {
        self.app.store()
    }

    pub fn new(store: Store) -> Self {
        let app = tre_app::App::new(store);
        Self {
            showcase: std::sync::Arc::new(tre_app::CohortBuilder::new(
                app.clone(),
                tre_dispense::Sources::default(),
            )),
            app,
            queue_health: None,
            metrics: std::sync::Arc::default(),
            policies: std::sync::Arc::default(),
            project_data: None,
        }
    }

    /// The cohort builder reads environments' sources through `sources`.
    pub fn with_sources(mut self, sources: tre_dispense::Sources) -> Self {
        self.showcase = std::sync::Arc::new(tre_app::CohortBuilder::new(self.app.clone(), sources));
        self
    }

    /// The job kinds' policies, so operators can name pools.
    pub fn with_policies(mut self, policies: Vec<tre_jobs::JobPolicy>) -> Self {
        self.policies = std::sync::Arc::new(policies);
        self
    }

    /// Project objects are read through `reader`.
    pub fn with_project_data(mut self, reader: tre_dispense::stores::ProjectReader) -> Self {
        self.project_data = Some(reader);
        self
    }

    /// `/readyz` also asks the queue through `health`.
    pub fn with_queue_health(mut self, health: QueueHealth) -> Self {
        self.queue_health = Some(health);
        self
    }
}

/// The request id: the caller's `x-request-id` when it is sane, else new.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

async fn request_id(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("http", request_id = %id, method = %req.method(), path = %req.uri().path());
    let mut response = next.run(req).instrument(span).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// A handler that panics answers 500 with the error shape (and is logged
/// with its request id) instead of dropping the connection unanswered.
async fn catch_panic(req: Request, next: Next) -> Response {
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(next.run(req))
        .catch_unwind()
        .await
    {
        Ok(response) => response,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(panic = %what, "a handler panicked");
            axum::response::IntoResponse::into_response(ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error; see the server log",
            ))
        }
    }
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    routes::routes()
        .layer(middleware::from_fn(catch_panic))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            idempotency::layer,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::layer,
        ))
        .layer(middleware::from_fn(request_id))
        .layer(middleware::from_fn(linger::layer))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Serves until `shutdown` resolves, then finishes in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// How long graceful shutdown waits by default.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
