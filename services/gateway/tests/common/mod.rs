//! Shared test harness: the gateway router over a minimal `Members` server
//! (a fixed token table) and an in-memory presence store. The other upstream
//! channels point at a closed port, so anything that reaches them is 503.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use telenet_gateway::{Config, Upstreams};
use telenet_kit::grpc::GrpcChannel;
use telenet_presence::{MemoryPresence, SharedPresence, Thresholds};
use telenet_proto::conversations::v1::members_server::{Members, MembersServer};
use telenet_proto::conversations::v1::{
    AccessLevel, AuthenticateRequest, CreateMemberRequest, CreateTokenRequest, CreateTokenResponse,
    CreateWorkspaceRequest, CreateWorkspaceResponse, GetMemberRequest, ListMembersRequest,
    ListMembersResponse, Member,
};
use tower::ServiceExt;

pub const WORKSPACE: &str = "0198a3c1-0000-7000-8000-00000000000a";
pub const OWNER_ID: &str = "0198a3c1-0000-7000-8000-000000000001";
pub const AGENT_ID: &str = "0198a3c1-0000-7000-8000-000000000002";
pub const OWNER_TOKEN: &str = "tok_owner_0123456789";
pub const AGENT_TOKEN: &str = "tok_agent_0123456789";
pub const OTHER_WORKSPACE: &str = "0198a3c1-0000-7000-8000-00000000000b";
pub const OTHER_ID: &str = "0198a3c1-0000-7000-8000-000000000003";
pub const OTHER_TOKEN: &str = "tok_other_0123456789";

/// `Members` answering `Authenticate` and `ListMembers` from a fixed token
/// table, counting calls; every other method is unimplemented.
#[derive(Clone, Default)]
pub struct FakeMembers {
    pub tokens: HashMap<String, Member>,
    /// `Authenticate` calls so far.
    pub calls: Arc<AtomicUsize>,
    /// The `x-request-id` metadata of every call.
    pub request_ids: Arc<Mutex<Vec<String>>>,
}

impl FakeMembers {
    pub fn standard() -> Self {
        let member = |user_id: &str, name: &str, level: AccessLevel| Member {
            user_id: user_id.to_owned(),
            workspace_id: if user_id == OTHER_ID {
                OTHER_WORKSPACE
            } else {
                WORKSPACE
            }
            .to_owned(),
            name: name.to_owned(),
            email: format!("{}@example.com", name.to_lowercase()),
            access_level: level.into(),
            created_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            token_expires_at: None,
        };
        let mut tokens = HashMap::new();
        tokens.insert(
            OWNER_TOKEN.to_owned(),
            member(OWNER_ID, "Olivia", AccessLevel::Owner),
        );
        tokens.insert(
            AGENT_TOKEN.to_owned(),
            member(AGENT_ID, "Arturo", AccessLevel::Agent),
        );
        tokens.insert(
            OTHER_TOKEN.to_owned(),
            member(OTHER_ID, "Oscar", AccessLevel::Manager),
        );
        Self {
            tokens,
            calls: Arc::default(),
            request_ids: Arc::default(),
        }
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn request_ids(&self) -> Vec<String> {
        self.request_ids
            .lock()
            .map(|ids| ids.clone())
            .unwrap_or_default()
    }

    fn record<T>(&self, request: &tonic::Request<T>) {
        let id = request
            .metadata()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok());
        if let (Some(id), Ok(mut ids)) = (id, self.request_ids.lock()) {
            ids.push(id.to_owned());
        }
    }
}

