//! The gRPC server every service runs, and the client channel it uses to
//! call others.
//!
//! # Server
//!
//! [`GrpcServer`] mounts the service's tonic services together with the
//! standard health service (`grpc.health.v1.Health`) and reflection (v1 and
//! v1alpha, so both current and older `grpcurl` work), behind one stack of
//! tower layers: a request span continuing the caller's trace, rate, errors
//! and duration per method ([`GrpcServer::with_metrics`]), a request
//! timeout, a global concurrency limit and load shedding. Health checks
//! bypass the limits: an overloaded pod is slow, not dead, and must not be
//! restarted for it.
//!
//! ```no_run
//! use std::time::Duration;
//! use telenet_kit::grpc::{GrpcServer, GrpcServerConfig};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let shutdown = CancellationToken::new();
//! telenet_kit::shutdown::on_signal(shutdown.clone());
//! let listener = telenet_kit::shutdown::bind("0.0.0.0:50051").await?;
//!
//! let server = GrpcServer::new(GrpcServerConfig::default())
//!     // .file_descriptor_sets(&[telenet_proto::FILE_DESCRIPTOR_SET])
//!     // .add_service(ContactServiceServer::new(contacts))
//!     ;
//! // Readiness flips to SERVING once the database answers.
//! server.readiness().watch(
//!     "telenet.contacts.v1.ContactService",
//!     || async { Ok::<(), std::io::Error>(()) /* store.ping().await */ },
//!     Duration::from_secs(2),
//!     shutdown.clone(),
//! );
//! server.serve(listener, shutdown).await?;
//! # Ok(()) }
//! ```
//!
//! # Liveness and readiness
//!
//! The overall status (service name `""`) is SERVING as soon as the server
//! runs and depends on nothing: it answers the Kubernetes liveness probe.
//! Readiness is per service name, starts NOT_SERVING and follows a
//! dependency check ([`Readiness::watch`]); point the readiness probe's
//! `service` at that name. On shutdown every status turns NOT_SERVING before
//! in-flight requests drain.
//!
//! # Security
//!
//! [`GrpcServer::with_security`] makes the server speak mutual TLS
//! ([`crate::tls`]) and authorise every call ([`crate::grpc_auth`]):
//! services by their certificates, platform clients by their secrets and
//! workspaces, everyone else refused. Without it the server is plaintext
//! and trusts its callers (the dev server on loopback, tests).
//! [`GrpcServer::with_health_listener`] serves the health service alone,
//! in plaintext, for probes that cannot present a certificate.
//!
//! # Client
//!
//! [`client`] builds what every service calls another through: a lazily
//! connected channel (connect timeout, keepalives) under the client stack
//! of [`crate::client`] (metrics, trace propagation, retries of calls that
//! are safe to repeat, a timeout per attempt). [`channel`] is the bare
//! channel, for tools that call a single service once. [`client_with`] and
//! [`channel_with`] connect over mutual TLS with the process's
//! certificate.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::future::Future;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};
use tower::limit::{ConcurrencyLimit, GlobalConcurrencyLimitLayer};
use tower::load_shed::LoadShed;
use tower::timeout::Timeout;
use tower::util::MapErr;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

#[cfg(test)]
use crate::client::jittered;
pub use crate::client::{
    ChannelError, ClientConfig, GrpcChannel, RetryPolicy, channel, channel_with, client,
    client_with, is_client_timeout, is_retryable,
};
use crate::config::duration;
use crate::grpc_auth::AuthLayer;
pub use crate::grpc_auth::{Caller, GrpcSecurity};
use crate::metrics::{self, GrpcMetricsLayer, Metrics};
use crate::telemetry;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Requests under this path skip limits and timeouts (see module docs).
const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";

/// Server tuning. Defaults suit both the dev server and a small pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcServerConfig {
    /// Longest a unary call (or a stream's first response) may take before
    /// the server answers DEADLINE_EXCEEDED. Callers' shorter deadlines
    /// (`grpc-timeout`) are honoured by tonic as well.
    #[serde(with = "duration")]
    pub request_timeout: Duration,
    /// Requests handled at once across all connections; beyond it requests
    /// are shed with UNAVAILABLE instead of queueing, so callers back off
    /// and latency stays bounded.
    pub concurrency_limit: NonZeroUsize,
    /// TCP keepalive on accepted connections, to notice vanished peers.
    #[serde(with = "duration")]
    pub tcp_keepalive: Duration,
    /// HTTP/2 ping interval, to keep idle connections through proxies and
    /// notice dead ones.
    #[serde(with = "duration")]
    pub http2_keepalive_interval: Duration,
    /// How long an HTTP/2 ping may go unanswered before the connection is
    /// closed.
    #[serde(with = "duration")]
    pub http2_keepalive_timeout: Duration,
    /// After shutdown starts, how long in-flight requests (and streams) may
    /// take to finish before [`GrpcServer::serve`] returns anyway. Keep it
    /// below the pod's `terminationGracePeriodSeconds`.
    #[serde(with = "duration")]
    pub shutdown_grace: Duration,
}

