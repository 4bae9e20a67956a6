//! Requests of any shape through every operation that reads a body, a query
//! or a path, and what each answer must be: a clear problem for what the
//! gateway refuses, the call of an upstream for what it accepts, and never
//! a panic, a 500 or a change to anything when it refused.
//!
//! Shared by the bounded fuzz test of every test run (`tests/request_fuzz.rs`,
//! structure-aware cases from a seed) and the cargo-fuzz target
//! (`fuzz/fuzz_targets/requests.rs`, cases decoded from libFuzzer's bytes
//! with [`Case::from_bytes`]). The gateway runs over a fake members service
//! (the test harness's token table); every other upstream is a port nothing
//! listens on, called without retries, so a request that passed validation
//! answers 503 at once.

#![allow(dead_code)]

use std::fmt;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, StatusCode, header};
use http_body_util::BodyExt;
use telenet_gateway::Upstreams;
use telenet_kit::grpc::{ClientConfig, GrpcChannel, RetryPolicy};
use telenet_presence::{MemoryPresence, SharedPresence, Thresholds};
use tower::ServiceExt;

use crate::common::{self, AGENT_TOKEN, FakeMembers, OWNER_ID, OWNER_TOKEN, WORKSPACE};

/// An operation that takes input, and where the input goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    SetStatus,
    Heartbeat,
    ListChannels,
    CreateChannel,
    ListConversations,
    GetConversation,
    ListMessages,
    SendMessage,
    Assign,
    Unassign,
    Close,
    GetContact,
    Upload,
    Download,
    CreateLink,
    Audio,
    DownloadLink,
    DailyVolume,
}

impl Op {
    pub const ALL: [Op; 18] = [
        Op::SetStatus,
        Op::Heartbeat,
        Op::ListChannels,
        Op::CreateChannel,
        Op::ListConversations,
        Op::GetConversation,
        Op::ListMessages,
        Op::SendMessage,
        Op::Assign,
        Op::Unassign,
        Op::Close,
        Op::GetContact,
        Op::Upload,
        Op::Download,
        Op::CreateLink,
        Op::Audio,
        Op::DownloadLink,
        Op::DailyVolume,
    ];

    /// Method and path, `{}` where the path input goes.
    pub fn route(self) -> (&'static str, &'static str) {
        match self {
            Op::SetStatus => ("PUT", "/v1/me/status"),
            Op::Heartbeat => ("POST", "/v1/me/heartbeat"),
            Op::ListChannels => ("GET", "/v1/channels"),
            Op::CreateChannel => ("POST", "/v1/channels"),
            Op::ListConversations => ("GET", "/v1/conversations"),
            Op::GetConversation => ("GET", "/v1/conversations/{}"),
            Op::ListMessages => ("GET", "/v1/conversations/{}/messages"),
            Op::SendMessage => ("POST", "/v1/conversations/{}/messages"),
            Op::Assign => ("POST", "/v1/conversations/{}/assign"),
            Op::Unassign => ("POST", "/v1/conversations/{}/unassign"),
            Op::Close => ("POST", "/v1/conversations/{}/close"),
            Op::GetContact => ("GET", "/v1/contacts/{}"),
            Op::Upload => ("POST", "/v1/files"),
            Op::Download => ("GET", "/v1/files/{}"),
            Op::CreateLink => ("POST", "/v1/files/{}/links"),
            Op::Audio => ("GET", "/v1/files/{}/audio"),
            Op::DownloadLink => ("GET", "/v1/downloads/{}"),
            Op::DailyVolume => ("GET", "/v1/reports/daily-volume"),
        }
    }

    /// Operations answered without any upstream but members and presence:
    /// the only ones that may answer 2xx here.
    fn answers_itself(self) -> bool {
        matches!(self, Op::SetStatus | Op::Heartbeat)
    }

    /// Whether a 2xx of this operation changes the caller's presence.
    fn touches_presence(self) -> bool {
        matches!(self, Op::SetStatus | Op::Heartbeat)
    }
}

/// Whose token the request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    Owner,
    Agent,
    None,
    Unknown,
}

/// One request: raw bytes where the client chooses them.
#[derive(Clone)]
pub struct Case {
    pub op: Op,
    pub auth: Auth,
    pub content_type: Option<String>,
    /// The path input: one segment, percent-encoded whole (for download
    /// links, `/` separates the workspace, the file and the name).
    pub path: Vec<u8>,
    /// The query string, percent-encoded except for `&` and `=`.
    pub query: Vec<u8>,
    /// A `Range` header, when it is a valid header value.
    pub range: Vec<u8>,
    pub body: Vec<u8>,
}

