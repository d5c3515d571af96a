//! Bulk files into a project: each file of a unit is streamed from the
//! environment's source into `{project}/files/{collection}/{label}/{name}`
//! ([`tre_domain::files::project_object`]), hashed on the way, and written
//! only if its SHA-256 and size are those its file inventory registered.
//!
//! Memory is bounded whatever the file size: a small file is read whole
//! (at most [`PART_BYTES`]), a large one goes up in parts of that size,
//! a few in flight. With a store that exposes its multipart API (S3), the
//! upload of a large file is checkpointed after every part
//! ([`UploadState`], kept in SQL by the caller): a unit that dies in the
//! middle resumes the same upload after the last recorded part (the parts
//! before it are read again only to hash them), and an upload that cannot
//! complete (a checksum mismatch) is aborted, never left behind. When the
//! source root is a prefix of the destination's own S3 bucket, the server
//! copies each file (no bytes through the worker on the way in) and the
//! copy is read back to check its SHA-256.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;
use tre_domain::dispense::UnitOutput;
use tre_domain::files::project_object;

use crate::error::Writing;
use crate::io::Digest256;
use crate::keys::Pseudonymiser;
use crate::plan::{PlannedFile, Unit};
use crate::{DispenseError, Source};

/// Part size of large files' uploads; files smaller than this are read
/// whole and written with one request.
pub const PART_BYTES: u64 = 16 * 1024 * 1024;
/// Small files copied at once within a unit.
const FILES_AT_ONCE: usize = 8;
/// Parts of one large file uploading at once.
const PARTS_IN_FLIGHT: usize = 4;

/// The multipart upload of a large file in progress: a unit's checkpoint,
/// saved after each part and cleared when the file is written or given up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadState {
    /// The file's index within its unit.
    pub file: u32,
    /// The object being written, relative to the project's prefix.
    pub object: String,
    pub upload_id: String,
    pub part_bytes: u64,
    /// The ids of the parts uploaded so far, in order.
    pub parts: Vec<String>,
}

/// Where a unit's upload checkpoints are kept (the SQL store).
pub trait UploadLog: Send + Sync {
    /// Saves the upload in progress, or clears it (`None`).
    fn save<'a>(&'a self, state: Option<&'a UploadState>) -> BoxFuture<'a, Result<(), String>>;
}

/// No checkpoints (reference runs, benchmarks).
pub struct NoLog;

impl UploadLog for NoLog {
    fn save<'a>(&'a self, _: Option<&'a UploadState>) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

/// A store's own multipart API (S3's), under an optional prefix: what
/// lets a large copy resume and be aborted by id; and, for an S3 bucket,
/// its name and an unprefixed client, so a file whose source is in the same
/// bucket is copied by the server ([`ObjectStore::copy`]).
#[derive(Clone)]
pub struct Multipart {
    store: Arc<dyn MultipartStore>,
    prefix: Option<Path>,
    bucket: Option<(String, Arc<dyn ObjectStore>)>,
}

impl std::fmt::Debug for Multipart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Multipart")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Multipart {
    pub fn new(store: Arc<dyn MultipartStore>, prefix: Option<Path>) -> Self {
        Self {
            store,
            prefix,
            bucket: None,
        }
    }

    /// The multipart API of an S3 bucket (`client` unprefixed), whose
    /// project objects are under `prefix`.
    pub fn s3(
        client: Arc<object_store::aws::AmazonS3>,
        bucket: &str,
        prefix: Option<Path>,
    ) -> Self {
        Self {
            store: client.clone(),
            prefix,
            bucket: Some((bucket.to_owned(), client)),
        }
    }

    fn full(&self, path: &Path) -> Path {
        match &self.prefix {
            Some(prefix) => prefix.parts().chain(path.parts()).collect(),
            None => path.clone(),
        }
    }

