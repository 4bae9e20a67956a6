//! What Messenger and Instagram share: the `entry[].messaging[]` webhook
//! body, read into canonical events (the Send API they share is in
//! [`super::send`]).
//!
//! A webhook body is `{"object": "page" | "instagram", "entry": [{"id",
//! "time", "messaging": [event, …]}, …]}`; Meta batches: every entry and
//! every event of it is read, in order. Each event has `sender.id`,
//! `recipient.id`, `timestamp` (milliseconds) and one of:
//!
//! - `message{mid, text?, attachments?[{type, payload{url, sticker_id?,
//!   coordinates?, title?}}], reply_to?{mid}, is_echo?, is_deleted?,
//!   is_unsupported?}`: a message (or, with `is_echo`, one the page sent
//!   from another tool; with `is_deleted`, an unsend);
//! - `message_edit{mid, text}`: an edit;
//! - `reaction{mid, action: react|unreact, emoji?}`: a reaction;
//! - `delivery{mids?, watermark}` and `read{watermark?, mid?}`: statuses;
//! - anything else (`postback`, `referral`, `optin`, handover events):
//!   acknowledged, no events.
//!
//! `entry[].standby[]` carries the same events while another app of the
//! handover protocol controls the conversation: they are read too (after
//! `messaging[]`), so the inbox keeps the whole conversation.
//!
//! Reactions and statuses have no id of their own: a reaction is named
//! `reaction:{mid}:{contact}:{timestamp}`, a status `delivery:{mid}` /
//! `read:{mid}`, or `{delivery|read}:{contact}:{watermark}` for a
//! watermark; edits and unsends keep the original `mid` as their message
//! id and get delivery ids of their own (`{mid}:edit:{n}`,
//! `{mid}:unsent`).
//!
//! Unknown fields are ignored and `null` reads as absent. A body that is
//! not JSON, is another product's (`object`), or lacks an id an event needs
//! is malformed, and the error names the field.

use serde::Deserialize;
use telenet_proto::common::v1::{
    Attachment, AttachmentKind, AttachmentState, ChannelKind, ChannelProvider, Location,
    MessageChange, Reaction,
};
use telenet_proto::dispatch::v1::DeliveryState;
use telenet_proto::events::v1::{InboundMessageReceived, InboundStatusReceived, Sender};

use crate::{InboundEvent, WebhookError};

/// Sets a `google.protobuf.Timestamp` field to a time in milliseconds.
macro_rules! set_time_ms {
    ($slot:expr, $ms:expr) => {{
        let ms: i64 = $ms;
        let t = $slot.get_or_insert_with(Default::default);
        t.seconds = ms.div_euclid(1000);
        // In 0..1000, so the product fits.
        t.nanos = i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0);
    }};
}

/// Who receives the events a body carries: the product it is for and
/// how its audio attachments read.
#[derive(Debug, Clone, Copy)]
pub struct Product {
    /// The webhook `object` it sends (`page`, `instagram`).
    pub object: &'static str,
    /// The channel kind of its messages.
    pub kind: ChannelKind,
    /// The provider of its messages.
    pub provider: ChannelProvider,
    /// Whether every audio attachment is a voice note (Instagram only
    /// sends voice messages as audio); otherwise only Messenger's voice
    /// clips (`audioclip-…` URLs) are.
    pub audio_is_voice: bool,
}

#[derive(Debug, Deserialize)]
struct Body {
    #[serde(default)]
    object: Option<String>,
    #[serde(default)]
    entry: Option<Vec<Entry>>,
}

#[derive(Debug, Deserialize)]
struct Entry {
    #[serde(default)]
    messaging: Option<Vec<Event>>,
    #[serde(default)]
    standby: Option<Vec<Event>>,
}

#[derive(Debug, Deserialize)]
struct Event {
    #[serde(default)]
    sender: Option<Party>,
    #[serde(default)]
    recipient: Option<Party>,
    #[serde(default)]
    timestamp: Option<i64>,
    #[serde(default)]
    message: Option<Message>,
    #[serde(default)]
    message_edit: Option<MessageEdit>,
    #[serde(default)]
    reaction: Option<ReactionBody>,
    #[serde(default)]
    delivery: Option<Delivery>,
    #[serde(default)]
    read: Option<Read>,
}

