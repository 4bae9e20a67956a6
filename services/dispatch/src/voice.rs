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
//! Links: the receiver gets `{files_url}/v1/files/{blob_id}` — the
//! gateway's download of that blob (it takes a bearer token of the
//! workspace and serves byte ranges) — when `files_url` is configured, and
//! always the `blob_id` itself.

use std::time::Duration;

use async_trait::async_trait;
use telenet_proto::common::v1::{Attachment, AttachmentKind};
use telenet_proto::media::v1::media_client::MediaClient;
use telenet_proto::media::v1::{TranscodeRequest, VariantState};

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

/// Asks the media service for variants.
#[async_trait]
pub trait VoiceVariants: Send + Sync + 'static {
    /// The variant of `blob_id` in `profile`, waiting up to `wait` for it to
    /// be made.
    async fn variant(
        &self,
        workspace_id: &str,
        blob_id: &str,
        profile: &str,
        wait: Duration,
    ) -> Result<VariantAnswer, VariantError>;
}

/// The media service over gRPC (`telenet.media.v1.Media/Transcode`).
#[derive(Debug, Clone)]
pub struct GrpcVoiceVariants {
    client: MediaClient<tonic::transport::Channel>,
}

impl GrpcVoiceVariants {
    pub fn new(client: MediaClient<tonic::transport::Channel>) -> Self {
        Self { client }
    }
}

#[async_trait]
impl VoiceVariants for GrpcVoiceVariants {
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
            .map_err(|status| {
                use tonic::Code;
                let text = format!("{:?}: {}", status.code(), status.message());
                match status.code() {
                    Code::NotFound | Code::InvalidArgument | Code::FailedPrecondition => {
                        VariantError::Rejected(text)
                    }
                    _ => VariantError::Unavailable(text),
                }
            })?
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

/// `type/subtype` of a MIME type, lowercase.
pub fn essence(mime: &str) -> String {
    mime.split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
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

/// The URL a receiver fetches `blob_id` at, given the configured gateway
/// base URL (empty: none).
pub(crate) fn file_url(files_url: &str, blob_id: &str) -> String {
    if files_url.is_empty() {
        String::new()
    } else {
        format!("{}/v1/files/{blob_id}", files_url.trim_end_matches('/'))
    }
}

/// The attachment as a plain file (same bytes, link filled in).
pub(crate) fn as_file(mut a: Attachment, files_url: &str) -> Attachment {
    a.set_kind(AttachmentKind::File);
    if a.url.is_empty() {
        a.url = file_url(files_url, &a.blob_id);
    }
    a
}

/// The attachments made of a ready variant's parts.
pub(crate) fn from_parts(
    original: &Attachment,
    parts: &[VariantPart],
    files_url: &str,
) -> Vec<Attachment> {
    parts
        .iter()
        .map(|p| Attachment {
            kind: AttachmentKind::Voice as i32,
            url: file_url(files_url, &p.blob_id),
            mime_type: p.mime_type.clone(),
            size_bytes: p.size_bytes,
            blob_id: p.blob_id.clone(),
            duration_ms: p.duration_ms,
            file_name: original.file_name.clone(),
            ..Attachment::default()
        })
        .collect()
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
    fn links_point_at_the_gateway_download() {
        assert_eq!(
            file_url("https://inbox.example/", "ab"),
            "https://inbox.example/v1/files/ab"
        );
        assert_eq!(file_url("", "ab"), "");
    }
}
