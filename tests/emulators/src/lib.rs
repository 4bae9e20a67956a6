//! Local stand-ins for the messaging providers' HTTP APIs.
//!
//! No test reaches the internet: a channel's `api_base_url` points it at an
//! [`Emulator`] on a loopback port instead. An emulator serves one
//! provider's [`Api`]: it checks each request as the real API does (the
//! authentication header, the path, the content type, the body's shape),
//! answers as the provider documents (ids, errors, 429 with
//! `Retry-After`), and records everything it received, so a test can see
//! exactly what TELENET sent. A test can also script the next answers
//! ([`Emulator::answer_next`]: a 429, a 500) before the API is asked, and
//! serve files ([`Emulator::serve_file`]) for media downloads.
//!
//! Each provider's API is a module of this crate; they share this server.

pub mod line;
pub mod telegram;
pub mod viber;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

pub mod meta_messaging;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, StatusCode};

pub mod whatsapp;

/// One request an emulator received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    /// The path, without the query.
    pub path: String,
    /// The query string, without `?` (empty when none).
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON, or why it is not.
    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| format!("the body is not JSON: {e}"))
    }

    /// The `Content-Type`'s essence (`application/json`), lowercase.
    pub fn content_type(&self) -> String {
        self.header("content-type")
            .and_then(|v| v.split(';').next())
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    }

    /// A query parameter's first value.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then(|| v.to_owned())
        })
    }
}

/// An answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: Vec<(String, String)>,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Reply {
    /// 200 with a JSON body.
    pub fn ok(body: serde_json::Value) -> Self {
        Self::json(StatusCode::OK, body)
    }

    /// `status` with a JSON body.
    pub fn json(status: StatusCode, body: serde_json::Value) -> Self {
        Self {
            status,
            headers: Vec::new(),
            content_type: "application/json".into(),
            body: body.to_string().into_bytes(),
        }
    }

    /// `status` with raw bytes of `content_type`.
    pub fn bytes(status: StatusCode, content_type: &str, body: Vec<u8>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            content_type: content_type.into(),
            body,
        }
    }

    /// With a header added.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body).into_response();
        let headers = response.headers_mut();
        if let Ok(v) = self.content_type.parse() {
            headers.insert(http::header::CONTENT_TYPE, v);
        }
        for (name, value) in self.headers {
            if let (Ok(n), Ok(v)) = (
                http::HeaderName::try_from(name.as_str()),
                http::HeaderValue::try_from(value.as_str()),
            ) {
                headers.append(n, v);
            }
        }
        response
    }
}

/// One provider's API, as its emulator serves it.
pub trait Api: Send + Sync + 'static {
    /// The answer to `request`, the `n`th (from 1) this emulator received;
    /// `base_url` is the emulator's own (for URLs it hands out).
    fn answer(&self, request: &Recorded, n: usize, base_url: &str) -> Reply;
}

impl<A: Api> Api for Arc<A> {
    fn answer(&self, request: &Recorded, n: usize, base_url: &str) -> Reply {
        (**self).answer(request, n, base_url)
    }
}

impl<F> Api for F
where
    F: Fn(&Recorded, usize, &str) -> Reply + Send + Sync + 'static,
{
    fn answer(&self, request: &Recorded, n: usize, base_url: &str) -> Reply {
        self(request, n, base_url)
    }
}

#[derive(Default)]
struct Shared {
    received: Vec<Recorded>,
    scripted: VecDeque<Reply>,
    files: HashMap<String, (String, Vec<u8>)>,
}

struct Inner {
    api: Box<dyn Api>,
    base_url: String,
    shared: Mutex<Shared>,
}

