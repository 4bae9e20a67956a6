//! Where blob bytes live: a content-addressed store keyed by the SHA-256 of
//! the bytes.
//!
//! Content addressing makes uploads idempotent and deduplicates for free:
//! the same voice note forwarded to ten conversations is stored once. The
//! store knows nothing about workspaces or MIME types — that is the service's
//! metadata — so a store implementation only has to move bytes.
//!
//! Everything streams: a writer hashes chunks as they arrive and a reader
//! yields a byte range, so a file is never held whole in memory.
//!
//! Two stores: [`LocalDirStore`] (a directory or mounted volume) and
//! [`S3Store`] (an S3-compatible bucket); `tests/blob_store.rs` holds both
//! to the same contract.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use tempfile::TempPath;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

pub mod s3;

pub use s3::{S3Config, S3Store};

/// The id of a blob: the lowercase hex SHA-256 of its bytes.
///
/// The only way to get one is [`BlobId::parse`] or hashing bytes, so a
/// `BlobId` is always 64 lowercase hex characters and is safe to turn into a
/// file path (no separators, no `..`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobId(String);

/// A string that is not 64 lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("blob id must be 64 lowercase hex characters")]
pub struct InvalidBlobId;

impl BlobId {
    /// Length of the hex form.
    pub const LEN: usize = 64;

    /// Accept exactly the form this store produces: 64 lowercase hex
    /// characters. Uppercase is refused rather than folded so every blob has
    /// one spelling, in the database and on disk alike.
    pub fn parse(s: &str) -> Result<Self, InvalidBlobId> {
        if s.len() == Self::LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidBlobId)
        }
    }

    /// The id of bytes that hash to `digest`.
    fn of_digest(digest: &[u8]) -> Self {
        Self(hex::encode(digest))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for BlobId {
    type Err = InvalidBlobId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Part of a blob to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub offset: u64,
    /// How many bytes; `None` reads to the end. A length running past the end
    /// is cut at the end, as HTTP ranges are.
    pub length: Option<u64>,
}

impl ByteRange {
    /// The whole blob.
    pub const ALL: ByteRange = ByteRange {
        offset: 0,
        length: None,
    };

    /// `(offset, length)` of this range within a blob of `size` bytes. An
    /// offset equal to the size is an empty range (so an empty blob can be
    /// read); only an offset past the end is an error.
    pub fn within(self, size: u64) -> Result<(u64, u64), BlobError> {
        if self.offset > size {
            return Err(BlobError::OutOfRange {
                offset: self.offset,
                size,
            });
        }
        let rest = size - self.offset;
        Ok((self.offset, self.length.map_or(rest, |l| l.min(rest))))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob {0} not found")]
    NotFound(BlobId),
    #[error("offset {offset} is beyond the end of the blob ({size} bytes)")]
    OutOfRange { offset: u64, size: u64 },
    #[error("blob store: {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A remote store (S3) failed or refused a request.
    #[error("blob store: {op} {key}: {source}")]
    Remote {
        op: &'static str,
        key: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A store setting is unusable; `key` is its name in the media config.
    #[error("config key `{key}`: {reason}")]
    Config { key: &'static str, reason: String },
}

impl BlobError {
    /// `map_err` adapter; the path is copied only when there is an error.
    fn io<'p>(op: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> BlobError + 'p {
        move |source| BlobError::Io {
            op,
            path: path.to_owned(),
            source,
        }
    }

    /// `map_err` adapter for a remote store's errors about `key`.
    fn remote<'k, E>(op: &'static str, key: &'k str) -> impl FnOnce(E) -> BlobError + 'k
    where
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        move |source| BlobError::Remote {
            op,
            key: key.to_owned(),
            source: source.into(),
        }
    }
}

/// A blob whose bytes are safely stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBlob {
    pub id: BlobId,
    pub size_bytes: u64,
    /// `false` when identical bytes were already stored and were kept.
    pub newly_stored: bool,
}

/// Bytes of a blob, as an async reader.
pub type BlobBytes = Pin<Box<dyn AsyncRead + Send>>;

/// An open range of a blob.
pub struct BlobReader {
    /// Size of the whole blob.
    pub size_bytes: u64,
    /// First byte `bytes` yields.
    pub offset: u64,
    /// How many bytes `bytes` yields.
    pub length: u64,
    pub bytes: BlobBytes,
}

impl fmt::Debug for BlobReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobReader")
            .field("size_bytes", &self.size_bytes)
            .field("offset", &self.offset)
            .field("length", &self.length)
            .finish_non_exhaustive()
    }
}

