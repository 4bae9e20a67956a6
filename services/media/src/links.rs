//! Download links: time-limited URLs that serve one stored file without
//! credentials, for whoever must fetch an outbound attachment by URL (a
//! provider, a custom channel's receiver) and for agents sharing a file.
//!
//! The media service signs them (`CreateDownloadUrl`) and checks them (a
//! `Download` carrying a [`pb::DownloadGrant`]); the gateway serves them at
//! `GET /v1/downloads/{workspace_id}/{blob_id}/{file_name}` on its public
//! address, passing the grant through. Only the media service holds the key.

use serde::{Deserialize, Serialize};
use telenet_proto::media::v1 as pb;
use telenet_signing::links::{Link, LinkError, LinkSigner, is_file_name};

use crate::domain::require;
use crate::{Error, MediaService};

/// Default lifetime of a link, in seconds (`ttl_seconds` 0).
pub const DEFAULT_TTL_SECS: u32 = 3_600;
/// Shortest lifetime a link may ask for, in seconds.
pub const MIN_TTL_SECS: u32 = 60;
/// Longest lifetime a link may ask for, in seconds (7 days).
pub const MAX_TTL_SECS: u32 = 7 * 24 * 3_600;
pub use telenet_signing::links::MAX_FILE_NAME_CHARS;

/// Download links (`media.download_urls.*`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DownloadUrlConfig {
    /// The gateway's public address, as providers reach it, e.g.
    /// `https://inbox.example.com`. Empty: no links are made
    /// (`CreateDownloadUrl` answers FAILED_PRECONDITION).
    pub base_url: String,
    /// The signing key: base64 of at least 32 random bytes
    /// (`openssl rand -base64 32`). Keep it secret; anyone holding it can
    /// make links to any file.
    pub key: String,
    /// Keys being retired: links they signed keep working until they
    /// expire; new links are signed with `key` only.
    pub previous_keys: Vec<String>,
}

impl DownloadUrlConfig {
    /// The base URL and the signer, or `None` when links are not set up.
    pub(crate) fn build(&self) -> Result<Option<(url::Url, LinkSigner)>, (&'static str, String)> {
        if self.base_url.trim().is_empty() && self.key.trim().is_empty() {
            return Ok(None);
        }
        if self.base_url.trim().is_empty() {
            return Err((
                "download_urls.base_url",
                "must be set when download_urls.key is".into(),
            ));
        }
        let base = url::Url::parse(self.base_url.trim())
            .map_err(|e| ("download_urls.base_url", e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err((
                "download_urls.base_url",
                "must be an http or https URL".into(),
            ));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err((
                "download_urls.base_url",
                "must not have a query or fragment".into(),
            ));
        }
        if self.key.trim().is_empty() {
            return Err((
                "download_urls.key",
                "must be set when download_urls.base_url is".into(),
            ));
        }
        let signer = LinkSigner::new(&self.key, &self.previous_keys).map_err(|e| {
            let key = if LinkSigner::new::<&str>(&self.key, &[]).is_err() {
                "download_urls.key"
            } else {
                "download_urls.previous_keys"
            };
            (key, e.to_string())
        })?;
        Ok(Some((base, signer)))
    }
}

impl MediaService {
    /// A link to a file the workspace can see; see the `CreateDownloadUrl`
    /// RPC.
    pub async fn create_download_url(
        &self,
        req: &pb::CreateDownloadUrlRequest,
    ) -> Result<pb::CreateDownloadUrlResponse, Error> {
        require("workspace_id", &req.workspace_id)?;
        let ttl = match req.ttl_seconds {
            0 => DEFAULT_TTL_SECS,
            t if (MIN_TTL_SECS..=MAX_TTL_SECS).contains(&t) => t,
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "ttl_seconds must be between {MIN_TTL_SECS} and {MAX_TTL_SECS} (0: {DEFAULT_TTL_SECS})"
                )));
            }
        };
        if !req.file_name.is_empty() {
            check_file_name(&req.file_name)?;
        }
        let blob = self.blob(&req.workspace_id, &req.blob_id).await?;
        let Some((base, signer)) = self.links.as_deref() else {
            return Err(Error::FailedPrecondition(
                "download links are not set up: set media.download_urls.base_url and \
                 media.download_urls.key"
                    .into(),
            ));
        };
        let file_name = if req.file_name.is_empty() {
            default_file_name(&blob)
        } else {
            req.file_name.clone()
        };
        let expires_at = telenet_signing::unix_now() + i64::from(ttl);
        let link = Link {
            workspace_id: &blob.workspace_id,
            blob_id: &blob.id,
            file_name: &file_name,
            expires_at,
        };
        let signature = signer.sign(&link);
        let mut url = base.clone();
        url.path_segments_mut()
            .map_err(|()| {
                Error::FailedPrecondition("download_urls.base_url cannot be a base".into())
            })?
            .pop_if_empty()
            .extend(["v1", "downloads", &blob.workspace_id, &blob.id, &file_name]);
        url.query_pairs_mut()
            .append_pair("expires", &expires_at.to_string())
            .append_pair("signature", &signature);
        Ok(pb::CreateDownloadUrlResponse {
            url: url.into(),
            expires_at: Some(telenet_store::timestamp(
                expires_at.saturating_mul(1_000_000),
            )),
        })
    }

    /// Check a download's grant, when it has one: signed for this
    /// workspace, blob and name, and not expired.
    pub(crate) fn check_grant(&self, req: &pb::DownloadRequest) -> Result<(), Error> {
        let Some(grant) = &req.grant else {
            return Ok(());
        };
        let Some((_, signer)) = self.links.as_deref() else {
            return Err(Error::PermissionDenied(
                "download links are not accepted: none are set up".into(),
            ));
        };
        let link = Link {
            workspace_id: &req.workspace_id,
            blob_id: &req.blob_id,
            file_name: &grant.file_name,
            expires_at: grant.expires_at,
        };
        signer
            .verify(&link, &grant.signature, telenet_signing::unix_now())
            .map_err(|e: LinkError| Error::PermissionDenied(e.to_string()))
    }
}

