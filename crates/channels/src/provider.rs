//! The provider trait and what passes through it.

use std::time::Duration;

use async_trait::async_trait;
use http::{HeaderMap, Method, StatusCode};
use telenet_proto::common::v1::{AttachmentKind, ChannelKind, ChannelProvider};
use telenet_proto::dispatch::v1::DeliveryState;
use telenet_proto::events::v1::event_envelope::Payload;
use telenet_proto::events::v1::{InboundMessageReceived, InboundStatusReceived, OutboundRequested};

use crate::ChannelCredentials;

/// One messaging provider: everything TELENET knows about talking to it.
///
/// Implementations hold no per-channel state: a channel's settings and
/// secrets come with every call ([`ChannelCredentials`]). Methods that only
/// compute are plain functions of their inputs (the time included, in
/// [`Webhook::now`]), so they are tested without a network.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// The kind of channel this provider serves.
    fn kind(&self) -> ChannelKind;

    /// The provider itself (several may serve one kind: WhatsApp through
    /// Meta's Cloud API or through 360dialog).
    fn provider(&self) -> ChannelProvider;

    /// What to enter on the provider's side for its webhooks to reach
    /// `channel` (the verify token, a secret header, the events to
    /// subscribe to). Nothing by default.
    fn webhook_setup(&self, channel: &ChannelCredentials) -> WebhookSetup {
        let _ = channel;
        WebhookSetup::default()
    }

    /// Whether TELENET registers the webhook with the provider itself
    /// ([`register_webhook`](Self::register_webhook) does something).
    fn registers_webhook(&self) -> bool {
        false
    }

    /// Register `webhook_url` with the provider, where it lets TELENET do it
    /// (Telegram `setWebhook`, Viber `set_webhook`), through `http`.
    /// `Ok(true)`: registered; `Ok(false)`: the provider has no such call
    /// (the URL is entered in its console, see
    /// [`webhook_setup`](Self::webhook_setup)). `Invalid`: the provider
    /// refused (bad token), naming why; `Unavailable`: it could not be asked.
    async fn register_webhook(
        &self,
        http: &reqwest::Client,
        channel: &ChannelCredentials,
        webhook_url: &str,
    ) -> Result<bool, CredentialsError> {
        let _ = (http, channel, webhook_url);
        Ok(false)
    }

    /// Check the channel's credentials with the provider now (a cheap
    /// authenticated read, e.g. Telegram `getMe`), for TestChannel. Empty:
    /// the provider has nothing to check.
    async fn check(&self, http: &reqwest::Client, channel: &ChannelCredentials) -> Vec<Check> {
        let _ = (http, channel);
        Vec::new()
    }

    /// The request that fetches a file announced in an inbound message
    /// (`url`, the attachment's `url` as the parser wrote it; never a
    /// secret). By default `url` itself, with
    /// [`authorize_media_fetch`](Self::authorize_media_fetch)'s headers;
    /// providers that name files by id resolve them first (WhatsApp's media
    /// id → a short-lived URL, Telegram's `getFile`), through `http`.
    async fn media_fetch(
        &self,
        http: &reqwest::Client,
        channel: &ChannelCredentials,
        url: &str,
    ) -> Result<MediaFetch, CredentialsError> {
        let _ = http;
        Ok(MediaFetch {
            url: url.to_owned(),
            headers: self.authorize_media_fetch(channel, url)?,
        })
    }

    /// What a channel of this provider can carry.
    fn capabilities(&self, channel: &ChannelCredentials) -> Capabilities;

    /// Check the settings a channel is being connected with and complete
    /// them: normalise URLs, generate what TELENET generates (a signing
    /// secret, a verify token). Errors name the setting.
    fn connect(
        &self,
        requested: ChannelCredentials,
    ) -> Result<ChannelCredentials, CredentialsError>;

    /// The answer to a request that is a handshake rather than an event
    /// (Meta's `GET …?hub.mode=subscribe&hub.challenge=…`, WeChat's
    /// `echostr`, X's CRC): it is answered as it is, before and instead of
    /// [`verify`](Self::verify), and publishes nothing. `None`: not a
    /// handshake, go on verifying. Callbacks that are signed like events
    /// (Viber's `event: "webhook"`) are verified and parse into no events.
    fn handshake(
        &self,
        channel: &ChannelCredentials,
        webhook: &Webhook<'_>,
    ) -> Option<HandshakeAnswer> {
        let _ = (channel, webhook);
        None
    }

    /// Whether the webhook comes from the provider, for this channel:
    /// its signature over the raw body (compared in constant time) and its
    /// freshness.
    fn verify(
        &self,
        channel: &ChannelCredentials,
        webhook: &Webhook<'_>,
    ) -> Result<(), WebhookError>;

    /// The canonical events of a verified webhook. Unknown fields are
    /// ignored and unknown event types give no events (they are
    /// acknowledged), unless the provider's protocol is our own.
    fn parse(
        &self,
        channel: &ChannelCredentials,
        webhook: &Webhook<'_>,
    ) -> Result<Inbound, WebhookError>;

    /// The delivery state a provider's status name means; `None` for one it
    /// does not send.
    fn delivery_state(&self, status: &str) -> Option<DeliveryState>;

    /// Send one message (text, files, voice notes in a form the channel
    /// takes, see [`Capabilities::voice`]) on the channel, through `http`,
    /// which carries the time limits of one attempt.
    async fn send(
        &self,
        http: &reqwest::Client,
        channel: &ChannelCredentials,
        message: &OutboundRequested,
    ) -> SendOutcome;

    /// Headers that authenticate a fetch of `url`, a file the provider
    /// announced in an inbound message (its exact text, as fetched). Empty:
    /// fetched without credentials.
    fn authorize_media_fetch(
        &self,
        channel: &ChannelCredentials,
        url: &str,
    ) -> Result<HeaderMap, CredentialsError> {
        let _ = (channel, url);
        Ok(HeaderMap::new())
    }
}