/// Storage of blob bytes.
///
/// Implementations must make a blob visible only once all its bytes are
/// durable, so a reader never sees a partial blob, and must keep an existing
/// blob when identical bytes are written again.
#[async_trait]
pub trait BlobStore: Send + Sync + fmt::Debug + 'static {
    /// Start writing a new blob. Its id is known only at the end, from the
    /// bytes; dropping the writer without [`BlobWriter::commit`] discards
    /// everything written.
    async fn writer(&self) -> Result<Box<dyn BlobWriter>, BlobError>;

    /// Read `range` of a blob.
    async fn reader(&self, id: &BlobId, range: ByteRange) -> Result<BlobReader, BlobError>;

    /// Size of a blob, `None` when it is not stored.
    async fn size_of(&self, id: &BlobId) -> Result<Option<u64>, BlobError>;
}

/// A blob being written.
#[async_trait]
pub trait BlobWriter: Send {
    /// Append bytes.
    async fn write(&mut self, chunk: &[u8]) -> Result<(), BlobError>;

    /// Bytes written so far.
    fn written(&self) -> u64;

    /// Make the blob durable and visible under the hash of its bytes.
    async fn commit(self: Box<Self>) -> Result<StoredBlob, BlobError>;
}

/// Temporary files older than this are left over from a crash and removed
/// when a store opens. It is far longer than any upload takes, so a store
/// opening while another process shares the directory never removes a file
/// that is still being written.
const STALE_TEMP_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// Blobs as files in a local directory (or a mounted volume):
/// `<dir>/sha256/<first two hex>/<other 62 hex>`.
///
/// Writes go to `<dir>/tmp/` — the same filesystem, so the final rename is
/// atomic — and are fsynced before the rename; the rename refuses to replace
/// an existing file, so concurrent writers of identical bytes agree on one
/// file and the others' temporaries are removed.
#[derive(Debug, Clone)]
pub struct LocalDirStore {
    root: Arc<PathBuf>,
}

impl LocalDirStore {
    /// Open (creating when missing) a store in `dir`, and remove temporaries
    /// left over from a crash.
    pub async fn new(dir: impl Into<PathBuf>) -> Result<Self, BlobError> {
        let store = Self {
            root: Arc::new(dir.into()),
        };
        for dir in [store.blobs_dir(), store.tmp_dir()] {
            tokio::fs::create_dir_all(&dir)
                .await
                .map_err(BlobError::io("create directory", &dir))?;
        }
        store.remove_stale_temporaries().await;
        Ok(store)
    }

    /// The directory the store lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a blob's bytes are (or would be).
    pub fn path_of(&self, id: &BlobId) -> PathBuf {
        let (fan, rest) = id.as_str().split_at(2);
        self.blobs_dir().join(fan).join(rest)
    }

    fn blobs_dir(&self) -> PathBuf {
        self.root.join("sha256")
    }

    /// Where writes in progress are.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Best effort: a temporary that cannot be removed now is tried again at
    /// the next start, and costs only disk space meanwhile.
    async fn remove_stale_temporaries(&self) {
        let dir = self.tmp_dir();
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot list blob temporaries");
                return;
            }
        };
        let now = SystemTime::now();
        while let Ok(Some(entry)) = entries.next_entry().await {
            let stale = entry
                .metadata()
                .await
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > STALE_TEMP_AGE);
            if stale {
                let path = entry.path();
                match tokio::fs::remove_file(&path).await {
                    Ok(()) => {
                        tracing::info!(path = %path.display(), "removed stale blob temporary")
                    }
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "cannot remove stale blob temporary")
                    }
                }
            }
        }
    }
}

#[async_trait]
impl BlobStore for LocalDirStore {
    async fn writer(&self) -> Result<Box<dyn BlobWriter>, BlobError> {
        let bytes = HashingFile::create(
            self.tmp_dir(),
            "upload-",
            "create temporary in",
            FileOps {
                write: "write",
                flush: "flush",
            },
        )
        .await?;
        Ok(Box::new(LocalWriter {
            bytes,
            store: self.clone(),
        }))
    }

    async fn reader(&self, id: &BlobId, range: ByteRange) -> Result<BlobReader, BlobError> {
        let path = self.path_of(id);
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(BlobError::NotFound(id.clone()));
            }
            Err(e) => return Err(BlobError::io("open", &path)(e)),
        };
        // The size comes from the open file, so it is the size of exactly
        // the bytes about to be read.
        let size_bytes = file
            .metadata()
            .await
            .map_err(BlobError::io("stat", &path))?
            .len();
        let (offset, length) = range.within(size_bytes)?;
        if offset > 0 {
            file.seek(io::SeekFrom::Start(offset))
                .await
                .map_err(BlobError::io("seek", &path))?;
        }
        Ok(BlobReader {
            size_bytes,
            offset,
            length,
            bytes: Box::pin(file.take(length)),
        })
    }

    async fn size_of(&self, id: &BlobId) -> Result<Option<u64>, BlobError> {
        let path = self.path_of(id);
        match tokio::fs::metadata(&path).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(BlobError::io("stat", &path)(e)),
        }
    }
}