    /// Aborts an upload recorded in a checkpoint (one that is gone already
    /// is fine).
    pub async fn abort(&self, project: &str, state: &UploadState) -> Result<(), DispenseError> {
        let path = self.full(&project_path(project, &state.object)?);
        match self
            .store
            .abort_multipart(&path, &state.upload_id.clone())
            .await
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

fn project_path(project: &str, relative: &str) -> Result<Path, DispenseError> {
    Path::parse(format!("{project}/{relative}"))
        .map_err(|e| DispenseError::data(format!("bad object path {relative:?}: {e}")))
}

/// Copies the files of one unit.
pub struct FileCopy<'a> {
    pub project: &'a str,
    pub pseudonymiser: Option<&'a Pseudonymiser>,
    pub source: &'a Source,
    pub dest: &'a Arc<dyn ObjectStore>,
    /// The destination's multipart API, when it has one (S3).
    pub multipart: Option<&'a Multipart>,
}

/// The object of `file` in a project, relative to its prefix: its folder
/// and name carry the participant's pseudonym, never the id (unless the
/// environment does not pseudonymise).
pub fn file_object(file: &PlannedFile, pseudonymiser: Option<&Pseudonymiser>) -> String {
    let label = match pseudonymiser {
        Some(p) => p.pseudonym(&file.key),
        None => file.key.clone(),
    };
    let object = project_object(&file.collection, &file.entity, &label, &file.location);
    if file.key == file.entity {
        object
    } else {
        // `007` in the inventory, `7` in the cohort: neither stays
        let (folder, name) = object.rsplit_once('/').expect("has a folder");
        format!(
            "{folder}/{}",
            tre_domain::files::rewrite_name(name, &file.key, &label)
        )
    }
}

/// The checkpoint of a files unit: how many files and bytes it wrote, and
/// a SHA-256 over its listing (`sha256  object` lines, as `sha256sum`
/// prints them).
fn output(unit: u32, written: &[(String, &PlannedFile)]) -> UnitOutput {
    let mut listing = Sha256::new();
    for (object, file) in written {
        listing.update(format!("{}  {object}\n", file.sha256));
    }
    UnitOutput {
        unit,
        object: "files".into(),
        rows: 0,
        bytes: written.iter().map(|(_, f)| f.size).sum(),
        sha256: hex::encode(listing.finalize()),
    }
}

impl FileCopy<'_> {
    /// Writes every file of `unit` (rewriting any already there), resuming
    /// the upload `resume` recorded, and returns the unit's checkpoint.
    pub async fn run(
        &self,
        unit: &Unit,
        resume: Option<UploadState>,
        log: &dyn UploadLog,
    ) -> Result<UnitOutput, DispenseError> {
        let files = unit.files();
        let written: Vec<(String, &PlannedFile)> = files
            .iter()
            .map(|f| (file_object(f, self.pseudonymiser), f))
            .collect();
        if let Some((client, source_prefix, dest_prefix)) = self.same_bucket() {
            let copies: Vec<_> = written
                .iter()
                .map(|(object, file)| {
                    self.copy_in_bucket(client, &source_prefix, dest_prefix, object, file)
                })
                .collect();
            futures::stream::iter(copies)
                .buffer_unordered(FILES_AT_ONCE)
                .try_collect::<Vec<()>>()
                .await?;
            return Ok(output(unit.index, &written));
        }
        let (small, large): (Vec<_>, Vec<_>) = written
            .iter()
            .enumerate()
            .partition(|(_, (_, f))| f.size < PART_BYTES);
        // made first, then polled: a closure mapping borrowed pairs inside
        // the stream would not be general enough for a spawned task
        let copies: Vec<_> = small
            .into_iter()
            .map(|(_, (object, file))| self.copy_small(object, file))
            .collect();
        futures::stream::iter(copies)
            .buffer_unordered(FILES_AT_ONCE)
            .try_collect::<Vec<()>>()
            .await?;
        let mut resume = resume;
        for (i, (object, file)) in large {
            let resumed = resume.take().filter(|r| {
                r.file == i as u32 && r.object == *object && r.part_bytes == PART_BYTES
            });
            self.copy_large(i as u32, object, file, resumed, log)
                .await?;
        }
        Ok(output(unit.index, &written))
    }

