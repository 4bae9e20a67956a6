//! Sending on LINE: push messages, five message objects per request.
//!
//! A message becomes its text (split at 5 000 characters) followed by its
//! files: JPEG/PNG images as image messages, M4A audio and voice notes
//! (with their duration) as audio messages, and everything else (videos,
//! documents, audio in other formats) as a text with the file's link,
//! since LINE bots cannot send files and a video needs a preview image.
//! Each request carries an `X-Line-Retry-Key` derived from the message id
//! and the request's place in it: LINE answers a replayed key with 409,
//! which means the request was already accepted.

use std::time::Duration;

use http::HeaderValue;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use telenet_proto::common::v1::{Attachment, AttachmentKind};
use telenet_proto::events::v1::OutboundRequested;

use super::{TEXT_LIMIT, error_message};
use crate::http::{Answer, exchange, http_error, sanitize};
use crate::{ChannelCredentials, Check, SendOutcome};

/// Most message objects in one push request.
pub const MAX_OBJECTS: usize = 5;
/// The header LINE de-duplicates push requests on.
pub const RETRY_KEY_HEADER: &str = "x-line-retry-key";
/// How long to wait after a 429 without `Retry-After`.
const DEFAULT_PAUSE: Duration = Duration::from_secs(60);

/// The `X-Line-Retry-Key` of request `part` (from 0) of message
/// `message_id`: a UUID (version 8, RFC 9562) made of the SHA-256 of both,
/// so the same request of the same message always carries the same key.
pub fn retry_key(message_id: &str, part: usize) -> String {
    let digest = Sha256::digest(format!("telenet/line-retry-key/{message_id}/{part}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The MIME type's essence, lowercase (`audio/mp4; codecs=…` → `audio/mp4`).
fn essence(mime: &str) -> String {
    mime.split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// The text that stands for a file LINE cannot carry: its name and link.
pub fn link_text(attachment: &Attachment) -> String {
    let name = if attachment.file_name.is_empty() {
        match attachment.kind() {
            AttachmentKind::Video => "video",
            AttachmentKind::Voice => "voice note",
            AttachmentKind::Audio => "audio",
            AttachmentKind::Image => "image",
            _ => "file",
        }
    } else {
        attachment.file_name.as_str()
    };
    format!("📎 {name}: {}", attachment.url)
}

/// The message object of one attachment.
fn attachment_object(a: &Attachment) -> Value {
    let mime = essence(&a.mime_type);
    match a.kind() {
        AttachmentKind::Image if matches!(mime.as_str(), "image/jpeg" | "image/png") => json!({
            "type": "image",
            "originalContentUrl": a.url,
            "previewImageUrl": a.url,
        }),
        AttachmentKind::Voice | AttachmentKind::Audio
            if matches!(mime.as_str(), "audio/mp4" | "audio/x-m4a" | "audio/m4a")
                && a.duration_ms > 0 =>
        {
            json!({
                "type": "audio",
                "originalContentUrl": a.url,
                "duration": a.duration_ms,
            })
        }
        _ => json!({ "type": "text", "text": link_text(a) }),
    }
}

/// The message objects of `message`, in order: its text, then its files.
pub fn message_objects(message: &OutboundRequested) -> Vec<Value> {
    let mut objects: Vec<Value> = TEXT_LIMIT
        .split(&message.text)
        .into_iter()
        .map(|text| json!({ "type": "text", "text": text }))
        .collect();
    objects.extend(message.attachments.iter().map(attachment_object));
    objects
}

/// Push `message` to its recipient, in requests of at most five objects;
/// the id of the last object LINE accepted is the message's.
pub(crate) async fn push(
    http: &reqwest::Client,
    api_base: &str,
    auth: HeaderValue,
    message: &OutboundRequested,
) -> SendOutcome {
    let to = message.recipient_external_id.trim();
    if to.is_empty() {
        return SendOutcome::Reject("the message has no recipient".into());
    }
    let objects = message_objects(message);
    if objects.is_empty() {
        return SendOutcome::Reject("the message has neither text nor files".into());
    }
    let url = format!("{api_base}/v2/bot/message/push");
    let mut last_id = String::new();
    for (part, chunk) in objects.chunks(MAX_OBJECTS).enumerate() {
        let request = http
            .post(&url)
            .header(http::header::AUTHORIZATION, auth.clone())
            .header(RETRY_KEY_HEADER, retry_key(&message.message_id, part))
            .json(&json!({ "to": to, "messages": chunk }));
        let answer = match exchange(request).await {
            Ok(answer) => answer,
            Err(outcome) => return outcome,
        };
        match read_answer(&answer) {
            Ok(Some(id)) => last_id = id,
            Ok(None) => {}
            Err(outcome) => return outcome,
        }
    }
    SendOutcome::Sent {
        external_id: last_id,
    }
}

/// The id of the last message LINE accepted (`sentMessages[].id`), or the
/// outcome of a refusal. 409 is a replayed retry key: accepted before.
pub fn read_answer(answer: &Answer) -> Result<Option<String>, SendOutcome> {
    if answer.status.is_success() || answer.status == StatusCode::CONFLICT {
        let id = serde_json::from_slice::<Value>(&answer.body)
            .ok()
            .and_then(|body| {
                body.get("sentMessages")?
                    .as_array()?
                    .iter()
                    .filter_map(|m| match m.get("id")? {
                        Value::String(s) => Some(s.clone()),
                        Value::Number(n) => Some(n.to_string()),
                        _ => None,
                    })
                    .next_back()
            });
        return Ok(id);
    }
    let refusal = answer
        .refusal(DEFAULT_PAUSE)
        .unwrap_or_else(|| SendOutcome::Retry(http_error(answer.status)));
    Err(match refusal {
        // A 4xx is final; LINE's own words say which field is wrong.
        SendOutcome::Reject(reason) => match error_message(&answer.body) {
            Some(said) => SendOutcome::Reject(sanitize(&format!("{reason}: LINE says: {said}"))),
            None => SendOutcome::Reject(reason),
        },
        other => other,
    })
}

/// `GET /v2/bot/info`: whether the access token works, and which bot it is.
pub(crate) async fn check_bot_info(http: &reqwest::Client, channel: &ChannelCredentials) -> Check {
    let check = |ok: bool, detail: String| Check {
        name: "credentials".into(),
        ok,
        detail,
    };
    let Some(token) = super::access_token(channel) else {
        return check(false, "channel_access_token is not set".into());
    };
    let Ok(auth) = super::bearer(token) else {
        return check(
            false,
            "channel_access_token is not a valid header value".into(),
        );
    };
    let url = format!("{}/v2/bot/info", super::api_base(channel));
    match super::get_with_token(http, &url, auth).await {
        Ok(answer) if answer.status.is_success() => {
            let info: Value = serde_json::from_slice(&answer.body).unwrap_or_default();
            let name = info
                .get("displayName")
                .and_then(Value::as_str)
                .unwrap_or("?");
            let id = info.get("basicId").and_then(Value::as_str).unwrap_or("?");
            check(true, sanitize(&format!("bot {name} ({id})")))
        }
        Ok(answer) => {
            let mut detail = http_error(answer.status);
            if let Some(said) = error_message(&answer.body) {
                detail = format!("{detail}: LINE says: {said}");
            }
            check(false, sanitize(&detail))
        }
        Err(SendOutcome::Retry(why) | SendOutcome::Reject(why)) => check(false, why),
        Err(other) => check(false, format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).expect("status"),
            body: body.as_bytes().to_vec(),
            retry_after: None,
        }
    }

    #[test]
    fn retry_keys_are_uuids_fixed_by_the_message_and_part() {
        let key = retry_key("msg-1", 0);
        assert_eq!(key, retry_key("msg-1", 0));
        assert_ne!(key, retry_key("msg-1", 1));
        assert_ne!(key, retry_key("msg-2", 0));
        let groups: Vec<&str> = key.split('-').collect();
        assert_eq!(
            groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(key.bytes().all(|c| c == b'-' || c.is_ascii_hexdigit()));
        assert_eq!(&groups[2][..1], "8", "version 8");
        assert!(matches!(&groups[3][..1], "8" | "9" | "a" | "b"), "variant");
    }

    #[test]
    fn long_texts_and_files_become_message_objects_in_order() {
        let message = OutboundRequested {
            text: format!("{} {}", "a".repeat(4999), "b".repeat(10)),
            attachments: vec![
                Attachment {
                    kind: AttachmentKind::Voice as i32,
                    url: "https://files.test/note.m4a".into(),
                    mime_type: "audio/mp4".into(),
                    duration_ms: 3452,
                    ..Default::default()
                },
                Attachment {
                    kind: AttachmentKind::File as i32,
                    url: "https://files.test/invoice.pdf".into(),
                    file_name: "invoice.pdf".into(),
                    ..Default::default()
                },
                Attachment {
                    kind: AttachmentKind::Image as i32,
                    url: "https://files.test/cat.webp".into(),
                    mime_type: "image/webp".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let objects = message_objects(&message);
        assert_eq!(objects.len(), 5);
        assert_eq!(objects[0]["text"].as_str().map(str::len), Some(4999));
        assert_eq!(objects[1]["text"], "b".repeat(10));
        assert_eq!(
            objects[2],
            json!({"type":"audio","originalContentUrl":"https://files.test/note.m4a","duration":3452})
        );
        assert_eq!(
            objects[3]["text"],
            "📎 invoice.pdf: https://files.test/invoice.pdf"
        );
        assert_eq!(
            objects[4]["type"], "text",
            "webp is not an image LINE shows"
        );
    }

    #[test]
    fn answers_are_read_as_line_documents_them() {
        assert_eq!(
            read_answer(&answer(
                200,
                r#"{"sentMessages":[{"id":"1","quoteToken":"q"},{"id":"2"}]}"#
            )),
            Ok(Some("2".into()))
        );
        assert_eq!(
            read_answer(&answer(
                409,
                r#"{"message":"The retry key is already accepted","sentMessages":[{"id":"7"}]}"#
            )),
            Ok(Some("7".into())),
            "a replayed retry key was accepted before"
        );
        assert_eq!(read_answer(&answer(409, "")), Ok(None));
        assert!(matches!(
            read_answer(&answer(429, r#"{"message":"Too Many Requests"}"#)),
            Err(SendOutcome::Throttled { retry_after, .. }) if retry_after == DEFAULT_PAUSE
        ));
        assert!(matches!(
            read_answer(&answer(500, "")),
            Err(SendOutcome::Retry(_))
        ));
        let Err(SendOutcome::Reject(reason)) =
            read_answer(&answer(400, r#"{"message":"Failed to send messages"}"#))
        else {
            panic!("a 400 is final");
        };
        assert_eq!(
            reason,
            "receiver answered HTTP 400 Bad Request: LINE says: Failed to send messages"
        );
        assert!(matches!(
            read_answer(&answer(401, r#"{"message":"Authentication failed"}"#)),
            Err(SendOutcome::Reject(r)) if r.contains("401") && r.contains("Authentication failed")
        ));
    }
}
