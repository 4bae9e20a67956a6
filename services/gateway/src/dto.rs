//! The JSON shapes of the REST API and their conversion from the protobuf
//! messages of the upstream services.
//!
//! Conventions: snake_case fields, ids as strings, times as RFC 3339 UTC,
//! enums as lowercase strings, absent values as `null` (never `""`).

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use telenet_presence::{Status, UserPresence};
use telenet_proto::common::v1 as common;
use telenet_proto::contacts::v1 as contacts;
use telenet_proto::conversations::v1 as conv;
use telenet_proto::ingress::v1 as ingress;

pub use crate::routes::channel_settings::{ConnectKind, ProviderSettings};
use telenet_proto::reporting::v1 as reporting;
use utoipa::ToSchema;

// ---------------------------------------------------------------- helpers

/// Objects nested in request bodies are read only from JSON objects: serde's
/// derived structs would also take an array of their fields in order
/// (`"closing_note": [null, null]`), which the document does not allow.
/// (Whole bodies are checked by the extractors.)
mod object {
    use serde::de::{DeserializeOwned, Unexpected};
    use serde::{Deserialize, Deserializer};
    use serde_json::Value;

    fn from_object<T: DeserializeOwned, E: serde::de::Error>(value: Value) -> Result<T, E> {
        if !value.is_object() {
            let found = match &value {
                Value::Null => Unexpected::Unit,
                Value::Bool(b) => Unexpected::Bool(*b),
                Value::Number(_) => Unexpected::Other("a number"),
                Value::String(s) => Unexpected::Str(s),
                Value::Array(_) => Unexpected::Seq,
                Value::Object(_) => Unexpected::Map,
            };
            return Err(E::invalid_type(found, &"an object"));
        }
        serde_json::from_value(value).map_err(E::custom)
    }

    /// An optional object (`null` or absent is `None`).
    pub(super) fn optional<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: DeserializeOwned,
    {
        match Option::<Value>::deserialize(deserializer)? {
            None | Some(Value::Null) => Ok(None),
            Some(value) => from_object(value).map(Some),
        }
    }

    /// A list of objects.
    pub(super) fn list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: DeserializeOwned,
    {
        Vec::<Value>::deserialize(deserializer)?
            .into_iter()
            .map(from_object)
            .collect()
    }
}

/// A protobuf timestamp as UTC time; `None` when unset or out of range.
pub(crate) fn time(ts: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    let ts = ts?;
    let nanos = u32::try_from(ts.nanos).ok()?;
    DateTime::from_timestamp(ts.seconds, nanos)
}

/// A time as a protobuf timestamp.
pub(crate) fn timestamp(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// Protobuf leaves unset strings empty; JSON says `null`.
fn non_empty(value: String) -> Option<String> {
    (!value.is_empty()).then_some(value)
}

fn millis(ms: Option<i64>) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms?)
}

// --------------------------------------------------------------- presence

/// A user's activity status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PresenceStatus {
    /// Active recently.
    Online,
    /// Idle for a while, or chose to appear away.
    Away,
    /// Gone, or chose to appear offline.
    Offline,
}

impl From<Status> for PresenceStatus {
    fn from(status: Status) -> Self {
        match status {
            Status::Online => PresenceStatus::Online,
            Status::Away => PresenceStatus::Away,
            Status::Offline => PresenceStatus::Offline,
        }
    }
}

impl From<PresenceStatus> for Status {
    fn from(status: PresenceStatus) -> Self {
        match status {
            PresenceStatus::Online => Status::Online,
            PresenceStatus::Away => Status::Away,
            PresenceStatus::Offline => Status::Offline,
        }
    }
}

/// A user's presence right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Presence {
    /// The user.
    pub user_id: String,
    /// Effective status: derived from the last heartbeat, capped by `chosen`.
    pub status: PresenceStatus,
    /// The status the user chose (`online` when they chose nothing).
    pub chosen: PresenceStatus,
    /// The last heartbeat; `null` when none recently.
    pub last_seen_at: Option<DateTime<Utc>>,
}

impl From<UserPresence> for Presence {
    fn from(p: UserPresence) -> Self {
        Self {
            user_id: p.user_id,
            status: p.status.into(),
            chosen: p.chosen.into(),
            last_seen_at: millis(p.last_seen_ms),
        }
    }
}

/// Body of `PUT /v1/me/status`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetStatusBody {
    /// The status to show to teammates.
    pub status: PresenceStatus,
}

// ---------------------------------------------------------------- members

/// What a member may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AccessLevel {
    /// Sees what is assigned to them or their teams.
    Agent,
    /// Sees and manages every conversation of the workspace.
    Manager,
    /// Everything, including channels, members and settings.
    Owner,
}

