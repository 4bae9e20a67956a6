//! Facebook Messenger: one Facebook Page's conversations through Meta's
//! Messenger Platform.
//!
//! - Webhooks: Meta's subscription handshake with the channel's verify
//!   token, then `POST`s signed `X-Hub-Signature-256` with the app secret
//!   ([`crate::meta`]), `object: "page"`, read by [`messaging`] (shared
//!   with Instagram).
//! - Sending: `POST {graph}/{version}/{page_id}/messages` with the Page
//!   access token as a bearer token ([`send`]).
//! - Files Meta announces are public CDN URLs: fetched without credentials.
//!
//! Postbacks (a contact tapping a button) are acknowledged and give no
//! message: TELENET sends no buttons, so only a Page's other tools cause
//! them.

pub mod messaging;
pub mod send;

use std::time::Duration;

use async_trait::async_trait;
use telenet_proto::common::v1::{AttachmentKind, ChannelKind, ChannelProvider};
use telenet_proto::dispatch::v1::DeliveryState;
use telenet_proto::events::v1::OutboundRequested;
use telenet_proto::ingress::v1::MessengerConfig;
use telenet_proto::ingress::v1::channel_config::Provider as Case;

use crate::config::{api_base, check_api_base_url, random_token, required};
use crate::meta::{DEFAULT_GRAPH_VERSION, GRAPH_HOST};
use crate::{
    Capabilities, ChannelCredentials, Check, CredentialsError, HandshakeAnswer, Inbound, MediaRule,
    Overflow, Provider, RateLimit, RateScope, SendOutcome, TextLimit, TextUnit, VoiceNotes,
    Webhook, WebhookError, WebhookSetup,
};

use messaging::Product;

/// The Messenger provider.
#[derive(Debug, Clone, Copy, Default)]
pub struct Messenger;

/// The webhook fields a Page app subscribes to.
pub const SUBSCRIBE_EVENTS: [&str; 6] = [
    "messages",
    "messaging_postbacks",
    "message_deliveries",
    "message_reads",
    "message_echoes",
    "message_reactions",
];

/// The longest text of one message, in characters.
pub const MAX_TEXT_CHARS: usize = 2000;

/// Largest file sent by URL, and largest image.
const MAX_FILE_BYTES: u64 = 25 * 1024 * 1024;
const MAX_IMAGE_BYTES: u64 = 8 * 1024 * 1024;

/// The length of a generated verify token.
const VERIFY_TOKEN_LEN: usize = 32;

const PRODUCT: Product = Product {
    object: "page",
    kind: ChannelKind::Messenger,
    provider: ChannelProvider::Messenger,
    audio_is_voice: false,
};

/// The channel's Messenger settings, or the empty ones.
fn config(channel: &ChannelCredentials) -> MessengerConfig {
    match &channel.config.provider {
        Some(Case::Messenger(c)) => c.clone(),
        _ => MessengerConfig::default(),
    }
}

/// Text limit, files, voice notes, window and rate limits of Messenger and
/// Instagram channels (they differ in the text limit and the file types).
pub(crate) fn capabilities(
    text: TextLimit,
    media: Vec<MediaRule>,
    voice_types: &[&str],
    use_human_agent_tag: bool,
) -> Capabilities {
    Capabilities {
        text: Some(text),
        media,
        voice: VoiceNotes {
            accepted_types: voice_types.iter().map(|t| (*t).to_owned()).collect(),
            max_bytes: Some(MAX_FILE_BYTES),
            max_duration: None,
        },
        reply_window: Some(if use_human_agent_tag {
            send::HUMAN_AGENT_WINDOW
        } else {
            send::STANDARD_WINDOW
        }),
        // 300 calls a second for text, 10 for audio and video; each send
        // is one call. Both are counted over the channel (its Page or
        // account).
        rate_limits: vec![
            RateLimit {
                messages: 300,
                per: Duration::from_secs(1),
                scope: RateScope::Channel,
            },
            RateLimit {
                messages: 10,
                per: Duration::from_secs(1),
                scope: RateScope::Channel,
            },
        ],
    }
}

