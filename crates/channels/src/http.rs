//! The HTTP exchange every send goes through: one request, a bounded read of
//! the answer, and the sorting of what happened into sent, retry later, or
//! give up.
//!
//! What a receiver answers is its own text: an error page, a stack trace,
//! the secrets of a misconfigured proxy. None of it goes into the reasons
//! agents see (failure reasons, status events, the API) or into logs at
//! info: a refusal is told by its status code and the status's standard
//! name alone ("receiver answered HTTP 500 Internal Server Error"), and
//! every reason is [`sanitize`]d. A short, sanitised excerpt of an error
//! body is logged at debug level, for whoever debugs a receiver.

use reqwest::StatusCode;

use crate::SendOutcome;
use crate::net::refusal_in;

/// How much of a response body is read: enough for a message id, never a
/// whole page a misconfigured URL might return.
const BODY_LIMIT: usize = 64 * 1024;
/// How much of an error body is logged (at debug level only).
const EXCERPT_CHARS: usize = 200;
/// The longest reason, in characters.
pub const REASON_CHARS: usize = 300;

/// A provider's answer: its status and the start of its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: StatusCode,
    /// At most 64 KiB of it.
    pub body: Vec<u8>,
    /// Its `Retry-After`, in seconds (`None` when absent or an HTTP date).
    pub retry_after: Option<std::time::Duration>,
}

impl Answer {
    /// [`refusal`] of its status, with a 429 made
    /// [`SendOutcome::Throttled`] for its `Retry-After` (or `default_pause`).
    pub fn refusal(&self, default_pause: std::time::Duration) -> Option<SendOutcome> {
        match refusal(self.status)? {
            SendOutcome::Retry(reason) if self.status == StatusCode::TOO_MANY_REQUESTS => {
                Some(SendOutcome::Throttled {
                    reason,
                    retry_after: self.retry_after.unwrap_or(default_pause),
                })
            }
            other => Some(other),
        }
    }
}

/// Send `request` and read the start of its answer. `Err` is the attempt's
/// outcome when no answer came (timed out, refused, unreachable, or a
/// destination the client's [`Egress`](crate::net::Egress) policy refuses).
pub async fn exchange(request: reqwest::RequestBuilder) -> Result<Answer, SendOutcome> {
    match request.send().await {
        Ok(response) => {
            let status = response.status();
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(std::time::Duration::from_secs);
            // A body that cannot be read is only a missing id: the status
            // already decides the outcome.
            let body = read_limited(response).await.unwrap_or_default();
            if !status.is_success() && tracing::enabled!(tracing::Level::DEBUG) {
                tracing::debug!(
                    status = status.as_u16(),
                    body = %excerpt(&body),
                    "the receiver refused the request"
                );
            }
            Ok(Answer {
                status,
                body,
                retry_after,
            })
        }
        Err(e) => Err(outcome_of_error(&e)),
    }
}

/// `None` for 2xx. 408, 429 and 5xx are the provider's passing trouble;
/// any other answer (4xx, or a redirect, which sends do not follow) will
/// not change by sending the same request again.
pub fn refusal(status: StatusCode) -> Option<SendOutcome> {
    if status.is_success() {
        return None;
    }
    let reason = http_error(status);
    Some(
        if status.is_server_error()
            || status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_MANY_REQUESTS
        {
            SendOutcome::Retry(reason)
        } else {
            SendOutcome::Reject(reason)
        },
    )
}

/// `receiver answered HTTP 400 Bad Request`: the code and its standard
/// name (never the receiver's own words); redirects say they are not
/// followed.
pub fn http_error(status: StatusCode) -> String {
    let head = match status.canonical_reason() {
        Some(reason) => format!("receiver answered HTTP {} {reason}", status.as_u16()),
        None => format!("receiver answered HTTP {}", status.as_u16()),
    };
    if status.is_redirection() {
        format!("{head} (redirects are not followed: the outbound URL must be the final one)")
    } else {
        head
    }
}