impl AccessLevel {
    /// An unset level is shown as the least privileged one.
    fn from_proto(value: i32) -> Self {
        match conv::AccessLevel::try_from(value) {
            Ok(conv::AccessLevel::Owner) => AccessLevel::Owner,
            Ok(conv::AccessLevel::Manager) => AccessLevel::Manager,
            _ => AccessLevel::Agent,
        }
    }
}

/// A user of the workspace with their presence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MemberView {
    /// User id.
    pub user_id: String,
    /// The member's workspace.
    pub workspace_id: String,
    /// Display name.
    pub name: String,
    /// E-mail address.
    pub email: String,
    /// Access level.
    pub access_level: AccessLevel,
    /// When the member was added.
    pub created_at: Option<DateTime<Utc>>,
    /// Effective presence status.
    pub status: PresenceStatus,
}

impl MemberView {
    pub(crate) fn new(member: conv::Member, status: Status) -> Self {
        Self {
            created_at: time(member.created_at.as_ref()),
            access_level: AccessLevel::from_proto(member.access_level),
            user_id: member.user_id,
            workspace_id: member.workspace_id,
            name: member.name,
            email: member.email,
            status: status.into(),
        }
    }
}

/// The workspace's members, by name.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MemberList {
    /// The members.
    pub items: Vec<MemberView>,
}

// --------------------------------------------------------------- channels

/// The kind of messaging channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    /// Generic HTTP channel signed as Standard Webhooks.
    Custom,
    /// WhatsApp Cloud API.
    Whatsapp,
    /// Facebook Messenger.
    Messenger,
    /// Instagram messaging.
    Instagram,
    /// Telegram Bot API.
    Telegram,
    /// LINE Messaging API.
    Line,
    /// Viber.
    Viber,
    /// SMS.
    Sms,
    /// E-mail.
    Email,
    /// The website chat widget.
    WebWidget,
    /// WeChat official account.
    Wechat,
    /// Twitter/X direct messages.
    Twitter,
}

impl ChannelKind {
    /// Every stored channel has a kind; an unset one can only be the
    /// generic channel of an older record.
    fn from_proto(value: i32) -> Self {
        match common::ChannelKind::try_from(value) {
            Ok(common::ChannelKind::Whatsapp) => ChannelKind::Whatsapp,
            Ok(common::ChannelKind::Messenger) => ChannelKind::Messenger,
            Ok(common::ChannelKind::Instagram) => ChannelKind::Instagram,
            Ok(common::ChannelKind::Telegram) => ChannelKind::Telegram,
            Ok(common::ChannelKind::Line) => ChannelKind::Line,
            Ok(common::ChannelKind::Viber) => ChannelKind::Viber,
            Ok(common::ChannelKind::Sms) => ChannelKind::Sms,
            Ok(common::ChannelKind::Email) => ChannelKind::Email,
            Ok(common::ChannelKind::WebWidget) => ChannelKind::WebWidget,
            Ok(common::ChannelKind::Wechat) => ChannelKind::Wechat,
            Ok(common::ChannelKind::Twitter) => ChannelKind::Twitter,
            _ => ChannelKind::Custom,
        }
    }
}

/// Body of `POST /v1/channels`: the kind, a name, and that kind's
/// settings as flat fields (docs/channels/). Its `Debug` leaves the
/// secrets out.
#[derive(Clone, Deserialize, ToSchema)]
pub struct CreateChannelBody {
    /// What to connect: `custom`, `whatsapp_cloud` (or `whatsapp`),
    /// `whatsapp_360dialog`, `messenger`, `instagram`, `telegram`, `line`,
    /// `viber`.
    pub kind: ConnectKind,
    /// Display name (1–100 characters).
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    /// Custom channels: absolute http(s) URL outbound messages are POSTed to.
    #[serde(default)]
    pub outbound_url: String,
    /// Signing secret `whsec_<base64 key>`; generated when absent.
    #[serde(default)]
    pub secret: Option<String>,
    /// Custom channels: voice-note MIME types the receiver accepts, in order
    /// of preference.
    #[serde(default)]
    pub accepted_voice_types: Vec<String>,
    /// The provider's settings (every other kind).
    #[serde(flatten)]
    pub settings: ProviderSettings,
    /// Fields no kind has (refused, named).
    #[serde(flatten)]
    #[schema(ignore)]
    pub unknown: std::collections::BTreeMap<String, serde_json::Value>,
}