/// A media rule of `kind` up to `max_bytes`, for `mime_types` (empty: any).
pub(crate) fn rule(kind: AttachmentKind, mime_types: &[&str], max_bytes: u64) -> MediaRule {
    MediaRule {
        kind,
        mime_types: mime_types.iter().map(|t| (*t).to_owned()).collect(),
        max_bytes: Some(max_bytes),
    }
}

/// A generated verify token when `given` is empty, else `given`.
pub(crate) fn verify_token(given: &str) -> Result<String, CredentialsError> {
    if given.trim().is_empty() {
        random_token(VERIFY_TOKEN_LEN)
    } else {
        Ok(given.trim().to_owned())
    }
}

/// The answer to a subscription handshake, with `verify_token`.
pub(crate) fn handshake(verify_token: &str, webhook: &Webhook<'_>) -> Option<HandshakeAnswer> {
    crate::meta::handshake(verify_token, webhook)
}

#[async_trait]
impl Provider for Messenger {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Messenger
    }

    fn provider(&self) -> ChannelProvider {
        ChannelProvider::Messenger
    }

    fn webhook_setup(&self, channel: &ChannelCredentials) -> WebhookSetup {
        WebhookSetup {
            verify_token: config(channel).verify_token,
            header: None,
            subscribe_events: SUBSCRIBE_EVENTS.iter().map(|e| (*e).to_owned()).collect(),
        }
    }

    fn capabilities(&self, channel: &ChannelCredentials) -> Capabilities {
        let any = &[][..];
        capabilities(
            TextLimit {
                max: MAX_TEXT_CHARS,
                unit: TextUnit::Chars,
                overflow: Overflow::Split,
            },
            vec![
                rule(AttachmentKind::Image, any, MAX_IMAGE_BYTES),
                rule(AttachmentKind::Video, any, MAX_FILE_BYTES),
                rule(AttachmentKind::Audio, any, MAX_FILE_BYTES),
                rule(AttachmentKind::File, any, MAX_FILE_BYTES),
            ],
            &["audio/mp4", "audio/mpeg"],
            config(channel).use_human_agent_tag,
        )
    }

    fn connect(
        &self,
        requested: ChannelCredentials,
    ) -> Result<ChannelCredentials, CredentialsError> {
        let Some(Case::Messenger(given)) = &requested.config.provider else {
            return Err(CredentialsError::Invalid(
                "messenger: the channel's settings are not Messenger settings".into(),
            ));
        };
        check_api_base_url(&requested.config.api_base_url)?;
        let settings = MessengerConfig {
            page_id: required("page_id", &given.page_id)?.to_owned(),
            page_access_token: required("page_access_token", &given.page_access_token)?.to_owned(),
            app_secret: required("app_secret", &given.app_secret)?.to_owned(),
            verify_token: verify_token(&given.verify_token)?,
            ..given.clone()
        };
        let mut connected = requested;
        connected.kind = ChannelKind::Messenger;
        connected.provider = ChannelProvider::Messenger;
        connected.config.provider = Some(Case::Messenger(settings));
        Ok(connected)
    }

    fn handshake(
        &self,
        channel: &ChannelCredentials,
        webhook: &Webhook<'_>,
    ) -> Option<HandshakeAnswer> {
        handshake(&config(channel).verify_token, webhook)
    }

    fn verify(
        &self,
        channel: &ChannelCredentials,
        webhook: &Webhook<'_>,
    ) -> Result<(), WebhookError> {
        crate::meta::verify_signature(config(channel).app_secret.trim(), webhook)
    }

    fn parse(
        &self,
        channel: &ChannelCredentials,
        webhook: &Webhook<'_>,
    ) -> Result<Inbound, WebhookError> {
        Ok(Inbound {
            delivery_id: None,
            events: messaging::parse_for_app(
                PRODUCT,
                webhook.channel_id,
                &config(channel).app_id,
                webhook.body,
            )?,
        })
    }

    fn delivery_state(&self, status: &str) -> Option<DeliveryState> {
        messaging::delivery_state(status)
    }

    async fn check(&self, http: &reqwest::Client, channel: &ChannelCredentials) -> Vec<Check> {
        let settings = config(channel);
        let url = format!(
            "{}/{DEFAULT_GRAPH_VERSION}/{}?fields=id,name",
            api_base(channel, GRAPH_HOST),
            settings.page_id.trim()
        );
        vec![send::check_profile(http, &url, settings.page_access_token.trim(), "name").await]
    }

    async fn send(
        &self,
        http: &reqwest::Client,
        channel: &ChannelCredentials,
        message: &OutboundRequested,
    ) -> SendOutcome {
        let settings = config(channel);
        let (Ok(page_id), Ok(token)) = (
            required("page_id", &settings.page_id),
            required("page_access_token", &settings.page_access_token),
        ) else {
            return SendOutcome::Reject(
                "the channel's page_id or page_access_token is not set".into(),
            );
        };
        let url = format!(
            "{}/{DEFAULT_GRAPH_VERSION}/{page_id}/messages",
            api_base(channel, GRAPH_HOST)
        );
        let limit = self.capabilities(channel).text.unwrap_or(TextLimit {
            max: MAX_TEXT_CHARS,
            unit: TextUnit::Chars,
            overflow: Overflow::Split,
        });
        send::send_all(
            http,
            &url,
            token,
            message,
            limit,
            settings.use_human_agent_tag,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use telenet_proto::ingress::v1::ChannelConfig;

    fn channel(settings: MessengerConfig) -> ChannelCredentials {
        ChannelCredentials {
            config: ChannelConfig {
                provider: Some(Case::Messenger(settings)),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn complete() -> MessengerConfig {
        MessengerConfig {
            page_id: "1234".into(),
            page_access_token: "EAAG".into(),
            app_secret: "s3cret".into(),
            ..Default::default()
        }
    }

    #[test]
    fn connecting_names_each_missing_setting_and_generates_the_verify_token() {
        let connected = Messenger.connect(channel(complete())).expect("connects");
        assert_eq!(connected.kind, ChannelKind::Messenger);
        assert_eq!(connected.provider, ChannelProvider::Messenger);
        let token = config(&connected).verify_token;
        assert_eq!(token.len(), VERIFY_TOKEN_LEN);
        assert_eq!(Messenger.webhook_setup(&connected).verify_token, token);
        let kept = Messenger
            .connect(channel(MessengerConfig {
                verify_token: "mine".into(),
                ..complete()
            }))
            .expect("connects");
        assert_eq!(config(&kept).verify_token, "mine");
        type Spoil = fn(&mut MessengerConfig);
        let cases: [(Spoil, &str); 3] = [
            (|c| c.page_id.clear(), "page_id: required"),
            (
                |c| c.page_access_token = " ".into(),
                "page_access_token: required",
            ),
            (|c| c.app_secret.clear(), "app_secret: required"),
        ];
        for (spoil, needle) in cases {
            let mut settings = complete();
            spoil(&mut settings);
            match Messenger.connect(channel(settings)) {
                Err(CredentialsError::Invalid(why)) => assert_eq!(why, needle),
                other => panic!("{needle}: {other:?}"),
            }
        }
        assert!(Messenger.connect(ChannelCredentials::default()).is_err());
    }

    #[test]
    fn the_webhook_subscribes_to_messages_statuses_echoes_and_reactions() {
        let setup = Messenger.webhook_setup(&channel(complete()));
        assert_eq!(setup.subscribe_events, SUBSCRIBE_EVENTS);
        assert!(setup.header.is_none());
    }

    #[test]
    fn the_human_agent_tag_widens_the_reply_window_to_seven_days() {
        let standard = Messenger.capabilities(&channel(complete()));
        assert_eq!(standard.reply_window, Some(send::STANDARD_WINDOW));
        let tagged = Messenger.capabilities(&channel(MessengerConfig {
            use_human_agent_tag: true,
            ..complete()
        }));
        assert_eq!(
            tagged.reply_window,
            Some(Duration::from_secs(7 * 24 * 3600))
        );
        assert_eq!(standard.voice.accepted_types, ["audio/mp4", "audio/mpeg"]);
        assert_eq!(standard.text.map(|t| t.max), Some(2000));
    }
}
