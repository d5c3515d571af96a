use thiserror::Error;

/// Why a dispense step failed. [`DispenseError::is_transient`] tells the job
/// runtime whether trying again can help.
///
/// The message (`Display`) may reach researchers (a project's failure, a
/// job's last error), so it never shows a store's own message, which can
/// hold server paths and endpoints; [`DispenseError::detail`] has it all,
/// for the operators' log.
#[derive(Debug, Error)]
pub enum DispenseError {
    /// The object store failed (network, 5xx, throttling, missing object).
    #[error("object store: {}", store_error_kind(.0))]
    Store(#[from] object_store::Error),
    #[error("parquet: {}", parquet_error(.0))]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// The data does not match what the inventory promises (a missing
    /// column, a key of an unsupported type): retrying cannot help.
    #[error("{0}")]
    Data(String),
    /// A written object does not verify (size, footer, row count).
    #[error("verification failed: {0}")]
    Verify(String),
    /// A setting is malformed (names the setting).
    #[error("{0}")]
    Config(String),
    /// A source object is not what its inventory registered (its SHA-256 or
    /// size): it changed since. Retrying cannot help until it is repaired.
    /// `detail` names the source location, for the operators' log only.
    #[error("{message}")]
    Integrity { message: String, detail: String },
}

/// What went wrong in a store, without its paths.
fn store_error_kind(e: &object_store::Error) -> &'static str {
    use object_store::Error as E;
    match e {
        E::NotFound { .. } => "an object is missing",
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => "access was refused",
        E::InvalidPath { .. } => "an object path is invalid",
        E::AlreadyExists { .. } | E::Precondition { .. } | E::NotModified { .. } => {
            "a conditional request failed"
        }
        E::NotSupported { .. } | E::NotImplemented { .. } => "an operation is not supported",
        _ => "the store failed (see the worker's log)",
    }
}

fn parquet_error(e: &parquet::errors::ParquetError) -> String {
    match e {
        parquet::errors::ParquetError::External(inner) => {
            match inner.downcast_ref::<object_store::Error>() {
                Some(store) => format!("object store: {}", store_error_kind(store)),
                None => "reading failed (see the worker's log)".to_owned(),
            }
        }
        other => other.to_string(),
    }
}

impl DispenseError {
    pub fn data(message: impl Into<String>) -> Self {
        Self::Data(message.into())
    }

    /// Everything about the error, paths included: for logs, never for
    /// answers.
    pub fn detail(&self) -> String {
        match self {
            Self::Store(e) => format!("object store: {e}"),
            Self::Parquet(e) => format!("parquet: {e}"),
            Self::Integrity { message, detail } => format!("{message} ({detail})"),
            other => other.to_string(),
        }
    }

    /// Network and server trouble is transient; bad data, bad settings and
    /// missing source objects are not.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Store(e) => store_error_transient(e),
            Self::Parquet(parquet::errors::ParquetError::External(e)) => e
                .downcast_ref::<object_store::Error>()
                .is_none_or(store_error_transient),
            Self::Parquet(_)
            | Self::Arrow(_)
            | Self::Data(_)
            | Self::Config(_)
            | Self::Integrity { .. } => false,
            // a half-written object is rewritten by the unit's retry
            Self::Verify(_) => true,
        }
    }
}

fn store_error_transient(e: &object_store::Error) -> bool {
    !matches!(
        e,
        object_store::Error::NotFound { .. }
            | object_store::Error::InvalidPath { .. }
            | object_store::Error::NotSupported { .. }
            | object_store::Error::NotImplemented { .. }
            | object_store::Error::UnknownConfigurationKey { .. }
            | object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_never_show_store_paths() {
        let missing = object_store::Error::NotFound {
            path: "/srv/biobank/secret/participants.parquet".into(),
            source: "No such file or directory".into(),
        };
        let err = DispenseError::Store(missing);
        assert_eq!(err.to_string(), "object store: an object is missing");
        assert!(err.detail().contains("/srv/biobank/secret"));
        let external =
            parquet::errors::ParquetError::External(Box::new(object_store::Error::Generic {
                store: "LocalFileSystem",
                source: "Unable to open file /srv/x: denied".into(),
            }));
        let err = DispenseError::Parquet(external);
        assert!(!err.to_string().contains("/srv"), "{err}");
        assert!(err.detail().contains("/srv/x"));
    }
}