/// Body of `PATCH /v1/channels/{id}`: what to change. Settings left out
/// keep their values (secrets included); the provider cannot change.
#[derive(Clone, Default, Deserialize, ToSchema)]
pub struct UpdateChannelBody {
    /// Display name (1–100 characters).
    #[schema(min_length = 1, max_length = 100)]
    pub name: Option<String>,
    /// Custom channels: where outbound messages are POSTed.
    pub outbound_url: Option<String>,
    /// Custom channels: accepted voice-note MIME types, best first.
    pub accepted_voice_types: Option<Vec<String>>,
    /// The provider's settings to change.
    #[serde(flatten)]
    pub settings: ProviderSettings,
    /// Fields no kind has (refused, named).
    #[serde(flatten)]
    #[schema(ignore)]
    pub unknown: std::collections::BTreeMap<String, serde_json::Value>,
}

impl std::fmt::Debug for UpdateChannelBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpdateChannelBody")
            .field("name", &self.name)
            .field("outbound_url", &self.outbound_url)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Whether a channel works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChannelState {
    /// Credentials work; webhooks are (or can be) received.
    Active,
    /// Waiting for the provider's handshake or first webhook (enter the
    /// webhook URL in its console).
    PendingVerification,
    /// Credentials were refused or registration failed: see `status_detail`.
    Error,
}

impl ChannelState {
    /// The state a `ChannelStatus` names (unset: active).
    pub(crate) fn from_status(value: i32) -> Self {
        Self::from_proto(value)
    }

    fn from_proto(value: i32) -> Self {
        match ingress::ChannelStatus::try_from(value) {
            Ok(ingress::ChannelStatus::PendingVerification) => ChannelState::PendingVerification,
            Ok(ingress::ChannelStatus::Error) => ChannelState::Error,
            _ => ChannelState::Active,
        }
    }
}

/// What to enter on the provider's side for its webhooks to reach TELENET.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WebhookSetupView {
    /// The URL to register.
    pub url: String,
    /// Meta channels: the verify token to enter with the URL.
    pub verify_token: Option<String>,
    /// 360dialog: the name of the secret header TELENET registered.
    pub header_name: Option<String>,
    /// Its value (on connect only).
    pub header_value: Option<String>,
    /// The webhook fields or events to subscribe to.
    pub subscribe_events: Vec<String>,
    /// Whether TELENET registered the webhook itself (nothing to enter).
    pub registered_automatically: bool,
}

/// What happened on a channel lately (times written at most once a minute).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChannelHealthView {
    /// The last verified webhook.
    pub last_webhook_at: Option<DateTime<Utc>>,
    /// The last refused webhook, and why.
    pub last_rejected_webhook_at: Option<DateTime<Utc>>,
    pub last_rejection: Option<String>,
    /// The last send, whether the provider took it, and its error.
    pub last_send_at: Option<DateTime<Utc>>,
    pub last_send_ok: bool,
    pub last_send_error: Option<String>,
}

/// A channel with its provider, status, health and webhook setup.
/// Its `Debug` leaves the secret out.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChannelDetailsView {
    /// Channel id.
    pub id: String,
    /// Channel kind.
    pub kind: ChannelKind,
    /// The provider (`custom`, `whatsapp_cloud`, `telegram`, …).
    pub provider: String,
    /// Display name.
    pub name: String,
    /// Where the provider must send webhooks.
    pub webhook_url: String,
    /// Custom channels: where outbound messages are POSTed.
    pub outbound_url: Option<String>,
    /// Custom channels: accepted voice-note MIME types.
    pub accepted_voice_types: Vec<String>,
    /// Whether it works.
    pub status: ChannelState,
    /// Why it is pending or in error (for people).
    pub status_detail: Option<String>,
    /// How to point the provider's webhooks here.
    pub webhook: WebhookSetupView,
    /// The secret settings that have a value (never the values).
    pub secrets_set: Vec<String>,
    /// What happened on it lately.
    pub health: ChannelHealthView,
    /// Custom channels: the signing secret, on connect only.
    pub secret: Option<String>,
    /// When it was connected.
    pub created_at: Option<DateTime<Utc>>,
    /// When it last changed.
    pub updated_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for ChannelDetailsView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelDetailsView")
            .field("id", &self.id)
            .field("provider", &self.provider)
            .field("status", &self.status)
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

