//! What ListChannelKinds shows: every provider TELENET knows, whether this
//! build serves it, and the settings connecting one takes (named as in its
//! `ChannelConfig` case; docs/channels/ has the walk-through of each).

use telenet_channels::Registry;
use telenet_channels::config::{kind_of, provider_name};
use telenet_proto::common::v1::ChannelProvider;
use telenet_proto::ingress::v1::{ChannelKindInfo, ConfigField};

/// A setting: name, label, required, secret, generated.
type Field = (&'static str, &'static str, bool, bool, bool);

/// One provider's entry: its settings case, name, description, how its
/// webhooks are authenticated, and its settings.
struct Entry {
    provider: ChannelProvider,
    case: &'static str,
    name: &'static str,
    description: &'static str,
    authentication: &'static str,
    fields: &'static [Field],
}

const API_BASE: Field = (
    "api_base_url",
    "API base URL (proxies and tests; empty: the provider's host)",
    false,
    false,
    false,
);

const ENTRIES: &[Entry] = &[
    Entry {
        provider: ChannelProvider::Custom,
        case: "custom",
        name: "Custom channel",
        description: "Any system that speaks TELENET's own HTTP protocol, signed as Standard Webhooks both ways.",
        authentication: "Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature (HMAC-SHA256 with the channel's whsec_ secret)",
        fields: &[
            (
                "outbound_url",
                "Where outbound messages are POSTed",
                true,
                false,
                false,
            ),
            (
                "accepted_voice_types",
                "MIME types the receiver takes for voice notes, best first",
                false,
                false,
                false,
            ),
        ],
    },
    Entry {
        provider: ChannelProvider::WhatsappCloud,
        case: "whatsapp_cloud",
        name: "WhatsApp (Cloud API)",
        description: "A WhatsApp Business number through Meta's Cloud API.",
        authentication: "X-Hub-Signature-256 (HMAC-SHA256 with the app secret); GET hub.challenge handshake with the verify token",
        fields: &[
            ("phone_number_id", "Phone number ID", true, false, false),
            (
                "waba_id",
                "WhatsApp Business Account ID",
                false,
                false,
                false,
            ),
            (
                "access_token",
                "System-user access token",
                true,
                true,
                false,
            ),
            ("app_secret", "Meta app secret", true, true, false),
            ("verify_token", "Webhook verify token", false, false, true),
            (
                "graph_api_version",
                "Graph API version (e.g. v21.0)",
                false,
                false,
                false,
            ),
            API_BASE,
        ],
    },
    Entry {
        provider: ChannelProvider::Whatsapp360dialog,
        case: "whatsapp_360dialog",
        name: "WhatsApp (360dialog)",
        description: "A WhatsApp number through 360dialog; TELENET registers its webhook with a secret header.",
        authentication: "a secret header TELENET registers with the webhook (360dialog does not sign webhooks)",
        fields: &[
            ("api_key", "D360-API-KEY", true, true, false),
            (
                "phone_number",
                "The number (E.164), for display",
                false,
                false,
                false,
            ),
            ("base_url", "360dialog API base URL", false, false, false),
            (
                "webhook_header_secret",
                "Secret webhook header value",
                false,
                true,
                true,
            ),
            API_BASE,
        ],
    },
    Entry {
        provider: ChannelProvider::Messenger,
        case: "messenger",
        name: "Facebook Messenger",
        description: "A Facebook Page's Messenger inbox.",
        authentication: "X-Hub-Signature-256 (HMAC-SHA256 with the app secret); GET hub.challenge handshake with the verify token",
        fields: &[
            ("page_id", "Page ID", true, false, false),
            (
                "page_access_token",
                "Page access token (pages_messaging)",
                true,
                true,
                false,
            ),
            ("app_id", "Meta app ID", false, false, false),
            ("app_secret", "Meta app secret", true, true, false),
            ("verify_token", "Webhook verify token", false, false, true),
            (
                "use_human_agent_tag",
                "Reply up to 7 days with the HUMAN_AGENT tag",
                false,
                false,
                false,
            ),
            API_BASE,
        ],
    },
    Entry {
        provider: ChannelProvider::Instagram,
        case: "instagram",
        name: "Instagram",
        description: "An Instagram professional account's direct messages.",
        authentication: "X-Hub-Signature-256 (HMAC-SHA256 with the app secret); GET hub.challenge handshake with the verify token",
        fields: &[
            (
                "login",
                "FACEBOOK (linked Page) or INSTAGRAM (Instagram Login)",
                false,
                false,
                false,
            ),
            (
                "instagram_account_id",
                "Instagram professional account ID",
                true,
                false,
                false,
            ),
            (
                "page_id",
                "Linked Page ID (Facebook login)",
                false,
                false,
                false,
            ),
            ("access_token", "Access token", true, true, false),
            ("app_secret", "Meta app secret", true, true, false),
            ("verify_token", "Webhook verify token", false, false, true),
            (
                "use_human_agent_tag",
                "Reply up to 7 days with the HUMAN_AGENT tag",
                false,
                false,
                false,
            ),
            API_BASE,
        ],
    },
    Entry {
        provider: ChannelProvider::Telegram,
        case: "telegram",
        name: "Telegram",
        description: "A Telegram bot; TELENET calls setWebhook itself.",
        authentication: "X-Telegram-Bot-Api-Secret-Token (the secret token TELENET registers)",
        fields: &[
            ("bot_token", "Bot token from @BotFather", true, true, false),
            ("secret_token", "Webhook secret token", false, true, true),
            API_BASE,
        ],
    },
    Entry {
        provider: ChannelProvider::Line,
        case: "line",
        name: "LINE",
        description: "A LINE Official Account through the Messaging API.",
        authentication: "X-Line-Signature (base64 HMAC-SHA256 with the channel secret)",
        fields: &[
            ("line_channel_id", "Channel ID", false, false, false),
            ("channel_secret", "Channel secret", true, true, false),
            (
                "channel_access_token",
                "Long-lived channel access token",
                true,
                true,
                false,
            ),
            API_BASE,
        ],
    },
    Entry {
        provider: ChannelProvider::Viber,
        case: "viber",
        name: "Viber",
        description: "A Viber bot; TELENET calls set_webhook itself.",
        authentication: "X-Viber-Content-Signature (hex HMAC-SHA256 with the auth token)",
        fields: &[
            ("auth_token", "Bot auth token", true, true, false),
            (
                "sender_name",
                "Sender name (1-28 characters)",
                true,
                false,
                false,
            ),
            (
                "sender_avatar_url",
                "Sender avatar URL (https)",
                false,
                false,
                false,
            ),
            API_BASE,
        ],
    },
];

