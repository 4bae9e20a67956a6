//! The Send API Messenger and Instagram share: `POST …/messages` with a
//! bearer token and `{recipient{id}, messaging_type, tag?, message}`, one
//! request per text part and per file, answered `{recipient_id,
//! message_id}`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use telenet_proto::common::v1::AttachmentKind;
use telenet_proto::events::v1::OutboundRequested;

use crate::http::{exchange, sanitize};
use crate::meta::{graph_error, graph_post};
use crate::{Check, SendOutcome, TextLimit};

/// The standard window: replies within 24 hours of the contact's last
/// message.
pub const STANDARD_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// How long after the contact's last message a human agent may still
/// reply with the `HUMAN_AGENT` tag.
pub const HUMAN_AGENT_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

/// How a message goes out: `messaging_type` and, for `MESSAGE_TAG`, its tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessagingType {
    /// A reply within the standard window.
    Response,
    /// A human agent's reply after it (`MESSAGE_TAG` + `HUMAN_AGENT`).
    HumanAgent,
}

/// How to send to a contact who last wrote at `last_message_at` (unix
/// seconds; `None` when unknown), at `now`: a response, unless the
/// channel uses the `HUMAN_AGENT` tag and the standard window is over.
/// Outside every window the message still goes out as the tag says and
/// Meta refuses it (code 10, subcode 2018278), which is the reason agents
/// see.
pub fn messaging_type(
    use_human_agent_tag: bool,
    last_message_at: Option<i64>,
    now: i64,
) -> MessagingType {
    let window = i64::try_from(STANDARD_WINDOW.as_secs()).unwrap_or(i64::MAX);
    match last_message_at {
        Some(at) if use_human_agent_tag && now.saturating_sub(at) > window => {
            MessagingType::HumanAgent
        }
        _ => MessagingType::Response,
    }
}

/// The Send API's attachment type for a file of `kind` (voice notes are
/// audio; stickers go as images).
pub fn attachment_type(kind: AttachmentKind) -> &'static str {
    match kind {
        AttachmentKind::Image | AttachmentKind::Sticker => "image",
        AttachmentKind::Video => "video",
        AttachmentKind::Audio | AttachmentKind::Voice => "audio",
        AttachmentKind::File | AttachmentKind::Unspecified => "file",
    }
}

/// The request bodies that send `message`: its text in parts within
/// `limit` first, then one per file, in order.
pub fn request_bodies(
    message: &OutboundRequested,
    limit: TextLimit,
    how: MessagingType,
) -> Vec<Value> {
    let envelope = |content: Value| {
        let mut body = json!({
            "recipient": { "id": message.recipient_external_id },
            "messaging_type": "RESPONSE",
            "message": content,
        });
        if how == MessagingType::HumanAgent {
            body["messaging_type"] = "MESSAGE_TAG".into();
            body["tag"] = "HUMAN_AGENT".into();
        }
        body
    };
    let mut bodies: Vec<Value> = limit
        .split(&message.text)
        .into_iter()
        .map(|part| envelope(json!({ "text": part })))
        .collect();
    for a in &message.attachments {
        bodies.push(envelope(json!({
            "attachment": {
                "type": attachment_type(a.kind()),
                "payload": { "url": a.url, "is_reusable": false },
            }
        })));
    }
    bodies
}

