//! One message to a custom channel: the JSON body, Standard Webhooks
//! signature headers, and the reading of the receiver's answer.

use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use telenet_proto::common::v1::{Attachment, AttachmentKind};
use telenet_proto::events::v1::OutboundRequested;
use telenet_signing::Secret;

use crate::SendOutcome;
use crate::http::{exchange, refusal};

/// POST `message` to a custom channel's `outbound_url`, signed with
/// `secret`. The message id is the `webhook-id`, so a receiver can drop
/// the duplicates our retries may cause.
pub(crate) async fn send_message(
    http: &reqwest::Client,
    outbound_url: &str,
    secret: &Secret,
    message: &OutboundRequested,
) -> SendOutcome {
    let url = match checked_url(outbound_url) {
        Ok(url) => url,
        Err(reason) => return SendOutcome::Reject(reason),
    };
    let body = outbound_body(message);
    let timestamp = telenet_signing::unix_now();
    let signature = secret.sign(&message.message_id, timestamp, &body);
    // The receiver may join our trace (W3C `traceparent`).
    let mut trace = reqwest::header::HeaderMap::new();
    telenet_kit::telemetry::inject_http(&mut trace);
    let request = http
        .post(url)
        .headers(trace)
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .header("webhook-id", &message.message_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body);
    match exchange(request).await {
        Ok(answer) => read_answer(answer.status, &answer.body),
        Err(outcome) => outcome,
    }
}

/// The `message.outbound` body of our custom channel protocol.
pub(crate) fn outbound_body(message: &OutboundRequested) -> Vec<u8> {
    let attachments: Vec<serde_json::Value> = message
        .attachments
        .iter()
        .map(|a: &Attachment| {
            let mut json = serde_json::json!({
                "kind": kind_name(a.kind()),
                "url": a.url,
                "mime_type": a.mime_type,
                "size_bytes": a.size_bytes,
            });
            // Stored files: their id in the media service, and the length
            // of audio (channels show it next to a voice note).
            if !a.blob_id.is_empty() {
                json["blob_id"] = a.blob_id.clone().into();
            }
            if a.duration_ms > 0 {
                json["duration_ms"] = a.duration_ms.into();
            }
            json
        })
        .collect();
    let body = serde_json::json!({
        "type": "message.outbound",
        "message": {
            "id": message.message_id,
            "recipient": { "external_id": message.recipient_external_id },
            "text": message.text,
            "attachments": attachments,
        },
    });
    body.to_string().into_bytes()
}

/// Attachment kinds as the protocol names them; an unset kind is a file, as
/// the proto says.
fn kind_name(kind: AttachmentKind) -> &'static str {
    match kind {
        AttachmentKind::Image => "image",
        AttachmentKind::Audio => "audio",
        AttachmentKind::Voice => "voice",
        AttachmentKind::Video => "video",
        AttachmentKind::Sticker => "sticker",
        AttachmentKind::File | AttachmentKind::Unspecified => "file",
    }
}

fn checked_url(outbound_url: &str) -> Result<reqwest::Url, String> {
    if outbound_url.trim().is_empty() {
        return Err("channel has no outbound_url".into());
    }
    let url = reqwest::Url::parse(outbound_url)
        .map_err(|e| format!("channel outbound_url is invalid: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "channel outbound_url must be http or https, not {}",
            url.scheme()
        ));
    }
    Ok(url)
}

/// 2xx is sent, with the receiver's id for the message when it gave one;
/// otherwise the refusal as [`refusal`] sorts it (by the status alone: the
/// body of a refusal is never shown).
pub(crate) fn read_answer(status: StatusCode, body: &[u8]) -> SendOutcome {
    refusal(status).unwrap_or_else(|| SendOutcome::Sent {
        external_id: external_id_of(body),
    })
}

/// The longest `external_id` kept, in bytes.
const MAX_EXTERNAL_ID_BYTES: usize = 256;

