//! The steady load: contacts writing in through signed webhooks of a custom
//! channel (each retrying a refused webhook, as a provider does, before its
//! next message), an agent replying through the REST gateway, the agent's
//! heartbeats (presence, in Redis), and the channel's receiving end, which
//! records every reply it is sent. Everything that happens goes into the
//! [`Journal`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use telenet_signing::Secret;
use tokio_util::sync::CancellationToken;

use crate::lock;

/// A request the load made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Webhook,
    Reply,
    Heartbeat,
}

#[derive(Debug, Clone, Copy)]
pub struct Request {
    pub kind: Kind,
    /// When it was sent, in seconds since the run started: a request sent
    /// then succeeded (or failed) because of the state of the system then.
    pub at: f64,
    pub ok: bool,
    /// How long the answer took (seconds).
    pub took: f64,
}

/// A webhook that got a 2xx.
#[derive(Debug, Clone)]
pub struct AcceptedWebhook {
    pub contact: usize,
    pub seq: u64,
    pub external_id: String,
    /// When the request that got the 2xx was sent.
    pub sent_at: f64,
    /// When the 2xx came.
    pub at: f64,
}

/// A reply the gateway stored (201).
#[derive(Debug, Clone)]
pub struct AcceptedReply {
    pub n: u64,
    pub message_id: String,
    pub at: f64,
}

#[derive(Default)]
pub struct Record {
    pub requests: Vec<Request>,
    pub webhooks: Vec<AcceptedWebhook>,
    pub replies: Vec<AcceptedReply>,
}

/// Everything the load did, timed from the start of the run.
pub struct Journal {
    t0: Instant,
    wall0: SystemTime,
    record: Mutex<Record>,
}

impl Journal {
    pub fn new() -> Self {
        Self {
            t0: Instant::now(),
            wall0: SystemTime::now(),
            record: Mutex::new(Record::default()),
        }
    }

    /// Seconds since the run started.
    pub fn now(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    /// An instant of this process in the run's seconds.
    pub fn at(&self, instant: Instant) -> f64 {
        instant.saturating_duration_since(self.t0).as_secs_f64()
    }

    /// A wall-clock time (a service's timestamp; same machine, same clock)
    /// in the run's seconds.
    pub fn wall(&self, time: SystemTime) -> f64 {
        match time.duration_since(self.wall0) {
            Ok(d) => d.as_secs_f64(),
            Err(e) => -e.duration().as_secs_f64(),
        }
    }

    fn request(&self, kind: Kind, sent_at: f64, ok: bool) {
        let took = self.now() - sent_at;
        lock(&self.record).requests.push(Request {
            kind,
            at: sent_at,
            ok,
            took,
        });
    }

    /// A copy of everything so far.
    pub fn snapshot(&self) -> (Vec<Request>, Vec<AcceptedWebhook>, Vec<AcceptedReply>) {
        let r = lock(&self.record);
        (r.requests.clone(), r.webhooks.clone(), r.replies.clone())
    }
}

/// The REST gateway as the workspace's owner, and the channel's webhook URL.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub gateway: String,
    pub token: String,
}

impl Api {
    pub fn new(gateway: String, token: String) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self {
            http,
            gateway,
            token,
        })
    }

    /// One call; the status and the JSON answer, or the transport error.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), String> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.gateway))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(|e| e.to_string())?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    /// Every page of a listing (`items`), or the first error.
    pub async fn all_pages(&self, path: &str) -> Result<Vec<Value>, String> {
        let mut items = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let separator = if path.contains('?') { '&' } else { '?' };
            let page_path = match &token {
                Some(t) => format!("{path}{separator}page_size=200&page_token={t}"),
                None => format!("{path}{separator}page_size=200"),
            };
            let (status, page) = self.call(reqwest::Method::GET, &page_path, None).await?;
            if status != 200 {
                return Err(format!("GET {page_path}: {status} {page}"));
            }
            if let Some(page_items) = page["items"].as_array() {
                items.extend(page_items.iter().cloned());
            }
            match page["next_page_token"].as_str() {
                Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                _ => return Ok(items),
            }
        }
    }
}