impl Default for GrpcServerConfig {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            concurrency_limit: NonZeroUsize::new(1024).unwrap_or(NonZeroUsize::MIN),
            tcp_keepalive: Duration::from_secs(60),
            http2_keepalive_interval: Duration::from_secs(30),
            http2_keepalive_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A file descriptor set given for reflection could not be decoded.
    #[error("invalid file descriptor set for reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The listener is unusable.
    #[error("grpc listener: {0}")]
    Listener(#[source] std::io::Error),
    /// The transport failed.
    #[error("grpc server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Builder and runner for a service's gRPC server; see the module docs.
#[derive(Debug)]
pub struct GrpcServer {
    config: GrpcServerConfig,
    readiness: Readiness,
    routes: RoutesBuilder,
    descriptor_sets: Vec<&'static [u8]>,
    metrics: Option<Metrics>,
    security: GrpcSecurity,
    health_listener: Option<TcpListener>,
}

impl GrpcServer {
    /// A server with its own [`Readiness`], no services yet.
    pub fn new(config: GrpcServerConfig) -> Self {
        Self {
            config,
            readiness: Readiness::new(),
            routes: RoutesBuilder::default(),
            descriptor_sets: Vec::new(),
            metrics: None,
            security: GrpcSecurity::default(),
            health_listener: None,
        }
    }

    /// Authenticates callers and authorises every call as `security` says
    /// (mutual TLS, platform clients; [`crate::grpc_auth`]). Without it the
    /// server is plaintext and trusts every caller.
    pub fn with_security(mut self, security: GrpcSecurity) -> Self {
        self.security = security;
        self
    }

    /// Also serves the health service alone, in plaintext, on `listener`:
    /// for probes that cannot present a client certificate (the kubelet's
    /// gRPC probes). It tells whether the process runs and is ready, and
    /// nothing else.
    pub fn with_health_listener(mut self, listener: TcpListener) -> Self {
        self.health_listener = Some(listener);
        self
    }

    /// Records requests, errors and duration per method into `metrics`
    /// (health checks excepted). Methods are known from the descriptor sets
    /// given to [`file_descriptor_sets`](Self::file_descriptor_sets); calls
    /// to anything else are counted under `unknown`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Uses `readiness` instead of the server's own, e.g. one created before
    /// the server so dependency checks can start early.
    pub fn with_readiness(mut self, readiness: Readiness) -> Self {
        self.readiness = readiness;
        self
    }

    /// The handle whose statuses the health service reports.
    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// Registers encoded `FileDescriptorSet`s (as generated by tonic-prost
    /// build's `file_descriptor_set_path`) so reflection can describe the
    /// services. The health and reflection protos are always included.
    pub fn file_descriptor_sets(mut self, sets: &[&'static [u8]]) -> Self {
        self.descriptor_sets.extend_from_slice(sets);
        self
    }

    /// Mounts a generated tonic server (`FooServiceServer::new(handler)`).
    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.routes.add_service(service);
        self
    }

    /// Serves on `listener` until `shutdown` is cancelled, then marks every
    /// status NOT_SERVING, stops accepting, and waits up to
    /// [`GrpcServerConfig::shutdown_grace`] for in-flight requests.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), ServeError> {
        let local_addr = listener.local_addr().map_err(ServeError::Listener)?;
        let GrpcServer {
            config,
            readiness,
            mut routes,
            descriptor_sets,
            metrics,
            security,
            health_listener,
        } = self;

        let reflection = || {
            descriptor_sets.iter().fold(
                tonic_reflection::server::Builder::configure()
                    .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET),
                |builder, set| builder.register_encoded_file_descriptor_set(set),
            )
        };
        routes
            .add_service(readiness.health_service())
            .add_service(reflection().build_v1()?)
            .add_service(reflection().build_v1alpha()?);

        let incoming = TcpIncoming::from(listener)
            .with_nodelay(Some(true))
            .with_keepalive(Some(config.tcp_keepalive));
        let mut known_sets = descriptor_sets.clone();
        known_sets.extend([
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ]);
        let mut server = Server::builder()
            .trace_fn(telemetry::grpc_request_span)
            .http2_keepalive_interval(Some(config.http2_keepalive_interval))
            .http2_keepalive_timeout(Some(config.http2_keepalive_timeout))
            // Outermost, so requests shed or timed out below are counted too.
            .layer(GrpcMetricsLayer::new(
                metrics,
                metrics::grpc_methods(&known_sets),
            ))
            .layer(ProtectLayer::new(&config))
            .layer(AuthLayer::new(&security, &known_sets));
        let router = server.add_routes(routes.routes());

        // The health-only listener stops after the main one.
        let health_stop = CancellationToken::new();
        let _stop_health = health_stop.clone().drop_guard();
        if let Some(listener) = health_listener {
            let health = readiness.health_service();
            let stop = health_stop.clone();
            let health_addr = listener.local_addr().map_err(ServeError::Listener)?;
            tokio::spawn(async move {
                tracing::info!(addr = %health_addr, "grpc health listener listening");
                let served = Server::builder()
                    .add_service(health)
                    .serve_with_incoming_shutdown(
                        TcpIncoming::from(listener),
                        stop.cancelled_owned(),
                    )
                    .await;
                if let Err(error) = served {
                    tracing::error!(addr = %health_addr, %error, "grpc health listener failed");
                }
            });
        }

        let signal = {
            let shutdown = shutdown.clone();
            let readiness = readiness.clone();
            async move {
                shutdown.cancelled().await;
                tracing::info!(addr = %local_addr, "grpc server shutting down");
                readiness.set_all_not_serving().await;
            }
        };
        let grace_expired = async {
            shutdown.cancelled().await;
            tokio::time::sleep(config.shutdown_grace).await;
        };

        let serving: Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>> =
            match security.tls {
                Some(tls) => {
                    let identities: Arc<[String]> = security.identities.into();
                    let incoming = crate::tls::TlsIncoming::new(incoming, tls, identities);
                    tracing::info!(addr = %local_addr, "grpc server listening (mutual TLS)");
                    Box::pin(router.serve_with_incoming_shutdown(incoming, signal))
                }
                None => {
                    tracing::info!(addr = %local_addr, "grpc server listening");
                    Box::pin(router.serve_with_incoming_shutdown(incoming, signal))
                }
            };
        tokio::select! {
            result = serving => {
                result?;
                tracing::info!(addr = %local_addr, "grpc server stopped");
                Ok(())
            }
            () = grace_expired => {
                // Returning drops the accept loop; connections still open are
                // abandoned to process exit rather than holding it up.
                tracing::warn!(
                    addr = %local_addr,
                    grace = %duration::format(config.shutdown_grace),
                    "grpc requests still running after the shutdown grace period; abandoning them"
                );
                Ok(())
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Request limits

/// Applies timeout, concurrency limit and load shedding to every request but
/// health checks.
#[derive(Debug, Clone)]
struct ProtectLayer {
    timeout: Duration,
    limit: GlobalConcurrencyLimitLayer,
}

impl ProtectLayer {
    fn new(config: &GrpcServerConfig) -> Self {
        Self {
            timeout: config.request_timeout,
            limit: GlobalConcurrencyLimitLayer::new(config.concurrency_limit.get()),
        }
    }
}

type Limited<S> = MapErr<LoadShed<ConcurrencyLimit<Timeout<S>>>, fn(BoxError) -> BoxError>;

impl<S: Clone> Layer<S> for ProtectLayer {
    type Service = Protect<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let limited = ServiceBuilder::new()
            .map_err(limit_error_to_status as fn(BoxError) -> BoxError)
            .load_shed()
            .layer(self.limit.clone())
            .timeout(self.timeout)
            .service(inner.clone());
        Protect {
            direct: inner,
            limited,
        }
    }
}

#[derive(Debug, Clone)]
struct Protect<S> {
    direct: S,
    limited: Limited<S>,
}

impl<S, B> Service<http::Request<B>> for Protect<S>
where
    S: Service<http::Request<B>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is checked per request inside `oneshot`, on whichever
        // path the request takes; checking here would make health checks
        // wait for a concurrency permit.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path().starts_with(HEALTH_PREFIX) {
            let direct = self.direct.clone();
            Box::pin(async move { direct.oneshot(request).await.map_err(Into::into) })
        } else {
            Box::pin(self.limited.clone().oneshot(request))
        }
    }
}

