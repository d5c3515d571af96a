//! What can go wrong on SQL, and which of it is worth trying again: the
//! one place tre reads sqlx's errors for that (the store asks here too).

use thiserror::Error;
use tre_jobs::JobStoreError;

/// Errors of [`SqlJobStore`](crate::SqlJobStore).
#[derive(Debug, Error)]
pub enum SqlJobError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored job could not be read back.
    #[error("stored job {key} is unreadable: {message}")]
    Corrupt { key: String, message: String },
    #[error("configuration: {0}")]
    Config(String),
}

impl SqlJobError {
    /// A concurrent writer held what the statement needed.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Database(e) if sql_conflict(e))
    }

    /// The database could not be reached or dropped the connection.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Database(e) if sql_unavailable(e))
    }
}

impl From<SqlJobError> for JobStoreError {
    fn from(e: SqlJobError) -> Self {
        if e.is_unavailable() {
            Self::Unavailable(e.to_string())
        } else if e.is_conflict() {
            Self::Conflict(e.to_string())
        } else {
            Self::Failed(e.to_string())
        }
    }
}

/// The database's own serialization or lock errors: PostgreSQL's
/// serialization_failure and deadlock_detected; SQLite's BUSY (5) and
/// LOCKED (6) with their extended codes. The whole transaction may be
/// tried again.
pub fn sql_conflict(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            matches!(
                db.code().as_deref(),
                Some("40001" | "40P01" | "5" | "6" | "517" | "261" | "262")
            ) || db.message().contains("database is locked")
        }
        _ => false,
    }
}

/// The database could not be reached or dropped the connection: a
/// restart, a failover, a network cut, a pool exhausted under load.
/// PostgreSQL's connection exceptions (SQLSTATE class 08), its shutdown
/// and start-up refusals (57P01 to 57P03), too many connections (53300),
/// and the driver's I/O, TLS, protocol and pool errors. Worth retrying
/// once the database is back; never a verdict on the call itself.
pub fn sql_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03" | "53300")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_connections_are_unavailable_to_the_runtime() {
        let io = SqlJobError::Database(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        )));
        assert!(io.is_unavailable() && !io.is_conflict());
        assert!(JobStoreError::from(io).is_unavailable());
        let corrupt = SqlJobError::Corrupt {
            key: "k".into(),
            message: "not JSON".into(),
        };
        assert!(!JobStoreError::from(corrupt).is_retryable());
    }
}
