//! Sending on a Telegram channel.
//!
//! A message goes out as one or more Bot API calls, in order:
//!
//! - its text with `sendMessage` (`{chat_id, text, reply_parameters?}`),
//!   split at word boundaries into parts of at most 4096 UTF-16 units —
//!   unless it fits a caption (1024) and the message has files: then it is
//!   the first file's caption;
//! - each file with the method of its kind, by URL (Telegram fetches it):
//!   pictures `sendPhoto` (up to 5 MB, larger ones as documents), videos
//!   `sendVideo`, audio `sendAudio`, other files `sendDocument`;
//! - voice notes with `sendVoice`: by URL when Ogg and at most 1 MB (the
//!   only voice notes Telegram makes from a URL), otherwise downloaded from
//!   their URL and uploaded (`multipart/form-data`, part `voice`, with
//!   `duration` in seconds; up to 50 MB). Documents Telegram does not fetch
//!   by URL (anything but PDF, ZIP and GIF) are uploaded the same way.
//!
//! The quoted message (`reply_to_external_id`, `"{chat}:{message_id}"`)
//! goes with the first call. The message's id is the last call's,
//! `"{chat id}:{message_id}"`. A failed call stops the message: its
//! outcome is the message's (earlier parts may then be sent again by a
//! retry).

use reqwest::multipart::{Form, Part};
use telenet_proto::common::v1::{Attachment, AttachmentKind};
use telenet_proto::events::v1::OutboundRequested;

use super::{
    ApiError, CAPTION_LIMIT, TEXT_LIMIT, UPLOAD_LIMIT, call, method_url, read_answer, unanswered,
};
use crate::http::{exchange, sanitize};
use crate::net::refusal_in;
use crate::{ChannelCredentials, SendOutcome};

/// The largest voice note Telegram makes from a URL.
pub const VOICE_URL_LIMIT: u64 = 1024 * 1024;

/// The largest picture Telegram fetches from a URL as a photo.
pub const PHOTO_URL_LIMIT: u64 = 5 * 1024 * 1024;

/// Documents Telegram fetches by URL (it fetches no other).
const DOCUMENT_URL_TYPES: [&str; 3] = ["application/pdf", "application/zip", "image/gif"];

/// One Bot API call a message makes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Step {
    /// `sendMessage`, `sendPhoto`, …
    pub method: &'static str,
    /// The parameter naming the file (`photo`, `voice`, …); empty for text.
    pub field: &'static str,
    /// The text, or the file's caption.
    pub text: String,
    /// The file.
    pub attachment: Option<Attachment>,
    /// Whether the file is uploaded rather than given by URL.
    pub upload: bool,
}

/// The calls that send `message`, in order.
pub(crate) fn plan(message: &OutboundRequested) -> Vec<Step> {
    let text = if message.text.trim().is_empty() {
        ""
    } else {
        message.text.as_str()
    };
    let caption_fits = !message.attachments.is_empty() && CAPTION_LIMIT.fits(text);
    let mut steps = Vec::new();
    if !caption_fits {
        for part in TEXT_LIMIT.split(text) {
            steps.push(Step {
                method: "sendMessage",
                field: "",
                text: part,
                attachment: None,
                upload: false,
            });
        }
    }
    for (i, a) in message.attachments.iter().enumerate() {
        let (method, field, upload) = file_method(a);
        steps.push(Step {
            method,
            field,
            text: if i == 0 && caption_fits {
                text.to_owned()
            } else {
                String::new()
            },
            attachment: Some(a.clone()),
            upload,
        });
    }
    steps
}