/// Gives tower's timeout and overload errors gRPC codes callers can act on
/// (tonic would report the timeout as UNKNOWN).
fn limit_error_to_status(error: BoxError) -> BoxError {
    if error.is::<tower::timeout::error::Elapsed>() {
        Box::new(Status::deadline_exceeded("request timed out on the server"))
    } else if error.is::<tower::load_shed::error::Overloaded>() {
        Box::new(Status::unavailable("server overloaded, retry with backoff"))
    } else {
        error
    }
}

// ---------------------------------------------------------------------------
// Readiness

/// Per-service readiness reported through the gRPC health service.
///
/// Cloning shares the statuses. The overall status `""` (liveness) starts
/// SERVING; named services start NOT_SERVING when first mentioned.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    reporter: HealthReporter,
    names: Arc<Mutex<BTreeSet<String>>>,
}

impl Readiness {
    /// Liveness SERVING, no named services yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The underlying tonic-health reporter.
    pub fn reporter(&self) -> HealthReporter {
        self.reporter.clone()
    }

    /// A health service reporting these statuses, for servers not built with
    /// [`GrpcServer`].
    pub fn health_service(&self) -> HealthServer<HealthService> {
        HealthServer::new(HealthService::from_health_reporter(self.reporter.clone()))
    }

    /// Sets `service`'s status.
    pub async fn set_serving(&self, service: &str, serving: bool) {
        self.names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(service.to_owned());
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.reporter.set_service_status(service, status).await;
    }

