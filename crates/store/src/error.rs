use thiserror::Error;
use tre_domain::{Denied, DomainError};
use tre_jobs::{JobError, JobStoreError};
use tre_jobs_sql::SqlJobError;

/// Errors of the store. [`StoreError::is_retryable`] says whether trying the
/// same call again may succeed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The object does not exist, or the caller may not know it exists.
    #[error("{object} {id} not found")]
    NotFound { object: &'static str, id: String },
    /// The object existed and ended (a revoked or expired project): what
    /// it held is no longer served.
    #[error("{object} {id} is {state}: gone")]
    Gone {
        object: &'static str,
        id: String,
        state: String,
    },
    /// The caller is not allowed to do this.
    #[error("forbidden: {}", .0.reason)]
    Forbidden(Denied),
    /// The domain refused the command (bad input, illegal transition, conflict).
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// A concurrent writer changed the object first (retried internally; seen
    /// only when retries are exhausted).
    #[error("concurrent update of {0}; try again")]
    WriteConflict(String),
    /// The object changed since the version the caller read (`If-Match`).
    #[error("{object} {id} changed since revision {expected} (now {current})")]
    Stale {
        object: &'static str,
        id: String,
        expected: i64,
        current: i64,
    },
    /// Another call with the same idempotency key committed its work first;
    /// this call's transaction was rolled back.
    #[error("another call with this idempotency key did the work")]
    IdempotencyConflict,
    #[error("configuration: {0}")]
    Config(String),
    /// A stored document could not be read back.
    #[error("stored {object} {id} is unreadable: {message}")]
    Corrupt {
        object: &'static str,
        id: String,
        message: String,
    },
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl StoreError {
    pub fn not_found(object: &'static str, id: impl Into<String>) -> Self {
        Self::NotFound {
            object,
            id: id.into(),
        }
    }

    /// Refusals that must not reveal the object become "not found".
    pub fn denied(object: &'static str, id: &str, denied: Denied) -> Self {
        if denied.conceal {
            Self::not_found(object, id)
        } else {
            Self::Forbidden(denied)
        }
    }

    /// A lost optimistic-concurrency race, or the database's own
    /// serialization / lock errors: the whole transaction may be retried.
    pub fn is_write_conflict(&self) -> bool {
        match self {
            Self::WriteConflict(_) => true,
            Self::Database(e) => tre_jobs_sql::sql_conflict(e),
            _ => false,
        }
    }

    /// The database could not be reached or dropped the connection (see
    /// [`tre_jobs_sql::sql_unavailable`]): worth retrying once the
    /// database is back; never a verdict on the call itself.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Database(e) if tre_jobs_sql::sql_unavailable(e))
    }

    /// Whether a caller may retry the same call unchanged.
    pub fn is_retryable(&self) -> bool {
        self.is_write_conflict() || self.is_unavailable()
    }
}

impl From<SqlJobError> for StoreError {
    fn from(e: SqlJobError) -> Self {
        match e {
            SqlJobError::Database(e) => Self::Database(e),
            SqlJobError::Corrupt { key, message } => Self::Corrupt {
                object: "job",
                id: key,
                message,
            },
            SqlJobError::Config(message) => Self::Config(message),
        }
    }
}

/// The store as the job runtime sees it (the cleaner's retained rows):
/// whether trying again may help.
impl From<StoreError> for JobStoreError {
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() {
            Self::Unavailable(e.to_string())
        } else if e.is_write_conflict() {
            Self::Conflict(e.to_string())
        } else {
            Self::Failed(e.to_string())
        }
    }
}

/// A job's handler failed on the store: worth retrying when the store
/// says a retry may succeed.
impl From<StoreError> for JobError {
    fn from(e: StoreError) -> Self {
        if e.is_retryable() {
            Self::Transient(e.to_string())
        } else {
            Self::Permanent(e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_connections_are_unavailable_not_verdicts() {
        let io = StoreError::Database(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        )));
        assert!(io.is_unavailable() && io.is_retryable());
        assert!(StoreError::Database(sqlx::Error::PoolTimedOut).is_retryable());
        let not_found = StoreError::not_found("request", "r");
        assert!(!not_found.is_unavailable() && !not_found.is_retryable());
        let invalid = StoreError::Domain(DomainError::Conflict("closed".into()));
        assert!(!invalid.is_retryable());
    }
}
