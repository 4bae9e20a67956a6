//! LINE Messaging API: an official account's bot.
//!
//! - In: LINE POSTs `{destination, events[]}` to the webhook URL entered in
//!   the LINE Developers console, signed with `X-Line-Signature` =
//!   base64 HMAC-SHA256(channel secret, raw body) ([`inbound`]). The
//!   console's "Verify" button sends an empty `events` array: it verifies
//!   and parses into no events.
//! - Out: push messages, `POST /v2/bot/message/push` with the channel
//!   access token, at most five message objects per request, each request
//!   with an `X-Line-Retry-Key` derived from the message id so a retry of
//!   the same message is recognised by LINE ([`outbound`]).
//! - Files a contact sends are downloaded from
//!   `https://api-data.line.me/v2/bot/message/{id}/content` with the
//!   access token; files LINE only links to (`contentProvider.type ==
//!   external`) are fetched from their own URL, without credentials.
//! - LINE gives bots no delivery or read receipts: a LINE channel reports
//!   no statuses.

pub mod inbound;
pub mod outbound;

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use http::{HeaderMap, HeaderValue};
use telenet_proto::common::v1::{AttachmentKind, ChannelKind, ChannelProvider};
use telenet_proto::dispatch::v1::DeliveryState;
use telenet_proto::events::v1::OutboundRequested;
use telenet_proto::ingress::v1::LineConfig;
use telenet_proto::ingress::v1::channel_config::Provider as Case;
use telenet_signing::{hmac_sha256, same_secret};

use crate::config::{check_api_base_url, required};
use crate::http::{exchange, sanitize};
use crate::{
    Capabilities, ChannelCredentials, Check, CredentialsError, Inbound, MediaRule, Overflow,
    Provider, RateLimit, RateScope, SendOutcome, TextLimit, TextUnit, VoiceNotes, Webhook,
    WebhookError,
};

/// LINE's API host.
pub const API_HOST: &str = "https://api.line.me";
/// LINE's host for message content (files contacts send).
pub const CONTENT_HOST: &str = "https://api-data.line.me";
/// The header carrying a webhook's signature.
pub const SIGNATURE_HEADER: &str = "x-line-signature";
/// The longest text message object. LINE counts "characters"; counting
/// UTF-16 code units (an emoji outside the BMP counts two) never exceeds
/// it, whichever way LINE counts.
pub const TEXT_LIMIT: TextLimit = TextLimit {
    max: 5000,
    unit: TextUnit::Utf16,
    overflow: Overflow::Split,
};
/// The voice-note format LINE audio messages take (M4A).
pub const VOICE_TYPE: &str = "audio/mp4";
/// LINE's largest audio and video file.
const MAX_AV_BYTES: u64 = 200 * 1024 * 1024;
/// LINE's largest image sent by URL.
const MAX_IMAGE_BYTES: u64 = 10 * 1024 * 1024;

/// The LINE Messaging API provider.
#[derive(Debug, Clone, Copy, Default)]
pub struct Line;

/// The channel's LINE settings, if it has them.
fn settings(channel: &ChannelCredentials) -> Option<&LineConfig> {
    match &channel.config.provider {
        Some(Case::Line(config)) => Some(config),
        _ => None,
    }
}

/// The channel secret (signs webhooks), when set.
fn channel_secret(channel: &ChannelCredentials) -> Option<&str> {
    settings(channel)
        .map(|c| c.channel_secret.as_str())
        .filter(|s| !s.trim().is_empty())
}

/// The channel access token (authenticates calls), when set.
fn access_token(channel: &ChannelCredentials) -> Option<&str> {
    settings(channel)
        .map(|c| c.channel_access_token.as_str())
        .filter(|s| !s.trim().is_empty())
}

/// Where the channel's API calls go (`api_base_url`, else LINE's API
/// host).
pub fn api_base(channel: &ChannelCredentials) -> String {
    crate::config::api_base(channel, API_HOST)
}

/// Where the channel's message content is downloaded from
/// (`api_base_url`, else LINE's content host).
pub fn content_base(channel: &ChannelCredentials) -> String {
    crate::config::api_base(channel, CONTENT_HOST)
}

/// The URL of the content of message `message_id`, as attachments name it.
pub fn content_url(channel: &ChannelCredentials, message_id: &str) -> String {
    format!(
        "{}/v2/bot/message/{}/content",
        content_base(channel),
        url::form_urlencoded::byte_serialize(message_id.as_bytes()).collect::<String>()
    )
}

/// base64 HMAC-SHA256(`secret`, `body`): the `X-Line-Signature` of `body`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(hmac_sha256(secret.as_bytes(), body))
}

