//! Inbound media: the attachments a provider announces with an inbound
//! message are fetched from the provider's URL into the blob store, after the
//! message is stored, so a slow or broken provider never holds up the inbox.
//!
//! The fetcher consumes `message.created` (group `media.inbound`; the bus
//! handler is in `consumers`). For each
//! inbound message with attachments in state PENDING it downloads every URL —
//! http or https only, within a size cap and timeouts, following a bounded
//! number of redirects, and by default only to public addresses — streaming
//! the bytes into the blob store under the message's workspace. Each outcome
//! is announced through media's outbox: `message.attachment_ready` (with the
//! blob id, size and MIME type) or `message.attachment_failed` (with the
//! reason); conversations applies them to the stored message.
//!
//! A custom channel's files are fetched **signed**: with the channel's
//! secret, the request carries Standard Webhooks headers (`webhook-id`,
//! `webhook-timestamp`, `webhook-signature`) whose signed body is the URL
//! being fetched, so the channel's server can refuse anyone else with the
//! same code that checks our outbound messages. The channel is asked of
//! ingress (`GetChannelCredentials`, cached briefly) and the headers made by
//! its provider (`telenet_channels`), so other providers' authorization
//! lands in their own module.
//!
//! Each attachment is announced as soon as it is settled, its event and its
//! processed mark (`<event id>/<index>`) written in one transaction, so a
//! redelivered event announces nothing twice and fetches only what is still
//! unsettled. Failures worth retrying (no answer, a 5xx or 429) make the
//! event be retried by the bus, up to `attempts` deliveries; then the
//! attachment is reported failed. Blobs are content-addressed, so fetching
//! again after a crash stores nothing twice.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use telenet_bus::SharedBus;
use telenet_channels::directory::{ChannelDirectory, DirectoryError};
use telenet_channels::net::{AllowList, Egress, Refused, refusal_in};
use telenet_channels::{CredentialsError, MediaFetch, Registry};
use telenet_proto::common::v1::Attachment;
use telenet_proto::media::v1 as pb;

use crate::{Error, MediaService, mime};

pub use crate::consumers::{GROUP, subscription};

/// MIME type recorded when neither the webhook nor the provider's answer
/// names a usable one.
const UNKNOWN_MIME: &str = "application/octet-stream";

/// Fetching inbound attachments (`media.inbound.*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InboundConfig {
    /// Largest attachment fetched, in bytes; a larger one fails as "too
    /// large" (checked against `Content-Length` first, then while reading).
    pub max_bytes: u64,
    /// How long connecting to the provider may take, in milliseconds.
    pub connect_timeout_ms: u64,
    /// How long one whole fetch may take, body included, in milliseconds.
    pub timeout_ms: u64,
    /// Redirects followed per fetch (0 refuses every redirect).
    pub max_redirects: usize,
    /// Fetch from loopback, private, link-local and other non-public
    /// addresses too. Off by default: a webhook could otherwise make the
    /// service fetch internal URLs and hand the answer out as an attachment.
    /// Every address a name resolves to is checked, on redirects too (the
    /// policy of `telenet_channels::net`, which dispatch applies as well).
    pub allow_private_networks: bool,
    /// Deliveries of a message's event before an attachment whose fetch
    /// keeps failing for a reason worth retrying is reported failed. Keep it
    /// at most the bus's retries plus one.
    pub attempts: u32,
    /// Messages fetched at once.
    pub concurrency: usize,
}

impl Default for InboundConfig {
    fn default() -> Self {
        Self {
            max_bytes: 100 * 1024 * 1024,
            connect_timeout_ms: 5_000,
            timeout_ms: 120_000,
            max_redirects: 5,
            allow_private_networks: false,
            attempts: 3,
            concurrency: 4,
        }
    }
}

impl InboundConfig {
    /// Refuse settings that would only fail later: `(key, reason)`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let positive = |key, v: u64| {
            if v == 0 {
                Err((key, "must be at least 1".to_owned()))
            } else {
                Ok(())
            }
        };
        positive("inbound.max_bytes", self.max_bytes)?;
        if i64::try_from(self.max_bytes).is_err() {
            return Err(("inbound.max_bytes", format!("must be at most {}", i64::MAX)));
        }
        positive("inbound.connect_timeout_ms", self.connect_timeout_ms)?;
        positive("inbound.timeout_ms", self.timeout_ms)?;
        positive("inbound.attempts", u64::from(self.attempts))?;
        positive("inbound.concurrency", self.concurrency as u64)?;
        Ok(())
    }
}

/// Why one attachment could not be fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// Will not work however often it is tried; the reason is shown to
    /// agents.
    Permanent(String),
    /// Might work later (no answer, 5xx, 429).
    Transient(String),
}

impl FetchError {
    /// The reason, for the attachment's `error`.
    pub fn reason(&self) -> &str {
        match self {
            FetchError::Permanent(r) | FetchError::Transient(r) => r,
        }
    }
}

