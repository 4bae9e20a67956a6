//! Webhooks made of arbitrary bytes, for fuzzing every provider's
//! handshake, verification and parsing: used by the bounded fuzz test
//! (`tests/fuzz.rs`, in every test run) and the cargo-fuzz target
//! (`crates/channels/fuzz`, for long runs). Whatever a platform (or anyone
//! who can reach the webhook URL) sends, a provider answers or refuses; it
//! never panics.

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use telenet_proto::common::v1::ChannelProvider;
use telenet_proto::ingress::v1::channel_config::Provider as Case;

use crate::{ChannelCredentials, Provider, Webhook};

/// The unix time fuzzed webhooks arrive at.
pub const NOW: i64 = 1_700_000_000;

/// The headers a fuzzed webhook may carry: every one a provider reads.
pub const HEADERS: &[&str] = &[
    "content-type",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "x-hub-signature-256",
    "x-line-signature",
    "x-viber-content-signature",
    "x-telegram-bot-api-secret-token",
    "d360-api-key",
    "x-telenet-webhook-secret",
];

/// Separates the fields of a fuzz input.
const SEPARATOR: u8 = 0xFF;

/// A webhook request decoded from fuzz input bytes.
#[derive(Debug, Clone)]
pub struct FuzzWebhook {
    pub method: Method,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl FuzzWebhook {
    /// Decode `data`: its first byte picks the method; then the query and
    /// one value per [`HEADERS`] entry, each ended by 0xFF (a value that is
    /// not a valid header value leaves the header out); the rest is the
    /// body.
    pub fn decode(data: &[u8]) -> Self {
        let (method, mut rest) = match data.split_first() {
            Some((b, rest)) => (
                match b % 3 {
                    0 => Method::POST,
                    1 => Method::GET,
                    _ => Method::PUT,
                },
                rest,
            ),
            None => (Method::POST, data),
        };
        let mut field = || -> Option<&[u8]> {
            let end = rest.iter().position(|&b| b == SEPARATOR)?;
            let (value, after) = rest.split_at(end);
            rest = &after[1..];
            Some(value)
        };
        let query = field()
            .map(|q| String::from_utf8_lossy(q).into_owned())
            .unwrap_or_default();
        let mut headers = HeaderMap::new();
        for name in HEADERS {
            let Some(value) = field() else { break };
            if value.is_empty() {
                continue;
            }
            if let Ok(value) = HeaderValue::from_bytes(value) {
                headers.insert(HeaderName::from_static(name), value);
            }
        }
        Self {
            method,
            query,
            headers,
            body: rest.to_vec(),
        }
    }

    /// The bytes [`decode`](Self::decode) reads back as this webhook (a
    /// seed for mutation).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![match self.method {
            Method::GET => 1,
            Method::PUT => 2,
            _ => 0,
        }];
        out.extend_from_slice(self.query.as_bytes());
        out.push(SEPARATOR);
        for name in HEADERS {
            if let Some(v) = self.headers.get(*name) {
                out.extend_from_slice(v.as_bytes());
            }
            out.push(SEPARATOR);
        }
        out.extend_from_slice(&self.body);
        out
    }
}

/// Run one fuzz input through `provider` for `channel`: handshake, verify
/// and parse (parse also on its own, as if the signature had passed, so
/// the parser is reached without the key). Panics only if the provider
/// does.
pub fn run(provider: &dyn Provider, channel: &ChannelCredentials, data: &[u8]) {
    let request = FuzzWebhook::decode(data);
    let url = format!("https://telenet.example/webhooks/{}", FUZZ_CHANNEL_ID);
    let webhook = Webhook {
        channel_id: FUZZ_CHANNEL_ID,
        method: &request.method,
        url: &url,
        query: &request.query,
        headers: &request.headers,
        body: &request.body,
        now: NOW,
    };
    let _ = provider.handshake(channel, &webhook);
    if let Err(e) = provider.verify(channel, &webhook) {
        // A refusal always says why.
        assert!(!e.to_string().is_empty(), "an empty refusal");
    }
    match provider.parse(channel, &webhook) {
        Ok(inbound) => {
            for event in inbound.events {
                let _ = event.into_payload();
            }
        }
        Err(e) => assert!(!e.to_string().is_empty(), "an empty refusal"),
    }
}

/// The channel id fuzzed webhooks are addressed to.
pub const FUZZ_CHANNEL_ID: &str = "01900000-0000-7000-8000-00000000f022";