    /// Marks every status, liveness included, NOT_SERVING: the process is
    /// going away and load balancers should stop sending requests.
    pub async fn set_all_not_serving(&self) {
        let names: Vec<String> = self
            .names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .cloned()
            .collect();
        for name in names.iter().map(String::as_str).chain([""]) {
            self.reporter
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
    }

    /// Spawns a task that sets `service` NOT_SERVING, then runs `check` every
    /// `interval` and reports SERVING while it succeeds. A check slower than
    /// `interval` counts as failed. Failures are logged when readiness
    /// changes, not on every check.
    ///
    /// On cancel: the task sets `service` NOT_SERVING and ends. The task
    /// never fails; a panicking check ends it with the status left as is.
    pub fn watch<F, Fut, E>(
        &self,
        service: impl Into<String>,
        mut check: F,
        interval: Duration,
        shutdown: CancellationToken,
    ) -> JoinHandle<()>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send,
        E: std::fmt::Display + Send + 'static,
    {
        let readiness = self.clone();
        let service = service.into();
        tokio::spawn(async move {
            readiness.set_serving(&service, false).await;
            let mut was_ready = None;
            loop {
                let outcome = tokio::select! {
                    () = shutdown.cancelled() => break,
                    outcome = tokio::time::timeout(interval, check()) => outcome,
                };
                let ready = match outcome {
                    Ok(Ok(())) => true,
                    Ok(Err(error)) => {
                        if was_ready != Some(false) {
                            tracing::warn!(service = %service, %error, "not ready: dependency check failed");
                        }
                        false
                    }
                    Err(_elapsed) => {
                        if was_ready != Some(false) {
                            tracing::warn!(service = %service, timeout = %duration::format(interval), "not ready: dependency check timed out");
                        }
                        false
                    }
                };
                if was_ready != Some(ready) {
                    readiness.set_serving(&service, ready).await;
                    if ready {
                        tracing::info!(service = %service, "ready");
                    }
                    was_ready = Some(ready);
                }
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(interval) => {}
                }
            }
            readiness.set_serving(&service, false).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;
    use tonic::transport::Channel;

    use crate::error::ErrorCode;
    use std::sync::atomic::{AtomicBool, Ordering};

    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus as PbStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as AlphaClient;

    use super::*;

    const PROBE: &str = "telenet.test.v1.Probe";

    async fn health(channel: &Channel, service: &str) -> Result<PbStatus, Status> {
        let response = HealthClient::new(channel.clone())
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await?;
        Ok(response.into_inner().status())
    }

    async fn wait_for(channel: &Channel, service: &str, want: PbStatus) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            if health(channel, service).await.ok() == Some(want) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{service} never became {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn server_reports_health_readiness_and_reflection() {
        let listener = crate::shutdown::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let shutdown = CancellationToken::new();

        let metrics = Metrics::new();
        let server = GrpcServer::new(GrpcServerConfig::default())
            .file_descriptor_sets(&[tonic_health::pb::FILE_DESCRIPTOR_SET])
            .with_metrics(metrics.clone());
        let dependency_up = Arc::new(AtomicBool::new(false));
        let check_flag = dependency_up.clone();
        let watcher = server.readiness().watch(
            PROBE,
            move || {
                let up = check_flag.load(Ordering::SeqCst);
                async move { if up { Ok(()) } else { Err("database down") } }
            },
            Duration::from_millis(20),
            shutdown.clone(),
        );
        let serving = tokio::spawn(server.serve(listener, shutdown.clone()));

        let channel = channel(&addr.to_string(), &ClientConfig::default()).expect("channel");
        wait_for(&channel, "", PbStatus::Serving).await;
        wait_for(&channel, PROBE, PbStatus::NotServing).await;
        dependency_up.store(true, Ordering::SeqCst);
        wait_for(&channel, PROBE, PbStatus::Serving).await;

        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = ServerReflectionClient::new(channel.clone())
            .server_reflection_info(tokio_stream::once(request))
            .await
            .expect("reflection call")
            .into_inner();
        let response = stream
            .message()
            .await
            .expect("reflection reply")
            .expect("one reply");
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("unexpected reflection reply: {response:?}");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        assert!(
            names.contains(&"grpc.health.v1.Health".to_owned()),
            "{names:?}"
        );
        assert!(
            names.contains(&"grpc.reflection.v1.ServerReflection".to_owned()),
            "{names:?}"
        );

        let alpha_request = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
            ),
        };
        let mut alpha = AlphaClient::new(channel.clone())
            .server_reflection_info(tokio_stream::once(alpha_request))
            .await
            .expect("v1alpha reflection call")
            .into_inner();
        assert!(alpha.message().await.expect("v1alpha reply").is_some());

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), serving)
            .await
            .expect("server stops promptly")
            .expect("server task")
            .expect("clean shutdown");
        watcher.await.expect("watcher ends on cancel");

        // Reflection calls are measured under their method; health checks are not.
        let text = metrics.encode().expect("metrics encode");
        assert!(
            text.contains(r#"telenet_grpc_server_requests_total{grpc_service="grpc.reflection.v1.ServerReflection",grpc_method="ServerReflectionInfo""#),
            "{text}"
        );
        assert!(
            text.contains(r#"grpc_service="grpc.reflection.v1alpha.ServerReflection""#),
            "{text}"
        );
        assert!(!text.contains("grpc.health"), "{text}");
    }

    fn slow_service(
        delay: Duration,
    ) -> impl Service<
        http::Request<()>,
        Response = http::Response<()>,
        Error = Infallible,
        Future = impl Future<Output = Result<http::Response<()>, Infallible>> + Send,
    > + Clone
    + Send
    + 'static {
        tower::service_fn(move |_request: http::Request<()>| async move {
            tokio::time::sleep(delay).await;
            Ok::<_, Infallible>(http::Response::new(()))
        })
    }

    fn request(path: &str) -> http::Request<()> {
        http::Request::builder()
            .uri(path)
            .body(())
            .expect("valid request")
    }

    fn status_of(error: BoxError) -> Status {
        match error.downcast::<Status>() {
            Ok(status) => *status,
            Err(other) => panic!("expected a Status, got {other}"),
        }
    }

    #[tokio::test]
    async fn slow_requests_time_out_with_deadline_exceeded() {
        let config = GrpcServerConfig {
            request_timeout: Duration::from_millis(20),
            ..GrpcServerConfig::default()
        };
        let service = ProtectLayer::new(&config).layer(slow_service(Duration::from_secs(5)));
        let error = service
            .oneshot(request("/telenet.x.v1.X/Slow"))
            .await
            .expect_err("times out");
        assert_eq!(status_of(error).code(), Code::DeadlineExceeded);
    }

    #[tokio::test]
    async fn excess_requests_are_shed_but_health_checks_pass() {
        let config = GrpcServerConfig {
            concurrency_limit: NonZeroUsize::MIN,
            ..GrpcServerConfig::default()
        };
        let service = ProtectLayer::new(&config).layer(slow_service(Duration::from_millis(300)));

        let busy = tokio::spawn(service.clone().oneshot(request("/telenet.x.v1.X/Slow")));
        tokio::time::sleep(Duration::from_millis(50)).await;

        let error = service
            .clone()
            .oneshot(request("/telenet.x.v1.X/Slow"))
            .await
            .expect_err("shed while the only permit is taken");
        let status = status_of(error);
        assert_eq!(status.code(), Code::Unavailable);
        assert!(is_retryable(&status));

        service
            .clone()
            .oneshot(request("/grpc.health.v1.Health/Check"))
            .await
            .expect("health check bypasses the limit");
        busy.await.expect("task").expect("first request completes");
    }

    #[test]
    fn retryable_codes() {
        assert!(is_retryable(&Status::unavailable("")));
        assert!(is_retryable(&Status::deadline_exceeded("")));
        assert!(is_retryable(&Status::resource_exhausted("")));
        assert!(!is_retryable(&Status::cancelled("")));
        assert!(!is_retryable(&Status::not_found("")));

        #[derive(Debug, thiserror::Error)]
        #[error("upload too large")]
        struct TooLarge;
        impl crate::error::ServiceError for TooLarge {
            fn code(&self) -> ErrorCode {
                ErrorCode::PayloadTooLarge
            }
        }
        assert!(!is_retryable(&crate::error::to_status(&TooLarge)));

        let timeout = Status::from_error(Box::new(tonic::TimeoutExpired(())));
        assert_eq!(timeout.code(), Code::Cancelled);
        assert!(is_retryable(&timeout));
    }

    #[test]
    fn backoff_doubles_and_caps_and_jitter_stays_in_range() {
        let policy = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
        };
        assert_eq!(policy.backoff(1), Duration::from_millis(100));
        assert_eq!(policy.backoff(2), Duration::from_millis(200));
        assert_eq!(policy.backoff(3), Duration::from_millis(350));
        assert_eq!(policy.backoff(60), Duration::from_millis(350));
        for _ in 0..100 {
            let delay = jittered(Duration::from_millis(100));
            assert!(delay >= Duration::from_millis(50) && delay <= Duration::from_millis(100));
        }
    }

