//! WhatsApp, through Meta's Cloud API ([`WhatsAppCloud`]) or through
//! 360dialog ([`dialog360::WhatsApp360Dialog`]), which forwards the Cloud
//! API's webhook bodies and takes its message bodies.
//!
//! - Webhooks: Meta's subscription handshake and `X-Hub-Signature-256`
//!   under the app secret ([`crate::meta`]); bodies read by [`inbound`].
//! - Sends: `POST {api_base}/{version}/{phone_number_id}/messages` with the
//!   access token as bearer, bodies made by [`outbound`]; Graph errors
//!   sorted by [`crate::meta::graph_outcome`] (131047, outside the 24-hour
//!   window, is final; 130429 and 131056 throttle).
//! - Files: an inbound attachment's `url` is `{api_base}/{version}/{media_id}`
//!   (no token in it); [`Provider::media_fetch`] asks Graph for the file's
//!   short-lived URL with the bearer token, and fetches that with it too.

pub mod dialog360;
pub mod inbound;
pub mod outbound;

use std::time::Duration;

use async_trait::async_trait;
use http::{HeaderMap, HeaderValue};
use serde_json::Value;
use telenet_proto::common::v1::{AttachmentKind, ChannelKind, ChannelProvider};
use telenet_proto::dispatch::v1::DeliveryState;
use telenet_proto::events::v1::OutboundRequested;
use telenet_proto::ingress::v1::WhatsAppCloudConfig;
use telenet_proto::ingress::v1::channel_config::Provider as Case;

use crate::config::{api_base, check_api_base_url, random_token, required};
use crate::http::{exchange, sanitize};
use crate::meta::{self, DEFAULT_GRAPH_VERSION, GRAPH_HOST};
use crate::{
    Capabilities, ChannelCredentials, Check, CredentialsError, HandshakeAnswer, Inbound,
    MediaFetch, MediaRule, Provider, RateLimit, RateScope, SendOutcome, VoiceNotes, Webhook,
    WebhookError, WebhookSetup,
};

/// WhatsApp's status names.
const STATUSES: [(&str, DeliveryState); 5] = [
    ("sent", DeliveryState::Sent),
    ("delivered", DeliveryState::Delivered),
    ("read", DeliveryState::Read),
    ("played", DeliveryState::Played),
    ("failed", DeliveryState::Failed),
];

/// The delivery state a WhatsApp status name means.
pub fn delivery_state(status: &str) -> Option<DeliveryState> {
    STATUSES
        .iter()
        .find(|(name, _)| *name == status)
        .map(|(_, state)| *state)
}

/// The voice-note type WhatsApp plays as a voice message.
pub const VOICE_TYPE: &str = "audio/ogg; codecs=opus";
/// Largest voice note that still shows WhatsApp's play button (above it,
/// it arrives as a file to download).
pub const VOICE_PLAYABLE_BYTES: u64 = 512 * 1024;

const MB: u64 = 1024 * 1024;

/// What a WhatsApp channel carries (both providers).
pub fn capabilities() -> Capabilities {
    let rule = |kind, types: &[&str], max_bytes| MediaRule {
        kind,
        mime_types: types.iter().map(|t| (*t).to_owned()).collect(),
        max_bytes: Some(max_bytes),
    };
    Capabilities {
        text: Some(outbound::text_limit()),
        media: vec![
            rule(AttachmentKind::Image, &["image/jpeg", "image/png"], 5 * MB),
            rule(AttachmentKind::Video, &["video/mp4", "video/3gpp"], 16 * MB),
            rule(
                AttachmentKind::Audio,
                &[
                    "audio/aac",
                    "audio/amr",
                    "audio/mpeg",
                    "audio/mp4",
                    "audio/ogg",
                ],
                16 * MB,
            ),
            rule(AttachmentKind::File, &[], 100 * MB),
            rule(AttachmentKind::Sticker, &["image/webp"], 500 * 1024),
        ],
        voice: VoiceNotes {
            accepted_types: vec![VOICE_TYPE.to_owned()],
            max_bytes: Some(VOICE_PLAYABLE_BYTES),
            max_duration: None,
        },
        reply_window: Some(Duration::from_secs(24 * 60 * 60)),
        rate_limits: vec![
            RateLimit {
                messages: 80,
                per: Duration::from_secs(1),
                scope: RateScope::Channel,
            },
            RateLimit {
                messages: 1,
                per: Duration::from_secs(6),
                scope: RateScope::Recipient,
            },
        ],
    }
}

