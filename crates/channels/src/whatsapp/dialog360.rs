//! WhatsApp through 360dialog, a Business Solution Provider in front of
//! the Cloud API: the same webhook bodies and message bodies, another
//! door.
//!
//! - API: `{base}` is `https://waba-v2.360dialog.io` (or the channel's
//!   `base_url`); every call carries the number's key as `D360-API-KEY`.
//! - Webhooks: 360dialog signs nothing. TELENET registers its webhook URL
//!   (`POST {base}/v1/configs/webhook {"url", "headers"}`) with a secret
//!   header, [`SECRET_HEADER`], whose value (`webhook_header_secret`,
//!   generated when connecting) 360dialog sends back with every event;
//!   [`Provider::verify`] compares it in constant time.
//! - Sends: `POST {base}/messages` with the Cloud API body.
//! - Files: the attachment `url` is `{base}/{media_id}`; a fetch asks it
//!   (with the key) for the file's Meta URL, then fetches that URL's path
//!   and query from the 360dialog base instead of Meta's host, with the
//!   key (360dialog proxies the download; Meta's host would want Meta's
//!   token).

use async_trait::async_trait;
use http::{HeaderMap, HeaderValue};
use telenet_proto::common::v1::{ChannelKind, ChannelProvider};
use telenet_proto::dispatch::v1::DeliveryState;
use telenet_proto::events::v1::OutboundRequested;
use telenet_proto::ingress::v1::WhatsApp360DialogConfig;
use telenet_proto::ingress::v1::channel_config::Provider as Case;

use super::{failed_check, inbound, media_url_of, same_origin, send_all, unanswered};
use crate::config::{api_base, check_api_base_url, random_token, required};
use crate::http::{exchange, sanitize};
use crate::{
    Capabilities, ChannelCredentials, Check, CredentialsError, Inbound, MediaFetch, Provider,
    SendOutcome, Webhook, WebhookError, WebhookSetup,
};

/// 360dialog's API host.
pub const DIALOG360_HOST: &str = "https://waba-v2.360dialog.io";
/// The header carrying the number's API key.
pub const API_KEY_HEADER: &str = "d360-api-key";
/// The secret header 360dialog is told to send with every webhook.
pub const SECRET_HEADER: &str = "x-telenet-webhook-secret";

/// WhatsApp through 360dialog.
#[derive(Debug, Clone, Copy, Default)]
pub struct WhatsApp360Dialog;

fn settings(channel: &ChannelCredentials) -> Option<&WhatsApp360DialogConfig> {
    match &channel.config.provider {
        Some(Case::Whatsapp360dialog(c)) => Some(c),
        _ => None,
    }
}

/// The channel's API base: `api_base_url`, else `base_url`, else 360dialog's.
fn base(channel: &ChannelCredentials) -> String {
    let own = settings(channel).map_or("", |c| c.base_url.trim());
    api_base(channel, if own.is_empty() { DIALOG360_HOST } else { own })
}

/// The `D360-API-KEY` header, or why the key is unusable.
fn key_header(channel: &ChannelCredentials) -> Result<HeaderMap, CredentialsError> {
    let key = settings(channel).map_or("", |c| c.api_key.trim());
    if key.is_empty() {
        return Err(CredentialsError::Invalid("api_key: required".into()));
    }
    let mut value = HeaderValue::from_str(key)
        .map_err(|_| CredentialsError::Invalid("api_key: not a valid header value".into()))?;
    value.set_sensitive(true);
    let mut headers = HeaderMap::new();
    headers.insert(API_KEY_HEADER, value);
    Ok(headers)
}

/// What 360dialog's refusal says: its `meta.developer_message`, a Graph
/// error, or else the HTTP status.
fn refusal_detail(answer: &crate::http::Answer) -> String {
    let own = serde_json::from_slice::<serde_json::Value>(&answer.body)
        .ok()
        .and_then(|b| b["meta"]["developer_message"].as_str().map(str::to_owned));
    match own {
        Some(message) => sanitize(&format!(
            "{}: {message}",
            crate::http::http_error(answer.status)
        )),
        None => super::refusal_detail(answer),
    }
}

/// Meta's media URL, moved to the 360dialog base: its path and query kept.
fn through_360dialog(file: &url::Url, base: &str) -> String {
    match file.query() {
        Some(query) => format!("{base}{}?{query}", file.path()),
        None => format!("{base}{}", file.path()),
    }
}

