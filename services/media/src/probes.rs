//! Probing stored blobs (`Probe`) and describing them (`GetBlobMetadata`):
//! the bytes are read into memory (at most the probe's limit) and probed on
//! a blocking thread, since probing is CPU work; each answer is kept, by
//! content hash and number of waveform peaks.

use telenet_audio::probe::{DEFAULT_PEAKS, ProbeError, ProbeOptions, probe};
use telenet_proto::media::v1 as pb;
use telenet_store::now_micros;

use crate::domain::{attachment_kind, is_media_type, probe_result, waveform_peaks};
use crate::{BlobId, ByteRange, Error, MediaService, store};

impl MediaService {
    /// Probe a blob the workspace uploaded (`Probe` RPC).
    pub async fn probe_blob(&self, req: &pb::ProbeRequest) -> Result<pb::ProbeResult, Error> {
        let peaks = waveform_peaks(req.waveform_peaks)?;
        let blob = self.blob(&req.workspace_id, &req.blob_id).await?;
        self.probe_stored(&blob, peaks).await
    }

    /// Probe a blob already looked up, with `peaks` waveform slices: the
    /// kept answer, or probed now and kept.
    async fn probe_stored(&self, blob: &pb::Blob, peaks: usize) -> Result<pb::ProbeResult, Error> {
        if let Some(cached) = store::cached_probe(&self.db, &blob.id, peaks).await? {
            return Ok(cached);
        }
        let options = ProbeOptions::VOICE_NOTE.with_peaks(peaks);
        if blob.size_bytes > options.max_bytes {
            return Err(ProbeError::TooLarge {
                limit: options.max_bytes,
            }
            .into());
        }
        let data = self.read_for_probe(blob, options.max_bytes).await?;
        let probed = tokio::task::spawn_blocking(move || probe(&data, &options))
            .await
            .map_err(|e| ProbeError::Read(std::io::Error::other(e)))??;
        tracing::debug!(
            blob_id = %blob.id,
            container = %probed.container,
            codec = %probed.codec,
            duration_ms = probed.duration_ms,
            "blob probed"
        );
        let probed_at = now_micros();
        let result = probe_result(&probed, &blob.id, probed_at);
        store::keep_probe(&self.db, &result, peaks, probed_at).await?;
        Ok(result)
    }

    /// The bytes of `blob`, at most `limit` (one more tells a blob over the
    /// limit from one exactly at it).
    async fn read_for_probe(&self, blob: &pb::Blob, limit: u64) -> Result<Vec<u8>, Error> {
        let id = BlobId::parse(&blob.id)
            .map_err(|_| Error::InvalidArgument("blob_id is not a blob id".into()))?;
        let reader = self.blob_store().reader(&id, ByteRange::ALL).await?;
        let mut data = Vec::with_capacity(usize::try_from(blob.size_bytes).unwrap_or(0));
        tokio::io::AsyncReadExt::read_to_end(
            &mut tokio::io::AsyncReadExt::take(reader.bytes, limit + 1),
            &mut data,
        )
        .await
        .map_err(|source| Error::Read {
            blob_id: blob.id.clone(),
            source,
        })?;
        Ok(data)
    }

    /// Everything known about a blob the workspace can see
    /// (`GetBlobMetadata`): its record, its probe (audio and video, with
    /// the player's waveform; probed now if never asked, and kept) and its
    /// variants. A file that does not probe is still described, without
    /// probe or detected type.
    pub async fn blob_metadata(
        &self,
        req: &pb::GetBlobMetadataRequest,
    ) -> Result<pb::BlobMetadata, Error> {
        let (blob, created_at) = self.blob_record(&req.workspace_id, &req.blob_id).await?;
        let probe = if is_media_type(&blob.mime_type) {
            match self.probe_stored(&blob, DEFAULT_PEAKS).await {
                Ok(result) => Some(result),
                Err(Error::Probe(e)) if !matches!(e, ProbeError::Read(_)) => None,
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        let detected = probe
            .as_ref()
            .map(|p| p.mime_type.clone())
            .unwrap_or_default();
        let kind = attachment_kind(&blob.mime_type, &detected);
        let variants = self.list_variants(&req.workspace_id, &req.blob_id).await?;
        Ok(pb::BlobMetadata {
            blob: Some(blob),
            detected_mime_type: detected,
            kind: kind as i32,
            created_at: Some(telenet_store::timestamp(created_at)),
            probe,
            variants,
        })
    }
}
