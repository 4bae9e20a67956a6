//! Blobs as objects in an S3-compatible bucket (AWS S3, MinIO, Ceph RGW, the
//! object storage of most clusters): `<prefix>/sha256/<first two hex>/<other
//! 62 hex>`, the same layout as the local directory.
//!
//! Writes are spooled to a temporary file while they are hashed, because the
//! key is the hash of the bytes and is known only at the end. On commit the
//! object is uploaded from the spool — in one request when small, as a
//! multipart upload of [`PART_SIZE`] parts otherwise — unless an object of
//! the same size already has that key: identical bytes are never uploaded
//! twice. Memory stays bounded by a few parts whatever the file size, and a
//! write that is dropped leaves nothing in the bucket (nothing was sent yet).
//!
//! Reads are ranged GETs of at most [`READ_WINDOW`] bytes, one after the
//! other, streamed as they arrive: each request is short, so a slow reader
//! never holds one S3 request open for the whole file.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{self, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{
    ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{
    BlobError, BlobId, BlobReader, BlobStore, BlobWriter, ByteRange, FileOps, Hashed, HashingFile,
    StoredBlob,
};

/// Size of the parts of a multipart upload, and the largest object uploaded
/// in a single request. S3 wants parts of at least 5 MiB (but the last).
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// Parts of one upload in flight at once; with [`PART_SIZE`] this bounds the
/// memory of one upload to 16 MiB.
const PARTS_IN_FLIGHT: usize = 2;

/// Largest range fetched by one GET of a read.
pub const READ_WINDOW: u64 = 4 * 1024 * 1024;

/// How the S3 store reaches its bucket (`media.s3.*`; env
/// `TELENET_MEDIA__S3__…`).
///
/// Credentials not given here come from the standard AWS environment
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, web
/// identity, container or instance credentials), so a cluster's usual way of
/// handing out S3 credentials works without copying them into a file.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// URL of an S3-compatible service, e.g. `http://minio.storage:9000`;
    /// empty for AWS S3 itself.
    pub endpoint: String,
    /// Region of the bucket (S3-compatible services mostly accept any).
    pub region: String,
    /// The bucket; it must exist.
    pub bucket: String,
    /// Key prefix inside the bucket (e.g. `telenet/blobs`), so the bucket can
    /// be shared; empty for the bucket's root.
    pub prefix: String,
    /// Access key id; empty to use the AWS environment.
    pub access_key_id: String,
    /// Secret access key; empty to use the AWS environment. Prefer the
    /// environment (`TELENET_MEDIA__S3__SECRET_ACCESS_KEY`) to a file.
    pub secret_access_key: String,
    /// Path-style requests (`endpoint/bucket/key`) instead of virtual-hosted
    /// ones (`bucket.endpoint/key`); most self-hosted services need this.
    pub path_style: bool,
    /// Where uploads are spooled while they are hashed; empty for the
    /// system's temporary directory. Needs room for the uploads in progress.
    pub spool_dir: PathBuf,
    /// Longest one S3 request may take, in milliseconds (reads and writes
    /// are split into requests of at most 8 MiB).
    pub request_timeout_ms: u64,
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            region: "us-east-1".into(),
            bucket: String::new(),
            prefix: String::new(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            path_style: false,
            spool_dir: PathBuf::new(),
            request_timeout_ms: 120_000,
        }
    }
}

/// The secret stays out of logs and error messages.
impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &if self.secret_access_key.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .field("path_style", &self.path_style)
            .field("spool_dir", &self.spool_dir)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .finish()
    }
}

impl S3Config {
    /// Refuse settings that would only fail later: `(key, reason)` with the
    /// key's name under `s3.`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.bucket.trim().is_empty() {
            return Err(("s3.bucket", "is required when blob_store is s3".into()));
        }
        if self.region.trim().is_empty() {
            return Err(("s3.region", "must not be empty".into()));
        }
        if !self.endpoint.is_empty() {
            let scheme_ok = ["http://", "https://"]
                .iter()
                .any(|s| self.endpoint.starts_with(s) && self.endpoint.len() > s.len());
            if !scheme_ok {
                return Err((
                    "s3.endpoint",
                    format!("{:?} must be an http:// or https:// URL", self.endpoint),
                ));
            }
        }
        if self.prefix_parts().is_none() {
            return Err((
                "s3.prefix",
                "may only hold letters, digits, `-`, `_`, `.` and `/` between parts \
                 (no `.` or `..` parts)"
                    .into(),
            ));
        }
        if self.access_key_id.is_empty() != self.secret_access_key.is_empty() {
            return Err((
                "s3.access_key_id",
                "access_key_id and secret_access_key are given together or not at all".into(),
            ));
        }
        if self.request_timeout_ms == 0 {
            return Err(("s3.request_timeout_ms", "must be at least 1".into()));
        }
        Ok(())
    }

    /// The prefix split into key parts; `None` when it is not a safe prefix.
    fn prefix_parts(&self) -> Option<Vec<String>> {
        let parts: Vec<String> = self
            .prefix
            .split('/')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
        let safe = parts.iter().all(|p| {
            p != "."
                && p != ".."
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        });
        safe.then_some(parts)
    }
}

