//! Messages out, as Cloud API request bodies (360dialog takes the same):
//! `{messaging_product:"whatsapp", recipient_type:"individual", to, type, <type>:{…},
//! context?:{message_id}}`, one request per WhatsApp message.
//!
//! - Text: `text:{body, preview_url:false}`, split at word boundaries into
//!   parts of at most [`TEXT_LIMIT`] characters, sent in order.
//! - Files go by `link` (dispatch hands out a downloadable URL): `image`,
//!   `video`, `document` (with `filename`), `audio`, `sticker`; a voice note
//!   is `audio:{link, voice:true}` when it is Ogg/Opus.
//! - The text rides as the caption of the first file when that file takes
//!   one (image, video, document) and it fits [`CAPTION_LIMIT`]; otherwise
//!   it goes first, as text messages.
//! - A reply quotes `context.message_id` on the first request.

use serde_json::{Value, json};
use telenet_proto::common::v1::{Attachment, AttachmentKind};
use telenet_proto::events::v1::OutboundRequested;

use crate::{Overflow, TextLimit, TextUnit};

/// Longest text of one message, in characters.
pub const TEXT_LIMIT: usize = 4096;
/// Longest caption of a file, in characters.
pub const CAPTION_LIMIT: usize = 1024;

/// The text limit WhatsApp channels declare: 4096 characters, split.
pub fn text_limit() -> TextLimit {
    TextLimit {
        max: TEXT_LIMIT,
        unit: TextUnit::Chars,
        overflow: Overflow::Split,
    }
}

/// The request bodies of `message`, in sending order. `Err`: it cannot be
/// sent as it is (no recipient, nothing to send).
pub fn request_bodies(message: &OutboundRequested) -> Result<Vec<Value>, String> {
    let to = message.recipient_external_id.trim();
    if to.is_empty() {
        return Err("the message has no recipient".into());
    }
    let text = message.text.trim();
    let caption_on_first = !text.is_empty()
        && text.chars().count() <= CAPTION_LIMIT
        && message
            .attachments
            .first()
            .is_some_and(|a| takes_caption(kind_of(a)));
    let mut objects = Vec::new();
    if !caption_on_first {
        for part in text_limit().split(text) {
            objects.push(("text", json!({ "body": part, "preview_url": false })));
        }
    }
    for (i, attachment) in message.attachments.iter().enumerate() {
        let caption = (i == 0 && caption_on_first).then_some(text);
        objects.push(media_object(attachment, caption)?);
    }
    if objects.is_empty() {
        return Err("the message has neither text nor files".into());
    }
    let reply_to = message.reply_to_external_id.trim();
    Ok(objects
        .into_iter()
        .enumerate()
        .map(|(i, (kind, object))| {
            let mut body = json!({
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": to,
                "type": kind,
            });
            body[kind] = object;
            if i == 0 && !reply_to.is_empty() {
                body["context"] = json!({ "message_id": reply_to });
            }
            body
        })
        .collect())
}

fn kind_of(attachment: &Attachment) -> AttachmentKind {
    AttachmentKind::try_from(attachment.kind).unwrap_or(AttachmentKind::File)
}

fn takes_caption(kind: AttachmentKind) -> bool {
    matches!(
        kind,
        AttachmentKind::Image
            | AttachmentKind::Video
            | AttachmentKind::File
            | AttachmentKind::Unspecified
    )
}

/// Whether a MIME type is Ogg/Opus, the one format WhatsApp plays as a
/// voice message.
fn is_ogg_opus(mime_type: &str) -> bool {
    let lower = mime_type.to_ascii_lowercase();
    let essence = lower.split(';').next().unwrap_or_default().trim();
    essence == "audio/ogg" || essence == "audio/opus"
}

fn media_object(
    attachment: &Attachment,
    caption: Option<&str>,
) -> Result<(&'static str, Value), String> {
    let link = attachment.url.trim();
    if link.is_empty() {
        return Err("a file has no URL".into());
    }
    let kind = kind_of(attachment);
    let (name, mut object) = match kind {
        AttachmentKind::Image => ("image", json!({ "link": link })),
        AttachmentKind::Video => ("video", json!({ "link": link })),
        AttachmentKind::Sticker => ("sticker", json!({ "link": link })),
        AttachmentKind::Audio => ("audio", json!({ "link": link })),
        AttachmentKind::Voice if is_ogg_opus(&attachment.mime_type) => {
            ("audio", json!({ "link": link, "voice": true }))
        }
        // A voice note the media service could not make Ogg/Opus: plain audio.
        AttachmentKind::Voice => ("audio", json!({ "link": link })),
        AttachmentKind::File | AttachmentKind::Unspecified => {
            let mut doc = json!({ "link": link });
            if !attachment.file_name.trim().is_empty() {
                doc["filename"] = json!(attachment.file_name.trim());
            }
            ("document", doc)
        }
    };
    if let Some(caption) = caption {
        object["caption"] = json!(caption);
    }
    Ok((name, object))
}

