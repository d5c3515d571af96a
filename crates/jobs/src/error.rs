use thiserror::Error;

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

impl From<JobStoreError> for JobError {
    fn from(e: JobStoreError) -> Self {
        if e.is_retryable() {
            Self::Transient(e.to_string())
        } else {
            Self::Permanent(e.to_string())
        }
    }
}

/// Why the [`JobStore`](crate::JobStore) could not answer, and so whether
/// trying again may help.
#[derive(Debug, Clone, Error)]
pub enum JobStoreError {
    /// The database could not be reached or dropped the connection (a
    /// restart, a failover, a pool exhausted): worth trying again once it
    /// is back.
    #[error("{0}")]
    Unavailable(String),
    /// A concurrent writer held what the statement needed: worth trying
    /// again at once.
    #[error("{0}")]
    Conflict(String),
    /// Anything else: trying the same call again will not help.
    #[error("{0}")]
    Failed(String),
}

impl JobStoreError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Conflict(_))
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
