//! `Idempotency-Key` on POSTs: the key is claimed in SQL (per user) in the
//! same transaction as the call's work (see `tre_store::idempotency`), and
//! the first response is stored and replayed to retries with the same
//! method, path and body; the same key with another call is refused (422).
//! A call whose answer is being recorded answers 409; one whose process
//! died after its work committed is answered with the object it touched
//! (`idempotent-replayed: recovered`). Server errors are not stored; a
//! retry after one redoes the work unless the work had committed.
//!
//! An answer that holds a secret (a new token's `secret`) is never stored
//! as it is: a replay gets it without the secret and with
//! `secret_withheld: true` (see [`recordable`]). Every other answer is
//! replayed byte for byte.

use axum::body::{Body as RawBody, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use tre_store::{IdempotencyClaim, IdempotentStart, now};

use crate::error::{ErrorCode, IDEMPOTENCY_CONFLICT};
use crate::extract::{Authenticated, bearer};
use crate::{ApiError, AppState, BODY_LIMIT};

pub(crate) async fn layer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let Some(value) = req.headers().get("idempotency-key") else {
        return next.run(req).await;
    };
    // a key that is not plain text is refused, never ignored (ignoring it
    // would do the work twice)
    let key = match value.to_str() {
        Ok(key)
            if !key.is_empty() && key.len() <= 255 && key.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            key.to_owned()
        }
        _ => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_idempotency_key",
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            )
            .with_field("Idempotency-Key")
            .into_response();
        }
    };
    // the key belongs to the caller; without a valid token the handler answers 401
    let token = bearer(req.headers()).map(str::to_owned);
    let actor = match token {
        Some(t) => match state.store().authenticate(&t).await {
            Ok(Some(actor)) => actor,
            Ok(None) => return next.run(req).await,
            Err(e) => return ApiError::from(e).into_response(),
        },
        None => return next.run(req).await,
    };
    let user = actor.id.clone();
    if let Err(refused) = crate::extract::within_limit(req.headers(), BODY_LIMIT) {
        return refused.into_response();
    }
    let (mut parts, body) = req.into_parts();
    // the handler's `Auth` takes the caller from here, not from a second lookup
    parts.extensions.insert(Authenticated(actor));
    let bytes = match to_bytes(body, BODY_LIMIT).await {
        Ok(b) => b,
        Err(_) => return crate::extract::too_large(BODY_LIMIT).into_response(),
    };
    let mut hasher = Sha256::new();
    hasher.update(parts.method.as_str());
    hasher.update(b" ");
    hasher.update(parts.uri.path());
    hasher.update(b"\n");
    hasher.update(&bytes);
    let claim = IdempotencyClaim {
        user,
        key,
        request_hash: hex::encode(hasher.finalize()),
        nonce: uuid::Uuid::new_v4().to_string(),
    };
    if let Some(answer) = earlier_answer(&state, &claim).await {
        return answer;
    }
    // the handler's `Auth` puts the claim into the caller it gives the
    // store, whose commands claim the key as their work commits
    let mut request = Request::from_parts(parts, RawBody::from(bytes));
    request.extensions_mut().insert(claim.clone());
    let response = next.run(request).await;
    if response
        .extensions()
        .get::<ErrorCode>()
        .is_some_and(|c| c.0 == IDEMPOTENCY_CONFLICT)
    {
        // a concurrent call with this key did the work first
        if let Some(answer) = earlier_answer(&state, &claim).await {
            return answer;
        }
    }
    let (parts, body) = response.into_parts();
    let body = match to_bytes(body, usize::MAX).await {
        Ok(body) => body,
        Err(e) => {
            // nothing is recorded: a retry with the key is told the object
            // the work touched (once the grace period is over)
            tracing::error!(error = %e, "the answer of an idempotent call could not be read");
            return ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "answer_lost",
                "the answer could not be read; retry with the same Idempotency-Key",
            )
            .into_response();
        }
    };
    if let Err(e) = state
        .store()
        .finish_idempotent(&claim, parts.status.as_u16(), &recordable(&body), now())
        .await
    {
        tracing::warn!(error = %e, "could not record the idempotent response");
    }
    Response::from_parts(parts, RawBody::from(body))
}

/// The key of a JSON answer that holds a secret shown once (a new token).
const SECRET: &str = "secret";

/// What is recorded of an answer for replays: the answer itself, or, when
/// it is a JSON object holding a `secret`, the same object without it and
/// with `secret_withheld: true`. tre keeps no secret it handed out: the
/// client revokes that token and makes another.
fn recordable(body: &[u8]) -> std::borrow::Cow<'_, str> {
    let quoted = format!("\"{SECRET}\"");
    if body.windows(quoted.len()).any(|w| w == quoted.as_bytes())
        && let Ok(serde_json::Value::Object(mut object)) = serde_json::from_slice(body)
        && object.remove(SECRET).is_some()
    {
        object.insert("secret_withheld".into(), serde_json::Value::Bool(true));
        return serde_json::Value::Object(object).to_string().into();
    }
    String::from_utf8_lossy(body)
}

/// How long a call's answer may take to be recorded after its work
/// committed; past it, the process serving it is taken for dead.
const ANSWER_GRACE_MS: i64 = 10_000;

/// The answer owed to a call whose key was used before, if it was.
async fn earlier_answer(state: &AppState, claim: &IdempotencyClaim) -> Option<Response> {
    let start = state
        .store()
        .start_idempotent(&claim.user, &claim.key, &claim.request_hash)
        .await;
    match start {
        Ok(IdempotentStart::Proceed) => None,
        Ok(IdempotentStart::Replay { status, response }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            Some(replayed((status, response).into_response(), "true"))
        }
        Ok(IdempotentStart::Mismatch) => Some(
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used for a different request",
            )
            .with_field("Idempotency-Key")
            .into_response(),
        ),
        Ok(IdempotentStart::Committed {
            object_type,
            object_id,
            since,
        }) => {
            if now().0 - since.0 < ANSWER_GRACE_MS {
                return Some(
                    ApiError::new(
                        StatusCode::CONFLICT,
                        "in_progress",
                        "a request with this Idempotency-Key is still running",
                    )
                    .into_response(),
                );
            }
            // the first call's process died between its commit and its
            // answer: the work is done; say which object it touched
            let body = serde_json::json!({
                "id": object_id,
                "object": object_type,
                "recovered": true,
            });
            Some(replayed(
                (StatusCode::OK, body.to_string()).into_response(),
                "recovered",
            ))
        }
        Err(e) => Some(ApiError::from(e).into_response()),
    }
}

fn replayed(mut response: Response, how: &'static str) -> Response {
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static(how));
    response
}