/// `text` fit to be shown as a reason: control characters (newlines,
/// escapes, bidirectional overrides) turned into spaces, whitespace runs
/// folded, at most [`REASON_CHARS`] characters.
pub fn sanitize(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| if is_unsafe(c) { ' ' } else { c })
        .collect();
    let folded = cleaned.split_whitespace().collect::<Vec<_>>().join(" ");
    if folded.chars().count() <= REASON_CHARS {
        return folded;
    }
    let mut short: String = folded.chars().take(REASON_CHARS - 1).collect();
    short.push('…');
    short
}

/// Control and formatting characters that could forge log lines or turn
/// text around on screen.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// The start of an error body, sanitised, for the debug log.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut short: String = text.chars().take(EXCERPT_CHARS).collect();
    if text.chars().count() > EXCERPT_CHARS {
        short.push('…');
    }
    sanitize(&short)
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

fn outcome_of_error(e: &reqwest::Error) -> SendOutcome {
    // A destination the policy refuses stays refused: no retry.
    if let Some(refused) = refusal_in(e) {
        return SendOutcome::Reject(sanitize(&refused.to_string()));
    }
    let detail = cause(e);
    let reason = if e.is_builder() {
        return SendOutcome::Reject(sanitize(&format!("cannot build the request: {detail}")));
    } else if e.is_timeout() {
        format!("timed out: {detail}")
    } else if e.is_connect() {
        format!("connection failed: {detail}")
    } else {
        format!("request failed: {detail}")
    };
    SendOutcome::Retry(sanitize(&reason))
}

/// What happened, from the error's sources ("connection refused"):
/// reqwest's own message is generic and names the URL, which may carry a
/// token in its query, so it is left out.
fn cause(e: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let part = s.to_string();
        if !parts.iter().any(|p| p.contains(&part)) {
            parts.push(part);
        }
        source = s.source();
    }
    if parts.is_empty() {
        "no further detail".to_owned()
    } else {
        parts.join(": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_success_is_not_a_refusal() {
        assert_eq!(refusal(StatusCode::OK), None);
        assert_eq!(refusal(StatusCode::NO_CONTENT), None);
        for retry in [500, 502, 503, 504, 408, 429] {
            let status = StatusCode::from_u16(retry).expect("status");
            assert!(
                matches!(refusal(status), Some(SendOutcome::Retry(_))),
                "{retry}"
            );
        }
        for reject in [400, 401, 403, 404, 410, 422, 301] {
            let status = StatusCode::from_u16(reject).expect("status");
            assert!(
                matches!(refusal(status), Some(SendOutcome::Reject(_))),
                "{reject}"
            );
        }
    }

    #[test]
    fn refusals_name_the_status_only() {
        assert_eq!(
            http_error(StatusCode::INTERNAL_SERVER_ERROR),
            "receiver answered HTTP 500 Internal Server Error"
        );
        assert_eq!(
            http_error(StatusCode::from_u16(599).expect("status")),
            "receiver answered HTTP 599"
        );
        assert!(http_error(StatusCode::FOUND).contains("redirects are not followed"));
    }

    #[test]
    fn reasons_are_one_bounded_line_of_visible_text() {
        assert_eq!(
            sanitize("line one\r\nline\ttwo\u{1b}[31m red \u{202e}evil"),
            "line one line two [31m red evil"
        );
        let long = sanitize(&"x".repeat(1000));
        assert_eq!(long.chars().count(), REASON_CHARS);
        assert!(long.ends_with('…'));
        assert_eq!(excerpt(b"<html>\n<b>oops</b>"), "<html> <b>oops</b>");
    }

    #[tokio::test]
    async fn no_answer_is_worth_retrying() {
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = closed.local_addr().expect("addr").port();
        drop(closed);
        let request = reqwest::Client::new().get(format!("http://127.0.0.1:{port}/?token=s3cret"));
        let Err(SendOutcome::Retry(reason)) = exchange(request).await else {
            panic!("a refused connection is passing trouble");
        };
        assert!(reason.starts_with("connection failed"), "{reason}");
        assert!(!reason.contains("s3cret"), "the URL is left out: {reason}");
    }
}