/// Blobs in an S3-compatible bucket. Clones share the client.
#[derive(Clone)]
pub struct S3Store {
    inner: Arc<Inner>,
}

struct Inner {
    client: AmazonS3,
    prefix: Vec<String>,
    bucket: String,
    endpoint: String,
    spool_dir: PathBuf,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("endpoint", &self.inner.endpoint)
            .field("bucket", &self.inner.bucket)
            .field("prefix", &self.inner.prefix.join("/"))
            .finish_non_exhaustive()
    }
}

impl S3Store {
    /// Connect to the bucket, checking with one listing that it exists and
    /// the credentials may use it, so a wrong setting fails at start, named.
    pub async fn new(config: &S3Config) -> Result<Self, BlobError> {
        let store = Self::unchecked(config)?;
        let prefix = store.key(&["sha256"]);
        store
            .inner
            .client
            .list_with_delimiter(Some(&prefix))
            .await
            .map_err(BlobError::remote(
                "list",
                &format!(
                    "bucket {:?} at {}",
                    config.bucket,
                    store.endpoint_for_errors()
                ),
            ))?;
        Ok(store)
    }

    /// The store without the start-up check.
    fn unchecked(config: &S3Config) -> Result<Self, BlobError> {
        let invalid = |key: &'static str, reason: String| BlobError::Config { key, reason };
        config.validate().map_err(|(k, r)| invalid(k, r))?;
        let prefix = config
            .prefix_parts()
            .ok_or_else(|| invalid("s3.prefix", "is not a safe prefix".into()))?;
        let timeout = Duration::from_millis(config.request_timeout_ms);
        let options = ClientOptions::new()
            .with_allow_http(config.endpoint.starts_with("http://"))
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(timeout);
        // Retries of idempotent requests ride out a restarting endpoint, but
        // are bounded so an unreachable one fails the request in time.
        let retry = RetryConfig {
            max_retries: 3,
            retry_timeout: timeout,
            ..RetryConfig::default()
        };
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_virtual_hosted_style_request(!config.path_style)
            .with_client_options(options)
            .with_retry(retry);
        if !config.endpoint.is_empty() {
            builder = builder.with_endpoint(config.endpoint.trim_end_matches('/'));
        }
        if !config.access_key_id.is_empty() {
            builder = builder
                .with_access_key_id(&config.access_key_id)
                .with_secret_access_key(&config.secret_access_key);
        }
        let client = builder
            .build()
            .map_err(|e| invalid("s3", format!("cannot configure the S3 client: {e}")))?;
        let spool_dir = if config.spool_dir.as_os_str().is_empty() {
            std::env::temp_dir()
        } else {
            config.spool_dir.clone()
        };
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                prefix,
                bucket: config.bucket.clone(),
                endpoint: config.endpoint.clone(),
                spool_dir,
            }),
        })
    }

    fn endpoint_for_errors(&self) -> &str {
        if self.inner.endpoint.is_empty() {
            "AWS S3"
        } else {
            &self.inner.endpoint
        }
    }

    /// The key of a blob, without the bucket: `<prefix>/sha256/<2>/<62>`.
    pub fn key_of(&self, id: &BlobId) -> String {
        let (fan, rest) = id.as_str().split_at(2);
        self.key(&["sha256", fan, rest]).to_string()
    }

    fn key(&self, parts: &[&str]) -> ObjectPath {
        ObjectPath::from_iter(
            self.inner
                .prefix
                .iter()
                .map(String::as_str)
                .chain(parts.iter().copied()),
        )
    }

    fn path_of(&self, id: &BlobId) -> ObjectPath {
        let (fan, rest) = id.as_str().split_at(2);
        self.key(&["sha256", fan, rest])
    }

    /// Size of the object under `path`, `None` when there is none.
    async fn head(&self, path: &ObjectPath) -> Result<Option<u64>, BlobError> {
        match self.inner.client.head(path).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(BlobError::remote("head", path.as_ref())(e)),
        }
    }

    /// Upload the spooled bytes under `path`.
    async fn upload(
        &self,
        path: &ObjectPath,
        file: &mut tokio::fs::File,
        size: u64,
    ) -> Result<(), BlobError> {
        let key = path.to_string();
        file.seek(std::io::SeekFrom::Start(0))
            .await
            .map_err(BlobError::remote("rewind spool of", &key))?;
        if size <= PART_SIZE as u64 {
            let part = read_part(file, PART_SIZE)
                .await
                .map_err(BlobError::remote("read spool of", &key))?;
            self.inner
                .client
                .put(path, PutPayload::from(part))
                .await
                .map_err(BlobError::remote("put", &key))?;
            return Ok(());
        }
        let mut upload = self
            .inner
            .client
            .put_multipart(path)
            .await
            .map_err(BlobError::remote("start multipart upload of", &key))?;
        let parts = async {
            let mut in_flight: stream::FuturesOrdered<object_store::UploadPart> =
                stream::FuturesOrdered::new();
            loop {
                let part = read_part(file, PART_SIZE)
                    .await
                    .map_err(BlobError::remote("read spool of", &key))?;
                if part.is_empty() {
                    break;
                }
                if in_flight.len() >= PARTS_IN_FLIGHT
                    && let Some(done) = in_flight.next().await
                {
                    done.map_err(BlobError::remote("upload part of", &key))?;
                }
                in_flight.push_back(upload.put_part(PutPayload::from(part)));
            }
            while let Some(done) = in_flight.next().await {
                done.map_err(BlobError::remote("upload part of", &key))?;
            }
            upload
                .complete()
                .await
                .map_err(BlobError::remote("complete multipart upload of", &key))?;
            Ok::<_, BlobError>(())
        }
        .await;
        if parts.is_err()
            && let Err(e) = upload.abort().await
        {
            // The uploaded parts stay (and are billed) until the bucket's
            // lifecycle rule for incomplete multipart uploads removes them.
            tracing::warn!(key = %path, error = %e, "cannot abort multipart upload");
        }
        parts
    }
}

