//! A project's dispensed objects, for its members: the list (from the
//! manifest) and reads under the environment's `download` policy, each
//! audited before anything is served. On S3 a read answers a redirect to a
//! URL signed for `access_url_minutes`; on a folder, which cannot sign, the
//! API streams the bytes itself (with `Range`). Nothing is ever written.

use std::time::Duration;

use axum::Json;
use axum::body::Body as RawBody;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::TryStreamExt;
use object_store::{GetOptions, GetRange, GetResultPayload, ObjectStoreExt};
use tre_dispense::stores::ProjectReader;
use tre_domain::ProjectId;
use tre_store::{Page as ListPage, ProjectAccess, ProjectObject};

use super::{Endpoint, Items, Page, PathForm, Result, body, limit, op};
use crate::extract::Params;
use crate::{ApiError, AppState, Auth};

pub(super) fn endpoints() -> Vec<Endpoint> {
    use Method as M;
    vec![
        op(
            M::GET,
            "/v1/projects/{id}/access",
            "Who read how much of the project's data, per reader, from the audit log: counts and sizes, never the data (the environment's admins and platform admins)",
            None,
            get(access),
        )
        .returns(body::<Items<ProjectAccess>>),
        op(
            M::GET,
            "/v1/projects/{id}/objects",
            "The project's dispensed objects (path, size, SHA-256, dataset or file collection), from its manifest (members only)",
            None,
            get(list_objects),
        )
        .returns(body::<ListPage<ProjectObject>>)
        .query::<Page>()
        .errors(&[
            (409, "conflict: the project's data is not ready yet"),
            (410, "gone: the project was revoked or expired"),
        ]),
        op(
            M::GET,
            "/v1/projects/{id}/objects/{*path}",
            "Read one object (as the environment's `download` policy allows; audited): on S3 a 307 redirect to a URL signed for `access_url_minutes`, on a folder its bytes (`Range` supported)",
            None,
            get(read_object),
        )
        .errors(&[
            (403, "forbidden: the environment's download policy does not let the caller read"),
            (409, "conflict: the project's data is not ready yet"),
            (410, "gone: the project was revoked or expired"),
            (416, "the Range cannot be satisfied"),
            (422, "invalid: the path is absolute, has `..`, empty or encoded segments"),
        ])
        .path_forms(&[PathForm {
            name: "path",
            pattern: tre_domain::OBJECT_PATH,
            max_length: Some(1024),
        }]),
    ]
}

async fn access(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Response> {
    let items = state.app.project_access(&caller, &ProjectId(id)).await?;
    Ok(Json(serde_json::json!({"items": items})).into_response())
}

async fn list_objects(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Params(q): Params<Page>,
) -> Result<Response> {
    let page = state
        .app
        .project_objects(
            &caller,
            &ProjectId(id),
            q.cursor.as_deref().unwrap_or(""),
            limit(q.limit)?,
        )
        .await?;
    Ok(Json(page).into_response())
}

fn unavailable(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message).retry_after(5)
}

async fn read_object(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((id, path)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response> {
    let project = ProjectId(id);
    // authorized, checked against the manifest and audited, or refused
    // (before anything else, so that no answer tells an outsider more)
    let read = state
        .app
        .read_project_object(&caller, &project, &path)
        .await?;
    let reader = state
        .project_data
        .clone()
        .ok_or_else(|| unavailable("this server reads no project data store"))?;
    let minutes = u64::from(read.url_minutes);
    if let Some(url) = reader
        .signed_url(
            project.as_str(),
            &read.object.path,
            Duration::from_secs(minutes * 60),
        )
        .await
        .map_err(|e| unavailable(e.to_string()))?
    {
        let mut response = (
            StatusCode::TEMPORARY_REDIRECT,
            Json(serde_json::json!({"url": url, "expires_in_s": minutes * 60})),
        )
            .into_response();
        response.headers_mut().insert(
            header::LOCATION,
            HeaderValue::from_str(&url).map_err(|e| unavailable(e.to_string()))?,
        );
        return Ok(response);
    }
    stream(&reader, project.as_str(), &read.object, &headers).await
}

/// The object's bytes from the store, whole or the one range asked for.
async fn stream(
    reader: &ProjectReader,
    project: &str,
    object: &ProjectObject,
    headers: &HeaderMap,
) -> Result<Response> {
    let location =
        ProjectReader::location(project, &object.path).map_err(|e| unavailable(e.to_string()))?;
    let size = reader
        .store()
        .head(&location)
        .await
        .map_err(|e| unavailable(format!("the project store: {e}")))?
        .size;
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        None => None,
        Some(spec) => match byte_range(spec, size) {
            Ok(range) => range,
            Err(()) => {
                let mut response = ApiError::new(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "range_not_satisfiable",
                    format!("the object has {size} bytes"),
                )
                .into_response();
                if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    response.headers_mut().insert(header::CONTENT_RANGE, value);
                }
                return Ok(response);
            }
        },
    };
    let options = GetOptions {
        range: range.clone().map(GetRange::Bounded),
        ..GetOptions::default()
    };
    let result = reader
        .store()
        .get_opts(&location, options)
        .await
        .map_err(|e| unavailable(format!("the project store: {e}")))?;
    let body = match result.payload {
        // a folder: read in large blocks (the store's own stream reads 8 KiB
        // at a time, a quarter of the disk's speed)
        GetResultPayload::File(file, _) => RawBody::from_stream(file_blocks(file, result.range)),
        GetResultPayload::Stream(stream) => {
            RawBody::from_stream(stream.map_err(std::io::Error::other))
        }
    };
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(sha) = HeaderValue::from_str(&object.sha256) {
        h.insert("x-tre-sha256", sha);
    }
    match range {
        Some(r) => {
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
            let h = response.headers_mut();
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(r.end - r.start));
            if let Ok(value) =
                HeaderValue::from_str(&format!("bytes {}-{}/{size}", r.start, r.end - 1))
            {
                h.insert(header::CONTENT_RANGE, value);
            }
        }
        None => {
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
        }
    }
    Ok(response)
}