impl ChannelDetailsView {
    /// The view of `details` (with the custom channel's `secret`, on connect).
    pub(crate) fn new(details: ingress::ChannelDetails, secret: Option<String>) -> Self {
        let channel = details.channel.unwrap_or_default();
        let webhook = details.webhook.unwrap_or_default();
        let health = details.health.unwrap_or_default();
        let provider = common::ChannelProvider::try_from(details.provider)
            .unwrap_or(common::ChannelProvider::Unspecified);
        let provider = match provider {
            common::ChannelProvider::Unspecified => "custom".to_owned(),
            p => p
                .as_str_name()
                .trim_start_matches("CHANNEL_PROVIDER_")
                .to_ascii_lowercase(),
        };
        Self {
            kind: ChannelKind::from_proto(channel.kind),
            provider,
            created_at: time(channel.created_at.as_ref()),
            updated_at: time(details.updated_at.as_ref()),
            id: channel.id,
            name: channel.name,
            webhook_url: channel.webhook_url,
            outbound_url: non_empty(channel.outbound_url),
            accepted_voice_types: channel.accepted_voice_types,
            status: ChannelState::from_proto(details.status),
            status_detail: non_empty(details.status_detail),
            webhook: WebhookSetupView {
                url: webhook.url,
                verify_token: non_empty(webhook.verify_token),
                header_name: non_empty(webhook.header_name),
                header_value: non_empty(webhook.header_value),
                subscribe_events: webhook.subscribe_events,
                registered_automatically: webhook.registered_automatically,
            },
            secrets_set: details.secrets_set,
            health: ChannelHealthView {
                last_webhook_at: time(details.last_webhook_at.as_ref()),
                last_rejected_webhook_at: time(details.last_rejected_webhook_at.as_ref()),
                last_rejection: non_empty(health.last_rejection),
                last_send_at: time(health.last_send_at.as_ref()),
                last_send_ok: health.last_send_ok,
                last_send_error: non_empty(health.last_send_error),
            },
            secret: secret.filter(|s| !s.is_empty()),
        }
    }
}

/// One check of `POST /v1/channels/{id}/test`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChannelCheckView {
    /// What was checked (`credentials`, `webhook_registration`, …).
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// What was found.
    pub detail: String,
}

/// The result of `POST /v1/channels/{id}/test`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChannelTestView {
    /// Whether every check passed.
    pub ok: bool,
    /// The checks made.
    pub checks: Vec<ChannelCheckView>,
    /// The channel's status after the test.
    pub status: ChannelState,
}

/// A setting a kind of channel takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChannelFieldView {
    /// The field's name in `POST /v1/channels`.
    pub name: String,
    /// A label.
    pub label: String,
    pub required: bool,
    /// Write-only.
    pub secret: bool,
    /// Generated by TELENET when left out.
    pub generated: bool,
}

/// A kind of channel that can be connected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChannelKindView {
    /// The `kind` of `POST /v1/channels`.
    pub kind: String,
    /// Display name.
    pub display_name: String,
    /// One line.
    pub description: String,
    /// How its webhooks are authenticated.
    pub webhook_authentication: String,
    /// Whether this installation can connect it.
    pub available: bool,
    /// Its settings.
    pub fields: Vec<ChannelFieldView>,
}

/// The kinds of channel TELENET knows.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChannelKindList {
    pub items: Vec<ChannelKindView>,
}

/// A connected messaging channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChannelView {
    /// Channel id.
    pub id: String,
    /// Channel kind.
    pub kind: ChannelKind,
    /// Display name.
    pub name: String,
    /// Where the provider must send webhooks.
    pub webhook_url: String,
    /// Custom channels: where outbound messages are POSTed.
    pub outbound_url: Option<String>,
    /// Custom channels: accepted voice-note MIME types.
    pub accepted_voice_types: Vec<String>,
    /// When it was connected.
    pub created_at: Option<DateTime<Utc>>,
}

impl From<ingress::Channel> for ChannelView {
    fn from(c: ingress::Channel) -> Self {
        Self {
            kind: ChannelKind::from_proto(c.kind),
            created_at: time(c.created_at.as_ref()),
            id: c.id,
            name: c.name,
            webhook_url: c.webhook_url,
            outbound_url: non_empty(c.outbound_url),
            accepted_voice_types: c.accepted_voice_types,
        }
    }
}

impl std::fmt::Debug for CreateChannelBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateChannelBody")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("outbound_url", &self.outbound_url)
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .field("accepted_voice_types", &self.accepted_voice_types)
            .field("settings", &self.settings)
            .finish()
    }
}

/// A page of channels, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChannelPage {
    /// The channels.
    pub items: Vec<ChannelView>,
    /// Pass as `page_token` for the next page; `null` on the last page.
    pub next_page_token: Option<String>,
}

// ---------------------------------------------------------- conversations

/// Whether a conversation is in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConversationStatus {
    /// In the queue.
    Open,
    /// Resolved: out of the queue, unassigned from everyone.
    Closed,
}

/// The note left when closing a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClosingNoteView {
    /// One of the workspace's closing-note categories, or `null`.
    pub category: Option<String>,
    /// Summary of the conversation, or `null`.
    pub summary: Option<String>,
    /// Who closed the conversation.
    pub closed_by_user_id: Option<String>,
}