/// The MIME type's essence, lowercase (`audio/ogg`).
fn essence(mime: &str) -> String {
    mime.split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// The method, file parameter and whether to upload, for one file.
fn file_method(a: &Attachment) -> (&'static str, &'static str, bool) {
    let mime = essence(&a.mime_type);
    let document = (
        "sendDocument",
        "document",
        !DOCUMENT_URL_TYPES.contains(&mime.as_str()),
    );
    match a.kind() {
        AttachmentKind::Voice => {
            let by_url = mime == "audio/ogg" && a.size_bytes > 0 && a.size_bytes <= VOICE_URL_LIMIT;
            ("sendVoice", "voice", !by_url)
        }
        AttachmentKind::Image if a.size_bytes <= PHOTO_URL_LIMIT && mime != "image/gif" => {
            ("sendPhoto", "photo", false)
        }
        AttachmentKind::Video => ("sendVideo", "video", false),
        AttachmentKind::Audio => ("sendAudio", "audio", false),
        _ => document,
    }
}

/// The message id of `"{chat}:{message_id}"` (or of a bare message id).
pub(crate) fn quoted_message_id(external_id: &str) -> Option<i64> {
    let id = external_id.rsplit(':').next()?.trim();
    id.parse().ok().filter(|id| *id > 0)
}

/// Send `message` with the bot `token`.
pub(crate) async fn send_message(
    http: &reqwest::Client,
    channel: &ChannelCredentials,
    token: &str,
    message: &OutboundRequested,
) -> SendOutcome {
    let chat_id = message.recipient_external_id.trim();
    if chat_id.is_empty() {
        return SendOutcome::Reject("the message has no recipient chat id".into());
    }
    let steps = plan(message);
    if steps.is_empty() {
        return SendOutcome::Reject("nothing to send: no text and no files".into());
    }
    let mut quote = quoted_message_id(&message.reply_to_external_id);
    let mut last = String::new();
    for step in &steps {
        let reply_to = quote.take();
        let result = if step.upload {
            upload(http, channel, token, chat_id, step, reply_to).await
        } else {
            call(
                http,
                channel,
                token,
                step.method,
                &json_body(chat_id, step, reply_to),
            )
            .await
        };
        match result {
            Ok(sent) => last = external_id(chat_id, &sent),
            Err(e) => return e.into_send(),
        }
    }
    SendOutcome::Sent { external_id: last }
}

fn reply_parameters(message_id: i64) -> serde_json::Value {
    // A deleted quoted message does not stop the reply.
    serde_json::json!({ "message_id": message_id, "allow_sending_without_reply": true })
}

/// The JSON parameters of a call that names its file by URL.
pub(crate) fn json_body(chat_id: &str, step: &Step, reply_to: Option<i64>) -> serde_json::Value {
    let mut body = serde_json::json!({ "chat_id": chat_id });
    if let Some(a) = &step.attachment {
        body[step.field] = a.url.clone().into();
        if !step.text.is_empty() {
            body["caption"] = step.text.clone().into();
        }
        if let Some(seconds) = seconds(a).filter(|_| has_duration(step)) {
            body["duration"] = seconds.into();
        }
    } else {
        body["text"] = step.text.clone().into();
    }
    if let Some(id) = reply_to {
        body["reply_parameters"] = reply_parameters(id);
    }
    body
}

/// Whether the step's method takes a `duration`.
fn has_duration(step: &Step) -> bool {
    matches!(step.method, "sendVoice" | "sendAudio" | "sendVideo")
}

/// The duration in whole seconds (rounded up), when known.
fn seconds(a: &Attachment) -> Option<u64> {
    (a.duration_ms > 0).then(|| a.duration_ms.div_ceil(1000))
}

/// `"{chat id}:{message_id}"` of the sent `Message`; the chat as Telegram
/// names it, else as we addressed it. Empty when Telegram named no message.
fn external_id(chat_id: &str, sent: &serde_json::Value) -> String {
    let Some(message_id) = sent["message_id"].as_i64() else {
        return String::new();
    };
    let chat = match &sent["chat"]["id"] {
        serde_json::Value::Number(n) => n.to_string(),
        _ => chat_id.to_owned(),
    };
    format!("{chat}:{message_id}")
}

/// Download the step's file and upload it (`multipart/form-data`).
async fn upload(
    http: &reqwest::Client,
    channel: &ChannelCredentials,
    token: &str,
    chat_id: &str,
    step: &Step,
    reply_to: Option<i64>,
) -> Result<serde_json::Value, ApiError> {
    let Some(a) = &step.attachment else {
        return Err(ApiError::Refused("no file to upload".into()));
    };
    if a.size_bytes > UPLOAD_LIMIT {
        return Err(too_big_to_upload(UPLOAD_LIMIT));
    }
    let bytes = download(http, &a.url, UPLOAD_LIMIT).await?;
    let mut mime = essence(&a.mime_type);
    let usable = mime.split_once('/').is_some_and(|(t, s)| {
        let token = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
        };
        token(t) && token(s)
    });
    if !usable {
        mime = "application/octet-stream".into();
    }
    let part = Part::bytes(bytes)
        .file_name(upload_name(a, step.field))
        .mime_str(&mime)
        .map_err(|_| ApiError::Refused("the file's MIME type is unusable".into()))?;
    let mut form = Form::new().text("chat_id", chat_id.to_owned());
    if !step.text.is_empty() {
        form = form.text("caption", step.text.clone());
    }
    if let Some(seconds) = seconds(a).filter(|_| has_duration(step)) {
        form = form.text("duration", seconds.to_string());
    }
    if let Some(id) = reply_to {
        form = form.text("reply_parameters", reply_parameters(id).to_string());
    }
    let form = form.part(step.field, part);
    let request = http
        .post(method_url(channel, token, step.method))
        .multipart(form);
    let answer = exchange(request).await.map_err(unanswered)?;
    read_answer(&answer)
}

/// The file name an upload carries: the attachment's, else `voice.ogg` for
/// a voice note, else the URL's last segment.
fn upload_name(a: &Attachment, field: &str) -> String {
    if !a.file_name.trim().is_empty() {
        return a.file_name.trim().to_owned();
    }
    if field == "voice" {
        return "voice.ogg".into();
    }
    reqwest::Url::parse(&a.url)
        .ok()
        .and_then(|u| u.path_segments()?.next_back().map(str::to_owned))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "file".into())
}

