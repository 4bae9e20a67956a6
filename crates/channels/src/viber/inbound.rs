//! Viber callbacks, read tolerantly.
//!
//! - `message`: `text`; `picture`, `video`, `file` an attachment (the
//!   picture's text its caption); `sticker` a sticker attachment (its
//!   image URL) when Viber gives one, else an unsupported `sticker`;
//!   `location` a location; `url` a text with the link; `contact` an
//!   unsupported `contact` described by its name and number;
//!   `rich_media` and unknown types an unsupported message of that type.
//! - `delivered`, `seen` (READ) and `failed` (with `desc`): a status of
//!   our message `message_token`, for the contact `user_id`.
//! - `webhook` (sent while `set_webhook` is called), `subscribed`,
//!   `unsubscribed`, `conversation_started` and unknown events: none.

use serde_json::{Number, Value};
use telenet_proto::common::v1::{
    Attachment, AttachmentKind, AttachmentState, ChannelKind, ChannelProvider, Location,
};
use telenet_proto::events::v1::{InboundMessageReceived, InboundStatusReceived, Sender};

use crate::InboundEvent;

/// The events of a callback body for channel `channel_id`. `Err` names
/// what is unreadable.
pub fn parse_callback(body: &[u8], channel_id: &str) -> Result<Vec<InboundEvent>, String> {
    let json: Value = serde_json::from_slice(body).map_err(|e| format!("malformed body: {e}"))?;
    if !json.is_object() {
        return Err("malformed body: not an object".into());
    }
    let event = json
        .get("event")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match event {
        "message" => parse_message(&json, channel_id).map(|m| vec![InboundEvent::Message(m)]),
        "delivered" | "seen" | "failed" => {
            parse_receipt(&json, event, channel_id).map(|s| vec![InboundEvent::Status(s)])
        }
        _ => Ok(Vec::new()),
    }
}

/// A `message_token` as its exact decimal text. serde_json keeps integers
/// up to 2^64 exactly (`u64`/`i64`, never a float); a float or a string
/// that is not an integer is refused.
pub fn message_token(json: &Value) -> Result<String, String> {
    let exact = |n: &Number| (n.is_u64() || n.is_i64()).then(|| n.to_string());
    match json.get("message_token") {
        Some(Value::Number(n)) => {
            exact(n).ok_or_else(|| "message_token: not an integer".to_owned())
        }
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
        _ => Err("message_token: missing".into()),
    }
}

fn str_of<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

fn u64_of(value: &Value, key: &str) -> u64 {
    value.get(key).and_then(Value::as_u64).unwrap_or_default()
}

/// Unix milliseconds as a protobuf timestamp (set through the message, so
/// the timestamp type need not be named).
fn set_time<T: Default>(slot: &mut Option<T>, ms: Option<i64>, set: impl FnOnce(&mut T, i64, i32)) {
    if let Some(ms) = ms {
        let mut at = T::default();
        let nanos = i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or_default();
        set(&mut at, ms.div_euclid(1000), nanos);
        *slot = Some(at);
    }
}

fn parse_message(json: &Value, channel_id: &str) -> Result<InboundMessageReceived, String> {
    let token = message_token(json)?;
    let sender = json.get("sender").ok_or("sender: missing")?;
    let sender_id = str_of(sender, "id")
        .filter(|id| !id.trim().is_empty())
        .ok_or("sender.id: missing")?;
    let m = json
        .get("message")
        .filter(|m| m.is_object())
        .ok_or("message: missing")?;
    let mut msg = InboundMessageReceived {
        channel_id: channel_id.to_owned(),
        channel_kind: ChannelKind::Viber as i32,
        provider: ChannelProvider::Viber as i32,
        webhook_id: token.clone(),
        external_id: token,
        sender: Some(Sender {
            external_id: sender_id.to_owned(),
            display_name: str_of(sender, "name").unwrap_or_default().to_owned(),
        }),
        ..Default::default()
    };
    set_time(
        &mut msg.sent_at,
        json.get("timestamp").and_then(Value::as_i64),
        |at, s, n| {
            at.seconds = s;
            at.nanos = n;
        },
    );
    let text = str_of(m, "text").unwrap_or_default().to_owned();
    let media = str_of(m, "media").unwrap_or_default();
    let attachment = |kind: AttachmentKind| Attachment {
        kind: kind as i32,
        url: media.to_owned(),
        size_bytes: u64_of(m, "size"),
        file_name: str_of(m, "file_name").unwrap_or_default().to_owned(),
        // Viber gives durations in seconds.
        duration_ms: u64_of(m, "duration").saturating_mul(1000),
        state: AttachmentState::Pending as i32,
        ..Default::default()
    };
    let kind = str_of(m, "type").unwrap_or_default();
    match kind {
        "text" => msg.text = text,
        "picture" | "video" | "file" if media.is_empty() => {
            return Err("message.media: missing".into());
        }
        "picture" => {
            msg.text = text;
            msg.attachments.push(attachment(AttachmentKind::Image));
        }
        "video" => {
            msg.text = text;
            msg.attachments.push(attachment(AttachmentKind::Video));
        }
        "file" => msg.attachments.push(attachment(AttachmentKind::File)),
        "sticker" if !media.is_empty() => msg.attachments.push(attachment(AttachmentKind::Sticker)),
        "sticker" => msg.unsupported_type = "sticker".into(),
        "location" => {
            let at = m.get("location").ok_or("message.location: missing")?;
            msg.location = Some(Location {
                latitude: at.get("lat").and_then(Value::as_f64).unwrap_or_default(),
                longitude: at.get("lon").and_then(Value::as_f64).unwrap_or_default(),
                name: String::new(),
                address: str_of(at, "address").unwrap_or_default().to_owned(),
            });
        }
        // A link the contact shared: its URL is the text.
        "url" => {
            msg.text = if media.is_empty() {
                text
            } else {
                media.to_owned()
            }
        }
        "contact" => {
            msg.unsupported_type = "contact".into();
            let contact = m.get("contact");
            let field = |k: &str| contact.and_then(|c| str_of(c, k)).unwrap_or_default();
            msg.text = [field("name"), field("phone_number")]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
        }
        other => {
            msg.unsupported_type = if other.is_empty() { "unknown" } else { other }.to_owned();
            msg.text = text;
        }
    }
    Ok(msg)
}