/// A thread with one contact over one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConversationView {
    /// Conversation id.
    pub id: String,
    /// The contact on the other side.
    pub contact_id: String,
    /// The channel the conversation runs over.
    pub channel_id: String,
    /// The contact's identity on the channel.
    pub contact_external_id: Option<String>,
    /// Open or closed.
    pub status: ConversationStatus,
    /// The user answering it; `null` when unassigned.
    pub assignee_user_id: Option<String>,
    /// The team it is assigned to, if any.
    pub assignee_team_id: Option<String>,
    /// Number of messages.
    pub message_count: u32,
    /// When it was opened.
    pub opened_at: Option<DateTime<Utc>>,
    /// Time of the latest message.
    pub last_message_at: Option<DateTime<Utc>>,
    /// When it was closed (closed conversations only).
    pub closed_at: Option<DateTime<Utc>>,
    /// The closing note (closed conversations only, when one was left).
    pub closing_note: Option<ClosingNoteView>,
    /// On channels with a reply window (WhatsApp, Messenger, Instagram):
    /// until when free-form replies are accepted (the contact's last message
    /// plus the window); `null` when the channel has none. In the past, a
    /// reply is refused (409) until the contact writes again.
    pub reply_window_closes_at: Option<DateTime<Utc>>,
}

impl From<conv::Conversation> for ConversationView {
    fn from(c: conv::Conversation) -> Self {
        let closed_at = time(c.closed_at.as_ref());
        let status = match conv::ConversationStatus::try_from(c.status) {
            Ok(conv::ConversationStatus::Closed) => ConversationStatus::Closed,
            Ok(conv::ConversationStatus::Open) => ConversationStatus::Open,
            // Unset: a conversation is closed exactly when it has a closing time.
            _ if closed_at.is_some() => ConversationStatus::Closed,
            _ => ConversationStatus::Open,
        };
        let closing_note = c.closing_note.and_then(|note| {
            let note = ClosingNoteView {
                category: non_empty(note.category),
                summary: non_empty(note.summary),
                closed_by_user_id: non_empty(note.closed_by_user_id),
            };
            let empty = note.category.is_none()
                && note.summary.is_none()
                && note.closed_by_user_id.is_none();
            (!empty).then_some(note)
        });
        Self {
            opened_at: time(c.opened_at.as_ref()),
            last_message_at: time(c.last_message_at.as_ref()),
            closed_at,
            status,
            closing_note,
            id: c.id,
            contact_id: c.contact_id,
            channel_id: c.channel_id,
            contact_external_id: non_empty(c.contact_external_id),
            assignee_user_id: non_empty(c.assignee_user_id),
            assignee_team_id: non_empty(c.assignee_team_id),
            message_count: c.message_count,
            reply_window_closes_at: time(c.reply_window_closes_at.as_ref()),
        }
    }
}

/// A page of conversations, newest activity first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConversationPage {
    /// The conversations.
    pub items: Vec<ConversationView>,
    /// Pass as `page_token` for the next page; `null` on the last page.
    pub next_page_token: Option<String>,
}

/// Body of `POST /v1/conversations/{id}/assign`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignBody {
    /// The member to assign the conversation to.
    #[schema(format = Uuid)]
    pub user_id: String,
}

/// A closing note as given when closing.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClosingNoteInput {
    /// One of the workspace's closing-note categories (by name).
    #[serde(default)]
    pub category: Option<String>,
    /// Summary of the conversation.
    #[serde(default)]
    pub summary: Option<String>,
}

/// Body of `POST /v1/conversations/{id}/close`; the whole body is optional.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseBody {
    /// Optional closing note.
    #[serde(default, deserialize_with = "object::optional")]
    pub closing_note: Option<ClosingNoteInput>,
}

// --------------------------------------------------------------- messages

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageDirection {
    /// From the contact.
    Inbound,
    /// From a user or bot to the contact.
    Outbound,
}

/// Delivery state of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageStatus {
    /// Inbound: received from the contact.
    Received,
    /// Outbound: stored, not yet accepted by the channel.
    Pending,
    /// Outbound: accepted by the channel.
    Sent,
    /// Outbound: reached the contact's device.
    Delivered,
    /// Outbound: the contact read it.
    Read,
    /// Outbound: could not be delivered; see `error`.
    Failed,
    /// Outbound: the contact played the voice note (after `read`).
    Played,
}

/// What an attachment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AttachmentKind {
    /// A picture.
    Image,
    /// An audio file that is not a voice note.
    Audio,
    /// A recorded voice note.
    Voice,
    /// A video.
    Video,
    /// Any other file.
    File,
    /// A sticker.
    Sticker,
}