/// What to enter on a provider's side for webhooks to reach a channel.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WebhookSetup {
    /// Meta's verify token, entered with the URL.
    pub verify_token: String,
    /// A static header the provider sends (360dialog): its name and value.
    pub header: Option<(String, String)>,
    /// The webhook fields or events to subscribe to.
    pub subscribe_events: Vec<String>,
}

/// The result of one check of a channel with its provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked (`credentials`, `webhook_registration`, …).
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// What was found (the provider's error, sanitised, when it failed).
    pub detail: String,
}

/// How to fetch a file a provider announced.
#[derive(Debug, Clone)]
pub struct MediaFetch {
    /// The URL to GET.
    pub url: String,
    /// The headers that authenticate it.
    pub headers: HeaderMap,
}

/// A webhook request as ingress received it on `/webhooks/{channel_id}`.
#[derive(Debug, Clone, Copy)]
pub struct Webhook<'a> {
    /// The channel the URL names.
    pub channel_id: &'a str,
    /// `POST` for events; `GET` for most handshakes.
    pub method: &'a Method,
    /// The channel's public webhook URL, as the provider calls it (some
    /// providers sign it).
    pub url: &'a str,
    /// The query string as received, without `?` (empty when none).
    pub query: &'a str,
    /// The request's headers.
    pub headers: &'a HeaderMap,
    /// The raw body: signatures are over these bytes, never over a
    /// re-serialisation.
    pub body: &'a [u8],
    /// When it arrived, in unix seconds (timestamps are judged against it).
    pub now: i64,
}

impl Webhook<'_> {
    /// A header's value as text; `None` when missing or not visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Why a webhook is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// A header the provider always sends is missing.
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// The timestamp cannot be read.
    #[error("{0}")]
    BadTimestamp(String),
    /// The timestamp is too far from now: a replay, or a clock to fix.
    #[error("{0}")]
    Stale(String),
    /// The signature does not match the body under the channel's secret.
    #[error("{0}")]
    BadSignature(String),
    /// Authentic, but not something the provider sends; names the field.
    #[error("{0}")]
    Malformed(String),
    /// The channel's stored credentials cannot check anything: a setting to
    /// fix on our side, not the sender's fault.
    #[error("the channel's credentials are unusable: {0}")]
    Credentials(String),
}

impl WebhookError {
    /// Whether the webhook failed authentication (as opposed to being
    /// malformed, or our settings being broken).
    pub fn is_unauthenticated(&self) -> bool {
        matches!(
            self,
            WebhookError::MissingHeader(_)
                | WebhookError::BadTimestamp(_)
                | WebhookError::Stale(_)
                | WebhookError::BadSignature(_)
        )
    }
}

/// The answer to a handshake, sent as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeAnswer {
    /// Its status (200 when the handshake succeeds, 403 when it names
    /// another channel's token).
    pub status: StatusCode,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its body (the echoed challenge).
    pub body: Vec<u8>,
}

/// What one webhook brought.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Inbound {
    /// The provider's id of this delivery, when it gives one: a redelivery
    /// carries the same (Standard Webhooks' `webhook-id`, LINE's
    /// `webhookEventId`).
    pub delivery_id: Option<String>,
    /// Its events, in the order the provider listed them; none for a
    /// callback that only needs acknowledging.
    pub events: Vec<InboundEvent>,
}

