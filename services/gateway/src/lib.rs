//! The edge REST gateway of the agents' inbox.
//!
//! It keeps no state of its own: each request is authenticated with its bearer
//! token against the members service, and answered by calling the TELENET
//! services over gRPC within the member's workspace (an object of another
//! workspace comes back NOT_FOUND upstream, hence 404 here). Presence is read
//! and written directly in the presence store.
//!
//! Every error is `application/problem+json` (RFC 9457), including axum's own
//! rejections; `GET /openapi.json` describes the API.
//!
//! The process starts it with [`start`], which hands back the REST API on
//! the listener the process bound and the presence-count poller. [`router`]
//! builds the REST API alone:
//!
//! ```no_run
//! # fn demo(presence: telenet_presence::SharedPresence) -> Result<(), Box<dyn std::error::Error>> {
//! use telenet_gateway::{Config, Upstreams};
//! let channel = telenet_kit::grpc::client(
//!     "http://127.0.0.1:50051",
//!     &Default::default(),
//!     &telenet_kit::metrics::Metrics::default(),
//!     telenet_gateway::NAME,
//! )?;
//! let app = telenet_gateway::router(Upstreams::single(channel), presence, Config::default());
//! # drop(app); Ok(()) }
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::Request;
use axum::routing::{delete, get, post, put};
use serde::{Deserialize, Serialize};
use telenet_bus::SubscribeSpec;
use telenet_kit::grpc::GrpcChannel;
use telenet_presence::SharedPresence;
use telenet_runtime::{Call, Phase, ServiceContext, Started};
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

mod auth;
pub mod dto;
mod error;
mod extract;
mod limits;
mod metrics;
mod openapi;
pub mod problem;
mod routes;

use metrics::PresenceUsers;

pub use auth::Caller;
pub use error::ApiError;
pub use limits::RateLimits;
pub use openapi::document as openapi_document;
pub use problem::Problem;
pub use routes::files::UploadLimits;

/// The service's name: its metrics label, its log prefix.
pub const NAME: &str = "gateway";

/// The services it calls (see `telenet_runtime::Call`): every API it puts
/// behind REST (members are served by conversations). Its context refuses
/// any other, and the chart's NetworkPolicies allow these
/// (`deploy/tools/callgraph.py`).
pub const CALLS: &[Call] = &[
    Call::grpc("conversations"),
    Call::grpc("ingress"),
    Call::grpc("contacts"),
    Call::grpc("reporting"),
    Call::grpc("media"),
];

/// The consumer groups it subscribes with: none, it consumes no events.
/// (`telenet migrate` and every process at start declare the groups of
/// every service, ADR 14.)
pub fn consumer_groups() -> Vec<telenet_bus::SubscribeSpec> {
    Vec::new()
}

/// How often agents are counted by presence status for
/// `telenet_presence_users`.
const PRESENCE_POLL: Duration = Duration::from_secs(15);

/// Gateway settings (`gateway.*`; env `TELENET_GATEWAY__…`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the REST API listens on. Loopback by default, so the dev
    /// server is not reachable from the network unless asked.
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes; larger ones get 413. Agents
    /// send text and small JSON; files go to the media service.
    pub max_body_bytes: usize,
    /// How long the member behind a token is remembered, in milliseconds
    /// (0 disables the cache); never past the token's expiry. A revoked
    /// token is forgotten at once by every replica (its
    /// `member.token_revoked` event); this bounds how long it could keep
    /// working should that event be lost (the bus down meanwhile).
    pub auth_cache_ttl_ms: u64,
    /// How long to wait for an upstream service before answering 504, in
    /// milliseconds.
    pub upstream_timeout_ms: u64,
    /// Largest file `POST /v1/files` accepts, per kind, in bytes (this, not
    /// `max_body_bytes`, limits that endpoint).
    pub max_upload_bytes: UploadLimits,
    /// Requests per token and per workspace on every authenticated route
    /// (429 past them).
    pub rate_limits: RateLimits,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 1024 * 1024,
            auth_cache_ttl_ms: 5_000,
            upstream_timeout_ms: 10_000,
            max_upload_bytes: UploadLimits::default(),
            rate_limits: RateLimits::default(),
        }
    }
}