/// A write in progress: the bytes so far, in a temporary file of the
/// store's own directory, which dropping the writer deletes.
struct LocalWriter {
    bytes: HashingFile,
    store: LocalDirStore,
}

#[async_trait]
impl BlobWriter for LocalWriter {
    async fn write(&mut self, chunk: &[u8]) -> Result<(), BlobError> {
        self.bytes.write(chunk).await
    }

    fn written(&self) -> u64 {
        self.bytes.written()
    }

    async fn commit(self: Box<Self>) -> Result<StoredBlob, BlobError> {
        let LocalWriter { bytes, store } = *self;
        let Hashed {
            file,
            path: temp,
            id,
            size_bytes,
        } = bytes.finish().await?;
        file.sync_all()
            .await
            .map_err(BlobError::io("fsync", &temp))?;
        drop(file);
        let target = store.path_of(&id);
        let blobs_dir = store.blobs_dir();
        let newly_stored = blocking("store", &target.clone(), move || {
            move_into_place(temp, &target, &blobs_dir)
        })
        .await?;
        Ok(StoredBlob {
            id,
            size_bytes,
            newly_stored,
        })
    }
}

/// What the error messages call a [`HashingFile`]'s operations.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FileOps {
    pub write: &'static str,
    pub flush: &'static str,
}

/// The bytes of a blob being written, in a temporary file, hashed as they
/// come: both stores need the id (the hash) before the blob can go where
/// it belongs, and it is known only at the end. Dropping it deletes the
/// file.
pub(crate) struct HashingFile {
    file: tokio::fs::File,
    path: TempPath,
    hasher: Sha256,
    written: u64,
    ops: FileOps,
}

/// A [`HashingFile`] written to the end and flushed.
pub(crate) struct Hashed {
    pub file: tokio::fs::File,
    /// Deletes the file when dropped, unless it is persisted.
    pub path: TempPath,
    pub id: BlobId,
    pub size_bytes: u64,
}

impl HashingFile {
    /// A new temporary `<prefix>…part` file in `dir`.
    pub(crate) async fn create(
        dir: PathBuf,
        prefix: &'static str,
        create_op: &'static str,
        ops: FileOps,
    ) -> Result<Self, BlobError> {
        let temp = blocking(create_op, &dir.clone(), move || {
            tempfile::Builder::new()
                .prefix(prefix)
                .suffix(".part")
                .tempfile_in(&dir)
        })
        .await?;
        let (file, path) = temp.into_parts();
        Ok(Self {
            file: tokio::fs::File::from_std(file),
            path,
            hasher: Sha256::new(),
            written: 0,
            ops,
        })
    }

    /// Append bytes.
    pub(crate) async fn write(&mut self, chunk: &[u8]) -> Result<(), BlobError> {
        self.file
            .write_all(chunk)
            .await
            .map_err(BlobError::io(self.ops.write, &self.path))?;
        self.hasher.update(chunk);
        self.written += chunk.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    /// Flush the file and name the bytes.
    pub(crate) async fn finish(self) -> Result<Hashed, BlobError> {
        let HashingFile {
            mut file,
            path,
            hasher,
            written,
            ops,
        } = self;
        file.flush()
            .await
            .map_err(BlobError::io(ops.flush, &path))?;
        Ok(Hashed {
            file,
            path,
            id: BlobId::of_digest(&hasher.finalize()),
            size_bytes: written,
        })
    }
}

/// Rename the temporary to `target` unless a blob is already there; `true`
/// when it was moved. The directory entries are fsynced too: a renamed file
/// whose directory entry is lost in a crash is a lost blob.
fn move_into_place(temp: TempPath, target: &Path, blobs_dir: &Path) -> io::Result<bool> {
    let parent = target.parent().unwrap_or(blobs_dir);
    let fan_out_is_new = !parent.exists();
    std::fs::create_dir_all(parent)?;
    if fan_out_is_new {
        sync_dir(blobs_dir)?;
    }
    match temp.persist_noclobber(target) {
        Ok(()) => {
            sync_dir(parent)?;
            Ok(true)
        }
        // Identical bytes are already stored; dropping the returned
        // TempPath removes our copy.
        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e.error),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Run blocking filesystem work off the async threads.
pub(crate) async fn blocking<T, F>(op: &'static str, path: &Path, f: F) -> Result<T, BlobError>
where
    F: FnOnce() -> io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io::Error::other)
        .and_then(|r| r)
        .map_err(BlobError::io(op, path))
}
