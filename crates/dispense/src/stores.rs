//! Object stores from settings: a local folder (the embedded default) or
//! S3 / MinIO as `s3://BUCKET[/PREFIX]`, configured by the standard
//! `AWS_*` variables (`AWS_ENDPOINT`, `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ALLOW_HTTP=true` for a local
//! MinIO). Requests are path-style unless
//! `AWS_VIRTUAL_HOSTED_STYLE_REQUEST=true`.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};

use crate::DispenseError;
use crate::files::Multipart;

/// The S3 client and prefix of an `s3://BUCKET[/PREFIX]` url, from the
/// `AWS_*` variables; None for other urls.
fn s3_from_env(url: &str, setting: &str) -> Result<Option<(AmazonS3, String)>, DispenseError> {
    let Some(rest) = url.strip_prefix("s3://") else {
        return Ok(None);
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(DispenseError::Config(format!(
            "{setting}: s3:// needs a bucket name (got {:?})",
            tre_domain::redact::redact_url(url)
        )));
    }
    // reqwest is built with rustls but no default crypto provider
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        // client options (AWS_ALLOW_HTTP, timeouts) come from the
        // environment: replacing them here would drop those
        .with_retry(retry_config());
    if std::env::var_os("AWS_REGION").is_none() && std::env::var_os("AWS_DEFAULT_REGION").is_none()
    {
        builder = builder.with_region("us-east-1");
    }
    let store = builder
        .build()
        .map_err(|e| DispenseError::Config(format!("{setting}: {e}")))?;
    Ok(Some((store, prefix.trim_matches('/').to_owned())))
}

/// Opens the store that `url` names; `setting` names it in errors.
pub fn open(url: &str, setting: &str) -> Result<Arc<dyn ObjectStore>, DispenseError> {
    if let Some((store, prefix)) = s3_from_env(url, setting)? {
        return Ok(under_prefix(store, &prefix));
    }
    if url.contains("://") && !url.starts_with("file://") {
        return Err(DispenseError::Config(format!(
            "{setting}: expected a local folder, file://PATH or s3://BUCKET[/PREFIX] (got {:?})",
            tre_domain::redact::redact_url(url)
        )));
    }
    let path = url.strip_prefix("file://").unwrap_or(url);
    std::fs::create_dir_all(path)
        .map_err(|e| DispenseError::Config(format!("{setting}: cannot create {path:?}: {e}")))?;
    let store = LocalFileSystem::new_with_prefix(path)
        .map_err(|e| DispenseError::Config(format!("{setting}: {e}")))?;
    Ok(Arc::new(store))
}

/// An S3 client as a store rooted at `prefix` (none when empty).
fn under_prefix(store: AmazonS3, prefix: &str) -> Arc<dyn ObjectStore> {
    if prefix.is_empty() {
        Arc::new(store)
    } else {
        Arc::new(PrefixStore::new(store, prefix))
    }
}

/// The multipart API of the store `url` names, when it has one (S3): what
/// lets large files resume (see [`crate::files`]). None for a folder.
pub fn open_multipart(url: &str, setting: &str) -> Result<Option<Multipart>, DispenseError> {
    let Some((store, prefix)) = s3_from_env(url, setting)? else {
        return Ok(None);
    };
    let rest = url.trim_start_matches("s3://");
    let bucket = rest.split_once('/').map_or(rest, |(b, _)| b);
    let prefix = (!prefix.is_empty()).then(|| Path::from(prefix.as_str()));
    Ok(Some(Multipart::s3(Arc::new(store), bucket, prefix)))
}

/// An S3-compatible store with explicit settings (path-style), for callers
/// that must not read the process environment (tests with several servers).
pub fn s3(
    endpoint: &str,
    bucket: &str,
    access_key: &str,
    secret_key: &str,
) -> Result<Arc<dyn ObjectStore>, DispenseError> {
    Ok(Arc::new(s3_client(
        endpoint, bucket, access_key, secret_key,
    )?))
}

