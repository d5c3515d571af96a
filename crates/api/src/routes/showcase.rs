//! The data showcase's routes: the released aggregates of an environment
//! (`GET .../showcase`), a field's chart, and the cohort builder (`POST
//! .../showcase/query`, answered by [`crate::showcase::ask`]).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tre_domain::EnvironmentId;
use tre_domain::disclosure::DisclosureRules;
use tre_store::ShowcaseView;

use super::{Endpoint, PathForm, Result, body, op};
use crate::guard::{Allowed, ViewsShowcase};
use crate::showcase::{CohortAnswer, CohortQuery, ask, invalid};
use crate::{ApiError, AppState, Auth, Body};

pub(crate) fn endpoints() -> Vec<Endpoint> {
    vec![
        op(
            Method::GET,
            "/v1/environments/{id}/showcase",
            "The data showcase: aggregates of the showcase fields, disclosure-controlled (authorized users)",
            None,
            get(get_showcase),
        )
        .returns(body::<ShowcaseView>)
        .errors(&[(404, "no such environment, or the caller may not see it")]),
        op(
            Method::POST,
            "/v1/environments/{id}/showcase/query",
            "The cohort builder: a cohort's size and distributions, disclosure-controlled; refused when too close to an earlier cohort (409 too_close) or too frequent (429)",
            Some(body::<CohortQuery>),
            post(query),
        )
        .returns(body::<CohortAnswer>)
        .errors(&[
            (404, "no such environment, or the caller may not see it"),
            (409, "too_close: the cohort, or a cell asked of it, is within the minimum cell size of numbers already released (the showcase itself, or an earlier answer of the environment's cohort builder, whoever asked it); computing: the showcase is not computed yet; no_showcase: no inventory"),
            (422, "invalid: a filter or field that is not a showcase field of the cohort dataset"),
            (429, "rate_limited: more queries this minute than the policy allows (Retry-After)"),
            (503, "unavailable: the environment's data cannot be read just now (Retry-After); showcase_failed: the current version's showcase could not be computed (the reason, for the environment's admins)"),
        ]),
        op(
            Method::GET,
            "/v1/environments/{id}/showcase/fields/{file}",
            "A showcase field's chart as SVG (`{file}` is `{dataset}.{field}.svg`), drawn from the released numbers only",
            None,
            get(chart),
        )
        .svg()
        .errors(&[
            (404, "no such environment or showcase field, or the caller may not see it"),
            (409, "computing: the showcase is not computed yet (Retry-After)"),
            (422, "invalid: the file is not {dataset}.{field}.svg"),
        ])
        .path_forms(&[PathForm {
            name: "file",
            pattern: r"^[^.]+\.[^/]+\.svg$",
            max_length: None,
        }]),
    ]
}

async fn get_showcase(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Response> {
    Ok(Json(state.app.showcase(&caller, &EnvironmentId(id)).await?).into_response())
}

async fn chart(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((id, file)): Path<(String, String)>,
) -> Result<Response> {
    let id = EnvironmentId(id);
    let env = state.app.showcase_environment(&caller, &id).await?;
    let view = state.app.released_showcase(&env, &caller.actor.id).await?;
    let field = file
        .strip_suffix(".svg")
        .and_then(|name| name.split_once('.'))
        .ok_or_else(|| {
            invalid(
                "file",
                "expected {dataset}.{field}.svg, e.g. participants.sex.svg".to_owned(),
            )
        })?;
    let Some(showcase) = view.showcase else {
        return Err(ApiError::computing(
            "the showcase is being computed; try again shortly",
        ));
    };
    let released = showcase
        .fields
        .iter()
        .find(|f| f.dataset == field.0 && f.field == field.1)
        .ok_or_else(|| ApiError::not_found(&format!("showcase field {}.{}", field.0, field.1)))?;
    let rules = DisclosureRules::of(&env.policies);
    let note = format!(
        "counts perturbed and rounded to {}; cells under {} suppressed",
        rules.rounding_base, rules.min_cell_size
    );
    let svg = crate::chart::svg(released, showcase.version, &note).map_err(|e| {
        tracing::error!(error = %e, "a chart could not be drawn");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the chart could not be drawn",
        )
    })?;
    Ok(([(axum::http::header::CONTENT_TYPE, "image/svg+xml")], svg).into_response())
}

async fn query(
    State(state): State<AppState>,
    Allowed(caller, _): Allowed<ViewsShowcase>,
    Path(id): Path<String>,
    Body(asked): Body<CohortQuery>,
) -> Result<Response> {
    Ok(Json(ask(&state, &caller, &EnvironmentId(id), asked).await?).into_response())
}