#[derive(Debug, Deserialize)]
struct Party {
    #[serde(default)]
    id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Message {
    #[serde(default)]
    mid: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    attachments: Option<Vec<AttachmentBody>>,
    #[serde(default)]
    reply_to: Option<ReplyTo>,
    #[serde(default)]
    is_echo: Option<bool>,
    /// Echoes: the app that sent the message.
    #[serde(default)]
    app_id: Option<serde_json::Value>,
    #[serde(default)]
    is_deleted: Option<bool>,
    #[serde(default)]
    is_unsupported: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct ReplyTo {
    #[serde(default)]
    mid: Option<String>,
}

#[derive(Debug, Deserialize)]
struct AttachmentBody {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    payload: Option<Payload>,
    /// Fallback attachments put their title here.
    #[serde(default)]
    title: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Payload {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    sticker_id: Option<serde_json::Value>,
    #[serde(default)]
    coordinates: Option<Coordinates>,
}

#[derive(Debug, Deserialize)]
struct Coordinates {
    #[serde(default)]
    lat: Option<f64>,
    #[serde(default)]
    long: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct MessageEdit {
    #[serde(default)]
    mid: Option<String>,
    #[serde(default)]
    num_edit: Option<i64>,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ReactionBody {
    #[serde(default)]
    mid: Option<String>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    emoji: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Delivery {
    #[serde(default)]
    mids: Option<Vec<String>>,
    #[serde(default)]
    watermark: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct Read {
    #[serde(default)]
    watermark: Option<i64>,
    #[serde(default)]
    mid: Option<String>,
}

/// The name of a status in [`InboundStatusReceived`]s built from a
/// `delivery` event, and the delivery state it means.
pub const DELIVERY: &str = "delivery";
/// The same for `read` events.
pub const READ: &str = "read";

/// The delivery state a status name ([`DELIVERY`], [`READ`]) means.
pub fn delivery_state(status: &str) -> Option<DeliveryState> {
    match status {
        DELIVERY => Some(DeliveryState::Delivered),
        READ => Some(DeliveryState::Read),
        _ => None,
    }
}

/// The events of a webhook `body` for `product`, on channel `channel_id`.
pub fn parse(
    product: Product,
    channel_id: &str,
    body: &[u8],
) -> Result<Vec<InboundEvent>, WebhookError> {
    parse_for_app(product, channel_id, "", body)
}

/// [`parse`], for a channel whose sends are made by the Meta app
/// `own_app_id` (empty: unknown): echoes of that app's own sends give no
/// events (dispatch recorded them when it sent them); echoes of the Page's
/// other tools (the Page inbox, another app) are kept.
pub fn parse_for_app(
    product: Product,
    channel_id: &str,
    own_app_id: &str,
    body: &[u8],
) -> Result<Vec<InboundEvent>, WebhookError> {
    let body: Body = serde_json::from_slice(body)
        .map_err(|e| WebhookError::Malformed(format!("malformed body: {e}")))?;
    match body.object.as_deref() {
        Some(object) if object == product.object => {}
        Some(other) => {
            return Err(WebhookError::Malformed(format!(
                "object: {other:?} is not {:?} (the webhook is subscribed for another product)",
                product.object
            )));
        }
        None => return Err(WebhookError::Malformed("object is missing".into())),
    }
    let entries = body
        .entry
        .ok_or_else(|| WebhookError::Malformed("entry is missing".into()))?;
    let reader = Reader {
        product,
        channel_id,
        own_app_id: own_app_id.trim(),
    };
    let mut events = Vec::new();
    for (e, entry) in entries.into_iter().enumerate() {
        let lists = [("messaging", entry.messaging), ("standby", entry.standby)];
        for (list, items) in lists {
            for (i, event) in items.unwrap_or_default().into_iter().enumerate() {
                let at = format!("entry[{e}].{list}[{i}]");
                reader.event(&at, event, &mut events)?;
            }
        }
    }
    Ok(events)
}

struct Reader<'a> {
    product: Product,
    channel_id: &'a str,
    own_app_id: &'a str,
}

/// A required id: present and not blank, or malformed naming `field`.
fn id(field: &str, value: Option<String>) -> Result<String, WebhookError> {
    match value {
        Some(v) if !v.trim().is_empty() => Ok(v),
        _ => Err(WebhookError::Malformed(format!("{field} is missing"))),
    }
}

fn party(at: &str, name: &str, party: Option<Party>) -> Result<String, WebhookError> {
    id(&format!("{at}.{name}.id"), party.and_then(|p| p.id))
}

impl Reader<'_> {
    fn event(
        &self,
        at: &str,
        event: Event,
        out: &mut Vec<InboundEvent>,
    ) -> Result<(), WebhookError> {
        if let Some(message) = event.message {
            if message.is_echo == Some(true) && self.is_own_app(message.app_id.as_ref()) {
                return Ok(());
            }
            let sender = party(at, "sender", event.sender)?;
            let recipient = if message.is_echo == Some(true) {
                party(at, "recipient", event.recipient)?
            } else {
                String::new()
            };
            out.push(InboundEvent::Message(self.message(
                at,
                message,
                sender,
                recipient,
                event.timestamp,
            )?));
        } else if let Some(edit) = event.message_edit {
            let sender = party(at, "sender", event.sender)?;
            let mid = id(&format!("{at}.message_edit.mid"), edit.mid)?;
            let mut m = self.base(&mid, sender, event.timestamp);
            // The original's id names the message; the delivery is this
            // edit (the n-th, or the one at this time).
            m.webhook_id = match edit.num_edit {
                Some(n) => format!("{mid}:edit:{n}"),
                None => format!("{mid}:edit:{}", event.timestamp.unwrap_or_default()),
            };
            m.text = edit.text.unwrap_or_default();
            m.change = MessageChange::Edited as i32;
            out.push(InboundEvent::Message(m));
        } else if let Some(reaction) = event.reaction {
            let sender = party(at, "sender", event.sender)?;
            let mid = id(&format!("{at}.reaction.mid"), reaction.mid)?;
            let emoji = if reaction.action.as_deref() == Some("unreact") {
                String::new()
            } else {
                reaction.emoji.unwrap_or_default()
            };
            // A reaction has no id of its own: the reacted message, who
            // reacted and when name it, the same in every redelivery.
            let external_id = format!(
                "reaction:{mid}:{sender}:{}",
                event.timestamp.unwrap_or_default()
            );
            let mut m = self.base(&external_id, sender, event.timestamp);
            m.reaction = Some(Reaction {
                message_external_id: mid,
                emoji,
            });
            out.push(InboundEvent::Message(m));
        } else if let Some(delivery) = event.delivery {
            let contact = party(at, "sender", event.sender)?;
            for mid in delivery.mids.unwrap_or_default() {
                if mid.trim().is_empty() {
                    continue;
                }
                out.push(self.status(DELIVERY, &mid, &contact, delivery.watermark, false));
            }
            if let Some(watermark) = delivery.watermark {
                out.push(self.status(DELIVERY, "", &contact, Some(watermark), true));
            }
        } else if let Some(read) = event.read {
            let contact = party(at, "sender", event.sender)?;
            if let Some(mid) = read.mid.filter(|m| !m.trim().is_empty()) {
                out.push(self.status(READ, &mid, &contact, event.timestamp, false));
            }
            if let Some(watermark) = read.watermark {
                out.push(self.status(READ, "", &contact, Some(watermark), true));
            }
        }
        // Postbacks, referrals, opt-ins, handover and other events:
        // acknowledged, nothing to show.
        Ok(())
    }

    /// Whether an echo's `app_id` (a number, or a string) is the channel's
    /// own app.
    fn is_own_app(&self, app_id: Option<&serde_json::Value>) -> bool {
        let given = match app_id {
            Some(serde_json::Value::Number(n)) => n.to_string(),
            Some(serde_json::Value::String(s)) => s.trim().to_owned(),
            _ => return false,
        };
        !self.own_app_id.is_empty() && given == self.own_app_id
    }

    fn base(
        &self,
        external_id: &str,
        sender: String,
        timestamp: Option<i64>,
    ) -> InboundMessageReceived {
        let mut m = InboundMessageReceived {
            channel_id: self.channel_id.to_owned(),
            channel_kind: self.product.kind as i32,
            provider: self.product.provider as i32,
            webhook_id: external_id.to_owned(),
            external_id: external_id.to_owned(),
            sender: Some(Sender {
                external_id: sender,
                display_name: String::new(),
            }),
            ..Default::default()
        };
        if let Some(ms) = timestamp {
            set_time_ms!(m.sent_at, ms);
        }
        m
    }

    fn message(
        &self,
        at: &str,
        message: Message,
        sender: String,
        recipient: String,
        timestamp: Option<i64>,
    ) -> Result<InboundMessageReceived, WebhookError> {
        let mid = id(&format!("{at}.message.mid"), message.mid)?;
        let echo = message.is_echo == Some(true);
        // An echo is the page's own message: the contact is whom it went to.
        let contact = if echo { recipient } else { sender };
        let mut m = self.base(&mid, contact, timestamp);
        m.echo = echo;
        if message.is_deleted == Some(true) {
            m.webhook_id = format!("{mid}:unsent");
            m.change = MessageChange::Unsent as i32;
            return Ok(m);
        }
        m.text = message.text.unwrap_or_default();
        m.reply_to_external_id = message.reply_to.and_then(|r| r.mid).unwrap_or_default();
        for attachment in message.attachments.unwrap_or_default() {
            self.attachment(attachment, &mut m);
        }
        if message.is_unsupported == Some(true) && m.unsupported_type.is_empty() {
            m.unsupported_type = "unsupported".into();
        }
        if m.text.is_empty()
            && m.attachments.is_empty()
            && m.location.is_none()
            && m.unsupported_type.is_empty()
        {
            // Never dropped silently: shown as a message we cannot show.
            m.unsupported_type = "empty".into();
        }
        Ok(m)
    }

    fn attachment(&self, a: AttachmentBody, m: &mut InboundMessageReceived) {
        let kind_name = a.kind.unwrap_or_default();
        let payload = a.payload;
        let url = payload
            .as_ref()
            .and_then(|p| p.url.clone())
            .unwrap_or_default();
        if let Some(location) = payload
            .as_ref()
            .and_then(|p| location(p, a.title.as_deref()))
        {
            m.location = Some(location);
            return;
        }
        let kind = match kind_name.as_str() {
            "image" if payload.as_ref().is_some_and(|p| p.sticker_id.is_some()) => {
                AttachmentKind::Sticker
            }
            "image" => AttachmentKind::Image,
            "video" => AttachmentKind::Video,
            "audio" if self.product.audio_is_voice || is_voice_clip(&url) => AttachmentKind::Voice,
            "audio" => AttachmentKind::Audio,
            "file" => AttachmentKind::File,
            _ => AttachmentKind::Unspecified,
        };
        if kind == AttachmentKind::Unspecified || url.is_empty() {
            // share, story_mention, ig_reel, template, fallback, …: kept
            // as a message of a kind we do not show, with what it names.
            if m.unsupported_type.is_empty() {
                m.unsupported_type = if kind_name.is_empty() {
                    "attachment".into()
                } else {
                    kind_name
                };
            }
            if m.text.is_empty() {
                let title = a
                    .title
                    .or_else(|| payload.as_ref().and_then(|p| p.title.clone()))
                    .unwrap_or_default();
                m.text = [title.as_str(), url.as_str()]
                    .iter()
                    .filter(|s| !s.is_empty())
                    .copied()
                    .collect::<Vec<_>>()
                    .join(" ");
            }
            return;
        }
        let file_name = if kind == AttachmentKind::File {
            file_name(&url)
        } else {
            String::new()
        };
        m.attachments.push(Attachment {
            kind: kind as i32,
            url,
            file_name,
            state: AttachmentState::Pending as i32,
            ..Default::default()
        });
    }

    fn status(
        &self,
        name: &str,
        mid: &str,
        contact: &str,
        at_ms: Option<i64>,
        watermark: bool,
    ) -> InboundEvent {
        let state = delivery_state(name).unwrap_or(DeliveryState::Unspecified);
        // Statuses carry no id: what they are about names them.
        let webhook_id = if watermark {
            format!("{name}:{contact}:{}", at_ms.unwrap_or_default())
        } else {
            format!("{name}:{mid}")
        };
        let mut s = InboundStatusReceived {
            channel_id: self.channel_id.to_owned(),
            message_external_id: mid.to_owned(),
            state: state as i32,
            webhook_id,
            contact_external_id: contact.to_owned(),
            ..Default::default()
        };
        if let Some(ms) = at_ms {
            if watermark {
                set_time_ms!(s.watermark, ms);
            }
            set_time_ms!(s.occurred_at, ms);
        }
        InboundEvent::Status(s)
    }
}

/// A shared location: a `location` attachment, or a `fallback` carrying
/// coordinates (how Messenger sends locations since it stopped naming
/// them).
fn location(payload: &Payload, title: Option<&str>) -> Option<Location> {
    let c = payload.coordinates.as_ref()?;
    let (latitude, longitude) = (c.lat?, c.long?);
    if !(latitude.is_finite() && longitude.is_finite()) {
        return None;
    }
    Some(Location {
        latitude,
        longitude,
        name: title
            .or(payload.title.as_deref())
            .unwrap_or_default()
            .to_owned(),
        address: String::new(),
    })
}

/// Whether an audio URL is a Messenger voice clip (`…/audioclip-<ts>-<n>.mp4`).
fn is_voice_clip(url: &str) -> bool {
    let path = url.split(['?', '#']).next().unwrap_or_default();
    path.rsplit('/')
        .next()
        .is_some_and(|name| name.starts_with("audioclip-"))
}

/// The last segment of a file URL's path, as its name.
fn file_name(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| {
            u.path_segments()
                .and_then(|mut s| s.next_back().map(str::to_owned))
        })
        .filter(|n| !n.is_empty())
        .map(|n| {
            // Percent-decoded; a `+` in a path is a plus, not a space.
            url::form_urlencoded::parse(format!("n={}", n.replace('+', "%2B")).as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or(n)
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: Product = Product {
        object: "page",
        kind: ChannelKind::Messenger,
        provider: ChannelProvider::Messenger,
        audio_is_voice: false,
    };

    fn parse_page(body: &str) -> Vec<InboundEvent> {
        parse(PAGE, "ch", body.as_bytes()).expect("parses")
    }

    fn message(event: &InboundEvent) -> &InboundMessageReceived {
        match event {
            InboundEvent::Message(m) => m,
            InboundEvent::Status(s) => panic!("a status: {s:?}"),
        }
    }

    fn status(event: &InboundEvent) -> &InboundStatusReceived {
        match event {
            InboundEvent::Status(s) => s,
            InboundEvent::Message(m) => panic!("a message: {m:?}"),
        }
    }

    #[test]
    fn every_entry_and_every_event_of_a_batch_is_read_in_order() {
        let events = parse_page(
            r#"{"object":"page","entry":[
              {"id":"P","time":1,"messaging":[
                {"sender":{"id":"U1"},"recipient":{"id":"P"},"timestamp":1700000000123,"message":{"mid":"m_1","text":"one"}},
                {"sender":{"id":"U2"},"recipient":{"id":"P"},"timestamp":1700000000456,"message":{"mid":"m_2","text":"two"}}]},
              {"id":"P","time":2,"messaging":[
                {"sender":{"id":"U1"},"recipient":{"id":"P"},"timestamp":1700000000789,"message":{"mid":"m_3","text":"three"}}]}]}"#,
        );
        let ids: Vec<_> = events
            .iter()
            .map(|e| message(e).external_id.as_str())
            .collect();
        assert_eq!(ids, ["m_1", "m_2", "m_3"]);
        let first = message(&events[0]);
        assert_eq!(
            first.sender.as_ref().map(|s| s.external_id.as_str()),
            Some("U1")
        );
        let sent_at = first.sent_at.as_ref().expect("sent_at");
        assert_eq!(
            (sent_at.seconds, sent_at.nanos),
            (1_700_000_000, 123_000_000)
        );
    }

    #[test]
    fn an_echo_is_the_pages_own_message_to_the_recipient() {
        let events = parse_page(
            r#"{"object":"page","entry":[{"messaging":[{"sender":{"id":"PAGE"},"recipient":{"id":"USER"},"timestamp":1,"message":{"mid":"m_e","is_echo":true,"app_id":123,"text":"sent elsewhere"}}]}]}"#,
        );
        let m = message(&events[0]);
        assert!(m.echo);
        assert_eq!(
            m.sender.as_ref().map(|s| s.external_id.as_str()),
            Some("USER")
        );
        assert_eq!(m.text, "sent elsewhere");
    }

    #[test]
    fn echoes_of_the_channels_own_sends_are_left_out() {
        let body = br#"{"object":"page","entry":[{"messaging":[
          {"sender":{"id":"PAGE"},"recipient":{"id":"USER"},"timestamp":1,"message":{"mid":"m_ours","is_echo":true,"app_id":1517776481860111,"text":"sent by TELENET"}},
          {"sender":{"id":"PAGE"},"recipient":{"id":"USER"},"timestamp":2,"message":{"mid":"m_inbox","is_echo":true,"app_id":263902037430900,"text":"sent from the Page inbox"}}]}]}"#;
        let events = parse_for_app(PAGE, "ch", "1517776481860111", body).expect("parses");
        let ids: Vec<_> = events
            .iter()
            .map(|e| message(e).external_id.as_str())
            .collect();
        assert_eq!(ids, ["m_inbox"]);
        assert_eq!(
            parse(PAGE, "ch", body).expect("parses").len(),
            2,
            "app unknown: both kept"
        );
    }

    #[test]
    fn a_delivery_gives_one_status_per_mid_and_one_for_the_watermark() {
        let events = parse_page(
            r#"{"object":"page","entry":[{"messaging":[{"sender":{"id":"USER"},"recipient":{"id":"PAGE"},"delivery":{"mids":["m_a","m_b"],"watermark":1458668856253}}]}]}"#,
        );
        assert_eq!(events.len(), 3);
        for (event, mid) in events.iter().zip(["m_a", "m_b"]) {
            let s = status(event);
            assert_eq!(s.message_external_id, mid);
            assert_eq!(s.state, DeliveryState::Delivered as i32);
            assert_eq!(s.contact_external_id, "USER");
            assert!(s.watermark.is_none());
        }
        let w = status(&events[2]);
        assert_eq!(w.message_external_id, "");
        assert_eq!(w.contact_external_id, "USER");
        let mark = w.watermark.as_ref().expect("a watermark");
        assert_eq!((mark.seconds, mark.nanos), (1_458_668_856, 253_000_000));
    }

    #[test]
    fn a_read_watermark_and_an_instagram_read_mid_are_read_statuses() {
        let events = parse_page(
            r#"{"object":"page","entry":[{"messaging":[{"sender":{"id":"USER"},"recipient":{"id":"PAGE"},"timestamp":1458668856463,"read":{"watermark":1458668856253}}]}]}"#,
        );
        let s = status(&events[0]);
        assert_eq!(
            (s.state, s.message_external_id.as_str()),
            (DeliveryState::Read as i32, "")
        );
        assert!(s.watermark.is_some());
        let ig = Product {
            object: "instagram",
            ..PAGE
        };
        let events = parse(
            ig,
            "ch",
            br#"{"object":"instagram","entry":[{"messaging":[{"sender":{"id":"IGSID"},"recipient":{"id":"IG"},"timestamp":1,"read":{"mid":"aWdf"}}]}]}"#,
        )
        .expect("parses");
        let s = status(&events[0]);
        assert_eq!(s.message_external_id, "aWdf");
        assert_eq!(s.state, DeliveryState::Read as i32);
        assert!(s.watermark.is_none());
    }

    #[test]
    fn unsends_edits_and_reactions_change_earlier_messages() {
        let events = parse_page(
            r#"{"object":"page","entry":[{"messaging":[
              {"sender":{"id":"U"},"recipient":{"id":"P"},"timestamp":5,"message":{"mid":"m_1","is_deleted":true}},
              {"sender":{"id":"U"},"recipient":{"id":"P"},"timestamp":6,"message_edit":{"mid":"m_2","text":"fixed","num_edit":1}},
              {"sender":{"id":"U"},"recipient":{"id":"P"},"timestamp":7,"reaction":{"mid":"m_3","action":"react","reaction":"love","emoji":"❤"}},
              {"sender":{"id":"U"},"recipient":{"id":"P"},"timestamp":8,"reaction":{"mid":"m_3","action":"unreact","reaction":"love","emoji":"❤"}}]}]}"#,
        );
        let unsent = message(&events[0]);
        assert_eq!(
            (unsent.external_id.as_str(), unsent.change),
            ("m_1", MessageChange::Unsent as i32)
        );
        assert_eq!(
            unsent.webhook_id, "m_1:unsent",
            "not the original's delivery"
        );
        let edited = message(&events[1]);
        assert_eq!(
            (
                edited.external_id.as_str(),
                edited.text.as_str(),
                edited.change
            ),
            ("m_2", "fixed", MessageChange::Edited as i32)
        );
        assert_eq!(edited.webhook_id, "m_2:edit:1");
        let react = message(&events[2]);
        let reaction = react.reaction.as_ref().expect("a reaction");
        assert_eq!(
            (
                reaction.message_external_id.as_str(),
                reaction.emoji.as_str()
            ),
            ("m_3", "❤")
        );
        let unreact = message(&events[3]);
        assert_eq!(
            unreact.reaction.as_ref().map(|r| r.emoji.as_str()),
            Some("")
        );
        assert_ne!(
            react.external_id, unreact.external_id,
            "two reactions, two ids"
        );
    }

    #[test]
    fn attachments_are_sorted_by_kind_and_voice_clips_are_voice_notes() {
        let events = parse_page(
            r#"{"object":"page","entry":[{"messaging":[{"sender":{"id":"U"},"recipient":{"id":"P"},"timestamp":1,"message":{"mid":"m","attachments":[
              {"type":"image","payload":{"url":"https://cdn.test/a.jpg"}},
              {"type":"image","payload":{"url":"https://cdn.test/s.png","sticker_id":369239263222822}},
              {"type":"audio","payload":{"url":"https://cdn.test/audioclip-1500000000000-2.mp4?x=1"}},
              {"type":"audio","payload":{"url":"https://cdn.test/song.mp3"}},
              {"type":"video","payload":{"url":"https://cdn.test/v.mp4"}},
              {"type":"file","payload":{"url":"https://cdn.test/f/report%202024+v2.pdf?sig=1"}}]}}]}]}"#,
        );
        let m = message(&events[0]);
        let kinds: Vec<_> = m.attachments.iter().map(|a| a.kind).collect();
        assert_eq!(
            kinds,
            [
                AttachmentKind::Image as i32,
                AttachmentKind::Sticker as i32,
                AttachmentKind::Voice as i32,
                AttachmentKind::Audio as i32,
                AttachmentKind::Video as i32,
                AttachmentKind::File as i32
            ]
        );
        assert_eq!(m.attachments[5].file_name, "report 2024+v2.pdf");
        assert!(m.unsupported_type.is_empty());
    }

    #[test]
    fn locations_and_shares_are_never_dropped() {
        let events = parse_page(
            r#"{"object":"page","entry":[{"messaging":[
              {"sender":{"id":"U"},"recipient":{"id":"P"},"timestamp":1,"message":{"mid":"m_l","attachments":[{"type":"fallback","title":"Pinned Location","payload":{"coordinates":{"lat":52.52,"long":13.405}}}]}},
              {"sender":{"id":"U"},"recipient":{"id":"P"},"timestamp":2,"message":{"mid":"m_s","attachments":[{"type":"story_mention","payload":{"url":"https://cdn.test/story"}}]}},
              {"sender":{"id":"U"},"recipient":{"id":"P"},"timestamp":3,"message":{"mid":"m_u","is_unsupported":true}}]}]}"#,
        );
        let l = message(&events[0]);
        let loc = l.location.as_ref().expect("a location");
        assert_eq!(
            (loc.latitude, loc.longitude, loc.name.as_str()),
            (52.52, 13.405, "Pinned Location")
        );
        let s = message(&events[1]);
        assert_eq!(s.unsupported_type, "story_mention");
        assert_eq!(s.text, "https://cdn.test/story");
        assert!(s.attachments.is_empty());
        assert_eq!(message(&events[2]).unsupported_type, "unsupported");
    }

    #[test]
    fn unknown_fields_nulls_and_unknown_events_are_tolerated() {
        let events = parse_page(
            r#"{"object":"page","new_field":{"x":1},"entry":[{"id":"P","time":null,"messaging":[
              {"sender":{"id":"U","user_ref":null},"recipient":{"id":"P"},"timestamp":null,"postback":{"title":"Start","payload":"GET_STARTED"}},
              {"sender":{"id":"U"},"recipient":{"id":"P"},"timestamp":1,"referral":{"ref":"ad"}},
              {"sender":{"id":"U"},"recipient":{"id":"P"},"timestamp":1,"message":{"mid":"m","text":"hi","attachments":null,"reply_to":null,"quick_reply":{"payload":"X"},"brand_new":[1,2]}}]},
              {"id":"P","messaging":null,"standby":[{"sender":{"id":"U"}}]}]}"#,
        );
        assert_eq!(events.len(), 1, "only the message: {events:?}");
        let m = message(&events[0]);
        assert_eq!(
            (m.text.as_str(), m.reply_to_external_id.as_str()),
            ("hi", "")
        );
        assert!(m.sent_at.is_some());
    }

    #[test]
    fn messages_on_standby_are_read_after_the_others() {
        let events = parse_page(
            r#"{"object":"page","entry":[{"id":"P","time":1,
              "standby":[{"sender":{"id":"U"},"recipient":{"id":"P"},"timestamp":2,"message":{"mid":"m_standby","text":"while the bot had the thread"}}],
              "messaging":[{"sender":{"id":"U"},"recipient":{"id":"P"},"timestamp":1,"message":{"mid":"m_own","text":"ours"}}]}]}"#,
        );
        let ids: Vec<_> = events
            .iter()
            .map(|e| message(e).external_id.as_str())
            .collect();
        assert_eq!(ids, ["m_own", "m_standby"]);
        let err = parse(
            PAGE,
            "ch",
            br#"{"object":"page","entry":[{"standby":[{"sender":{"id":"U"},"message":{}}]}]}"#,
        )
        .expect_err("no mid");
        assert!(
            err.to_string().contains("entry[0].standby[0].message.mid"),
            "{err}"
        );
    }

    #[test]
    fn replies_name_the_quoted_message() {
        let events = parse_page(
            r#"{"object":"page","entry":[{"messaging":[{"sender":{"id":"U"},"recipient":{"id":"P"},"timestamp":1,"message":{"mid":"m_2","text":"yes","reply_to":{"mid":"m_1"}}}]}]}"#,
        );
        assert_eq!(message(&events[0]).reply_to_external_id, "m_1");
    }

    #[test]
    fn what_is_unreadable_is_malformed_naming_the_field() {
        for (body, needle) in [
            ("{", "malformed body"),
            (r#"{"object":"instagram","entry":[]}"#, "object"),
            (r#"{"entry":[]}"#, "object is missing"),
            (r#"{"object":"page"}"#, "entry is missing"),
            (
                r#"{"object":"page","entry":[{"messaging":[{"sender":{"id":"U"},"message":{"text":"no id"}}]}]}"#,
                "entry[0].messaging[0].message.mid",
            ),
            (
                r#"{"object":"page","entry":[{},{"messaging":[{"recipient":{"id":"P"},"message":{"mid":"m"}}]}]}"#,
                "entry[1].messaging[0].sender.id",
            ),
            (
                r#"{"object":"page","entry":[{"messaging":[{"sender":{"id":"P"},"message":{"mid":"m","is_echo":true}}]}]}"#,
                "recipient.id",
            ),
        ] {
            match parse(PAGE, "ch", body.as_bytes()) {
                Err(WebhookError::Malformed(why)) => {
                    assert!(why.contains(needle), "{why:?} should name {needle:?}");
                }
                other => panic!("{body}: {other:?}"),
            }
        }
    }
}