    /// When the source is in the destination's bucket: the bucket's
    /// client and both prefixes (the server copies, nothing passes through
    /// the worker but the check).
    fn same_bucket(&self) -> Option<(&Arc<dyn ObjectStore>, Path, Option<&Path>)> {
        let multipart = self.multipart?;
        let (bucket, client) = multipart.bucket.as_ref()?;
        let (source_bucket, source_prefix) = self.source.s3_place()?;
        (source_bucket == bucket)
            .then(|| (client, Path::from(source_prefix), multipart.prefix.as_ref()))
    }

    /// A server-side copy within one bucket, then the copy read back and
    /// checked against the file inventory (a copy that does not match is
    /// deleted). Files larger than one copy request takes (5 GiB) go
    /// through the worker instead.
    async fn copy_in_bucket(
        &self,
        client: &Arc<dyn ObjectStore>,
        source_prefix: &Path,
        dest_prefix: Option<&Path>,
        object: &str,
        file: &PlannedFile,
    ) -> Result<(), DispenseError> {
        const COPY_LIMIT: u64 = 5 << 30;
        if file.size > COPY_LIMIT {
            let path = project_path(self.project, object)?;
            return self.copy_large_unresumable(&path, object, file).await;
        }
        // the location is checked as the source would check it
        let from: Path = source_prefix
            .parts()
            .chain(self.source.path(&file.location)?.parts())
            .collect();
        let relative = project_path(self.project, object)?;
        let to: Path = match dest_prefix {
            Some(prefix) => prefix.parts().chain(relative.parts()).collect(),
            None => relative,
        };
        client.copy(&from, &to).await?;
        let mut copied = Digest256::default();
        copied
            .read_all(client.get(&to).await?.into_stream())
            .await?;
        if let Err(mismatch) = self.check(object, file, copied) {
            client.delete(&to).await?;
            return Err(mismatch);
        }
        Ok(())
    }

    /// Whether what was read of `file` (its digest) is what its file
    /// inventory registered; else the error that says so.
    fn check(
        &self,
        object: &str,
        file: &PlannedFile,
        read: Digest256,
    ) -> Result<(), DispenseError> {
        let (sha, size) = read.finish();
        if sha == file.sha256 && size == file.size {
            Ok(())
        } else {
            Err(self.mismatch(object, file, &sha, size))
        }
    }

    fn mismatch(&self, object: &str, file: &PlannedFile, sha: &str, size: u64) -> DispenseError {
        DispenseError::Integrity {
            message: format!(
                "{object}: the source file is not the one its file inventory registered (SHA-256 {}, {} bytes registered; {sha}, {size} bytes read): it changed since; repair it or register the file inventory again",
                file.sha256, file.size
            ),
            detail: format!("source location {}", file.location),
        }
    }

    async fn copy_small(&self, object: &str, file: &PlannedFile) -> Result<(), DispenseError> {
        let chunks: Vec<Bytes> = self
            .source
            .stream(&file.location, None)
            .await?
            .try_collect()
            .await?;
        let mut read = Digest256::default();
        for chunk in &chunks {
            read.update(chunk);
        }
        self.check(object, file, read)?;
        self.dest
            .put(
                &project_path(self.project, object)?,
                PutPayload::from_iter(chunks),
            )
            .await
            .writing()?;
        Ok(())
    }