#[async_trait]
impl Provider for WhatsApp360Dialog {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Whatsapp
    }

    fn provider(&self) -> ChannelProvider {
        ChannelProvider::Whatsapp360dialog
    }

    fn webhook_setup(&self, channel: &ChannelCredentials) -> WebhookSetup {
        WebhookSetup {
            verify_token: String::new(),
            header: settings(channel)
                .map(|c| (SECRET_HEADER.to_owned(), c.webhook_header_secret.clone())),
            subscribe_events: vec!["messages".into(), "statuses".into()],
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
        let headers = key_header(channel)?;
        let secret = settings(channel).map_or("", |c| c.webhook_header_secret.as_str());
        if secret.is_empty() {
            return Err(CredentialsError::Invalid(
                "webhook_header_secret: not generated (connect the channel first)".into(),
            ));
        }
        let mut secret_headers = serde_json::Map::new();
        secret_headers.insert(SECRET_HEADER.to_owned(), secret.into());
        let body = serde_json::json!({ "url": webhook_url, "headers": secret_headers });
        let url = format!("{}/v1/configs/webhook", base(channel));
        let answer = exchange(http.post(url).headers(headers).json(&body))
            .await
            .map_err(|outcome| unanswered(&outcome))?;
        if answer.status.is_success() {
            return Ok(true);
        }
        let detail = refusal_detail(&answer);
        if answer.status.is_server_error() || answer.status == http::StatusCode::TOO_MANY_REQUESTS {
            Err(CredentialsError::Unavailable(format!(
                "360dialog did not register the webhook: {detail}"
            )))
        } else {
            Err(CredentialsError::Invalid(format!(
                "360dialog refused the webhook: {detail}"
            )))
        }
    }

    async fn check(&self, http: &reqwest::Client, channel: &ChannelCredentials) -> Vec<Check> {
        let headers = match key_header(channel) {
            Ok(headers) => headers,
            Err(e) => return vec![failed_check(&e.to_string())],
        };
        let url = format!("{}/v1/configs/webhook", base(channel));
        let answer = match exchange(http.get(url).headers(headers)).await {
            Ok(answer) if answer.status.is_success() => answer,
            Ok(answer) => return vec![failed_check(&refusal_detail(&answer))],
            Err(outcome) => return vec![failed_check(&unanswered(&outcome).to_string())],
        };
        let registered = serde_json::from_slice::<serde_json::Value>(&answer.body)
            .ok()
            .and_then(|b| b["url"].as_str().map(str::to_owned))
            .filter(|url| !url.is_empty());
        vec![
            Check {
                name: "credentials".into(),
                ok: true,
                detail: "360dialog accepts the API key".into(),
            },
            Check {
                name: "webhook_registration".into(),
                ok: registered.is_some(),
                detail: match registered {
                    Some(url) => sanitize(&format!("events go to {url}")),
                    None => "no webhook is registered".into(),
                },
            },
        ]
    }

    fn capabilities(&self, _: &ChannelCredentials) -> Capabilities {
        super::capabilities()
    }

    fn connect(
        &self,
        requested: ChannelCredentials,
    ) -> Result<ChannelCredentials, CredentialsError> {
        let Some(given) = settings(&requested) else {
            return Err(CredentialsError::Invalid(
                "whatsapp_360dialog: the settings are required".into(),
            ));
        };
        let api_key = required("api_key", &given.api_key)?;
        if HeaderValue::from_str(api_key).is_err() {
            return Err(CredentialsError::Invalid(
                "api_key: not a valid header value".into(),
            ));
        }
        check_api_base_url(&given.base_url).map_err(|e| {
            CredentialsError::Invalid(e.to_string().replacen("api_base_url", "base_url", 1))
        })?;
        check_api_base_url(&requested.config.api_base_url)?;
        let secret = match given.webhook_header_secret.trim() {
            "" => random_token(40)?,
            s => s.to_owned(),
        };
        let config = WhatsApp360DialogConfig {
            api_key: api_key.to_owned(),
            phone_number: given.phone_number.trim().to_owned(),
            base_url: given.base_url.trim().trim_end_matches('/').to_owned(),
            webhook_header_secret: secret,
        };
        let mut connected = requested;
        connected.kind = ChannelKind::Whatsapp;
        connected.provider = ChannelProvider::Whatsapp360dialog;
        connected.config.api_base_url = connected.config.api_base_url.trim().to_owned();
        connected.config.provider = Some(Case::Whatsapp360dialog(config));
        Ok(connected)
    }

    fn verify(
        &self,
        channel: &ChannelCredentials,
        webhook: &Webhook<'_>,
    ) -> Result<(), WebhookError> {
        let expected = settings(channel).map_or("", |c| c.webhook_header_secret.as_str());
        if expected.is_empty() {
            return Err(WebhookError::Credentials(
                "the webhook header secret is not set".into(),
            ));
        }
        let given = webhook
            .header(SECRET_HEADER)
            .ok_or(WebhookError::MissingHeader("X-Telenet-Webhook-Secret"))?;
        if telenet_signing::same_secret(given.as_bytes(), expected.as_bytes()) {
            Ok(())
        } else {
            Err(WebhookError::BadSignature(
                "X-Telenet-Webhook-Secret is not the channel's".into(),
            ))
        }
    }

    fn parse(
        &self,
        channel: &ChannelCredentials,
        webhook: &Webhook<'_>,
    ) -> Result<Inbound, WebhookError> {
        let base = base(channel);
        let media_url = |id: &str| format!("{base}/{id}");
        let cx = inbound::Context {
            channel_id: webhook.channel_id,
            provider: ChannelProvider::Whatsapp360dialog,
            media_url: &media_url,
            // One webhook per number: every change is this channel's.
            phone_number_id: None,
        };
        let events = inbound::parse_body(webhook.body, &cx).map_err(WebhookError::Malformed)?;
        Ok(Inbound {
            delivery_id: None,
            events,
        })
    }

    fn delivery_state(&self, status: &str) -> Option<DeliveryState> {
        super::delivery_state(status)
    }

    async fn send(
        &self,
        http: &reqwest::Client,
        channel: &ChannelCredentials,
        message: &OutboundRequested,
    ) -> SendOutcome {
        let headers = match key_header(channel) {
            Ok(headers) => headers,
            Err(e) => return SendOutcome::Reject(format!("the channel's {e}")),
        };
        let url = format!("{}/messages", base(channel));
        send_all(message, |body| {
            let request = http.post(&url).headers(headers.clone()).json(&body);
            async move {
                let answer = exchange(request).await?;
                crate::meta::graph_outcome(&answer)
            }
        })
        .await
    }

    async fn media_fetch(
        &self,
        http: &reqwest::Client,
        channel: &ChannelCredentials,
        url: &str,
    ) -> Result<MediaFetch, CredentialsError> {
        let headers = key_header(channel)?;
        let base = base(channel);
        let lookup = url::Url::parse(url)
            .map_err(|_| CredentialsError::Invalid("the media reference is not a URL".into()))?;
        if !same_origin(&lookup, &base) {
            return Err(CredentialsError::Invalid(
                "the media reference is not on the channel's 360dialog API".into(),
            ));
        }
        let answer = exchange(http.get(lookup).headers(headers.clone()))
            .await
            .map_err(|outcome| unanswered(&outcome))?;
        let file = media_url_of(&answer)?;
        Ok(MediaFetch {
            url: through_360dialog(&file, &base),
            headers,
        })
    }

    fn authorize_media_fetch(
        &self,
        channel: &ChannelCredentials,
        url: &str,
    ) -> Result<HeaderMap, CredentialsError> {
        let headers = key_header(channel)?;
        // The key goes only to the channel's 360dialog API.
        match url::Url::parse(url) {
            Ok(parsed) if same_origin(&parsed, &base(channel)) => Ok(headers),
            _ => Ok(HeaderMap::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use telenet_proto::ingress::v1::ChannelConfig;

    fn channel(config: WhatsApp360DialogConfig) -> ChannelCredentials {
        ChannelCredentials {
            config: ChannelConfig {
                provider: Some(Case::Whatsapp360dialog(config)),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn connecting_requires_the_key_and_generates_the_header_secret() {
        let err = WhatsApp360Dialog
            .connect(channel(WhatsApp360DialogConfig::default()))
            .expect_err("no key")
            .to_string();
        assert!(err.starts_with("api_key"), "{err}");
        let err = WhatsApp360Dialog
            .connect(channel(WhatsApp360DialogConfig {
                api_key: "k".into(),
                base_url: "http://waba.example".into(),
                ..Default::default()
            }))
            .expect_err("plain http")
            .to_string();
        assert!(err.starts_with("base_url"), "{err}");
        let connected = WhatsApp360Dialog
            .connect(channel(WhatsApp360DialogConfig {
                api_key: " key-1 ".into(),
                ..Default::default()
            }))
            .expect("connects");
        let config = settings(&connected).expect("settings");
        assert_eq!(config.api_key, "key-1");
        assert_eq!(config.webhook_header_secret.len(), 40);
        assert_eq!(connected.provider, ChannelProvider::Whatsapp360dialog);
        assert_eq!(
            WhatsApp360Dialog.webhook_setup(&connected).header,
            Some((
                SECRET_HEADER.to_owned(),
                config.webhook_header_secret.clone()
            ))
        );
    }

    #[test]
    fn the_base_is_the_override_then_the_setting_then_360dialogs() {
        let mut ch = channel(WhatsApp360DialogConfig {
            base_url: "https://waba-sandbox.360dialog.io/".into(),
            ..Default::default()
        });
        assert_eq!(base(&ch), "https://waba-sandbox.360dialog.io");
        ch.config.api_base_url = "http://127.0.0.1:9".into();
        assert_eq!(base(&ch), "http://127.0.0.1:9");
        assert_eq!(
            base(&channel(WhatsApp360DialogConfig::default())),
            DIALOG360_HOST
        );
    }

    #[test]
    fn metas_media_url_is_fetched_through_360dialog() {
        let file = url::Url::parse(
            "https://lookaside.fbsbx.com/whatsapp_business/attachments/?mid=1&ext=2&hash=3",
        )
        .expect("url");
        assert_eq!(
            through_360dialog(&file, DIALOG360_HOST),
            "https://waba-v2.360dialog.io/whatsapp_business/attachments/?mid=1&ext=2&hash=3"
        );
    }
}
