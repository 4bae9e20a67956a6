//! Instagram messaging: one Instagram professional account's direct
//! messages, through Meta's Instagram Messaging API.
//!
//! Two logins reach it ([`InstagramLogin`]):
//!
//! - `FACEBOOK` (the default): the account is linked to a Facebook Page;
//!   sends are `POST graph.facebook.com/{version}/{page_id}/messages` with
//!   the Page access token;
//! - `INSTAGRAM` (Instagram Login): sends are `POST
//!   graph.instagram.com/{version}/me/messages` with the Instagram user
//!   access token.
//!
//! Webhooks are Meta's (handshake, `X-Hub-Signature-256` with the app
//! secret) with `object: "instagram"`, read like Messenger's
//! ([`crate::messenger::messaging`]). Instagram adds unsends
//! (`is_deleted`), `read{mid}`, and attachments TELENET does not show
//! (`share`, `story_mention`, `ig_reel`, …), kept as unsupported messages.

use async_trait::async_trait;
use telenet_proto::common::v1::{AttachmentKind, ChannelKind, ChannelProvider};
use telenet_proto::dispatch::v1::DeliveryState;
use telenet_proto::events::v1::OutboundRequested;
use telenet_proto::ingress::v1::channel_config::Provider as Case;
use telenet_proto::ingress::v1::{InstagramConfig, InstagramLogin};

use crate::config::{api_base, check_api_base_url, required};
use crate::messenger::messaging::{self, Product};
use crate::messenger::{capabilities, handshake, rule, send, verify_token};
use crate::meta::{DEFAULT_GRAPH_VERSION, GRAPH_HOST};
use crate::{
    Capabilities, ChannelCredentials, Check, CredentialsError, HandshakeAnswer, Inbound, Overflow,
    Provider, SendOutcome, TextLimit, TextUnit, Webhook, WebhookError, WebhookSetup,
};

/// The Instagram provider.
#[derive(Debug, Clone, Copy, Default)]
pub struct Instagram;

/// The Instagram Login API's host.
pub const INSTAGRAM_HOST: &str = "https://graph.instagram.com";

/// The webhook fields an Instagram app subscribes to.
pub const SUBSCRIBE_EVENTS: [&str; 4] = [
    "messages",
    "messaging_postbacks",
    "message_reactions",
    "messaging_seen",
];

/// The longest text of one message. Meta states it in UTF-8 bytes; counted
/// in bytes, a text also fits if Meta counts characters.
pub const MAX_TEXT_BYTES: usize = 1000;

const MAX_FILE_BYTES: u64 = 25 * 1024 * 1024;
const MAX_IMAGE_BYTES: u64 = 8 * 1024 * 1024;

const PRODUCT: Product = Product {
    object: "instagram",
    kind: ChannelKind::Instagram,
    provider: ChannelProvider::Instagram,
    // Instagram has no audio files in direct messages: audio is a voice
    // message recorded in the app.
    audio_is_voice: true,
};

fn config(channel: &ChannelCredentials) -> InstagramConfig {
    match &channel.config.provider {
        Some(Case::Instagram(c)) => c.clone(),
        _ => InstagramConfig::default(),
    }
}

/// Whether the channel uses Instagram Login (else a Facebook Page).
fn instagram_login(settings: &InstagramConfig) -> bool {
    settings.login() == InstagramLogin::Instagram
}

/// The Send API URL of the channel, by its login; `Err` names the missing
/// setting.
fn send_url(
    channel: &ChannelCredentials,
    settings: &InstagramConfig,
) -> Result<String, CredentialsError> {
    if instagram_login(settings) {
        Ok(format!(
            "{}/{DEFAULT_GRAPH_VERSION}/me/messages",
            api_base(channel, INSTAGRAM_HOST)
        ))
    } else {
        let page_id = required("page_id", &settings.page_id)?;
        Ok(format!(
            "{}/{DEFAULT_GRAPH_VERSION}/{page_id}/messages",
            api_base(channel, GRAPH_HOST)
        ))
    }
}

fn text_limit() -> TextLimit {
    TextLimit {
        max: MAX_TEXT_BYTES,
        unit: TextUnit::Bytes,
        overflow: Overflow::Split,
    }
}

