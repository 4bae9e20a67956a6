//! The media service as dispatch asks it: a voice note's variant in the
//! form a channel takes, and download links to stored files (see the
//! domain module for how they are used).

use std::time::Duration;

use async_trait::async_trait;
use telenet_kit::grpc::GrpcChannel;
use telenet_proto::media::v1::media_client::MediaClient;
use telenet_proto::media::v1::{CreateDownloadUrlRequest, TranscodeRequest, VariantState};

/// The media service's answer for a variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VariantAnswer {
    /// Made: its output files, in order.
    Ready(Vec<VariantPart>),
    /// Still being made.
    Pending,
    /// Cannot be made from this file; the reason.
    Failed(String),
}

/// One output file of a variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariantPart {
    pub blob_id: String,
    pub mime_type: String,
    pub size_bytes: u64,
    pub duration_ms: u64,
}

/// Why media could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VariantError {
    /// Media refused the question for good (unknown blob or profile).
    #[error("media refused the variant: {0}")]
    Rejected(String),
    /// Media could not answer now.
    #[error("media unavailable: {0}")]
    Unavailable(String),
}

/// Asks the media service for variants and download links.
#[async_trait]
pub trait MediaFiles: Send + Sync + 'static {
    /// The variant of `blob_id` in `profile`, waiting up to `wait` for it to
    /// be made.
    async fn variant(
        &self,
        workspace_id: &str,
        blob_id: &str,
        profile: &str,
        wait: Duration,
    ) -> Result<VariantAnswer, VariantError>;

    /// A download link to `blob_id` named `file_name` (empty: media names
    /// it) valid for `ttl`; `None` when the installation makes no links.
    async fn link(
        &self,
        workspace_id: &str,
        blob_id: &str,
        file_name: &str,
        ttl: Duration,
    ) -> Result<Option<String>, VariantError>;
}

/// The media service over gRPC (`telenet.media.v1.Media`).
#[derive(Clone)]
pub struct GrpcMediaFiles {
    client: MediaClient<GrpcChannel>,
}

impl std::fmt::Debug for GrpcMediaFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcMediaFiles").finish_non_exhaustive()
    }
}

impl GrpcMediaFiles {
    /// Asks media over `channel` (`ServiceContext::client("media")`).
    pub fn new(channel: GrpcChannel) -> Self {
        Self {
            client: MediaClient::new(channel),
        }
    }
}

#[async_trait]
impl MediaFiles for GrpcMediaFiles {
    async fn variant(
        &self,
        workspace_id: &str,
        blob_id: &str,
        profile: &str,
        wait: Duration,
    ) -> Result<VariantAnswer, VariantError> {
        let wait_ms = u32::try_from(wait.as_millis())
            .unwrap_or(u32::MAX)
            .min(30_000);
        let mut client = self.client.clone();
        let reply = client
            .transcode(TranscodeRequest {
                workspace_id: workspace_id.to_owned(),
                blob_id: blob_id.to_owned(),
                profile: profile.to_owned(),
                wait_ms,
            })
            .await
            .map_err(|status| refusal(&status))?
            .into_inner();
        Ok(match VariantState::try_from(reply.state) {
            Ok(VariantState::Ready) => VariantAnswer::Ready(
                reply
                    .parts
                    .into_iter()
                    .map(|p| VariantPart {
                        blob_id: p.blob_id,
                        mime_type: p.mime_type,
                        size_bytes: p.size_bytes,
                        duration_ms: p.duration_ms,
                    })
                    .collect(),
            ),
            Ok(VariantState::Failed) => VariantAnswer::Failed(reply.error),
            _ => VariantAnswer::Pending,
        })
    }

    async fn link(
        &self,
        workspace_id: &str,
        blob_id: &str,
        file_name: &str,
        ttl: Duration,
    ) -> Result<Option<String>, VariantError> {
        let mut client = self.client.clone();
        let call = client.create_download_url(CreateDownloadUrlRequest {
            workspace_id: workspace_id.to_owned(),
            blob_id: blob_id.to_owned(),
            ttl_seconds: u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX),
            file_name: file_name.to_owned(),
        });
        match call.await {
            Ok(reply) => Ok(Some(reply.into_inner().url)),
            Err(status) if status.code() == tonic::Code::FailedPrecondition => Ok(None),
            Err(status) => Err(refusal(&status)),
        }
    }
}

/// A media error status as final (the question itself is wrong) or not.
fn refusal(status: &tonic::Status) -> VariantError {
    use tonic::Code;
    let text = format!("{:?}: {}", status.code(), status.message());
    match status.code() {
        Code::NotFound | Code::InvalidArgument | Code::FailedPrecondition => {
            VariantError::Rejected(text)
        }
        _ => VariantError::Unavailable(text),
    }
}
