//! Telegram bots, through the Bot API (core.telegram.org/bots/api).
//!
//! - Connect: the bot token BotFather gives (`<bot id>:<secret>`) and a
//!   webhook secret token TELENET generates; TELENET registers the webhook
//!   itself ([`Provider::register_webhook`]: `setWebhook` with the URL, the
//!   secret token and the update types it reads).
//! - In: `POST {webhook_url}` with one `Update` as JSON and the secret token
//!   in `X-Telegram-Bot-Api-Secret-Token` (compared in constant time; there
//!   is no signature over the body). `update_id` identifies the delivery;
//!   messages are identified by `"{chat id}:{message_id}"` (a message id is
//!   unique per chat only). See [`inbound`].
//! - Out: `sendMessage` and `sendPhoto`/`sendVideo`/`sendAudio`/
//!   `sendDocument`/`sendVoice`, files by URL where Telegram fetches them,
//!   uploaded (multipart) where it would not (see [`outbound`]).
//! - Files: an inbound attachment's `url` is a token-free reference,
//!   `{api}/getFile?file_id=…`; [`Provider::media_fetch`] resolves it with
//!   `getFile` into `{api}/file/bot<token>/<file_path>` (bots download at
//!   most 20 MB).
//! - No delivery statuses: Telegram tells bots nothing about delivery or
//!   reading, so [`Provider::delivery_state`] knows no status.
//!
//! The bot token is part of every API URL: no error text, reason or log line
//! is ever built from a URL (errors name the method and Telegram's own
//! description instead).

pub mod inbound;
pub mod outbound;

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use telenet_proto::common::v1::{AttachmentKind, ChannelKind, ChannelProvider};
use telenet_proto::dispatch::v1::DeliveryState;
use telenet_proto::events::v1::OutboundRequested;
use telenet_proto::ingress::v1::TelegramConfig;
use telenet_proto::ingress::v1::channel_config::Provider as Case;

use crate::config::{api_base, check_api_base_url, random_token, required};
use crate::http::{Answer, exchange, refusal, sanitize};
use crate::{
    Capabilities, ChannelCredentials, Check, CredentialsError, Inbound, MediaFetch, MediaRule,
    Overflow, Provider, RateLimit, RateScope, SendOutcome, TextLimit, TextUnit, VoiceNotes,
    Webhook, WebhookError, WebhookSetup,
};

/// The Bot API's public host.
pub const API_HOST: &str = "https://api.telegram.org";

/// The header carrying the webhook secret token.
pub const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";

/// The update types TELENET asks for (`allowed_updates`).
pub const ALLOWED_UPDATES: [&str; 2] = ["message", "edited_message"];

/// The longest text of one message.
pub const TEXT_LIMIT: TextLimit = TextLimit {
    max: 4096,
    unit: TextUnit::Utf16,
    overflow: Overflow::Split,
};

/// The longest caption of a file.
pub const CAPTION_LIMIT: TextLimit = TextLimit {
    max: 1024,
    unit: TextUnit::Utf16,
    overflow: Overflow::Refuse,
};

/// The largest file a bot may download (`getFile`).
pub const DOWNLOAD_LIMIT: u64 = 20 * 1024 * 1024;

/// The largest file a bot may upload.
pub const UPLOAD_LIMIT: u64 = 50 * 1024 * 1024;

/// The largest file Telegram fetches from a URL for a bot.
pub const URL_LIMIT: u64 = 20 * 1024 * 1024;

/// How long to pause after a 429 that names no time.
pub const DEFAULT_PAUSE: Duration = Duration::from_secs(30);

/// Length of a generated secret token.
const SECRET_TOKEN_LEN: usize = 48;

/// The Telegram Bot API provider.
#[derive(Debug, Clone, Copy, Default)]
pub struct Telegram;

/// The Telegram settings of `channel`, if it has them.
pub fn settings(channel: &ChannelCredentials) -> Option<&TelegramConfig> {
    match &channel.config.provider {
        Some(Case::Telegram(config)) => Some(config),
        _ => None,
    }
}

