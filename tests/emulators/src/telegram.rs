//! The Telegram Bot API (core.telegram.org/bots/api), as far as TELENET
//! uses it.
//!
//! Every method is `/bot<token>/<method>`, called with GET or POST, its
//! parameters in the query string, a JSON body, a URL-encoded form or a
//! `multipart/form-data` body (the only way to upload a file). Answers are
//! `{"ok":true,"result":…}` or `{"ok":false,"error_code":N,"description":"…"}`
//! (429s add `"parameters":{"retry_after":N}`). Files are downloaded from
//! `/file/bot<token>/<file_path>`, the path `getFile` gives.
//!
//! [`TelegramApi`] checks the token, each method's required parameters and
//! their limits (text 4096 UTF-16 units, caption 1024), answers with the
//! sent message (`message_id` 1, 2, … in the order sent), keeps the
//! webhook `setWebhook` sets for `getWebhookInfo`, and serves the files it
//! is given. Stricter than Telegram in one respect: an uploaded voice note
//! must be Ogg (its bytes start with `OggS`).

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, PoisonError};

use http::StatusCode;
use serde_json::{Value, json};

use crate::{Api, Recorded, Reply};

/// A bot token of the documented shape, for tests.
pub const BOT_TOKEN: &str = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0";
/// The username `getMe` answers with.
pub const BOT_USERNAME: &str = "telenet_test_bot";
/// The `date` of the messages it sends (unix seconds).
pub const DATE: i64 = 1_700_000_000;

/// The longest text of `sendMessage`, in UTF-16 code units.
pub const TEXT_LIMIT: usize = 4096;
/// The longest caption, in UTF-16 code units.
pub const CAPTION_LIMIT: usize = 1024;
/// The largest file a bot may download (`getFile` refuses larger ones).
pub const DOWNLOAD_LIMIT: u64 = 20 * 1024 * 1024;

/// The methods that send a file, with the parameter naming it.
pub const FILE_METHODS: [(&str, &str); 6] = [
    ("sendPhoto", "photo"),
    ("sendDocument", "document"),
    ("sendVideo", "video"),
    ("sendAudio", "audio"),
    ("sendVoice", "voice"),
    ("sendSticker", "sticker"),
];

/// A file the emulator serves.
#[derive(Debug, Clone)]
pub struct File {
    pub file_id: String,
    pub file_path: String,
    pub bytes: Vec<u8>,
    /// The size `getFile` states (the bytes' length unless set).
    pub file_size: u64,
}

#[derive(Debug, Default)]
struct Webhook {
    url: String,
    secret_token: String,
    allowed_updates: Vec<String>,
}

#[derive(Debug, Default)]
struct State {
    webhook: Webhook,
    last_error_message: String,
    files: Vec<File>,
    blocked: HashSet<String>,
    unknown: HashSet<String>,
}

/// The Bot API of one bot.
#[derive(Debug)]
pub struct TelegramApi {
    token: String,
    state: Mutex<State>,
    /// The id of the last message sent.
    last_message_id: AtomicI64,
}

/// A file uploaded in a multipart body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    /// The form field.
    pub name: String,
    pub file_name: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// A method call, its parameters read from wherever they were sent.
#[derive(Debug, Clone, Default)]
pub struct Call {
    /// `sendMessage`, `getFile`, …
    pub method: String,
    /// Parameters: JSON values as sent in JSON, strings from forms and
    /// queries.
    pub params: BTreeMap<String, Value>,
    /// Files uploaded in a multipart body.
    pub uploads: Vec<Upload>,
}

