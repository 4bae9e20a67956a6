//! Sending on Viber: `POST /pa/send_message`, one request per text part
//! (7 000 characters) and per file, and the calls that set the channel up
//! (`set_webhook`, `get_account_info`).
//!
//! Files: JPEG/PNG/GIF images as `picture`, MP4 videos as `video`,
//! everything else as `file` (`media`, `size`, `file_name`). Viber has no
//! voice message for bots: a voice note goes as a `file` (M4A or MP3,
//! named `voice-note.m4a` / `.mp3` when it has no name).
//!
//! Viber answers HTTP 200 with a `status`: 0 is sent (its
//! `message_token`, kept exact, is the id), 12 is throttling, 1–11 and
//! 13–14 are refusals, anything else Viber's general error (retried).
//! Viber has no idempotency key: a retried message may arrive twice.

use std::time::Duration;

use serde_json::{Value, json};
use telenet_proto::common::v1::{Attachment, AttachmentKind};
use telenet_proto::events::v1::OutboundRequested;
use telenet_proto::ingress::v1::ViberConfig;

use super::{AUTH_HEADER, TEXT_LIMIT, api_base, auth_token, inbound};
use crate::http::{Answer, exchange, http_error, sanitize};
use crate::{ChannelCredentials, Check, CredentialsError, SendOutcome};

/// Viber's largest file.
pub const MAX_FILE_BYTES: u64 = 50 * 1024 * 1024;
/// How long to wait after status 12 or a 429 without `Retry-After`.
const DEFAULT_PAUSE: Duration = Duration::from_secs(60);
/// Viber's status for "too many requests".
const TOO_MANY_REQUESTS: i64 = 12;

