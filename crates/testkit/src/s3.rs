//! An S3-compatible server (s3s-fs) in this process.

use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;

use crate::db::unique;

/// An S3-compatible server (s3s-fs over a temporary folder) served by this
/// process on a random port, with signature checks on. Buckets are
/// folders: `bucket` exists from the start.
pub struct S3Server {
    pub endpoint: String,
    pub bucket: String,
    pub dir: std::path::PathBuf,
    /// Server-side copies (CopyObject requests) served so far.
    pub copies: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

pub const S3_ACCESS_KEY: &str = "tre-test";
pub const S3_SECRET_KEY: &str = "tre-test-secret-key";

impl S3Server {
    pub async fn start() -> Self {
        Self::start_with_part_delay(Duration::ZERO).await
    }

    /// A server that answers each multipart part upload after `delay` (a
    /// slow link, so a test can stop a worker in the middle of a large
    /// file's upload).
    pub async fn start_with_part_delay(delay: Duration) -> Self {
        let dir = std::env::temp_dir().join(format!("tre-s3-{}", unique()));
        let bucket = "tre-projects".to_owned();
        std::fs::create_dir_all(dir.join(&bucket)).expect("bucket folder");
        let fs = s3s_fs::FileSystem::new(&dir).expect("s3s-fs");
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(
            S3_ACCESS_KEY,
            S3_SECRET_KEY,
        ));
        let service = builder.build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let copies = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = copies.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                // without it each GET on a kept-alive connection waits ~22 ms
                let _ = socket.set_nodelay(true);
                let service = service.clone();
                let counted = counted.clone();
                let delayed = hyper::service::service_fn(move |req: hyper::Request<_>| {
                    let service = service.clone();
                    let part = req.uri().query().is_some_and(|q| q.contains("partNumber="));
                    if req.headers().contains_key("x-amz-copy-source") {
                        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    async move {
                        if part && !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        hyper::service::Service::call(&service, req).await
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(socket), delayed)
                        .await;
                });
            }
        });
        Self {
            endpoint,
            bucket,
            dir,
            copies,
            task,
        }
    }

    /// A client of the bucket, through `endpoint` (e.g. a proxy in front).
    pub fn store_via(&self, endpoint: &str) -> Arc<dyn ObjectStore> {
        tre_dispense::stores::s3(endpoint, &self.bucket, S3_ACCESS_KEY, S3_SECRET_KEY)
            .expect("s3 client")
    }

    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store_via(&self.endpoint)
    }

    /// The multipart uploads started and neither completed nor aborted:
    /// s3s-fs keeps each as `.upload*` files in its folder.
    pub fn unfinished_uploads(&self) -> Vec<String> {
        let mut found = Vec::new();
        let mut stack = vec![self.dir.clone()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if entry.file_name().to_string_lossy().starts_with(".upload") {
                    found.push(path.display().to_string());
                }
            }
        }
        found
    }

    /// The `AWS_*` variables that point a `tre` process at this server
    /// (with `TRE_OBJECT_STORE=s3://BUCKET`).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
            ("TRE_OBJECT_STORE", format!("s3://{}", self.bucket)),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