/// Whether `token` has the shape of a bot token: the bot's numeric id, `:`,
/// and at least 35 characters of `A-Za-z0-9_-`.
pub fn is_bot_token(token: &str) -> bool {
    let Some((id, secret)) = token.split_once(':') else {
        return false;
    };
    !id.is_empty()
        && id.bytes().all(|b| b.is_ascii_digit())
        && secret.len() >= 35
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether `token` is a valid webhook secret token: 1–256 characters of
/// `A-Za-z0-9_-`.
pub fn is_secret_token(token: &str) -> bool {
    (1..=256).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The channel's bot token, when it is usable.
fn bot_token(channel: &ChannelCredentials) -> Option<&str> {
    settings(channel)
        .map(|c| c.bot_token.trim())
        .filter(|t| is_bot_token(t))
}

/// `{api}/bot<token>/<method>`. Contains the token: never shown, never
/// logged.
fn method_url(channel: &ChannelCredentials, token: &str, method: &str) -> String {
    format!("{}/bot{token}/{method}", api_base(channel, API_HOST))
}

/// Why a Bot API call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ApiError {
    /// Telegram refused the bot token (401, or 404 for a token it does not
    /// know): the description.
    Token(String),
    /// Flood control.
    Throttled {
        reason: String,
        retry_after: Duration,
    },
    /// Passing trouble (5xx, no answer).
    Transient(String),
    /// Refused for good (4xx): the reason.
    Refused(String),
}

impl ApiError {
    /// As the outcome of a send.
    pub(crate) fn into_send(self) -> SendOutcome {
        match self {
            ApiError::Token(description) => SendOutcome::Reject(sanitize(&format!(
                "Telegram refused the bot token: {description}"
            ))),
            ApiError::Throttled {
                reason,
                retry_after,
            } => SendOutcome::Throttled {
                reason,
                retry_after,
            },
            ApiError::Transient(reason) => SendOutcome::Retry(reason),
            ApiError::Refused(reason) => SendOutcome::Reject(reason),
        }
    }

    /// As a problem with the channel's settings (registering, checking,
    /// fetching files).
    fn into_credentials(self) -> CredentialsError {
        match self {
            ApiError::Token(description) => CredentialsError::Invalid(sanitize(&format!(
                "Telegram refused the bot token: {description}"
            ))),
            ApiError::Refused(reason) => CredentialsError::Invalid(reason),
            ApiError::Throttled { reason, .. } | ApiError::Transient(reason) => {
                CredentialsError::Unavailable(reason)
            }
        }
    }

    fn detail(&self) -> String {
        match self {
            ApiError::Token(description) => {
                sanitize(&format!("Telegram refused the bot token: {description}"))
            }
            ApiError::Throttled { reason, .. }
            | ApiError::Transient(reason)
            | ApiError::Refused(reason) => reason.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(default)]
    ok: Option<bool>,
    #[serde(default)]
    result: Option<serde_json::Value>,
    #[serde(default)]
    error_code: Option<i64>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<ResponseParameters>,
}

#[derive(Debug, Default, Deserialize)]
struct ResponseParameters {
    #[serde(default)]
    retry_after: Option<u64>,
}

/// What a Bot API answer means: the `result` of `{"ok":true}`; for
/// `{"ok":false}` the error by its `error_code` (429 flood control with its
/// `retry_after`, 5xx passing trouble, 401/404 the token, other codes a
/// refusal naming Telegram's description, which is documented text);
/// anything else (a proxy's page) by its HTTP status alone.
pub(crate) fn read_answer(answer: &Answer) -> Result<serde_json::Value, ApiError> {
    let envelope = serde_json::from_slice::<Envelope>(&answer.body)
        .ok()
        .filter(|e| e.ok.is_some());
    let status = answer.status;
    match envelope {
        Some(e) if e.ok == Some(true) && status.is_success() => {
            Ok(e.result.unwrap_or(serde_json::Value::Null))
        }
        Some(e) if e.ok == Some(false) => {
            let code = e.error_code.unwrap_or(i64::from(status.as_u16()));
            let description = e.description.unwrap_or_default();
            let reason = sanitize(&format!("Telegram error {code}: {description}"));
            if code == 429 || status == http::StatusCode::TOO_MANY_REQUESTS {
                let retry_after = e
                    .parameters
                    .and_then(|p| p.retry_after)
                    .map(Duration::from_secs)
                    .or(answer.retry_after)
                    .unwrap_or(DEFAULT_PAUSE);
                Err(ApiError::Throttled {
                    reason,
                    retry_after,
                })
            } else if code >= 500 || status.is_server_error() {
                Err(ApiError::Transient(reason))
            } else if code == 401 || code == 404 {
                Err(ApiError::Token(sanitize(&description)))
            } else {
                Err(ApiError::Refused(reason))
            }
        }
        _ if status.is_success() => Err(ApiError::Transient(format!(
            "Telegram answered HTTP {} without a Bot API result",
            status.as_u16()
        ))),
        _ => {
            let pause = answer
                .retry_after
                .filter(|_| status == http::StatusCode::TOO_MANY_REQUESTS);
            if let Some(retry_after) = pause {
                return Err(ApiError::Throttled {
                    reason: crate::http::http_error(status),
                    retry_after,
                });
            }
            match refusal(status) {
                Some(SendOutcome::Reject(reason)) => Err(ApiError::Refused(reason)),
                Some(SendOutcome::Retry(reason)) => Err(ApiError::Transient(reason)),
                _ => Err(ApiError::Transient(crate::http::http_error(status))),
            }
        }
    }
}

/// The outcome of a request that got no answer, as an [`ApiError`].
pub(crate) fn unanswered(outcome: SendOutcome) -> ApiError {
    match outcome {
        SendOutcome::Reject(reason) => ApiError::Refused(reason),
        SendOutcome::Throttled {
            reason,
            retry_after,
        } => ApiError::Throttled {
            reason,
            retry_after,
        },
        SendOutcome::Retry(reason) => ApiError::Transient(reason),
        SendOutcome::Sent { .. } => ApiError::Transient("no answer".into()),
    }
}

/// Call `method` with a JSON `body`.
pub(crate) async fn call(
    http: &reqwest::Client,
    channel: &ChannelCredentials,
    token: &str,
    method: &str,
    body: &serde_json::Value,
) -> Result<serde_json::Value, ApiError> {
    let request = http.post(method_url(channel, token, method)).json(body);
    let answer = exchange(request).await.map_err(unanswered)?;
    read_answer(&answer)
}

#[async_trait]
impl Provider for Telegram {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Telegram
    }

    fn provider(&self) -> ChannelProvider {
        ChannelProvider::Telegram
    }

    fn webhook_setup(&self, channel: &ChannelCredentials) -> WebhookSetup {
        WebhookSetup {
            verify_token: String::new(),
            header: settings(channel).map(|c| {
                (
                    "X-Telegram-Bot-Api-Secret-Token".to_owned(),
                    c.secret_token.clone(),
                )
            }),
            subscribe_events: ALLOWED_UPDATES.iter().map(|u| (*u).to_owned()).collect(),
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
        let token = bot_token(channel).ok_or_else(|| {
            CredentialsError::Invalid("bot_token: not set or not a bot token".into())
        })?;
        let secret_token = settings(channel)
            .map(|c| c.secret_token.as_str())
            .filter(|s| is_secret_token(s))
            .ok_or_else(|| CredentialsError::Invalid("secret_token: not set or invalid".into()))?;
        let body = serde_json::json!({
            "url": webhook_url,
            "secret_token": secret_token,
            "allowed_updates": ALLOWED_UPDATES,
            "drop_pending_updates": false,
        });
        match call(http, channel, token, "setWebhook", &body).await {
            Ok(serde_json::Value::Bool(true)) => Ok(true),
            Ok(_) => Err(CredentialsError::Unavailable(
                "Telegram did not confirm the webhook".into(),
            )),
            Err(ApiError::Refused(reason)) => Err(CredentialsError::Invalid(sanitize(&format!(
                "Telegram refused the webhook: {reason}"
            )))),
            Err(e) => Err(e.into_credentials()),
        }
    }

    async fn check(&self, http: &reqwest::Client, channel: &ChannelCredentials) -> Vec<Check> {
        let Some(token) = bot_token(channel) else {
            return vec![Check {
                name: "credentials".into(),
                ok: false,
                detail: "bot_token: not set or not a bot token".into(),
            }];
        };
        let empty = serde_json::json!({});
        let mut checks = Vec::new();
        match call(http, channel, token, "getMe", &empty).await {
            Ok(me) => {
                let username = me["username"].as_str().unwrap_or_default();
                checks.push(Check {
                    name: "credentials".into(),
                    ok: true,
                    detail: sanitize(&format!("the token is the bot's @{username}")),
                });
            }
            Err(e) => {
                checks.push(Check {
                    name: "credentials".into(),
                    ok: false,
                    detail: e.detail(),
                });
                return checks;
            }
        }
        match call(http, channel, token, "getWebhookInfo", &empty).await {
            Ok(info) => checks.extend(webhook_checks(&channel.channel_id, &info)),
            Err(e) => checks.push(Check {
                name: "webhook_registration".into(),
                ok: false,
                detail: e.detail(),
            }),
        }
        checks
    }

    async fn media_fetch(
        &self,
        http: &reqwest::Client,
        channel: &ChannelCredentials,
        url: &str,
    ) -> Result<MediaFetch, CredentialsError> {
        let file_id = inbound::file_id_of(channel, url).ok_or_else(|| {
            CredentialsError::Invalid("not a file reference of this Telegram channel".into())
        })?;
        let token = bot_token(channel).ok_or_else(|| {
            CredentialsError::Invalid("bot_token: not set or not a bot token".into())
        })?;
        let body = serde_json::json!({ "file_id": file_id });
        let file = match call(http, channel, token, "getFile", &body).await {
            Ok(file) => file,
            Err(ApiError::Refused(reason)) if reason.contains("file is too big") => {
                return Err(too_big(None));
            }
            Err(e) => return Err(e.into_credentials()),
        };
        let size = file["file_size"].as_u64();
        if size.is_some_and(|s| s > DOWNLOAD_LIMIT) {
            return Err(too_big(size));
        }
        let path = file["file_path"]
            .as_str()
            .filter(|p| !p.is_empty() && !p.contains("..") && !p.starts_with('/'))
            .ok_or_else(|| {
                CredentialsError::Unavailable("Telegram gave no path for the file".into())
            })?;
        Ok(MediaFetch {
            url: format!("{}/file/bot{token}/{path}", api_base(channel, API_HOST)),
            headers: http::HeaderMap::new(),
        })
    }

    fn capabilities(&self, _: &ChannelCredentials) -> Capabilities {
        let rule = |kind: AttachmentKind, types: &[&str]| MediaRule {
            kind,
            mime_types: types.iter().map(|t| (*t).to_owned()).collect(),
            max_bytes: Some(URL_LIMIT),
        };
        Capabilities {
            text: Some(TEXT_LIMIT),
            media: vec![
                rule(
                    AttachmentKind::Image,
                    &["image/jpeg", "image/png", "image/gif", "image/webp"],
                ),
                rule(AttachmentKind::Video, &["video/mp4"]),
                rule(
                    AttachmentKind::Audio,
                    &["audio/mpeg", "audio/mp4", "audio/x-m4a"],
                ),
                MediaRule {
                    kind: AttachmentKind::File,
                    mime_types: Vec::new(),
                    max_bytes: Some(UPLOAD_LIMIT),
                },
            ],
            voice: VoiceNotes {
                accepted_types: vec!["audio/ogg; codecs=opus".into()],
                max_bytes: Some(UPLOAD_LIMIT),
                max_duration: None,
            },
            reply_window: None,
            rate_limits: vec![
                RateLimit {
                    messages: 30,
                    per: Duration::from_secs(1),
                    scope: RateScope::Channel,
                },
                RateLimit {
                    messages: 1,
                    per: Duration::from_secs(1),
                    scope: RateScope::Recipient,
                },
            ],
        }
    }

    fn connect(
        &self,
        requested: ChannelCredentials,
    ) -> Result<ChannelCredentials, CredentialsError> {
        let mut config = settings(&requested)
            .cloned()
            .ok_or_else(|| CredentialsError::Invalid("telegram: settings are missing".into()))?;
        let token = required("bot_token", &config.bot_token)?.to_owned();
        if !is_bot_token(&token) {
            return Err(CredentialsError::Invalid(
                "bot_token: not a Telegram bot token (expected <bot id>:<secret>, as BotFather gives it)"
                    .into(),
            ));
        }
        config.bot_token = token;
        config.secret_token = config.secret_token.trim().to_owned();
        if config.secret_token.is_empty() {
            config.secret_token = random_token(SECRET_TOKEN_LEN)?;
        } else if !is_secret_token(&config.secret_token) {
            return Err(CredentialsError::Invalid(
                "secret_token: must be 1 to 256 characters of A-Z, a-z, 0-9, _ and -".into(),
            ));
        }
        check_api_base_url(&requested.config.api_base_url)?;
        let mut connected = requested;
        connected.kind = ChannelKind::Telegram;
        connected.provider = ChannelProvider::Telegram;
        connected.config.provider = Some(Case::Telegram(config));
        Ok(connected)
    }

    fn verify(
        &self,
        channel: &ChannelCredentials,
        webhook: &Webhook<'_>,
    ) -> Result<(), WebhookError> {
        let expected = settings(channel)
            .map(|c| c.secret_token.as_str())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| WebhookError::Credentials("the secret token is not set".into()))?;
        let given = webhook
            .headers
            .get(SECRET_HEADER)
            .ok_or(WebhookError::MissingHeader(
                "X-Telegram-Bot-Api-Secret-Token",
            ))?
            .as_bytes();
        if telenet_signing::same_secret(given, expected.as_bytes()) {
            Ok(())
        } else {
            Err(WebhookError::BadSignature(
                "X-Telegram-Bot-Api-Secret-Token is not the channel's secret token".into(),
            ))
        }
    }

    fn parse(
        &self,
        channel: &ChannelCredentials,
        webhook: &Webhook<'_>,
    ) -> Result<Inbound, WebhookError> {
        inbound::parse_update(channel, webhook.channel_id, webhook.body)
            .map_err(WebhookError::Malformed)
    }

    fn delivery_state(&self, _: &str) -> Option<DeliveryState> {
        None
    }

    async fn send(
        &self,
        http: &reqwest::Client,
        channel: &ChannelCredentials,
        message: &OutboundRequested,
    ) -> SendOutcome {
        let Some(token) = bot_token(channel) else {
            return SendOutcome::Reject(
                "the channel's bot_token is not set or not a bot token".into(),
            );
        };
        outbound::send_message(http, channel, token, message).await
    }
}

fn too_big(size: Option<u64>) -> CredentialsError {
    let size = size.map(|s| format!(" ({s} bytes)")).unwrap_or_default();
    CredentialsError::Invalid(format!(
        "the file is too big for a bot to download{size}: Telegram lets bots download files of at most 20 MB"
    ))
}

/// The checks of a `getWebhookInfo` result: the webhook is set to this
/// channel's URL (`…/webhooks/{channel_id}`), and Telegram's last delivery
/// did not fail.
fn webhook_checks(channel_id: &str, info: &serde_json::Value) -> Vec<Check> {
    let url = info["url"].as_str().unwrap_or_default();
    let suffix = format!("/webhooks/{channel_id}");
    let registered = Check {
        name: "webhook_registration".into(),
        ok: !url.is_empty() && (channel_id.is_empty() || url.ends_with(&suffix)),
        detail: if url.is_empty() {
            "no webhook is set for the bot: connect the channel again".into()
        } else if channel_id.is_empty() || url.ends_with(&suffix) {
            "the webhook points at this channel".into()
        } else {
            "the bot's webhook points elsewhere (another tool or channel uses this bot)".into()
        },
    };
    let last_error = info["last_error_message"].as_str().unwrap_or_default();
    let delivery = Check {
        name: "webhook_delivery".into(),
        ok: last_error.is_empty(),
        detail: if last_error.is_empty() {
            format!(
                "{} update(s) waiting",
                info["pending_update_count"].as_u64().unwrap_or(0)
            )
        } else {
            sanitize(&format!("Telegram's last delivery failed: {last_error}"))
        },
    };
    vec![registered, delivery]
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    pub(crate) const TOKEN: &str = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0";

    fn channel(token: &str, secret: &str) -> ChannelCredentials {
        ChannelCredentials {
            config: telenet_proto::ingress::v1::ChannelConfig {
                provider: Some(Case::Telegram(TelegramConfig {
                    bot_token: token.into(),
                    secret_token: secret.into(),
                    ..Default::default()
                })),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn bot_tokens_have_the_botfather_shape() {
        assert!(is_bot_token(TOKEN));
        assert!(is_bot_token("1:ABCDEFGHIJKLMNOPQRSTUVWXYZ_-abcdefghi"));
        for bad in [
            "",
            "123456789",
            "abc:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0",
            ":AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0",
            "123456789:short",
            "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsa/0",
            "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0:x",
        ] {
            assert!(!is_bot_token(bad), "{bad}");
        }
    }

    #[test]
    fn connecting_checks_the_token_and_generates_a_secret_token() {
        let connected = Telegram
            .connect(channel(&format!(" {TOKEN} "), ""))
            .expect("connects");
        let config = settings(&connected).expect("telegram settings");
        assert_eq!(config.bot_token, TOKEN);
        assert!(is_secret_token(&config.secret_token));
        assert_eq!(config.secret_token.len(), SECRET_TOKEN_LEN);
        assert_eq!(connected.kind, ChannelKind::Telegram);
        assert_eq!(connected.provider, ChannelProvider::Telegram);
        let kept = Telegram
            .connect(channel(TOKEN, "my-secret_1"))
            .expect("connects");
        assert_eq!(
            settings(&kept).expect("settings").secret_token,
            "my-secret_1"
        );

        let refused = |c: ChannelCredentials| match Telegram.connect(c) {
            Err(CredentialsError::Invalid(reason)) => reason,
            other => panic!("{other:?}"),
        };
        assert_eq!(refused(channel("", "")), "bot_token: required");
        let secret_part = "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0";
        let reason = refused(channel(&format!("12x:{secret_part}"), ""));
        assert!(
            reason.starts_with("bot_token: not a Telegram bot token"),
            "{reason}"
        );
        assert!(
            !reason.contains(secret_part),
            "the token is never echoed: {reason}"
        );
        assert!(refused(channel(TOKEN, "no spaces allowed")).starts_with("secret_token:"));
        assert!(refused(channel(TOKEN, &"a".repeat(257))).starts_with("secret_token:"));
        let mut bad_base = channel(TOKEN, "");
        bad_base.config.api_base_url = "http://example.com".into();
        assert!(refused(bad_base).starts_with("api_base_url:"));
        assert!(refused(ChannelCredentials::default()).starts_with("telegram:"));
    }

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).expect("status"),
            body: body.as_bytes().to_vec(),
            retry_after: None,
        }
    }

    #[test]
    fn bot_api_errors_are_sorted_by_their_code() {
        assert_eq!(
            read_answer(&answer(200, r#"{"ok":true,"result":{"message_id":5}}"#)),
            Ok(serde_json::json!({"message_id": 5}))
        );
        assert_eq!(
            read_answer(&answer(
                429,
                r#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 7","parameters":{"retry_after":7}}"#
            )),
            Err(ApiError::Throttled {
                reason: "Telegram error 429: Too Many Requests: retry after 7".into(),
                retry_after: Duration::from_secs(7),
            })
        );
        assert_eq!(
            read_answer(&answer(
                403,
                r#"{"ok":false,"error_code":403,"description":"Forbidden: bot was blocked by the user"}"#
            )),
            Err(ApiError::Refused(
                "Telegram error 403: Forbidden: bot was blocked by the user".into()
            ))
        );
        assert_eq!(
            read_answer(&answer(
                401,
                r#"{"ok":false,"error_code":401,"description":"Unauthorized"}"#
            )),
            Err(ApiError::Token("Unauthorized".into()))
        );
        assert!(matches!(
            read_answer(&answer(
                502,
                r#"{"ok":false,"error_code":502,"description":"Bad Gateway"}"#
            )),
            Err(ApiError::Transient(_))
        ));
        // Not the Bot API talking: the status alone.
        assert_eq!(
            read_answer(&answer(400, "<html>secret stack</html>")),
            Err(ApiError::Refused(
                "receiver answered HTTP 400 Bad Request".into()
            ))
        );
        assert!(matches!(
            read_answer(&answer(503, "down")),
            Err(ApiError::Transient(_))
        ));
        assert!(matches!(
            read_answer(&answer(200, "<html>")),
            Err(ApiError::Transient(_))
        ));
        let mut busy = answer(429, "slow down");
        busy.retry_after = Some(Duration::from_secs(3));
        assert!(matches!(
            read_answer(&busy),
            Err(ApiError::Throttled { retry_after, .. }) if retry_after == Duration::from_secs(3)
        ));
    }

    #[test]
    fn webhook_info_is_checked_against_this_channel() {
        let info = serde_json::json!({
            "url": "https://inbox.example/webhooks/ch-1",
            "pending_update_count": 2,
        });
        let checks = webhook_checks("ch-1", &info);
        assert!(checks.iter().all(|c| c.ok), "{checks:?}");
        let elsewhere = webhook_checks("ch-2", &info);
        assert!(!elsewhere[0].ok);
        let failing = serde_json::json!({
            "url": "https://inbox.example/webhooks/ch-1",
            "last_error_message": "Wrong response from the webhook: 502 Bad Gateway",
        });
        let checks = webhook_checks("ch-1", &failing);
        assert!(checks[0].ok && !checks[1].ok);
        assert!(checks[1].detail.contains("502 Bad Gateway"), "{checks:?}");
        assert!(!webhook_checks("ch-1", &serde_json::json!({"url": ""}))[0].ok);
    }

    #[test]
    fn telegram_reports_no_delivery_statuses() {
        for status in ["sent", "delivered", "read", "failed", ""] {
            assert_eq!(Telegram.delivery_state(status), None);
        }
    }
}
