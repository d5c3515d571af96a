//! A job started by the caller's own call.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::{Endpoint, Result, body, op};
use crate::{AppState, Auth};

pub(super) fn endpoints() -> Vec<Endpoint> {
    use Method as M;
    vec![
        op(
            M::GET,
            "/v1/jobs/{id}",
            "A job the caller's call started",
            None,
            get(get_job),
        )
        .returns(body::<tre_jobs::OutboxJob>),
    ]
}

/// A job (state, attempts, last error), for the user whose call started it.
async fn get_job(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Response> {
    Ok(Json(state.app.job_for(&caller, &id).await?).into_response())
}