#[tonic::async_trait]
impl Members for FakeMembers {
    async fn create_workspace(
        &self,
        _: tonic::Request<CreateWorkspaceRequest>,
    ) -> Result<tonic::Response<CreateWorkspaceResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not in this fake"))
    }

    async fn authenticate(
        &self,
        request: tonic::Request<AuthenticateRequest>,
    ) -> Result<tonic::Response<Member>, tonic::Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.record(&request);
        match self.tokens.get(&request.into_inner().token) {
            Some(member) => Ok(tonic::Response::new(member.clone())),
            None => Err(tonic::Status::unauthenticated("unknown or revoked token")),
        }
    }

    async fn create_member(
        &self,
        _: tonic::Request<CreateMemberRequest>,
    ) -> Result<tonic::Response<Member>, tonic::Status> {
        Err(tonic::Status::unimplemented("not in this fake"))
    }

    async fn get_member(
        &self,
        _: tonic::Request<GetMemberRequest>,
    ) -> Result<tonic::Response<Member>, tonic::Status> {
        Err(tonic::Status::unimplemented("not in this fake"))
    }

    async fn list_members(
        &self,
        request: tonic::Request<ListMembersRequest>,
    ) -> Result<tonic::Response<ListMembersResponse>, tonic::Status> {
        self.record(&request);
        let workspace_id = request.into_inner().workspace_id;
        let mut members: Vec<Member> = self
            .tokens
            .values()
            .filter(|m| m.workspace_id == workspace_id)
            .cloned()
            .collect();
        members.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(tonic::Response::new(ListMembersResponse { members }))
    }

    async fn create_token(
        &self,
        _: tonic::Request<CreateTokenRequest>,
    ) -> Result<tonic::Response<CreateTokenResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not in this fake"))
    }
}

/// A client channel to `endpoint` through kit's client stack, as the
/// process gives the gateway.
pub fn client(endpoint: &str) -> GrpcChannel {
    telenet_kit::grpc::client(
        endpoint,
        &Default::default(),
        &Default::default(),
        telenet_gateway::NAME,
    )
    .expect("valid endpoint")
}

/// A channel to a port nothing listens on: calls fail with UNAVAILABLE.
pub fn dead_channel() -> GrpcChannel {
    client("http://127.0.0.1:9")
}

/// Starts `members` on an ephemeral port and returns a channel to it.
pub async fn spawn_members(members: FakeMembers) -> GrpcChannel {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind test members server");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(MembersServer::new(members))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    client(&format!("http://{addr}"))
}

pub struct Harness {
    pub app: Router,
    pub members: FakeMembers,
    pub presence: SharedPresence,
}

/// The gateway with the standard token table and `cfg`.
pub async fn harness_with(cfg: Config) -> Harness {
    let members = FakeMembers::standard();
    let channel = spawn_members(members.clone()).await;
    let upstreams = Upstreams {
        members: channel,
        ..Upstreams::single(dead_channel())
    };
    let presence: SharedPresence = Arc::new(MemoryPresence::new(Thresholds::default()));
    Harness {
        app: telenet_gateway::router(upstreams, presence.clone(), cfg),
        members,
        presence,
    }
}

pub async fn harness() -> Harness {
    harness_with(Config::default()).await
}

/// A router whose upstreams are all unreachable (for what needs no upstream).
pub fn offline_app() -> Router {
    let presence: SharedPresence = Arc::new(MemoryPresence::new(Thresholds::default()));
    telenet_gateway::router(
        Upstreams::single(dead_channel()),
        presence,
        Config::default(),
    )
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: axum::body::Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not json ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a problem+json body with `status` and returns it.
    pub fn problem(&self, status: u16) -> serde_json::Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json")
        );
        let body = self.json();
        assert_eq!(body["type"], "about:blank");
        assert_eq!(body["status"], status);
        assert!(
            body["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{body}"
        );
        assert!(
            body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{body}"
        );
        body
    }
}

pub async fn send(app: &Router, request: Request<Body>) -> Reply {
    let response: Response<Body> = app
        .clone()
        .oneshot(request)
        .await
        .expect("router is infallible");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("read body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub fn get(uri: &str, token: Option<&str>) -> Request<Body> {
    let mut builder = Request::get(uri);
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    builder.body(Body::empty()).expect("valid request")
}

pub fn json(method: &str, uri: &str, token: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut builder = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    builder.body(body.into()).expect("valid request")
}