impl AttachmentKind {
    pub(crate) fn to_proto(self) -> common::AttachmentKind {
        match self {
            AttachmentKind::Image => common::AttachmentKind::Image,
            AttachmentKind::Audio => common::AttachmentKind::Audio,
            AttachmentKind::Voice => common::AttachmentKind::Voice,
            AttachmentKind::Video => common::AttachmentKind::Video,
            AttachmentKind::File => common::AttachmentKind::File,
            AttachmentKind::Sticker => common::AttachmentKind::Sticker,
        }
    }
}

/// Where an attachment's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AttachmentState {
    /// Not fetched into the blob store yet.
    Pending,
    /// Stored under `blob_id`.
    Ready,
    /// Could not be fetched or stored; see `error`.
    Failed,
}

/// A file carried by a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AttachmentView {
    /// What the attachment is.
    pub kind: AttachmentKind,
    /// Whether the bytes are stored yet.
    pub state: AttachmentState,
    /// Declared MIME type.
    pub mime_type: Option<String>,
    /// Original file name.
    pub file_name: Option<String>,
    /// Size in bytes, `null` when unknown.
    pub size_bytes: Option<u64>,
    /// Duration of audio and video in milliseconds, `null` when unknown.
    pub duration_ms: Option<u64>,
    /// Content hash of the stored file.
    pub blob_id: Option<String>,
    /// Where the provider serves the file, if anywhere.
    pub url: Option<String>,
    /// Why fetching or storing failed.
    pub error: Option<String>,
}

impl From<common::Attachment> for AttachmentView {
    fn from(a: common::Attachment) -> Self {
        let kind = match common::AttachmentKind::try_from(a.kind) {
            Ok(common::AttachmentKind::Image) => AttachmentKind::Image,
            Ok(common::AttachmentKind::Audio) => AttachmentKind::Audio,
            Ok(common::AttachmentKind::Voice) => AttachmentKind::Voice,
            Ok(common::AttachmentKind::Video) => AttachmentKind::Video,
            Ok(common::AttachmentKind::Sticker) => AttachmentKind::Sticker,
            // The proto says an unset kind is treated as a file.
            _ => AttachmentKind::File,
        };
        let state = match common::AttachmentState::try_from(a.state) {
            Ok(common::AttachmentState::Ready) => AttachmentState::Ready,
            Ok(common::AttachmentState::Failed) => AttachmentState::Failed,
            Ok(common::AttachmentState::Pending) => AttachmentState::Pending,
            _ if !a.blob_id.is_empty() => AttachmentState::Ready,
            _ => AttachmentState::Pending,
        };
        Self {
            kind,
            state,
            mime_type: non_empty(a.mime_type),
            file_name: non_empty(a.file_name),
            size_bytes: (a.size_bytes > 0).then_some(a.size_bytes),
            duration_ms: (a.duration_ms > 0).then_some(a.duration_ms),
            blob_id: non_empty(a.blob_id),
            url: non_empty(a.url),
            error: non_empty(a.error),
        }
    }
}

/// A place a contact shared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LocationView {
    /// Degrees (WGS 84).
    pub latitude: f64,
    /// Degrees (WGS 84).
    pub longitude: f64,
    /// The place's name, if given.
    pub name: Option<String>,
    /// Its address, if given.
    pub address: Option<String>,
}

/// A reaction the contact left on a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReactionView {
    /// The emoji.
    pub emoji: String,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MessageView {
    /// Message id.
    pub id: String,
    /// The conversation it belongs to.
    pub conversation_id: String,
    /// Inbound or outbound.
    pub direction: MessageDirection,
    /// Author of an outbound message; `null` for inbound ones.
    pub author_user_id: Option<String>,
    /// UTF-8 text (may be empty when there are attachments).
    pub text: String,
    /// Files carried by the message.
    pub attachments: Vec<AttachmentView>,
    /// Delivery state.
    pub status: MessageStatus,
    /// The provider's id of the message.
    pub external_id: Option<String>,
    /// Why delivery failed (status `failed`).
    pub error: Option<String>,
    /// When the message was stored.
    pub created_at: Option<DateTime<Utc>>,
    /// When the status last changed.
    pub status_changed_at: Option<DateTime<Utc>>,
    /// A location the contact shared, when the message is one.
    pub location: Option<LocationView>,
    /// The message it quotes, when known.
    pub reply_to_message_id: Option<String>,
    /// Reactions the contact left on it.
    pub reactions: Vec<ReactionView>,
    /// Set for a kind of message TELENET does not show: the platform's
    /// name for it (shown as "unsupported message").
    pub unsupported_type: Option<String>,
    /// When its sender last edited it (the text is the edited one).
    pub edited_at: Option<DateTime<Utc>>,
    /// When its sender took it back (its text is kept for the record).
    pub unsent_at: Option<DateTime<Utc>>,
}