/// The custom channel the contacts write in on.
#[derive(Clone)]
pub struct Channel {
    pub webhook_url: String,
    pub secret: String,
}

/// A contact of the load: its external ids are `c<contact>-<seq>`.
pub fn external_id(contact: usize, seq: u64) -> String {
    format!("c{contact}-{seq}")
}

/// The contact and sequence number of a message id of the load.
pub fn parse_external_id(id: &str) -> Option<(usize, u64)> {
    let (contact, seq) = id.strip_prefix('c')?.split_once('-')?;
    Some((contact.parse().ok()?, seq.parse().ok()?))
}

/// Contact `contact` writes one message every `every` (±20 %); a webhook
/// answered anything but 2xx, or not at all, is sent again (same id, same
/// body) after a short pause until it is accepted, as providers do.
pub async fn contact(
    journal: Arc<Journal>,
    http: reqwest::Client,
    channel: Channel,
    contact: usize,
    every: Duration,
    stop: CancellationToken,
) {
    let Ok(secret) = Secret::parse(&channel.secret) else {
        eprintln!("fault-suite: the channel's secret does not parse");
        return;
    };
    let sender = format!("+346000{contact:05}");
    let mut seq = 0u64;
    while !stop.is_cancelled() {
        seq += 1;
        let id = external_id(contact, seq);
        let body = json!({
            "type": "message.inbound",
            "message": {
                "external_id": id,
                "sender": {"external_id": sender, "display_name": format!("Contact {contact}")},
                "text": format!("message {seq} of contact {contact}"),
            }
        })
        .to_string();
        let webhook_id = format!("wh-{id}");
        loop {
            if stop.is_cancelled() {
                return;
            }
            let sent_at = journal.now();
            let timestamp = telenet_signing::unix_now();
            let signature = secret.sign(&webhook_id, timestamp, body.as_bytes());
            let answer = http
                .post(&channel.webhook_url)
                .header("content-type", "application/json")
                .header("webhook-id", &webhook_id)
                .header("webhook-timestamp", timestamp.to_string())
                .header("webhook-signature", signature)
                .body(body.clone())
                .send()
                .await;
            let ok = matches!(&answer, Ok(r) if r.status().is_success());
            journal.request(Kind::Webhook, sent_at, ok);
            if ok {
                let at = journal.now();
                lock(&journal.record).webhooks.push(AcceptedWebhook {
                    contact,
                    seq,
                    external_id: id.clone(),
                    sent_at,
                    at,
                });
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let jitter = 0.8 + fastrand::f64() * 0.4;
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every.mul_f64(jitter)) => {}
        }
    }
}