/// WhatsApp through Meta's Cloud API.
#[derive(Debug, Clone, Copy, Default)]
pub struct WhatsAppCloud;

fn settings(channel: &ChannelCredentials) -> Option<&WhatsAppCloudConfig> {
    match &channel.config.provider {
        Some(Case::WhatsappCloud(c)) => Some(c),
        _ => None,
    }
}

/// The channel's Graph API version (`v21.0`).
fn version(config: &WhatsAppCloudConfig) -> &str {
    let v = config.graph_api_version.trim();
    if v.is_empty() {
        DEFAULT_GRAPH_VERSION
    } else {
        v
    }
}

/// Whether `v` is a Graph API version: `v` then digits, a dot, digits.
fn is_graph_version(v: &str) -> bool {
    let Some((major, minor)) = v.strip_prefix('v').and_then(|r| r.split_once('.')) else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.len() <= 4 && s.bytes().all(|b| b.is_ascii_digit());
    digits(major) && digits(minor)
}

/// Meta's ids (phone number, WABA): digits only, as they are path segments.
fn check_id(field: &str, value: &str) -> Result<(), CredentialsError> {
    if value.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(CredentialsError::Invalid(format!(
            "{field}: Meta's ids are digits only"
        )))
    }
}

/// The header `Authorization: Bearer {token}`.
fn bearer(token: &str) -> Result<HeaderMap, CredentialsError> {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| CredentialsError::Invalid("access_token: not a valid header value".into()))?;
    value.set_sensitive(true);
    let mut headers = HeaderMap::new();
    headers.insert(http::header::AUTHORIZATION, value);
    Ok(headers)
}

/// Whether `url` is served by `base` (same scheme, host and port).
pub(crate) fn same_origin(url: &url::Url, base: &str) -> bool {
    url::Url::parse(base).is_ok_and(|b| b.origin() == url.origin())
}

/// Hosts Meta serves WhatsApp media from (`lookaside.fbsbx.com`).
fn is_meta_media_host(url: &url::Url) -> bool {
    url.scheme() == "https"
        && url
            .host_str()
            .is_some_and(|h| h == "fbsbx.com" || h.ends_with(".fbsbx.com"))
}

/// Read `{"url": …}` from a media lookup's answer.
pub(crate) fn media_url_of(answer: &crate::http::Answer) -> Result<url::Url, CredentialsError> {
    if !answer.status.is_success() {
        let detail = refusal_detail(answer);
        let error = if answer.status.is_server_error()
            || answer.status == http::StatusCode::TOO_MANY_REQUESTS
        {
            CredentialsError::Unavailable
        } else {
            CredentialsError::Invalid
        };
        return Err(error(format!("media lookup refused: {detail}")));
    }
    let body: Value = serde_json::from_slice(&answer.body)
        .map_err(|_| CredentialsError::Unavailable("media lookup answered without JSON".into()))?;
    let text = body["url"].as_str().ok_or_else(|| {
        CredentialsError::Unavailable("media lookup answered without a url".into())
    })?;
    url::Url::parse(text)
        .map_err(|_| CredentialsError::Unavailable("media lookup answered a bad url".into()))
}

/// A failed `credentials` check.
pub(crate) fn failed_check(detail: &str) -> Check {
    Check {
        name: "credentials".into(),
        ok: false,
        detail: sanitize(detail),
    }
}

/// What a refusal says: the Graph error's code and text when it is one,
/// else its HTTP status.
pub(crate) fn refusal_detail(answer: &crate::http::Answer) -> String {
    meta::graph_error(&answer.body)
        .map(|e| sanitize(&format!("Graph API error {}: {}", e.code, e.message)))
        .unwrap_or_else(|| crate::http::http_error(answer.status))
}

/// The error of a call that got no answer.
pub(crate) fn unanswered(outcome: &SendOutcome) -> CredentialsError {
    let reason = match outcome {
        SendOutcome::Retry(r) | SendOutcome::Reject(r) => r.as_str(),
        SendOutcome::Throttled { reason, .. } => reason.as_str(),
        SendOutcome::Sent { .. } => "no answer",
    };
    CredentialsError::Unavailable(format!("no answer: {reason}"))
}

