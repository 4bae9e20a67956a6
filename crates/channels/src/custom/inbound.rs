//! The custom channel's webhook body, parsed into canonical events.
//!
//! ```json
//! {"type":"message.inbound","message":{"external_id","sender":{"external_id","display_name"},
//!   "text","attachments":[{"kind","url","mime_type","size_bytes"}]}}
//! {"type":"message.status","status":{"message_external_id","state","error"}}
//! ```
//!
//! Read as every provider is read, tolerantly: bridges are written by
//! people in many languages, and versions of this protocol will add
//! fields. Unknown fields are ignored, `null` is an absent optional field,
//! and a body of an unknown `type` is acknowledged with no events (logged),
//! never refused into a redelivery loop. What is refused (400) is a body
//! that is not JSON, or a known type missing what it needs (named).

use serde::Deserialize;
use telenet_kit::error::required;
use telenet_proto::common::v1::{Attachment, AttachmentKind, AttachmentState};
use telenet_proto::events::v1::{InboundMessageReceived, InboundStatusReceived, Sender};

use crate::InboundEvent;

/// Longest text accepted in one message, in bytes.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
/// Most attachments in one message.
pub const MAX_ATTACHMENTS: usize = 20;

#[derive(Debug, Deserialize)]
#[serde(tag = "type")]
enum Body {
    #[serde(rename = "message.inbound")]
    Inbound { message: InboundMessage },
    #[serde(rename = "message.status")]
    Status { status: StatusBody },
    /// A type this version does not know.
    #[serde(other)]
    Other,
}

/// The type of a body, whatever it is.
#[derive(Debug, Deserialize)]
struct Typed {
    #[serde(rename = "type", default, deserialize_with = "null_default")]
    kind: String,
}

/// `null` read as the field's default (an absent optional field).
fn null_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[derive(Debug, Deserialize)]
struct InboundMessage {
    #[serde(default, deserialize_with = "null_default")]
    external_id: String,
    #[serde(default, deserialize_with = "null_default")]
    sender: SenderBody,
    #[serde(default, deserialize_with = "null_default")]
    text: String,
    #[serde(default, deserialize_with = "null_default")]
    attachments: Vec<AttachmentBody>,
}

#[derive(Debug, Default, Deserialize)]
struct SenderBody {
    #[serde(default, deserialize_with = "null_default")]
    external_id: String,
    #[serde(default, deserialize_with = "null_default")]
    display_name: String,
}

#[derive(Debug, Deserialize)]
struct AttachmentBody {
    #[serde(default, deserialize_with = "null_default")]
    kind: String,
    #[serde(default, deserialize_with = "null_default")]
    url: String,
    #[serde(default, deserialize_with = "null_default")]
    mime_type: String,
    #[serde(default, deserialize_with = "null_default")]
    size_bytes: u64,
}

#[derive(Debug, Deserialize)]
struct StatusBody {
    #[serde(default, deserialize_with = "null_default")]
    message_external_id: String,
    #[serde(default, deserialize_with = "null_default")]
    state: String,
    #[serde(default, deserialize_with = "null_default")]
    error: String,
}

/// Parse and validate a custom channel's body: its event, or none for a
/// body of a type this version does not know. Errors are lowercase and
/// name the field.
pub fn parse_inbound(
    body: &[u8],
    channel_id: &str,
    webhook_id: &str,
) -> Result<Option<InboundEvent>, String> {
    let typed: Typed = serde_json::from_slice(body).map_err(|e| format!("malformed body: {e}"))?;
    if typed.kind.is_empty() {
        return Err("type is required (message.inbound or message.status)".into());
    }
    let parsed: Body = serde_json::from_slice(body).map_err(|e| format!("malformed body: {e}"))?;
    match parsed {
        Body::Inbound { message } => {
            inbound_message(message, channel_id, webhook_id).map(|m| Some(InboundEvent::Message(m)))
        }
        Body::Status { status } => {
            inbound_status(status, channel_id, webhook_id).map(|s| Some(InboundEvent::Status(s)))
        }
        Body::Other => {
            tracing::info!(
                channel_id,
                webhook_id,
                r#type = %typed.kind,
                "custom channel body of an unknown type acknowledged without events"
            );
            Ok(None)
        }
    }
}

fn inbound_message(
    message: InboundMessage,
    channel_id: &str,
    webhook_id: &str,
) -> Result<InboundMessageReceived, String> {
    required("message.external_id", &message.external_id)?;
    required("message.sender.external_id", &message.sender.external_id)?;
    if message.text.len() > MAX_TEXT_BYTES {
        return Err(format!(
            "message.text is longer than {MAX_TEXT_BYTES} bytes"
        ));
    }
    if message.text.trim().is_empty() && message.attachments.is_empty() {
        return Err("message has neither text nor attachments".into());
    }
    if message.attachments.len() > MAX_ATTACHMENTS {
        return Err(format!(
            "message has more than {MAX_ATTACHMENTS} attachments"
        ));
    }
    let attachments = message
        .attachments
        .into_iter()
        .enumerate()
        .map(|(i, a)| attachment(i, a))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(InboundMessageReceived {
        channel_id: channel_id.to_owned(),
        channel_kind: telenet_proto::common::v1::ChannelKind::Custom as i32,
        webhook_id: webhook_id.to_owned(),
        external_id: message.external_id,
        sender: Some(Sender {
            external_id: message.sender.external_id,
            display_name: message.sender.display_name,
        }),
        text: message.text,
        attachments,
        provider: telenet_proto::common::v1::ChannelProvider::Custom as i32,
        ..Default::default()
    })
}

