//! Voice notes in the form the channel takes.
//!
//! A custom channel lists the MIME types its receiver accepts for voice
//! notes (`accepted_voice_types`, best first). For each voice attachment of
//! an outbound message stored in the media service:
//!
//! - recorded in an accepted type: sent as it is;
//! - else the first accepted type the media service can make (a profile,
//!   e.g. `audio/ogg` → `voice-ogg-opus`): dispatch asks media for that
//!   variant (made once, cached) and sends its part(s) as the voice note;
//!   a variant still being made sends the attempt back to the bus to retry
//!   later, one that cannot be made falls back to the file as recorded;
//! - a channel that lists nothing (or nothing media can make) gets the file
//!   as recorded, as a `file` attachment.
//!
//! Links: every stored attachment (voice notes, their variants' parts,
//! pictures, files) goes out with a signed download link the media service
//! makes (`CreateDownloadUrl`, valid for `dispatch.download_link_ttl`):
//! the receiver fetches it from the gateway without credentials. When the
//! installation has no download links set up, the receiver gets only the
//! `blob_id`.

use std::time::Duration;

use async_trait::async_trait;
use telenet_kit::mime::essence;
use telenet_proto::common::v1::{Attachment, AttachmentKind};
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

/// The media service over gRPC (`telenet.media.v1.Media/Transcode`).
#[derive(Debug, Clone)]
pub struct GrpcMediaFiles {
    client: MediaClient<tonic::transport::Channel>,
}

impl GrpcMediaFiles {
    pub fn new(client: MediaClient<tonic::transport::Channel>) -> Self {
        Self { client }
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
        let reply = self
            .client
            .clone()
            .transcode(telenet_kit::telemetry::grpc_request(TranscodeRequest {
                workspace_id: workspace_id.to_owned(),
                blob_id: blob_id.to_owned(),
                profile: profile.to_owned(),
                wait_ms,
            }))
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
        let reply = self
            .client
            .clone()
            .create_download_url(telenet_kit::telemetry::grpc_request(
                CreateDownloadUrlRequest {
                    workspace_id: workspace_id.to_owned(),
                    blob_id: blob_id.to_owned(),
                    ttl_seconds: u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX),
                    file_name: file_name.to_owned(),
                },
            ))
            .await;
        match reply {
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

/// The media profile that makes a voice note of MIME type `mime` (its
/// essence: parameters ignored, case-insensitive), for custom channels.
/// Profiles that split audio into parts are last resorts (`audio/amr`,
/// WeChat's form, has only that one).
pub fn profile_for(mime: &str) -> Option<&'static str> {
    Some(match essence(mime).as_str() {
        "audio/ogg" | "audio/opus" => "voice-ogg-opus",
        "audio/mp4" | "audio/m4a" | "audio/x-m4a" => "audio-m4a-aac",
        "audio/mpeg" | "audio/mp3" => "audio-mp3",
        "audio/amr" => "voice-amr",
        "video/mp4" => "video-still-mp4",
        _ => return None,
    })
}

/// What to do with one voice attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Send as recorded, as a voice note.
    AsIs,
    /// Send the variant of this profile.
    Variant(&'static str),
    /// Send the file as recorded, as a plain file.
    AsFile,
}

/// How a voice note recorded as `recorded_mime` goes to a channel accepting
/// `accepted` (best first).
pub(crate) fn plan(recorded_mime: &str, accepted: &[String]) -> Plan {
    let recorded = essence(recorded_mime);
    if accepted.iter().any(|a| essence(a) == recorded) {
        return Plan::AsIs;
    }
    accepted
        .iter()
        .find_map(|a| profile_for(a))
        .map_or(Plan::AsFile, Plan::Variant)
}

/// The attachment as a plain file (same bytes).
pub(crate) fn as_file(mut a: Attachment) -> Attachment {
    a.set_kind(AttachmentKind::File);
    a
}

/// The attachments made of a ready variant's parts. Their names are left
/// to the media service (the id and the extension of the part's type): the
/// original's name would carry the wrong extension.
pub(crate) fn from_parts(parts: &[VariantPart]) -> Vec<Attachment> {
    parts
        .iter()
        .map(|p| Attachment {
            kind: AttachmentKind::Voice as i32,
            mime_type: p.mime_type.clone(),
            size_bytes: p.size_bytes,
            blob_id: p.blob_id.clone(),
            duration_ms: p.duration_ms,
            ..Attachment::default()
        })
        .collect()
}

/// `name` when it can name a download link (one path segment of at most
/// 128 characters, no `/`, `\\` or control characters), else empty: the
/// media service then names the file itself.
pub(crate) fn link_name(name: &str) -> &str {
    if telenet_signing::links::is_file_name(name) {
        name
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn plans_follow_the_channels_preferences() {
        let webm = "audio/webm; codecs=opus";
        assert_eq!(plan(webm, &list(&["audio/webm"])), Plan::AsIs);
        assert_eq!(plan(webm, &list(&["Audio/WebM; codecs=opus"])), Plan::AsIs);
        assert_eq!(
            plan(webm, &list(&["audio/ogg; codecs=opus", "audio/mpeg"])),
            Plan::Variant("voice-ogg-opus")
        );
        assert_eq!(
            plan(webm, &list(&["application/x-unknown", "audio/mp4"])),
            Plan::Variant("audio-m4a-aac")
        );
        assert_eq!(plan(webm, &[]), Plan::AsFile);
        assert_eq!(plan(webm, &list(&["text/plain"])), Plan::AsFile);
    }

    #[test]
    fn only_safe_names_name_links() {
        assert_eq!(link_name("note.webm"), "note.webm");
        assert_eq!(link_name("Sprachnachricht.m4a"), "Sprachnachricht.m4a");
        for bad in ["", "a/b", "..", " x", "a\\b", "tab\t"] {
            assert_eq!(link_name(bad), "", "{bad:?}");
        }
        assert_eq!(link_name(&"x".repeat(129)), "");
    }
}
