//! WhatsApp's APIs: Meta's Graph API for the Cloud API ([`Graph`]) and
//! 360dialog's pass-through ([`Dialog360`]).
//!
//! Graph:
//! - `POST /{version}/{phone_number_id}/messages` with `Authorization:
//!   Bearer {token}` and a JSON message ([`check_message`]); answers
//!   `{"messaging_product":"whatsapp","contacts":[{"input","wa_id"}],"messages":[{"id":"wamid.…"}]}`.
//! - `GET /{version}/{media_id}` with the bearer: `{"url", "mime_type",
//!   "sha256", "file_size", "id", "messaging_product"}`; the `url` is
//!   served here (`/whatsapp_business/attachments/?mid=…`), again only
//!   with the bearer.
//! - Errors as Graph writes them: `{"error":{"message","type","code",
//!   "error_data":{"messaging_product","details"},"fbtrace_id"}}`
//!   ([`graph_error`]): 190 for a bad token (401), 100 for a bad parameter
//!   (400); scripted ones with [`crate::Emulator::answer_next`], e.g.
//!   [`outside_window`] (131047) or [`throughput_exceeded`] (130429).
//!
//! 360dialog: the same messages at `POST /messages`, `POST
//! /v1/configs/webhook {"url","headers"}`, and `GET /{media_id}` answering
//! Meta's `lookaside.fbsbx.com` URL, whose path and query it serves itself;
//! every call with `D360-API-KEY`.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{Api, Recorded, Reply, bearer};

/// The longest text body WhatsApp takes, in characters.
pub const TEXT_LIMIT: usize = 4096;

/// A Graph error answer.
pub fn graph_error(status: StatusCode, code: i64, message: &str) -> Reply {
    Reply::json(
        status,
        json!({
            "error": {
                "message": message,
                "type": "OAuthException",
                "code": code,
                "error_data": {"messaging_product": "whatsapp", "details": message},
                "fbtrace_id": "AbCdEfGhIjK"
            }
        }),
    )
}

/// 131047: more than 24 hours since the contact's last message.
pub fn outside_window() -> Reply {
    graph_error(
        StatusCode::BAD_REQUEST,
        131047,
        "Re-engagement message: more than 24 hours have passed since the recipient last replied",
    )
}

/// 130429: the number's throughput was exceeded (sent with HTTP 429 and
/// `Retry-After`).
pub fn throughput_exceeded(retry_after_secs: u64) -> Reply {
    graph_error(
        StatusCode::TOO_MANY_REQUESTS,
        130429,
        "Rate limit hit: cloud API message throughput has been reached",
    )
    .with_header("retry-after", &retry_after_secs.to_string())
}

/// 131056: too many messages to one recipient.
pub fn pair_rate_limit() -> Reply {
    graph_error(
        StatusCode::BAD_REQUEST,
        131056,
        "(Business Account, Consumer Account) pair rate limit hit",
    )
}

/// Media types a message may carry, and whether each takes a caption.
const MEDIA: [(&str, bool); 5] = [
    ("image", true),
    ("video", true),
    ("document", true),
    ("audio", false),
    ("sticker", false),
];

/// Check a message body as the Cloud API does: `messaging_product`, `to`,
/// `type` and that type's object (text: a `body` within the limit; media:
/// one of `id` or an http(s) `link`, a caption only where allowed,
/// `filename` only on documents, `voice` only on audio), `context`.
pub fn check_message(body: &Value) -> Result<(), String> {
    if body["messaging_product"] != "whatsapp" {
        return Err(format!(
            "messaging_product is {}",
            body["messaging_product"]
        ));
    }
    if !body["recipient_type"].is_null() && body["recipient_type"] != "individual" {
        return Err(format!("recipient_type is {}", body["recipient_type"]));
    }
    let to = body["to"].as_str().unwrap_or_default();
    if to.trim().is_empty() {
        return Err("to is missing".into());
    }
    let kind = body["type"].as_str().ok_or("type is missing")?;
    let object = body[kind]
        .as_object()
        .ok_or_else(|| format!("the {kind} object is missing"))?;
    if kind == "text" {
        let text = object
            .get("body")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if text.is_empty() {
            return Err("text.body is missing".into());
        }
        if text.chars().count() > TEXT_LIMIT {
            return Err(format!("text.body is over {TEXT_LIMIT} characters"));
        }
        if object.get("preview_url").is_some_and(|p| !p.is_boolean()) {
            return Err("text.preview_url is not a boolean".into());
        }
    } else if let Some((_, captioned)) = MEDIA.iter().find(|(name, _)| *name == kind) {
        let link = object.get("link").and_then(Value::as_str);
        let id = object.get("id").and_then(Value::as_str);
        match (id, link) {
            (Some(_), None) => {}
            (None, Some(link)) if link.starts_with("https://") || link.starts_with("http://") => {}
            (None, Some(link)) => return Err(format!("{kind}.link {link:?} is not a URL")),
            _ => return Err(format!("{kind} needs exactly one of id and link")),
        }
        if object.contains_key("caption") && !captioned {
            return Err(format!("{kind} takes no caption"));
        }
        if object.contains_key("filename") && kind != "document" {
            return Err(format!("{kind} takes no filename"));
        }
        if let Some(voice) = object.get("voice")
            && (kind != "audio" || !voice.is_boolean())
        {
            return Err(format!("{kind}.voice is not allowed here"));
        }
    } else if ![
        "location",
        "reaction",
        "contacts",
        "interactive",
        "template",
    ]
    .contains(&kind)
    {
        return Err(format!("type {kind:?} is not a message type"));
    }
    if !body["context"].is_null() && body["context"]["message_id"].as_str().is_none() {
        return Err("context.message_id is missing".into());
    }
    Ok(())
}