fn inbound_status(
    status: StatusBody,
    channel_id: &str,
    webhook_id: &str,
) -> Result<InboundStatusReceived, String> {
    required("status.message_external_id", &status.message_external_id)?;
    let Some(state) = super::delivery_state(&status.state) else {
        return Err(format!(
            "status.state {:?} is not one of sent, delivered, read, failed",
            status.state
        ));
    };
    Ok(InboundStatusReceived {
        channel_id: channel_id.to_owned(),
        message_external_id: status.message_external_id,
        state: state as i32,
        error: status.error,
        webhook_id: webhook_id.to_owned(),
        ..Default::default()
    })
}

fn attachment(i: usize, a: AttachmentBody) -> Result<Attachment, String> {
    let kind = match a.kind.as_str() {
        "image" => AttachmentKind::Image,
        "audio" => AttachmentKind::Audio,
        "voice" => AttachmentKind::Voice,
        "video" => AttachmentKind::Video,
        "file" => AttachmentKind::File,
        "sticker" => AttachmentKind::Sticker,
        other => {
            return Err(format!(
                "message.attachments[{i}].kind {other:?} is not one of image, audio, voice, video, file, sticker"
            ));
        }
    };
    let url = url::Url::parse(&a.url)
        .map_err(|e| format!("message.attachments[{i}].url is not an absolute URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "message.attachments[{i}].url must be http or https"
        ));
    }
    if !a.mime_type.is_empty() && !a.mime_type.contains('/') {
        return Err(format!(
            "message.attachments[{i}].mime_type {:?} is not a MIME type",
            a.mime_type
        ));
    }
    Ok(Attachment {
        kind: kind as i32,
        url: url.into(),
        mime_type: a.mime_type,
        size_bytes: a.size_bytes,
        state: AttachmentState::Pending as i32,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use telenet_proto::dispatch::v1::DeliveryState;

    #[test]
    fn parses_an_inbound_message() {
        let body = br#"{"type":"message.inbound","message":{"external_id":"m1","sender":{"external_id":"+34600","display_name":"Ana"},"text":"hola","attachments":[{"kind":"voice","url":"https://cdn.example/v.ogg","mime_type":"audio/ogg","size_bytes":9199}]}}"#;
        let Ok(Some(InboundEvent::Message(m))) = parse_inbound(body, "ch", "wh") else {
            panic!("not a message");
        };
        assert_eq!(m.external_id, "m1");
        assert_eq!(m.text, "hola");
        assert_eq!(m.attachments.len(), 1);
        assert_eq!(m.attachments[0].kind, AttachmentKind::Voice as i32);
        assert_eq!(m.attachments[0].state, AttachmentState::Pending as i32);
    }

    #[test]
    fn parses_a_status() {
        let body = br#"{"type":"message.status","status":{"message_external_id":"x9","state":"delivered"}}"#;
        let Ok(Some(InboundEvent::Status(s))) = parse_inbound(body, "ch", "wh") else {
            panic!("not a status");
        };
        assert_eq!(s.state, DeliveryState::Delivered as i32);
        assert_eq!(s.message_external_id, "x9");
    }

    #[test]
    fn names_what_is_wrong() {
        let cases: &[(&[u8], &str)] = &[
            (b"{", "malformed body"),
            (br#"{"id":"e1"}"#, "type is required"),
            (br#"{"type":null}"#, "type is required"),
            (br#"{"type":"message.inbound","message":{"external_id":"","sender":{"external_id":"a"},"text":"x"}}"#, "message.external_id"),
            (br#"{"type":"message.inbound","message":{"external_id":"m","sender":{"external_id":"a"},"text":" "}}"#, "neither text nor attachments"),
            (br#"{"type":"message.inbound","message":{"external_id":"m","sender":{"external_id":"a"},"attachments":[{"kind":"gif","url":"https://x"}]}}"#, "attachments[0].kind"),
            (br#"{"type":"message.inbound","message":{"external_id":"m","sender":{"external_id":"a"},"attachments":[{"kind":"file","url":"ftp://x/y"}]}}"#, "attachments[0].url"),
            (br#"{"type":"message.status","status":{"message_external_id":"m","state":"lost"}}"#, "status.state"),
            (br#"{"type":"message.inbound","message":{"external_id":"m","sender":null,"text":"x"}}"#, "message.sender.external_id"),
        ];
        for (body, needle) in cases {
            let err = parse_inbound(body, "ch", "wh").expect_err("must fail");
            assert!(err.contains(needle), "{err:?} should mention {needle:?}");
        }
    }

    #[test]
    fn unknown_fields_nulls_and_unknown_types_are_tolerated() {
        let extra = br#"{"type":"message.inbound","id":"e1","message":{"external_id":"m","sender":{"external_id":"a","display_name":null},"text":"x","extra":1,"attachments":null}}"#;
        let Ok(Some(InboundEvent::Message(m))) = parse_inbound(extra, "ch", "wh") else {
            panic!("an extra field and nulls are read");
        };
        assert_eq!(
            (m.text.as_str(), m.sender.map(|s| s.display_name)),
            ("x", Some(String::new()))
        );
        let status = br#"{"type":"message.status","status":{"message_external_id":"m","state":"read","error":null}}"#;
        let Ok(Some(InboundEvent::Status(s))) = parse_inbound(status, "ch", "wh") else {
            panic!("a null error is no error");
        };
        assert_eq!(s.error, "");
        assert_eq!(
            parse_inbound(br#"{"type":"nope","x":1}"#, "ch", "wh"),
            Ok(None)
        );
    }
}