/// The receiver's id for the message, when it answered with JSON carrying a
/// string `external_id` of at most 256 bytes of visible text (it is shown
/// to agents and matched against status webhooks); empty otherwise (a 2xx
/// without a usable one is still sent).
fn external_id_of(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("external_id")?.as_str().map(str::to_owned))
        .filter(|id| id.len() <= MAX_EXTERNAL_ID_BYTES && !id.chars().any(char::is_control))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::http_error;

    #[test]
    fn statuses_are_sorted_into_sent_retry_and_reject() {
        assert_eq!(
            read_answer(StatusCode::OK, br#"{"external_id":"wamid.1"}"#),
            SendOutcome::Sent {
                external_id: "wamid.1".into()
            }
        );
        assert_eq!(
            read_answer(StatusCode::ACCEPTED, b"ok"),
            SendOutcome::Sent {
                external_id: String::new()
            }
        );
        assert_eq!(
            read_answer(StatusCode::OK, br#"{"external_id":42}"#),
            SendOutcome::Sent {
                external_id: String::new()
            }
        );
        for retry in [500, 502, 503, 504, 408, 429] {
            let status = StatusCode::from_u16(retry).expect("status");
            assert!(
                matches!(read_answer(status, b""), SendOutcome::Retry(_)),
                "{retry}"
            );
        }
        for reject in [400, 401, 403, 404, 410, 422, 301] {
            let status = StatusCode::from_u16(reject).expect("status");
            assert!(
                matches!(read_answer(status, b""), SendOutcome::Reject(_)),
                "{reject}"
            );
        }
    }

    #[test]
    fn errors_name_the_status_and_never_the_body() {
        let page = "<html><body>Error: db password=hunter2\n</body></html>";
        let SendOutcome::Reject(reason) = read_answer(StatusCode::BAD_REQUEST, page.as_bytes())
        else {
            panic!("400 is permanent");
        };
        assert_eq!(reason, "receiver answered HTTP 400 Bad Request");
        assert_eq!(
            read_answer(StatusCode::SERVICE_UNAVAILABLE, page.as_bytes()),
            SendOutcome::Retry(http_error(StatusCode::SERVICE_UNAVAILABLE))
        );
    }

    #[test]
    fn unusable_external_ids_are_left_out() {
        let sent = |body: String| read_answer(StatusCode::OK, body.as_bytes());
        let long = "x".repeat(MAX_EXTERNAL_ID_BYTES + 1);
        for body in [
            format!(r#"{{"external_id":"{long}"}}"#),
            r#"{"external_id":"a\nb"}"#.to_owned(),
        ] {
            assert_eq!(
                sent(body),
                SendOutcome::Sent {
                    external_id: String::new()
                }
            );
        }
        let fits = "y".repeat(MAX_EXTERNAL_ID_BYTES);
        assert_eq!(
            sent(format!(r#"{{"external_id":"{fits}"}}"#)),
            SendOutcome::Sent { external_id: fits }
        );
    }

    #[test]
    fn the_body_follows_the_custom_protocol() {
        let message = OutboundRequested {
            message_id: "m1".into(),
            conversation_id: "c1".into(),
            channel_id: "ch1".into(),
            recipient_external_id: "+4912345".into(),
            text: "hello".into(),
            attachments: vec![Attachment {
                kind: AttachmentKind::Voice as i32,
                url: "https://files.test/v.ogg".into(),
                mime_type: "audio/ogg; codecs=opus".into(),
                size_bytes: 1234,
                ..Default::default()
            }],
            ..Default::default()
        };
        let body: serde_json::Value =
            serde_json::from_slice(&outbound_body(&message)).expect("json");
        assert_eq!(
            body,
            serde_json::json!({
                "type": "message.outbound",
                "message": {
                    "id": "m1",
                    "recipient": {"external_id": "+4912345"},
                    "text": "hello",
                    "attachments": [{
                        "kind": "voice",
                        "url": "https://files.test/v.ogg",
                        "mime_type": "audio/ogg; codecs=opus",
                        "size_bytes": 1234
                    }]
                }
            })
        );
    }

    #[test]
    fn unusable_urls_are_permanent() {
        assert!(checked_url("").is_err());
        assert!(checked_url("not a url").is_err());
        assert!(checked_url("ftp://x.test/in").is_err());
        assert!(checked_url("https://x.test/in").is_ok());
    }
}