/// The inbound attachment fetcher. Clones share the HTTP client.
#[derive(Clone)]
pub struct InboundFetcher {
    pub(crate) media: MediaService,
    pub(crate) bus: SharedBus,
    http: reqwest::Client,
    /// Where fetches may go (public addresses, unless private networks are
    /// allowed).
    egress: Egress,
    pub(crate) config: Arc<InboundConfig>,
    channels: Option<Arc<dyn ChannelDirectory>>,
    providers: Registry,
}

impl std::fmt::Debug for InboundFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundFetcher")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl InboundFetcher {
    /// A fetcher storing into `media`'s blob store, with `media`'s
    /// `inbound` settings, announcing outcomes through `media`'s outbox.
    pub fn new(media: MediaService, bus: SharedBus) -> Result<Self, Error> {
        let config = media.config.inbound.clone();
        config
            .validate()
            .map_err(|(key, reason)| Error::Config { key, reason })?;
        let egress = egress(&config);
        let http = http_client(&config, &egress).map_err(|e| Error::Config {
            key: "inbound",
            reason: format!("cannot build the HTTP client: {e}"),
        })?;
        Ok(Self {
            media,
            bus,
            http,
            egress,
            config: Arc::new(config),
            channels: None,
            providers: Registry::builtin(),
        })
    }

    /// Fetch channels' files the way their providers authorize it (a
    /// custom channel's are signed with its secret), with the channels
    /// looked up in `channels`.
    pub fn with_channel_directory(mut self, channels: Arc<dyn ChannelDirectory>) -> Self {
        self.channels = Some(channels);
        self
    }

    /// Download one attachment into the blob store for `workspace_id`.
    /// Fetch an attachment of a message of `channel_id` into the store,
    /// signed when the channel is a custom one (see the module).
    pub async fn fetch_from(
        &self,
        workspace_id: &str,
        channel_id: &str,
        attachment: &Attachment,
    ) -> Result<pb::Blob, FetchError> {
        let fetch = self
            .resolve(workspace_id, channel_id, attachment.url.trim())
            .await?;
        self.fetch_signed(workspace_id, attachment, &fetch.url, fetch.headers)
            .await
    }

    /// How the channel's provider fetches `url`: the URL itself, with the
    /// headers the provider adds (none for a channel that is gone or whose
    /// provider needs none), or the URL a file id resolves to (WhatsApp,
    /// Telegram). A channel whose credentials are unusable is fetched
    /// without them (its server decides).
    async fn resolve(
        &self,
        workspace_id: &str,
        channel_id: &str,
        url: &str,
    ) -> Result<MediaFetch, FetchError> {
        let plain = || MediaFetch {
            url: url.to_owned(),
            headers: HeaderMap::new(),
        };
        let Some(channels) = self.channels.as_ref().filter(|_| !channel_id.is_empty()) else {
            return Ok(plain());
        };
        let channel = match channels.credentials(workspace_id, channel_id).await {
            Ok(channel) => channel,
            Err(DirectoryError::NotFound) => return Ok(plain()),
            Err(e @ DirectoryError::Unavailable(_)) => {
                return Err(FetchError::Transient(format!(
                    "asking ingress for the channel's secret: {e}"
                )));
            }
            Err(e @ DirectoryError::Rejected(_)) => {
                tracing::warn!(channel_id, error = %e, "channel lookup refused; fetching unsigned");
                return Ok(plain());
            }
        };
        let Some(provider) = self.providers.for_channel(&channel) else {
            return Ok(plain());
        };
        // A channel's own API host is held to the same policy as the files.
        let api_base = channel.config.api_base_url.trim();
        if !api_base.is_empty()
            && let Err(why) = self.egress.check(api_base)
        {
            return Err(FetchError::Permanent(format!("api_base_url: {why}")));
        }
        match provider.media_fetch(&self.http, &channel, url).await {
            Ok(fetch) => Ok(fetch),
            Err(CredentialsError::Invalid(reason)) => {
                tracing::warn!(
                    channel_id,
                    reason,
                    "the channel's credentials are unusable; fetching unsigned"
                );
                Ok(plain())
            }
            Err(CredentialsError::Unavailable(reason)) => Err(FetchError::Transient(reason)),
        }
    }

    /// Fetch an attachment into the store, unsigned.
    pub async fn fetch(
        &self,
        workspace_id: &str,
        attachment: &Attachment,
    ) -> Result<pb::Blob, FetchError> {
        self.fetch_signed(
            workspace_id,
            attachment,
            attachment.url.trim(),
            HeaderMap::new(),
        )
        .await
    }

    async fn fetch_signed(
        &self,
        workspace_id: &str,
        attachment: &Attachment,
        url: &str,
        authorization: HeaderMap,
    ) -> Result<pb::Blob, FetchError> {
        let permanent = |m: String| FetchError::Permanent(m);
        let url = url::Url::parse(url)
            .map_err(|e| permanent(format!("url is not an absolute URL: {e}")))?;
        self.egress.check_url(&url).map_err(|why| match why {
            Refused::Scheme(scheme) => {
                permanent(format!("url scheme {scheme:?} is not http or https"))
            }
            other => permanent(other.to_string()),
        })?;
        let max = self.config.max_bytes;
        let request = self.http.get(url.clone()).headers(authorization);
        let mut response = request.send().await.map_err(|e| request_error(&e))?;
        let status = response.status();
        if !status.is_success() {
            let reason = format!("the provider answered HTTP {status}");
            return Err(
                if status.is_server_error()
                    || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                    || status == reqwest::StatusCode::REQUEST_TIMEOUT
                {
                    FetchError::Transient(reason)
                } else {
                    FetchError::Permanent(reason)
                },
            );
        }
        if let Some(length) = response.content_length()
            && length > max
        {
            return Err(too_large(max));
        }
        let answered_mime = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);

        let store = self.media.blob_store();
        let mut writer = store
            .writer()
            .await
            .map_err(|e| internal("opening the blob store", &e))?;
        while let Some(chunk) = response.chunk().await.map_err(|e| request_error(&e))? {
            if writer.written() + chunk.len() as u64 > max {
                return Err(too_large(max));
            }
            writer
                .write(&chunk)
                .await
                .map_err(|e| internal("writing to the blob store", &e))?;
        }
        let stored = writer
            .commit()
            .await
            .map_err(|e| internal("storing the blob", &e))?;
        // The webhook's declaration first (the provider's CDN often answers
        // application/octet-stream), then the answer's, then unknown.
        let mime_type = [
            Some(attachment.mime_type.as_str()),
            answered_mime.as_deref(),
        ]
        .into_iter()
        .flatten()
        .find_map(|m| mime::normalize(m).ok())
        .unwrap_or_else(|| UNKNOWN_MIME.to_owned());
        self.media
            .record(workspace_id, &stored, &mime_type)
            .await
            .map_err(|e| match e {
                Error::Store(ref s) if s.is_transient() => {
                    FetchError::Transient(format!("recording the blob: {e}"))
                }
                e => internal("recording the blob", &e),
            })
    }
}

