//! Viber REST bot API.
//!
//! - Setup: TELENET registers the channel's webhook URL itself
//!   (`POST /pa/set_webhook`, [`Provider::register_webhook`]). While
//!   answering that call Viber POSTs an `event: "webhook"` callback to the
//!   URL, signed like every callback: it verifies and parses into no
//!   events, so ingress answers it 200 and the registration succeeds.
//! - In: callbacks signed with `X-Viber-Content-Signature` = hex
//!   HMAC-SHA256(auth token, raw body) ([`inbound`]): messages, and the
//!   `delivered`, `seen` and `failed` receipts of ours.
//! - Out: `POST /pa/send_message` with `X-Viber-Auth-Token`, one request
//!   per text part and per file ([`outbound`]).
//! - Files contacts send are on public URLs: fetched without credentials.
//!
//! Viber's `message_token` is a 64-bit integer beyond the 2^53 a double
//! holds exactly: it is read as an integer (or as its text) and kept as
//! its decimal text, never through a float.

pub mod inbound;
pub mod outbound;

use std::time::Duration;

use async_trait::async_trait;
use telenet_proto::common::v1::{AttachmentKind, ChannelKind, ChannelProvider};
use telenet_proto::dispatch::v1::DeliveryState;
use telenet_proto::events::v1::OutboundRequested;
use telenet_proto::ingress::v1::ViberConfig;
use telenet_proto::ingress::v1::channel_config::Provider as Case;
use telenet_signing::{hmac_sha256, same_secret};

use crate::config::{check_api_base_url, required};
use crate::{
    Capabilities, ChannelCredentials, Check, CredentialsError, Inbound, MediaRule, Overflow,
    Provider, RateLimit, RateScope, SendOutcome, TextLimit, TextUnit, VoiceNotes, Webhook,
    WebhookError, WebhookSetup,
};

/// Viber's API host.
pub const API_HOST: &str = "https://chatapi.viber.com";
/// The header carrying a callback's signature.
pub const SIGNATURE_HEADER: &str = "x-viber-content-signature";
/// The header authenticating calls to Viber.
pub const AUTH_HEADER: &str = "x-viber-auth-token";
/// The longest text message.
pub const TEXT_LIMIT: TextLimit = TextLimit {
    max: 7000,
    unit: TextUnit::Chars,
    overflow: Overflow::Split,
};
/// The longest sender name.
pub const SENDER_NAME_CHARS: usize = 28;
/// The callbacks TELENET subscribes to (`message` is always sent).
pub const EVENT_TYPES: [&str; 6] = [
    "delivered",
    "seen",
    "failed",
    "subscribed",
    "unsubscribed",
    "conversation_started",
];
/// Voice notes go out as files (Viber has no voice message for bots), in
/// one of these formats.
pub const VOICE_TYPES: [&str; 2] = ["audio/mp4", "audio/mpeg"];

/// The Viber bot provider.
#[derive(Debug, Clone, Copy, Default)]
pub struct Viber;

/// The channel's Viber settings, if it has them.
fn settings(channel: &ChannelCredentials) -> Option<&ViberConfig> {
    match &channel.config.provider {
        Some(Case::Viber(config)) => Some(config),
        _ => None,
    }
}

/// The bot's auth token, when set.
fn auth_token(channel: &ChannelCredentials) -> Option<&str> {
    settings(channel)
        .map(|c| c.auth_token.as_str())
        .filter(|s| !s.trim().is_empty())
}

/// Where the channel's API calls go (`api_base_url`, else Viber's host).
pub fn api_base(channel: &ChannelCredentials) -> String {
    crate::config::api_base(channel, API_HOST)
}

/// Hex HMAC-SHA256(`auth_token`, `body`): the `X-Viber-Content-Signature`
/// of `body`.
pub fn signature(auth_token: &str, body: &[u8]) -> String {
    hex::encode(hmac_sha256(auth_token.as_bytes(), body))
}