/// gRPC clients of the services the gateway calls, each through kit's
/// client stack. Cheap to clone; they connect lazily and reconnect on their
/// own (an unreachable service answers 503).
#[derive(Debug, Clone)]
pub struct Upstreams {
    /// `telenet.conversations.v1.Conversations`, and the operations service
    /// `telenet.operations.v1.DeadLetters` of the same process.
    pub conversations: GrpcChannel,
    /// `telenet.conversations.v1.Members` (served by the conversations
    /// service; a separate field so it can be routed on its own).
    pub members: GrpcChannel,
    /// `telenet.ingress.v1.Channels`.
    pub ingress: GrpcChannel,
    /// `telenet.contacts.v1.Contacts`.
    pub contacts: GrpcChannel,
    /// `telenet.reporting.v1.Reports`.
    pub reporting: GrpcChannel,
    /// `telenet.media.v1.Media`.
    pub media: GrpcChannel,
    /// `telenet.media.v1.Media` for streamed uploads and downloads, which
    /// last as long as their bytes take: no per-call timeout; the handlers
    /// bound the waits that are the upstream's
    /// ([`AppState::within_upstream_timeout`]).
    pub media_streams: GrpcChannel,
}

impl Upstreams {
    /// Every service behind one channel, as in the dev server where all
    /// services share one gRPC server.
    pub fn single(channel: GrpcChannel) -> Self {
        Self {
            conversations: channel.clone(),
            members: channel.clone(),
            ingress: channel.clone(),
            contacts: channel.clone(),
            reporting: channel.clone(),
            media: channel.clone(),
            media_streams: channel,
        }
    }

    /// Clients of the services at the endpoints the process knows.
    fn from_context(ctx: &ServiceContext<Config>) -> anyhow::Result<Self> {
        // Each call is bounded by the gateway's own upstream timeout.
        let timeout = Duration::from_millis(ctx.config.upstream_timeout_ms);
        let client = |service| ctx.client_with_timeout(service, timeout);
        Ok(Self {
            conversations: client("conversations")?,
            // Members is a service of the conversations process.
            members: client("conversations")?,
            ingress: client("ingress")?,
            contacts: client("contacts")?,
            reporting: client("reporting")?,
            media: client("media")?,
            media_streams: ctx.client_with_timeout("media", Duration::ZERO)?,
        })
    }
}

/// What every handler gets.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) upstreams: Upstreams,
    pub(crate) presence: SharedPresence,
    pub(crate) auth: Arc<auth::AuthCache>,
    /// The rate limits, when on.
    pub(crate) limits: Option<limits::GatewayLimits>,
    upstream_timeout: Duration,
    upload_limits: UploadLimits,
}

impl AppState {
    /// Awaits an upstream unary call. It is bounded by the client stack's
    /// timeout (`upstream_timeout_ms`, see [`Upstreams::from_context`]);
    /// past it the client gets a 504.
    pub(crate) async fn call<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, ApiError> {
        Ok(call.await?.into_inner())
    }

    /// Awaits the parts of a streaming call that no per-call timeout can
    /// bound — an upload's answer after its last chunk went out, a
    /// download's first message — for at most `upstream_timeout_ms`.
    pub(crate) async fn within_upstream_timeout<T>(
        &self,
        work: impl Future<Output = T>,
    ) -> Result<T, ApiError> {
        tokio::time::timeout(self.upstream_timeout, work)
            .await
            .map_err(|_| ApiError::UpstreamTimeout)
    }
}