fn too_large(max: u64) -> FetchError {
    FetchError::Permanent(format!("too large: the file exceeds {max} bytes"))
}

/// A failure on our side (disk full, store down): worth retrying; the
/// detail is logged, agents see only that storing failed.
fn internal(what: &str, error: &dyn std::fmt::Display) -> FetchError {
    tracing::error!(error = %error, "inbound attachment: {what}");
    FetchError::Transient(format!("{what} failed"))
}

/// What a failed request means for the attachment.
fn request_error(e: &reqwest::Error) -> FetchError {
    if let Some(refused) = refusal_in(e) {
        return FetchError::Permanent(refused.to_string());
    }
    if e.is_redirect() {
        return FetchError::Permanent("too many redirects".to_owned());
    }
    if e.is_timeout() {
        return FetchError::Transient("the provider did not answer in time".into());
    }
    if e.is_connect() {
        return FetchError::Transient(format!("cannot connect to the provider: {}", innermost(e)));
    }
    FetchError::Transient(format!(
        "fetching from the provider failed: {}",
        innermost(e)
    ))
}

/// The most specific message of an error chain (reqwest's own is generic).
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut current = e;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

/// The fetcher's destination policy: public addresses only, unless
/// `allow_private_networks`.
fn egress(config: &InboundConfig) -> Egress {
    let allow = if config.allow_private_networks {
        AllowList::everything()
    } else {
        AllowList::none()
    };
    Egress::new(allow, "media.inbound.allow_private_networks")
}

fn http_client(config: &InboundConfig, egress: &Egress) -> reqwest::Result<reqwest::Client> {
    let builder = reqwest::Client::builder()
        .user_agent(concat!("telenet-media/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
        .timeout(Duration::from_millis(config.timeout_ms))
        .redirect(egress.redirect_policy(config.max_redirects));
    egress.apply(builder).build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_networks_are_refused_unless_allowed() {
        let url = |s: &str| url::Url::parse(s).expect("url");
        let strict = egress(&InboundConfig::default());
        let why = strict
            .check_url(&url("http://169.254.169.254/latest/meta-data/"))
            .expect_err("metadata service");
        assert!(
            why.to_string()
                .contains("not allowed by media.inbound.allow_private_networks"),
            "{why}"
        );
        assert!(strict.check_url(&url("https://8.8.8.8/x")).is_ok());
        let open = egress(&InboundConfig {
            allow_private_networks: true,
            ..InboundConfig::default()
        });
        assert!(open.check_url(&url("http://127.0.0.1:8080/x")).is_ok());
    }

    #[test]
    fn settings_are_checked() {
        assert!(InboundConfig::default().validate().is_ok());
        let zero = InboundConfig {
            timeout_ms: 0,
            ..InboundConfig::default()
        };
        assert_eq!(
            zero.validate().map_err(|(k, _)| k),
            Err("inbound.timeout_ms")
        );
    }
}