/// One canonical event of a webhook.
#[derive(Debug, Clone, PartialEq)]
pub enum InboundEvent {
    /// A message from a contact.
    Message(InboundMessageReceived),
    /// A delivery state of one of our outbound messages.
    Status(InboundStatusReceived),
}

impl InboundEvent {
    /// What the event is recognised by when the provider delivers it again
    /// (ingress de-duplicates on it, per channel): a message by its id, an
    /// edit by the message and the delivery that brought it (each edit is
    /// news once), an unsend by the message, a status by the message and
    /// the state reported, a watermark status by the contact, the
    /// watermark and the state.
    pub fn identity(&self) -> String {
        use telenet_proto::common::v1::MessageChange;
        match self {
            InboundEvent::Message(m) => match m.change() {
                MessageChange::Unspecified => format!("message:{}", m.external_id),
                MessageChange::Edited => format!("edit:{}:{}", m.external_id, m.webhook_id),
                MessageChange::Unsent => format!("unsent:{}", m.external_id),
            },
            InboundEvent::Status(s) => match &s.watermark {
                Some(w) if s.message_external_id.is_empty() => format!(
                    "status:watermark:{}:{}.{:09}:{}",
                    s.contact_external_id, w.seconds, w.nanos, s.state
                ),
                _ => format!("status:{}:{}", s.message_external_id, s.state),
            },
        }
    }

    /// The event as the payload of an event envelope.
    pub fn into_payload(self) -> Payload {
        match self {
            InboundEvent::Message(m) => Payload::InboundMessageReceived(m),
            InboundEvent::Status(s) => Payload::InboundStatusReceived(s),
        }
    }
}

/// What one send attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// The provider accepted the message; `external_id` is its id there, if
    /// it said (statuses refer to it).
    Sent { external_id: String },
    /// Worth another attempt later (server error, throttled, timed out,
    /// unreachable).
    Retry(String),
    /// The provider is throttling this channel (HTTP 429, a rate-limit
    /// error code): retry, not before `retry_after` (its `Retry-After`, or
    /// the provider's documented pause).
    Throttled {
        reason: String,
        retry_after: Duration,
    },
    /// Can never succeed as it is (refused by the provider, unusable
    /// settings).
    Reject(String),
}

/// Why a channel's settings or secrets cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    /// They are wrong; the message names the setting.
    #[error("{0}")]
    Invalid(String),
    /// Something they need is missing right now (the system's randomness).
    #[error("{0}")]
    Unavailable(String),
}

/// What a channel can carry; dispatch fits messages to it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// The longest text of one message; `None`: no limit the provider
    /// states.
    pub text: Option<TextLimit>,
    /// Attachments accepted besides voice notes, by kind; empty: any file.
    pub media: Vec<MediaRule>,
    /// How voice notes go out.
    pub voice: VoiceNotes,
    /// How long after the contact's last message free-form replies are
    /// allowed (WhatsApp's 24 hours); `None`: always.
    pub reply_window: Option<Duration>,
    /// The provider's sending limits.
    pub rate_limits: Vec<RateLimit>,
}

/// A text length limit, in the unit the provider counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextLimit {
    /// Most units in one message.
    pub max: usize,
    /// What is counted.
    pub unit: TextUnit,
    /// What happens to a longer text: split into several messages at word
    /// boundaries ([`TextLimit::split`]), or refused before sending.
    pub overflow: Overflow,
}

/// What a provider does with a text over its limit (a documented choice
/// per provider).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Sent as several messages, split at word boundaries.
    Split,
    /// Refused with an error naming the limit.
    Refuse,
}

impl TextLimit {
    /// Whether `text` fits.
    pub fn fits(&self, text: &str) -> bool {
        self.unit.measure(text) <= self.max
    }

