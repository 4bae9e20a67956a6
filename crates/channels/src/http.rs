//! The HTTP exchange every send goes through: one request, a bounded read of
//! the answer, and the sorting of what happened into sent, retry later, or
//! give up.

use reqwest::StatusCode;

use crate::SendOutcome;

/// How much of a response body is read: enough for a message id and an
/// error message, never a whole page a misconfigured URL might return.
const BODY_LIMIT: usize = 64 * 1024;
/// How much of an error body goes into the outcome's reason.
const EXCERPT_CHARS: usize = 200;

/// A provider's answer: its status and the start of its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: StatusCode,
    /// At most 64 KiB of it.
    pub body: Vec<u8>,
}

/// Send `request` and read the start of its answer. `Err` is the attempt's
/// outcome when no answer came (timed out, refused, unreachable).
pub async fn exchange(request: reqwest::RequestBuilder) -> Result<Answer, SendOutcome> {
    match request.send().await {
        Ok(response) => {
            let status = response.status();
            // A body that cannot be read is only a missing id or excerpt:
            // the status already decides the outcome.
            let body = read_limited(response).await.unwrap_or_default();
            Ok(Answer { status, body })
        }
        Err(e) => Err(outcome_of_error(&e)),
    }
}

/// `None` for 2xx. 408, 429 and 5xx are the provider's passing trouble;
/// any other answer (4xx, or a redirect, which sends must not follow) will
/// not change by sending the same request again.
pub fn refusal(status: StatusCode, body: &[u8]) -> Option<SendOutcome> {
    if status.is_success() {
        return None;
    }
    let reason = http_error(status, body);
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

/// `http 400 Bad Request: <start of the body>`, whitespace folded so the
/// reason stays one readable line.
pub fn http_error(status: StatusCode, body: &[u8]) -> String {
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
    let detail = error_chain(e);
    if e.is_builder() {
        SendOutcome::Reject(format!("cannot build the request: {detail}"))
    } else if e.is_timeout() {
        SendOutcome::Retry(format!("timed out: {detail}"))
    } else if e.is_connect() {
        SendOutcome::Retry(format!("connection failed: {detail}"))
    } else {
        SendOutcome::Retry(format!("request failed: {detail}"))
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
    fn only_success_is_not_a_refusal() {
        assert_eq!(refusal(StatusCode::OK, b""), None);
        assert_eq!(refusal(StatusCode::NO_CONTENT, b""), None);
        for retry in [500, 502, 503, 504, 408, 429] {
            let status = StatusCode::from_u16(retry).expect("status");
            assert!(
                matches!(refusal(status, b""), Some(SendOutcome::Retry(_))),
                "{retry}"
            );
        }
        for reject in [400, 401, 403, 404, 410, 422, 301] {
            let status = StatusCode::from_u16(reject).expect("status");
            assert!(
                matches!(refusal(status, b""), Some(SendOutcome::Reject(_))),
                "{reject}"
            );
        }
    }

    #[tokio::test]
    async fn no_answer_is_worth_retrying() {
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = closed.local_addr().expect("addr").port();
        drop(closed);
        let request = reqwest::Client::new().get(format!("http://127.0.0.1:{port}/"));
        let Err(SendOutcome::Retry(reason)) = exchange(request).await else {
            panic!("a refused connection is passing trouble");
        };
        assert!(reason.starts_with("connection failed"), "{reason}");
    }
}
