//! Reviewers' side of a request: their queue and their decisions.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tre_domain::AccessRequest;
use tre_domain::{DecisionInput, RequestId, StageRef, Verdict};
use tre_store::Page as ListPage;

use super::{Endpoint, Items, Page, Result, body, created, limit, op};
use crate::extract::Params;
use crate::guard::{Allowed, DecidesRequest};
use crate::{AppState, Auth, Body};

pub(super) fn endpoints() -> Vec<Endpoint> {
    use Method as M;
    vec![
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
            M::GET,
            "/v1/reviews",
            "The caller's review queue, each request with its selection summary",
            None,
            get(review_queue),
        )
        .returns(body::<ListPage<ReviewItem>>)
        .query::<Page>(),
    ]
}

/// `{stage, decision: approve|reject|return, comment, final?}`; `stage` is
/// the stage's id (`"dac"`) or its 0-based index (as the request's `stage`
/// field shows it).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    stage: StageRef,
    decision: Verdict,
    #[serde(default)]
    #[schemars(length(max = 20_000), regex(pattern = tre_domain::schema::TEXT))]
    comment: String,
    #[serde(default, rename = "final")]
    is_final: bool,
}

async fn decide(
    State(state): State<AppState>,
    Allowed(caller, _): Allowed<DecidesRequest>,
    Path(id): Path<String>,
    Body(body): Body<DecisionBody>,
) -> Result<Response> {
    let input = DecisionInput {
        stage: 0,
        verdict: body.decision,
        is_final: body.is_final,
        comment: body.comment,
    };
    Ok(created(
        state
            .app
            .decide_stage(&caller, &RequestId(id), &body.stage, input)
            .await?,
    ))
}

async fn decisions(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Response> {
    Ok(Json(json!({"items": state.app.decisions(&caller, &RequestId(id)).await?})).into_response())
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
        .app
        .review_queue(&caller, q.cursor.as_deref().unwrap_or(""), limit(q.limit)?)
        .await?;
    let mut summaries = state.store().summaries_for(&page.items).await?;
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