impl Call {
    /// A parameter as text (a number as its digits).
    pub fn text(&self, name: &str) -> Option<String> {
        match self.params.get(name)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// A parameter that is a JSON object or array: as sent in a JSON body,
    /// or serialised in a form field (as Telegram takes them).
    pub fn json(&self, name: &str) -> Option<Value> {
        match self.params.get(name)? {
            Value::String(s) => serde_json::from_str(s).ok(),
            other => Some(other.clone()),
        }
    }

    /// The upload in the form field `name`.
    pub fn upload(&self, name: &str) -> Option<&Upload> {
        self.uploads.iter().find(|u| u.name == name)
    }
}

/// What a sending call carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sent {
    pub method: String,
    /// `chat_id`, as text.
    pub chat_id: String,
    /// The text, or the caption of a file.
    pub text: String,
    /// The file's URL (or file id), when given by reference.
    pub file_url: Option<String>,
    /// The file, when uploaded.
    pub upload: Option<Upload>,
    /// `duration` (seconds), when given.
    pub duration: Option<i64>,
    /// `reply_parameters.message_id`, when given.
    pub reply_to: Option<i64>,
}

/// `{"ok":false,"error_code":status,"description":description}` with that
/// HTTP status.
pub fn error(status: u16, description: &str) -> Reply {
    let status_code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    Reply::json(
        status_code,
        json!({ "ok": false, "error_code": status, "description": description }),
    )
}

/// Telegram's flood-control answer: 429 with `parameters.retry_after`.
pub fn too_many_requests(retry_after: u64) -> Reply {
    Reply::json(
        StatusCode::TOO_MANY_REQUESTS,
        json!({
            "ok": false,
            "error_code": 429,
            "description": format!("Too Many Requests: retry after {retry_after}"),
            "parameters": { "retry_after": retry_after },
        }),
    )
}

/// `{"ok":true,"result":result}`.
pub fn ok(result: Value) -> Reply {
    Reply::ok(json!({ "ok": true, "result": result }))
}

fn unauthorized() -> Reply {
    error(401, "Unauthorized")
}

fn not_found() -> Reply {
    error(404, "Not Found")
}

fn bad_request(what: &str) -> Reply {
    error(400, &format!("Bad Request: {what}"))
}

/// The method of `request` if it is `/bot<token>/<method>` for `token`; the
/// answer Telegram gives otherwise (401 for another token).
pub fn method_of<'a>(token: &str, request: &'a Recorded) -> Result<&'a str, Reply> {
    let rest = request.path.strip_prefix("/bot").ok_or_else(not_found)?;
    let (given, method) = rest.split_once('/').ok_or_else(not_found)?;
    if given != token {
        return Err(unauthorized());
    }
    if method.is_empty() || method.contains('/') {
        return Err(not_found());
    }
    Ok(method)
}

/// Read a call to `/bot<token>/<method>`: the token checked, parameters
/// from the query and the body (JSON, URL-encoded or multipart).
pub fn read_call(token: &str, request: &Recorded) -> Result<Call, Reply> {
    let method = method_of(token, request)?.to_owned();
    let mut call = Call {
        method,
        ..Call::default()
    };
    for (name, value) in form_pairs(&request.query) {
        call.params.insert(name, Value::String(value));
    }
    if request.body.is_empty() {
        return Ok(call);
    }
    match request.content_type().as_str() {
        "application/json" => {
            let Value::Object(map) = request
                .json()
                .map_err(|_| bad_request("can't parse JSON"))?
            else {
                return Err(bad_request("JSON body must be an object"));
            };
            call.params.extend(map);
        }
        "application/x-www-form-urlencoded" => {
            let text = String::from_utf8_lossy(&request.body);
            for (name, value) in form_pairs(&text) {
                call.params.insert(name, Value::String(value));
            }
        }
        "multipart/form-data" => {
            let boundary = request
                .header("content-type")
                .and_then(boundary_of)
                .ok_or_else(|| bad_request("multipart body without a boundary"))?;
            for part in multipart_parts(&request.body, &boundary)
                .ok_or_else(|| bad_request("malformed multipart body"))?
            {
                match part.file_name {
                    Some(file_name) => call.uploads.push(Upload {
                        name: part.name,
                        file_name,
                        content_type: part.content_type,
                        bytes: part.bytes,
                    }),
                    None => {
                        let value = String::from_utf8_lossy(&part.bytes).into_owned();
                        call.params.insert(part.name, Value::String(value));
                    }
                }
            }
        }
        other => return Err(bad_request(&format!("unsupported content type {other:?}"))),
    }
    Ok(call)
}

