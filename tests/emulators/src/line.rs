//! The LINE Messaging API, as far as TELENET uses it: push messages
//! (`POST /v2/bot/message/push`, with `X-Line-Retry-Key`), the bot's info
//! (`GET /v2/bot/info`) and message content downloads
//! (`GET /v2/bot/message/{id}/content`), all with the channel access token
//! as a bearer token.
//!
//! Errors are answered as LINE documents them: `{message, details[]}` with
//! 400 (a body LINE would refuse), 401 (a wrong token), 404 (no such
//! content), and 409 for a retry key already accepted, with the
//! `sentMessages` of the accepted request and its
//! `X-Line-Accepted-Request-Id`.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{Api, Recorded, Reply, bearer};

/// The longest text message object LINE takes (counted in UTF-16 units
/// here, the stricter reading).
pub const TEXT_LIMIT: usize = 5000;
/// Most message objects in one request.
pub const MAX_MESSAGES: usize = 5;

/// What LINE understood of a push request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// Its `to`.
    pub to: String,
    /// Its message objects, as sent.
    pub messages: Vec<Value>,
    /// Its `X-Line-Retry-Key`, if any.
    pub retry_key: Option<String>,
}

impl Push {
    /// The texts of its text objects, in order.
    pub fn texts(&self) -> Vec<String> {
        self.messages
            .iter()
            .filter(|m| m["type"] == "text")
            .filter_map(|m| m["text"].as_str().map(str::to_owned))
            .collect()
    }
}

/// A LINE error answer.
pub fn error(status: StatusCode, message: &str) -> Reply {
    Reply::json(status, json!({ "message": message }))
}

/// Whether `key` is a UUID in LINE's hexadecimal form.
fn is_uuid(key: &str) -> bool {
    let groups: Vec<&str> = key.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.bytes().all(|c| c.is_ascii_hexdigit()))
}

fn https_url(value: &Value, field: &str) -> Result<(), String> {
    match value.get(field).and_then(Value::as_str) {
        Some(url) if url.starts_with("https://") && url.len() <= 2000 => Ok(()),
        Some(url) => Err(format!("{field}: must be an https URL, got {url:?}")),
        None => Err(format!("{field}: required")),
    }
}

/// Check one message object as LINE does.
fn check_message(m: &Value) -> Result<(), String> {
    match m.get("type").and_then(Value::as_str) {
        Some("text") => {
            let text = m
                .get("text")
                .and_then(Value::as_str)
                .ok_or("text: required")?;
            let units = text.encode_utf16().count();
            if units == 0 || units > TEXT_LIMIT {
                return Err(format!(
                    "text: length must be 1..={TEXT_LIMIT}, was {units}"
                ));
            }
            Ok(())
        }
        Some("image") => {
            https_url(m, "originalContentUrl")?;
            https_url(m, "previewImageUrl")
        }
        Some("video") => {
            https_url(m, "originalContentUrl")?;
            https_url(m, "previewImageUrl")
        }
        Some("audio") => {
            https_url(m, "originalContentUrl")?;
            match m.get("duration").and_then(Value::as_u64) {
                Some(d) if d > 0 => Ok(()),
                _ => Err("duration: required, in milliseconds".into()),
            }
        }
        Some("sticker" | "location" | "imagemap" | "template" | "flex") => Ok(()),
        other => Err(format!("type: {other:?} is not a message type")),
    }
}

/// Check a push request as LINE does: the bearer token, the JSON body
/// `{to, messages[1..=5]}`, each message object, the retry key's form.
pub fn check_push(token: &str, request: &Recorded) -> Result<Push, (StatusCode, String)> {
    let bad = |why: String| (StatusCode::BAD_REQUEST, why);
    if request.method != Method::POST || request.path != "/v2/bot/message/push" {
        return Err((
            StatusCode::NOT_FOUND,
            format!(
                "{} {} is not the push endpoint",
                request.method, request.path
            ),
        ));
    }
    if bearer(request) != Some(token) {
        return Err((
            StatusCode::UNAUTHORIZED,
            "Authentication failed. Confirm that the access token in the authorization header is valid."
                .into(),
        ));
    }
    if request.content_type() != "application/json" {
        return Err(bad(format!("content-type {:?}", request.content_type())));
    }
    let retry_key = request.header("x-line-retry-key").map(str::to_owned);
    if let Some(key) = &retry_key
        && !is_uuid(key)
    {
        return Err(bad("The retry key must be a UUID".into()));
    }
    let body = request.json().map_err(bad)?;
    let to = body
        .get("to")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| bad("to: required".into()))?
        .to_owned();
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("messages: required".into()))?
        .clone();
    if messages.is_empty() || messages.len() > MAX_MESSAGES {
        return Err(bad(format!(
            "messages: size must be between 1 and {MAX_MESSAGES}"
        )));
    }
    for (i, m) in messages.iter().enumerate() {
        check_message(m).map_err(|why| bad(format!("messages[{i}].{why}")))?;
    }
    Ok(Push {
        to,
        messages,
        retry_key,
    })
}

