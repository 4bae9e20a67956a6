//! Meta's Send API for Messenger and Instagram: `POST /{version}/{page_id}/messages`
//! (graph.facebook.com) and `POST /{version}/me/messages`
//! (graph.instagram.com, Instagram Login).
//!
//! A request must carry the bearer token, be JSON, and have
//! `recipient.id`, `messaging_type` (`RESPONSE`, `UPDATE` or
//! `MESSAGE_TAG`, the latter with a `tag`), and a `message` with exactly
//! one of `text` and `attachment{type: image|video|audio|file,
//! payload{url}}`. Accepted: `{"recipient_id", "message_id"}`. Refused
//! with Meta's error body `{"error": {message, type, code, error_subcode,
//! fbtrace_id}}`: 190 for a bad token (401), 100 for a bad request (400),
//! 10/2018278 for a response outside the 24-hour window (400), 613 with
//! HTTP 429 when throttled ([`throttled`]).

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{Api, Recorded, Reply};

/// A Graph API error as Meta answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphError {
    /// The HTTP status.
    pub status: StatusCode,
    /// Meta's `code`.
    pub code: i64,
    /// Meta's `error_subcode` (0: none).
    pub subcode: i64,
    /// Meta's `message`.
    pub message: String,
}

impl GraphError {
    fn new(status: StatusCode, code: i64, subcode: i64, message: &str) -> Self {
        Self {
            status,
            code,
            subcode,
            message: message.to_owned(),
        }
    }

    /// A bad request (code 100).
    pub fn invalid(message: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, 100, 0, message)
    }

    /// The answer Meta gives.
    pub fn reply(&self) -> Reply {
        let mut error = json!({
            "message": self.message,
            "type": "OAuthException",
            "code": self.code,
            "fbtrace_id": "AbCdEfGhIjK",
        });
        if self.subcode != 0 {
            error["error_subcode"] = self.subcode.into();
        }
        Reply::json(self.status, json!({ "error": error }))
    }
}

/// The answer to a response sent outside the 24-hour window (code 10,
/// subcode 2018278).
pub fn outside_window() -> GraphError {
    GraphError::new(
        StatusCode::BAD_REQUEST,
        10,
        2018278,
        "(#10) This message is sent outside of allowed window.",
    )
}

/// The answer of a throttled Page (code 613, HTTP 429, `Retry-After`).
pub fn throttled(retry_after_secs: u64) -> Reply {
    GraphError::new(
        StatusCode::TOO_MANY_REQUESTS,
        613,
        0,
        "(#613) Calls to this api have exceeded the rate limit.",
    )
    .reply()
    .with_header("retry-after", &retry_after_secs.to_string())
}

/// What the Send API understood of a request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SendRequest {
    /// `recipient.id`.
    pub recipient: String,
    /// `messaging_type`.
    pub messaging_type: String,
    /// `tag`, for `MESSAGE_TAG`.
    pub tag: Option<String>,
    /// `message.text`.
    pub text: Option<String>,
    /// `message.attachment.type` and `payload.url`.
    pub attachment: Option<(String, String)>,
}

/// Check a Send API request as Meta does: `POST` on `expected_path`,
/// bearer `token`, JSON, and the body's shape.
pub fn check_send(
    method: &Method,
    path: &str,
    authorization: Option<&str>,
    content_type: &str,
    body: &[u8],
    token: &str,
    expected_path: &str,
) -> Result<SendRequest, GraphError> {
    let given = authorization.and_then(|v| v.strip_prefix("Bearer "));
    if given != Some(token) || token.is_empty() {
        return Err(GraphError::new(
            StatusCode::UNAUTHORIZED,
            190,
            0,
            "Invalid OAuth access token - Cannot parse access token",
        ));
    }
    if method != Method::POST || path != expected_path {
        return Err(GraphError::invalid(&format!(
            "Unknown path components: {path} (expected POST {expected_path})"
        )));
    }
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if essence != "application/json" {
        return Err(GraphError::invalid("the body must be application/json"));
    }
    let json: Value = serde_json::from_slice(body)
        .map_err(|e| GraphError::invalid(&format!("the body is not JSON: {e}")))?;
    let text_field = |v: &Value, name: &str| v.get(name).and_then(Value::as_str).map(str::to_owned);
    let recipient = json
        .get("recipient")
        .and_then(|r| text_field(r, "id"))
        .filter(|id| !id.is_empty())
        .ok_or_else(|| GraphError::invalid("(#100) param recipient[id] must be non-empty"))?;
    let messaging_type = text_field(&json, "messaging_type")
        .ok_or_else(|| GraphError::invalid("(#100) messaging_type is required"))?;
    let tag = text_field(&json, "tag");
    match messaging_type.as_str() {
        "RESPONSE" | "UPDATE" => {}
        "MESSAGE_TAG" if tag.as_deref().is_some_and(|t| !t.is_empty()) => {}
        "MESSAGE_TAG" => {
            return Err(GraphError::invalid(
                "(#100) tag is required when messaging_type is MESSAGE_TAG",
            ));
        }
        other => {
            return Err(GraphError::invalid(&format!(
                "(#100) messaging_type {other:?} is not RESPONSE, UPDATE or MESSAGE_TAG"
            )));
        }
    }
    let message = json
        .get("message")
        .filter(|m| m.is_object())
        .ok_or_else(|| GraphError::invalid("(#100) param message must be an object"))?;
    let text = text_field(message, "text");
    let attachment = message.get("attachment");
    let attachment = match (&text, attachment) {
        (Some(t), None) if !t.is_empty() => None,
        (None, Some(a)) => {
            let kind = text_field(a, "type").unwrap_or_default();
            if !matches!(kind.as_str(), "image" | "video" | "audio" | "file") {
                return Err(GraphError::invalid(&format!(
                    "(#100) attachment type {kind:?} is not image, video, audio or file"
                )));
            }
            let url = a
                .get("payload")
                .and_then(|p| text_field(p, "url"))
                .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
                .ok_or_else(|| GraphError::invalid("(#100) attachment payload.url is required"))?;
            Some((kind, url))
        }
        _ => {
            return Err(GraphError::invalid(
                "(#100) message must have exactly one of text and attachment",
            ));
        }
    };
    Ok(SendRequest {
        recipient,
        messaging_type,
        tag,
        text,
        attachment,
    })
}

