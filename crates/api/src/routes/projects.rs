//! Projects made from approved requests, and how far their dispense got.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use schemars::JsonSchema;
use serde::Serialize;
use tre_domain::Project;
use tre_domain::{EnvironmentId, ProjectId, RequestId};
use tre_store::{DispenseProgress, Page as ListPage, ProjectOverview};

use super::{Endpoint, Page, Result, body, created, limit, op};
use crate::extract::Params;
use crate::{AppState, Auth};

pub(super) fn endpoints() -> Vec<Endpoint> {
    use Method as M;
    vec![
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
            "/v1/projects",
            "The caller's projects",
            None,
            get(list_projects),
        )
        .returns(body::<ListPage<Project>>)
        .query::<Page>(),
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
            "/v1/environments/{id}/projects",
            "The projects made from an environment, for its admins: state, dispense progress, failure reason and who has access to what until when; never their data",
            None,
            get(environment_projects),
        )
        .returns(body::<ListPage<ProjectOverview>>)
        .query::<Page>(),
    ]
}

async fn environment_projects(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Params(q): Params<Page>,
) -> Result<Response> {
    let page = state
        .app
        .environment_projects(
            &caller,
            &EnvironmentId(id),
            q.cursor.as_deref().unwrap_or(""),
            limit(q.limit)?,
        )
        .await?;
    Ok(Json(page).into_response())
}

async fn create_project(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Response> {
    Ok(created(
        state.app.create_project(&caller, &RequestId(id)).await?,
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
    let project = state.app.project(&caller, &id).await?;
    let progress = state.store().dispense_progress(&id).await?;
    let manifest = state.store().dispense_manifest(&id).await?;
    Ok(Json(ProjectView {
        project,
        progress,
        manifest,
    })
    .into_response())
}

async fn list_projects(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Params(q): Params<Page>,
) -> Result<Response> {
    let page = state
        .app
        .list_projects(&caller, q.cursor.as_deref().unwrap_or(""), limit(q.limit)?)
        .await?;
    Ok(Json(page).into_response())
}
