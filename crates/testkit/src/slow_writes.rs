//! A real object store made slow to write to, as a distant S3 server is:
//! every put, multipart part and copy waits first. Reads, lists and deletes
//! go straight through. For tests that must act while writes are in flight,
//! whatever the speed of the machine. (`object_store::throttle` cannot
//! stand in: it panics on reads from a local folder.)

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result, UploadPart,
};

/// `inner`, with every write delayed by `wait`.
#[derive(Debug)]
pub struct SlowWrites {
    inner: Arc<dyn ObjectStore>,
    wait: Duration,
}

impl SlowWrites {
    pub fn over(inner: Arc<dyn ObjectStore>, wait: Duration) -> Arc<dyn ObjectStore> {
        Arc::new(Self { inner, wait })
    }
}

impl fmt::Display for SlowWrites {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SlowWrites({}, {:?})", self.inner, self.wait)
    }
}

#[async_trait]
impl ObjectStore for SlowWrites {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        tokio::time::sleep(self.wait).await;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        let upload = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(SlowUpload {
            upload,
            wait: self.wait,
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        tokio::time::sleep(self.wait).await;
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        tokio::time::sleep(self.wait).await;
        self.inner.rename_opts(from, to, options).await
    }
}

#[derive(Debug)]
struct SlowUpload {
    upload: Box<dyn MultipartUpload>,
    wait: Duration,
}

#[async_trait]
impl MultipartUpload for SlowUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let wait = self.wait;
        let part = self.upload.put_part(data);
        Box::pin(async move {
            tokio::time::sleep(wait).await;
            part.await
        })
    }

    async fn complete(&mut self) -> Result<PutResult> {
        self.upload.complete().await
    }

    async fn abort(&mut self) -> Result<()> {
        self.upload.abort().await
    }
}