    /// `text` in parts that each fit, cut at the last whitespace that
    /// keeps a part within the limit (a word longer than the limit is cut
    /// between characters, never inside one). Whitespace at a cut is
    /// dropped; nothing else is. One part when it fits; none when empty.
    pub fn split(&self, text: &str) -> Vec<String> {
        let mut parts = Vec::new();
        let mut rest = text;
        let max = self.max.max(1);
        while !rest.is_empty() {
            if self.unit.measure(rest) <= max {
                parts.push(rest.to_owned());
                break;
            }
            // The longest prefix that fits, in characters.
            let mut end = 0;
            let mut used = 0;
            let mut last_space = None;
            for (i, c) in rest.char_indices() {
                let width = self.unit.measure(c.encode_utf8(&mut [0; 4]));
                if used + width > max {
                    break;
                }
                used += width;
                end = i + c.len_utf8();
                if c.is_whitespace() {
                    last_space = Some(i);
                }
            }
            let cut = match last_space {
                Some(i) if !rest[..i].trim().is_empty() => i,
                _ => end,
            };
            let cut = if cut == 0 {
                rest.chars().next().map_or(rest.len(), char::len_utf8)
            } else {
                cut
            };
            let part = rest[..cut].trim_end();
            if !part.is_empty() {
                parts.push(part.to_owned());
            }
            rest = rest[cut..].trim_start();
        }
        parts
    }
}

/// What a provider counts when it limits text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextUnit {
    /// Unicode characters (scalar values).
    Chars,
    /// UTF-16 code units (an emoji outside the BMP counts 2).
    Utf16,
    /// UTF-8 bytes.
    Bytes,
}

impl TextUnit {
    /// The length of `text` in this unit.
    pub fn measure(self, text: &str) -> usize {
        match self {
            TextUnit::Chars => text.chars().count(),
            TextUnit::Utf16 => text.encode_utf16().count(),
            TextUnit::Bytes => text.len(),
        }
    }
}

/// The attachments of one kind a provider accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRule {
    /// The kind of attachment.
    pub kind: AttachmentKind,
    /// Accepted MIME types (essences, e.g. `image/png`); empty: any.
    pub mime_types: Vec<String>,
    /// Largest file, in bytes; `None`: no limit the provider states.
    pub max_bytes: Option<u64>,
}

/// How a channel takes voice notes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VoiceNotes {
    /// MIME types a voice note can be sent in, best first (the media
    /// service makes the first it can); empty: voice notes go as files, as
    /// recorded.
    pub accepted_types: Vec<String>,
    /// Largest voice note, in bytes; `None`: no limit the provider states.
    pub max_bytes: Option<u64>,
    /// Longest voice note; `None`: no limit the provider states.
    pub max_duration: Option<Duration>,
}

/// A sending limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Most messages…
    pub messages: u32,
    /// …in this long…
    pub per: Duration,
    /// …counted over this.
    pub scope: RateScope,
}

/// What a rate limit counts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateScope {
    /// Everything the channel sends.
    Channel,
    /// What the channel sends to one contact.
    Recipient,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_measured_in_the_providers_unit() {
        let text = "héllo 👋";
        assert_eq!(TextUnit::Chars.measure(text), 7);
        assert_eq!(TextUnit::Utf16.measure(text), 8);
        assert_eq!(TextUnit::Bytes.measure(text), 11);
        let limit = TextLimit {
            max: 7,
            unit: TextUnit::Utf16,
            overflow: Overflow::Refuse,
        };
        assert!(!limit.fits(text));
        assert!(limit.fits("hello"));
    }

    #[test]
    fn long_text_is_split_at_word_boundaries_within_the_limit() {
        let limit = TextLimit {
            max: 10,
            unit: TextUnit::Chars,
            overflow: Overflow::Split,
        };
        assert_eq!(limit.split(""), Vec::<String>::new());
        assert_eq!(limit.split("short"), ["short"]);
        assert_eq!(
            limit.split("the quick brown fox jumps"),
            ["the quick", "brown fox", "jumps"]
        );
        // A word longer than the limit is cut between characters.
        assert_eq!(limit.split("abcdefghijklmno"), ["abcdefghij", "klmno"]);
        // Counted in the provider's unit: an emoji is two UTF-16 units and
        // is never cut in half.
        let utf16 = TextLimit {
            max: 3,
            unit: TextUnit::Utf16,
            overflow: Overflow::Split,
        };
        assert_eq!(utf16.split("a👋👋"), ["a👋", "👋"]);
        let bytes = TextLimit {
            max: 4,
            unit: TextUnit::Bytes,
            overflow: Overflow::Split,
        };
        for part in bytes.split("ñañaña ñu") {
            assert!(bytes.fits(&part), "{part:?}");
        }
        assert_eq!(bytes.split("ñañaña ñu").concat(), "ñañañañu");
    }

    #[test]
    fn only_authentication_failures_are_unauthenticated() {
        assert!(WebhookError::MissingHeader("x").is_unauthenticated());
        assert!(WebhookError::Stale("old".into()).is_unauthenticated());
        assert!(!WebhookError::Malformed("x".into()).is_unauthenticated());
        assert!(!WebhookError::Credentials("x".into()).is_unauthenticated());
    }
}
