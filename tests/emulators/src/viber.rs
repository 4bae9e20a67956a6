//! The Viber REST bot API, as far as TELENET uses it: `set_webhook`,
//! `send_message` and `get_account_info`, each a POST authenticated by
//! `X-Viber-Auth-Token`.
//!
//! Viber answers HTTP 200 with a `status` (0 ok, 2 invalidAuthToken,
//! 3 badData, 12 tooManyRequests, …) and `status_message`. Message tokens
//! are 64-bit integers beyond 2^53, as Viber's are.
//!
//! `set_webhook`, as Viber does, first POSTs a signed `event: "webhook"`
//! callback to the URL and sets the webhook only if it is answered 200.
//! The callback is signed by a function the test gives (this crate does
//! not compute HMACs) and sent over a plain TCP connection, so only
//! `http://` URLs are called back; an `https://` URL is accepted without
//! the callback, and recorded as such ([`ViberApi::callbacks`]). The
//! emulator waits for the answer (blocking in place): tests whose webhook
//! is served by their own runtime use the multi-threaded one.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::Method;
use serde_json::{Value, json};

use crate::{Api, Recorded, Reply};

/// The longest text message.
pub const TEXT_LIMIT: usize = 7000;
/// The longest sender name.
pub const SENDER_NAME_CHARS: usize = 28;
/// The first message token the emulator issues (beyond 2^53).
pub const FIRST_TOKEN: u64 = 5_741_311_803_571_721_087;
const _: () = assert!(FIRST_TOKEN > 1 << 53, "tokens a double cannot hold");

/// Signs a callback body: the `X-Viber-Content-Signature` value.
pub type Signer = Arc<dyn Fn(&[u8]) -> String + Send + Sync>;

/// A `set_webhook` callback the emulator made (or skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callback {
    /// The URL called.
    pub url: String,
    /// The HTTP status it answered; `None` when not called (https) or
    /// when the connection failed.
    pub status: Option<u16>,
}

/// Viber's answer with a status other than 0.
pub fn status(code: i64, message: &str) -> Reply {
    Reply::ok(json!({ "status": code, "status_message": message }))
}

/// What Viber understood of a `send_message` request.
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    /// Its receiver.
    pub receiver: String,
    /// Its type (`text`, `picture`, `video`, `file`, …).
    pub kind: String,
    /// Its text (`text` messages, a picture's description).
    pub text: String,
    /// Its `media` URL, for media types.
    pub media: Option<String>,
    /// The whole body.
    pub body: Value,
}

/// Check a `send_message` request as Viber does: the auth token, the
/// sender (name 1–28 characters), the receiver, the fields each type
/// requires. `Err` is Viber's status and message.
pub fn check_send(token: &str, request: &Recorded) -> Result<Sent, (i64, String)> {
    if request.header("x-viber-auth-token") != Some(token) {
        return Err((2, "invalidAuthToken".into()));
    }
    if request.method != Method::POST || request.path != "/pa/send_message" {
        return Err((3, format!("badData: {} {}", request.method, request.path)));
    }
    let body = request.json().map_err(|e| (3, format!("badData: {e}")))?;
    let str_at = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let receiver = str_at(&body, "receiver")
        .filter(|r| !r.is_empty())
        .ok_or((4, "missingData: receiver".to_owned()))?;
    let name = body
        .get("sender")
        .and_then(|s| str_at(s, "name"))
        .ok_or((4, "missingData: sender.name".to_owned()))?;
    let name_chars = name.chars().count();
    if name_chars == 0 || name_chars > SENDER_NAME_CHARS {
        return Err((3, "badData: sender.name must be 1-28 characters".into()));
    }
    let kind = str_at(&body, "type").ok_or((4, "missingData: type".to_owned()))?;
    let media = str_at(&body, "media");
    let need = |field: &str| -> Result<(), (i64, String)> {
        match body.get(field) {
            Some(Value::Null) | None => Err((4, format!("missingData: {field}"))),
            Some(_) => Ok(()),
        }
    };
    match kind.as_str() {
        "text" => {
            let text = str_at(&body, "text").unwrap_or_default();
            let chars = text.chars().count();
            if chars == 0 || chars > TEXT_LIMIT {
                return Err((3, format!("badData: text length {chars}")));
            }
        }
        "picture" => {
            need("media")?;
            need("text")?;
        }
        "video" => {
            need("media")?;
            need("size")?;
        }
        "file" => {
            need("media")?;
            need("size")?;
            need("file_name")?;
        }
        "url" => need("media")?,
        "sticker" => need("sticker_id")?,
        "location" => need("location")?,
        "contact" => need("contact")?,
        other => return Err((3, format!("badData: type {other:?}"))),
    }
    Ok(Sent {
        receiver,
        text: str_at(&body, "text").unwrap_or_default(),
        kind,
        media,
        body,
    })
}