/// Check `X-Viber-Content-Signature` over the raw body, in constant time.
pub fn verify_signature(auth_token: &str, webhook: &Webhook<'_>) -> Result<(), WebhookError> {
    let header = webhook
        .header(SIGNATURE_HEADER)
        .ok_or(WebhookError::MissingHeader("X-Viber-Content-Signature"))?;
    let given = hex::decode(header.trim().to_ascii_lowercase())
        .map_err(|_| WebhookError::BadSignature("X-Viber-Content-Signature is not hex".into()))?;
    if same_secret(&given, &hmac_sha256(auth_token.as_bytes(), webhook.body)) {
        Ok(())
    } else {
        Err(WebhookError::BadSignature(
            "X-Viber-Content-Signature does not match the body under the auth token".into(),
        ))
    }
}

/// The delivery state a Viber receipt callback means.
fn delivery_state(event: &str) -> Option<DeliveryState> {
    match event {
        "delivered" => Some(DeliveryState::Delivered),
        "seen" => Some(DeliveryState::Read),
        "failed" => Some(DeliveryState::Failed),
        _ => None,
    }
}

/// A sender name Viber takes: 1 to 28 characters.
fn check_sender_name(name: &str) -> Result<String, CredentialsError> {
    let name = required("sender_name", name)?;
    if name.chars().count() > SENDER_NAME_CHARS {
        return Err(CredentialsError::Invalid(format!(
            "sender_name: at most {SENDER_NAME_CHARS} characters"
        )));
    }
    Ok(name.to_owned())
}

/// An avatar URL: empty, or an absolute https URL.
fn check_avatar(url: &str) -> Result<String, CredentialsError> {
    let url = url.trim();
    if url.is_empty() {
        return Ok(String::new());
    }
    match url::Url::parse(url) {
        Ok(parsed) if parsed.scheme() == "https" && parsed.host().is_some() => Ok(url.to_owned()),
        _ => Err(CredentialsError::Invalid(
            "sender_avatar_url: must be an https URL".into(),
        )),
    }
}