/// Every provider TELENET knows, in the proto's order, with whether this
/// build (`registry`) can connect it.
pub fn kinds(registry: &Registry) -> Vec<ChannelKindInfo> {
    (1..=19)
        .filter_map(|n| ChannelProvider::try_from(n).ok())
        .map(|provider| {
            let available = registry.get(provider).is_some();
            match ENTRIES.iter().find(|e| e.provider == provider) {
                Some(e) => ChannelKindInfo {
                    kind: kind_of(provider) as i32,
                    provider: provider as i32,
                    config_case: e.case.to_owned(),
                    display_name: e.name.to_owned(),
                    description: e.description.to_owned(),
                    fields: e
                        .fields
                        .iter()
                        .map(|&(name, label, required, secret, generated)| ConfigField {
                            name: name.to_owned(),
                            label: label.to_owned(),
                            description: String::new(),
                            required,
                            secret,
                            generated,
                        })
                        .collect(),
                    webhook_authentication: e.authentication.to_owned(),
                    available,
                },
                None => ChannelKindInfo {
                    kind: kind_of(provider) as i32,
                    provider: provider as i32,
                    config_case: provider_name(provider),
                    display_name: provider_name(provider),
                    description: "not available in this version".to_owned(),
                    available,
                    ..Default::default()
                },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_provider_is_listed_once_and_only_served_ones_are_available() {
        let kinds = kinds(&Registry::builtin());
        assert_eq!(kinds.len(), 19);
        let custom = kinds
            .iter()
            .find(|k| k.provider == ChannelProvider::Custom as i32)
            .expect("custom");
        assert!(custom.available);
        assert!(
            custom
                .fields
                .iter()
                .any(|f| f.name == "outbound_url" && f.required)
        );
        let twitter = kinds
            .iter()
            .find(|k| k.provider == ChannelProvider::Twitter as i32)
            .expect("twitter");
        assert!(!twitter.available);
    }
}