/// Shown up to 300 bytes each, with their length: enough to reproduce
/// by hand, short enough to read in a failure.
impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |bytes: &[u8]| {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned();
            format!("{text:?} ({} bytes)", bytes.len())
        };
        f.debug_struct("Case")
            .field("op", &self.op)
            .field("auth", &self.auth)
            .field("content_type", &self.content_type)
            .field("path", &shown(&self.path))
            .field("query", &shown(&self.query))
            .field("range", &shown(&self.range))
            .field("body", &shown(&self.body))
            .finish()
    }
}

/// Content types a case may declare (by index).
pub const CONTENT_TYPES: [Option<&str>; 7] = [
    Some("application/json"),
    None,
    Some("text/plain"),
    Some("multipart/form-data; boundary=fuzz"),
    Some("application/merge-patch+json"),
    Some("application/json; charset=utf-8"),
    Some("application/x-www-form-urlencoded"),
];

impl Case {
    /// A case from any bytes (the cargo-fuzz target's input): the first
    /// byte chooses the operation, the second the token and content type,
    /// and `0xff` bytes separate the path, the query, the range and the
    /// body (the rest).
    pub fn from_bytes(data: &[u8]) -> Case {
        let op = Op::ALL[usize::from(data.first().copied().unwrap_or(0)) % Op::ALL.len()];
        let flags = data.get(1).copied().unwrap_or(0);
        let auth = match flags & 0x03 {
            0 | 1 => Auth::Owner,
            2 => Auth::Agent,
            _ => {
                if flags & 0x80 == 0 {
                    Auth::None
                } else {
                    Auth::Unknown
                }
            }
        };
        let content_type = CONTENT_TYPES[usize::from((flags >> 2) & 0x07) % CONTENT_TYPES.len()]
            .map(str::to_owned);
        let mut parts = data.get(2..).unwrap_or_default().splitn(4, |b| *b == 0xff);
        let mut next = || parts.next().unwrap_or_default().to_vec();
        Case {
            op,
            auth,
            content_type,
            path: next(),
            query: next(),
            range: next(),
            body: next(),
        }
    }

    /// The HTTP request.
    pub fn request(&self) -> Request<Body> {
        let (method, template) = self.op.route();
        let path = if self.op == Op::DownloadLink {
            self.path
                .split(|b| *b == b'/')
                .map(|segment| encode(segment, b""))
                .collect::<Vec<_>>()
                .join("/")
        } else {
            encode(&self.path, b"")
        };
        let mut uri = template.replace("{}", &path);
        if !self.query.is_empty() {
            uri.push('?');
            uri.push_str(&encode(&self.query, b"&="));
        }
        let mut builder = Request::builder().method(method).uri(&uri);
        let token = match self.auth {
            Auth::Owner => Some(OWNER_TOKEN),
            Auth::Agent => Some(AGENT_TOKEN),
            Auth::None => None,
            Auth::Unknown => Some("tok_nobody_0123456789"),
        };
        if let Some(token) = token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        // A header value no client could send is left out, as is a range.
        if let Some(content_type) = &self.content_type
            && let Ok(content_type) = HeaderValue::from_str(content_type)
        {
            builder = builder.header(header::CONTENT_TYPE, content_type);
        }
        if !self.range.is_empty()
            && let Ok(range) = HeaderValue::from_bytes(&self.range)
        {
            builder = builder.header(header::RANGE, range);
        }
        builder
            .body(Body::from(self.body.clone()))
            // Everything in the URI is percent-encoded, so it parses.
            .unwrap_or_else(|e| panic!("request for {self:?}: {e}"))
    }
}