/// The emulated LINE API of one channel.
pub struct LineApi {
    token: String,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Accepted retry keys: the request id and `sentMessages` answered.
    accepted: HashMap<String, (String, Value)>,
    /// Message content by message id: MIME type and bytes.
    content: HashMap<String, (String, Vec<u8>)>,
    next_id: u64,
}

impl LineApi {
    /// The API of a channel whose access token is `token`.
    pub fn new(token: &str) -> Self {
        Self {
            token: token.to_owned(),
            state: Mutex::new(State {
                next_id: 461_230_966_842_064_897,
                ..State::default()
            }),
        }
    }

    /// With the content of message `id` (what a contact sent).
    pub fn with_content(self, id: &str, content_type: &str, bytes: Vec<u8>) -> Self {
        self.state()
            .content
            .insert(id.to_owned(), (content_type.to_owned(), bytes));
        self
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, request: &Recorded) -> Reply {
        let push = match check_push(&self.token, request) {
            Ok(push) => push,
            Err((status, why)) => {
                return Reply::json(
                    status,
                    json!({ "message": "The request body has 1 error(s)",
                            "details": [{ "message": why }] }),
                );
            }
        };
        let mut state = self.state();
        if let Some(key) = &push.retry_key
            && let Some((request_id, sent)) = state.accepted.get(key)
        {
            return Reply::json(
                StatusCode::CONFLICT,
                json!({ "message": "The retry key is already accepted", "sentMessages": sent }),
            )
            .with_header("x-line-accepted-request-id", request_id);
        }
        let sent: Vec<Value> = push
            .messages
            .iter()
            .map(|_| {
                state.next_id += 1;
                json!({ "id": state.next_id.to_string(), "quoteToken": format!("q{}", state.next_id) })
            })
            .collect();
        let sent = Value::Array(sent);
        let request_id = format!("req-{}", state.next_id);
        if let Some(key) = push.retry_key {
            state
                .accepted
                .insert(key, (request_id.clone(), sent.clone()));
        }
        Reply::ok(json!({ "sentMessages": sent })).with_header("x-line-request-id", &request_id)
    }

    fn content(&self, id: &str) -> Reply {
        match self.state().content.get(id) {
            Some((content_type, bytes)) => {
                Reply::bytes(StatusCode::OK, content_type, bytes.clone())
            }
            None => error(StatusCode::NOT_FOUND, "Not found"),
        }
    }
}