/// The agent: every `every`, a reply `r-<n>` (text and idempotency key) to
/// one of the open conversations, retried with the same key until the
/// gateway stores it (or 30 s pass).
pub async fn agent(journal: Arc<Journal>, api: Api, every: Duration, stop: CancellationToken) {
    let mut conversations: Vec<String> = Vec::new();
    let mut listed: Option<Instant> = None;
    let mut n = 0u64;
    while !stop.is_cancelled() {
        let stale = listed.is_none_or(|at| at.elapsed() > Duration::from_secs(5));
        if (conversations.is_empty() || stale)
            && let Ok((200, page)) = api
                .call(reqwest::Method::GET, "/v1/conversations?page_size=50", None)
                .await
        {
            conversations = page["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["id"].as_str().map(str::to_owned))
                .collect();
            listed = Some(Instant::now());
        }
        if conversations.is_empty() {
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        }
        n += 1;
        let key = format!("r-{n}");
        let conversation = &conversations[fastrand::usize(..conversations.len())];
        let path = format!("/v1/conversations/{conversation}/messages");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline && !stop.is_cancelled() {
            let sent_at = journal.now();
            let answer = api
                .call(
                    reqwest::Method::POST,
                    &path,
                    Some(json!({"text": key, "client_message_id": key})),
                )
                .await;
            let stored = match &answer {
                Ok((200 | 201, body)) => body["message"]["id"].as_str().map(str::to_owned),
                _ => None,
            };
            journal.request(Kind::Reply, sent_at, stored.is_some());
            if let Some(message_id) = stored {
                let at = journal.now();
                lock(&journal.record)
                    .replies
                    .push(AcceptedReply { n, message_id, at });
                break;
            }
            if let Ok((status, body)) = &answer
                && (400..500).contains(status)
                && *status != 408
                && *status != 429
            {
                eprintln!("fault-suite: reply {key} refused: {status} {body}");
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// The agent's heartbeat every half second (presence lives in Redis).
pub async fn heartbeats(journal: Arc<Journal>, api: Api, stop: CancellationToken) {
    while !stop.is_cancelled() {
        let sent_at = journal.now();
        let ok = matches!(
            api.call(reqwest::Method::POST, "/v1/me/heartbeat", None)
                .await,
            Ok((200..=299, _))
        );
        journal.request(Kind::Heartbeat, sent_at, ok);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// One POST the receiver got.
#[derive(Debug, Clone)]
pub struct Post {
    pub at: f64,
    /// The status it answered.
    pub status: u16,
}

#[derive(Default)]
struct ReceiverState {
    secret: Option<Secret>,
    /// By message id (the `webhook-id`).
    posts: BTreeMap<String, Vec<Post>>,
    /// Requests refused for a bad signature or body.
    refused: Vec<String>,
}

/// The custom channel's receiving end: checks the signature as a real
/// receiver would, records each POST by message id, and answers 200 with
/// an `external_id` — except the first POST of every tenth reply
/// (`r-<n>` with n % 10 == 3), answered 503 so that replies are retried.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    journal: Arc<Journal>,
    state: Arc<Mutex<ReceiverState>>,
}

impl Receiver {
    pub async fn start(journal: Arc<Journal>) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let me = Self {
            addr: listener.local_addr()?,
            journal,
            state: Default::default(),
        };
        let app = axum::Router::new()
            .route("/outbound", axum::routing::post(receive))
            .with_state(me.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(me)
    }

    pub fn url(&self) -> String {
        format!("http://{}/outbound", self.addr)
    }

    pub fn set_secret(&self, secret: &str) {
        lock(&self.state).secret = Secret::parse(secret).ok();
    }

    /// The POSTs of every message so far.
    pub fn posts(&self) -> BTreeMap<String, Vec<Post>> {
        lock(&self.state).posts.clone()
    }

    pub fn refused(&self) -> Vec<String> {
        lock(&self.state).refused.clone()
    }
}

async fn receive(
    axum::extract::State(r): axum::extract::State<Receiver>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> (axum::http::StatusCode, String) {
    use axum::http::StatusCode;
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let at = r.journal.now();
    let mut state = lock(&r.state);
    let Some(secret) = state.secret.clone() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "no secret yet".into());
    };
    if let Err(e) = secret.verify(
        h("webhook-id"),
        h("webhook-timestamp"),
        h("webhook-signature"),
        &body,
        telenet_signing::unix_now(),
    ) {
        state.refused.push(format!("signature: {e}"));
        return (StatusCode::UNAUTHORIZED, e.to_string());
    }
    let Ok(json) = serde_json::from_slice::<Value>(&body) else {
        state.refused.push("body is not JSON".into());
        return (StatusCode::BAD_REQUEST, "bad json".into());
    };
    let message_id = h("webhook-id").unwrap_or_default().to_owned();
    let text = json["message"]["text"].as_str().unwrap_or_default();
    let planned_failure = text
        .strip_prefix("r-")
        .and_then(|n| n.parse::<u64>().ok())
        .is_some_and(|n| n % 10 == 3);
    let posts = state.posts.entry(message_id.clone()).or_default();
    let status = if planned_failure && posts.is_empty() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    posts.push(Post {
        at,
        status: status.as_u16(),
    });
    (
        status,
        json!({"external_id": format!("ext-{message_id}")}).to_string(),
    )
}
