//! Media: the files attached to messages — uploaded once, stored by content,
//! downloaded in ranges (PRODUCT.md: "the media service turns them into what
//! each channel accepts"; probing and transcoding come on top of this store).
//!
//! Bytes live in a [`BlobStore`] under the SHA-256 of their content, shared by
//! every workspace; the `blobs` table records which workspace uploaded which
//! blob, and only that makes a blob visible to a workspace. Knowing a hash is
//! therefore not enough to read someone else's file.

use std::path::PathBuf;
use std::sync::Arc;

use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use telenet_proto::media::v1 as pb;
use telenet_proto::media::v1::media_server::MediaServer;
use telenet_store::sqlx::{self, Row};
use telenet_store::{Db, now_micros};
use tokio::io::AsyncReadExt;

pub mod blob;
pub mod encode;
mod error;
mod grpc;
pub mod inbound;
pub mod links;
pub mod mime;
pub mod probe;
pub mod profiles;
pub mod remux;
mod variants;

pub use blob::{
    BlobId, BlobStore, BlobWriter, ByteRange, LocalDirStore, S3Config, S3Store, StoredBlob,
};
pub use error::Error;
pub use variants::TranscodeConfig;

pub const MIGRATIONS: telenet_store::Migrations =
    telenet_store::migrations!("0100_blobs", "0120_variants", "0130_probes");

/// Largest download chunk: big enough to keep per-message overhead
/// negligible, small enough that a slow client holds little memory.
pub const MAX_CHUNK_SIZE: usize = 256 * 1024;

/// Largest upload message the server decodes: a 1 MiB chunk (the limit the
/// API documents) plus room for the protobuf framing. Bigger messages are
/// refused by tonic before they are buffered.
pub const MAX_UPLOAD_MESSAGE_BYTES: usize = 1024 * 1024 + 1024;

/// Media service settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Directory of the local blob store (created when missing). Every
    /// replica of the service must see the same directory, e.g. one shared
    /// volume.
    pub blob_dir: PathBuf,
    /// Largest upload accepted, in bytes; larger uploads fail with
    /// RESOURCE_EXHAUSTED and leave nothing behind.
    pub max_upload_bytes: u64,
    /// Size of the chunks a download is sent in, in bytes (1 to 262144).
    pub chunk_size: usize,
    /// Where blob bytes live: `local` (the directory `blob_dir`) or `s3`
    /// (the bucket described by `s3`).
    pub blob_store: BlobStoreKind,
    /// The bucket, for `blob_store = "s3"`.
    pub s3: S3Config,
    /// Fetching the attachments of inbound messages.
    pub inbound: inbound::InboundConfig,
    /// Transcoding: workers and the external encoders.
    pub transcode: TranscodeConfig,
    /// Signed download links (`CreateDownloadUrl`).
    pub download_urls: links::DownloadUrlConfig,
}

/// Which [`BlobStore`] the service uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobStoreKind {
    /// [`LocalDirStore`] in `blob_dir`.
    #[default]
    Local,
    /// [`S3Store`] in the bucket of `s3`.
    S3,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            blob_dir: PathBuf::from(".telenet/blobs"),
            max_upload_bytes: 100 * 1024 * 1024,
            chunk_size: MAX_CHUNK_SIZE,
            blob_store: BlobStoreKind::Local,
            s3: S3Config::default(),
            inbound: inbound::InboundConfig::default(),
            transcode: TranscodeConfig::default(),
            download_urls: links::DownloadUrlConfig::default(),
        }
    }
}

impl Config {
    /// Refuse settings that would only fail later, naming the key.
    pub fn validate(&self) -> Result<(), Error> {
        if self.blob_store == BlobStoreKind::S3 {
            self.s3
                .validate()
                .map_err(|(key, reason)| Error::Config { key, reason })?;
        }
        self.inbound
            .validate()
            .map_err(|(key, reason)| Error::Config { key, reason })?;
        self.transcode
            .validate()
            .map_err(|(key, reason)| Error::Config { key, reason })?;
        self.download_urls
            .build()
            .map_err(|(key, reason)| Error::Config { key, reason })?;
        if self.blob_dir.as_os_str().is_empty() {
            return Err(Error::Config {
                key: "blob_dir",
                reason: "must not be empty".into(),
            });
        }
        // Sizes are stored as BIGINT.
        if self.max_upload_bytes == 0 || i64::try_from(self.max_upload_bytes).is_err() {
            return Err(Error::Config {
                key: "max_upload_bytes",
                reason: format!("must be between 1 and {}", i64::MAX),
            });
        }
        if !(1..=MAX_CHUNK_SIZE).contains(&self.chunk_size) {
            return Err(Error::Config {
                key: "chunk_size",
                reason: format!("must be between 1 and {MAX_CHUNK_SIZE}"),
            });
        }
        Ok(())
    }
}

/// A download: the blob's metadata, then the requested bytes in chunks.
pub struct Download {
    pub blob: pb::Blob,
    pub chunks: BoxStream<'static, Result<Vec<u8>, Error>>,
}

