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
    /// Writing into the project's store failed; the error it wraps says
    /// how. A full disk is worth retrying once space is made; a write the
    /// store refuses (permission denied, a read-only disk) is not.
    #[error("writing to the project store failed: {}", write_reason(.0))]
    Write(#[source] Box<DispenseError>),
}

/// Tags a failed write into the project's store as a write.
pub(crate) trait Writing<T> {
    fn writing(self) -> Result<T, DispenseError>;
}

impl<T, E: Into<DispenseError>> Writing<T> for Result<T, E> {
    fn writing(self) -> Result<T, DispenseError> {
        self.map_err(|e| match e.into() {
            already @ DispenseError::Write(_) => already,
            e => DispenseError::Write(Box::new(e)),
        })
    }
}

/// What an operating system error beneath a failure says people can act
/// on: the two causes that decide whether retrying helps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoCause {
    /// No space left (a full disk or quota): transient, retried until space
    /// is made.
    NoSpace,
    /// The write or read was refused (permission denied, a read-only file
    /// system): permanent until someone changes the store.
    Refused,
}

impl IoCause {
    fn of(e: &std::io::Error) -> Option<Self> {
        use std::io::ErrorKind as K;
        match e.kind() {
            K::StorageFull | K::QuotaExceeded | K::FileTooLarge => Some(Self::NoSpace),
            K::PermissionDenied | K::ReadOnlyFilesystem => Some(Self::Refused),
            _ => match e.raw_os_error() {
                // ENOSPC, EDQUOT; EPERM, EACCES, EROFS (Linux numbers)
                Some(28 | 122) => Some(Self::NoSpace),
                Some(1 | 13 | 30) => Some(Self::Refused),
                _ => None,
            },
        }
    }

    /// The first cause found among `e`'s sources (through I/O errors that
    /// wrap other errors, as the object store's writers do).
    pub fn find(e: &(dyn std::error::Error + 'static)) -> Option<Self> {
        let mut next = Some(e);
        for _ in 0..32 {
            let err = next?;
            next = match err.downcast_ref::<std::io::Error>() {
                Some(io) => {
                    if let Some(cause) = Self::of(io) {
                        return Some(cause);
                    }
                    match io.get_ref() {
                        Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
                        None => err.source(),
                    }
                }
                None => err.source(),
            };
        }
        None
    }

    fn describe(self) -> &'static str {
        match self {
            Self::NoSpace => "no space left on the store's disk",
            Self::Refused => "permission denied",
        }
    }
}

fn write_reason(inner: &DispenseError) -> String {
    match IoCause::find(inner) {
        Some(cause) => cause.describe().to_owned(),
        None => inner.to_string(),
    }
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
        _ => match IoCause::find(e) {
            Some(cause) => cause.describe(),
            None => "the store failed (see the worker's log)",
        },
    }
}

fn parquet_error(e: &parquet::errors::ParquetError) -> String {
    match e {
        parquet::errors::ParquetError::External(inner) => {
            match inner.downcast_ref::<object_store::Error>() {
                Some(store) => format!("object store: {}", store_error_kind(store)),
                None => match IoCause::find(inner.as_ref()) {
                    Some(cause) => cause.describe().to_owned(),
                    None => "an I/O error (see the worker's log)".to_owned(),
                },
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
            Self::Write(inner) => format!("writing to the project store: {}", inner.detail()),
            other => other.to_string(),
        }
    }

    /// The operating system's cause beneath this error, when it is one
    /// that decides whether retrying helps.
    pub fn io_cause(&self) -> Option<IoCause> {
        IoCause::find(self)
    }

    /// Network and server trouble is transient; bad data, bad settings and
    /// missing source objects are not.
    pub fn is_transient(&self) -> bool {
        match self.io_cause() {
            Some(IoCause::NoSpace) => return true,
            Some(IoCause::Refused) => return false,
            None => {}
        }
        match self {
            Self::Write(inner) => inner.is_transient(),
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

    /// The object store's writers wrap the operating system's error in
    /// their own, and the buffered writer wraps that in an I/O error of
    /// kind Other; the cause is found beneath them all.
    fn buried(os_error: i32) -> DispenseError {
        let store = object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(std::io::Error::from_raw_os_error(os_error)),
        };
        DispenseError::Parquet(parquet::errors::ParquetError::External(Box::new(
            std::io::Error::other(store),
        )))
    }

    #[test]
    fn a_full_disk_is_a_transient_write_and_a_refusal_a_permanent_one() {
        let full = Err::<(), _>(buried(28)).writing().unwrap_err();
        assert_eq!(
            full.to_string(),
            "writing to the project store failed: no space left on the store's disk"
        );
        assert!(full.is_transient());
        assert_eq!(full.io_cause(), Some(IoCause::NoSpace));
        for refused in [13, 1, 30] {
            let refused = Err::<(), _>(buried(refused)).writing().unwrap_err();
            assert_eq!(
                refused.to_string(),
                "writing to the project store failed: permission denied"
            );
            assert!(!refused.is_transient());
        }
        // an I/O error that says nothing more is named as such, never as a
        // read, and tried again
        let other = DispenseError::Parquet(parquet::errors::ParquetError::External(Box::new(
            std::io::Error::other("connection reset"),
        )));
        assert_eq!(
            other.to_string(),
            "parquet: an I/O error (see the worker's log)"
        );
        assert!(other.is_transient());
        let written = Err::<(), _>(other).writing().unwrap_err();
        assert_eq!(
            written.to_string(),
            "writing to the project store failed: parquet: an I/O error (see the worker's log)"
        );
        // a source that refuses a read is not retried either
        let read = DispenseError::Store(object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(std::io::Error::from_raw_os_error(13)),
        });
        assert_eq!(read.to_string(), "object store: permission denied");
        assert!(!read.is_transient());
    }
}
