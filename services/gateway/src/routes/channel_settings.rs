//! A channel's provider settings as REST takes them: flat fields beside
//! `kind` and `name` (`{"kind": "telegram", "name": "Support", "bot_token":
//! "…"}`), named as in the provider's `ChannelConfig` case
//! (proto/telenet/ingress/v1/providers.proto, docs/channels/). A field that
//! does not apply to the kind is refused, naming it; what each provider
//! requires is checked by ingress, whose refusals name the field too.

use serde::Deserialize;
use telenet_proto::ingress::v1::channel_config::Provider as Case;
use telenet_proto::ingress::v1::{
    ChannelConfig, InstagramConfig, InstagramLogin, LineConfig, MessengerConfig, TelegramConfig,
    ViberConfig, WhatsApp360DialogConfig, WhatsAppCloudConfig,
};
use utoipa::ToSchema;

use crate::error::ApiError;

/// The provider a channel is connected through, as `POST /v1/channels`
/// names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConnectKind {
    /// Our own protocol (Standard Webhooks both ways).
    Custom,
    /// WhatsApp through Meta's Cloud API (`whatsapp` is the same).
    #[serde(alias = "whatsapp")]
    WhatsappCloud,
    /// WhatsApp through 360dialog.
    #[serde(rename = "whatsapp_360dialog")]
    Whatsapp360dialog,
    /// Facebook Messenger (one Page).
    Messenger,
    /// Instagram messaging (one professional account).
    Instagram,
    /// A Telegram bot.
    Telegram,
    /// A LINE Official Account.
    Line,
    /// A Viber bot.
    Viber,
}

impl ConnectKind {
    /// Its name in messages.
    pub fn name(self) -> &'static str {
        match self {
            ConnectKind::Custom => "custom",
            ConnectKind::WhatsappCloud => "whatsapp_cloud",
            ConnectKind::Whatsapp360dialog => "whatsapp_360dialog",
            ConnectKind::Messenger => "messenger",
            ConnectKind::Instagram => "instagram",
            ConnectKind::Telegram => "telegram",
            ConnectKind::Line => "line",
            ConnectKind::Viber => "viber",
        }
    }

    /// Its settings case, empty.
    fn empty_config(self) -> Option<Case> {
        Some(match self {
            ConnectKind::Custom => return None,
            ConnectKind::WhatsappCloud => Case::WhatsappCloud(WhatsAppCloudConfig::default()),
            ConnectKind::Whatsapp360dialog => {
                Case::Whatsapp360dialog(WhatsApp360DialogConfig::default())
            }
            ConnectKind::Messenger => Case::Messenger(MessengerConfig::default()),
            ConnectKind::Instagram => Case::Instagram(InstagramConfig::default()),
            ConnectKind::Telegram => Case::Telegram(TelegramConfig::default()),
            ConnectKind::Line => Case::Line(LineConfig::default()),
            ConnectKind::Viber => Case::Viber(ViberConfig::default()),
        })
    }

    /// The kind whose settings `config` holds.
    pub fn of(config: &ChannelConfig) -> Option<Self> {
        Some(match config.provider.as_ref()? {
            Case::WhatsappCloud(_) => ConnectKind::WhatsappCloud,
            Case::Whatsapp360dialog(_) => ConnectKind::Whatsapp360dialog,
            Case::Messenger(_) => ConnectKind::Messenger,
            Case::Instagram(_) => ConnectKind::Instagram,
            Case::Telegram(_) => ConnectKind::Telegram,
            Case::Line(_) => ConnectKind::Line,
            Case::Viber(_) => ConnectKind::Viber,
            Case::Custom(_) => ConnectKind::Custom,
            _ => return None,
        })
    }
}

