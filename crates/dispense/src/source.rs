//! An environment's source data: the object store its root names, with
//! every read confined to that root.
//!
//! Locations are checked as text when an inventory is set (relative, no
//! `..`, no encoded separators: see `tre_domain::storage`). What text cannot
//! show is checked here, when a file is opened: in a folder, a symbolic link
//! (of the file or of a folder on its way) that leads out of the root is
//! refused, so a location can never reach another environment's data or the
//! project output store. An S3 prefix has no links; the client keeps every
//! key under it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt};
use tre_domain::StoreRoot;

use crate::DispenseError;
use crate::io::{Digest256, StoreReader};

/// A source root, opened.
#[derive(Debug, Clone)]
pub struct Source {
    store: Arc<dyn ObjectStore>,
    /// For a folder: the root with every link resolved, which each opened
    /// file must stay under.
    folder: Option<PathBuf>,
    /// For an S3 root: its bucket and prefix (a project store in the same
    /// bucket copies server-side).
    s3: Option<(String, String)>,
}

impl Source {
    /// Opens `root`: a folder (which must exist) or an S3 prefix, with the
    /// S3 settings from the `AWS_*` variables (see [`crate::stores::open`]).
    pub fn open(root: &StoreRoot) -> Result<Self, DispenseError> {
        match root {
            StoreRoot::Folder(path) => Self::folder(PathBuf::from(path)),
            StoreRoot::S3 { bucket, prefix } => Ok(Self {
                store: crate::stores::open(&root.to_string(), "source")?,
                folder: None,
                s3: Some((bucket.clone(), prefix.clone())),
            }),
        }
    }

    /// A folder source. Its errors never show the folder's path: they may
    /// reach researchers.
    pub fn folder(path: PathBuf) -> Result<Self, DispenseError> {
        let canonical = std::fs::canonicalize(&path).map_err(|e| {
            tracing::warn!(folder = %path.display(), error = %e, "source root unreadable");
            DispenseError::data("the environment's source root cannot be read")
        })?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(&canonical)
            .map_err(|e| DispenseError::Config(format!("source: {e}")))?;
        Ok(Self {
            store: Arc::new(store),
            folder: Some(canonical),
            s3: None,
        })
    }

    /// A source over a store opened elsewhere (an S3 client with explicit
    /// settings, say). Nothing is confined beyond what the store does.
    pub fn from_store(store: Arc<dyn ObjectStore>) -> Self {
        Self {
            store,
            folder: None,
            s3: None,
        }
    }

    /// A source under `prefix` of S3 bucket `bucket`, read through `store`
    /// (a client of that prefix).
    pub fn from_s3(store: Arc<dyn ObjectStore>, bucket: &str, prefix: &str) -> Self {
        Self {
            store,
            folder: None,
            s3: Some((bucket.to_owned(), prefix.trim_matches('/').to_owned())),
        }
    }

    /// The bucket and prefix of an S3 root.
    pub(crate) fn s3_place(&self) -> Option<(&str, &str)> {
        self.s3.as_ref().map(|(b, p)| (b.as_str(), p.as_str()))
    }

    /// The object at `location`, once it is known to stay inside the root.
    pub(crate) fn path(&self, location: &str) -> Result<Path, DispenseError> {
        let path = Path::parse(location)
            .ok()
            .filter(|p| p.as_ref() == location)
            .ok_or_else(|| {
                DispenseError::data(format!("location {location:?} is not a plain object path"))
            })?;
        if let Some(root) = &self.folder {
            let resolved = match std::fs::canonicalize(root.join(location)) {
                Ok(resolved) => resolved,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(DispenseError::data(format!(
                        "{location} is not in the environment's source"
                    )));
                }
                Err(e) => {
                    tracing::warn!(location, error = %e, "source file unreadable");
                    return Err(DispenseError::data(format!("{location} cannot be read")));
                }
            };
            if !resolved.starts_with(root) {
                tracing::warn!(location, "a source location leads out of its root");
                return Err(DispenseError::data(format!(
                    "{location} leads out of the environment's source root (a symbolic link); it is not read"
                )));
            }
        }
        Ok(path)
    }

    /// A Parquet reader of `location`, checked first.
    pub(crate) fn reader(&self, location: &str) -> Result<StoreReader, DispenseError> {
        Ok(StoreReader::new(self.store.clone(), self.path(location)?))
    }

    /// The size of the object at `location`, checked first.
    pub async fn size(&self, location: &str) -> Result<u64, DispenseError> {
        Ok(self.store.head(&self.path(location)?).await?.size)
    }

    /// The bytes `range` of the object at `location` as a stream of chunks
    /// (the whole object for `None`), checked first.
    pub async fn stream(
        &self,
        location: &str,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<BoxStream<'static, object_store::Result<Bytes>>, DispenseError> {
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..Default::default()
        };
        Ok(self
            .store
            .get_opts(&self.path(location)?, options)
            .await?
            .into_stream())
    }

    /// The SHA-256 (hex) and size of the object at `location`, read as a
    /// stream (memory stays bounded whatever its size).
    pub async fn sha256(&self, location: &str) -> Result<(String, u64), DispenseError> {
        let mut digest = Digest256::default();
        digest.read_all(self.stream(location, None).await?).await?;
        Ok(digest.finish())
    }
}