/// The Send API of one Page (or Instagram account), and the profile read
/// that checks its token (`GET /{version}/{id}` or `/{version}/me`).
pub struct MetaMessaging {
    token: String,
    path: String,
    /// The profile path and what a `GET` of it answers.
    profile: Option<(String, Value)>,
    /// Recipients whose last message is more than 24 hours old.
    outside_window: Mutex<HashSet<String>>,
}

impl MetaMessaging {
    /// The Send API of Page `page_id` (`/{version}/{page_id}/messages`),
    /// reached with `token`.
    pub fn page(version: &str, page_id: &str, token: &str) -> Self {
        Self::at(format!("/{version}/{page_id}/messages"), token)
    }

    /// The Instagram Login Send API (`/{version}/me/messages`).
    pub fn instagram_login(version: &str, token: &str) -> Self {
        Self::at(format!("/{version}/me/messages"), token)
    }

    fn at(path: String, token: &str) -> Self {
        Self {
            token: token.to_owned(),
            path,
            profile: None,
            outside_window: Mutex::new(HashSet::new()),
        }
    }

    /// Answer `GET {path}` (with the token) with `fields`, as Graph answers
    /// a profile read (`/{version}/{page_id}?fields=id,name`).
    pub fn with_profile(mut self, path: &str, fields: Value) -> Self {
        self.profile = Some((path.to_owned(), fields));
        self
    }

    /// The answer to a profile read: its fields, or Graph's error.
    fn profile(&self, request: &Recorded) -> Reply {
        if request
            .header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            != Some(self.token.as_str())
        {
            return GraphError::new(
                StatusCode::UNAUTHORIZED,
                190,
                0,
                "Invalid OAuth access token - Cannot parse access token",
            )
            .reply();
        }
        match &self.profile {
            Some((path, fields)) if *path == request.path => Reply::ok(fields.clone()),
            _ => GraphError::invalid(&format!(
                "Unsupported get request. Object with ID '{}' does not exist",
                request.path
            ))
            .reply(),
        }
    }

    /// Make `recipient`'s last message older than 24 hours: responses are
    /// refused (10/2018278), `HUMAN_AGENT`-tagged messages accepted.
    pub fn with_recipient_outside_window(self, recipient: &str) -> Self {
        self.outside_window
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(recipient.to_owned());
        self
    }

    /// Check `request` as the API does.
    pub fn check(&self, request: &Recorded) -> Result<SendRequest, GraphError> {
        let understood = check_send(
            &request.method,
            &request.path,
            request.header("authorization"),
            &request.content_type(),
            &request.body,
            &self.token,
            &self.path,
        )?;
        let outside = self
            .outside_window
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&understood.recipient);
        if outside && understood.tag.as_deref() != Some("HUMAN_AGENT") {
            return Err(outside_window());
        }
        Ok(understood)
    }
}

