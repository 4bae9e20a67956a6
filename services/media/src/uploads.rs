//! Uploads and downloads: the bytes streamed into the blob store and
//! recorded for the uploading workspace, and ranges of them streamed back.

use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt};
use telenet_proto::media::v1 as pb;
use telenet_store::now_micros;
use tokio::io::AsyncReadExt;

use crate::domain::{parse_blob_id, require, size_mismatch, to_bigint, too_large};
use crate::{BlobId, ByteRange, Error, MediaService, StoredBlob, blob, mime, store};

/// A download: the blob's metadata, then the requested bytes in chunks.
pub struct Download {
    pub blob: pb::Blob,
    pub chunks: BoxStream<'static, Result<Vec<u8>, Error>>,
}

impl MediaService {
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
    pub(crate) async fn record(
        &self,
        workspace_id: &str,
        stored: &StoredBlob,
        mime_type: &str,
    ) -> Result<pb::Blob, Error> {
        store::insert_blob(
            &self.db,
            workspace_id,
            stored.id.as_str(),
            to_bigint(stored.size_bytes)?,
            mime_type,
            now_micros(),
        )
        .await?;
        store::find_blob(&self.db, workspace_id, stored.id.as_str())
            .await?
            .map(|(blob, _)| blob)
            .ok_or(Error::NotFound)
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
        store::find_blob(&self.db, workspace_id, id.as_str())
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