type Opener = dyn Fn(&StoreRoot) -> Result<Source, DispenseError> + Send + Sync;

/// Opens environments' source roots, each once per process.
#[derive(Clone)]
pub struct Sources {
    open: Arc<Opener>,
    opened: Arc<Mutex<HashMap<StoreRoot, Source>>>,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources").finish_non_exhaustive()
    }
}

impl Default for Sources {
    /// Roots opened by [`Source::open`].
    fn default() -> Self {
        Self::with(Source::open)
    }
}

impl Sources {
    /// Roots opened by `open` (tests give S3 clients explicit settings).
    pub fn with(
        open: impl Fn(&StoreRoot) -> Result<Source, DispenseError> + Send + Sync + 'static,
    ) -> Self {
        Self {
            open: Arc::new(open),
            opened: Arc::default(),
        }
    }

    /// The source of `root`, opened now or before (failures are not kept:
    /// a folder that appears later is found then).
    pub fn get(&self, root: &StoreRoot) -> Result<Source, DispenseError> {
        if let Some(source) = self.opened.lock().expect("not poisoned").get(root) {
            return Ok(source.clone());
        }
        let source = (self.open)(root)?;
        self.opened
            .lock()
            .expect("not poisoned")
            .insert(root.clone(), source.clone());
        Ok(source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "tre-source-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Attack: an environment admin points a location at a link that leads
    /// into another folder (another environment's data, project output).
    #[test]
    fn links_out_of_the_root_are_refused_without_showing_paths() {
        let base = temp("links");
        let root = base.join("env-b");
        let outside = base.join("env-a-output");
        std::fs::create_dir_all(root.join("inside")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(root.join("inside/ok.parquet"), b"x").unwrap();
        std::fs::write(outside.join("secret.parquet"), b"x").unwrap();
        std::os::unix::fs::symlink(
            outside.join("secret.parquet"),
            root.join("file-link.parquet"),
        )
        .unwrap();
        std::os::unix::fs::symlink(&outside, root.join("dir-link")).unwrap();
        std::os::unix::fs::symlink(root.join("inside/ok.parquet"), root.join("inner.parquet"))
            .unwrap();
        let source = Source::folder(root.clone()).unwrap();
        source.path("inside/ok.parquet").unwrap();
        source.path("inner.parquet").unwrap();
        for location in ["file-link.parquet", "dir-link/secret.parquet"] {
            let err = source.path(location).unwrap_err().to_string();
            assert!(err.contains("leads out of"), "{location}: {err}");
            assert!(
                !err.contains(base.to_str().unwrap()),
                "no server path: {err}"
            );
        }
        for location in ["../env-a-output/secret.parquet", "a//b", "/etc/passwd"] {
            assert!(source.path(location).is_err(), "{location}");
        }
        let err = source.path("missing.parquet").unwrap_err().to_string();
        assert!(!err.contains(base.to_str().unwrap()), "{err}");
        let err = Source::folder(base.join("nowhere"))
            .unwrap_err()
            .to_string();
        assert!(!err.contains(base.to_str().unwrap()), "{err}");
        let _ = std::fs::remove_dir_all(base);
    }
}