/// The WhatsApp message id of a send's answer (`messages[0].id`), empty
/// when it names none.
pub fn message_id(answer: &Value) -> String {
    answer["messages"][0]["id"]
        .as_str()
        .filter(|id| id.len() <= 256 && !id.chars().any(char::is_control))
        .unwrap_or_default()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(text: &str, attachments: Vec<Attachment>) -> OutboundRequested {
        OutboundRequested {
            message_id: "m1".into(),
            recipient_external_id: "34600111222".into(),
            text: text.into(),
            attachments,
            ..Default::default()
        }
    }

    fn file(kind: AttachmentKind, url: &str, mime_type: &str) -> Attachment {
        Attachment {
            kind: kind as i32,
            url: url.into(),
            mime_type: mime_type.into(),
            ..Default::default()
        }
    }

    #[test]
    fn text_goes_without_link_previews_and_quotes_the_replied_message() {
        let mut m = message("hello", Vec::new());
        m.reply_to_external_id = "wamid.IN".into();
        let bodies = request_bodies(&m).expect("bodies");
        assert_eq!(
            bodies,
            [json!({
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": "34600111222",
                "type": "text",
                "text": {"body": "hello", "preview_url": false},
                "context": {"message_id": "wamid.IN"}
            })]
        );
    }

    #[test]
    fn long_text_is_split_into_parts_of_at_most_4096_characters() {
        let word = "palabra ";
        let text = word.repeat(1200);
        let bodies = request_bodies(&message(&text, Vec::new())).expect("bodies");
        assert_eq!(bodies.len(), 3);
        let mut joined = Vec::new();
        for b in &bodies {
            let part = b["text"]["body"].as_str().expect("a body");
            assert!(part.chars().count() <= TEXT_LIMIT);
            joined.push(part.to_owned());
        }
        assert_eq!(joined.join(" "), text.trim());
    }

    #[test]
    fn a_voice_note_is_sent_as_voice_audio_and_other_audio_is_not() {
        let bodies = request_bodies(&message(
            "",
            vec![
                file(
                    AttachmentKind::Voice,
                    "https://f.test/n.ogg",
                    "audio/ogg; codecs=opus",
                ),
                file(AttachmentKind::Audio, "https://f.test/s.mp3", "audio/mpeg"),
                file(AttachmentKind::Voice, "https://f.test/n.m4a", "audio/mp4"),
            ],
        ))
        .expect("bodies");
        assert_eq!(bodies[0]["type"], "audio");
        assert_eq!(
            bodies[0]["audio"],
            json!({"link": "https://f.test/n.ogg", "voice": true})
        );
        assert_eq!(bodies[1]["audio"], json!({"link": "https://f.test/s.mp3"}));
        assert_eq!(bodies[2]["audio"], json!({"link": "https://f.test/n.m4a"}));
    }

    #[test]
    fn text_is_the_caption_of_a_first_file_that_takes_one() {
        let mut doc = file(
            AttachmentKind::File,
            "https://f.test/i.pdf",
            "application/pdf",
        );
        doc.file_name = "invoice.pdf".into();
        let bodies = request_bodies(&message(
            "your invoice",
            vec![
                doc,
                file(AttachmentKind::Image, "https://f.test/a.png", "image/png"),
            ],
        ))
        .expect("bodies");
        assert_eq!(bodies.len(), 2);
        assert_eq!(
            bodies[0]["document"],
            json!({"link": "https://f.test/i.pdf", "filename": "invoice.pdf", "caption": "your invoice"})
        );
        assert_eq!(bodies[1]["image"], json!({"link": "https://f.test/a.png"}));
        // Audio takes no caption: the text goes first.
        let bodies = request_bodies(&message(
            "listen",
            vec![file(
                AttachmentKind::Audio,
                "https://f.test/s.mp3",
                "audio/mpeg",
            )],
        ))
        .expect("bodies");
        assert_eq!(bodies[0]["text"]["body"], "listen");
        assert_eq!(bodies[1]["type"], "audio");
        // A caption over 1024 characters goes as text.
        let long = "x ".repeat(600);
        let bodies = request_bodies(&message(
            &long,
            vec![file(
                AttachmentKind::Video,
                "https://f.test/v.mp4",
                "video/mp4",
            )],
        ))
        .expect("bodies");
        assert_eq!(bodies[0]["type"], "text");
        assert_eq!(bodies[1]["video"], json!({"link": "https://f.test/v.mp4"}));
    }

    #[test]
    fn nothing_to_send_or_nobody_to_send_it_to_is_refused() {
        assert!(request_bodies(&message("", Vec::new())).is_err());
        let mut m = message("hi", Vec::new());
        m.recipient_external_id = " ".into();
        assert!(request_bodies(&m).is_err());
    }

    #[test]
    fn the_message_id_is_read_from_the_answer() {
        assert_eq!(
            message_id(
                &json!({"messaging_product":"whatsapp","contacts":[{"input":"1","wa_id":"1"}],"messages":[{"id":"wamid.OUT"}]})
            ),
            "wamid.OUT"
        );
        assert_eq!(message_id(&json!({})), "");
    }
}