/// The channel each built-in provider is fuzzed with; `None` for a
/// provider without one, which the fuzz test refuses (a new provider must
/// be fuzzed too).
pub fn channel_for(provider: ChannelProvider) -> Option<ChannelCredentials> {
    use telenet_proto::ingress::v1::{
        InstagramConfig, LineConfig, MessengerConfig, TelegramConfig, ViberConfig,
        WhatsApp360DialogConfig, WhatsAppCloudConfig,
    };
    let settings = match provider {
        ChannelProvider::Custom => {
            return Some(ChannelCredentials {
                kind: telenet_proto::common::v1::ChannelKind::Custom,
                provider,
                outbound_url: "https://receiver.example/in".into(),
                secret: FUZZ_SECRET.into(),
                accepted_voice_types: vec!["audio/ogg".into()],
                ..Default::default()
            });
        }
        ChannelProvider::Telegram => Case::Telegram(TelegramConfig {
            bot_token: FUZZ_TELEGRAM_BOT_TOKEN.into(),
            secret_token: FUZZ_TELEGRAM_SECRET_TOKEN.into(),
            ..Default::default()
        }),
        ChannelProvider::Line => Case::Line(LineConfig {
            line_channel_id: "1650000000".into(),
            channel_secret: FUZZ_LINE_SECRET.into(),
            channel_access_token: "fuzz-line-access-token".into(),
        }),
        ChannelProvider::Viber => Case::Viber(ViberConfig {
            auth_token: FUZZ_VIBER_TOKEN.into(),
            sender_name: "Fuzz".into(),
            sender_avatar_url: String::new(),
        }),
        ChannelProvider::Messenger => Case::Messenger(MessengerConfig {
            page_id: "106000000000001".into(),
            page_access_token: "EAAfuzz".into(),
            app_secret: FUZZ_META_APP_SECRET.into(),
            verify_token: "fuzz-verify-token".into(),
            ..Default::default()
        }),
        ChannelProvider::Instagram => Case::Instagram(InstagramConfig {
            instagram_account_id: "17841400000000001".into(),
            page_id: "106000000000001".into(),
            access_token: "EAAfuzz".into(),
            app_secret: FUZZ_META_APP_SECRET.into(),
            verify_token: "fuzz-verify-token".into(),
            ..Default::default()
        }),
        ChannelProvider::WhatsappCloud => Case::WhatsappCloud(WhatsAppCloudConfig {
            phone_number_id: "1122334455667".into(),
            access_token: "fuzz-access-token".into(),
            app_secret: FUZZ_SECRET.into(),
            verify_token: "fuzz-verify-token".into(),
            ..Default::default()
        }),
        ChannelProvider::Whatsapp360dialog => Case::Whatsapp360dialog(WhatsApp360DialogConfig {
            api_key: "fuzz-api-key".into(),
            webhook_header_secret: FUZZ_SECRET.into(),
            ..Default::default()
        }),
        _ => return None,
    };
    Some(ChannelCredentials {
        kind: crate::config::kind_of(provider),
        provider,
        config: telenet_proto::ingress::v1::ChannelConfig {
            provider: Some(settings),
            ..Default::default()
        },
        ..Default::default()
    })
}

/// The bot token of the fuzzed Telegram channel.
pub const FUZZ_TELEGRAM_BOT_TOKEN: &str = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0";
/// The webhook secret token of the fuzzed Telegram channel.
pub const FUZZ_TELEGRAM_SECRET_TOKEN: &str = "fuzz-secret_token-0123456789";
/// The channel secret of the fuzzed LINE channel.
pub const FUZZ_LINE_SECRET: &str = "fuzz-line-channel-secret";

/// The auth token of the fuzzed Viber channel.
pub const FUZZ_VIBER_TOKEN: &str = "fuzz-viber-auth-token";

/// A POST of `body` with one signature header, encoded as fuzz input.
fn seed_with(name: &'static str, value: &str, body: &[u8]) -> Option<Vec<u8>> {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert(name, HeaderValue::from_str(value).ok()?);
    Some(
        FuzzWebhook {
            method: Method::POST,
            query: String::new(),
            headers,
            body: body.to_vec(),
        }
        .encode(),
    )
}

/// The app secret of the fuzzed Messenger and Instagram channels.
pub const FUZZ_META_APP_SECRET: &str = "fuzz-meta-app-secret";

/// The signing secret of the fuzzed custom channel.
pub const FUZZ_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A request `provider`'s platform would send with `body`, signed as it
/// signs (so mutations of it reach past verification), encoded as fuzz
/// input.
pub fn signed_seed(provider: ChannelProvider, body: &[u8]) -> Option<Vec<u8>> {
    match provider {
        ChannelProvider::Custom => {
            let secret = telenet_signing::Secret::parse(FUZZ_SECRET).ok()?;
            let id = "msg_fuzz_seed";
            let mut headers = HeaderMap::new();
            headers.insert("content-type", HeaderValue::from_static("application/json"));
            headers.insert("webhook-id", HeaderValue::from_static(id));
            headers.insert("webhook-timestamp", HeaderValue::from(NOW));
            headers.insert(
                "webhook-signature",
                HeaderValue::from_str(&secret.sign(id, NOW, body)).ok()?,
            );
            Some(
                FuzzWebhook {
                    method: Method::POST,
                    query: String::new(),
                    headers,
                    body: body.to_vec(),
                }
                .encode(),
            )
        }
        ChannelProvider::Telegram => seed_with(
            "x-telegram-bot-api-secret-token",
            FUZZ_TELEGRAM_SECRET_TOKEN,
            body,
        ),
        ChannelProvider::Line => seed_with(
            "x-line-signature",
            &crate::line::signature(FUZZ_LINE_SECRET, body),
            body,
        ),
        ChannelProvider::Viber => seed_with(
            "x-viber-content-signature",
            &crate::viber::signature(FUZZ_VIBER_TOKEN, body),
            body,
        ),
        ChannelProvider::Messenger | ChannelProvider::Instagram => seed_with(
            "x-hub-signature-256",
            &crate::meta::signature_header(FUZZ_META_APP_SECRET, body),
            body,
        ),
        ChannelProvider::WhatsappCloud => seed_with(
            "x-hub-signature-256",
            &crate::meta::signature_header(FUZZ_SECRET, body),
            body,
        ),
        ChannelProvider::Whatsapp360dialog => {
            seed_with("x-telenet-webhook-secret", FUZZ_SECRET, body)
        }
        _ => None,
    }
}