#[async_trait]
impl Provider for Viber {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Viber
    }

    fn provider(&self) -> ChannelProvider {
        ChannelProvider::Viber
    }

    fn webhook_setup(&self, _: &ChannelCredentials) -> WebhookSetup {
        WebhookSetup {
            subscribe_events: EVENT_TYPES.iter().map(|e| (*e).to_owned()).collect(),
            ..WebhookSetup::default()
        }
    }

    fn registers_webhook(&self) -> bool {
        true
    }

    async fn register_webhook(
        &self,
        http: &reqwest::Client,
        channel: &ChannelCredentials,
        webhook_url: &str,
    ) -> Result<bool, CredentialsError> {
        let token = auth_token(channel)
            .ok_or_else(|| CredentialsError::Invalid("auth_token: required".into()))?;
        outbound::set_webhook(http, &api_base(channel), token, webhook_url).await?;
        Ok(true)
    }

    async fn check(&self, http: &reqwest::Client, channel: &ChannelCredentials) -> Vec<Check> {
        vec![outbound::check_account_info(http, channel).await]
    }

    fn capabilities(&self, _: &ChannelCredentials) -> Capabilities {
        Capabilities {
            text: Some(TEXT_LIMIT),
            media: vec![
                MediaRule {
                    kind: AttachmentKind::Image,
                    mime_types: vec!["image/jpeg".into(), "image/png".into(), "image/gif".into()],
                    max_bytes: Some(1024 * 1024),
                },
                MediaRule {
                    kind: AttachmentKind::Video,
                    mime_types: vec!["video/mp4".into()],
                    max_bytes: Some(26 * 1024 * 1024),
                },
                MediaRule {
                    kind: AttachmentKind::File,
                    mime_types: Vec::new(),
                    max_bytes: Some(outbound::MAX_FILE_BYTES),
                },
            ],
            voice: VoiceNotes {
                accepted_types: VOICE_TYPES.iter().map(|t| (*t).to_owned()).collect(),
                max_bytes: Some(outbound::MAX_FILE_BYTES),
                max_duration: None,
            },
            reply_window: None,
            rate_limits: vec![RateLimit {
                // Without a reply from the contact (status 12 beyond).
                messages: 100,
                per: Duration::from_secs(3600),
                scope: RateScope::Recipient,
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
                "viber: the channel's settings are not Viber settings".into(),
            ));
        };
        let viber = ViberConfig {
            auth_token: required("auth_token", &given.auth_token)?.to_owned(),
            sender_name: check_sender_name(&given.sender_name)?,
            sender_avatar_url: check_avatar(&given.sender_avatar_url)?,
        };
        if http::HeaderValue::from_str(&viber.auth_token).is_err() {
            return Err(CredentialsError::Invalid(
                "auth_token: not a valid header value".into(),
            ));
        }
        let mut config = requested.config.clone();
        config.provider = Some(Case::Viber(viber));
        Ok(ChannelCredentials {
            kind: ChannelKind::Viber,
            provider: ChannelProvider::Viber,
            config,
            ..requested
        })
    }

    fn verify(
        &self,
        channel: &ChannelCredentials,
        webhook: &Webhook<'_>,
    ) -> Result<(), WebhookError> {
        let token = auth_token(channel)
            .ok_or_else(|| WebhookError::Credentials("the auth token is not set".into()))?;
        verify_signature(token, webhook)
    }

    fn parse(
        &self,
        _: &ChannelCredentials,
        webhook: &Webhook<'_>,
    ) -> Result<Inbound, WebhookError> {
        let events = inbound::parse_callback(webhook.body, webhook.channel_id)
            .map_err(WebhookError::Malformed)?;
        // Viber names no deliveries: ingress de-duplicates on the message
        // tokens.
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
        let (Some(token), Some(config)) = (auth_token(channel), settings(channel)) else {
            return SendOutcome::Reject("the auth token is not set".into());
        };
        outbound::send_message(http, &api_base(channel), token, config, message).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use telenet_proto::ingress::v1::ChannelConfig;

    fn channel(token: &str, name: &str, avatar: &str) -> ChannelCredentials {
        ChannelCredentials {
            config: ChannelConfig {
                provider: Some(Case::Viber(ViberConfig {
                    auth_token: token.into(),
                    sender_name: name.into(),
                    sender_avatar_url: avatar.into(),
                })),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn connecting_checks_the_token_the_sender_name_and_the_avatar() {
        let connected = Viber
            .connect(channel(" tok ", " Shop ", ""))
            .expect("connects");
        assert_eq!(connected.kind, ChannelKind::Viber);
        assert_eq!(connected.provider, ChannelProvider::Viber);
        assert_eq!(auth_token(&connected), Some("tok"));
        assert_eq!(
            settings(&connected).map(|c| c.sender_name.as_str()),
            Some("Shop")
        );
        assert!(
            Viber
                .connect(channel("t", &"é".repeat(28), "https://cdn.test/a.png"))
                .is_ok()
        );
        for (c, needle) in [
            (channel("", "Shop", ""), "auth_token: required"),
            (channel("t", "", ""), "sender_name: required"),
            (channel("t", &"x".repeat(29), ""), "sender_name: at most 28"),
            (
                channel("t", "Shop", "http://cdn.test/a.png"),
                "sender_avatar_url",
            ),
            (ChannelCredentials::default(), "not Viber settings"),
        ] {
            let Err(CredentialsError::Invalid(why)) = Viber.connect(c) else {
                panic!("{needle}: must be refused");
            };
            assert!(why.contains(needle), "{why}");
        }
    }

    #[test]
    fn receipts_map_to_delivery_states() {
        assert_eq!(delivery_state("seen"), Some(DeliveryState::Read));
        assert_eq!(delivery_state("delivered"), Some(DeliveryState::Delivered));
        assert_eq!(delivery_state("failed"), Some(DeliveryState::Failed));
        assert_eq!(delivery_state("subscribed"), None);
    }

    #[test]
    fn the_webhook_subscribes_to_receipts_and_subscriptions() {
        let setup = Viber.webhook_setup(&ChannelCredentials::default());
        assert_eq!(setup.subscribe_events.len(), 6);
        assert!(setup.subscribe_events.contains(&"seen".to_owned()));
    }
}