/// Percent-encodes every byte but unreserved ones and `keep`.
fn encode(bytes: &[u8], keep: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The fields a problem may name: every query, path and body field of the
/// API, and the form's.
const FIELDS: [&str; 26] = [
    "page_size",
    "page_token",
    "status",
    "assignee",
    "contact_id",
    "id",
    "workspace_id",
    "expires",
    "signature",
    "peaks",
    "from",
    "to",
    "channel_id",
    "text",
    "client_message_id",
    "attachments",
    "user_id",
    "name",
    "outbound_url",
    "secret",
    "accepted_voice_types",
    "ttl_seconds",
    "file_name",
    "kind",
    "file",
    "form",
];

/// The longest `detail` a problem may have: it is read by people.
pub const MAX_DETAIL: usize = telenet_gateway::problem::MAX_DETAIL_BYTES;

/// The gateway under test and its presence store.
pub struct Target {
    app: Router,
    presence: SharedPresence,
}

impl Target {
    /// The gateway over the fake members service; every other upstream
    /// refuses connections, without retries. Needs a Tokio runtime.
    pub async fn new() -> Target {
        let members = common::spawn_members(FakeMembers::standard()).await;
        let config = ClientConfig {
            retry: RetryPolicy {
                max_attempts: 1,
                ..RetryPolicy::default()
            },
            ..ClientConfig::default()
        };
        let dead: GrpcChannel = telenet_kit::grpc::client(
            "http://127.0.0.1:9",
            &config,
            &Default::default(),
            telenet_gateway::NAME,
        )
        .unwrap_or_else(|e| panic!("dead channel: {e}"));
        let upstreams = Upstreams {
            members,
            ..Upstreams::single(dead)
        };
        let presence: SharedPresence = Arc::new(MemoryPresence::new(Thresholds::default()));
        // Limits off: the fuzzer sends thousands of requests with one token.
        let config = telenet_gateway::Config {
            rate_limits: telenet_gateway::RateLimits {
                enabled: false,
                ..Default::default()
            },
            ..Default::default()
        };
        let app = telenet_gateway::router(upstreams, presence.clone(), config);
        Target { app, presence }
    }

    /// Sends `case` and checks its answer; `Err` says what is wrong.
    pub async fn check(&self, case: &Case) -> Result<(), String> {
        let before = self.owner_presence().await?;
        let response = self
            .app
            .clone()
            .oneshot(case.request())
            .await
            .map_err(|e| format!("router error: {e}"))?;
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{status}: body: {e}"))?
            .to_bytes();
        let text = || String::from_utf8_lossy(&body).into_owned();

        if status.is_success() {
            if !case.op.answers_itself() {
                return Err(format!("{status} without any upstream: {}", text()));
            }
            serde_json::from_slice::<serde_json::Value>(&body)
                .map_err(|e| format!("{status} body is not json ({e}): {}", text()))?;
            return Ok(());
        }
        if content_type.as_deref() != Some("application/problem+json") {
            return Err(format!("{status} is {content_type:?}: {}", text()));
        }
        let problem: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| format!("{status} problem is not json ({e}): {}", text()))?;
        let member = |name: &str| problem[name].as_str().unwrap_or_default().to_owned();
        if problem["type"] != "about:blank"
            || problem["status"] != status.as_u16()
            || member("title").is_empty()
            || member("code").is_empty()
            || member("detail").is_empty()
        {
            return Err(format!("{status}: not a complete problem: {problem}"));
        }
        let detail = member("detail");
        if detail.len() > MAX_DETAIL {
            return Err(format!(
                "{status}: a detail of {} bytes: {}…",
                detail.len(),
                detail.chars().take(200).collect::<String>()
            ));
        }
        if let Some(field) = problem.get("field") {
            let field = field.as_str().unwrap_or_default();
            if !FIELDS.contains(&field) {
                return Err(format!("{status}: names an unknown field: {problem}"));
            }
        }
        if status.is_server_error() {
            // Only the upstream that is not there: the request was valid.
            if status != StatusCode::SERVICE_UNAVAILABLE || member("code") != "unavailable" {
                return Err(format!("{status}: {problem}"));
            }
            return Ok(());
        }
        // Refused: nothing changed.
        if case.op.touches_presence() {
            let after = self.owner_presence().await?;
            if after != before {
                return Err(format!(
                    "{status} changed the presence: {before:?} -> {after:?}"
                ));
            }
        }
        Ok(())
    }

    /// What a request can change of the owner's presence: the status they
    /// chose and their last heartbeat.
    async fn owner_presence(&self) -> Result<(String, Option<i64>), String> {
        let presence = self
            .presence
            .get(WORKSPACE, OWNER_ID)
            .await
            .map_err(|e| format!("presence: {e}"))?;
        Ok((format!("{:?}", presence.chosen), presence.last_seen_ms))
    }
}