/// Check `X-Line-Signature` over the raw body, in constant time.
pub fn verify_signature(secret: &str, webhook: &Webhook<'_>) -> Result<(), WebhookError> {
    let header = webhook
        .header(SIGNATURE_HEADER)
        .ok_or(WebhookError::MissingHeader("X-Line-Signature"))?;
    let given = base64::engine::general_purpose::STANDARD
        .decode(header.trim())
        .map_err(|_| WebhookError::BadSignature("X-Line-Signature is not base64".into()))?;
    if same_secret(&given, &hmac_sha256(secret.as_bytes(), webhook.body)) {
        Ok(())
    } else {
        Err(WebhookError::BadSignature(
            "X-Line-Signature does not match the body under the channel secret".into(),
        ))
    }
}

/// The `Authorization` header of calls with the channel's access token.
fn bearer(token: &str) -> Result<HeaderValue, CredentialsError> {
    HeaderValue::from_str(&format!("Bearer {}", token.trim())).map_err(|_| {
        CredentialsError::Invalid("channel_access_token: not a valid header value".into())
    })
}

#[async_trait]
impl Provider for Line {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Line
    }

    fn provider(&self) -> ChannelProvider {
        ChannelProvider::Line
    }

    fn capabilities(&self, _: &ChannelCredentials) -> Capabilities {
        Capabilities {
            text: Some(TEXT_LIMIT),
            media: vec![
                MediaRule {
                    kind: AttachmentKind::Image,
                    mime_types: vec!["image/jpeg".into(), "image/png".into()],
                    max_bytes: Some(MAX_IMAGE_BYTES),
                },
                MediaRule {
                    kind: AttachmentKind::Audio,
                    mime_types: vec![VOICE_TYPE.into(), "audio/x-m4a".into()],
                    max_bytes: Some(MAX_AV_BYTES),
                },
                // Videos and other files go out as a text with their link
                // (LINE bots cannot send files, and a video needs a
                // preview image we do not have).
                MediaRule {
                    kind: AttachmentKind::Video,
                    mime_types: Vec::new(),
                    max_bytes: None,
                },
                MediaRule {
                    kind: AttachmentKind::File,
                    mime_types: Vec::new(),
                    max_bytes: None,
                },
            ],
            voice: VoiceNotes {
                accepted_types: vec![VOICE_TYPE.into()],
                max_bytes: Some(MAX_AV_BYTES),
                max_duration: None,
            },
            reply_window: None,
            rate_limits: vec![RateLimit {
                messages: 2000,
                per: Duration::from_secs(1),
                scope: RateScope::Channel,
            }],
        }
    }

    fn connect(
        &self,
        requested: ChannelCredentials,
    ) -> Result<ChannelCredentials, CredentialsError> {
        check_api_base_url(&requested.config.api_base_url)?;
        let Some(given) = settings(&requested) else {
            return Err(CredentialsError::Invalid(
                "line: the channel's settings are not LINE settings".into(),
            ));
        };
        let line = LineConfig {
            line_channel_id: given.line_channel_id.trim().to_owned(),
            channel_secret: required("channel_secret", &given.channel_secret)?.to_owned(),
            channel_access_token: required("channel_access_token", &given.channel_access_token)?
                .to_owned(),
        };
        bearer(&line.channel_access_token)?;
        let mut config = requested.config.clone();
        config.provider = Some(Case::Line(line));
        Ok(ChannelCredentials {
            kind: ChannelKind::Line,
            provider: ChannelProvider::Line,
            config,
            ..requested
        })
    }

    fn verify(
        &self,
        channel: &ChannelCredentials,
        webhook: &Webhook<'_>,
    ) -> Result<(), WebhookError> {
        let secret = channel_secret(channel)
            .ok_or_else(|| WebhookError::Credentials("the channel secret is not set".into()))?;
        verify_signature(secret, webhook)
    }

    fn parse(
        &self,
        channel: &ChannelCredentials,
        webhook: &Webhook<'_>,
    ) -> Result<Inbound, WebhookError> {
        let events =
            inbound::parse_events(webhook.body, webhook.channel_id, &content_base(channel))
                .map_err(WebhookError::Malformed)?;
        // `webhookEventId` names one event, not the delivery (a delivery
        // may batch several, and a redelivery may batch them otherwise):
        // ingress de-duplicates on each event's message id instead.
        Ok(Inbound {
            delivery_id: None,
            events,
        })
    }

    fn delivery_state(&self, _: &str) -> Option<DeliveryState> {
        // LINE sends bots no delivery or read receipts.
        None
    }

    async fn check(&self, http: &reqwest::Client, channel: &ChannelCredentials) -> Vec<Check> {
        vec![outbound::check_bot_info(http, channel).await]
    }

    async fn send(
        &self,
        http: &reqwest::Client,
        channel: &ChannelCredentials,
        message: &OutboundRequested,
    ) -> SendOutcome {
        let Some(token) = access_token(channel) else {
            return SendOutcome::Reject("the channel access token is not set".into());
        };
        let Ok(auth) = bearer(token) else {
            return SendOutcome::Reject("the channel access token is not a valid header".into());
        };
        outbound::push(http, &api_base(channel), auth, message).await
    }

    fn authorize_media_fetch(
        &self,
        channel: &ChannelCredentials,
        url: &str,
    ) -> Result<HeaderMap, CredentialsError> {
        let mut headers = HeaderMap::new();
        // The token goes to LINE's content endpoint only, never to the
        // external URLs some messages link to.
        let prefix = format!("{}/v2/bot/message/", content_base(channel));
        if url.starts_with(&prefix) && url.ends_with("/content") {
            let token = access_token(channel)
                .ok_or_else(|| CredentialsError::Invalid("channel_access_token: not set".into()))?;
            headers.insert(http::header::AUTHORIZATION, bearer(token)?);
        }
        Ok(headers)
    }
}

