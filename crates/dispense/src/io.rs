//! Parquet over any object store: a reader that fetches byte ranges (the
//! footer by suffix, then only the projected column chunks) and a writer
//! that streams into a multipart upload while hashing what it sends.

use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, TryFutureExt};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::{AsyncFileReader, MetadataSuffixFetch};
use parquet::arrow::async_writer::AsyncFileWriter;
use parquet::errors::{ParquetError, Result};
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

fn to_parquet_err(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

#[derive(Clone, Debug)]
pub(crate) struct StoreReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
}

impl StoreReader {
    pub(crate) fn new(store: Arc<dyn ObjectStore>, path: Path) -> Self {
        Self { store, path }
    }
}

impl AsyncFileReader for StoreReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, Result<Bytes>> {
        self.store
            .get_range(&self.path, range)
            .map_err(to_parquet_err)
            .boxed()
    }

    fn get_byte_ranges(&mut self, ranges: Vec<Range<u64>>) -> BoxFuture<'_, Result<Vec<Bytes>>> {
        async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(to_parquet_err)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, Result<Arc<ParquetMetaData>>> {
        async move {
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .load_via_suffix_and_finish(self)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

impl MetadataSuffixFetch for &mut StoreReader {
    fn fetch_suffix(&mut self, suffix: usize) -> BoxFuture<'_, Result<Bytes>> {
        let options = GetOptions {
            range: Some(GetRange::Suffix(suffix as u64)),
            ..Default::default()
        };
        async move {
            let resp = self
                .store
                .get_opts(&self.path, options)
                .await
                .map_err(to_parquet_err)?;
            resp.bytes().await.map_err(to_parquet_err)
        }
        .boxed()
    }
}

/// SHA-256 and size of bytes as they pass: through a [`HashingWriter`], or
/// read from a store (a bulk file checked as it is copied).
#[derive(Debug, Default)]
pub(crate) struct Digest256 {
    hasher: Sha256,
    bytes: u64,
}

impl Digest256 {
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.bytes += bytes.len() as u64;
    }

    /// Hashes every chunk of `stream`.
    pub(crate) async fn read_all(
        &mut self,
        mut stream: futures::stream::BoxStream<'static, object_store::Result<Bytes>>,
    ) -> object_store::Result<()> {
        use futures::TryStreamExt;
        while let Some(chunk) = stream.try_next().await? {
            self.update(&chunk);
        }
        Ok(())
    }

    pub(crate) fn finish(self) -> (String, u64) {
        (hex::encode(self.hasher.finalize()), self.bytes)
    }
}

/// Streams into the object (multipart once past the buffer) and hashes.
pub(crate) struct HashingWriter {
    inner: BufWriter,
    digest: Arc<Mutex<Digest256>>,
}

impl HashingWriter {
    pub(crate) fn new(store: Arc<dyn ObjectStore>, path: Path) -> (Self, Arc<Mutex<Digest256>>) {
        let digest = Arc::new(Mutex::new(Digest256::default()));
        (
            Self {
                inner: BufWriter::new(store, path),
                digest: digest.clone(),
            },
            digest,
        )
    }
}

impl AsyncFileWriter for HashingWriter {
    fn write(&mut self, bs: Bytes) -> BoxFuture<'_, Result<()>> {
        self.digest.lock().expect("not poisoned").update(&bs);
        async move {
            self.inner.write_all(&bs).await?;
            Ok(())
        }
        .boxed()
    }

    fn complete(&mut self) -> BoxFuture<'_, Result<()>> {
        async move {
            self.inner.shutdown().await?;
            Ok(())
        }
        .boxed()
    }
}
