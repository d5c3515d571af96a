use thiserror::Error;

/// Why a dispense step failed. [`DispenseError::is_transient`] tells the job
/// runtime whether trying again can help.
#[derive(Debug, Error)]
pub enum DispenseError {
    /// The object store failed (network, 5xx, throttling, missing object).
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("parquet: {0}")]
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
}

impl DispenseError {
    pub fn data(message: impl Into<String>) -> Self {
        Self::Data(message.into())
    }

    /// Network and server trouble is transient; bad data, bad settings and
    /// missing source objects are not.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Store(e) => store_error_transient(e),
            Self::Parquet(parquet::errors::ParquetError::External(e)) => e
                .downcast_ref::<object_store::Error>()
                .is_none_or(store_error_transient),
            Self::Parquet(_) | Self::Arrow(_) | Self::Data(_) | Self::Config(_) => false,
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