/// LINE's error body: `{message, details: [{message, property}]}`, as
/// one sanitised line.
pub(crate) fn error_message(body: &[u8]) -> Option<String> {
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    let message = json.get("message")?.as_str()?;
    let details: Vec<String> = json
        .get("details")
        .and_then(|d| d.as_array())
        .map(|list| {
            list.iter()
                .filter_map(|d| {
                    let text = d.get("message")?.as_str()?;
                    Some(match d.get("property").and_then(|p| p.as_str()) {
                        Some(p) => format!("{p}: {text}"),
                        None => text.to_owned(),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Some(sanitize(&if details.is_empty() {
        message.to_owned()
    } else {
        format!("{message} ({})", details.join("; "))
    }))
}

/// GET `url` with the token, for [`Provider::check`].
async fn get_with_token(
    http: &reqwest::Client,
    url: &str,
    auth: HeaderValue,
) -> Result<crate::http::Answer, SendOutcome> {
    exchange(http.get(url).header(http::header::AUTHORIZATION, auth)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use telenet_proto::ingress::v1::ChannelConfig;

    pub(crate) fn channel(secret: &str, token: &str) -> ChannelCredentials {
        ChannelCredentials {
            kind: ChannelKind::Line,
            provider: ChannelProvider::Line,
            config: ChannelConfig {
                provider: Some(Case::Line(LineConfig {
                    line_channel_id: "1650000000".into(),
                    channel_secret: secret.into(),
                    channel_access_token: token.into(),
                })),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn connecting_requires_the_secret_and_the_token_by_name() {
        let connected = Line.connect(channel(" s3cret ", "tok")).expect("connects");
        assert_eq!(connected.kind, ChannelKind::Line);
        assert_eq!(channel_secret(&connected), Some("s3cret"));
        for (c, needle) in [
            (channel("", "tok"), "channel_secret: required"),
            (channel("s", " "), "channel_access_token: required"),
            (ChannelCredentials::default(), "not LINE settings"),
        ] {
            let Err(CredentialsError::Invalid(why)) = Line.connect(c) else {
                panic!("{needle}: must be refused");
            };
            assert!(why.contains(needle), "{why}");
        }
        let mut bad_base = channel("s", "t");
        bad_base.config.api_base_url = "http://example.com".into();
        assert!(Line.connect(bad_base).is_err());
    }

    #[test]
    fn the_token_goes_to_lines_content_endpoint_only() {
        let c = channel("s", "tok");
        let content = content_url(&c, "325708");
        assert_eq!(
            content,
            "https://api-data.line.me/v2/bot/message/325708/content"
        );
        let headers = Line.authorize_media_fetch(&c, &content).expect("headers");
        assert_eq!(
            headers.get("authorization").and_then(|v| v.to_str().ok()),
            Some("Bearer tok")
        );
        for elsewhere in [
            "https://example.com/a.jpg",
            "https://api-data.line.me.evil.test/v2/bot/message/1/content",
        ] {
            assert!(
                Line.authorize_media_fetch(&c, elsewhere)
                    .expect("headers")
                    .is_empty(),
                "{elsewhere}"
            );
        }
        let mut emulated = c.clone();
        emulated.config.api_base_url = "http://127.0.0.1:9".into();
        assert_eq!(api_base(&emulated), "http://127.0.0.1:9");
        assert_eq!(
            content_url(&emulated, "1"),
            "http://127.0.0.1:9/v2/bot/message/1/content"
        );
    }

    #[test]
    fn line_reports_no_statuses() {
        for name in ["sent", "delivered", "read", ""] {
            assert_eq!(Line.delivery_state(name), None);
        }
    }

    #[test]
    fn errors_read_lines_message_and_details() {
        let body = br#"{"message":"The request body has 1 error(s)","details":[{"message":"May not be empty","property":"messages[0].text"}]}"#;
        assert_eq!(
            error_message(body).as_deref(),
            Some("The request body has 1 error(s) (messages[0].text: May not be empty)")
        );
        assert_eq!(error_message(b"<html>"), None);
    }
}