/// A running emulator; stops when dropped.
pub struct Emulator {
    inner: Arc<Inner>,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Emulator {
    /// Serve `api` on a free loopback port.
    pub async fn start(api: impl Api) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("emulator bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("emulator address: {e}"));
        let inner = Arc::new(Inner {
            api: Box::new(api),
            base_url: format!("http://{addr}"),
            shared: Mutex::new(Shared::default()),
        });
        let app = Router::new().fallback(receive).with_state(inner.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { inner, addr, task }
    }

    /// `http://127.0.0.1:<port>`: the channel's `api_base_url`.
    pub fn base_url(&self) -> String {
        self.inner.base_url.clone()
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.inner
            .shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Everything received so far, in order (file downloads included).
    pub fn received(&self) -> Vec<Recorded> {
        self.shared().received.clone()
    }

    /// The requests received on paths ending with `suffix`.
    pub fn received_at(&self, suffix: &str) -> Vec<Recorded> {
        self.received()
            .into_iter()
            .filter(|r| r.path.ends_with(suffix))
            .collect()
    }

    /// Forget what was received.
    pub fn clear(&self) {
        self.shared().received.clear();
    }

    /// Answer the next request with `reply`, before the API is asked (once
    /// per call; queued in order).
    pub fn answer_next(&self, reply: Reply) {
        self.shared().scripted.push_back(reply);
    }

    /// Serve `bytes` as `content_type` at `path` (a GET there answers
    /// them; the API is not asked).
    pub fn serve_file(&self, path: &str, content_type: &str, bytes: Vec<u8>) {
        self.shared()
            .files
            .insert(path.to_owned(), (content_type.to_owned(), bytes));
    }

    /// The bytes served at `path`, if any (for APIs that check downloads).
    pub fn file(&self, path: &str) -> Option<(String, Vec<u8>)> {
        self.shared().files.get(path).cloned()
    }
}

async fn receive(State(inner): State<Arc<Inner>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 64 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let recorded = Recorded {
        method: parts.method.clone(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        headers: parts.headers.clone(),
        body,
    };
    let (n, scripted, file) = {
        let mut shared = inner.shared.lock().unwrap_or_else(PoisonError::into_inner);
        shared.received.push(recorded.clone());
        let file = if recorded.method == Method::GET {
            shared.files.get(&recorded.path).cloned()
        } else {
            None
        };
        (shared.received.len(), shared.scripted.pop_front(), file)
    };
    if let Some(reply) = scripted {
        return reply.into_response();
    }
    if let Some((content_type, bytes)) = file {
        return Reply::bytes(StatusCode::OK, &content_type, bytes).into_response();
    }
    inner
        .api
        .answer(&recorded, n, &inner.base_url)
        .into_response()
}

/// A bearer token in `Authorization`, if the request has one.
pub fn bearer(request: &Recorded) -> Option<&str> {
    request
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_requests_and_answers_scripted_replies_first() {
        let emulator = Emulator::start(|r: &Recorded, n: usize, _: &str| {
            Reply::ok(serde_json::json!({ "n": n, "path": r.path }))
        })
        .await;
        emulator.answer_next(
            Reply::json(StatusCode::TOO_MANY_REQUESTS, serde_json::json!({}))
                .with_header("retry-after", "7"),
        );
        emulator.serve_file("/f/1", "audio/ogg", b"OggS".to_vec());
        let http = reqwest_free_get(&emulator, "/a?x=1").await;
        assert!(http.starts_with("HTTP/1.1 429"), "{http}");
        assert!(
            http.to_ascii_lowercase().contains("retry-after: 7"),
            "{http}"
        );
        let http = reqwest_free_get(&emulator, "/b").await;
        assert!(http.contains(r#""path":"/b""#), "{http}");
        let http = reqwest_free_get(&emulator, "/f/1").await;
        assert!(http.ends_with("OggS"), "{http}");
        let received = emulator.received();
        assert_eq!(received.len(), 3);
        assert_eq!(received[0].query_param("x").as_deref(), Some("1"));
    }

    /// A bare HTTP/1.1 GET (the crate needs no HTTP client).
    async fn reqwest_free_get(emulator: &Emulator, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(emulator.addr())
            .await
            .expect("connect");
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .expect("write");
        let mut out = String::new();
        stream.read_to_string(&mut out).await.expect("read");
        out
    }
}