/// Send every body of `message` with `post`, in order; the last one's id.
pub(crate) async fn send_all<F, Fut>(message: &OutboundRequested, post: F) -> SendOutcome
where
    F: Fn(Value) -> Fut,
    Fut: std::future::Future<Output = Result<Value, SendOutcome>>,
{
    let bodies = match outbound::request_bodies(message) {
        Ok(bodies) => bodies,
        Err(why) => return SendOutcome::Reject(why),
    };
    let mut last = String::new();
    for body in bodies {
        match post(body).await {
            Ok(answer) => last = outbound::message_id(&answer),
            Err(outcome) => return outcome,
        }
    }
    SendOutcome::Sent { external_id: last }
}

#[async_trait]
impl Provider for WhatsAppCloud {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Whatsapp
    }

    fn provider(&self) -> ChannelProvider {
        ChannelProvider::WhatsappCloud
    }

    fn webhook_setup(&self, channel: &ChannelCredentials) -> WebhookSetup {
        WebhookSetup {
            verify_token: settings(channel)
                .map(|c| c.verify_token.clone())
                .unwrap_or_default(),
            header: None,
            subscribe_events: vec!["messages".into()],
        }
    }

    async fn check(&self, http: &reqwest::Client, channel: &ChannelCredentials) -> Vec<Check> {
        let Some(config) = settings(channel) else {
            return vec![failed_check("no WhatsApp Cloud API settings")];
        };
        let headers = match bearer(config.access_token.trim()) {
            Ok(headers) => headers,
            Err(e) => return vec![failed_check(&e.to_string())],
        };
        let url = format!(
            "{}/{}/{}?fields=display_phone_number,verified_name",
            api_base(channel, GRAPH_HOST),
            version(config),
            config.phone_number_id.trim()
        );
        vec![match exchange(http.get(url).headers(headers)).await {
            Ok(answer) if answer.status.is_success() => {
                let body: Value = serde_json::from_slice(&answer.body).unwrap_or_default();
                Check {
                    name: "credentials".into(),
                    ok: true,
                    detail: sanitize(&format!(
                        "the token reaches number {} ({})",
                        body["display_phone_number"].as_str().unwrap_or("?"),
                        body["verified_name"].as_str().unwrap_or("no verified name")
                    )),
                }
            }
            Ok(answer) => failed_check(&refusal_detail(&answer)),
            Err(outcome) => failed_check(&unanswered(&outcome).to_string()),
        }]
    }

    fn capabilities(&self, _: &ChannelCredentials) -> Capabilities {
        capabilities()
    }

    fn connect(
        &self,
        requested: ChannelCredentials,
    ) -> Result<ChannelCredentials, CredentialsError> {
        let Some(given) = settings(&requested) else {
            return Err(CredentialsError::Invalid(
                "whatsapp_cloud: the settings are required".into(),
            ));
        };
        let phone_number_id = required("phone_number_id", &given.phone_number_id)?;
        check_id("phone_number_id", phone_number_id)?;
        check_id("waba_id", given.waba_id.trim())?;
        let access_token = required("access_token", &given.access_token)?;
        let app_secret = required("app_secret", &given.app_secret)?;
        let version = given.graph_api_version.trim();
        if !version.is_empty() && !is_graph_version(version) {
            return Err(CredentialsError::Invalid(format!(
                "graph_api_version: {version:?} is not like v21.0"
            )));
        }
        check_api_base_url(&requested.config.api_base_url)?;
        let verify_token = match given.verify_token.trim() {
            "" => random_token(32)?,
            token => token.to_owned(),
        };
        let config = WhatsAppCloudConfig {
            phone_number_id: phone_number_id.to_owned(),
            waba_id: given.waba_id.trim().to_owned(),
            access_token: access_token.to_owned(),
            app_secret: app_secret.to_owned(),
            verify_token,
            graph_api_version: version.to_owned(),
            display_phone_number: given.display_phone_number.trim().to_owned(),
        };
        let mut connected = requested;
        connected.kind = ChannelKind::Whatsapp;
        connected.provider = ChannelProvider::WhatsappCloud;
        connected.config.api_base_url = connected.config.api_base_url.trim().to_owned();
        connected.config.provider = Some(Case::WhatsappCloud(config));
        Ok(connected)
    }

    fn handshake(
        &self,
        channel: &ChannelCredentials,
        webhook: &Webhook<'_>,
    ) -> Option<HandshakeAnswer> {
        let token = settings(channel).map_or("", |c| c.verify_token.as_str());
        meta::handshake(token, webhook)
    }

    fn verify(
        &self,
        channel: &ChannelCredentials,
        webhook: &Webhook<'_>,
    ) -> Result<(), WebhookError> {
        let secret = settings(channel).map_or("", |c| c.app_secret.as_str());
        meta::verify_signature(secret, webhook)
    }

    fn parse(
        &self,
        channel: &ChannelCredentials,
        webhook: &Webhook<'_>,
    ) -> Result<Inbound, WebhookError> {
        let base = api_base(channel, GRAPH_HOST);
        let version = settings(channel).map_or(DEFAULT_GRAPH_VERSION, version);
        let media_url = |id: &str| format!("{base}/{version}/{id}");
        let cx = inbound::Context {
            channel_id: webhook.channel_id,
            provider: ChannelProvider::WhatsappCloud,
            media_url: &media_url,
            phone_number_id: settings(channel)
                .map(|c| c.phone_number_id.trim())
                .filter(|id| !id.is_empty()),
        };
        let events = inbound::parse_body(webhook.body, &cx).map_err(WebhookError::Malformed)?;
        Ok(Inbound {
            delivery_id: None,
            events,
        })
    }

    fn delivery_state(&self, status: &str) -> Option<DeliveryState> {
        delivery_state(status)
    }

    async fn send(
        &self,
        http: &reqwest::Client,
        channel: &ChannelCredentials,
        message: &OutboundRequested,
    ) -> SendOutcome {
        let Some(config) = settings(channel) else {
            return SendOutcome::Reject("the channel has no WhatsApp Cloud API settings".into());
        };
        let token = config.access_token.trim();
        let phone = config.phone_number_id.trim();
        if token.is_empty() || phone.is_empty() {
            return SendOutcome::Reject(
                "the channel's access_token or phone_number_id is not set".into(),
            );
        }
        let url = format!(
            "{}/{}/{phone}/messages",
            api_base(channel, GRAPH_HOST),
            version(config)
        );
        send_all(message, |body| {
            let url = url.clone();
            async move { meta::graph_post(http, &url, token, &body).await }
        })
        .await
    }

    async fn media_fetch(
        &self,
        http: &reqwest::Client,
        channel: &ChannelCredentials,
        url: &str,
    ) -> Result<MediaFetch, CredentialsError> {
        let config = settings(channel).ok_or_else(|| {
            CredentialsError::Invalid("the channel has no WhatsApp Cloud API settings".into())
        })?;
        let headers = bearer(config.access_token.trim())?;
        let base = api_base(channel, GRAPH_HOST);
        let lookup = url::Url::parse(url)
            .map_err(|_| CredentialsError::Invalid("the media reference is not a URL".into()))?;
        if !same_origin(&lookup, &base) {
            return Err(CredentialsError::Invalid(
                "the media reference is not on the channel's Graph API".into(),
            ));
        }
        let answer = exchange(http.get(lookup).headers(headers.clone()))
            .await
            .map_err(|outcome| unanswered(&outcome))?;
        let file = media_url_of(&answer)?;
        // The token goes only where Meta serves files.
        if !(is_meta_media_host(&file) || same_origin(&file, &base)) {
            return Err(CredentialsError::Invalid(format!(
                "the media URL's host {:?} is not Meta's",
                file.host_str().unwrap_or_default()
            )));
        }
        Ok(MediaFetch {
            url: file.into(),
            headers,
        })
    }

    fn authorize_media_fetch(
        &self,
        channel: &ChannelCredentials,
        url: &str,
    ) -> Result<HeaderMap, CredentialsError> {
        let config = settings(channel).ok_or_else(|| {
            CredentialsError::Invalid("the channel has no WhatsApp Cloud API settings".into())
        })?;
        let Ok(parsed) = url::Url::parse(url) else {
            return Ok(HeaderMap::new());
        };
        // The access token is sent only to Meta (its Graph API, its media
        // hosts), never to a host someone else named.
        if is_meta_media_host(&parsed) || same_origin(&parsed, &api_base(channel, GRAPH_HOST)) {
            bearer(config.access_token.trim())
        } else {
            Ok(HeaderMap::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use telenet_proto::ingress::v1::ChannelConfig;

    fn channel(config: WhatsAppCloudConfig) -> ChannelCredentials {
        ChannelCredentials {
            config: ChannelConfig {
                provider: Some(Case::WhatsappCloud(config)),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn complete() -> WhatsAppCloudConfig {
        WhatsAppCloudConfig {
            phone_number_id: "1122334455667".into(),
            access_token: "EAAG-token".into(),
            app_secret: "app-secret".into(),
            ..Default::default()
        }
    }

    #[test]
    fn connecting_names_each_missing_setting_and_generates_the_verify_token() {
        for (field, broken) in [
            (
                "phone_number_id",
                WhatsAppCloudConfig {
                    phone_number_id: " ".into(),
                    ..complete()
                },
            ),
            (
                "access_token",
                WhatsAppCloudConfig {
                    access_token: String::new(),
                    ..complete()
                },
            ),
            (
                "app_secret",
                WhatsAppCloudConfig {
                    app_secret: String::new(),
                    ..complete()
                },
            ),
            (
                "graph_api_version",
                WhatsAppCloudConfig {
                    graph_api_version: "21".into(),
                    ..complete()
                },
            ),
            (
                "phone_number_id",
                WhatsAppCloudConfig {
                    phone_number_id: "12/../me".into(),
                    ..complete()
                },
            ),
        ] {
            let err = WhatsAppCloud
                .connect(channel(broken))
                .expect_err(field)
                .to_string();
            assert!(err.starts_with(field), "{field}: {err}");
        }
        let err = WhatsAppCloud
            .connect(ChannelCredentials::default())
            .expect_err("no settings")
            .to_string();
        assert!(err.contains("whatsapp_cloud"), "{err}");
        let mut bad_base = channel(complete());
        bad_base.config.api_base_url = "http://graph.example".into();
        assert!(WhatsAppCloud.connect(bad_base).is_err());

        let connected = WhatsAppCloud
            .connect(channel(WhatsAppCloudConfig {
                graph_api_version: "v22.0".into(),
                ..complete()
            }))
            .expect("connects");
        assert_eq!(connected.kind, ChannelKind::Whatsapp);
        assert_eq!(connected.provider, ChannelProvider::WhatsappCloud);
        let config = settings(&connected).expect("settings");
        assert_eq!(config.verify_token.len(), 32);
        assert_eq!(config.graph_api_version, "v22.0");
        let setup = WhatsAppCloud.webhook_setup(&connected);
        assert_eq!(setup.verify_token, config.verify_token);
        assert_eq!(setup.subscribe_events, ["messages"]);
        // A verify token already set is kept.
        let again = WhatsAppCloud.connect(connected.clone()).expect("connects");
        assert_eq!(
            settings(&again).map(|c| c.verify_token.clone()),
            Some(config.verify_token.clone())
        );
    }

    #[test]
    fn graph_versions_look_like_v21_0() {
        assert!(is_graph_version("v21.0"));
        assert!(is_graph_version("v9.10"));
        for bad in ["21.0", "v21", "v.0", "v21.x", "v21.0/../x"] {
            assert!(!is_graph_version(bad), "{bad}");
        }
    }

    #[test]
    fn the_token_is_only_offered_to_metas_hosts() {
        let ch = channel(complete());
        let at = |url: &str| {
            WhatsAppCloud
                .authorize_media_fetch(&ch, url)
                .expect("headers")
        };
        let lookaside = at("https://lookaside.fbsbx.com/whatsapp_business/attachments/?mid=1");
        assert_eq!(
            lookaside.get("authorization").and_then(|v| v.to_str().ok()),
            Some("Bearer EAAG-token")
        );
        assert!(!at("https://graph.facebook.com/v21.0/123").is_empty());
        assert!(at("https://evil.example/fbsbx.com").is_empty());
        assert!(at("http://lookaside.fbsbx.com/x").is_empty());
    }
}
