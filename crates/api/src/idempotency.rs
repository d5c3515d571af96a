//! `Idempotency-Key` on POSTs: the first response is stored in SQL (per
//! user and key) and replayed to retries with the same method, path and
//! body; the same key with another call is refused (422). A call still in
//! progress answers 409. Server errors are not stored, so a retry redoes
//! the work.

use axum::body::{Body as RawBody, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use tre_store::{IdempotentStart, now};

use crate::{ApiError, AppState, BODY_LIMIT};

pub(crate) async fn layer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let Some(key) = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        return next.run(req).await;
    };
    if key.is_empty() || key.len() > 255 {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_idempotency_key",
            "Idempotency-Key must be 1 to 255 characters",
        )
        .with_field("Idempotency-Key")
        .into_response();
    }
    // the key belongs to the caller; without a valid token the handler answers 401
    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let user = match token {
        Some(t) => match state.store.authenticate(&t).await {
            Ok(Some(actor)) => actor.id,
            Ok(None) => return next.run(req).await,
            Err(e) => return ApiError::from(e).into_response(),
        },
        None => return next.run(req).await,
    };
    let (parts, body) = req.into_parts();
    let bytes = match to_bytes(body, BODY_LIMIT).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "the body is larger than the limit",
            )
            .into_response();
        }
    };
    let mut hasher = Sha256::new();
    hasher.update(parts.method.as_str());
    hasher.update(b" ");
    hasher.update(parts.uri.path());
    hasher.update(b"\n");
    hasher.update(&bytes);
    let hash = hex::encode(hasher.finalize());
    match state
        .store
        .start_idempotent(&user, &key, &hash, now())
        .await
    {
        Ok(IdempotentStart::Proceed) => {}
        Ok(IdempotentStart::Replay { status, response }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            let mut replay = (status, response).into_response();
            replay
                .headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            replay
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            return replay;
        }
        Ok(IdempotentStart::Mismatch) => {
            return ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used for a different request",
            )
            .with_field("Idempotency-Key")
            .into_response();
        }
        Ok(IdempotentStart::InProgress) => {
            return ApiError::new(
                StatusCode::CONFLICT,
                "in_progress",
                "a request with this Idempotency-Key is still running",
            )
            .into_response();
        }
        Err(e) => return ApiError::from(e).into_response(),
    }
    let response = next
        .run(Request::from_parts(parts, RawBody::from(bytes)))
        .await;
    let (parts, body) = response.into_parts();
    let body = to_bytes(body, usize::MAX).await.unwrap_or_default();
    let stored = if parts.status.is_server_error() {
        state.store.abandon_idempotent(&user, &key).await
    } else {
        state
            .store
            .finish_idempotent(
                &user,
                &key,
                parts.status.as_u16(),
                &String::from_utf8_lossy(&body),
            )
            .await
    };
    if let Err(e) = stored {
        tracing::warn!(error = %e, "could not record the idempotent response");
    }
    Response::from_parts(parts, RawBody::from(body))
}
