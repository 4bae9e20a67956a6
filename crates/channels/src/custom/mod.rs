//! The custom channel: our own HTTP protocol, for systems that connect
//! themselves (a shop, a call centre, a test receiver).
//!
//! Both directions are signed as Standard Webhooks with the channel's
//! secret (`whsec_…`): `webhook-id`, `webhook-timestamp` (±5 minutes) and
//! `webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`.
//!
//! - In: `POST {webhook_url}` with a `message.inbound` or `message.status`
//!   body ([`inbound`]); the `webhook-id` identifies the delivery.
//! - Out: `POST {outbound_url}` with a `message.outbound` body
//!   ([`outbound`]), the message id as `webhook-id`; the receiver answers
//!   2xx, with its `external_id` for the message when it has one.
//! - Files the channel announces are fetched with the same headers, signed
//!   over the URL being fetched, so the channel's server can refuse anyone
//!   else with the code that checks our messages.
//!
//! What a custom channel takes is its own setting: voice notes in its
//! `accepted_voice_types`, no text limit, no window, no rate limit.

pub mod inbound;
pub mod outbound;

use async_trait::async_trait;
use http::{HeaderMap, HeaderValue};
use telenet_proto::common::v1::{ChannelKind, ChannelProvider};
use telenet_proto::dispatch::v1::DeliveryState;
use telenet_proto::events::v1::OutboundRequested;
use telenet_signing::{Secret, SignatureError};

use crate::{
    Capabilities, ChannelCredentials, CredentialsError, Inbound, Provider, SendOutcome, VoiceNotes,
    Webhook, WebhookError,
};

/// The custom channel's provider.
#[derive(Debug, Clone, Copy, Default)]
pub struct Custom;

/// Its status names, as `message.status` bodies carry them.
const STATUSES: [(&str, DeliveryState); 4] = [
    ("sent", DeliveryState::Sent),
    ("delivered", DeliveryState::Delivered),
    ("read", DeliveryState::Read),
    ("failed", DeliveryState::Failed),
];

/// The delivery state a custom channel's status name means.
fn delivery_state(status: &str) -> Option<DeliveryState> {
    STATUSES
        .iter()
        .find(|(name, _)| *name == status)
        .map(|(_, state)| *state)
}

#[async_trait]
impl Provider for Custom {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Custom
    }

    fn provider(&self) -> ChannelProvider {
        ChannelProvider::Custom
    }

    fn capabilities(&self, channel: &ChannelCredentials) -> Capabilities {
        Capabilities {
            voice: VoiceNotes {
                accepted_types: channel.accepted_voice_types.clone(),
                ..VoiceNotes::default()
            },
            ..Capabilities::default()
        }
    }

    fn connect(
        &self,
        requested: ChannelCredentials,
    ) -> Result<ChannelCredentials, CredentialsError> {
        let outbound_url = checked_outbound_url(&requested.outbound_url)?;
        let secret = signing_secret(&requested.secret)?;
        for t in &requested.accepted_voice_types {
            if !t.contains('/') {
                return Err(CredentialsError::Invalid(format!(
                    "accepted_voice_types: {t:?} is not a MIME type"
                )));
            }
        }
        Ok(ChannelCredentials {
            kind: ChannelKind::Custom,
            provider: ChannelProvider::Custom,
            outbound_url,
            secret,
            ..requested
        })
    }

    fn verify(
        &self,
        channel: &ChannelCredentials,
        webhook: &Webhook<'_>,
    ) -> Result<(), WebhookError> {
        let secret = Secret::parse(&channel.secret)
            .map_err(|_| WebhookError::Credentials("the signing secret is invalid".into()))?;
        secret
            .verify(
                webhook.header("webhook-id"),
                webhook.header("webhook-timestamp"),
                webhook.header("webhook-signature"),
                webhook.body,
                webhook.now,
            )
            .map_err(webhook_error)
    }

    fn parse(
        &self,
        _: &ChannelCredentials,
        webhook: &Webhook<'_>,
    ) -> Result<Inbound, WebhookError> {
        let webhook_id = webhook.header("webhook-id").unwrap_or_default();
        let event = inbound::parse_inbound(webhook.body, webhook.channel_id, webhook_id)
            .map_err(WebhookError::Malformed)?;
        Ok(Inbound {
            delivery_id: Some(webhook_id.to_owned()),
            events: event.into_iter().collect(),
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
        let Ok(secret) = Secret::parse(&channel.secret) else {
            return SendOutcome::Reject("the channel's signing secret is invalid".into());
        };
        outbound::send_message(http, &channel.outbound_url, &secret, message).await
    }

    fn authorize_media_fetch(
        &self,
        channel: &ChannelCredentials,
        url: &str,
    ) -> Result<HeaderMap, CredentialsError> {
        let secret = Secret::parse(&channel.secret).map_err(|_| {
            CredentialsError::Invalid("the channel's signing secret is invalid".into())
        })?;
        sign_fetch(&secret, url, telenet_signing::unix_now())
    }
}

/// The Standard Webhooks headers of a fetch of `url`, the URL being the
/// signed body. The id is random: a fetch is not a message to de-duplicate,
/// and the receiver can still refuse a replayed one by its timestamp.
fn sign_fetch(secret: &Secret, url: &str, now: i64) -> Result<HeaderMap, CredentialsError> {
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut nonce).map_err(|e| {
        CredentialsError::Unavailable(format!("no randomness for the signature: {e}"))
    })?;
    let id = format!("fetch_{}", hex::encode(nonce));
    let signature = secret.sign(&id, now, url.as_bytes());
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("webhook-id", id),
        ("webhook-timestamp", now.to_string()),
        ("webhook-signature", signature),
    ] {
        // Hex, digits and base64: always valid header values.
        let value = HeaderValue::from_str(&value)
            .map_err(|e| CredentialsError::Invalid(format!("{name}: {e}")))?;
        headers.insert(name, value);
    }
    Ok(headers)
}

