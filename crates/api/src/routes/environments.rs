//! Research environments: creation, the resource center, configuration by
//! their admins (inventory, pipeline, members, policies, visibility) and
//! their lifecycle (draft -> active -> maintenance).

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use schemars::JsonSchema;
use serde::Deserialize;
use tre_domain::Environment;
use tre_domain::{
    EnvironmentCommand, EnvironmentId, InventoryDefinition, NewEnvironment, PipelinePatch,
    Policies, PoliciesPatch, Principal, ReviewPipeline, UserId, Visibility,
};
use tre_store::Page as ListPage;

use super::{Endpoint, IfMatchUse, Page, Result, body, created, limit, op};
use crate::extract::{IfMatch, Params, required, with_revision};
use crate::guard::{Allowed, ConfiguresEnvironment, CreatesEnvironments};
use crate::inventory_check::{configure_checked, resolved_inventory};
use crate::{AppState, Auth, Body};

pub(super) fn endpoints() -> Vec<Endpoint> {
    use Method as M;
    vec![
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
        .returns(body::<ListPage<Environment>>)
        .query::<Page>(),
        op(
            M::GET,
            "/v1/environments/{id}",
            "One environment (its ETag is the revision a change names in If-Match)",
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
            "Set (draft) or stage (maintenance) the inventory: checked against the source (locations, columns, types), every problem named at once; only declared fields are published",
            Some(body::<InventoryDefinition>),
            put(put_inventory),
        )
        .returns(body::<Environment>),
        op(
            M::PUT,
            "/v1/environments/{id}/pipeline",
            "Replace the review pipeline (only reviewers after publish), on the revision read (If-Match)",
            Some(body::<ReviewPipeline>),
            put(put_pipeline),
        )
        .if_match(IfMatchUse::Required)
        .returns(body::<Environment>),
        op(
            M::PATCH,
            "/v1/environments/{id}/pipeline",
            "Change the stages named (name, reviewers added and removed, rule), the others kept",
            Some(body::<PipelinePatch>),
            patch(patch_pipeline),
        )
        .if_match(IfMatchUse::Optional)
        .returns(body::<Environment>),
        op(
            M::PUT,
            "/v1/environments/{id}/members",
            "Replace the authorized users and groups, on the revision read (If-Match)",
            Some(body::<Members>),
            put(put_members),
        )
        .if_match(IfMatchUse::Required)
        .returns(body::<Environment>),
        op(
            M::PATCH,
            "/v1/environments/{id}/members",
            "Add and remove authorized users and groups, the others kept",
            Some(body::<MembersChange>),
            patch(patch_members),
        )
        .if_match(IfMatchUse::Optional)
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
            "Replace the custodian's policies (fields left out take their defaults), on the revision read (If-Match)",
            Some(body::<Policies>),
            put(put_policies),
        )
        .if_match(IfMatchUse::Required)
        .returns(body::<Environment>),
        op(
            M::PATCH,
            "/v1/environments/{id}/policies",
            "Change the policies named, the others kept; a loosening is audited and told to the other admins",
            Some(body::<PoliciesPatch>),
            patch(patch_policies),
        )
        .if_match(IfMatchUse::Optional)
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
    ]
}

async fn create_environment(
    State(state): State<AppState>,
    Allowed(caller, _): Allowed<CreatesEnvironments>,
    Body(new): Body<NewEnvironment>,
) -> Result<Response> {
    Ok(created(state.app.create_environment(&caller, new).await?))
}

/// The resource center: environments the caller may discover, by id,
/// `limit` (default 50, at most 200) at a time from `cursor`.
async fn list_environments(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Params(page): Params<Page>,
) -> Result<Response> {
    let page = state
        .app
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
    let (env, revision) = state
        .app
        .environment_at(&caller, &EnvironmentId(id))
        .await?;
    Ok(with_revision(env, revision))
}

/// A change made on revision `on` (when named) of the environment: the
/// new environment with its revision as ETag.
async fn configure_on(
    state: &AppState,
    caller: &tre_app::Caller,
    id: String,
    command: EnvironmentCommand,
    on: Option<i64>,
) -> Result<Response> {
    let (env, revision) = configure_checked(
        &state.app,
        state.showcase.sources(),
        caller,
        &EnvironmentId(id),
        command,
        on,
    )
    .await?;
    Ok(with_revision(env, revision))
}