impl Api for LineApi {
    fn answer(&self, request: &Recorded, _: usize, _: &str) -> Reply {
        if bearer(request) != Some(self.token.as_str()) {
            return error(
                StatusCode::UNAUTHORIZED,
                "Authentication failed. Confirm that the access token in the authorization header is valid.",
            );
        }
        let path = request.path.as_str();
        match (&request.method, path) {
            (&Method::POST, "/v2/bot/message/push") => self.push(request),
            (&Method::GET, "/v2/bot/info") => Reply::ok(json!({
                "userId": "Ub9952f8ac29c1d5b1f6e8b7b1a1b2c3d",
                "basicId": "@216ru...",
                "displayName": "Example shop",
                "pictureUrl": "https://profile.line-scdn.net/abcdefghijklmn",
                "chatMode": "chat",
                "markAsReadMode": "manual",
            })),
            (&Method::GET, p) if p.starts_with("/v2/bot/message/") && p.ends_with("/content") => {
                let id = &p["/v2/bot/message/".len()..p.len() - "/content".len()];
                self.content(id)
            }
            _ => error(StatusCode::NOT_FOUND, "Not found"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Emulator;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn call(
        emulator: &Emulator,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> String {
        let mut stream = tokio::net::TcpStream::connect(emulator.addr())
            .await
            .expect("connect");
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (n, v) in headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        head.push_str("\r\n");
        head.push_str(body);
        stream.write_all(head.as_bytes()).await.expect("write");
        let mut out = String::new();
        stream.read_to_string(&mut out).await.expect("read");
        out
    }

    const KEY: &str = "123e4567-e89b-42d3-a456-426614174000";

    #[tokio::test]
    async fn a_reused_retry_key_is_answered_409_with_what_was_accepted() {
        let emulator = Emulator::start(LineApi::new("tok")).await;
        let body = r#"{"to":"U1","messages":[{"type":"text","text":"hi"}]}"#;
        let headers = [
            ("authorization", "Bearer tok"),
            ("content-type", "application/json"),
            ("x-line-retry-key", KEY),
        ];
        let first = call(&emulator, "POST", "/v2/bot/message/push", &headers, body).await;
        assert!(first.starts_with("HTTP/1.1 200"), "{first}");
        assert!(
            first.contains(r#""sentMessages":[{"id":"461230966842064898""#),
            "{first}"
        );
        let again = call(&emulator, "POST", "/v2/bot/message/push", &headers, body).await;
        assert!(again.starts_with("HTTP/1.1 409"), "{again}");
        assert!(again.contains("461230966842064898"), "{again}");
        assert!(again.contains("x-line-accepted-request-id"), "{again}");
    }

    #[tokio::test]
    async fn wrong_tokens_and_bodies_are_refused_as_line_refuses_them() {
        let emulator = Emulator::start(LineApi::new("tok")).await;
        let wrong = call(
            &emulator,
            "GET",
            "/v2/bot/info",
            &[("authorization", "Bearer other")],
            "",
        )
        .await;
        assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
        let json = [
            ("authorization", "Bearer tok"),
            ("content-type", "application/json"),
        ];
        for (body, needle) in [
            (
                r#"{"messages":[{"type":"text","text":"hi"}]}"#,
                "to: required",
            ),
            (r#"{"to":"U1","messages":[]}"#, "between 1 and 5"),
            (
                r#"{"to":"U1","messages":[{"type":"audio","originalContentUrl":"https://a/b.m4a"}]}"#,
                "duration",
            ),
            (
                r#"{"to":"U1","messages":[{"type":"image","originalContentUrl":"http://a/b.png","previewImageUrl":"https://a"}]}"#,
                "https",
            ),
        ] {
            let answer = call(&emulator, "POST", "/v2/bot/message/push", &json, body).await;
            assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
            assert!(answer.contains(needle), "{needle}: {answer}");
        }
        let long = format!(
            r#"{{"to":"U1","messages":[{{"type":"text","text":"{}"}}]}}"#,
            "x".repeat(5001)
        );
        let answer = call(&emulator, "POST", "/v2/bot/message/push", &json, &long).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        let bad_key = [
            ("authorization", "Bearer tok"),
            ("content-type", "application/json"),
            ("x-line-retry-key", "not-a-uuid"),
        ];
        let answer = call(
            &emulator,
            "POST",
            "/v2/bot/message/push",
            &bad_key,
            r#"{"to":"U1","messages":[{"type":"text","text":"hi"}]}"#,
        )
        .await;
        assert!(answer.contains("UUID"), "{answer}");
    }

    #[tokio::test]
    async fn content_is_downloaded_with_the_token_only() {
        let emulator = Emulator::start(LineApi::new("tok").with_content(
            "325708",
            "audio/mp4",
            b"m4a".to_vec(),
        ))
        .await;
        let path = "/v2/bot/message/325708/content";
        let ok = call(
            &emulator,
            "GET",
            path,
            &[("authorization", "Bearer tok")],
            "",
        )
        .await;
        assert!(
            ok.starts_with("HTTP/1.1 200") && ok.ends_with("m4a"),
            "{ok}"
        );
        let anonymous = call(&emulator, "GET", path, &[], "").await;
        assert!(anonymous.starts_with("HTTP/1.1 401"), "{anonymous}");
        let missing = call(
            &emulator,
            "GET",
            "/v2/bot/message/1/content",
            &[("authorization", "Bearer tok")],
            "",
        )
        .await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        let info = call(
            &emulator,
            "GET",
            "/v2/bot/info",
            &[("authorization", "Bearer tok")],
            "",
        )
        .await;
        assert!(info.contains("displayName"), "{info}");
    }
}