#[async_trait]
impl Provider for Instagram {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Instagram
    }

    fn provider(&self) -> ChannelProvider {
        ChannelProvider::Instagram
    }

    fn webhook_setup(&self, channel: &ChannelCredentials) -> WebhookSetup {
        WebhookSetup {
            verify_token: config(channel).verify_token,
            header: None,
            subscribe_events: SUBSCRIBE_EVENTS.iter().map(|e| (*e).to_owned()).collect(),
        }
    }

    fn capabilities(&self, channel: &ChannelCredentials) -> Capabilities {
        capabilities(
            text_limit(),
            vec![
                rule(
                    AttachmentKind::Image,
                    &["image/png", "image/jpeg"],
                    MAX_IMAGE_BYTES,
                ),
                rule(
                    AttachmentKind::Video,
                    &[
                        "video/mp4",
                        "video/ogg",
                        "video/x-msvideo",
                        "video/quicktime",
                        "video/webm",
                    ],
                    MAX_FILE_BYTES,
                ),
                rule(
                    AttachmentKind::Audio,
                    &["audio/aac", "audio/mp4", "audio/x-m4a", "audio/wav"],
                    MAX_FILE_BYTES,
                ),
                rule(AttachmentKind::File, &["application/pdf"], MAX_FILE_BYTES),
            ],
            &["audio/mp4"],
            config(channel).use_human_agent_tag,
        )
    }

    fn connect(
        &self,
        requested: ChannelCredentials,
    ) -> Result<ChannelCredentials, CredentialsError> {
        let Some(Case::Instagram(given)) = &requested.config.provider else {
            return Err(CredentialsError::Invalid(
                "instagram: the channel's settings are not Instagram settings".into(),
            ));
        };
        check_api_base_url(&requested.config.api_base_url)?;
        let mut settings = InstagramConfig {
            instagram_account_id: required("instagram_account_id", &given.instagram_account_id)?
                .to_owned(),
            access_token: required("access_token", &given.access_token)?.to_owned(),
            app_secret: required("app_secret", &given.app_secret)?.to_owned(),
            verify_token: verify_token(&given.verify_token)?,
            ..given.clone()
        };
        if !instagram_login(&settings) {
            settings.page_id = required("page_id", &given.page_id)?.to_owned();
            settings.set_login(InstagramLogin::Facebook);
        }
        let mut connected = requested;
        connected.kind = ChannelKind::Instagram;
        connected.provider = ChannelProvider::Instagram;
        connected.config.provider = Some(Case::Instagram(settings));
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
        _: &ChannelCredentials,
        webhook: &Webhook<'_>,
    ) -> Result<Inbound, WebhookError> {
        Ok(Inbound {
            delivery_id: None,
            events: messaging::parse(PRODUCT, webhook.channel_id, webhook.body)?,
        })
    }

    fn delivery_state(&self, status: &str) -> Option<DeliveryState> {
        messaging::delivery_state(status)
    }

    async fn check(&self, http: &reqwest::Client, channel: &ChannelCredentials) -> Vec<Check> {
        let settings = config(channel);
        let url = if instagram_login(&settings) {
            format!(
                "{}/{DEFAULT_GRAPH_VERSION}/me?fields=user_id,username",
                api_base(channel, INSTAGRAM_HOST)
            )
        } else {
            format!(
                "{}/{DEFAULT_GRAPH_VERSION}/{}?fields=id,username",
                api_base(channel, GRAPH_HOST),
                settings.instagram_account_id.trim()
            )
        };
        vec![send::check_profile(http, &url, settings.access_token.trim(), "username").await]
    }

    async fn send(
        &self,
        http: &reqwest::Client,
        channel: &ChannelCredentials,
        message: &OutboundRequested,
    ) -> SendOutcome {
        let settings = config(channel);
        let url = match send_url(channel, &settings) {
            Ok(url) => url,
            Err(e) => return SendOutcome::Reject(format!("the channel's {e}")),
        };
        let Ok(token) = required("access_token", &settings.access_token) else {
            return SendOutcome::Reject("the channel's access_token is not set".into());
        };
        send::send_all(
            http,
            &url,
            token,
            message,
            text_limit(),
            settings.use_human_agent_tag,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use telenet_proto::ingress::v1::ChannelConfig;

    fn channel(settings: InstagramConfig) -> ChannelCredentials {
        ChannelCredentials {
            config: ChannelConfig {
                provider: Some(Case::Instagram(settings)),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn complete() -> InstagramConfig {
        InstagramConfig {
            instagram_account_id: "1784".into(),
            page_id: "1234".into(),
            access_token: "EAAG".into(),
            app_secret: "s3cret".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_facebook_login_needs_the_page_and_an_instagram_login_does_not() {
        let connected = Instagram.connect(channel(complete())).expect("connects");
        let settings = config(&connected);
        assert_eq!(settings.login(), InstagramLogin::Facebook);
        assert_eq!(settings.verify_token.len(), 32);
        assert_eq!(connected.kind, ChannelKind::Instagram);
        let no_page = InstagramConfig {
            page_id: String::new(),
            ..complete()
        };
        match Instagram.connect(channel(no_page.clone())) {
            Err(CredentialsError::Invalid(why)) => assert_eq!(why, "page_id: required"),
            other => panic!("{other:?}"),
        }
        let mut ig_login = no_page;
        ig_login.set_login(InstagramLogin::Instagram);
        assert!(Instagram.connect(channel(ig_login)).is_ok());
        type Spoil = fn(&mut InstagramConfig);
        let cases: [(Spoil, &str); 3] = [
            (
                |c| c.instagram_account_id.clear(),
                "instagram_account_id: required",
            ),
            (|c| c.access_token.clear(), "access_token: required"),
            (|c| c.app_secret.clear(), "app_secret: required"),
        ];
        for (spoil, needle) in cases {
            let mut settings = complete();
            spoil(&mut settings);
            match Instagram.connect(channel(settings)) {
                Err(CredentialsError::Invalid(why)) => assert_eq!(why, needle),
                other => panic!("{needle}: {other:?}"),
            }
        }
    }

    #[test]
    fn sends_go_to_the_page_or_to_me_by_login() {
        let page = channel(complete());
        assert_eq!(
            send_url(&page, &config(&page)).expect("url"),
            "https://graph.facebook.com/v21.0/1234/messages"
        );
        let mut settings = complete();
        settings.set_login(InstagramLogin::Instagram);
        let ig = channel(settings);
        assert_eq!(
            send_url(&ig, &config(&ig)).expect("url"),
            "https://graph.instagram.com/v21.0/me/messages"
        );
    }

    #[test]
    fn text_is_limited_in_bytes_and_voice_notes_go_as_m4a() {
        let caps = Instagram.capabilities(&channel(complete()));
        let limit = caps.text.expect("a limit");
        assert_eq!((limit.max, limit.unit), (1000, TextUnit::Bytes));
        assert!(!limit.fits(&"é".repeat(501)), "1002 bytes, 501 characters");
        assert_eq!(caps.voice.accepted_types, ["audio/mp4"]);
        let setup = Instagram.webhook_setup(&channel(complete()));
        assert_eq!(setup.subscribe_events, SUBSCRIBE_EVENTS);
    }
}