impl From<conv::Message> for MessageView {
    fn from(m: conv::Message) -> Self {
        let direction = match conv::MessageDirection::try_from(m.direction) {
            Ok(conv::MessageDirection::Outbound) => MessageDirection::Outbound,
            Ok(conv::MessageDirection::Inbound) => MessageDirection::Inbound,
            // Unset: only outbound messages have an author.
            _ if !m.author_user_id.is_empty() => MessageDirection::Outbound,
            _ => MessageDirection::Inbound,
        };
        let status = match conv::MessageStatus::try_from(m.status) {
            Ok(conv::MessageStatus::Received) => MessageStatus::Received,
            Ok(conv::MessageStatus::Pending) => MessageStatus::Pending,
            Ok(conv::MessageStatus::Sent) => MessageStatus::Sent,
            Ok(conv::MessageStatus::Delivered) => MessageStatus::Delivered,
            Ok(conv::MessageStatus::Read) => MessageStatus::Read,
            Ok(conv::MessageStatus::Failed) => MessageStatus::Failed,
            Ok(conv::MessageStatus::Played) => MessageStatus::Played,
            _ if direction == MessageDirection::Inbound => MessageStatus::Received,
            _ => MessageStatus::Pending,
        };
        Self {
            direction,
            status,
            created_at: time(m.created_at.as_ref()),
            status_changed_at: time(m.status_changed_at.as_ref()),
            attachments: m.attachments.into_iter().map(Into::into).collect(),
            id: m.id,
            conversation_id: m.conversation_id,
            author_user_id: non_empty(m.author_user_id),
            text: m.text,
            external_id: non_empty(m.external_id),
            error: non_empty(m.error),
            location: m.location.map(|l| LocationView {
                latitude: l.latitude,
                longitude: l.longitude,
                name: non_empty(l.name),
                address: non_empty(l.address),
            }),
            reply_to_message_id: non_empty(m.reply_to_message_id),
            reactions: m
                .reactions
                .into_iter()
                .map(|r| ReactionView { emoji: r.emoji })
                .collect(),
            unsupported_type: non_empty(m.unsupported_type),
            edited_at: time(m.edited_at.as_ref()),
            unsent_at: time(m.unsent_at.as_ref()),
        }
    }
}

/// A page of messages, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MessagePage {
    /// The messages.
    pub items: Vec<MessageView>,
    /// Pass as `page_token` for the next page; `null` on the last page.
    pub next_page_token: Option<String>,
}

/// Body of `POST /v1/conversations/{id}/messages`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessageBody {
    /// Text to send (UTF-8); may be empty or left out when files are sent.
    #[serde(default)]
    pub text: String,
    /// Files to send, uploaded first with `POST /v1/files` (at most 10). A
    /// `voice` file goes out as a voice note where the channel has them.
    #[serde(default, deserialize_with = "object::list")]
    #[schema(max_items = 10)]
    pub attachments: Vec<SendAttachmentBody>,
    /// Idempotency key chosen by the client: retrying with the same key
    /// returns the first message instead of sending twice (1 to 200
    /// printable ASCII characters, no spaces).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 200, pattern = "^[!-~]+$")]
    pub client_message_id: Option<String>,
}

/// A file to send with a reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendAttachmentBody {
    /// The file's id (from `POST /v1/files`).
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    pub file_id: String,
    /// What it is: `voice` (a recorded voice note, at most 5 minutes),
    /// `audio`, `image`, `video` or `file` (the default).
    #[serde(default)]
    pub kind: Option<AttachmentKind>,
    /// The name the contact sees (at most 255 characters, no control
    /// characters).
    #[serde(default)]
    #[schema(max_length = 255, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    pub file_name: Option<String>,
}

/// A reply just stored, and its conversation after the reply (assigned to
/// the replier if it was unassigned).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SentMessage {
    /// The stored message (status `pending`).
    pub message: MessageView,
    /// The conversation after the reply.
    pub conversation: ConversationView,
}

// --------------------------------------------------------------- contacts

/// A contact's address on one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct IdentityView {
    /// The channel.
    pub channel_id: String,
    /// The contact's id on that channel (phone number, chat id, …).
    pub external_id: String,
    /// When the identity was first seen.
    pub created_at: Option<DateTime<Utc>>,
}

/// A person who writes to the workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ContactView {
    /// Contact id.
    pub id: String,
    /// Display name.
    pub display_name: String,
    /// The contact's channel identities.
    pub identities: Vec<IdentityView>,
    /// When the contact was created.
    pub created_at: Option<DateTime<Utc>>,
    /// When the contact last changed.
    pub updated_at: Option<DateTime<Utc>>,
}