fn essence(mime: &str) -> String {
    mime.split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// The name a voice note or audio file goes by, by its format.
fn audio_file_name(a: &Attachment) -> String {
    if !a.file_name.is_empty() {
        return a.file_name.clone();
    }
    let ext = match essence(&a.mime_type).as_str() {
        "audio/mpeg" | "audio/mp3" => "mp3",
        "audio/ogg" => "ogg",
        _ => "m4a",
    };
    let stem = if a.kind() == AttachmentKind::Voice {
        "voice-note"
    } else {
        "audio"
    };
    format!("{stem}.{ext}")
}

/// The fields of one attachment's message (without receiver and sender).
pub fn attachment_fields(a: &Attachment) -> Value {
    let mime = essence(&a.mime_type);
    match a.kind() {
        AttachmentKind::Image
            if matches!(mime.as_str(), "image/jpeg" | "image/png" | "image/gif") =>
        {
            // `text` is required; the message's text went before it.
            json!({ "type": "picture", "media": a.url, "text": "" })
        }
        AttachmentKind::Video if mime == "video/mp4" => {
            let mut video = json!({ "type": "video", "media": a.url, "size": a.size_bytes });
            if a.duration_ms > 0 {
                video["duration"] = a.duration_ms.div_ceil(1000).into();
            }
            video
        }
        AttachmentKind::Voice | AttachmentKind::Audio => json!({
            "type": "file",
            "media": a.url,
            "size": a.size_bytes,
            "file_name": audio_file_name(a),
        }),
        _ => {
            let name = if a.file_name.is_empty() {
                a.url
                    .rsplit('/')
                    .next()
                    .filter(|n| !n.is_empty())
                    .unwrap_or("file")
                    .to_owned()
            } else {
                a.file_name.clone()
            };
            json!({ "type": "file", "media": a.url, "size": a.size_bytes, "file_name": name })
        }
    }
}

/// The `send_message` bodies of `message`, in order: its text parts, then
/// its files.
pub fn message_bodies(config: &ViberConfig, message: &OutboundRequested) -> Vec<Value> {
    let mut sender = json!({ "name": config.sender_name });
    if !config.sender_avatar_url.is_empty() {
        sender["avatar"] = config.sender_avatar_url.clone().into();
    }
    let mut parts: Vec<Value> = TEXT_LIMIT
        .split(&message.text)
        .into_iter()
        .map(|text| json!({ "type": "text", "text": text }))
        .collect();
    parts.extend(message.attachments.iter().map(attachment_fields));
    for part in &mut parts {
        part["receiver"] = message.recipient_external_id.trim().into();
        part["sender"] = sender.clone();
    }
    parts
}

/// Send `message`, one request per part; the last part's token is the
/// message's id.
pub(crate) async fn send_message(
    http: &reqwest::Client,
    api_base: &str,
    token: &str,
    config: &ViberConfig,
    message: &OutboundRequested,
) -> SendOutcome {
    if message.recipient_external_id.trim().is_empty() {
        return SendOutcome::Reject("the message has no recipient".into());
    }
    let bodies = message_bodies(config, message);
    if bodies.is_empty() {
        return SendOutcome::Reject("the message has neither text nor files".into());
    }
    let url = format!("{api_base}/pa/send_message");
    let mut last = String::new();
    for body in &bodies {
        let request = http.post(&url).header(AUTH_HEADER, token).json(body);
        let answer = match exchange(request).await {
            Ok(answer) => answer,
            Err(outcome) => return outcome,
        };
        match read_answer(&answer) {
            Ok(reply) => last = inbound::message_token(&reply).unwrap_or_default(),
            Err(outcome) => return outcome,
        }
    }
    SendOutcome::Sent { external_id: last }
}

/// Viber's answer as JSON when its `status` is 0; else the outcome.
pub fn read_answer(answer: &Answer) -> Result<Value, SendOutcome> {
    if let Some(refusal) = answer.refusal(DEFAULT_PAUSE) {
        return Err(refusal);
    }
    let Ok(reply) = serde_json::from_slice::<Value>(&answer.body) else {
        return Err(SendOutcome::Retry(format!(
            "{} without a JSON body",
            http_error(answer.status)
        )));
    };
    let status = reply.get("status").and_then(Value::as_i64).unwrap_or(-1);
    if status == 0 {
        return Ok(reply);
    }
    let said = reply
        .get("status_message")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let reason = sanitize(&format!("Viber status {status}: {said}"));
    Err(match status {
        TOO_MANY_REQUESTS => SendOutcome::Throttled {
            reason,
            retry_after: answer.retry_after.unwrap_or(DEFAULT_PAUSE),
        },
        // invalidUrl, invalidAuthToken, badData, missingData,
        // receiverNotRegistered, receiverNotSubscribed, publicAccountBlocked,
        // publicAccountNotFound, publicAccountSuspended, webhookNotSet,
        // receiverNoSuitableDevice, apiVersionNotSupported,
        // incompatibleWithVersion: the same request will fail again.
        1..=11 | 13 | 14 => SendOutcome::Reject(reason),
        // generalError and codes Viber adds later.
        _ => SendOutcome::Retry(reason),
    })
}

/// `POST /pa/set_webhook` for `webhook_url`.
pub(crate) async fn set_webhook(
    http: &reqwest::Client,
    api_base: &str,
    token: &str,
    webhook_url: &str,
) -> Result<(), CredentialsError> {
    let body = json!({
        "url": webhook_url,
        "event_types": super::EVENT_TYPES,
        "send_name": true,
        "send_photo": false,
    });
    let request = http
        .post(format!("{api_base}/pa/set_webhook"))
        .header(AUTH_HEADER, token)
        .json(&body);
    let answer = exchange(request).await.map_err(|outcome| {
        CredentialsError::Unavailable(format!("Viber could not be asked: {}", reason(&outcome)))
    })?;
    match read_answer(&answer) {
        Ok(_) => Ok(()),
        Err(SendOutcome::Reject(why)) => Err(CredentialsError::Invalid(format!(
            "Viber refused the webhook: {why}"
        ))),
        Err(other) => Err(CredentialsError::Unavailable(format!(
            "Viber could not set the webhook: {}",
            reason(&other)
        ))),
    }
}

fn reason(outcome: &SendOutcome) -> String {
    match outcome {
        SendOutcome::Sent { .. } => "sent".into(),
        SendOutcome::Retry(r) | SendOutcome::Reject(r) => r.clone(),
        SendOutcome::Throttled { reason, .. } => reason.clone(),
    }
}

/// `POST /pa/get_account_info`: whether the token works, and which bot.
pub(crate) async fn check_account_info(
    http: &reqwest::Client,
    channel: &ChannelCredentials,
) -> Check {
    let check = |ok: bool, detail: String| Check {
        name: "credentials".into(),
        ok,
        detail,
    };
    let Some(token) = auth_token(channel) else {
        return check(false, "auth_token is not set".into());
    };
    let request = http
        .post(format!("{}/pa/get_account_info", api_base(channel)))
        .header(AUTH_HEADER, token)
        .json(&json!({}));
    let answer = match exchange(request).await {
        Ok(answer) => answer,
        Err(outcome) => return check(false, reason(&outcome)),
    };
    match read_answer(&answer) {
        Ok(info) => {
            let name = info.get("name").and_then(Value::as_str).unwrap_or("?");
            let id = info.get("id").and_then(Value::as_str).unwrap_or("?");
            check(true, sanitize(&format!("bot {name} ({id})")))
        }
        Err(outcome) => check(false, reason(&outcome)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).expect("status"),
            body: body.as_bytes().to_vec(),
            retry_after: None,
        }
    }

    fn config() -> ViberConfig {
        ViberConfig {
            auth_token: "tok".into(),
            sender_name: "Shop".into(),
            sender_avatar_url: "https://cdn.test/a.png".into(),
        }
    }

    #[test]
    fn send_bodies_carry_receiver_sender_and_one_part_each() {
        let message = OutboundRequested {
            recipient_external_id: "01234567890A=".into(),
            text: "hello".into(),
            attachments: vec![
                Attachment {
                    kind: AttachmentKind::Image as i32,
                    url: "https://files.test/cat.png".into(),
                    mime_type: "image/png".into(),
                    size_bytes: 2048,
                    ..Default::default()
                },
                Attachment {
                    kind: AttachmentKind::Voice as i32,
                    url: "https://files.test/b/note".into(),
                    mime_type: "audio/mp4".into(),
                    size_bytes: 9199,
                    duration_ms: 3452,
                    ..Default::default()
                },
                Attachment {
                    kind: AttachmentKind::Video as i32,
                    url: "https://files.test/v.mp4".into(),
                    mime_type: "video/mp4".into(),
                    size_bytes: 100,
                    duration_ms: 3452,
                    ..Default::default()
                },
                Attachment {
                    kind: AttachmentKind::File as i32,
                    url: "https://files.test/x/invoice.pdf".into(),
                    mime_type: "application/pdf".into(),
                    size_bytes: 7,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let bodies = message_bodies(&config(), &message);
        let sender = json!({"name": "Shop", "avatar": "https://cdn.test/a.png"});
        assert_eq!(
            bodies,
            [
                json!({"receiver": "01234567890A=", "sender": sender, "type": "text", "text": "hello"}),
                json!({"receiver": "01234567890A=", "sender": sender, "type": "picture",
                       "media": "https://files.test/cat.png", "text": ""}),
                json!({"receiver": "01234567890A=", "sender": sender, "type": "file",
                       "media": "https://files.test/b/note", "size": 9199, "file_name": "voice-note.m4a"}),
                json!({"receiver": "01234567890A=", "sender": sender, "type": "video",
                       "media": "https://files.test/v.mp4", "size": 100, "duration": 4}),
                json!({"receiver": "01234567890A=", "sender": sender, "type": "file",
                       "media": "https://files.test/x/invoice.pdf", "size": 7, "file_name": "invoice.pdf"}),
            ]
        );
        let long = OutboundRequested {
            text: format!("{} {}", "a".repeat(6999), "b"),
            ..message
        };
        let texts: Vec<_> = message_bodies(&config(), &long)
            .into_iter()
            .filter(|b| b["type"] == "text")
            .collect();
        assert_eq!(texts.len(), 2, "split at 7 000 characters");
    }

    #[test]
    fn statuses_are_read_as_viber_documents_them() {
        let sent = read_answer(&answer(
            200,
            r#"{"status":0,"status_message":"ok","message_token":5741311803571721087,"chat_hostname":"SN-CHAT-05_"}"#,
        ))
        .expect("sent");
        assert_eq!(
            inbound::message_token(&sent).as_deref(),
            Ok("5741311803571721087")
        );
        for (status, want) in [
            (5, "reject"),
            (6, "reject"),
            (2, "reject"),
            (12, "throttled"),
            (15, "retry"),
            (-1, "retry"),
        ] {
            let body = format!(r#"{{"status":{status},"status_message":"words"}}"#);
            let got = match read_answer(&answer(200, &body)) {
                Err(SendOutcome::Reject(r)) if r.contains(&status.to_string()) => "reject",
                Err(SendOutcome::Throttled { .. }) => "throttled",
                Err(SendOutcome::Retry(_)) => "retry",
                other => panic!("{status}: {other:?}"),
            };
            assert_eq!(got, want, "status {status}");
        }
        assert!(matches!(
            read_answer(&answer(503, "")),
            Err(SendOutcome::Retry(_))
        ));
        assert!(matches!(
            read_answer(&answer(429, "")),
            Err(SendOutcome::Throttled { .. })
        ));
    }
}