fn parse_receipt(
    json: &Value,
    event: &str,
    channel_id: &str,
) -> Result<InboundStatusReceived, String> {
    let token = message_token(json)?;
    let state = super::delivery_state(event).ok_or("event: not a receipt")?;
    let mut status = InboundStatusReceived {
        channel_id: channel_id.to_owned(),
        webhook_id: token.clone(),
        message_external_id: token,
        state: state as i32,
        error: str_of(json, "desc").unwrap_or_default().to_owned(),
        contact_external_id: str_of(json, "user_id").unwrap_or_default().to_owned(),
        ..Default::default()
    };
    set_time(
        &mut status.occurred_at,
        json.get("timestamp").and_then(Value::as_i64),
        |at, s, n| {
            at.seconds = s;
            at.nanos = n;
        },
    );
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_tokens_beyond_two_to_the_53_keep_every_digit() {
        for raw in [
            "5741311803571721087",
            "18446744073709551615",
            "-4611686018427387905",
        ] {
            let body = format!(r#"{{"event":"seen","message_token":{raw},"user_id":"u"}}"#);
            let json: Value = serde_json::from_str(&body).expect("json");
            assert_eq!(message_token(&json).as_deref(), Ok(raw));
        }
        // Through a float, the first one would read …1088.
        assert_ne!(
            5_741_311_803_571_721_087_u64 as f64 as u64,
            5_741_311_803_571_721_087
        );
        let float: Value = serde_json::from_str(r#"{"message_token":5.7e18}"#).expect("json");
        assert!(message_token(&float).is_err());
        let text: Value = serde_json::from_str(r#"{"message_token":"57"}"#).expect("json");
        assert_eq!(message_token(&text).as_deref(), Ok("57"));
    }

    #[test]
    fn unreadable_callbacks_name_what_is_wrong() {
        assert!(parse_callback(b"[", "ch").is_err_and(|e| e.contains("malformed body")));
        assert_eq!(
            parse_callback(
                br#"{"event":"message","sender":{"id":"u"},"message":{"type":"text"}}"#,
                "ch"
            ),
            Err("message_token: missing".into())
        );
        assert_eq!(
            parse_callback(
                br#"{"event":"message","message_token":1,"sender":{},"message":{"type":"text"}}"#,
                "ch"
            ),
            Err("sender.id: missing".into())
        );
        assert_eq!(
            parse_callback(br#"{"event":"message","message_token":1,"sender":{"id":"u"},"message":{"type":"picture"}}"#, "ch"),
            Err("message.media: missing".into())
        );
    }

    #[test]
    fn unknown_events_and_subscriptions_give_no_events() {
        for body in [
            r#"{"event":"subscribed","timestamp":1457764197627,"user":{"id":"u"},"message_token":4912661846655238145}"#,
            r#"{"event":"conversation_started","timestamp":1,"message_token":1,"type":"open","user":{"id":"u"},"subscribed":false}"#,
            r#"{"event":"client_status","x":null}"#,
            r#"{"event":null}"#,
        ] {
            assert_eq!(
                parse_callback(body.as_bytes(), "ch"),
                Ok(Vec::new()),
                "{body}"
            );
        }
    }
}
