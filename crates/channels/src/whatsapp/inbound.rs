//! The WhatsApp Cloud API webhook body, read into canonical events; shared
//! by the Cloud API and 360dialog, which forwards Meta's bodies as they are.
//!
//! ```json
//! {"object":"whatsapp_business_account","entry":[{"id":"<WABA id>","changes":[{"field":"messages",
//!   "value":{"metadata":{…},"contacts":[{"profile":{"name"},"wa_id"}],
//!            "messages":[{"from","id","timestamp","type", "<type>":{…}, "context":{"id"}}],
//!            "statuses":[{"id","status","timestamp","recipient_id","errors":[{"code","title"}]}]}}]}]}
//! ```
//!
//! A tolerant reader: unknown fields are ignored, `null` stands for an
//! absent field, other objects and change fields give no events, and
//! message types TELENET does not show become `unsupported_type` messages
//! (never dropped). Only an unreadable body or a message or status without
//! its id is malformed.

use serde::Deserialize;
use telenet_proto::common::v1::{
    Attachment, AttachmentKind, AttachmentState, ChannelKind, ChannelProvider, Location, Reaction,
};
use telenet_proto::events::v1::{InboundMessageReceived, InboundStatusReceived, Sender};

use crate::InboundEvent;

/// The `object` of WhatsApp Business Account webhooks.
pub const OBJECT: &str = "whatsapp_business_account";

/// Who is parsing: what the events are stamped with, and how a media id
/// becomes the attachment `url` the provider's `media_fetch` resolves.
pub struct Context<'a> {
    /// The channel the webhook arrived for.
    pub channel_id: &'a str,
    /// The provider (Cloud API or 360dialog).
    pub provider: ChannelProvider,
    /// The attachment reference of a media id (never carrying a secret).
    pub media_url: &'a dyn Fn(&str) -> String,
    /// The channel's number, when known: changes about another number of
    /// the same Meta app (which share the app's webhook URL) are not this
    /// channel's and give no events.
    pub phone_number_id: Option<&'a str>,
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
    changes: Option<Vec<Change>>,
}