/// Provider settings, flat. Secrets are write-only: reads list which are
/// set (`secrets_set`), and an update that leaves one out keeps it.
#[derive(Clone, Default, Deserialize, ToSchema)]
pub struct ProviderSettings {
    /// Every provider: where its API is reached (https; http only on
    /// loopback); empty: the provider's own host.
    pub api_base_url: Option<String>,
    /// WhatsApp Cloud: the phone number's id.
    pub phone_number_id: Option<String>,
    /// WhatsApp Cloud: the WhatsApp Business Account id.
    pub waba_id: Option<String>,
    /// WhatsApp Cloud, Instagram: *secret* access token.
    pub access_token: Option<String>,
    /// WhatsApp Cloud, Messenger, Instagram: *secret* Meta app secret.
    pub app_secret: Option<String>,
    /// WhatsApp Cloud, Messenger, Instagram: the webhook verify token
    /// (generated when absent).
    pub verify_token: Option<String>,
    /// WhatsApp Cloud: Graph API version (e.g. `v21.0`).
    pub graph_api_version: Option<String>,
    /// 360dialog: *secret* `D360-API-KEY`.
    pub api_key: Option<String>,
    /// 360dialog: the number (E.164), for display.
    pub phone_number: Option<String>,
    /// 360dialog: API base URL (empty: `https://waba-v2.360dialog.io`).
    pub base_url: Option<String>,
    /// 360dialog: *secret* value of the webhook header (generated when absent).
    pub webhook_header_secret: Option<String>,
    /// Messenger, Instagram (Facebook login): the Page id.
    pub page_id: Option<String>,
    /// Messenger: *secret* Page access token.
    pub page_access_token: Option<String>,
    /// Messenger: the Meta app id.
    pub app_id: Option<String>,
    /// Messenger, Instagram: reply up to 7 days with the HUMAN_AGENT tag.
    pub use_human_agent_tag: Option<bool>,
    /// Instagram: `facebook` (a linked Page) or `instagram` (Instagram Login).
    pub login: Option<String>,
    /// Instagram: the professional account's id.
    pub instagram_account_id: Option<String>,
    /// Telegram: *secret* bot token from @BotFather.
    pub bot_token: Option<String>,
    /// Telegram: *secret* webhook secret token (generated when absent).
    pub secret_token: Option<String>,
    /// LINE: the channel id.
    pub line_channel_id: Option<String>,
    /// LINE: *secret* channel secret.
    pub channel_secret: Option<String>,
    /// LINE: *secret* long-lived channel access token.
    pub channel_access_token: Option<String>,
    /// Viber: *secret* bot auth token.
    pub auth_token: Option<String>,
    /// Viber: sender name (1–28 characters).
    pub sender_name: Option<String>,
    /// Viber: sender avatar URL (https).
    pub sender_avatar_url: Option<String>,
}

impl std::fmt::Debug for ProviderSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderSettings")
            .field("set", &self.set_fields())
            .finish()
    }
}

