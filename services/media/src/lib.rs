//! Media: the files attached to messages — uploaded once, stored by content,
//! downloaded in ranges, probed and turned into what each channel accepts
//! (PRODUCT.md: "the media service turns them into what each channel
//! accepts"). The audio itself — sniffing, probing, remuxing, encoding, the
//! profiles — is `telenet_audio`; this crate stores, keeps and serves.
//!
//! Bytes live in a [`BlobStore`] under the SHA-256 of their content, shared by
//! every workspace; the `blobs` table records which workspace uploaded which
//! blob, and only that makes a blob visible to a workspace. Knowing a hash is
//! therefore not enough to read someone else's file.
//!
//! Rooms: `domain` (the rules, no I/O), `store` (its SQL, and the only
//! place that speaks SQL), `grpc` (the API adapter), `consumers` (the bus
//! handler fetching inbound attachments), [`start`] (the service as the
//! process runs it); the blob stores ([`blob`]), uploads and downloads,
//! probes, variants (transcodes) and download links ([`links`]).

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use telenet_proto::media::v1::media_server::MediaServer;
use telenet_store::Db;

pub mod blob;
mod consumers;
mod domain;
mod error;
mod grpc;
pub mod inbound;
pub mod links;
pub mod metrics;
pub mod mime;
mod probes;
mod start;
mod store;
mod uploads;
mod variants;

pub use blob::{
    BlobId, BlobStore, BlobWriter, ByteRange, LocalDirStore, S3Config, S3Store, StoredBlob,
};
pub use error::Error;
pub use start::{CALLS, NAME, start};
pub use uploads::Download;
pub use variants::TranscodeConfig;

/// The consumer groups it subscribes with, exactly the specs its consumers
/// use: `telenet migrate` and every process at start declare the groups of
/// every service before anything is published (ADR 14).
pub fn consumer_groups() -> Vec<telenet_bus::SubscribeSpec> {
    vec![consumers::subscription()]
}

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
    /// volume. A relative path is taken
    /// inside its data directory: the default `.telenet/blobs` becomes
    /// `<data_dir>/blobs`.
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
    metrics: metrics::MediaMetrics,
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
            metrics: metrics::MediaMetrics::default(),
            variants: Arc::new(variants::Variants::new(&config.transcode)),
            config: Arc::new(config),
        })
    }

    /// Records transcodes (by profile and outcome, their time, the jobs
    /// waiting and running) and inbound fetches into `metrics`.
    pub fn with_metrics(mut self, metrics: telenet_kit::metrics::Metrics) -> Self {
        self.metrics = metrics::MediaMetrics::register(&metrics);
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
}
