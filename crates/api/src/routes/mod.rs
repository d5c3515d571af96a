//! Every route of the API, one module per resource, each declaring its own
//! endpoints: whether it needs a token ([`Access`]), what it takes and
//! answers. Each handler authenticates, parses and calls the store, which
//! authorizes.

mod audit;
mod environments;
mod files;
pub(crate) mod health;
mod jobs;
mod notifications;
mod ops;
mod project_data;
mod projects;
mod requests;
mod reviews;
mod showcase;
mod tokens;
mod workspaces;

use axum::http::Method;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use axum::{Json, Router};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use crate::{ApiError, AppState};

/// One operation of the API. The router and `/openapi.json` are both built
/// from [`endpoints`], so the documentation cannot drift from the routes.
pub(crate) struct Endpoint {
    /// Whether it takes `If-Match` (the revision a change is made on).
    pub(crate) if_match: IfMatchUse,
    pub(crate) method: Method,
    pub(crate) path: &'static str,
    pub(crate) summary: &'static str,
    /// The JSON Schema of the body it takes.
    pub(crate) body: Option<BodySchema>,
    /// The JSON Schema of its success answer (else: an object).
    pub(crate) response: Option<BodySchema>,
    /// Who may call it at all (what a route does with the caller is its
    /// handler's, through the application's authorization).
    pub(crate) access: Access,
    /// It answers an SVG image, not JSON.
    pub(crate) svg: bool,
    /// It answers plain text (Prometheus' format), not JSON.
    pub(crate) text: bool,
    /// It takes a tab-separated text body, not JSON.
    pub(crate) tsv: bool,
    /// Error statuses documented one by one (each also falls under the
    /// `default` error answer), with what they mean here.
    pub(crate) errors: &'static [(u16, &'static str)],
    /// The query parameters it takes: the properties of this schema.
    pub(crate) query: Option<BodySchema>,
    /// Path parameters whose form is stated; the others are any string (an
    /// id that does not exist answers 404).
    pub(crate) path_forms: &'static [PathForm],
    handler: MethodRouter<AppState>,
}

/// The form the server requires of one path parameter.
pub(crate) struct PathForm {
    pub(crate) name: &'static str,
    /// A JSON Schema pattern.
    pub(crate) pattern: &'static str,
    /// The most characters, when bounded.
    pub(crate) max_length: Option<u32>,
}

/// Whether a route needs a bearer token. Stated by the constructor of
/// each route ([`op`] or [`public`]), never inferred from its path; a test
/// calls every route without a token and holds each to what it states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Anyone, without a token: liveness, readiness, this document and
    /// the metrics page (which name no person and no data).
    Public,
    /// A valid bearer token: 401 without one, before anything else.
    BearerToken,
}

/// Whether a route takes the revision its change is made on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IfMatchUse {
    None,
    /// Honoured when given (412 when the object changed since).
    Optional,
    /// A full replacement: 428 without it, 412 when the object changed.
    Required,
}

/// Registers a body's schema (and those it refers to) with the generator
/// and returns a reference to it.
pub(crate) type BodySchema = fn(&mut SchemaGenerator) -> Schema;

pub(crate) fn body<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// An operation that needs a bearer token (its handler takes [`crate::Auth`]
/// or [`crate::guard::Allowed`]).
pub(crate) fn op(
    method: Method,
    path: &'static str,
    summary: &'static str,
    body: Option<BodySchema>,
    handler: MethodRouter<AppState>,
) -> Endpoint {
    endpoint(Access::BearerToken, method, path, summary, body, handler)
}

/// An operation anyone may call without a token (see [`Access::Public`]).
pub(crate) fn public(
    method: Method,
    path: &'static str,
    summary: &'static str,
    handler: MethodRouter<AppState>,
) -> Endpoint {
    endpoint(Access::Public, method, path, summary, None, handler)
}