/// The bytes at `url` (a file dispatch made downloadable), at most `limit`.
/// Errors never quote the URL (it may carry a signature).
async fn download(http: &reqwest::Client, url: &str, limit: u64) -> Result<Vec<u8>, ApiError> {
    let failed = |e: reqwest::Error| {
        if let Some(refused) = refusal_in(&e) {
            return ApiError::Refused(sanitize(&format!(
                "cannot download the file to upload: {refused}"
            )));
        }
        if e.is_timeout() {
            ApiError::Transient("timed out downloading the file to upload".into())
        } else if e.is_builder() {
            ApiError::Refused("the file's URL is unusable".into())
        } else {
            ApiError::Transient("could not download the file to upload".into())
        }
    };
    let mut response = http.get(url).send().await.map_err(failed)?;
    let status = response.status();
    if !status.is_success() {
        let reason = format!("downloading the file to upload: HTTP {}", status.as_u16());
        return Err(
            if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
                ApiError::Transient(reason)
            } else {
                ApiError::Refused(reason)
            },
        );
    }
    if response.content_length().is_some_and(|n| n > limit) {
        return Err(too_big_to_upload(limit));
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(failed)? {
        bytes.extend_from_slice(&chunk);
        if bytes.len() as u64 > limit {
            return Err(too_big_to_upload(limit));
        }
    }
    Ok(bytes)
}

fn too_big_to_upload(limit: u64) -> ApiError {
    ApiError::Refused(format!(
        "the file is larger than Telegram's upload limit of {} MB",
        limit / (1024 * 1024)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(kind: AttachmentKind, mime: &str, size: u64) -> Attachment {
        Attachment {
            kind: kind as i32,
            url: format!("https://files.example/dl/{}", kind.as_str_name()),
            mime_type: mime.into(),
            size_bytes: size,
            ..Default::default()
        }
    }

    fn message(text: &str, attachments: Vec<Attachment>) -> OutboundRequested {
        OutboundRequested {
            recipient_external_id: "42".into(),
            text: text.into(),
            attachments,
            ..Default::default()
        }
    }

    #[test]
    fn a_short_text_is_the_first_files_caption() {
        let steps = plan(&message(
            "see attached",
            vec![
                file(AttachmentKind::Image, "image/png", 2048),
                file(AttachmentKind::Video, "video/mp4", 10),
            ],
        ));
        let methods: Vec<_> = steps.iter().map(|s| (s.method, s.text.as_str())).collect();
        assert_eq!(methods, [("sendPhoto", "see attached"), ("sendVideo", "")]);
    }

    #[test]
    fn a_long_text_goes_first_in_parts_within_4096_utf16_units() {
        let text = format!("{} {}", "👋".repeat(2000), "word ".repeat(400));
        let steps = plan(&message(
            &text,
            vec![file(AttachmentKind::File, "application/pdf", 1)],
        ));
        let texts: Vec<_> = steps.iter().filter(|s| s.method == "sendMessage").collect();
        assert!(texts.len() >= 2, "{}", texts.len());
        for s in &texts {
            assert!(s.text.encode_utf16().count() <= 4096);
        }
        assert_eq!(
            steps.last().map(|s| (s.method, s.text.as_str(), s.upload)),
            Some(("sendDocument", "", false))
        );
    }

    #[test]
    fn voice_notes_go_by_url_only_when_telegram_makes_a_voice_note_of_it() {
        let by = |mime: &str, size: u64| file_method(&file(AttachmentKind::Voice, mime, size));
        assert_eq!(
            by("audio/ogg; codecs=opus", 9199),
            ("sendVoice", "voice", false)
        );
        assert_eq!(
            by("audio/ogg; codecs=opus", VOICE_URL_LIMIT + 1),
            ("sendVoice", "voice", true)
        );
        assert_eq!(
            by("audio/ogg", 0),
            ("sendVoice", "voice", true),
            "size unknown"
        );
        assert_eq!(by("audio/mpeg", 100), ("sendVoice", "voice", true));
        let doc = |mime: &str| file_method(&file(AttachmentKind::File, mime, 10)).2;
        assert!(!doc("application/pdf"));
        assert!(
            doc("text/csv"),
            "Telegram fetches only PDF, ZIP and GIF documents"
        );
        assert_eq!(
            file_method(&file(
                AttachmentKind::Image,
                "image/jpeg",
                PHOTO_URL_LIMIT + 1
            )),
            ("sendDocument", "document", true)
        );
    }

    #[test]
    fn quotes_name_the_message_within_the_chat() {
        assert_eq!(quoted_message_id("42:17"), Some(17));
        assert_eq!(quoted_message_id("-1001234567890:5"), Some(5));
        assert_eq!(quoted_message_id("17"), Some(17));
        assert_eq!(quoted_message_id(""), None);
        assert_eq!(quoted_message_id("42:x"), None);
    }

    #[test]
    fn sent_messages_are_named_by_chat_and_message_id() {
        let sent = serde_json::json!({"message_id": 9, "chat": {"id": -100}});
        assert_eq!(external_id("@shop", &sent), "-100:9");
        assert_eq!(
            external_id("42", &serde_json::json!({"message_id": 9})),
            "42:9"
        );
        assert_eq!(external_id("42", &serde_json::json!(true)), "");
    }
}
