//! One error shape for every endpoint:
//! `{"error": {"code": "...", "message": "...", "field": "..."}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tracing::error;
use tre_domain::DomainError;
use tre_store::StoreError;

/// The code of a call that lost the race for its idempotency key.
pub(crate) const IDEMPOTENCY_CONFLICT: &str = "idempotency_conflict";

/// The `code` of an error response, as a response extension.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ErrorCode(pub(crate) &'static str);

/// An error answer. `code` is stable; clients branch on it.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    /// Seconds after which the same call may succeed (`Retry-After`).
    pub retry_after: Option<u32>,
    /// Every reason an object is not ready (`incomplete`), when there are
    /// several: `field` and `message` name the first.
    pub problems: Vec<tre_domain::Problem>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
            problems: Vec::new(),
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Every problem found (the first one is the error's `field`).
    pub fn with_problems(mut self, problems: Vec<tre_domain::Problem>) -> Self {
        self.field = problems.first().map(|p| p.field.clone());
        self.problems = problems;
        self
    }

    /// The same call may succeed after `seconds` (`Retry-After`).
    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// 409 `computing`: what is asked for is still being computed by a job.
    pub fn computing(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "computing", message).retry_after(5)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required",
        )
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn body(&self) -> serde_json::Value {
        let mut body =
            json!({"error": {"code": self.code, "message": self.message, "field": self.field}});
        if !self.problems.is_empty() {
            body["error"]["problems"] = json!(self.problems);
        }
        body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.code;
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from(seconds));
        }
        // for the middleware layers, which see responses, not errors
        response.extensions_mut().insert(ErrorCode(code));
        response
    }
}

/// The job runtime's store: unavailable as the store is, anything else
/// an internal error.
impl From<tre_jobs::JobStoreError> for ApiError {
    fn from(e: tre_jobs::JobStoreError) -> Self {
        if e.is_unavailable() {
            tracing::warn!(error = %e, "database unavailable");
            return Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the database is unavailable; try again shortly",
            )
            .retry_after(1);
        }
        error!(error = %e, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }
}

impl From<tre_store::SqlJobError> for ApiError {
    fn from(e: tre_store::SqlJobError) -> Self {
        StoreError::from(e).into()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { object, id } => Self::not_found(&format!("{object} {id}")),
            StoreError::Gone { object, id, state } => Self::new(
                StatusCode::GONE,
                "gone",
                format!("{object} {id} is {state}: its data is no longer served"),
            ),
            StoreError::Forbidden(denied) => {
                Self::new(StatusCode::FORBIDDEN, "forbidden", denied.reason)
            }
            StoreError::Domain(DomainError::Invalid { field, message }) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message).with_field(field)
            }

            StoreError::Domain(DomainError::Incomplete { field, message }) => {
                Self::new(StatusCode::CONFLICT, "incomplete", message).with_field(field)
            }
            // several problems at once: bad input (422), or not ready (409)
            StoreError::Domain(
                e @ (DomainError::InvalidAll { .. } | DomainError::NotReady { .. }),
            ) => {
                let message = e.to_string();
                let (status, code, problems) = match e {
                    DomainError::InvalidAll { problems } => {
                        (StatusCode::UNPROCESSABLE_ENTITY, "invalid", problems)
                    }
                    DomainError::NotReady { problems } => {
                        (StatusCode::CONFLICT, "incomplete", problems)
                    }
                    _ => unreachable!("matched above"),
                };
                Self::new(status, code, message).with_problems(problems)
            }
            StoreError::Domain(e @ DomainError::InvalidTransition { .. }) => {
                Self::new(StatusCode::CONFLICT, "invalid_state", e.to_string())
            }
            StoreError::Domain(DomainError::Conflict(m)) => {
                Self::new(StatusCode::CONFLICT, "conflict", m)
            }
            StoreError::WriteConflict(m) => Self::new(StatusCode::SERVICE_UNAVAILABLE, "busy", m),
            StoreError::Stale {
                object,
                id,
                expected,
                current,
            } => Self::new(
                StatusCode::PRECONDITION_FAILED,
                "stale",
                format!(
                    "{object} {id} changed since you read it (revision {expected}, now {current}): read it again (its ETag), make your change on what it holds now and send it with If-Match"
                ),
            ),
            // answered by the idempotency layer with the other call's answer
            StoreError::IdempotencyConflict => Self::new(
                StatusCode::CONFLICT,
                IDEMPOTENCY_CONFLICT,
                "another call with this Idempotency-Key did the work",
            ),
            // the database restarting, failing over or out of connections:
            // the call did not happen; the caller may try again shortly
            e if e.is_unavailable() => {
                tracing::warn!(error = %e, "database unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the database is unavailable; try again shortly",
                )
                .retry_after(1)
            }
            other => {
                error!(error = %other, "internal error");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; see the server log",
                )
            }
        }
    }
}
