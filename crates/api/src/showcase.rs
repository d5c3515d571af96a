//! The cohort builder over HTTP (`POST .../showcase/query`): the use case
//! is the application's ([`tre_app::CohortBuilder`]); here only what each of
//! its refusals answers.

use axum::http::StatusCode;
use tre_app::{AskError, Caller};
use tre_domain::EnvironmentId;

pub use tre_app::{CohortAnswer, CohortQuery};

use crate::{ApiError, AppState};

impl From<AskError> for ApiError {
    fn from(e: AskError) -> Self {
        let message = e.to_string();
        match e {
            AskError::Store(e) => e.into(),
            AskError::RateLimited { .. } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
                    .retry_after(60)
            }
            AskError::Failed(reason) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "showcase_failed", reason)
            }
            AskError::Computing => ApiError::computing(message),
            AskError::NoShowcase => ApiError::new(StatusCode::CONFLICT, "no_showcase", message),
            AskError::Unavailable => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
                    .retry_after(5)
            }
            AskError::TooClose { .. } => {
                ApiError::new(StatusCode::CONFLICT, "too_close", message).with_field("cohort")
            }
        }
    }
}

/// Asks the cohort builder of environment `id` as `caller`: what the
/// route answers, for callers in this process (the CLI's demo).
pub async fn ask(
    state: &AppState,
    caller: &Caller,
    id: &EnvironmentId,
    asked: CohortQuery,
) -> Result<CohortAnswer, ApiError> {
    Ok(state.showcase.ask(caller, id, asked).await?)
}

pub(crate) fn invalid(field: &str, message: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message).with_field(field)
}