/// The answer to an accepted message.
pub fn accepted(to: &str, wamid: &str) -> Reply {
    Reply::ok(json!({
        "messaging_product": "whatsapp",
        "contacts": [{"input": to, "wa_id": to}],
        "messages": [{"id": wamid}]
    }))
}

/// The id Graph gives the `n`th request's message.
pub fn wamid(n: usize) -> String {
    format!("wamid.HBgLMzQ2MDAxMTEyMjIVAgARGBI{n:06}")
}

/// A media file the emulators serve: its MIME type and bytes.
#[derive(Debug, Clone)]
pub struct MediaFile {
    pub mime_type: String,
    pub bytes: Vec<u8>,
}

fn bad_request(why: &str) -> Reply {
    graph_error(
        StatusCode::BAD_REQUEST,
        100,
        &format!("(#100) Invalid parameter: {why}"),
    )
}

fn send_answer(request: &Recorded, n: usize) -> Reply {
    if request.content_type() != "application/json" {
        return bad_request("the body must be JSON");
    }
    let body = match request.json() {
        Ok(body) => body,
        Err(why) => return bad_request(&why),
    };
    match check_message(&body) {
        Ok(()) => accepted(body["to"].as_str().unwrap_or_default(), &wamid(n)),
        Err(why) => bad_request(&why),
    }
}

fn media_info(id: &str, file: &MediaFile, url: String) -> Reply {
    Reply::ok(json!({
        "messaging_product": "whatsapp",
        "url": url,
        "mime_type": file.mime_type,
        "sha256": "c0ffee",
        "file_size": file.bytes.len(),
        "id": id
    }))
}

fn download(media: &HashMap<String, MediaFile>, request: &Recorded) -> Reply {
    match request.query_param("mid").and_then(|mid| media.get(&mid)) {
        Some(file) => Reply::bytes(StatusCode::OK, &file.mime_type, file.bytes.clone()),
        None => graph_error(StatusCode::NOT_FOUND, 100, "media not found"),
    }
}

/// Meta's Graph API for one WhatsApp number.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    /// The access token it accepts.
    pub access_token: String,
    /// The number it sends from.
    pub phone_number_id: String,
    /// Inbound media by id.
    pub media: HashMap<String, MediaFile>,
}

impl Graph {
    /// The API of number `phone_number_id`, for `access_token`.
    pub fn new(access_token: &str, phone_number_id: &str) -> Self {
        Self {
            access_token: access_token.into(),
            phone_number_id: phone_number_id.into(),
            media: HashMap::new(),
        }
    }

    /// With a media file the contact sent, under `id`.
    pub fn with_media(mut self, id: &str, mime_type: &str, bytes: &[u8]) -> Self {
        self.media.insert(
            id.into(),
            MediaFile {
                mime_type: mime_type.into(),
                bytes: bytes.to_vec(),
            },
        );
        self
    }
}

impl Api for Graph {
    fn answer(&self, request: &Recorded, n: usize, base_url: &str) -> Reply {
        if bearer(request) != Some(self.access_token.as_str()) {
            return graph_error(
                StatusCode::UNAUTHORIZED,
                190,
                "Invalid OAuth access token - Cannot parse access token",
            );
        }
        let segments: Vec<&str> = request.path.trim_start_matches('/').split('/').collect();
        match (&request.method, segments.as_slice()) {
            (&Method::POST, [version, phone, "messages"]) if version.starts_with('v') => {
                if *phone != self.phone_number_id {
                    return graph_error(
                        StatusCode::BAD_REQUEST,
                        100,
                        "Unsupported post request. Object does not exist",
                    );
                }
                send_answer(request, n)
            }
            (&Method::GET, ["whatsapp_business", "attachments", ""]) => {
                download(&self.media, request)
            }
            (&Method::GET, [version, id])
                if version.starts_with('v') && *id == self.phone_number_id =>
            {
                Reply::ok(json!({
                    "display_phone_number": "+1 555-078-3881",
                    "verified_name": "Emulated Shop",
                    "id": self.phone_number_id
                }))
            }
            (&Method::GET, [version, id]) if version.starts_with('v') => {
                match self.media.get(*id) {
                    Some(file) => media_info(
                        id,
                        file,
                        format!("{base_url}/whatsapp_business/attachments/?mid={id}&ext=1&hash=x"),
                    ),
                    None => graph_error(StatusCode::NOT_FOUND, 100, "Unsupported get request"),
                }
            }
            _ => graph_error(StatusCode::BAD_REQUEST, 100, "Unknown path components"),
        }
    }
}