/// Up to `size` bytes from `file` (fewer only at its end).
async fn read_part(file: &mut tokio::fs::File, size: usize) -> std::io::Result<Vec<u8>> {
    let mut part = Vec::with_capacity(size);
    (&mut *file)
        .take(size as u64)
        .read_to_end(&mut part)
        .await?;
    Ok(part)
}

#[async_trait]
impl BlobStore for S3Store {
    async fn writer(&self) -> Result<Box<dyn BlobWriter>, BlobError> {
        let spool = HashingFile::create(
            self.inner.spool_dir.clone(),
            "s3-upload-",
            "create spool file in",
            FileOps {
                write: "write spool",
                flush: "flush spool",
            },
        )
        .await?;
        Ok(Box::new(S3Writer {
            spool,
            store: self.clone(),
        }))
    }

    async fn reader(&self, id: &BlobId, range: ByteRange) -> Result<BlobReader, BlobError> {
        let path = self.path_of(id);
        let size_bytes = self
            .head(&path)
            .await?
            .ok_or_else(|| BlobError::NotFound(id.clone()))?;
        let (offset, length) = range.within(size_bytes)?;
        let client = self.inner.client.clone();
        let end = offset + length;
        let windows = (offset..end)
            .step_by(usize::try_from(READ_WINDOW).unwrap_or(usize::MAX))
            .map(move |start| start..(start + READ_WINDOW).min(end));
        let bytes = stream::iter(windows)
            .then(move |window| {
                let (client, path) = (client.clone(), path.clone());
                async move {
                    let options = GetOptions {
                        range: Some(GetRange::Bounded(window)),
                        ..GetOptions::default()
                    };
                    client
                        .get_opts(&path, options)
                        .await
                        .map(|got| got.into_stream())
                }
            })
            .try_flatten()
            .map_err(std::io::Error::other);
        Ok(BlobReader {
            size_bytes,
            offset,
            length,
            bytes: Box::pin(tokio_util::io::StreamReader::new(bytes)),
        })
    }

    async fn size_of(&self, id: &BlobId) -> Result<Option<u64>, BlobError> {
        self.head(&self.path_of(id)).await
    }
}

/// A write in progress: the spool file. Dropping it deletes the spool;
/// nothing reached the bucket yet.
struct S3Writer {
    spool: HashingFile,
    store: S3Store,
}

#[async_trait]
impl BlobWriter for S3Writer {
    async fn write(&mut self, chunk: &[u8]) -> Result<(), BlobError> {
        self.spool.write(chunk).await
    }

    fn written(&self) -> u64 {
        self.spool.written()
    }

    async fn commit(self: Box<Self>) -> Result<StoredBlob, BlobError> {
        let S3Writer { spool, store } = *self;
        let Hashed {
            mut file,
            path: spool,
            id,
            size_bytes: written,
        } = spool.finish().await?;
        let path = store.path_of(&id);
        // An object under this key holds these very bytes (the key is their
        // hash) unless it was damaged; only a size mismatch is re-uploaded.
        let newly_stored = match store.head(&path).await? {
            Some(size) if size == written => false,
            existing => {
                if let Some(size) = existing {
                    tracing::warn!(key = %path, stored = size, expected = written, "replacing damaged blob object");
                }
                store.upload(&path, &mut file, written).await?;
                true
            }
        };
        drop(file);
        drop(spool);
        Ok(StoredBlob {
            id,
            size_bytes: written,
            newly_stored,
        })
    }
}