/// The media service.
#[derive(Clone)]
pub struct MediaService {
    db: Db,
    store: Arc<dyn BlobStore>,
    config: Arc<Config>,
    variants: Arc<variants::Variants>,
    /// Where links point and what signs them; `None` when not set up.
    links: Option<Arc<(url::Url, telenet_signing::links::LinkSigner)>>,
    /// Transcodes and inbound fetches are recorded here.
    metrics: telenet_kit::metrics::Metrics,
}

impl std::fmt::Debug for MediaService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaService")
            .field("store", &self.store)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl MediaService {
    /// The service with the store `config.blob_store` names: a
    /// [`LocalDirStore`] in `config.blob_dir`, or an [`S3Store`] in the
    /// bucket of `config.s3` (checked to be reachable).
    pub async fn new(db: Db, config: Config) -> Result<Self, Error> {
        config.validate()?;
        let store: Arc<dyn BlobStore> = match config.blob_store {
            BlobStoreKind::Local => Arc::new(LocalDirStore::new(&config.blob_dir).await?),
            BlobStoreKind::S3 => Arc::new(S3Store::new(&config.s3).await?),
        };
        Self::with_store(db, config, store)
    }

    /// The service over any blob store.
    pub fn with_store(db: Db, config: Config, store: Arc<dyn BlobStore>) -> Result<Self, Error> {
        config.validate()?;
        let links = config
            .download_urls
            .build()
            .map_err(|(key, reason)| Error::Config { key, reason })?
            .map(Arc::new);
        Ok(Self {
            db,
            store,
            links,
            metrics: telenet_kit::metrics::Metrics::default(),
            variants: Arc::new(variants::Variants::new(&config.transcode)),
            config: Arc::new(config),
        })
    }

    /// Records transcodes (by profile and outcome, their time, the jobs
    /// waiting and running) and inbound fetches into `metrics`.
    pub fn with_metrics(mut self, metrics: telenet_kit::metrics::Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The gRPC service, refusing upload messages over
    /// [`MAX_UPLOAD_MESSAGE_BYTES`].
    pub fn grpc(&self) -> MediaServer<Self> {
        MediaServer::new(self.clone()).max_decoding_message_size(MAX_UPLOAD_MESSAGE_BYTES)
    }

    /// The store holding the bytes.
    pub fn blob_store(&self) -> &Arc<dyn BlobStore> {
        &self.store
    }

    /// Store an upload and record it for the uploading workspace.
    ///
    /// The bytes are checked against the limit and the declared size while
    /// they stream in; any failure (including an error from `chunks`) drops
    /// the unfinished blob, so nothing — neither bytes nor row — is left.
    pub async fn upload<S>(
        &self,
        header: &pb::UploadHeader,
        mut chunks: S,
    ) -> Result<pb::Blob, Error>
    where
        S: Stream<Item = Result<Vec<u8>, Error>> + Send + Unpin,
    {
        require("workspace_id", &header.workspace_id)?;
        let mime_type = mime::normalize(&header.mime_type).map_err(Error::InvalidArgument)?;
        let limit = self.config.max_upload_bytes;
        let declared = (header.size_bytes > 0).then_some(header.size_bytes);
        if header.size_bytes > limit {
            return Err(too_large(limit));
        }

        let mut writer = self.store.writer().await?;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            let received = writer.written() + chunk.len() as u64;
            if received > limit {
                return Err(too_large(limit));
            }
            if let Some(declared) = declared
                && received > declared
            {
                return Err(size_mismatch(declared, received, "at least "));
            }
            writer.write(&chunk).await?;
        }
        if let Some(declared) = declared
            && writer.written() != declared
        {
            return Err(size_mismatch(declared, writer.written(), ""));
        }
        let stored = writer.commit().await?;
        let blob = self
            .record(&header.workspace_id, &stored, &mime_type)
            .await?;
        tracing::info!(
            workspace_id = %blob.workspace_id,
            blob_id = %blob.id,
            size_bytes = blob.size_bytes,
            newly_stored = stored.newly_stored,
            "blob uploaded"
        );
        Ok(blob)
    }

    /// Record `stored` for the workspace. A workspace uploading the same
    /// bytes again keeps its first record (and MIME type): the answer always
    /// describes what is stored.
    async fn record(
        &self,
        workspace_id: &str,
        stored: &StoredBlob,
        mime_type: &str,
    ) -> Result<pb::Blob, Error> {
        sqlx::query(
            "INSERT INTO blobs (workspace_id, blob_id, size_bytes, mime_type, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (workspace_id, blob_id) DO NOTHING",
        )
        .bind(workspace_id)
        .bind(stored.id.as_str())
        .bind(to_bigint(stored.size_bytes)?)
        .bind(mime_type)
        .bind(now_micros())
        .execute(self.db.pool())
        .await?;
        self.find(workspace_id, &stored.id)
            .await?
            .ok_or(Error::NotFound)
    }

    async fn find(&self, workspace_id: &str, id: &BlobId) -> Result<Option<pb::Blob>, Error> {
        Ok(self
            .find_record(workspace_id, id)
            .await?
            .map(|(blob, _)| blob))
    }

    /// The workspace's record of a blob, and when it was first uploaded
    /// (µs).
    async fn find_record(
        &self,
        workspace_id: &str,
        id: &BlobId,
    ) -> Result<Option<(pb::Blob, i64)>, Error> {
        let row = sqlx::query(
            "SELECT workspace_id, blob_id, size_bytes, mime_type, created_at FROM blobs \
             WHERE workspace_id = $1 AND blob_id = $2",
        )
        .bind(workspace_id)
        .bind(id.as_str())
        .fetch_optional(self.db.pool())
        .await?;
        row.map(|r| -> Result<(pb::Blob, i64), Error> {
            let size: i64 = r.try_get("size_bytes")?;
            let blob = pb::Blob {
                id: r.try_get("blob_id")?,
                workspace_id: r.try_get("workspace_id")?,
                // Only ever written from a u64, so never negative.
                size_bytes: u64::try_from(size).unwrap_or_default(),
                mime_type: r.try_get("mime_type")?,
            };
            Ok((blob, r.try_get("created_at")?))
        })
        .transpose()
    }

    /// A blob the workspace uploaded.
    pub async fn blob(&self, workspace_id: &str, blob_id: &str) -> Result<pb::Blob, Error> {
        Ok(self.blob_record(workspace_id, blob_id).await?.0)
    }

    /// A blob the workspace uploaded, and when it was first uploaded (µs).
    pub(crate) async fn blob_record(
        &self,
        workspace_id: &str,
        blob_id: &str,
    ) -> Result<(pb::Blob, i64), Error> {
        require("workspace_id", workspace_id)?;
        let id = parse_blob_id(blob_id)?;
        self.find_record(workspace_id, &id)
            .await?
            .ok_or(Error::NotFound)
    }

    /// Open a range of a blob the workspace uploaded; `length` 0 means to
    /// the end. Another workspace's blob is NOT_FOUND even though the bytes
    /// are in the (shared) store.
    /// With a grant (a signed link), the grant is checked first.
    pub async fn download(&self, req: &pb::DownloadRequest) -> Result<Download, Error> {
        self.check_grant(req)?;
        let blob = self.blob(&req.workspace_id, &req.blob_id).await?;
        let range = ByteRange {
            offset: req.offset,
            length: (req.length > 0).then_some(req.length),
        };
        // Check against the recorded size first, so the error is the
        // client's and does not depend on the store.
        range
            .within(blob.size_bytes)
            .map_err(|e| Error::OutOfRange(e.to_string()))?;
        let id = parse_blob_id(&blob.id)?;
        let reader = self.store.reader(&id, range).await?;
        if reader.size_bytes != blob.size_bytes {
            // Bytes are addressed by their hash, so this is damage to the
            // store; sending them would hand the client a corrupt file.
            return Err(Error::Corrupt {
                blob_id: blob.id,
                recorded: blob.size_bytes,
                stored: reader.size_bytes,
            });
        }
        Ok(Download {
            blob,
            chunks: read_in_chunks(reader.bytes, self.config.chunk_size, id).boxed(),
        })
    }
}

