//! The caller's inbox.

use axum::Json;
use axum::extract::State;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use super::{Endpoint, Items, Result, body, limit, op};
use crate::extract::Params;
use crate::{AppState, Auth};

pub(super) fn endpoints() -> Vec<Endpoint> {
    use Method as M;
    vec![
        op(
            M::GET,
            "/v1/notifications",
            "The caller's inbox, newest first",
            None,
            get(notifications),
        )
        .returns(body::<Items<tre_store::Notification>>)
        .query::<InboxQuery>(),
    ]
}

/// How many of the newest notifications.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct InboxQuery {
    /// 1 to 200; default 50.
    #[schemars(range(min = 1, max = 200))]
    limit: Option<usize>,
}

/// The caller's notifications (review requests, outcomes, reminders).
async fn notifications(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Params(q): Params<InboxQuery>,
) -> Result<Response> {
    let items = state.app.inbox(&caller, limit(q.limit)? as u32).await?;
    Ok(Json(json!({"items": items})).into_response())
}
