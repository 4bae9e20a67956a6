//! One delivery attempt to a custom channel: the JSON body, Standard Webhooks
//! signature headers, and the sorting of the answer into sent, retry later,
//! or give up.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use telenet_proto::common::v1::{Attachment, AttachmentKind};
use telenet_proto::events::v1::OutboundRequested;
use telenet_signing::Secret;

/// How much of a response body is read: enough for an `external_id` and an
/// error message, never a whole page a misconfigured URL might return.
const BODY_LIMIT: usize = 64 * 1024;
/// How much of an error body goes into the delivery's `error`.
const EXCERPT_CHARS: usize = 200;

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The channel accepted the message; `external_id` is its id there, if it said.
    Sent { external_id: String },
    /// Worth another attempt later (server error, throttled, timed out, unreachable).
    Retry(String),
    /// Can never succeed as it is (rejected by the channel, unusable configuration).
    Reject(String),
}

/// The HTTP side of dispatch.
#[derive(Debug, Clone)]
pub(crate) struct Sender {
    http: reqwest::Client,
}

impl Sender {
    pub(crate) fn new(
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .timeout(timeout)
            // A redirect would turn the signed POST into something the receiver
            // did not ask for; a moved endpoint is a configuration to fix.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("telenet-dispatch/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { http })
    }

    /// POST `message` to a custom channel's `outbound_url`, signed with
    /// `secret`. The message id is the `webhook-id`, so a receiver can drop
    /// the duplicates our retries may cause.
    pub(crate) async fn send_custom(
        &self,
        outbound_url: &str,
        secret: &Secret,
        message: &OutboundRequested,
    ) -> Outcome {
        let url = match checked_url(outbound_url) {
            Ok(url) => url,
            Err(reason) => return Outcome::Reject(reason),
        };
        let body = custom_body(message);
        let timestamp = telenet_signing::unix_now();
        let signature = secret.sign(&message.message_id, timestamp, &body);
        // The receiver may join our trace (W3C `traceparent`).
        let mut trace = reqwest::header::HeaderMap::new();
        telenet_kit::telemetry::inject_http(&mut trace);
        let sent = self
            .http
            .post(url)
            .headers(trace)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header("webhook-id", &message.message_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(response) => {
                let status = response.status();
                // A body that cannot be read is only a missing external id or
                // excerpt: the status already decided the outcome.
                let body = read_limited(response).await.unwrap_or_default();
                classify(status, &body)
            }
            Err(e) => outcome_of_error(&e),
        }
    }
}

/// The `message.outbound` body of our custom channel protocol.
pub(crate) fn custom_body(message: &OutboundRequested) -> Vec<u8> {
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

async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = BODY_LIMIT.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= BODY_LIMIT {
            break;
        }
    }
    Ok(body)
}

/// 2xx is sent; 408, 429 and 5xx are the receiver's passing trouble; any
/// other answer (4xx, or a redirect we do not follow) will not change by
/// sending the same request again.
pub(crate) fn classify(status: StatusCode, body: &[u8]) -> Outcome {
    if status.is_success() {
        return Outcome::Sent {
            external_id: external_id_of(body),
        };
    }
    let reason = http_error(status, body);
    if status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
    {
        Outcome::Retry(reason)
    } else {
        Outcome::Reject(reason)
    }
}

/// The receiver's id for the message, when it answered with JSON carrying a
/// string `external_id`; empty otherwise (a 2xx without it is still sent).
fn external_id_of(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("external_id")?.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// `http 400 Bad Request: <start of the body>`, whitespace folded so the
/// error stays one readable line.
fn http_error(status: StatusCode, body: &[u8]) -> String {
    let head = match status.canonical_reason() {
        Some(reason) => format!("http {} {reason}", status.as_u16()),
        None => format!("http {}", status.as_u16()),
    };
    let text = String::from_utf8_lossy(body);
    let folded = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if folded.is_empty() {
        return head;
    }
    let mut excerpt: String = folded.chars().take(EXCERPT_CHARS).collect();
    if folded.chars().count() > EXCERPT_CHARS {
        excerpt.push('…');
    }
    format!("{head}: {excerpt}")
}

fn outcome_of_error(e: &reqwest::Error) -> Outcome {
    let detail = error_chain(e);
    if e.is_builder() {
        Outcome::Reject(format!("cannot build the request: {detail}"))
    } else if e.is_timeout() {
        Outcome::Retry(format!("timed out: {detail}"))
    } else if e.is_connect() {
        Outcome::Retry(format!("connection failed: {detail}"))
    } else {
        Outcome::Retry(format!("request failed: {detail}"))
    }
}

/// reqwest's own message hides the cause ("error sending request"); the
/// sources say what happened ("connection refused").
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_sorted_into_sent_retry_and_reject() {
        assert_eq!(
            classify(StatusCode::OK, br#"{"external_id":"wamid.1"}"#),
            Outcome::Sent {
                external_id: "wamid.1".into()
            }
        );
        assert_eq!(
            classify(StatusCode::ACCEPTED, b"ok"),
            Outcome::Sent {
                external_id: String::new()
            }
        );
        assert_eq!(
            classify(StatusCode::OK, br#"{"external_id":42}"#),
            Outcome::Sent {
                external_id: String::new()
            }
        );
        for retry in [500, 502, 503, 504, 408, 429] {
            let status = StatusCode::from_u16(retry).expect("status");
            assert!(
                matches!(classify(status, b""), Outcome::Retry(_)),
                "{retry}"
            );
        }
        for reject in [400, 401, 403, 404, 410, 422, 301] {
            let status = StatusCode::from_u16(reject).expect("status");
            assert!(
                matches!(classify(status, b""), Outcome::Reject(_)),
                "{reject}"
            );
        }
    }

    #[test]
    fn errors_name_the_status_and_a_short_excerpt() {
        let long = format!("bad\n  recipient {}", "x".repeat(500));
        let Outcome::Reject(reason) = classify(StatusCode::BAD_REQUEST, long.as_bytes()) else {
            panic!("400 is permanent");
        };
        assert!(
            reason.starts_with("http 400 Bad Request: bad recipient x"),
            "{reason}"
        );
        assert!(reason.chars().count() < 250, "{reason}");
        assert_eq!(
            http_error(StatusCode::SERVICE_UNAVAILABLE, b""),
            "http 503 Service Unavailable"
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
        };
        let body: serde_json::Value = serde_json::from_slice(&custom_body(&message)).expect("json");
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