/// 360dialog's API for one number.
#[derive(Debug, Default)]
pub struct Dialog360 {
    /// The key it accepts as `D360-API-KEY`.
    pub api_key: String,
    /// Inbound media by id.
    pub media: HashMap<String, MediaFile>,
    /// The webhook registered last (`GET /v1/configs/webhook` answers it).
    pub webhook: Mutex<Option<Value>>,
}

impl Dialog360 {
    /// The API of the number whose key is `api_key`.
    pub fn new(api_key: &str) -> Self {
        Self {
            api_key: api_key.into(),
            media: HashMap::new(),
            webhook: Mutex::new(None),
        }
    }

    /// With a media file the contact sent, under `id`.
    pub fn with_media(mut self, id: &str, mime_type: &str, bytes: &[u8]) -> Self {
        self.media.insert(
            id.into(),
            MediaFile {
                mime_type: mime_type.into(),
                bytes: bytes.to_vec(),
            },
        );
        self
    }
}

/// Check a webhook registration body: an https `url` (no `_`, no port)
/// and string `headers`.
pub fn check_webhook_config(body: &Value) -> Result<(), String> {
    let url = body["url"].as_str().ok_or("url is missing")?;
    let parsed = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("url {url:?} is not https"))?;
    let host = parsed.split('/').next().unwrap_or_default();
    if host.contains(':') || host.contains('_') {
        return Err(format!("url {url:?} has a port or an underscore"));
    }
    if let Some(headers) = body.get("headers").filter(|h| !h.is_null()) {
        let headers = headers.as_object().ok_or("headers is not an object")?;
        if headers.values().any(|v| !v.is_string()) {
            return Err("headers values must be strings".into());
        }
    }
    Ok(())
}