    #[tokio::test]
    async fn channel_validates_endpoint() {
        assert!(matches!(
            channel("https://contacts:50051", &ClientConfig::default()),
            Err(ChannelError::TlsUnsupported(_))
        ));
        assert!(matches!(
            channel("http://bad host:1", &ClientConfig::default()),
            Err(ChannelError::InvalidEndpoint { .. })
        ));
        assert!(channel("contacts:50051", &ClientConfig::default()).is_ok());
    }

    #[test]
    fn channel_outside_runtime_is_an_error() {
        assert!(matches!(
            channel("localhost:1", &ClientConfig::default()),
            Err(ChannelError::NoRuntime(_))
        ));
    }

    #[tokio::test]
    async fn unreachable_server_is_unavailable() {
        // Port 1 on localhost refuses connections.
        let channel = channel("127.0.0.1:1", &ClientConfig::default()).expect("lazy channel");
        let status = health(&channel, "").await.expect_err("nobody listens");
        assert_eq!(status.code(), Code::Unavailable);
        assert!(is_retryable(&status));
    }

    #[test]
    fn server_config_loads_from_env() {
        #[derive(Debug, Default, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        struct Service {
            grpc: GrpcServerConfig,
            contacts: ClientConfig,
        }
        let env = [
            ("TELENET_GRPC__CONCURRENCY_LIMIT", "10"),
            ("TELENET_GRPC__REQUEST_TIMEOUT", "5s"),
            ("TELENET_CONTACTS__CONNECT_TIMEOUT", "250ms"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let config: Service = crate::config::load_with_env(None, (), env).expect("loads");
        assert_eq!(config.grpc.concurrency_limit.get(), 10);
        assert_eq!(config.grpc.request_timeout, Duration::from_secs(5));
        assert_eq!(config.contacts.connect_timeout, Duration::from_millis(250));

        let zero = [("TELENET_GRPC__CONCURRENCY_LIMIT".to_owned(), "0".to_owned())];
        let error =
            crate::config::load_with_env::<Service, _>(None, (), zero).expect_err("zero limit");
        assert_eq!(error.issues()[0].key, "grpc.concurrency_limit");
    }

    #[test]
    fn config_defaults_round_trip_through_serde() {
        let json = serde_json::to_value(GrpcServerConfig::default()).expect("serialize");
        assert_eq!(json["request_timeout"], "30s");
        let back: GrpcServerConfig = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back, GrpcServerConfig::default());
    }
}
