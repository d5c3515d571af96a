use thiserror::Error;
use tre_store::StoreError;

/// How a job attempt failed; the type says whether to retry.
#[derive(Debug, Clone, Error)]
pub enum JobError {
    /// Worth retrying with backoff (network, a 5xx, a busy database).
    #[error("{0}")]
    Transient(String),
    /// Retrying cannot help (validation, authorization, a missing object):
    /// the job is dead-lettered at once.
    #[error("{0}")]
    Permanent(String),
    /// The job no longer applies (a newer job took its work over, or what
    /// it works on ended before it ran): recorded as discarded with this
    /// reason, not as done, never retried.
    #[error("{0}")]
    Superseded(String),
}

impl From<StoreError> for JobError {
    fn from(e: StoreError) -> Self {
        if e.is_retryable() {
            Self::Transient(e.to_string())
        } else {
            Self::Permanent(e.to_string())
        }
    }
}

/// The queue could not take or serve a message.
#[derive(Debug, Error)]
pub enum QueueError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("queue: {0}")]
    Other(String),
}