/// Bytes `range` of `file`, a MiB at a time: one blocking thread reads
/// ahead of the socket (a few blocks in flight), so the disk and the network
/// work at the same time; it stops when the client goes away.
fn file_blocks(
    mut file: std::fs::File,
    range: std::ops::Range<u64>,
) -> impl futures::Stream<Item = std::io::Result<axum::body::Bytes>> {
    const BLOCK: u64 = 1 << 20;
    const AHEAD: usize = 4;
    let (blocks, received) = tokio::sync::mpsc::channel(AHEAD);
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Seek, SeekFrom};
        if let Err(e) = file.seek(SeekFrom::Start(range.start)) {
            let _ = blocks.blocking_send(Err(e));
            return;
        }
        let mut at = range.start;
        while at < range.end {
            let want = (range.end - at).min(BLOCK);
            // read straight into spare capacity: no zeroing of each block
            let mut bytes = Vec::with_capacity(want as usize);
            let block = match (&mut file).take(want).read_to_end(&mut bytes) {
                Ok(0) => Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)),
                Ok(n) => {
                    at += n as u64;
                    Ok(axum::body::Bytes::from(bytes))
                }
                Err(e) => Err(e),
            };
            let failed = block.is_err();
            // stop after an error, or when the client is gone
            if blocks.blocking_send(block).is_err() || failed {
                return;
            }
        }
    });
    futures::stream::unfold(received, |mut received| async move {
        received.recv().await.map(|block| (block, received))
    })
}

/// The one byte range of a `Range` header over an object of `size` bytes
/// (`bytes=a-b`, `bytes=a-`, `bytes=-n`): none to send it whole (several
/// ranges, or another unit: the whole object is a valid answer); an error
/// when it cannot be satisfied.
fn byte_range(spec: &str, size: u64) -> std::result::Result<Option<std::ops::Range<u64>>, ()> {
    let Some(ranges) = spec.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if ranges.contains(',') {
        return Ok(None);
    }
    let (first, last) = ranges.trim().split_once('-').ok_or(())?;
    let number = |s: &str| s.trim().parse::<u64>().map_err(|_| ());
    let range = match (first.trim().is_empty(), last.trim().is_empty()) {
        (false, false) => {
            let (a, b) = (number(first)?, number(last)?);
            if a > b {
                return Err(());
            }
            a..b.saturating_add(1).min(size)
        }
        (false, true) => number(first)?..size,
        (true, false) => size.saturating_sub(number(last)?)..size,
        (true, true) => return Err(()),
    };
    if range.start >= range.end || range.start >= size {
        return Err(());
    }
    Ok(Some(range))
}

#[cfg(test)]
mod tests {
    use super::byte_range;

    #[test]
    fn byte_ranges() {
        assert_eq!(byte_range("bytes=0-9", 100), Ok(Some(0..10)));
        assert_eq!(byte_range("bytes=90-", 100), Ok(Some(90..100)));
        assert_eq!(byte_range("bytes=-5", 100), Ok(Some(95..100)));
        assert_eq!(byte_range("bytes=95-200", 100), Ok(Some(95..100)));
        assert_eq!(byte_range("bytes=0-0", 1), Ok(Some(0..1)));
        assert_eq!(byte_range("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(byte_range("items=0-1", 100), Ok(None));
        for bad in [
            "bytes=100-",
            "bytes=9-3",
            "bytes=-0",
            "bytes=-",
            "bytes=a-b",
            "bytes=5",
        ] {
            assert_eq!(byte_range(bad, 100), Err(()), "{bad}");
        }
        assert_eq!(byte_range("bytes=0-", 0), Err(()));
    }
}