/// The emulated Viber API of one bot. Clones share their state: keep one
/// to look at what the emulator did.
#[derive(Clone)]
pub struct ViberApi {
    token: String,
    signer: Signer,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    next_token: u64,
    webhook: Option<String>,
    callbacks: Vec<Callback>,
}

impl ViberApi {
    /// The API of a bot whose auth token is `token`; `signer` signs the
    /// callbacks it makes (hex HMAC-SHA256 of the body under the token).
    pub fn new(token: &str, signer: impl Fn(&[u8]) -> String + Send + Sync + 'static) -> Self {
        Self {
            token: token.to_owned(),
            signer: Arc::new(signer),
            state: Arc::new(Mutex::new(State {
                next_token: FIRST_TOKEN,
                ..State::default()
            })),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The callbacks `set_webhook` made, in order.
    pub fn callbacks(&self) -> Vec<Callback> {
        self.state().callbacks.clone()
    }

    /// The webhook URL set, if any.
    pub fn webhook(&self) -> Option<String> {
        self.state().webhook.clone()
    }

    fn set_webhook(&self, request: &Recorded) -> Reply {
        let Ok(body) = request.json() else {
            return status(3, "badData");
        };
        let Some(url) = body.get("url").and_then(Value::as_str).map(str::to_owned) else {
            return status(4, "missingData: url");
        };
        if url.is_empty() {
            // An empty URL removes the webhook.
            self.state().webhook = None;
            return status(0, "ok");
        }
        let token = self.state().next_token;
        let callback = json!({
            "event": "webhook",
            "timestamp": 1_457_764_197_627_u64,
            "chat_hostname": "SN-CHAT-05_",
            "message_token": token,
        })
        .to_string();
        let signature = (self.signer)(callback.as_bytes());
        let answered = if url.starts_with("http://") {
            let target = url.clone();
            let call = move || post(&target, &callback, &signature);
            // The webhook may be served by this very runtime: the worker
            // blocked here hands its other tasks over first.
            match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
                Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(call),
                _ => std::thread::spawn(call).join().ok().flatten(),
            }
        } else {
            None
        };
        self.state().callbacks.push(Callback {
            url: url.clone(),
            status: answered,
        });
        match answered {
            Some(200) => {}
            None if !url.starts_with("http://") => {}
            other => {
                return status(
                    1,
                    &format!("invalidUrl: the webhook answered {other:?}, not 200"),
                );
            }
        }
        self.state().webhook = Some(url);
        let events = body.get("event_types").cloned().unwrap_or_else(|| {
            json!([
                "delivered",
                "seen",
                "failed",
                "subscribed",
                "unsubscribed",
                "conversation_started"
            ])
        });
        Reply::ok(json!({ "status": 0, "status_message": "ok", "event_types": events }))
    }
}

/// POST `body` to an `http://host:port/path` URL with the signature
/// header; the answer's status code.
fn post(url: &str, body: &str, signature: &str) -> Option<u16> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut stream = TcpStream::connect(authority).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: {authority}\r\nconnection: close\r\ncontent-type: application/json\r\nx-viber-content-signature: {signature}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.split_whitespace().nth(1)?.parse().ok()
}