    async fn copy_large(
        &self,
        index: u32,
        object: &str,
        file: &PlannedFile,
        resume: Option<UploadState>,
        log: &dyn UploadLog,
    ) -> Result<(), DispenseError> {
        let path = project_path(self.project, object)?;
        let Some(multipart) = self.multipart else {
            return self.copy_large_unresumable(&path, object, file).await;
        };
        let full = multipart.full(&path);
        let mut state = match resume {
            Some(state) => {
                tracing::info!(
                    object,
                    parts = state.parts.len(),
                    "resuming a large file's upload"
                );
                state
            }
            None => UploadState {
                file: index,
                object: object.to_owned(),
                upload_id: multipart.store.create_multipart(&full).await.writing()?,
                part_bytes: PART_BYTES,
                parts: Vec::new(),
            },
        };
        let log_err = |e: String| DispenseError::Data(format!("saving the upload checkpoint: {e}"));
        log.save(Some(&state)).await.map_err(log_err)?;
        let mut read = Digest256::default();
        let done = state.parts.len() as u64 * PART_BYTES;
        if done > 0 {
            // the parts already up: read again only to hash them
            read.read_all(self.source.stream(&file.location, Some(0..done)).await?)
                .await?;
        }
        let mut stream = self
            .source
            .stream(&file.location, Some(done..file.size.max(done)))
            .await?;
        let mut buffer = BytesMut::with_capacity(PART_BYTES as usize);
        let mut in_flight: VecDeque<JoinHandle<object_store::Result<PartId>>> = VecDeque::new();
        let mut next_part = state.parts.len();
        let resumed = next_part > 0;
        loop {
            let chunk = stream.try_next().await?;
            let last = chunk.is_none();
            if let Some(chunk) = chunk {
                read.update(&chunk);
                buffer.extend_from_slice(&chunk);
            }
            while buffer.len() as u64 >= PART_BYTES || (last && !buffer.is_empty()) {
                let take = buffer.len().min(PART_BYTES as usize);
                let data = buffer.split_to(take).freeze();
                let (store, full, id) = (
                    multipart.store.clone(),
                    full.clone(),
                    state.upload_id.clone(),
                );
                let part = next_part;
                in_flight.push_back(tokio::spawn(async move {
                    store.put_part(&full, &id, part, data.into()).await
                }));
                next_part += 1;
            }
            // parts are recorded in order, so a checkpoint is a prefix
            while in_flight.len() >= PARTS_IN_FLIGHT || (last && !in_flight.is_empty()) {
                let joined = in_flight.pop_front().expect("not empty").await;
                let part =
                    joined.map_err(|e| DispenseError::data(format!("part upload task: {e}")))?;
                let part = match part {
                    Ok(part) => part,
                    Err(object_store::Error::NotFound { .. }) if resumed => {
                        // the upload resumed is gone (aborted, expired):
                        // the retry starts the file again
                        log.save(None).await.map_err(log_err)?;
                        return Err(DispenseError::Verify(format!(
                            "{object}: the upload being resumed is gone; the file starts again"
                        )));
                    }
                    Err(e) => return Err(DispenseError::from(e)).writing(),
                };
                state.parts.push(part.content_id);
                log.save(Some(&state)).await.map_err(log_err)?;
            }
            if last {
                break;
            }
        }
        if let Err(mismatch) = self.check(object, file, read) {
            multipart
                .store
                .abort_multipart(&full, &state.upload_id)
                .await?;
            log.save(None).await.map_err(log_err)?;
            return Err(mismatch);
        }
        let parts = state
            .parts
            .iter()
            .map(|id| PartId {
                content_id: id.clone(),
            })
            .collect();
        multipart
            .store
            .complete_multipart(&full, &state.upload_id, parts)
            .await
            .writing()?;
        log.save(None).await.map_err(log_err)?;
        Ok(())
    }

    /// A large file into a store without a multipart API of its own (a
    /// folder): streamed in parts, written only when complete and checked;
    /// a dead unit starts the file again.
    async fn copy_large_unresumable(
        &self,
        path: &Path,
        object: &str,
        file: &PlannedFile,
    ) -> Result<(), DispenseError> {
        let upload = self.dest.put_multipart(path).await.writing()?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES as usize);
        let mut stream = self.source.stream(&file.location, None).await?;
        let mut read = Digest256::default();
        let outcome: Result<(), DispenseError> = async {
            while let Some(chunk) = stream.try_next().await? {
                read.update(&chunk);
                writer.wait_for_capacity(PARTS_IN_FLIGHT).await.writing()?;
                writer.put(chunk);
            }
            Ok(())
        }
        .await;
        match outcome.and_then(|()| self.check(object, file, read)) {
            Ok(()) => {
                writer.finish().await.writing()?;
                Ok(())
            }
            // nothing half-written stays: the upload is given up
            Err(mismatch @ DispenseError::Integrity { .. }) => {
                writer.abort().await?;
                Err(mismatch)
            }
            Err(e) => {
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }
}