fn endpoint(
    access: Access,
    method: Method,
    path: &'static str,
    summary: &'static str,
    body: Option<BodySchema>,
    handler: MethodRouter<AppState>,
) -> Endpoint {
    Endpoint {
        if_match: IfMatchUse::None,
        access,
        method,
        path,
        summary,
        body,
        response: None,
        svg: false,
        text: false,
        tsv: false,
        errors: &[],
        path_forms: &[],
        query: None,
        handler,
    }
}

impl Endpoint {
    /// Documents what it answers on success.
    pub(crate) fn returns(mut self, schema: BodySchema) -> Self {
        self.response = Some(schema);
        self
    }

    /// Documents the error statuses it answers, with their meaning.
    pub(crate) fn errors(mut self, errors: &'static [(u16, &'static str)]) -> Self {
        self.errors = errors;
        self
    }

    /// Documents its query parameters: the fields of `T`, the type its
    /// handler reads them into.
    pub(crate) fn query<T: JsonSchema>(mut self) -> Self {
        self.query = Some(|_| {
            schemars::generate::SchemaSettings::draft2020_12()
                .for_deserialize()
                .with(|s| s.inline_subschemas = true)
                .into_generator()
                .into_root_schema_for::<T>()
        });
        self
    }

    /// Documents `If-Match`.
    pub(crate) fn if_match(mut self, using: IfMatchUse) -> Self {
        self.if_match = using;
        self
    }

    /// States the form of path parameters.
    pub(crate) fn path_forms(mut self, forms: &'static [PathForm]) -> Self {
        self.path_forms = forms;
        self
    }

    /// Documents plain text as what it answers on success.
    pub(crate) fn text(mut self) -> Self {
        self.text = true;
        self
    }

    /// Documents a tab-separated text body as what it takes.
    pub(crate) fn tsv(mut self) -> Self {
        self.tsv = true;
        self
    }

    /// Documents an SVG image as what it answers on success.
    pub(crate) fn svg(mut self) -> Self {
        self.svg = true;
        self
    }
}

/// Every operation of every resource.
pub(crate) fn all_endpoints() -> Vec<Endpoint> {
    let mut all = health::endpoints();
    all.extend(environments::endpoints());
    all.extend(requests::endpoints());
    all.extend(reviews::endpoints());
    all.extend(projects::endpoints());
    all.extend(project_data::endpoints());
    all.extend(workspaces::endpoints());
    all.extend(audit::endpoints());
    all.extend(jobs::endpoints());
    all.extend(notifications::endpoints());
    all.extend(showcase::endpoints());
    all.extend(files::endpoints());
    all.extend(tokens::endpoints());
    all.extend(ops::endpoints());
    all
}

pub(crate) fn routes() -> Router<AppState> {
    all_endpoints()
        .into_iter()
        .fold(Router::new(), |router, e| router.route(e.path, e.handler))
        .fallback(|| async { ApiError::not_found("route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
}

pub(crate) type Result<T> = std::result::Result<T, ApiError>;

pub(crate) fn created(value: impl Serialize) -> Response {
    (StatusCode::CREATED, Json(value)).into_response()
}

/// A page of a list: `limit` (default 50) items after `cursor`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Page {
    /// How many items: 1 to 200; default 50.
    #[schemars(range(min = 1, max = 200))]
    pub(crate) limit: Option<usize>,
    /// The `next_cursor` of the page before; none for the first page.
    pub(crate) cursor: Option<String>,
}

/// A list answered whole, for the API document only.
#[derive(JsonSchema)]
#[schemars(rename = "ListOf{T}")]
#[allow(dead_code)]
pub(crate) struct Items<T> {
    items: Vec<T>,
}

pub(crate) fn limit(limit: Option<usize>) -> Result<usize> {
    let limit = limit.unwrap_or(50);
    if (1..=200).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "must be between 1 and 200",
        )
        .with_field("limit"))
    }
}