/// Starts the gateway on what the process gives it: the presence store,
/// clients of the services it calls and the listener bound for it. Hands
/// back its REST API on that listener, and the presence-count poller
/// (stopped with the other background work, after the API stopped taking
/// requests).
pub async fn start(mut ctx: ServiceContext<Config>) -> anyhow::Result<Started> {
    let listener = ctx
        .listener
        .take()
        .with_context(|| format!("the {NAME} service needs a listener bound by the process"))?;
    let presence = ctx.presence()?;
    let upstreams = Upstreams::from_context(&ctx)?;
    let presence_users = PresenceUsers::register(&ctx.metrics);
    let auth = Arc::new(auth::AuthCache::new(Duration::from_millis(
        ctx.config.auth_cache_ttl_ms,
    )));
    // Subscribed before the API serves, so no revocation from now on is missed.
    let revocations = ctx
        .bus
        .subscribe(SubscribeSpec::broadcast(
            TOKEN_REVOCATIONS,
            &["member.token_revoked"],
        ))
        .await
        .context("subscribing to token revocations")?;
    let limiter = ctx.rate_limiter();
    let app = router_with_auth(
        upstreams,
        presence.clone(),
        ctx.config,
        limiter,
        Arc::clone(&auth),
    )?;
    Ok(Started::new()
        .http(NAME, listener, app)
        .task(
            format!("{NAME}.token-revocations"),
            Phase::Consume,
            move |token| async move {
                auth::forget_revoked_tokens(revocations, auth, token).await;
                Ok(())
            },
        )
        .task(
            format!("{NAME}.presence-counts"),
            Phase::Work,
            move |token| async move {
                watch_presence_counts(presence, presence_users, PRESENCE_POLL, token).await;
                Ok(())
            },
        ))
}

/// The name of each replica's own broadcast queue of token revocations.
const TOKEN_REVOCATIONS: &str = "gateway.token-revocations";

/// The REST API with its middleware: request ids (`x-request-id`, generated
/// when absent and echoed on the response), request tracing, the body size
/// limit and problem+json for every error. Rate limits, when on, are
/// counted in memory of this router's own (not shared, not in the process's
/// metrics); [`router_with_limiter`] counts them elsewhere.
///
/// # Panics
///
/// When `cfg.rate_limits` is on with a rate or burst of 0 (checked by
/// [`router_with_limiter`], which [`start`] uses).
pub fn router(upstreams: Upstreams, presence: SharedPresence, cfg: Config) -> Router {
    let limiter = telenet_ratelimit::RateLimiter::new(
        Arc::new(telenet_ratelimit::MemoryStore::default()),
        &telenet_kit::metrics::Metrics::new(),
    );
    match router_with_limiter(upstreams, presence, cfg, limiter) {
        Ok(router) => router,
        Err(error) => panic!("{error:#}"),
    }
}

/// [`router`] with its rate limits counted by `limiter`; an error naming
/// the key when the rate limits are invalid.
pub fn router_with_limiter(
    upstreams: Upstreams,
    presence: SharedPresence,
    cfg: Config,
    limiter: telenet_ratelimit::RateLimiter,
) -> anyhow::Result<Router> {
    let auth = Arc::new(auth::AuthCache::new(Duration::from_millis(
        cfg.auth_cache_ttl_ms,
    )));
    router_with_auth(upstreams, presence, cfg, limiter, auth)
}