/// A change made on whatever revision is current: the new environment
/// with its revision as ETag.
async fn configure(
    state: &AppState,
    caller: &tre_app::Caller,
    id: String,
    command: EnvironmentCommand,
) -> Result<Response> {
    configure_on(state, caller, id, command, None).await
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct EnvironmentDetails {
    /// 1 to 128 characters, no control characters.
    #[schemars(length(min = 1, max = 128), regex(pattern = tre_domain::schema::NAME))]
    name: Option<String>,
    /// Free text, at most 20,000 characters.
    #[schemars(length(max = 20_000), regex(pattern = tre_domain::schema::TEXT))]
    description: Option<String>,
}

async fn update_environment(
    State(state): State<AppState>,
    Allowed(caller, _): Allowed<ConfiguresEnvironment>,
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
    Allowed(caller, _): Allowed<ConfiguresEnvironment>,
    Path(id): Path<String>,
    Body(definition): Body<InventoryDefinition>,
) -> Result<Response> {
    let inventory = resolved_inventory(
        &state.app,
        state.showcase.sources(),
        &caller,
        &EnvironmentId(id.clone()),
        &definition,
    )
    .await?;
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
    Allowed(caller, _): Allowed<ConfiguresEnvironment>,
    Path(id): Path<String>,
    IfMatch(on): IfMatch,
    Body(pipeline): Body<ReviewPipeline>,
) -> Result<Response> {
    configure_on(
        &state,
        &caller,
        id,
        EnvironmentCommand::SetPipeline(pipeline),
        Some(required(on)?),
    )
    .await
}

async fn patch_pipeline(
    State(state): State<AppState>,
    Allowed(caller, _): Allowed<ConfiguresEnvironment>,
    Path(id): Path<String>,
    IfMatch(on): IfMatch,
    Body(change): Body<PipelinePatch>,
) -> Result<Response> {
    configure_on(
        &state,
        &caller,
        id,
        EnvironmentCommand::PatchPipeline(change),
        on,
    )
    .await
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Members {
    #[serde(deserialize_with = "tre_domain::schema::unique")]
    members: BTreeSet<Principal>,
}

async fn put_members(
    State(state): State<AppState>,
    Allowed(caller, _): Allowed<ConfiguresEnvironment>,
    Path(id): Path<String>,
    IfMatch(on): IfMatch,
    Body(body): Body<Members>,
) -> Result<Response> {
    configure_on(
        &state,
        &caller,
        id,
        EnvironmentCommand::SetMembers(body.members),
        Some(required(on)?),
    )
    .await
}

/// Users and groups to add to and remove from the authorized users.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct MembersChange {
    #[serde(default, deserialize_with = "tre_domain::schema::unique")]
    add: BTreeSet<Principal>,
    #[serde(default, deserialize_with = "tre_domain::schema::unique")]
    remove: BTreeSet<Principal>,
}

async fn patch_members(
    State(state): State<AppState>,
    Allowed(caller, _): Allowed<ConfiguresEnvironment>,
    Path(id): Path<String>,
    IfMatch(on): IfMatch,
    Body(change): Body<MembersChange>,
) -> Result<Response> {
    configure_on(
        &state,
        &caller,
        id,
        EnvironmentCommand::ChangeMembers {
            add: change.add,
            remove: change.remove,
        },
        on,
    )
    .await
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Admins {
    #[serde(deserialize_with = "tre_domain::schema::unique")]
    admins: BTreeSet<UserId>,
}

async fn put_admins(
    State(state): State<AppState>,
    Allowed(caller, _): Allowed<ConfiguresEnvironment>,
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
    Allowed(caller, _): Allowed<ConfiguresEnvironment>,
    Path(id): Path<String>,
    IfMatch(on): IfMatch,
    Body(policies): Body<Policies>,
) -> Result<Response> {
    configure_on(
        &state,
        &caller,
        id,
        EnvironmentCommand::SetPolicies(policies),
        Some(required(on)?),
    )
    .await
}

async fn patch_policies(
    State(state): State<AppState>,
    Allowed(caller, _): Allowed<ConfiguresEnvironment>,
    Path(id): Path<String>,
    IfMatch(on): IfMatch,
    Body(patch): Body<PoliciesPatch>,
) -> Result<Response> {
    configure_on(
        &state,
        &caller,
        id,
        EnvironmentCommand::PatchPolicies(patch),
        on,
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
    Allowed(caller, _): Allowed<ConfiguresEnvironment>,
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