/// The channel's `outbound_url`, normalised: absolute, http or https, with
/// a host.
fn checked_outbound_url(text: &str) -> Result<String, CredentialsError> {
    let outbound = url::Url::parse(text).map_err(|e| {
        CredentialsError::Invalid(format!("outbound_url is not an absolute URL: {e}"))
    })?;
    if !matches!(outbound.scheme(), "http" | "https") || outbound.host().is_none() {
        return Err(CredentialsError::Invalid(
            "outbound_url must be an http or https URL with a host".into(),
        ));
    }
    Ok(outbound.into())
}

/// The secret as given (checked), or a new one when none was.
fn signing_secret(given: &str) -> Result<String, CredentialsError> {
    let secret = if given.is_empty() {
        Secret::generate().map_err(|e| {
            CredentialsError::Unavailable(format!("no randomness for a secret: {e}"))
        })?
    } else {
        Secret::parse(given).map_err(|e| CredentialsError::Invalid(format!("secret: {e}")))?
    };
    Ok(secret.expose())
}

/// The signature check's verdict in the provider-neutral terms, with the
/// same words.
fn webhook_error(e: SignatureError) -> WebhookError {
    match e {
        SignatureError::MissingHeader(name) => WebhookError::MissingHeader(name),
        SignatureError::BadTimestamp => WebhookError::BadTimestamp(e.to_string()),
        SignatureError::StaleTimestamp => WebhookError::Stale(e.to_string()),
        SignatureError::Mismatch | SignatureError::TooManySignatures => {
            WebhookError::BadSignature(e.to_string())
        }
        SignatureError::BadSecret => {
            WebhookError::Credentials("the signing secret is invalid".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn custom(secret: &str) -> ChannelCredentials {
        ChannelCredentials {
            kind: ChannelKind::Custom,
            outbound_url: "https://shop.example/in".into(),
            secret: secret.into(),
            accepted_voice_types: vec!["audio/ogg".into()],
            ..Default::default()
        }
    }

    #[test]
    fn connecting_checks_and_completes_the_settings() {
        let connected = Custom.connect(custom("")).expect("connects");
        assert!(connected.secret.starts_with("whsec_"));
        let given = Secret::generate().expect("rng").expose();
        assert_eq!(
            Custom.connect(custom(&given)).expect("connects").secret,
            given
        );
        let mut bare = custom(&given);
        bare.outbound_url = "http://shop.example".into();
        assert_eq!(
            Custom.connect(bare).expect("connects").outbound_url,
            "http://shop.example/",
            "stored normalised"
        );
        type Spoil = fn(&mut ChannelCredentials);
        let cases: [(Spoil, &str); 4] = [
            (
                |c| c.outbound_url = "shop.example/in".into(),
                "outbound_url is not an absolute URL",
            ),
            (
                |c| c.outbound_url = "ftp://shop.example/in".into(),
                "outbound_url must be",
            ),
            (|c| c.secret = "plain".into(), "secret: "),
            (
                |c| c.accepted_voice_types = vec!["ogg".into()],
                "accepted_voice_types",
            ),
        ];
        for (spoil, needle) in cases {
            let mut requested = custom("");
            spoil(&mut requested);
            let Err(CredentialsError::Invalid(reason)) = Custom.connect(requested) else {
                panic!("{needle}: must be refused");
            };
            assert!(
                reason.contains(needle),
                "{reason:?} should mention {needle:?}"
            );
        }
    }

    #[test]
    fn signature_errors_keep_their_words() {
        for e in [
            SignatureError::MissingHeader("webhook-id"),
            SignatureError::BadTimestamp,
            SignatureError::StaleTimestamp,
            SignatureError::Mismatch,
        ] {
            let mapped = webhook_error(e.clone());
            assert!(mapped.is_unauthenticated(), "{mapped:?}");
            assert_eq!(mapped.to_string(), e.to_string());
        }
    }

    #[test]
    fn fetches_are_signed_over_the_url() {
        let secret = Secret::generate().expect("rng");
        let url = "https://files.shop.example/v.ogg?x=1";
        let headers = sign_fetch(&secret, url, 1_700_000_000).expect("signed");
        let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
        assert!(h("webhook-id").is_some_and(|id| id.starts_with("fetch_") && id.len() == 30));
        assert_eq!(
            secret.verify(
                h("webhook-id"),
                h("webhook-timestamp"),
                h("webhook-signature"),
                url.as_bytes(),
                1_700_000_000,
            ),
            Ok(())
        );
        let invalid = ChannelCredentials {
            secret: "nope".into(),
            ..custom("")
        };
        assert!(matches!(
            Custom.authorize_media_fetch(&invalid, url),
            Err(CredentialsError::Invalid(_))
        ));
    }

    #[test]
    fn statuses_are_the_four_of_the_protocol() {
        assert_eq!(delivery_state("read"), Some(DeliveryState::Read));
        assert_eq!(delivery_state("Read"), None);
        assert_eq!(delivery_state("pending"), None);
    }
}
