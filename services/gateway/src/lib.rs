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
//! ```no_run
//! # async fn run(presence: telenet_presence::SharedPresence) -> std::io::Result<()> {
//! use telenet_gateway::{Config, Upstreams};
//! let channel = tonic::transport::Channel::from_static("http://127.0.0.1:7233").connect_lazy();
//! let config = Config::default();
//! let app = telenet_gateway::router(Upstreams::single(channel), presence, config.clone());
//! let listener = tokio::net::TcpListener::bind(config.listen).await?;
//! telenet_gateway::serve(listener, app, tokio_util::sync::CancellationToken::new()).await
//! # }
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::Request;
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize};
use telenet_presence::SharedPresence;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

mod auth;
pub mod dto;
mod error;
mod extract;
mod openapi;
pub mod problem;
mod routes;
mod sniff;

pub use auth::Caller;
pub use error::ApiError;
pub use openapi::document as openapi_document;
pub use problem::Problem;
pub use routes::files::UploadLimits;

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
    /// (0 disables the cache). Also how long a revoked token keeps working.
    pub auth_cache_ttl_ms: u64,
    /// How long to wait for an upstream service before answering 504, in
    /// milliseconds.
    pub upstream_timeout_ms: u64,
    /// Largest file `POST /v1/files` accepts, per kind, in bytes (this, not
    /// `max_body_bytes`, limits that endpoint).
    pub max_upload_bytes: UploadLimits,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 1024 * 1024,
            auth_cache_ttl_ms: 5_000,
            upstream_timeout_ms: 10_000,
            max_upload_bytes: UploadLimits::default(),
        }
    }
}

/// gRPC channels to the services the gateway calls. `tonic` channels are
/// cheap to clone and reconnect on their own; a lazily connected channel is
/// fine (an unreachable service answers 503).
#[derive(Debug, Clone)]
pub struct Upstreams {
    /// `telenet.conversations.v1.Conversations`.
    pub conversations: Channel,
    /// `telenet.conversations.v1.Members` (served by the conversations
    /// service; a separate field so it can be routed on its own).
    pub members: Channel,
    /// `telenet.ingress.v1.Channels`.
    pub ingress: Channel,
    /// `telenet.contacts.v1.Contacts`.
    pub contacts: Channel,
    /// `telenet.reporting.v1.Reports`.
    pub reporting: Channel,
    /// `telenet.media.v1.Media`.
    pub media: Channel,
}

impl Upstreams {
    /// Every service behind one channel, as in the dev server where all
    /// services share one gRPC server.
    pub fn single(channel: Channel) -> Self {
        Self {
            conversations: channel.clone(),
            members: channel.clone(),
            ingress: channel.clone(),
            contacts: channel.clone(),
            reporting: channel.clone(),
            media: channel,
        }
    }
}

/// What every handler gets.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) upstreams: Upstreams,
    pub(crate) presence: SharedPresence,
    pub(crate) auth: Arc<auth::AuthCache>,
    upstream_timeout: Duration,
    upload_limits: UploadLimits,
}

impl AppState {
    /// Awaits an upstream call, bounded by the configured timeout.
    pub(crate) async fn call<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, ApiError> {
        match tokio::time::timeout(self.upstream_timeout, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(status.into()),
            Err(_) => Err(ApiError::UpstreamTimeout),
        }
    }
}

/// The REST API with its middleware: request ids (`x-request-id`, generated
/// when absent and echoed on the response), request tracing, the body size
/// limit and problem+json for every error.
pub fn router(upstreams: Upstreams, presence: SharedPresence, cfg: Config) -> Router {
    let state = AppState {
        upstreams,
        presence,
        auth: Arc::new(auth::AuthCache::new(Duration::from_millis(
            cfg.auth_cache_ttl_ms,
        ))),
        upstream_timeout: Duration::from_millis(cfg.upstream_timeout_ms),
        upload_limits: cfg.max_upload_bytes,
    };

    // One span per request (with its request id), continuing the caller's
    // trace; the upstream gRPC calls carry it on.
    let trace = TraceLayer::new_for_http()
        .make_span_with(|request: &Request<_>| telenet_kit::telemetry::http_request_span(request));

    Router::new()
        .route("/healthz", get(routes::meta::healthz))
        .route("/openapi.json", get(routes::meta::openapi_json))
        .route("/v1/me", get(routes::me::get_me))
        .route("/v1/me/status", put(routes::me::set_status))
        .route("/v1/me/heartbeat", post(routes::me::heartbeat))
        .route("/v1/members", get(routes::me::list_members))
        .route(
            "/v1/channels",
            get(routes::channels::list_channels).post(routes::channels::create_channel),
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
        .with_state(state)
        // Layers run outside-in from the last one added.
        // The tower-http limits above are the limits; axum's own default
        // (2 MiB) would otherwise cap a larger configured value.
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn(problem::ensure_problem_json))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(trace)
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

/// Serves `app` on `listener` until `token` is cancelled, then lets
/// in-flight requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    token: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { token.cancelled().await })
        .await
}

/// Counts agents by presence status across all workspaces every
/// `interval` into `telenet_presence_users`, until `token` is cancelled.
/// A failed count keeps the last values (logged once until counting works
/// again).
pub async fn watch_presence_counts(
    presence: SharedPresence,
    metrics: telenet_kit::metrics::Metrics,
    interval: Duration,
    token: CancellationToken,
) {
    let mut failing = false;
    loop {
        match presence.count_by_status().await {
            Ok(counts) => {
                metrics.set_presence_users(counts.online, counts.away, counts.offline);
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

/// Binds `cfg.listen` and serves the gateway until `token` is cancelled.
pub async fn run(
    upstreams: Upstreams,
    presence: SharedPresence,
    cfg: Config,
    token: CancellationToken,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
    tracing::info!(listen = %cfg.listen, "gateway listening");
    serve(listener, router(upstreams, presence, cfg), token).await
}