/// Full chunks of `chunk_size` bytes (the last one shorter), read on demand:
/// a slow client only ever holds one chunk.
fn read_in_chunks(
    bytes: blob::BlobBytes,
    chunk_size: usize,
    id: BlobId,
) -> impl Stream<Item = Result<Vec<u8>, Error>> + Send {
    stream::try_unfold((bytes, id), move |(mut bytes, id)| async move {
        let mut chunk = vec![0u8; chunk_size];
        let mut filled = 0;
        while filled < chunk_size {
            match bytes.read(&mut chunk[filled..]).await {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(source) => {
                    return Err(Error::Read {
                        blob_id: id.to_string(),
                        source,
                    });
                }
            }
        }
        if filled == 0 {
            return Ok(None);
        }
        chunk.truncate(filled);
        Ok(Some((chunk, (bytes, id))))
    })
}

fn require(field: &str, value: &str) -> Result<(), Error> {
    telenet_kit::error::required(field, value).map_err(Error::InvalidArgument)
}

fn parse_blob_id(value: &str) -> Result<BlobId, Error> {
    BlobId::parse(value).map_err(|_| {
        Error::InvalidArgument("blob_id must be 64 lowercase hex characters (a SHA-256)".into())
    })
}

fn too_large(limit: u64) -> Error {
    Error::ResourceExhausted(format!("upload exceeds max_upload_bytes ({limit} bytes)"))
}

fn size_mismatch(declared: u64, received: u64, qualifier: &str) -> Error {
    Error::InvalidArgument(format!(
        "size_bytes declared {declared} bytes but {qualifier}{received} were received"
    ))
}

fn to_bigint(n: u64) -> Result<i64, Error> {
    i64::try_from(n).map_err(|_| too_large(n))
}