impl Api for Dialog360 {
    fn answer(&self, request: &Recorded, n: usize, _: &str) -> Reply {
        if request.header("d360-api-key") != Some(self.api_key.as_str()) {
            return Reply::json(
                StatusCode::UNAUTHORIZED,
                json!({"meta": {"success": false, "http_code": 401, "developer_message": "Invalid api key"}}),
            );
        }
        let segments: Vec<&str> = request.path.trim_start_matches('/').split('/').collect();
        match (&request.method, segments.as_slice()) {
            (&Method::POST, ["messages"]) => send_answer(request, n),
            (&Method::POST, ["v1", "configs", "webhook"]) => {
                match request
                    .json()
                    .and_then(|b| check_webhook_config(&b).map(|()| b))
                {
                    Ok(body) => {
                        *self.webhook.lock().unwrap_or_else(PoisonError::into_inner) =
                            Some(body.clone());
                        Reply::ok(json!({ "url": body["url"] }))
                    }
                    Err(why) => Reply::json(
                        StatusCode::BAD_REQUEST,
                        json!({"meta": {"success": false, "http_code": 400, "developer_message": why}}),
                    ),
                }
            }
            (&Method::GET, ["v1", "configs", "webhook"]) => {
                let registered = self
                    .webhook
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                Reply::ok(
                    json!({ "url": registered.map(|b| b["url"].clone()).unwrap_or_default() }),
                )
            }
            (&Method::GET, ["whatsapp_business", "attachments", ""]) => {
                download(&self.media, request)
            }
            (&Method::GET, [id]) => match self.media.get(*id) {
                // 360dialog hands out Meta's URL; it serves its path itself.
                Some(file) => media_info(
                    id,
                    file,
                    format!(
                        "https://lookaside.fbsbx.com/whatsapp_business/attachments/?mid={id}&ext=1&hash=x"
                    ),
                ),
                None => graph_error(StatusCode::NOT_FOUND, 100, "media not found"),
            },
            _ => Reply::json(StatusCode::NOT_FOUND, json!({"meta": {"success": false}})),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Emulator;

    #[test]
    fn messages_are_checked_as_the_cloud_api_checks_them() {
        let ok = json!({"messaging_product":"whatsapp","recipient_type":"individual","to":"346","type":"audio","audio":{"link":"https://f/n.ogg","voice":true},"context":{"message_id":"wamid.1"}});
        assert_eq!(check_message(&ok), Ok(()));
        for (bad, needle) in [
            (
                json!({"to":"346","type":"text","text":{"body":"x"}}),
                "messaging_product",
            ),
            (
                json!({"messaging_product":"whatsapp","type":"text","text":{"body":"x"}}),
                "to",
            ),
            (
                json!({"messaging_product":"whatsapp","to":"346","type":"text"}),
                "text object",
            ),
            (
                json!({"messaging_product":"whatsapp","to":"346","type":"text","text":{"body":"x".repeat(4097)}}),
                "4096",
            ),
            (
                json!({"messaging_product":"whatsapp","to":"346","type":"audio","audio":{"link":"https://f","caption":"c"}}),
                "caption",
            ),
            (
                json!({"messaging_product":"whatsapp","to":"346","type":"image","image":{"link":"https://f","id":"1"}}),
                "exactly one",
            ),
            (
                json!({"messaging_product":"whatsapp","to":"346","type":"image","image":{"link":"https://f","voice":true}}),
                "voice",
            ),
            (
                json!({"messaging_product":"whatsapp","to":"346","type":"gif","gif":{}}),
                "not a message type",
            ),
        ] {
            let err = check_message(&bad).expect_err(needle);
            assert!(err.contains(needle), "{err} should mention {needle}");
        }
    }

    async fn raw(emulator: &Emulator, request: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(emulator.addr())
            .await
            .expect("connect");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut out = String::new();
        stream.read_to_string(&mut out).await.expect("read");
        out
    }

    fn post(path: &str, auth: &str, body: &str) -> String {
        format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n{auth}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    #[tokio::test]
    async fn graph_accepts_a_message_with_the_token_and_refuses_without() {
        let emulator = Emulator::start(Graph::new("tok", "123")).await;
        let body =
            r#"{"messaging_product":"whatsapp","to":"346","type":"text","text":{"body":"hi"}}"#;
        let ok = raw(
            &emulator,
            &post("/v21.0/123/messages", "authorization: Bearer tok", body),
        )
        .await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains(&wamid(1)), "{ok}");
        let bad = raw(
            &emulator,
            &post("/v21.0/123/messages", "authorization: Bearer nope", body),
        )
        .await;
        assert!(
            bad.starts_with("HTTP/1.1 401") && bad.contains("190"),
            "{bad}"
        );
        let other = raw(
            &emulator,
            &post("/v21.0/999/messages", "authorization: Bearer tok", body),
        )
        .await;
        assert!(other.starts_with("HTTP/1.1 400"), "{other}");
    }

    #[tokio::test]
    async fn graph_hands_out_media_urls_it_serves_with_the_token() {
        let emulator =
            Emulator::start(Graph::new("tok", "123").with_media("m1", "audio/ogg", b"OggS")).await;
        let info = raw(
            &emulator,
            "GET /v21.0/m1 HTTP/1.1\r\nhost: x\r\nconnection: close\r\nauthorization: Bearer tok\r\n\r\n",
        )
        .await;
        let url = format!(
            "{}/whatsapp_business/attachments/?mid=m1",
            emulator.base_url()
        );
        assert!(info.contains(&url), "{info}");
        let file = raw(
            &emulator,
            "GET /whatsapp_business/attachments/?mid=m1&ext=1 HTTP/1.1\r\nhost: x\r\nconnection: close\r\nauthorization: Bearer tok\r\n\r\n",
        )
        .await;
        assert!(file.ends_with("OggS"), "{file}");
        let anonymous = raw(
            &emulator,
            "GET /whatsapp_business/attachments/?mid=m1 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert!(anonymous.starts_with("HTTP/1.1 401"), "{anonymous}");
    }

    #[tokio::test]
    async fn dialog360_checks_its_key_and_webhook_registrations() {
        let emulator = Emulator::start(Dialog360::new("key")).await;
        let hook = r#"{"url":"https://inbox.example/webhooks/ch","headers":{"x-telenet-webhook-secret":"s"}}"#;
        let ok = raw(
            &emulator,
            &post("/v1/configs/webhook", "d360-api-key: key", hook),
        )
        .await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        let port = r#"{"url":"https://inbox.example:8443/webhooks/ch"}"#;
        let bad = raw(
            &emulator,
            &post("/v1/configs/webhook", "d360-api-key: key", port),
        )
        .await;
        assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
        let body =
            r#"{"messaging_product":"whatsapp","to":"346","type":"text","text":{"body":"hi"}}"#;
        let sent = raw(&emulator, &post("/messages", "d360-api-key: key", body)).await;
        assert!(sent.starts_with("HTTP/1.1 200"), "{sent}");
        let refused = raw(&emulator, &post("/messages", "d360-api-key: other", body)).await;
        assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    }
}