impl Api for MetaMessaging {
    fn answer(&self, request: &Recorded, n: usize, _: &str) -> Reply {
        if request.method == Method::GET {
            return self.profile(request);
        }
        match self.check(request) {
            Ok(understood) => Reply::ok(json!({
                "recipient_id": understood.recipient,
                "message_id": format!("m_emulated_{n}"),
            })),
            Err(error) => error.reply(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::HeaderMap;

    fn request(path: &str, token: Option<&str>, body: Value) -> Recorded {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "application/json".parse().expect("header"));
        if let Some(t) = token {
            headers.insert(
                "authorization",
                format!("Bearer {t}").parse().expect("header"),
            );
        }
        Recorded {
            method: Method::POST,
            path: path.into(),
            query: String::new(),
            headers,
            body: Bytes::from(body.to_string()),
        }
    }

    fn text(recipient: &str) -> Value {
        json!({"recipient": {"id": recipient}, "messaging_type": "RESPONSE", "message": {"text": "hi"}})
    }

    #[test]
    fn a_well_formed_message_is_accepted_with_an_id() {
        let api = MetaMessaging::page("v21.0", "P1", "EAAtoken");
        let reply = api.answer(
            &request("/v21.0/P1/messages", Some("EAAtoken"), text("U1")),
            3,
            "",
        );
        assert_eq!(reply.status, StatusCode::OK);
        let body: Value = serde_json::from_slice(&reply.body).expect("json");
        assert_eq!(
            body,
            json!({"recipient_id": "U1", "message_id": "m_emulated_3"})
        );
        let file = json!({"recipient": {"id": "U1"}, "messaging_type": "MESSAGE_TAG", "tag": "HUMAN_AGENT",
            "message": {"attachment": {"type": "audio", "payload": {"url": "https://f.test/a.m4a", "is_reusable": false}}}});
        let understood = api
            .check(&request("/v21.0/P1/messages", Some("EAAtoken"), file))
            .expect("accepted");
        assert_eq!(
            understood.attachment,
            Some(("audio".into(), "https://f.test/a.m4a".into()))
        );
        assert_eq!(understood.tag.as_deref(), Some("HUMAN_AGENT"));
    }

    #[test]
    fn the_token_path_and_shape_are_checked() {
        let api = MetaMessaging::instagram_login("v21.0", "IGtoken");
        let path = "/v21.0/me/messages";
        assert_eq!(
            api.check(&request(path, None, text("U")))
                .expect_err("no token")
                .code,
            190
        );
        assert_eq!(
            api.check(&request(path, Some("other"), text("U")))
                .expect_err("bad")
                .code,
            190
        );
        assert_eq!(
            api.check(&request("/v21.0/P1/messages", Some("IGtoken"), text("U")))
                .expect_err("path")
                .code,
            100
        );
        for bad in [
            json!({"recipient": {}, "messaging_type": "RESPONSE", "message": {"text": "x"}}),
            json!({"recipient": {"id": "U"}, "message": {"text": "x"}}),
            json!({"recipient": {"id": "U"}, "messaging_type": "MESSAGE_TAG", "message": {"text": "x"}}),
            json!({"recipient": {"id": "U"}, "messaging_type": "RESPONSE", "message": {}}),
            json!({"recipient": {"id": "U"}, "messaging_type": "RESPONSE", "message": {"text": "x",
                "attachment": {"type": "image", "payload": {"url": "https://f.test/x"}}}}),
            json!({"recipient": {"id": "U"}, "messaging_type": "RESPONSE", "message": {
                "attachment": {"type": "sticker", "payload": {"url": "https://f.test/x"}}}}),
            json!({"recipient": {"id": "U"}, "messaging_type": "RESPONSE", "message": {
                "attachment": {"type": "image", "payload": {}}}}),
        ] {
            let e = api
                .check(&request(path, Some("IGtoken"), bad.clone()))
                .expect_err("refused");
            assert_eq!((e.status, e.code), (StatusCode::BAD_REQUEST, 100), "{bad}");
        }
    }

    #[test]
    fn a_profile_read_needs_the_token_and_the_right_id() {
        let api = MetaMessaging::page("v21.0", "P1", "t")
            .with_profile("/v21.0/P1", json!({"id": "P1", "name": "Shop"}));
        let get = |path: &str, token: &str| {
            let mut r = request(path, Some(token), json!({}));
            r.method = Method::GET;
            api.answer(&r, 1, "")
        };
        let ok = get("/v21.0/P1", "t");
        assert_eq!(ok.status, StatusCode::OK);
        let body: Value = serde_json::from_slice(&ok.body).expect("json");
        assert_eq!(body["name"], "Shop");
        assert_eq!(get("/v21.0/P1", "bad").status, StatusCode::UNAUTHORIZED);
        assert_eq!(get("/v21.0/P2", "t").status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn responses_outside_the_window_are_refused_but_human_agent_replies_pass() {
        let api = MetaMessaging::page("v21.0", "P1", "t").with_recipient_outside_window("LATE");
        let path = "/v21.0/P1/messages";
        let e = api
            .check(&request(path, Some("t"), text("LATE")))
            .expect_err("outside");
        assert_eq!((e.code, e.subcode), (10, 2018278));
        let reply = e.reply();
        let body: Value = serde_json::from_slice(&reply.body).expect("json");
        assert_eq!(body["error"]["error_subcode"], 2018278);
        let tagged = json!({"recipient": {"id": "LATE"}, "messaging_type": "MESSAGE_TAG", "tag": "HUMAN_AGENT", "message": {"text": "hi"}});
        assert!(api.check(&request(path, Some("t"), tagged)).is_ok());
        assert!(api.check(&request(path, Some("t"), text("SOON"))).is_ok());
        let busy = throttled(30);
        assert_eq!(busy.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(busy.headers.contains(&("retry-after".into(), "30".into())));
    }
}