fn check_file_name(name: &str) -> Result<(), Error> {
    if !is_file_name(name) {
        return Err(Error::InvalidArgument(format!(
            "file_name must be 1 to {MAX_FILE_NAME_CHARS} characters without `/`, `\\`, control \
             characters or surrounding spaces, and not `.` or `..`"
        )));
    }
    Ok(())
}

/// `{first 16 hex of the id}.{extension of the MIME type}`.
fn default_file_name(blob: &pb::Blob) -> String {
    let stem = &blob.id[..blob.id.len().min(16)];
    format!("{stem}.{}", extension_of(&blob.mime_type))
}

/// The usual file extension of a MIME type (parameters ignored); `bin`
/// when there is none we know.
pub fn extension_of(mime_type: &str) -> &'static str {
    match telenet_kit::mime::essence(mime_type).as_str() {
        "audio/ogg" | "audio/opus" => "ogg",
        "audio/mpeg" | "audio/mp3" => "mp3",
        "audio/mp4" | "audio/x-m4a" | "audio/m4a" => "m4a",
        "audio/aac" => "aac",
        "audio/amr" => "amr",
        "audio/webm" => "webm",
        "audio/wav" | "audio/x-wav" | "audio/wave" => "wav",
        "video/mp4" => "mp4",
        "video/webm" => "webm",
        "video/quicktime" => "mov",
        "image/jpeg" => "jpg",
        "image/png" => "png",
        "image/gif" => "gif",
        "image/webp" => "webp",
        "application/pdf" => "pdf",
        "text/plain" => "txt",
        "text/csv" => "csv",
        "application/zip" => "zip",
        _ => "bin",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

    #[test]
    fn config_needs_both_or_neither() {
        assert!(matches!(DownloadUrlConfig::default().build(), Ok(None)));
        let only_key = DownloadUrlConfig {
            key: KEY.into(),
            ..Default::default()
        };
        assert_eq!(
            only_key.build().err().map(|e| e.0),
            Some("download_urls.base_url")
        );
        let only_url = DownloadUrlConfig {
            base_url: "https://inbox.example".into(),
            ..Default::default()
        };
        assert_eq!(
            only_url.build().err().map(|e| e.0),
            Some("download_urls.key")
        );
        let bad_scheme = DownloadUrlConfig {
            base_url: "ftp://inbox.example".into(),
            key: KEY.into(),
            ..Default::default()
        };
        assert_eq!(
            bad_scheme.build().err().map(|e| e.0),
            Some("download_urls.base_url")
        );
        let bad_previous = DownloadUrlConfig {
            base_url: "https://inbox.example/base/".into(),
            key: KEY.into(),
            previous_keys: vec!["c2hvcnQ=".into()],
        };
        assert_eq!(
            bad_previous.build().err().map(|e| e.0),
            Some("download_urls.previous_keys")
        );
        let good = DownloadUrlConfig {
            previous_keys: vec![],
            ..bad_previous
        };
        assert!(matches!(good.build(), Ok(Some(_))));
    }

    #[test]
    fn file_names_are_single_safe_segments() {
        for good in ["voice.ogg", "Sprachnachricht 1.m4a", "ünïcödé.pdf", "a"] {
            assert!(check_file_name(good).is_ok(), "{good}");
        }
        let long = "x".repeat(MAX_FILE_NAME_CHARS + 1);
        for bad in [
            "../etc",
            "a/b",
            "a\\b",
            ".",
            "..",
            " lead",
            "nl\n",
            long.as_str(),
        ] {
            assert!(check_file_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn default_names_carry_the_type_extension() {
        let blob = pb::Blob {
            id: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".into(),
            workspace_id: "w".into(),
            size_bytes: 1,
            mime_type: "audio/ogg; codecs=opus".into(),
        };
        assert_eq!(default_file_name(&blob), "0123456789abcdef.ogg");
        assert_eq!(extension_of("AUDIO/MPEG"), "mp3");
        assert_eq!(extension_of("application/x-unknown"), "bin");
    }
}