impl ProviderSettings {
    /// The names of the fields given.
    pub fn set_fields(&self) -> Vec<&'static str> {
        let s = self;
        [
            ("api_base_url", s.api_base_url.is_some()),
            ("phone_number_id", s.phone_number_id.is_some()),
            ("waba_id", s.waba_id.is_some()),
            ("access_token", s.access_token.is_some()),
            ("app_secret", s.app_secret.is_some()),
            ("verify_token", s.verify_token.is_some()),
            ("graph_api_version", s.graph_api_version.is_some()),
            ("api_key", s.api_key.is_some()),
            ("phone_number", s.phone_number.is_some()),
            ("base_url", s.base_url.is_some()),
            ("webhook_header_secret", s.webhook_header_secret.is_some()),
            ("page_id", s.page_id.is_some()),
            ("page_access_token", s.page_access_token.is_some()),
            ("app_id", s.app_id.is_some()),
            ("use_human_agent_tag", s.use_human_agent_tag.is_some()),
            ("login", s.login.is_some()),
            ("instagram_account_id", s.instagram_account_id.is_some()),
            ("bot_token", s.bot_token.is_some()),
            ("secret_token", s.secret_token.is_some()),
            ("line_channel_id", s.line_channel_id.is_some()),
            ("channel_secret", s.channel_secret.is_some()),
            ("channel_access_token", s.channel_access_token.is_some()),
            ("auth_token", s.auth_token.is_some()),
            ("sender_name", s.sender_name.is_some()),
            ("sender_avatar_url", s.sender_avatar_url.is_some()),
        ]
        .into_iter()
        .filter(|(_, set)| *set)
        .map(|(name, _)| name)
        .collect()
    }

    /// `config` (of `kind`, or a new one of `kind`) with the given fields
    /// set; a field that does not apply to `kind` is refused, naming it.
    pub fn apply(
        &self,
        kind: ConnectKind,
        mut config: ChannelConfig,
    ) -> Result<ChannelConfig, ApiError> {
        if config.provider.is_none() {
            config.provider = kind.empty_config();
        }
        if let Some(url) = &self.api_base_url {
            config.api_base_url = url.trim().to_owned();
        }
        let mut used = vec!["api_base_url"];
        let take = |v: &Option<String>, into: &mut String| {
            if let Some(v) = v {
                *into = v.trim().to_owned();
            }
        };
        match config.provider.as_mut() {
            Some(Case::WhatsappCloud(c)) => {
                take(&self.phone_number_id, &mut c.phone_number_id);
                take(&self.waba_id, &mut c.waba_id);
                take(&self.access_token, &mut c.access_token);
                take(&self.app_secret, &mut c.app_secret);
                take(&self.verify_token, &mut c.verify_token);
                take(&self.graph_api_version, &mut c.graph_api_version);
                used.extend([
                    "phone_number_id",
                    "waba_id",
                    "access_token",
                    "app_secret",
                    "verify_token",
                    "graph_api_version",
                ]);
            }
            Some(Case::Whatsapp360dialog(c)) => {
                take(&self.api_key, &mut c.api_key);
                take(&self.phone_number, &mut c.phone_number);
                take(&self.base_url, &mut c.base_url);
                take(&self.webhook_header_secret, &mut c.webhook_header_secret);
                used.extend([
                    "api_key",
                    "phone_number",
                    "base_url",
                    "webhook_header_secret",
                ]);
            }
            Some(Case::Messenger(c)) => {
                take(&self.page_id, &mut c.page_id);
                take(&self.page_access_token, &mut c.page_access_token);
                take(&self.app_id, &mut c.app_id);
                take(&self.app_secret, &mut c.app_secret);
                take(&self.verify_token, &mut c.verify_token);
                if let Some(tag) = self.use_human_agent_tag {
                    c.use_human_agent_tag = tag;
                }
                used.extend([
                    "page_id",
                    "page_access_token",
                    "app_id",
                    "app_secret",
                    "verify_token",
                    "use_human_agent_tag",
                ]);
            }
            Some(Case::Instagram(c)) => {
                if let Some(login) = &self.login {
                    c.login = match login.trim() {
                        "facebook" => InstagramLogin::Facebook,
                        "instagram" => InstagramLogin::Instagram,
                        other => {
                            return Err(ApiError::invalid(
                                "login",
                                format!("login must be facebook or instagram, not {other:?}"),
                            ));
                        }
                    } as i32;
                }
                take(&self.instagram_account_id, &mut c.instagram_account_id);
                take(&self.page_id, &mut c.page_id);
                take(&self.access_token, &mut c.access_token);
                take(&self.app_secret, &mut c.app_secret);
                take(&self.verify_token, &mut c.verify_token);
                if let Some(tag) = self.use_human_agent_tag {
                    c.use_human_agent_tag = tag;
                }
                used.extend([
                    "login",
                    "instagram_account_id",
                    "page_id",
                    "access_token",
                    "app_secret",
                    "verify_token",
                    "use_human_agent_tag",
                ]);
            }
            Some(Case::Telegram(c)) => {
                take(&self.bot_token, &mut c.bot_token);
                take(&self.secret_token, &mut c.secret_token);
                used.extend(["bot_token", "secret_token"]);
            }
            Some(Case::Line(c)) => {
                take(&self.line_channel_id, &mut c.line_channel_id);
                take(&self.channel_secret, &mut c.channel_secret);
                take(&self.channel_access_token, &mut c.channel_access_token);
                used.extend(["line_channel_id", "channel_secret", "channel_access_token"]);
            }
            Some(Case::Viber(c)) => {
                take(&self.auth_token, &mut c.auth_token);
                take(&self.sender_name, &mut c.sender_name);
                take(&self.sender_avatar_url, &mut c.sender_avatar_url);
                used.extend(["auth_token", "sender_name", "sender_avatar_url"]);
            }
            _ => {}
        }
        if let Some(field) = self
            .set_fields()
            .into_iter()
            .find(|f| !(used.contains(f) || kind == ConnectKind::Custom && *f == "api_base_url"))
        {
            return Err(ApiError::invalid(
                field,
                format!("{field} does not apply to {} channels", kind.name()),
            ));
        }
        if kind == ConnectKind::Custom && self.api_base_url.is_some() {
            return Err(ApiError::invalid(
                "api_base_url",
                "api_base_url does not apply to custom channels (they use outbound_url)",
            ));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(json: serde_json::Value) -> ProviderSettings {
        serde_json::from_value(json).expect("settings")
    }

    #[test]
    fn fields_fill_the_kinds_settings() {
        let config = settings(
            serde_json::json!({"bot_token": " 123:abc ", "api_base_url": "http://127.0.0.1:9"}),
        )
        .apply(ConnectKind::Telegram, ChannelConfig::default())
        .expect("applies");
        let Some(Case::Telegram(t)) = &config.provider else {
            panic!("telegram settings");
        };
        assert_eq!(t.bot_token, "123:abc");
        assert_eq!(config.api_base_url, "http://127.0.0.1:9");
    }

    #[test]
    fn a_field_of_another_kind_is_refused_by_name() {
        let e = settings(serde_json::json!({"bot_token": "123:abc"}))
            .apply(ConnectKind::Line, ChannelConfig::default())
            .expect_err("not LINE's")
            .problem();
        assert_eq!(e.field.as_deref(), Some("bot_token"));
        assert!(
            e.detail.contains("does not apply to line channels"),
            "{}",
            e.detail
        );
        let e = settings(serde_json::json!({"login": "myspace"}))
            .apply(ConnectKind::Instagram, ChannelConfig::default())
            .expect_err("no such login")
            .problem();
        assert_eq!(e.field.as_deref(), Some("login"));
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let s = settings(serde_json::json!({"bot_token": "123:very-secret"}));
        assert!(!format!("{s:?}").contains("very-secret"));
    }

    #[test]
    fn whatsapp_means_the_cloud_api() {
        let kind: ConnectKind =
            serde_json::from_value(serde_json::json!("whatsapp")).expect("kind");
        assert_eq!(kind, ConnectKind::WhatsappCloud);
        let kind: ConnectKind =
            serde_json::from_value(serde_json::json!("whatsapp_360dialog")).expect("kind");
        assert_eq!(kind, ConnectKind::Whatsapp360dialog);
    }
}
