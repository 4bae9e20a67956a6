//! LINE webhook bodies: `{destination, events[]}`, read tolerantly.
//!
//! - `message` events give a message: `text`; `image`, `video`, `audio`
//!   (a recording made in the LINE app: a voice note,
//!   [`AttachmentKind::Voice`]) and `file` an attachment; `location` a
//!   location; `sticker` an unsupported `sticker` message with the
//!   sticker's text; other message types an unsupported message of that
//!   type. `quotedMessageId` is the message replied to.
//! - `unsend` gives an UNSENT change of its message, `messageEdited` an
//!   EDITED change with the new text.
//! - Everything else (follow, join, postback, beacon, unknown types) gives
//!   no events; an empty `events` array is the console's "Verify" request.
//!
//! The contact is `source.userId`, in groups and rooms too (the member who
//! wrote); when LINE leaves it out (a member who has not agreed to share
//! it), the group or room id stands in, so the message is still kept.

use serde_json::Value;
use telenet_proto::common::v1::{
    Attachment, AttachmentKind, AttachmentState, ChannelKind, ChannelProvider, Location,
    MessageChange,
};
use telenet_proto::events::v1::{InboundMessageReceived, Sender};

use crate::InboundEvent;

/// The events of a webhook body, for channel `channel_id`, whose content
/// URLs start with `content_base`. `Err` names what is unreadable.
pub fn parse_events(
    body: &[u8],
    channel_id: &str,
    content_base: &str,
) -> Result<Vec<InboundEvent>, String> {
    let json: Value = serde_json::from_slice(body).map_err(|e| format!("malformed body: {e}"))?;
    let events = match json.get("events") {
        Some(Value::Array(events)) => events,
        Some(Value::Null) | None => return Err("events: missing".into()),
        Some(_) => return Err("events: not a list".into()),
    };
    let mut out = Vec::new();
    for (i, event) in events.iter().enumerate() {
        if let Some(e) = parse_event(event, channel_id, content_base)
            .map_err(|why| format!("events[{i}].{why}"))?
        {
            out.push(e);
        }
    }
    Ok(out)
}

fn str_of<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

/// An id LINE may write as a string or (in older bodies) a number.
fn id_of(value: &Value, key: &str) -> Option<String> {
    match value.get(key)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) if n.is_u64() || n.is_i64() => Some(n.to_string()),
        _ => None,
    }
}

fn parse_event(
    event: &Value,
    channel_id: &str,
    content_base: &str,
) -> Result<Option<InboundEvent>, String> {
    if !event.is_object() {
        return Err("not an object".into());
    }
    let kind = str_of(event, "type").unwrap_or_default();
    let message = match kind {
        "message" => {
            let m = event
                .get("message")
                .filter(|m| m.is_object())
                .ok_or("message: missing")?;
            let id = id_of(m, "id").ok_or("message.id: missing")?;
            let mut msg = base(event, channel_id, &id)?;
            read_content(&mut msg, m, &id, content_base);
            msg
        }
        "unsend" => {
            let unsend = event.get("unsend").ok_or("unsend: missing")?;
            let id = id_of(unsend, "messageId").ok_or("unsend.messageId: missing")?;
            let mut msg = base(event, channel_id, &id)?;
            msg.change = MessageChange::Unsent as i32;
            msg
        }
        "messageEdited" => {
            let m = event
                .get("message")
                .filter(|m| m.is_object())
                .ok_or("message: missing")?;
            let id = id_of(m, "id").ok_or("message.id: missing")?;
            let mut msg = base(event, channel_id, &id)?;
            msg.change = MessageChange::Edited as i32;
            msg.text = str_of(m, "text").unwrap_or_default().to_owned();
            msg
        }
        // follow, unfollow, join, leave, postback, beacon, accountLink,
        // memberJoined, memberLeft, videoPlayComplete and types LINE adds
        // later: acknowledged, nothing to show.
        _ => return Ok(None),
    };
    Ok(Some(InboundEvent::Message(message)))
}

/// The fields every message event has: ids, sender, time.
fn base(
    event: &Value,
    channel_id: &str,
    external_id: &str,
) -> Result<InboundMessageReceived, String> {
    let source = event.get("source").ok_or("source: missing")?;
    let sender = ["userId", "groupId", "roomId"]
        .iter()
        .find_map(|k| id_of(source, k))
        .ok_or("source.userId: missing")?;
    let mut msg = InboundMessageReceived {
        channel_id: channel_id.to_owned(),
        channel_kind: ChannelKind::Line as i32,
        provider: ChannelProvider::Line as i32,
        webhook_id: id_of(event, "webhookEventId").unwrap_or_else(|| external_id.to_owned()),
        external_id: external_id.to_owned(),
        sender: Some(Sender {
            external_id: sender,
            display_name: String::new(),
        }),
        ..Default::default()
    };
    if let Some(ms) = event.get("timestamp").and_then(Value::as_i64) {
        msg.sent_at = Some(Default::default());
        if let Some(at) = msg.sent_at.as_mut() {
            at.seconds = ms.div_euclid(1000);
            // Below 1000 ms, so below a billion ns: it fits.
            at.nanos = i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or_default();
        }
    }
    Ok(msg)
}