#[derive(Debug, Deserialize)]
struct Change {
    #[serde(default)]
    field: Option<String>,
    #[serde(default)]
    value: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct Value {
    #[serde(default)]
    metadata: Option<Metadata>,
    #[serde(default)]
    contacts: Option<Vec<Contact>>,
    #[serde(default)]
    messages: Option<Vec<Message>>,
    #[serde(default)]
    statuses: Option<Vec<Status>>,
}

#[derive(Debug, Deserialize)]
struct Metadata {
    #[serde(default)]
    phone_number_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Contact {
    #[serde(default)]
    wa_id: Option<String>,
    #[serde(default)]
    profile: Option<Profile>,
}

#[derive(Debug, Deserialize)]
struct Profile {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Message {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    timestamp: Option<serde_json::Value>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    context: Option<MessageContext>,
    #[serde(default)]
    text: Option<Text>,
    #[serde(default)]
    image: Option<Media>,
    #[serde(default)]
    video: Option<Media>,
    #[serde(default)]
    audio: Option<Media>,
    #[serde(default)]
    document: Option<Media>,
    #[serde(default)]
    sticker: Option<Media>,
    #[serde(default)]
    location: Option<Place>,
    #[serde(default)]
    reaction: Option<ReactionBody>,
}

#[derive(Debug, Deserialize)]
struct MessageContext {
    #[serde(default)]
    id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Text {
    #[serde(default)]
    body: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Media {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    mime_type: Option<String>,
    #[serde(default)]
    caption: Option<String>,
    #[serde(default)]
    filename: Option<String>,
    #[serde(default)]
    voice: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct Place {
    #[serde(default)]
    latitude: Option<f64>,
    #[serde(default)]
    longitude: Option<f64>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    address: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ReactionBody {
    #[serde(default)]
    message_id: Option<String>,
    #[serde(default)]
    emoji: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Status {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    timestamp: Option<serde_json::Value>,
    #[serde(default)]
    recipient_id: Option<String>,
    #[serde(default)]
    errors: Option<Vec<StatusError>>,
}

#[derive(Debug, Deserialize)]
struct StatusError {
    #[serde(default)]
    code: Option<serde_json::Value>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// The events of a WhatsApp webhook body, in the order Meta listed them
/// (entries, then changes, then messages before statuses). Errors name the
/// field that is wrong.
pub fn parse_body(body: &[u8], cx: &Context<'_>) -> Result<Vec<InboundEvent>, String> {
    let body: Body = serde_json::from_slice(body).map_err(|e| format!("malformed body: {e}"))?;
    if body.object.as_deref() != Some(OBJECT) {
        // Another product's webhook (or a test ping): acknowledged, nothing to record.
        return Ok(Vec::new());
    }
    let mut events = Vec::new();
    for (e, entry) in body.entry.unwrap_or_default().into_iter().enumerate() {
        for (c, change) in entry.changes.unwrap_or_default().into_iter().enumerate() {
            if change.field.as_deref() != Some("messages") {
                continue;
            }
            let Some(value) = change.value else { continue };
            let number = value
                .metadata
                .as_ref()
                .and_then(|m| m.phone_number_id.as_deref());
            if let (Some(ours), Some(theirs)) = (cx.phone_number_id, number)
                && ours != theirs
            {
                tracing::debug!("a change about another number of the Meta app is skipped");
                continue;
            }
            let at = format!("entry[{e}].changes[{c}].value");
            let contacts = value.contacts.unwrap_or_default();
            for (m, message) in value.messages.unwrap_or_default().into_iter().enumerate() {
                let at = format!("{at}.messages[{m}]");
                events.push(InboundEvent::Message(inbound_message(
                    message, &contacts, cx, &at,
                )?));
            }
            for (s, status) in value.statuses.unwrap_or_default().into_iter().enumerate() {
                let at = format!("{at}.statuses[{s}]");
                if let Some(status) = inbound_status(status, cx, &at)? {
                    events.push(InboundEvent::Status(status));
                }
            }
        }
    }
    Ok(events)
}

/// A required id: present and not blank, or an error naming it.
fn required_id(value: Option<String>, field: &str) -> Result<String, String> {
    match value {
        Some(v) if !v.trim().is_empty() => Ok(v),
        _ => Err(format!("{field} is missing")),
    }
}

/// Meta's unix-seconds timestamps come as strings; numbers are accepted too.
fn unix_seconds(value: Option<&serde_json::Value>) -> Option<i64> {
    match value? {
        serde_json::Value::String(s) => s.trim().parse().ok(),
        serde_json::Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

fn inbound_message(
    message: Message,
    contacts: &[Contact],
    cx: &Context<'_>,
    at: &str,
) -> Result<InboundMessageReceived, String> {
    let id = required_id(message.id, &format!("{at}.id"))?;
    let from = required_id(message.from, &format!("{at}.from"))?;
    let display_name = display_name(contacts, &from);
    let kind = message.kind.unwrap_or_default();
    let mut out = InboundMessageReceived {
        channel_id: cx.channel_id.to_owned(),
        channel_kind: ChannelKind::Whatsapp as i32,
        provider: cx.provider as i32,
        webhook_id: id.clone(),
        external_id: id,
        sender: Some(Sender {
            external_id: from,
            display_name,
        }),
        reply_to_external_id: message
            .context
            .and_then(|c| c.id)
            .filter(|id| !id.trim().is_empty())
            .unwrap_or_default(),
        ..Default::default()
    };
    if let Some(seconds) = unix_seconds(message.timestamp.as_ref()) {
        out.sent_at.get_or_insert_with(Default::default).seconds = seconds;
    }
    let media =
        |media: Option<Media>, kind: AttachmentKind| media.and_then(|m| attachment(m, kind, cx));
    let attachment = match kind.as_str() {
        "text" => {
            out.text = message.text.and_then(|t| t.body).unwrap_or_default();
            None
        }
        "image" => media(message.image, AttachmentKind::Image),
        "video" => media(message.video, AttachmentKind::Video),
        "document" => media(message.document, AttachmentKind::File),
        "sticker" => media(message.sticker, AttachmentKind::Sticker),
        "audio" => {
            // `voice: true` is a note recorded in WhatsApp; otherwise a
            // forwarded or attached audio file.
            let voice = message.audio.as_ref().and_then(|a| a.voice) == Some(true);
            let kind = if voice {
                AttachmentKind::Voice
            } else {
                AttachmentKind::Audio
            };
            media(message.audio, kind)
        }
        "location" => {
            let place = message.location.unwrap_or(Place {
                latitude: None,
                longitude: None,
                name: None,
                address: None,
            });
            match (place.latitude, place.longitude) {
                (Some(latitude), Some(longitude)) => {
                    out.location = Some(Location {
                        latitude,
                        longitude,
                        name: place.name.unwrap_or_default(),
                        address: place.address.unwrap_or_default(),
                    });
                }
                _ => out.unsupported_type = kind.clone(),
            }
            None
        }
        "reaction" => {
            let reaction = message.reaction;
            let target = reaction.as_ref().and_then(|r| r.message_id.clone());
            let target = required_id(target, &format!("{at}.reaction.message_id"))?;
            out.reaction = Some(Reaction {
                message_external_id: target,
                // Absent or empty: the contact took the reaction back.
                emoji: reaction.and_then(|r| r.emoji).unwrap_or_default(),
            });
            None
        }
        // contacts, order, interactive, button, system, unsupported, and
        // whatever Meta adds: stored as an unsupported message.
        other => {
            out.unsupported_type = if other.is_empty() {
                "unknown".to_owned()
            } else {
                other.to_owned()
            };
            None
        }
    };
    if let Some(attachment) = attachment {
        out.attachments.push(attachment.0);
        if out.text.is_empty() {
            out.text = attachment.1;
        }
    } else if matches!(
        kind.as_str(),
        "image" | "video" | "document" | "sticker" | "audio"
    ) {
        // A media message without a media id cannot be fetched: shown as
        // unsupported rather than lost.
        out.unsupported_type = kind;
    }
    Ok(out)
}

/// The attachment of a media object and its caption; `None` without an id.
fn attachment(
    media: Media,
    kind: AttachmentKind,
    cx: &Context<'_>,
) -> Option<(Attachment, String)> {
    let id = media.id.filter(|id| is_media_id(id))?;
    Some((
        Attachment {
            kind: kind as i32,
            url: (cx.media_url)(&id),
            mime_type: media.mime_type.unwrap_or_default(),
            file_name: media.filename.unwrap_or_default(),
            state: AttachmentState::Pending as i32,
            ..Default::default()
        },
        media.caption.unwrap_or_default(),
    ))
}

/// Media ids are path segments of the fetch: anything but letters, digits,
/// `_`, `-` and `.` (or a `.`/`..` segment) could point the fetch elsewhere.
pub fn is_media_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 256
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn display_name(contacts: &[Contact], from: &str) -> String {
    let named = |c: &Contact| {
        c.profile
            .as_ref()
            .and_then(|p| p.name.clone())
            .unwrap_or_default()
    };
    contacts
        .iter()
        .find(|c| c.wa_id.as_deref() == Some(from))
        .or_else(|| match contacts {
            [only] if only.wa_id.is_none() => Some(only),
            _ => None,
        })
        .map(named)
        .unwrap_or_default()
}

fn inbound_status(
    status: Status,
    cx: &Context<'_>,
    at: &str,
) -> Result<Option<InboundStatusReceived>, String> {
    let id = required_id(status.id, &format!("{at}.id"))?;
    let name = status.status.unwrap_or_default();
    let Some(state) = super::delivery_state(&name) else {
        // A state TELENET does not track (e.g. `deleted`): acknowledged.
        return Ok(None);
    };
    let first_error = status.errors.unwrap_or_default().into_iter().next();
    let (error_code, error) = match first_error {
        Some(e) => (
            match e.code {
                Some(serde_json::Value::Number(n)) => n.to_string(),
                Some(serde_json::Value::String(s)) => s,
                _ => String::new(),
            },
            e.title
                .filter(|t| !t.trim().is_empty())
                .or(e.message)
                .unwrap_or_default(),
        ),
        None => (String::new(), String::new()),
    };
    let mut out = InboundStatusReceived {
        channel_id: cx.channel_id.to_owned(),
        // One message has several statuses: each is its own event.
        webhook_id: format!("{id}:{name}"),
        message_external_id: id,
        state: state as i32,
        error,
        error_code,
        contact_external_id: status.recipient_id.unwrap_or_default(),
        ..Default::default()
    };
    if let Some(seconds) = unix_seconds(status.timestamp.as_ref()) {
        out.occurred_at.get_or_insert_with(Default::default).seconds = seconds;
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use telenet_proto::dispatch::v1::DeliveryState;

    fn media_url(id: &str) -> String {
        format!("https://graph.test/v21.0/{id}")
    }

    fn parse(body: &str) -> Result<Vec<InboundEvent>, String> {
        let cx = Context {
            channel_id: "ch",
            provider: ChannelProvider::WhatsappCloud,
            media_url: &media_url,
            phone_number_id: Some("1122334455667"),
        };
        parse_body(body.as_bytes(), &cx)
    }

    fn wrap(value: &str) -> String {
        format!(
            r#"{{"object":"whatsapp_business_account","entry":[{{"id":"1","changes":[{{"field":"messages","value":{value}}}]}}]}}"#
        )
    }

    fn one_message(value: &str) -> InboundMessageReceived {
        match parse(&wrap(value)).expect("parses").as_slice() {
            [InboundEvent::Message(m)] => m.clone(),
            other => panic!("not one message: {other:?}"),
        }
    }

    #[test]
    fn a_voice_note_is_voice_and_an_audio_file_is_audio() {
        let voice = one_message(
            r#"{"messages":[{"from":"34600","id":"wamid.V","type":"audio","audio":{"id":"m1","mime_type":"audio/ogg; codecs=opus","voice":true}}]}"#,
        );
        assert_eq!(voice.attachments[0].kind, AttachmentKind::Voice as i32);
        assert_eq!(voice.attachments[0].url, "https://graph.test/v21.0/m1");
        assert_eq!(voice.attachments[0].mime_type, "audio/ogg; codecs=opus");
        let audio = one_message(
            r#"{"messages":[{"from":"34600","id":"wamid.A","type":"audio","audio":{"id":"m2","mime_type":"audio/mpeg","voice":false}}]}"#,
        );
        assert_eq!(audio.attachments[0].kind, AttachmentKind::Audio as i32);
        let unsaid = one_message(
            r#"{"messages":[{"from":"34600","id":"wamid.B","type":"audio","audio":{"id":"m3","voice":null}}]}"#,
        );
        assert_eq!(unsaid.attachments[0].kind, AttachmentKind::Audio as i32);
    }

    #[test]
    fn reactions_name_the_message_and_an_empty_emoji_is_a_removal() {
        let added = one_message(
            r#"{"messages":[{"from":"34600","id":"wamid.R","type":"reaction","reaction":{"message_id":"wamid.OUT","emoji":"👍"}}]}"#,
        );
        assert_eq!(
            added.reaction,
            Some(Reaction {
                message_external_id: "wamid.OUT".into(),
                emoji: "👍".into()
            })
        );
        let removed = one_message(
            r#"{"messages":[{"from":"34600","id":"wamid.R2","type":"reaction","reaction":{"message_id":"wamid.OUT"}}]}"#,
        );
        assert_eq!(removed.reaction.map(|r| r.emoji), Some(String::new()));
        let err = parse(&wrap(
            r#"{"messages":[{"from":"34600","id":"wamid.R3","type":"reaction","reaction":{"emoji":"x"}}]}"#,
        ))
        .expect_err("a reaction to nothing");
        assert!(err.contains("reaction.message_id"), "{err}");
    }

    #[test]
    fn a_reply_names_the_quoted_message_and_a_forward_does_not() {
        let reply = one_message(
            r#"{"messages":[{"context":{"from":"34999","id":"wamid.Q"},"from":"34600","id":"wamid.1","type":"text","text":{"body":"yes"}}]}"#,
        );
        assert_eq!(reply.reply_to_external_id, "wamid.Q");
        assert_eq!(reply.text, "yes");
        let forward = one_message(
            r#"{"messages":[{"context":{"forwarded":true},"from":"34600","id":"wamid.2","type":"text","text":{"body":"fw"}}]}"#,
        );
        assert_eq!(forward.reply_to_external_id, "");
    }

    #[test]
    fn kinds_not_shown_are_kept_as_unsupported_messages() {
        for kind in [
            "contacts",
            "order",
            "interactive",
            "unsupported",
            "button",
            "hologram",
        ] {
            let m = one_message(&format!(
                r#"{{"messages":[{{"from":"34600","id":"wamid.U","type":"{kind}","{kind}":{{"x":1}}}}]}}"#
            ));
            assert_eq!(m.unsupported_type, kind);
            assert_eq!(m.external_id, "wamid.U");
        }
        let untyped = one_message(r#"{"messages":[{"from":"34600","id":"wamid.U"}]}"#);
        assert_eq!(untyped.unsupported_type, "unknown");
        let no_media = one_message(
            r#"{"messages":[{"from":"34600","id":"wamid.U","type":"image","image":null}]}"#,
        );
        assert_eq!(no_media.unsupported_type, "image");
        assert!(no_media.attachments.is_empty());
    }

    #[test]
    fn media_ids_that_could_leave_the_path_are_not_fetched() {
        for id in ["../me", "a/b", "a?b", "..", ""] {
            assert!(!is_media_id(id), "{id}");
        }
        assert!(is_media_id("1234567890987654321"));
        let m = one_message(
            r#"{"messages":[{"from":"34600","id":"wamid.U","type":"document","document":{"id":"../../me/accounts"}}]}"#,
        );
        assert!(m.attachments.is_empty());
        assert_eq!(m.unsupported_type, "document");
    }

    #[test]
    fn batched_entries_and_changes_give_every_event_in_order() {
        let body = r#"{"object":"whatsapp_business_account","entry":[
            {"id":"1","changes":[
                {"field":"messages","value":{"contacts":[{"profile":{"name":"Ana"},"wa_id":"34600"},{"profile":{"name":"Bo"},"wa_id":"34700"}],
                  "messages":[{"from":"34700","id":"wamid.1","timestamp":"1700000000","type":"text","text":{"body":"one"}},
                              {"from":"34600","id":"wamid.2","type":"text","text":{"body":"two"}}]}},
                {"field":"account_update","value":{"event":"x"}}]},
            {"id":"2","changes":[
                {"field":"messages","value":{"statuses":[{"id":"wamid.O","status":"delivered","timestamp":1700000001,"recipient_id":"34600"}]}}]}]}"#;
        let events = parse(body).expect("parses");
        assert_eq!(events.len(), 3);
        let InboundEvent::Message(first) = &events[0] else {
            panic!("{events:?}")
        };
        assert_eq!(
            first.sender.as_ref().map(|s| s.display_name.as_str()),
            Some("Bo")
        );
        assert_eq!(
            first.sent_at.as_ref().map(|t| t.seconds),
            Some(1_700_000_000)
        );
        let InboundEvent::Message(second) = &events[1] else {
            panic!("{events:?}")
        };
        assert_eq!(
            second.sender.as_ref().map(|s| s.display_name.as_str()),
            Some("Ana")
        );
        let InboundEvent::Status(status) = &events[2] else {
            panic!("{events:?}")
        };
        assert_eq!(status.state, DeliveryState::Delivered as i32);
        assert_eq!(
            status.occurred_at.as_ref().map(|t| t.seconds),
            Some(1_700_000_001)
        );
        assert_eq!(status.contact_external_id, "34600");
    }

    #[test]
    fn a_failed_status_carries_the_first_errors_code_and_title() {
        let events = parse(&wrap(
            r#"{"statuses":[{"id":"wamid.O","status":"failed","errors":[{"code":131047,"title":"Re-engagement message","message":"More than 24 hours"},{"code":1}]}]}"#,
        ))
        .expect("parses");
        let [InboundEvent::Status(s)] = events.as_slice() else {
            panic!("{events:?}")
        };
        assert_eq!(s.state, DeliveryState::Failed as i32);
        assert_eq!(s.error_code, "131047");
        assert_eq!(s.error, "Re-engagement message");
        assert_eq!(s.webhook_id, "wamid.O:failed");
        let played = parse(&wrap(
            r#"{"statuses":[{"id":"wamid.O","status":"played"}]}"#,
        ))
        .expect("parses");
        assert!(matches!(
            played.as_slice(),
            [InboundEvent::Status(s)] if s.state == DeliveryState::Played as i32
        ));
        let unknown = parse(&wrap(
            r#"{"statuses":[{"id":"wamid.O","status":"deleted"}]}"#,
        ))
        .expect("parses");
        assert!(unknown.is_empty());
    }

    #[test]
    fn changes_about_another_number_of_the_app_are_not_this_channels() {
        let body = wrap(
            r#"{"metadata":{"phone_number_id":"999"},"messages":[{"from":"34600","id":"wamid.X","type":"text","text":{"body":"not ours"}}]}"#,
        );
        assert!(parse(&body).expect("parses").is_empty());
        let ours = one_message(
            r#"{"metadata":{"phone_number_id":"1122334455667"},"messages":[{"from":"34600","id":"wamid.Y","type":"text","text":{"body":"ours"}}]}"#,
        );
        assert_eq!(ours.text, "ours");
    }

    #[test]
    fn null_and_unknown_fields_are_tolerated() {
        let m = one_message(
            r#"{"contacts":null,"messages":[{"from":"34600","id":"wamid.N","timestamp":null,"context":null,"type":"text","text":{"body":"hi","future":{"a":1}},"brand_new":[1,2]}],"statuses":null,"errors":[{"code":1}]}"#,
        );
        assert_eq!(m.text, "hi");
        assert_eq!(m.sent_at, None);
        assert_eq!(m.sender.map(|s| s.display_name), Some(String::new()));
        let nothing =
            parse(r#"{"object":"whatsapp_business_account","entry":null}"#).expect("parses");
        assert!(nothing.is_empty());
        assert!(
            parse(r#"{"object":"page","entry":[{"messaging":[]}]}"#)
                .expect("another object is acknowledged")
                .is_empty()
        );
    }

    #[test]
    fn unreadable_bodies_and_missing_ids_are_malformed() {
        assert!(parse("{").expect_err("bad json").contains("malformed body"));
        let no_id =
            parse(&wrap(r#"{"messages":[{"from":"34600","type":"text"}]}"#)).expect_err("no id");
        assert!(no_id.contains("messages[0].id"), "{no_id}");
        let no_from = parse(&wrap(r#"{"messages":[{"id":"wamid.1","type":"text"}]}"#))
            .expect_err("no sender");
        assert!(no_from.contains("messages[0].from"), "{no_from}");
        let no_status_id = parse(&wrap(r#"{"statuses":[{"status":"read"}]}"#)).expect_err("no id");
        assert!(no_status_id.contains("statuses[0].id"), "{no_status_id}");
    }
}
