//! Helpers for the end-to-end tests and the benchmark: a signed webhook
//! sender, an outbound receiver that checks signatures like a real channel
//! would, a TCP proxy that can cut the broker off, and polling.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use telenet_signing::Secret;

pub mod flow;
pub mod infra;
pub mod tenancy;
pub mod world;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

/// POST a custom-channel webhook signed with `secret` (Standard Webhooks).
pub async fn send_webhook(
    http: &reqwest::Client,
    url: &str,
    secret: &str,
    webhook_id: &str,
    body: &serde_json::Value,
) -> reqwest::Response {
    send_raw(
        http,
        url,
        secret,
        webhook_id,
        telenet_signing::unix_now(),
        body.to_string().as_bytes(),
    )
    .await
}

/// POST raw bytes signed at `timestamp`.
pub async fn send_raw(
    http: &reqwest::Client,
    url: &str,
    secret: &str,
    webhook_id: &str,
    timestamp: i64,
    body: &[u8],
) -> reqwest::Response {
    let secret = match Secret::parse(secret) {
        Ok(s) => s,
        Err(e) => panic!("bad secret in test: {e}"),
    };
    let signature = secret.sign(webhook_id, timestamp, body);
    match http
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", webhook_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body.to_vec())
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => panic!("webhook request failed: {e}"),
    }
}

/// An inbound text message body of the custom channel.
pub fn inbound_text(external_id: &str, sender: &str, text: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "message.inbound",
        "message": {
            "external_id": external_id,
            "sender": {"external_id": sender, "display_name": "Ana"},
            "text": text,
        }
    })
}

/// Poll `check` until it returns `Some`, or panic after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// What the outbound receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub webhook_id: String,
    pub body: serde_json::Value,
    /// The W3C `traceparent` header, when the sender passed its trace on.
    pub traceparent: Option<String>,
}

/// A custom channel's receiving end: verifies the Standard Webhooks
/// signature and content type as a real receiver would, records the
/// message, and answers `{"external_id": "out-<n>"}`. It can be told to
/// fail the next requests with a status.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Received>>>,
    pub rejected: Arc<Mutex<Vec<String>>>,
    fail_next: Arc<Mutex<Vec<u16>>>,
    secret: Arc<Mutex<Option<Secret>>>,
}

impl Receiver {
    pub async fn start() -> Self {
        let listener = match TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("receiver bind: {e}"),
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => panic!("receiver addr: {e}"),
        };
        let me = Self {
            addr,
            received: Default::default(),
            rejected: Default::default(),
            fail_next: Default::default(),
            secret: Default::default(),
        };
        let state = me.clone();
        let app = axum::Router::new()
            .route("/outbound", axum::routing::post(receive))
            .with_state(state);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        me
    }

    pub fn url(&self) -> String {
        format!("http://{}/outbound", self.addr)
    }

    /// The channel secret to verify with (known once the channel exists).
    pub async fn set_secret(&self, secret: &str) {
        *self.secret.lock().await = Secret::parse(secret).ok();
    }

    /// Answer the next requests with these statuses, in order.
    pub async fn fail_next(&self, statuses: &[u16]) {
        self.fail_next.lock().await.extend_from_slice(statuses);
    }

    pub async fn messages(&self) -> Vec<Received> {
        self.received.lock().await.clone()
    }
}

async fn receive(
    axum::extract::State(r): axum::extract::State<Receiver>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> (axum::http::StatusCode, String) {
    use axum::http::StatusCode;
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    if h("content-type") != Some("application/json") {
        r.rejected.lock().await.push("content-type".into());
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, "json only".into());
    }
    let Some(secret) = r.secret.lock().await.clone() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "no secret yet".into());
    };
    if let Err(e) = secret.verify(
        h("webhook-id"),
        h("webhook-timestamp"),
        h("webhook-signature"),
        &body,
        telenet_signing::unix_now(),
    ) {
        r.rejected.lock().await.push(e.to_string());
        return (StatusCode::UNAUTHORIZED, e.to_string());
    }
    {
        let mut fail = r.fail_next.lock().await;
        if !fail.is_empty() {
            let status = fail.remove(0);
            return (
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                "planned failure".into(),
            );
        }
    }
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "bad json".into());
    };
    let mut received = r.received.lock().await;
    received.push(Received {
        webhook_id: h("webhook-id").unwrap_or_default().to_owned(),
        body: json,
        traceparent: h("traceparent").map(str::to_owned),
    });
    let n = received.len();
    (
        StatusCode::OK,
        serde_json::json!({"external_id": format!("out-{n}")}).to_string(),
    )
}

/// A TCP forwarder to `target` that can be cut (every connection closed and
/// new ones refused) and restored, to take a real broker away mid-test.
#[derive(Clone)]
pub struct Proxy {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    generation: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = match TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("proxy bind: {e}"),
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => panic!("proxy addr: {e}"),
        };
        let up = Arc::new(AtomicBool::new(true));
        let (tx, _) = tokio::sync::watch::channel(0u64);
        let generation = Arc::new(tx);
        let me = Self {
            addr,
            up: up.clone(),
            generation: generation.clone(),
        };
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let mut cut = generation.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        me
    }

    /// Close every forwarded connection and refuse new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Accept connections again.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}