/// What a `message` event's `message` carries.
fn read_content(msg: &mut InboundMessageReceived, m: &Value, id: &str, content_base: &str) {
    if let Some(quoted) = id_of(m, "quotedMessageId") {
        msg.reply_to_external_id = quoted;
    }
    let kind = str_of(m, "type").unwrap_or_default();
    let attachment = |kind: AttachmentKind| Attachment {
        kind: kind as i32,
        url: media_url(m, id, content_base),
        state: AttachmentState::Pending as i32,
        duration_ms: m
            .get("duration")
            .and_then(Value::as_u64)
            .unwrap_or_default(),
        ..Default::default()
    };
    match kind {
        "text" => msg.text = str_of(m, "text").unwrap_or_default().to_owned(),
        "image" => msg.attachments.push(attachment(AttachmentKind::Image)),
        "video" => msg.attachments.push(attachment(AttachmentKind::Video)),
        // The LINE app records audio messages: they are voice notes.
        "audio" => msg.attachments.push(attachment(AttachmentKind::Voice)),
        "file" => msg.attachments.push(Attachment {
            file_name: str_of(m, "fileName").unwrap_or_default().to_owned(),
            size_bytes: m
                .get("fileSize")
                .and_then(Value::as_u64)
                .unwrap_or_default(),
            ..attachment(AttachmentKind::File)
        }),
        "location" => {
            msg.location = Some(Location {
                latitude: m
                    .get("latitude")
                    .and_then(Value::as_f64)
                    .unwrap_or_default(),
                longitude: m
                    .get("longitude")
                    .and_then(Value::as_f64)
                    .unwrap_or_default(),
                name: str_of(m, "title").unwrap_or_default().to_owned(),
                address: str_of(m, "address").unwrap_or_default().to_owned(),
            });
        }
        "sticker" => {
            // LINE's stickers are only shown by LINE's apps: kept as an
            // unsupported message, with the sticker's own text if it has
            // one (message stickers), else its keywords.
            msg.unsupported_type = "sticker".into();
            msg.text = match str_of(m, "text") {
                Some(text) if !text.is_empty() => text.to_owned(),
                _ => m
                    .get("keywords")
                    .and_then(Value::as_array)
                    .map(|k| {
                        k.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default(),
            };
        }
        other => {
            msg.unsupported_type = if other.is_empty() { "unknown" } else { other }.to_owned();
        }
    }
}

/// Where a message's file is: LINE's content endpoint for files LINE holds,
/// the sender's own URL for `contentProvider.type == external`.
fn media_url(m: &Value, id: &str, content_base: &str) -> String {
    let provider = m.get("contentProvider");
    let external = provider
        .and_then(|p| str_of(p, "type"))
        .is_some_and(|t| t == "external");
    match provider.and_then(|p| str_of(p, "originalContentUrl")) {
        Some(url) if external && !url.is_empty() => url.to_owned(),
        _ => format!(
            "{content_base}/v2/bot/message/{}/content",
            url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "https://api-data.line.me";

    fn only(body: &str) -> InboundMessageReceived {
        let events = parse_events(body.as_bytes(), "ch", BASE).expect("parses");
        let [InboundEvent::Message(m)] = events.as_slice() else {
            panic!("one message expected: {events:?}");
        };
        m.clone()
    }

    #[test]
    fn the_consoles_verify_request_parses_into_no_events() {
        let body = br#"{"destination":"U0123456789abcdef0123456789abcdef","events":[]}"#;
        assert_eq!(parse_events(body, "ch", BASE), Ok(Vec::new()));
    }

    #[test]
    fn unreadable_bodies_name_what_is_wrong() {
        assert!(parse_events(b"{", "ch", BASE).is_err_and(|e| e.contains("malformed body")));
        assert_eq!(
            parse_events(b"{}", "ch", BASE),
            Err("events: missing".into())
        );
        assert_eq!(
            parse_events(br#"{"events":[{"type":"message","source":{"userId":"U1"},"message":{"type":"text"}}]}"#, "ch", BASE),
            Err("events[0].message.id: missing".into())
        );
        assert_eq!(
            parse_events(
                br#"{"events":[{"type":"message","message":{"id":"1","type":"text"}}]}"#,
                "ch",
                BASE
            ),
            Err("events[0].source: missing".into())
        );
    }

    #[test]
    fn files_line_holds_are_fetched_from_the_content_endpoint() {
        let m = only(
            r#"{"events":[{"type":"message","timestamp":1627356924722,"source":{"type":"user","userId":"U1"},
            "webhookEventId":"01H","message":{"id":"354718705033693861","type":"audio","duration":3452,
            "contentProvider":{"type":"line"}}}]}"#,
        );
        assert_eq!(
            m.attachments[0].url,
            "https://api-data.line.me/v2/bot/message/354718705033693861/content"
        );
        assert_eq!(m.attachments[0].kind, AttachmentKind::Voice as i32);
        assert_eq!(m.attachments[0].duration_ms, 3452);
        assert_eq!(m.webhook_id, "01H");
        let at = m.sent_at.expect("sent_at");
        assert_eq!((at.seconds, at.nanos), (1_627_356_924, 722_000_000));
    }

    #[test]
    fn quoted_messages_are_replies_and_nulls_are_absent_fields() {
        let m = only(
            r#"{"destination":null,"events":[{"type":"message","source":{"type":"user","userId":"U1"},
            "webhookEventId":null,"deliveryContext":null,"message":{"id":"2","type":"text","text":"yes",
            "quotedMessageId":"1","emojis":null}}]}"#,
        );
        assert_eq!(m.reply_to_external_id, "1");
        assert_eq!(m.text, "yes");
        assert_eq!(
            m.webhook_id, "2",
            "the message id stands in for a missing event id"
        );
    }

    #[test]
    fn unknown_message_types_are_kept_as_unsupported() {
        let m = only(
            r#"{"events":[{"type":"message","source":{"userId":"U1"},"message":{"id":"3","type":"hologram"}}]}"#,
        );
        assert_eq!(m.unsupported_type, "hologram");
    }
}