/// [`router_with_limiter`] over the given token cache (the one revocations
/// are applied to).
fn router_with_auth(
    upstreams: Upstreams,
    presence: SharedPresence,
    cfg: Config,
    limiter: telenet_ratelimit::RateLimiter,
    auth: Arc<auth::AuthCache>,
) -> anyhow::Result<Router> {
    let limits = limits::GatewayLimits::new(&cfg.rate_limits, limiter)?;
    let state = AppState {
        upstreams,
        presence,
        auth,
        limits,
        upstream_timeout: Duration::from_millis(cfg.upstream_timeout_ms),
        upload_limits: cfg.max_upload_bytes,
    };

    let app = Router::new()
        .route("/healthz", get(routes::meta::healthz))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/v1/me", get(routes::me::get_me))
        .route("/v1/me/status", put(routes::me::set_status))
        .route("/v1/me/heartbeat", post(routes::me::heartbeat))
        .route("/v1/members", get(routes::me::list_members))
        .route(
            "/v1/tokens",
            get(routes::tokens::list_tokens).post(routes::tokens::create_token),
        )
        .route("/v1/tokens/{id}", delete(routes::tokens::revoke_token))
        .route(
            "/v1/channels",
            get(routes::channels::list_channels).post(routes::channels::create_channel),
        )
        .route(
            "/v1/channels/{id}",
            get(routes::channels::get_channel).patch(routes::channels::update_channel),
        )
        .route(
            "/v1/channels/{id}/test",
            post(routes::channels::test_channel),
        )
        .route(
            "/v1/channel-kinds",
            get(routes::channels::list_channel_kinds),
        )
        .route(
            "/v1/conversations",
            get(routes::conversations::list_conversations),
        )
        .route(
            "/v1/conversations/{id}",
            get(routes::conversations::get_conversation),
        )
        .route(
            "/v1/conversations/{id}/messages",
            get(routes::conversations::list_messages).post(routes::conversations::send_message),
        )
        .route(
            "/v1/conversations/{id}/assign",
            post(routes::conversations::assign),
        )
        .route(
            "/v1/conversations/{id}/unassign",
            post(routes::conversations::unassign),
        )
        .route(
            "/v1/conversations/{id}/close",
            post(routes::conversations::close),
        )
        .route("/v1/contacts/{id}", get(routes::contacts::get_contact))
        .route("/v1/files/{id}/links", post(routes::files::create_link))
        .route("/v1/files/{id}/audio", get(routes::files::audio))
        .route(
            "/v1/reports/daily-volume",
            get(routes::reports::daily_volume),
        )
        .route(
            "/v1/dead-letters",
            get(routes::dead_letters::list_dead_letters),
        )
        .route(
            "/v1/dead-letters/redrive",
            post(routes::dead_letters::redrive_dead_letters),
        )
        .route(
            "/v1/dead-letters/discard",
            post(routes::dead_letters::discard_dead_letters),
        )
        // A layer applies to the routes added before it: JSON endpoints get
        // the small limit, the file endpoints their own (added after).
        .layer(RequestBodyLimitLayer::new(cfg.max_body_bytes))
        .merge(
            Router::new()
                .route("/v1/files", post(routes::files::upload))
                .route("/v1/files/{id}", get(routes::files::download))
                .route(
                    "/v1/downloads/{workspace_id}/{id}/{file_name}",
                    get(routes::files::download_link),
                )
                .layer(RequestBodyLimitLayer::new(
                    cfg.max_upload_bytes.body_limit(),
                )),
        )
        .fallback(problem::route_not_found)
        .method_not_allowed_fallback(problem::method_not_allowed)
        .with_state(state);
    Ok(with_middleware(app))
}

/// The middleware around every route: request ids, tracing, problem+json
/// for every error, and a 500 problem for a handler that panicked (a bug:
/// logged, and the client gets an answer rather than a dropped connection).
fn with_middleware(routes: Router) -> Router {
    // One span per request (with its request id), continuing the caller's
    // trace; the upstream gRPC calls carry it on.
    let trace = TraceLayer::new_for_http()
        .make_span_with(|request: &Request<_>| telenet_kit::telemetry::http_request_span(request));

    routes
        // Layers run outside-in from the last one added.
        // The tower-http limits of `router` are the limits; axum's own
        // default (2 MiB) would otherwise cap a larger configured value.
        .layer(DefaultBodyLimit::disable())
        .layer(CatchPanicLayer::custom(problem::panic_response))
        .layer(axum::middleware::from_fn(problem::ensure_problem_json))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(trace)
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

/// Counts agents by presence status across all workspaces every
/// `interval` into `telenet_presence_users`, until `token` is cancelled. A
/// failed count keeps the last values (logged once until counting works
/// again).
async fn watch_presence_counts(
    presence: SharedPresence,
    users: PresenceUsers,
    interval: Duration,
    token: CancellationToken,
) {
    let mut failing = false;
    loop {
        match presence.count_by_status().await {
            Ok(counts) => {
                users.set(counts);
                failing = false;
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(%error, "cannot count presence for metrics");
                }
                failing = true;
            }
        }
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode, header};
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn a_handler_that_panics_answers_a_500_problem() {
        let app = Router::new().route(
            "/boom",
            get(|| async {
                let none: Option<u8> = None;
                none.map_or_else(|| panic!("a bug"), |n| n.to_string())
            }),
        );
        let request = Request::get("/boom")
            .body(Body::empty())
            .unwrap_or_else(|e| panic!("{e}"));
        let response = with_middleware(app)
            .oneshot(request)
            .await
            .unwrap_or_else(|e| match e {});
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            response
                .headers()
                .get(header::CONTENT_TYPE)
                .map(|v| v.as_bytes()),
            Some(problem::PROBLEM_JSON.as_bytes())
        );
        assert!(response.headers().contains_key("x-request-id"));
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let problem: Problem = serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(problem.status, 500);
        assert_eq!(problem.code, "internal");
        assert!(!problem.detail.contains("a bug"), "{}", problem.detail);
    }
}
