//! File inventories over HTTP: an environment's admins upload the TSV that
//! maps every bulk file to its participant and file collection, and follow
//! its check. The upload is refused at once (422, naming the first bad rows
//! by line) when its text is wrong; otherwise it is stored and a job checks
//! it against the source (202 `checking`), after which it is `ready` (part
//! of a new inventory version) or `rejected` (with its first bad rows).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use schemars::JsonSchema;
use serde::Deserialize;
use tre_domain::EnvironmentId;
use tre_domain::files::parse_tsv;
use tre_store::FileInventoryStatus;

use super::{Endpoint, body, op};
use crate::extract::WithinLimit;
use crate::guard::{Allowed, ConfiguresEnvironment};
use crate::{ApiError, AppState, Auth};

type Result<T> = std::result::Result<T, ApiError>;

/// Largest file inventory upload: about a million rows. Larger ones are
/// split by collection, or kept in the source and registered from there.
pub const FILE_INVENTORY_LIMIT: usize = 256 << 20;

pub(crate) fn endpoints() -> Vec<Endpoint> {
    vec![
        op(
            Method::PUT,
            "/v1/environments/{id}/inventory/files",
            "Upload a file inventory as TSV or Parquet (columns entity, collection, location, size and optionally sha256), or register one kept in the source with JSON {\"location\": ...} (TSV, or Parquet when it ends with .parquet) (admins, in draft or maintenance); 202 while a job checks it against the source",
            Some(body::<FileInventorySource>),
            put(upload).layer(DefaultBodyLimit::max(FILE_INVENTORY_LIMIT)),
        )
        .tsv()
        .returns(body::<FileInventoryStatus>)
        .errors(&[
            (403, "forbidden: not an admin of the environment"),
            (404, "no such environment, or the caller may not see it"),
            (409, "invalid_transition: the environment is active (enter maintenance first)"),
            (413, "the file inventory is larger than 256 MiB"),
            (415, "unsupported_media_type: the body is not text/tab-separated-values, application/vnd.apache.parquet or application/json"),
            (422, "invalid: bad rows, the first ones named by line (field `files`), or no inventory to add files to"),
        ]),
        op(
            Method::GET,
            "/v1/environments/{id}/inventory/files",
            "The uploaded file inventories, newest first, with their state and first bad rows (admins)",
            None,
            get(list),
        )
        .returns(body::<Vec<FileInventoryStatus>>)
        .errors(&[
            (403, "forbidden: not an admin of the environment"),
            (404, "no such environment, or the caller may not see it"),
        ]),
        op(
            Method::GET,
            "/v1/environments/{id}/inventory/files/{file_inventory}",
            "One uploaded file inventory: checking, ready (with the inventory version it is part of) or rejected (with its first bad rows) (admins)",
            None,
            get(one),
        )
        .returns(body::<FileInventoryStatus>)
        .errors(&[
            (403, "forbidden: not an admin of the environment"),
            (404, "no such environment or file inventory, or the caller may not see it"),
        ]),
    ]
}

/// The media types of a file inventory upload.
pub const TSV: &str = "text/tab-separated-values";
pub const PARQUET: &str = "application/vnd.apache.parquet";

/// A file inventory kept in the environment's source.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileInventorySource {
    /// Relative to the environment's source root: a TSV, or Parquet when it
    /// ends with `.parquet` (columns as the TSV's).
    pub location: String,
}

async fn upload(
    State(state): State<AppState>,
    Allowed(caller, _): Allowed<ConfiguresEnvironment>,
    _: WithinLimit<FILE_INVENTORY_LIMIT>,
    Path(id): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response> {
    let media_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    match media_type.as_deref() {
        Some(TSV) => {}
        Some(PARQUET) => {
            let parsed = tre_dispense::file_manifest::parse_parquet(bytes).map_err(|e| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid",
                    format!("the Parquet file inventory cannot be read: {e}"),
                )
                .with_field("files")
            })?;
            let entries = parsed
                .map_err(|problems| tre_store::StoreError::from(problems.to_error("files")))?;
            let status = state
                .app
                .upload_file_inventory(&caller, &EnvironmentId(id), &entries)
                .await?;
            return Ok((StatusCode::ACCEPTED, Json(status)).into_response());
        }
        Some("application/json") => {
            let source: FileInventorySource = crate::extract::parse(&bytes)?;
            let status = state
                .app
                .register_file_inventory(&caller, &EnvironmentId(id), &source.location)
                .await?;
            return Ok((StatusCode::ACCEPTED, Json(status)).into_response());
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "a file inventory is sent as {TSV}, or registered from the source as application/json"
                ),
            ));
        }
    }
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!("the file inventory is not UTF-8 text: {e}"),
        )
        .with_field("files")
    })?;
    let entries = parse_tsv(text)
        .map_err(|problems| tre_store::StoreError::from(problems.to_error("files")))?;
    let status = state
        .app
        .upload_file_inventory(&caller, &EnvironmentId(id), &entries)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(status)).into_response())
}

async fn list(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Json<Vec<FileInventoryStatus>>> {
    Ok(Json(
        state
            .app
            .file_inventories(&caller, &EnvironmentId(id))
            .await?,
    ))
}

async fn one(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((id, file_inventory)): Path<(String, String)>,
) -> Result<Json<FileInventoryStatus>> {
    Ok(Json(
        state
            .app
            .file_inventory(&caller, &EnvironmentId(id), &file_inventory)
            .await?,
    ))
}