impl From<contacts::Contact> for ContactView {
    fn from(c: contacts::Contact) -> Self {
        Self {
            created_at: time(c.created_at.as_ref()),
            updated_at: time(c.updated_at.as_ref()),
            identities: c
                .identities
                .into_iter()
                .map(|i| IdentityView {
                    created_at: time(i.created_at.as_ref()),
                    channel_id: i.channel_id,
                    external_id: i.external_id,
                })
                .collect(),
            id: c.id,
            display_name: c.display_name,
        }
    }
}

// ---------------------------------------------------------------- reports

/// Counts of one day on one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DailyVolumeRow {
    /// The day (UTC), `YYYY-MM-DD`.
    pub day: String,
    /// The channel.
    pub channel_id: String,
    /// Conversations opened that day.
    pub conversations_opened: u64,
    /// Conversations closed that day.
    pub conversations_closed: u64,
    /// Messages received from contacts.
    pub messages_in: u64,
    /// Messages sent to contacts.
    pub messages_out: u64,
}

impl From<reporting::DailyVolume> for DailyVolumeRow {
    fn from(r: reporting::DailyVolume) -> Self {
        Self {
            day: r.day,
            channel_id: r.channel_id,
            conversations_opened: r.conversations_opened,
            conversations_closed: r.conversations_closed,
            messages_in: r.messages_in,
            messages_out: r.messages_out,
        }
    }
}

/// Conversations and messages per day and channel, over `from..=to`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DailyVolumeReport {
    /// First day included (UTC).
    pub from: NaiveDate,
    /// Last day included (UTC).
    pub to: NaiveDate,
    /// The channel reported on; `null` for all channels.
    pub channel_id: Option<String>,
    /// One row per day and channel with any activity, by day then channel.
    pub rows: Vec<DailyVolumeRow>,
}

// ------------------------------------------------------------------- misc

/// Answer of `GET /healthz`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok` while the process serves HTTP.
    pub status: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_secrets_stay_out_of_debug_output() {
        let body: CreateChannelBody = serde_json::from_value(serde_json::json!({
            "kind": "custom",
            "name": "Shop",
            "outbound_url": "https://shop.example/in",
            "secret": "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=",
        }))
        .expect("body");
        let shown = format!("{body:?}");
        assert!(
            shown.contains("Shop") && shown.contains("\"***\""),
            "{shown}"
        );
        assert!(!shown.contains("c2VjcmV0"), "{shown}");

        let created = ChannelDetailsView::new(
            ingress::ChannelDetails {
                channel: Some(ingress::Channel {
                    id: "ch1".into(),
                    name: "Shop".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Some("whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=".into()),
        );
        let shown = format!("{created:?}");
        assert!(shown.contains("ch1"), "{shown}");
        assert!(!shown.contains("c2VjcmV0"), "{shown}");
        // The answer itself still carries it: shown once, at creation.
        let json = serde_json::to_value(&created).expect("json");
        assert_eq!(json["secret"], "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=");
    }
}

// ----------------------------------------------------------------- tokens

/// An API token as listed: never its value, which is shown only when it
/// is created.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenView {
    /// Token id.
    pub id: String,
    /// The member the token acts as.
    pub user_id: String,
    /// The label given when it was created.
    pub label: String,
    /// Its first characters, to recognise it by (never enough to use it).
    pub prefix: String,
    /// When it was created.
    pub created_at: Option<DateTime<Utc>>,
    /// When it was last used (minute precision); `null` if never.
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it stops working; `null` if it works until revoked.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked; `null` while valid.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<conv::ApiToken> for TokenView {
    fn from(t: conv::ApiToken) -> Self {
        Self {
            created_at: time(t.created_at.as_ref()),
            last_used_at: time(t.last_used_at.as_ref()),
            expires_at: time(t.expires_at.as_ref()),
            revoked_at: time(t.revoked_at.as_ref()),
            id: t.id,
            user_id: t.user_id,
            label: t.label,
            prefix: t.prefix,
        }
    }
}

/// A page of tokens, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenPage {
    /// The tokens.
    pub items: Vec<TokenView>,
    /// Token of the next page; `null` on the last.
    pub next_page_token: Option<String>,
}

/// A new API token for the caller.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenBody {
    /// A label to recognise it by (at most 100 characters).
    #[serde(default)]
    #[schema(max_length = 100, example = "CI")]
    pub label: Option<String>,
    /// When it stops working: in the future, at most 366 days ahead.
    /// Absent: it works until revoked.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

/// A new token: its value, shown only here, and how it is listed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    /// The bearer token (shown only here; only its hash is kept).
    pub token: String,
    /// The token as `GET /v1/tokens` lists it.
    pub api_token: TokenView,
}