/// Check a sending call (`sendMessage` or one of [`FILE_METHODS`]) as
/// Telegram does, and what it carries.
pub fn check_send(call: &Call) -> Result<Sent, Reply> {
    let chat_id = call
        .text("chat_id")
        .filter(|c| !c.trim().is_empty())
        .ok_or_else(|| bad_request("chat_id is empty"))?;
    let mut sent = Sent {
        method: call.method.clone(),
        chat_id,
        ..Sent::default()
    };
    if let Some(reply) = call.json("reply_parameters") {
        let id = reply
            .get("message_id")
            .and_then(value_as_i64)
            .ok_or_else(|| bad_request("field \"message_id\" must be an Integer"))?;
        sent.reply_to = Some(id);
    }
    if call.method == "sendMessage" {
        let text = call.text("text").unwrap_or_default();
        if text.trim().is_empty() {
            return Err(bad_request("message text is empty"));
        }
        if text.encode_utf16().count() > TEXT_LIMIT {
            return Err(bad_request("message is too long"));
        }
        sent.text = text;
        return Ok(sent);
    }
    let field = FILE_METHODS
        .iter()
        .find(|(m, _)| *m == call.method)
        .map(|(_, f)| *f)
        .ok_or_else(not_found)?;
    let caption = call.text("caption").unwrap_or_default();
    if caption.encode_utf16().count() > CAPTION_LIMIT {
        return Err(bad_request("message caption is too long"));
    }
    sent.text = caption;
    match (call.text(field), call.upload(field)) {
        (_, Some(upload)) => sent.upload = Some(upload.clone()),
        (Some(reference), None) => {
            if let Some(name) = reference.strip_prefix("attach://") {
                let upload = call
                    .upload(name)
                    .ok_or_else(|| bad_request(&format!("file {name} not found in the request")))?;
                sent.upload = Some(upload.clone());
            } else if reference.trim().is_empty() {
                return Err(bad_request(&format!("there is no {field} in the request")));
            } else {
                sent.file_url = Some(reference);
            }
        }
        (None, None) => return Err(bad_request(&format!("there is no {field} in the request"))),
    }
    let not_ogg = sent
        .upload
        .as_ref()
        .is_some_and(|u| !u.bytes.starts_with(b"OggS"));
    if call.method == "sendVoice" && not_ogg {
        return Err(bad_request("the voice note is not an Ogg file"));
    }
    if let Some(duration) = call.params.get("duration") {
        let seconds = value_as_i64(duration)
            .filter(|d| *d >= 0)
            .ok_or_else(|| bad_request("field \"duration\" must be an Integer"))?;
        sent.duration = Some(seconds);
    }
    Ok(sent)
}