/// Unix seconds now.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// Send `message` to `url` with `token`: each request in order, stopping
/// at the first that fails (its outcome is the message's: the parts before
/// it are out, and a retry sends them again). `Sent` names the last
/// request's `message_id`.
pub async fn send_all(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    message: &OutboundRequested,
    limit: TextLimit,
    use_human_agent_tag: bool,
) -> SendOutcome {
    if message.recipient_external_id.trim().is_empty() {
        return SendOutcome::Reject("the message has no recipient".into());
    }
    let last = message.contact_last_message_at.as_ref().map(|t| t.seconds);
    let how = messaging_type(use_human_agent_tag, last, unix_now());
    let bodies = request_bodies(message, limit, how);
    if bodies.is_empty() {
        return SendOutcome::Reject("the message has neither text nor files".into());
    }
    let mut external_id = String::new();
    for body in &bodies {
        match graph_post(http, url, token, body).await {
            Ok(answer) => {
                external_id = answer
                    .get("message_id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
            }
            Err(outcome) => return outcome,
        }
    }
    SendOutcome::Sent { external_id }
}

/// Read `url` (a profile: `?fields=…`) with `token`, as the check of a
/// channel's credentials: passed when Graph answers, with `field` of the
/// answer (the Page's name, the account's username) as the detail;
/// failed with Graph's error code and text otherwise.
pub async fn check_profile(http: &reqwest::Client, url: &str, token: &str, field: &str) -> Check {
    let check = |ok: bool, detail: String| Check {
        name: "credentials".into(),
        ok,
        detail: sanitize(&detail),
    };
    if token.is_empty() {
        return check(false, "the access token is not set".into());
    }
    let answer = match exchange(http.get(url).bearer_auth(token)).await {
        Ok(answer) => answer,
        Err(SendOutcome::Retry(why) | SendOutcome::Reject(why)) => return check(false, why),
        Err(other) => return check(false, format!("{other:?}")),
    };
    if answer.status.is_success() {
        let value: Value = serde_json::from_slice(&answer.body).unwrap_or_default();
        let name = value.get(field).and_then(Value::as_str).unwrap_or_default();
        return check(true, name.to_owned());
    }
    match graph_error(&answer.body) {
        Some(e) => check(false, format!("Graph API error {}: {}", e.code, e.message)),
        None => check(false, crate::http::http_error(answer.status)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Overflow, TextUnit};
    use telenet_proto::common::v1::Attachment;

    const DAY: i64 = 24 * 3600;

    #[test]
    fn the_human_agent_tag_is_used_only_after_the_standard_window_when_enabled() {
        let now = 1_700_000_000;
        assert_eq!(
            messaging_type(true, Some(now - DAY + 60), now),
            MessagingType::Response
        );
        assert_eq!(
            messaging_type(true, Some(now - DAY - 60), now),
            MessagingType::HumanAgent
        );
        assert_eq!(
            messaging_type(true, Some(now - 6 * DAY), now),
            MessagingType::HumanAgent
        );
        assert_eq!(
            messaging_type(false, Some(now - 3 * DAY), now),
            MessagingType::Response
        );
        assert_eq!(messaging_type(true, None, now), MessagingType::Response);
    }

    #[test]
    fn text_parts_go_first_then_one_request_per_file() {
        let message = OutboundRequested {
            recipient_external_id: "PSID".into(),
            text: "one two three".into(),
            attachments: vec![
                Attachment {
                    kind: AttachmentKind::Voice as i32,
                    url: "https://files.test/n.m4a".into(),
                    ..Default::default()
                },
                Attachment {
                    kind: AttachmentKind::File as i32,
                    url: "https://files.test/r.pdf".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let limit = TextLimit {
            max: 8,
            unit: TextUnit::Chars,
            overflow: Overflow::Split,
        };
        let bodies = request_bodies(&message, limit, MessagingType::HumanAgent);
        assert_eq!(bodies.len(), 4);
        assert_eq!(bodies[0]["message"], json!({"text": "one two"}));
        assert_eq!(bodies[1]["message"], json!({"text": "three"}));
        assert_eq!(
            bodies[2]["message"]["attachment"],
            json!({"type": "audio", "payload": {"url": "https://files.test/n.m4a", "is_reusable": false}})
        );
        assert_eq!(bodies[3]["message"]["attachment"]["type"], "file");
        for body in &bodies {
            assert_eq!(body["recipient"], json!({"id": "PSID"}));
            assert_eq!(body["messaging_type"], "MESSAGE_TAG");
            assert_eq!(body["tag"], "HUMAN_AGENT");
        }
        let response = request_bodies(&message, limit, MessagingType::Response);
        assert_eq!(response[0]["messaging_type"], "RESPONSE");
        assert!(response[0].get("tag").is_none());
    }
}