impl Api for ViberApi {
    fn answer(&self, request: &Recorded, _: usize, _: &str) -> Reply {
        if request.header("x-viber-auth-token") != Some(self.token.as_str()) {
            return status(2, "invalidAuthToken");
        }
        match (&request.method, request.path.as_str()) {
            (&Method::POST, "/pa/set_webhook") => self.set_webhook(request),
            (&Method::POST, "/pa/send_message") => match check_send(&self.token, request) {
                Ok(_) => {
                    let mut state = self.state();
                    let token = state.next_token;
                    state.next_token += 1;
                    // Written as a JSON integer, as Viber writes it.
                    Reply::ok(json!({
                        "status": 0,
                        "status_message": "ok",
                        "message_token": token,
                        "chat_hostname": "SN-CHAT-05_",
                        "billing_status": 1,
                    }))
                }
                Err((code, message)) => status(code, &message),
            },
            (&Method::POST, "/pa/get_account_info") => Reply::ok(json!({
                "status": 0,
                "status_message": "ok",
                "id": "pa:75346594275468546724",
                "name": "Example shop",
                "uri": "exampleshop",
                "icon": "https://example.com/icon.png",
                "category": "Business",
                "subscribers_count": 35,
                "webhook": self.webhook(),
                "event_types": ["delivered", "seen", "failed", "subscribed", "unsubscribed", "conversation_started"],
                "members": [],
            })),
            _ => status(3, "badData: no such endpoint"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Emulator;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn post_json(emulator: &Emulator, path: &str, token: &str, body: &str) -> Value {
        let mut stream = tokio::net::TcpStream::connect(emulator.addr())
            .await
            .expect("connect");
        let request = format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\nx-viber-auth-token: {token}\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut out = String::new();
        stream.read_to_string(&mut out).await.expect("read");
        let json = out.split("\r\n\r\n").nth(1).expect("a body");
        serde_json::from_str(json).expect("json")
    }

    fn api() -> ViberApi {
        ViberApi::new("tok", |body: &[u8]| format!("signed-{}", body.len()))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn messages_get_tokens_beyond_two_to_the_53() {
        let emulator = Emulator::start(api()).await;
        let answer = post_json(
            &emulator,
            "/pa/send_message",
            "tok",
            r#"{"receiver":"u1","type":"text","text":"hi","sender":{"name":"Shop"}}"#,
        )
        .await;
        assert_eq!(answer["status"], 0);
        assert_eq!(answer["message_token"].as_u64(), Some(FIRST_TOKEN));
        for (token, body, code) in [
            ("bad", r#"{}"#, 2),
            (
                "tok",
                r#"{"receiver":"u1","type":"text","text":"hi","sender":{"name":"012345678901234567890123456789"}}"#,
                3,
            ),
            (
                "tok",
                r#"{"receiver":"u1","type":"file","media":"https://f/x","sender":{"name":"S"}}"#,
                4,
            ),
            (
                "tok",
                r#"{"type":"text","text":"hi","sender":{"name":"S"}}"#,
                4,
            ),
        ] {
            let answer = post_json(&emulator, "/pa/send_message", token, body).await;
            assert_eq!(answer["status"], code, "{body}: {answer}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn set_webhook_calls_the_url_back_before_answering() {
        // A webhook that answers 200 and keeps what it received.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!(
            "http://{}/webhooks/ch-1",
            listener.local_addr().expect("addr")
        );
        let received = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut buf = vec![0u8; 4096];
            let n = socket.read(&mut buf).await.expect("read");
            socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await
                .expect("write");
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        let api = api();
        let emulator = Emulator::start(api.clone()).await;
        let answer = post_json(
            &emulator,
            "/pa/set_webhook",
            "tok",
            &format!(r#"{{"url":"{url}","event_types":["seen"]}}"#),
        )
        .await;
        assert_eq!(answer["status"], 0, "{answer}");
        let request = received.await.expect("the callback");
        assert!(
            request.starts_with("POST /webhooks/ch-1 HTTP/1.1"),
            "{request}"
        );
        assert!(request.contains(r#""event":"webhook""#), "{request}");
        assert!(
            request.contains("x-viber-content-signature: signed-"),
            "{request}"
        );
        assert_eq!(api.webhook(), Some(url.clone()));
        assert_eq!(api.callbacks()[0].status, Some(200));

        // A URL nobody answers is refused.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let dead = format!("http://{}/w", closed.local_addr().expect("addr"));
        drop(closed);
        let answer = post_json(
            &emulator,
            "/pa/set_webhook",
            "tok",
            &format!(r#"{{"url":"{dead}"}}"#),
        )
        .await;
        assert_eq!(answer["status"], 1, "{answer}");
    }
}