fn value_as_i64(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The `Message` Telegram answers a send with (`message_id` = `id`).
pub fn sent_message(sent: &Sent, id: i64) -> Value {
    let chat_id = sent
        .chat_id
        .parse::<i64>()
        .map(Value::from)
        .unwrap_or_else(|_| Value::from(sent.chat_id.clone()));
    let mut message = json!({
        "message_id": id,
        "from": { "id": 123456789, "is_bot": true, "first_name": "TELENET", "username": BOT_USERNAME },
        "chat": { "id": chat_id, "type": "private" },
        "date": DATE,
    });
    if sent.method == "sendMessage" {
        message["text"] = Value::from(sent.text.clone());
    } else if !sent.text.is_empty() {
        message["caption"] = Value::from(sent.text.clone());
    }
    message
}

impl TelegramApi {
    /// The API of the bot with `token`.
    pub fn new(token: &str) -> Self {
        Self {
            token: token.to_owned(),
            state: Mutex::default(),
            last_message_id: AtomicI64::new(0),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// With a file `getFile` knows as `file_id`, served at `file_path`.
    pub fn with_file(self, file_id: &str, file_path: &str, bytes: Vec<u8>) -> Self {
        self.state().files.push(File {
            file_id: file_id.into(),
            file_path: file_path.into(),
            file_size: bytes.len() as u64,
            bytes,
        });
        self
    }

    /// With a file `getFile` states as `file_size` bytes (over 20 MB it
    /// refuses it, as Telegram does).
    pub fn with_large_file(self, file_id: &str, file_size: u64) -> Self {
        self.state().files.push(File {
            file_id: file_id.into(),
            file_path: format!("documents/{file_id}.bin"),
            bytes: Vec::new(),
            file_size,
        });
        self
    }

    /// A chat whose user blocked the bot (403).
    pub fn blocked_by(self, chat_id: &str) -> Self {
        self.state().blocked.insert(chat_id.into());
        self
    }

    /// A chat the bot does not know (400 chat not found).
    pub fn without_chat(self, chat_id: &str) -> Self {
        self.state().unknown.insert(chat_id.into());
        self
    }

    /// With the last delivery error `getWebhookInfo` reports.
    pub fn with_webhook_error(self, message: &str) -> Self {
        self.state().last_error_message = message.into();
        self
    }

    /// The webhook URL and secret token `setWebhook` set.
    pub fn webhook(&self) -> (String, String) {
        let state = self.state();
        (
            state.webhook.url.clone(),
            state.webhook.secret_token.clone(),
        )
    }

    fn bot_id(&self) -> i64 {
        self.token
            .split(':')
            .next()
            .and_then(|id| id.parse().ok())
            .unwrap_or_default()
    }

    fn download(&self, request: &Recorded) -> Reply {
        let path = request
            .path
            .strip_prefix("/file/bot")
            .and_then(|rest| rest.split_once('/'));
        let Some((token, file_path)) = path else {
            return not_found();
        };
        if token != self.token {
            return unauthorized();
        }
        match self.state().files.iter().find(|f| f.file_path == file_path) {
            Some(file) => Reply::bytes(
                StatusCode::OK,
                "application/octet-stream",
                file.bytes.clone(),
            ),
            None => not_found(),
        }
    }

    fn set_webhook(&self, call: &Call) -> Reply {
        let url = call.text("url").unwrap_or_default();
        if !url.is_empty() {
            let Some(rest) = url.strip_prefix("https://") else {
                return bad_request("bad webhook: HTTPS url must be provided for webhook");
            };
            let authority = rest.split('/').next().unwrap_or_default();
            let port = authority
                .rsplit_once(':')
                .map(|(_, p)| p)
                .filter(|p| p.chars().all(|c| c.is_ascii_digit()));
            if port.is_some_and(|p| !["443", "80", "88", "8443"].contains(&p)) {
                return bad_request(
                    "bad webhook: Webhook can be set up only on ports 80, 88, 443 or 8443",
                );
            }
        }
        let secret_token = call.text("secret_token").unwrap_or_default();
        if secret_token.len() > 256
            || !secret_token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return bad_request("secret token contains unallowed characters");
        }
        let allowed_updates = match call.json("allowed_updates") {
            None => Vec::new(),
            Some(Value::Array(items)) => {
                let names: Vec<String> = items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect();
                if names.len() != items.len() {
                    return bad_request("allowed_updates must be an Array of String");
                }
                names
            }
            Some(_) => return bad_request("allowed_updates must be an Array of String"),
        };
        let bad_drop = call.params.get("drop_pending_updates").is_some_and(|d| {
            !matches!(d, Value::Bool(_)) && !matches!(d.as_str(), Some("true" | "false"))
        });
        if bad_drop {
            return bad_request("drop_pending_updates must be a Boolean");
        }
        let mut state = self.state();
        let description = if url.is_empty() {
            "Webhook was deleted"
        } else {
            "Webhook was set"
        };
        state.webhook = Webhook {
            url,
            secret_token,
            allowed_updates,
        };
        Reply::ok(json!({ "ok": true, "result": true, "description": description }))
    }

    fn webhook_info(&self) -> Reply {
        let state = self.state();
        let mut info = json!({
            "url": state.webhook.url,
            "has_custom_certificate": false,
            "pending_update_count": 0,
            "max_connections": 40,
        });
        if !state.webhook.allowed_updates.is_empty() {
            info["allowed_updates"] = json!(state.webhook.allowed_updates);
        }
        if !state.last_error_message.is_empty() {
            info["last_error_date"] = json!(DATE);
            info["last_error_message"] = json!(state.last_error_message);
        }
        ok(info)
    }

    fn get_file(&self, call: &Call) -> Reply {
        let Some(file_id) = call.text("file_id").filter(|f| !f.is_empty()) else {
            return bad_request("file_id is empty");
        };
        let state = self.state();
        let Some(file) = state.files.iter().find(|f| f.file_id == file_id) else {
            return bad_request("invalid file_id");
        };
        if file.file_size > DOWNLOAD_LIMIT {
            return bad_request("file is too big");
        }
        ok(json!({
            "file_id": file.file_id,
            "file_unique_id": format!("u-{}", file.file_id),
            "file_size": file.file_size,
            "file_path": file.file_path,
        }))
    }

    fn send(&self, call: &Call) -> Reply {
        let sent = match check_send(call) {
            Ok(sent) => sent,
            Err(reply) => return reply,
        };
        {
            let state = self.state();
            if state.blocked.contains(&sent.chat_id) {
                return error(403, "Forbidden: bot was blocked by the user");
            }
            if state.unknown.contains(&sent.chat_id) {
                return bad_request("chat not found");
            }
        }
        let id = self.last_message_id.fetch_add(1, Ordering::SeqCst) + 1;
        ok(sent_message(&sent, id))
    }
}

impl Api for TelegramApi {
    fn answer(&self, request: &Recorded, _: usize, _: &str) -> Reply {
        if request.path.starts_with("/file/") {
            return self.download(request);
        }
        let call = match read_call(&self.token, request) {
            Ok(call) => call,
            Err(reply) => return reply,
        };
        match call.method.as_str() {
            "getMe" => ok(json!({
                "id": self.bot_id(),
                "is_bot": true,
                "first_name": "TELENET test bot",
                "username": BOT_USERNAME,
                "can_join_groups": true,
                "can_read_all_group_messages": false,
                "supports_inline_queries": false,
            })),
            "setWebhook" => self.set_webhook(&call),
            "getWebhookInfo" => self.webhook_info(),
            "getFile" => self.get_file(&call),
            "sendMessage" => self.send(&call),
            m if FILE_METHODS.iter().any(|(f, _)| *f == m) => self.send(&call),
            _ => not_found(),
        }
    }
}

/// `name=value` pairs of a query or form, percent-decoded.
fn form_pairs(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn boundary_of(content_type: &str) -> Option<String> {
    content_type.split(';').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.eq_ignore_ascii_case("boundary")
            .then(|| v.trim_matches('"').to_owned())
    })
}

struct Part {
    name: String,
    file_name: Option<String>,
    content_type: String,
    bytes: Vec<u8>,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The parts of a `multipart/form-data` body; `None` when malformed.
fn multipart_parts(body: &[u8], boundary: &str) -> Option<Vec<Part>> {
    let delimiter = format!("--{boundary}").into_bytes();
    let mut rest = &body[find(body, &delimiter)? + delimiter.len()..];
    let mut parts = Vec::new();
    loop {
        if rest.starts_with(b"--") {
            return Some(parts);
        }
        rest = rest.strip_prefix(b"\r\n")?;
        let head_end = find(rest, b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&rest[..head_end]).into_owned();
        let content = &rest[head_end + 4..];
        let mut next = b"\r\n".to_vec();
        next.extend_from_slice(&delimiter);
        let end = find(content, &next)?;
        let bytes = content[..end].to_vec();
        rest = &content[end + next.len()..];
        let mut name = None;
        let mut file_name = None;
        let mut content_type = String::new();
        for line in head.split("\r\n") {
            let (header, value) = line.split_once(':')?;
            let header = header.trim().to_ascii_lowercase();
            if header == "content-disposition" {
                for param in value.split(';').skip(1) {
                    let Some((k, v)) = param.trim().split_once('=') else {
                        continue;
                    };
                    let v = v.trim_matches('"').to_owned();
                    match k.trim() {
                        "name" => name = Some(v),
                        "filename" => file_name = Some(v),
                        _ => {}
                    }
                }
            } else if header == "content-type" {
                content_type = value.trim().to_owned();
            }
        }
        parts.push(Part {
            name: name?,
            file_name,
            content_type,
            bytes,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Emulator;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// POST `body` of `content_type` to `path`; the status and body.
    async fn post(
        emulator: &Emulator,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> (u16, Value) {
        let mut stream = tokio::net::TcpStream::connect(emulator.addr())
            .await
            .expect("connect");
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.expect("write");
        stream.write_all(body).await.expect("write");
        let mut out = Vec::new();
        stream.read_to_end(&mut out).await.expect("read");
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text[9..12].parse().expect("status");
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .unwrap_or_default();
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }

    fn at(method: &str) -> String {
        format!("/bot{BOT_TOKEN}/{method}")
    }

    #[tokio::test]
    async fn another_token_is_unauthorized() {
        let emulator = Emulator::start(TelegramApi::new(BOT_TOKEN)).await;
        let (status, body) = post(
            &emulator,
            "/bot123456789:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA/getMe",
            "application/json",
            b"{}",
        )
        .await;
        assert_eq!(
            (status, &body["description"]),
            (401, &json!("Unauthorized"))
        );
        let (status, body) = post(&emulator, &at("getMe"), "application/json", b"{}").await;
        assert_eq!(status, 200);
        assert_eq!(body["result"]["username"], BOT_USERNAME);
        assert_eq!(body["result"]["id"], 123456789);
    }

    #[tokio::test]
    async fn set_webhook_keeps_the_url_for_get_webhook_info() {
        let emulator = Emulator::start(TelegramApi::new(BOT_TOKEN)).await;
        let (status, body) = post(
            &emulator,
            &at("setWebhook"),
            "application/json",
            br#"{"url":"http://inbox.example/webhooks/1","secret_token":"abc"}"#,
        )
        .await;
        assert_eq!(status, 400, "{body}");
        let (status, body) = post(
            &emulator,
            &at("setWebhook"),
            "application/json",
            br#"{"url":"https://inbox.example:8080/webhooks/1"}"#,
        )
        .await;
        assert_eq!(status, 400, "{body}");
        let (status, body) = post(
            &emulator,
            &at("setWebhook"),
            "application/json",
            br#"{"url":"https://inbox.example/webhooks/1","secret_token":"a-b_C9","allowed_updates":["message"],"drop_pending_updates":false}"#,
        )
        .await;
        assert_eq!((status, &body["result"]), (200, &json!(true)), "{body}");
        let (_, info) = post(&emulator, &at("getWebhookInfo"), "application/json", b"").await;
        assert_eq!(info["result"]["url"], "https://inbox.example/webhooks/1");
        assert_eq!(info["result"]["allowed_updates"], json!(["message"]));
    }

    #[tokio::test]
    async fn send_message_checks_chat_text_and_limits() {
        let api = TelegramApi::new(BOT_TOKEN)
            .blocked_by("42")
            .without_chat("43");
        let emulator = Emulator::start(api).await;
        let send = |body: String| {
            let emulator = &emulator;
            async move {
                post(
                    emulator,
                    &at("sendMessage"),
                    "application/json",
                    body.as_bytes(),
                )
                .await
            }
        };
        let (status, body) = send(
            json!({"chat_id": 7, "text": "hi", "reply_parameters": {"message_id": 3}}).to_string(),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["result"]["chat"]["id"], 7);
        assert_eq!(body["result"]["text"], "hi");
        let (status, body) = send(json!({"chat_id": "42", "text": "hi"}).to_string()).await;
        assert_eq!(
            (status, body["description"].as_str()),
            (403, Some("Forbidden: bot was blocked by the user"))
        );
        let (status, body) = send(json!({"chat_id": 43, "text": "hi"}).to_string()).await;
        assert_eq!(
            (status, body["description"].as_str()),
            (400, Some("Bad Request: chat not found"))
        );
        let (status, _) = send(json!({"chat_id": 7, "text": ""}).to_string()).await;
        assert_eq!(status, 400);
        let (status, _) = send(json!({"chat_id": 7, "text": "👋".repeat(2049)}).to_string()).await;
        assert_eq!(status, 400, "4098 UTF-16 units are too long");
        let (status, _) = send(json!({"chat_id": 7, "text": "👋".repeat(2048)}).to_string()).await;
        assert_eq!(status, 200, "4096 UTF-16 units fit");
    }

    #[tokio::test]
    async fn voice_uploads_must_be_ogg_multipart_parts() {
        let emulator = Emulator::start(TelegramApi::new(BOT_TOKEN)).await;
        let multipart = |bytes: &[u8]| {
            let mut body = b"--XyZ\r\ncontent-disposition: form-data; name=\"chat_id\"\r\n\r\n7\r\n--XyZ\r\ncontent-disposition: form-data; name=\"duration\"\r\n\r\n4\r\n--XyZ\r\ncontent-disposition: form-data; name=\"voice\"; filename=\"voice.ogg\"\r\ncontent-type: audio/ogg\r\n\r\n".to_vec();
            body.extend_from_slice(bytes);
            body.extend_from_slice(b"\r\n--XyZ--\r\n");
            body
        };
        let (status, body) = post(
            &emulator,
            &at("sendVoice"),
            "multipart/form-data; boundary=XyZ",
            &multipart(b"OggS\0\x02rest"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let received = emulator.received_at("/sendVoice");
        let call = read_call(BOT_TOKEN, &received[0]).expect("a call");
        let sent = check_send(&call).expect("a send");
        assert_eq!(sent.duration, Some(4));
        assert_eq!(
            sent.upload.map(|u| (u.file_name, u.bytes)),
            Some(("voice.ogg".to_owned(), b"OggS\0\x02rest".to_vec()))
        );
        let (status, _) = post(
            &emulator,
            &at("sendVoice"),
            "multipart/form-data; boundary=XyZ",
            &multipart(b"ID3 mp3"),
        )
        .await;
        assert_eq!(status, 400);
        let (status, body) = post(
            &emulator,
            &at("sendPhoto"),
            "application/json",
            json!({"chat_id": 7, "photo": "https://files.example/cat.png", "caption": "x".repeat(1025)}).to_string().as_bytes(),
        )
        .await;
        assert_eq!(
            (status, body["description"].as_str()),
            (400, Some("Bad Request: message caption is too long"))
        );
    }

    #[tokio::test]
    async fn get_file_names_a_path_served_with_the_token() {
        let api = TelegramApi::new(BOT_TOKEN)
            .with_file("VOICE1", "voice/file_1.oga", b"OggS voice".to_vec())
            .with_large_file("BIG", DOWNLOAD_LIMIT + 1);
        let emulator = Emulator::start(api).await;
        let (status, body) = post(
            &emulator,
            &format!("{}?file_id=VOICE1", at("getFile")),
            "application/json",
            b"",
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["result"]["file_path"], "voice/file_1.oga");
        assert_eq!(body["result"]["file_size"], 10);
        let (status, body) = post(
            &emulator,
            &at("getFile"),
            "application/json",
            br#"{"file_id":"BIG"}"#,
        )
        .await;
        assert_eq!(
            (status, body["description"].as_str()),
            (400, Some("Bad Request: file is too big"))
        );
        let api = TelegramApi::new(BOT_TOKEN).with_file("V", "voice/v.oga", b"OggS".to_vec());
        let request = Recorded {
            method: http::Method::GET,
            path: format!("/file/bot{BOT_TOKEN}/voice/v.oga"),
            query: String::new(),
            headers: http::HeaderMap::new(),
            body: Default::default(),
        };
        assert_eq!(api.answer(&request, 1, "").body, b"OggS");
        let wrong = Recorded {
            path: "/file/bot1:x/voice/v.oga".into(),
            ..request
        };
        assert_eq!(api.answer(&wrong, 2, "").status, StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn forms_and_queries_are_percent_decoded() {
        assert_eq!(
            form_pairs("a=1%2B2&b=x+y&c"),
            vec![
                ("a".to_owned(), "1+2".to_owned()),
                ("b".to_owned(), "x y".to_owned()),
                ("c".to_owned(), String::new())
            ]
        );
    }
}