/// [`s3`]'s multipart API.
pub fn s3_multipart(
    endpoint: &str,
    bucket: &str,
    access_key: &str,
    secret_key: &str,
) -> Result<Multipart, DispenseError> {
    let store = s3_client(endpoint, bucket, access_key, secret_key)?;
    Ok(Multipart::s3(Arc::new(store), bucket, None))
}

fn s3_client(
    endpoint: &str,
    bucket: &str,
    access_key: &str,
    secret_key: &str,
) -> Result<AmazonS3, DispenseError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_bucket_name(bucket)
        .with_access_key_id(access_key)
        .with_secret_access_key(secret_key)
        .with_region("us-east-1")
        .with_allow_http(endpoint.starts_with("http://"))
        .with_retry(retry_config())
        .with_client_options(
            ClientOptions::new()
                .with_timeout(Duration::from_secs(60))
                .with_allow_http(endpoint.starts_with("http://")),
        )
        .build()
        .map_err(|e| DispenseError::Config(format!("object store: {e}")))
}

/// Transient S3 errors (5xx, timeouts, throttling, resets) are retried by
/// the client with jittered exponential backoff before a unit fails; the
/// job runtime retries the unit after that.
fn retry_config() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: 8,
        retry_timeout: Duration::from_secs(120),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_urls_name_the_setting() {
        let err = open("gs://x", "object_store").unwrap_err().to_string();
        assert!(err.starts_with("object_store:"), "{err}");
        let err = open("s3://", "source").unwrap_err().to_string();
        assert!(err.starts_with("source:"), "{err}");
    }
}

/// Reads a project's objects where dispensing wrote them (`{project}/...`
/// in the destination store), and signs time-limited GET URLs to them when
/// the store can (S3); a folder cannot sign, so its bytes are served by
/// whoever holds the reader. Never writes.
#[derive(Clone)]
pub struct ProjectReader {
    store: Arc<dyn ObjectStore>,
    /// The S3 client and the store's prefix, for signing.
    signer: Option<(Arc<AmazonS3>, String)>,
}

impl std::fmt::Debug for ProjectReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectReader")
            .field("signs", &self.signer.is_some())
            .finish_non_exhaustive()
    }
}

impl ProjectReader {
    /// The reader of the store `url` names (as [`open`]); `setting` names it
    /// in errors.
    pub fn open(url: &str, setting: &str) -> Result<Self, DispenseError> {
        // one S3 client, both to read and to sign
        Ok(match s3_from_env(url, setting)? {
            Some((s3, prefix)) => Self {
                store: under_prefix(s3.clone(), &prefix),
                signer: Some((Arc::new(s3), prefix)),
            },
            None => Self {
                store: open(url, setting)?,
                signer: None,
            },
        })
    }

    /// A reader of an S3-compatible store with explicit settings (as [`s3`]).
    pub fn s3(
        endpoint: &str,
        bucket: &str,
        access_key: &str,
        secret_key: &str,
    ) -> Result<Self, DispenseError> {
        let client = Arc::new(s3_client(endpoint, bucket, access_key, secret_key)?);
        Ok(Self {
            store: client.clone(),
            signer: Some((client, String::new())),
        })
    }

    /// The object `path` of `project` (both checked by the caller), named
    /// as dispensing named it.
    pub fn location(project: &str, path: &str) -> Result<Path, DispenseError> {
        crate::engine::location(&format!("{project}/{path}"))
    }

    /// The store, to read objects from (see [`Self::location`]).
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// A GET URL to `project`'s object `path` that works for `expires`;
    /// none when the store cannot sign (a folder).
    pub async fn signed_url(
        &self,
        project: &str,
        path: &str,
        expires: Duration,
    ) -> Result<Option<String>, DispenseError> {
        use object_store::signer::{Method, Signer};
        let Some((s3, prefix)) = &self.signer else {
            return Ok(None);
        };
        let key = if prefix.is_empty() {
            format!("{project}/{path}")
        } else {
            format!("{prefix}/{project}/{path}")
        };
        let key = crate::engine::location(&key)?;
        let url = s3
            .signed_url(Method::GET, &key, expires)
            .await
            .map_err(|e| DispenseError::Config(format!("cannot sign a URL: {e}")))?;
        Ok(Some(url.to_string()))
    }
}
