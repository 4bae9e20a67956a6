//! The client stack: how every gRPC call one service makes to another
//! behaves, in one named stack of tower layers rather than in handlers.
//!
//! From the outside in:
//!
//! 1. [`ClientMetrics`]: calls by caller, service, method and status code,
//!    and their duration (`telenet_grpc_client_requests_total`,
//!    `telenet_grpc_client_request_duration_seconds`);
//! 2. [`TracePropagation`]: the current trace context (`traceparent`,
//!    `tracestate`) added to every request's metadata;
//! 3. [`RetryIdempotent`]: calls that are safe to repeat ([`is_idempotent`])
//!    are retried on transient failures with jittered exponential backoff;
//! 4. [`Timeout`]: each attempt is bounded; an attempt that runs out answers
//!    DEADLINE_EXCEEDED marked as the client's own timeout
//!    ([`is_client_timeout`]);
//! 5. the lazily connected [`tonic::transport::Channel`].
//!
//! Each of the four is an [`Around`]: what it does around a call, given the
//! rest of the stack below it; [`Step`] makes it a service over that rest.
//!
//! ```
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use telenet_kit::{grpc, metrics::Metrics};
//! let channel = grpc::client("http://contacts:50051", &grpc::ClientConfig::default(),
//!     &Metrics::new(), "conversations")?;
//! // telenet_proto::contacts::v1::contacts_client::ContactsClient::new(channel)
//! # drop(channel); Ok(()) }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::BodyExt as _;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use tonic::body::Body;
use tonic::{Code, Status};
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt as _};

use serde::{Deserialize, Serialize};
use tonic::transport::{Channel, Endpoint};

use crate::call_status::{RecordCall, StatusBody};
use crate::config::duration;
use crate::error::ErrorCode;
use crate::metrics::{Histograms, Metrics};
use crate::tls::{Tls, TlsConnector};

/// Any error of the stack; tonic turns it back into a [`Status`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

type Stack = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, BoxError>;

/// The channel every gRPC client goes through: the stack over a
/// [`tonic::transport::Channel`]. Cheap to clone (clones share the
/// connection).
///
/// A named type with a named error ([`ClientError`]) rather than a boxed
/// service with a boxed error: futures holding a call through it stay
/// provably `Send`, which the compiler cannot always prove for
/// `Box<dyn Error + Send + Sync>` as an associated error type.
#[derive(Clone)]
pub struct GrpcChannel {
    stack: Stack,
}

impl std::fmt::Debug for GrpcChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcChannel").finish_non_exhaustive()
    }
}

impl Service<http::Request<Body>> for GrpcChannel {
    type Response = http::Response<Body>;
    type Error = ClientError;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, ClientError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ClientError>> {
        self.stack.poll_ready(cx).map_err(ClientError)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let call = self.stack.call(request);
        Box::pin(async move { call.await.map_err(ClientError) })
    }
}

/// Why a call through [`GrpcChannel`] failed before a response arrived
/// (no connection, the client's own timeout…). tonic finds the [`Status`]
/// in its source chain.
#[derive(Debug)]
pub struct ClientError(BoxError);

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// Metadata key set on a DEADLINE_EXCEEDED the client stack made itself
/// (the attempt ran out of time), as opposed to one a service answered.
pub const CLIENT_TIMEOUT_METADATA: &str = "telenet-client-timeout";

/// Method names that are safe to repeat: reads, and calls whose effect is
/// keyed by what the caller sends (upserts, authentication, link signing,
/// probing, transcoding into a cache).
const IDEMPOTENT_PREFIXES: [&str; 5] = ["Get", "List", "Search", "Count", "Probe"];
const IDEMPOTENT_METHODS: [&str; 4] = [
    "UpsertByIdentity",
    "Authenticate",
    "CreateDownloadUrl",
    "Transcode",
];

/// Whether the call at `path` (`/package.Service/Method`) may be retried:
/// repeating it cannot do anything twice.
pub fn is_idempotent(path: &str) -> bool {
    let method = path.rsplit('/').next().unwrap_or_default();
    IDEMPOTENT_PREFIXES
        .iter()
        .any(|prefix| method.starts_with(prefix))
        || IDEMPOTENT_METHODS.contains(&method)
}

/// Whether `status` is the client stack's own timeout.
pub fn is_client_timeout(status: &Status) -> bool {
    status.code() == Code::DeadlineExceeded
        && status.metadata().contains_key(CLIENT_TIMEOUT_METADATA)
}

/// The stack's settings.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// The calling service (metrics label).
    pub caller: &'static str,
    /// Longest wait for one attempt's response to begin; `None` for calls
    /// whose caller bounds them itself (a streamed upload lasts as long as
    /// its bytes take to arrive).
    pub timeout: Option<Duration>,
    /// Retries of idempotent calls.
    pub retry: RetryPolicy,
}

/// The stack over `channel`.
pub fn stack_over<S>(channel: S, config: &StackConfig, metrics: &Metrics) -> GrpcChannel
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let service = tower::ServiceBuilder::new()
        .layer(StepLayer(ClientMetrics::new(metrics, config.caller)))
        .layer(StepLayer(TracePropagation))
        .layer(StepLayer(RetryIdempotent {
            policy: Arc::new(config.retry.clone()),
        }))
        .layer(StepLayer(Timeout {
            timeout: config.timeout,
        }))
        .service(channel.map_err(Into::into));
    GrpcChannel {
        stack: BoxCloneSyncService::new(service),
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

// ---------------------------------------------------------------------------
// Steps

/// The rest of the stack below a step: a service of gRPC calls whose
/// futures may move between threads.
pub trait Calls:
    Service<
        http::Request<Body>,
        Response = http::Response<Body>,
        Error = BoxError,
        Future: Send + 'static,
    >
{
}

impl<S> Calls for S where
    S: Service<
            http::Request<Body>,
            Response = http::Response<Body>,
            Error = BoxError,
            Future: Send + 'static,
        >
{
}

/// What one step of the stack does around each call.
pub trait Around<S: Calls>: Clone {
    /// Makes the call `request` through `inner`, the rest of the stack
    /// below this step (ready: its `poll_ready` answered).
    fn call(&self, inner: &mut S, request: http::Request<Body>) -> BoxFuture<http::Response<Body>>;
}

/// One step of the stack: the rest of the stack `S` with `A` around every
/// call.
#[derive(Clone)]
pub struct Step<S, A> {
    inner: S,
    around: A,
}

impl<S: Calls, A: Around<S>> Service<http::Request<Body>> for Step<S, A> {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<http::Response<Body>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        self.around.call(&mut self.inner, request)
    }
}

/// Puts a step ([`Around`]) over the rest of the stack.
#[derive(Clone)]
pub struct StepLayer<A>(pub A);

impl<S, A: Clone> Layer<S> for StepLayer<A> {
    type Service = Step<S, A>;
    fn layer(&self, inner: S) -> Step<S, A> {
        Step {
            inner,
            around: self.0.clone(),
        }
    }
}

// ---------------------------------------------------------------------------
// Timeout

/// Bounds each attempt; see the module docs.
#[derive(Clone)]
pub struct Timeout {
    timeout: Option<Duration>,
}

impl<S: Calls> Around<S> for Timeout {
    fn call(&self, inner: &mut S, request: http::Request<Body>) -> BoxFuture<http::Response<Body>> {
        let call = inner.call(request);
        let Some(timeout) = self.timeout else {
            return Box::pin(call);
        };
        Box::pin(async move {
            match tokio::time::timeout(timeout, call).await {
                Ok(result) => result,
                Err(_) => Err(Box::new(client_timeout(timeout)) as BoxError),
            }
        })
    }
}

fn client_timeout(timeout: Duration) -> Status {
    let mut status = Status::deadline_exceeded(format!(
        "no answer within {}",
        crate::config::duration::format(timeout)
    ));
    status.metadata_mut().insert(
        CLIENT_TIMEOUT_METADATA,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    status
}

// ---------------------------------------------------------------------------
// Retry of idempotent calls

/// Retries idempotent calls; see the module docs.
#[derive(Clone)]
pub struct RetryIdempotent {
    policy: Arc<RetryPolicy>,
}

impl<S: Calls + Clone + Send + 'static> Around<S> for RetryIdempotent {
    fn call(&self, inner: &mut S, request: http::Request<Body>) -> BoxFuture<http::Response<Body>> {
        let max_attempts = self.policy.max_attempts.max(1);
        if max_attempts == 1 || !is_idempotent(request.uri().path()) {
            return Box::pin(inner.call(request));
        }
        // Every attempt goes through its own clone (tonic's channel is a
        // handle; a clone shares the connection).
        let service = inner.clone();
        let policy = self.policy.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            // Requests of idempotent calls are single small messages; keep
            // the bytes so each attempt sends them again.
            let bytes = body.collect().await?.to_bytes();
            let mut attempt = 1;
            loop {
                let request = http::Request::from_parts(
                    parts.clone(),
                    Body::new(http_body_util::Full::new(bytes.clone())),
                );
                let result = service.clone().oneshot(request).await;
                if attempt >= max_attempts || !worth_retrying(&result) {
                    return result;
                }
                let delay = jittered(policy.backoff(attempt));
                tracing::debug!(
                    attempt,
                    path = %parts.uri.path(),
                    delay = %crate::config::duration::format(delay),
                    "retrying idempotent call"
                );
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
        })
    }
}

/// Whether an attempt's outcome is transient: the transport failed, the
/// attempt timed out, or the service answered UNAVAILABLE,
/// DEADLINE_EXCEEDED or RESOURCE_EXHAUSTED (a rate limit, not "too large").
fn worth_retrying(result: &Result<http::Response<Body>, BoxError>) -> bool {
    match result {
        Ok(response) => status_in(response.headers()).is_some_and(|status| is_retryable(&status)),
        Err(error) => match error.downcast_ref::<Status>() {
            Some(status) => is_retryable(status),
            // The connection could not be made or broke: nothing was
            // answered, so an idempotent call is safe to send again.
            None => true,
        },
    }
}

/// The status of a trailers-only response (how services answer errors),
/// with its metadata.
fn status_in(headers: &http::HeaderMap) -> Option<Status> {
    let code = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    if code == 0 {
        return None;
    }
    let mut status = Status::new(Code::from_i32(code), "");
    *status.metadata_mut() = tonic::metadata::MetadataMap::from_headers(headers.clone());
    Some(status)
}

// ---------------------------------------------------------------------------
// Trace propagation

/// Adds the current trace context to every request; see the module docs.
#[derive(Clone)]
pub struct TracePropagation;

impl<S: Calls> Around<S> for TracePropagation {
    fn call(
        &self,
        inner: &mut S,
        mut request: http::Request<Body>,
    ) -> BoxFuture<http::Response<Body>> {
        crate::telemetry::inject_http(request.headers_mut());
        Box::pin(inner.call(request))
    }
}

// ---------------------------------------------------------------------------
// Metrics

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClientLabels {
    caller: String,
    service: String,
    method: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClientMethodLabels {
    caller: String,
    service: String,
    method: String,
}

type Durations = Histograms<ClientMethodLabels>;

fn duration_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 16,
    ))
}

/// Records every call; see the module docs.
#[derive(Clone)]
pub struct ClientMetrics {
    caller: &'static str,
    requests: Family<ClientLabels, Counter>,
    durations: Durations,
}

impl ClientMetrics {
    /// Registers the client metrics in `metrics` (once per process).
    pub fn new(metrics: &Metrics, caller: &'static str) -> Self {
        Self {
            caller,
            requests: metrics.register(
                "grpc_client_requests",
                "gRPC calls made to other services, by calling service, service, method and status code",
                Family::default,
            ),
            durations: metrics.register(
                "grpc_client_request_duration_seconds",
                "Time from a gRPC call's start until its response finished, retries included",
                || Durations::new_with_constructor(duration_histogram),
            ),
        }
    }
}

impl<S: Calls> Around<S> for ClientMetrics {
    fn call(&self, inner: &mut S, request: http::Request<Body>) -> BoxFuture<http::Response<Body>> {
        let full = request.uri().path().trim_start_matches('/');
        let (service, method) = full.split_once('/').unwrap_or((full, ""));
        let record = CallRecord {
            metrics: self.clone(),
            labels: ClientMethodLabels {
                caller: self.caller.to_owned(),
                service: service.to_owned(),
                method: method.to_owned(),
            },
            started: Instant::now(),
        };
        let call = inner.call(request);
        Box::pin(async move {
            match call.await {
                Ok(response) => Ok(StatusBody::wrap(response, Some(record)).map(Body::new)),
                Err(error) => {
                    let code = error
                        .downcast_ref::<Status>()
                        .map_or(Code::Unavailable, Status::code);
                    record.observe(code);
                    Err(error)
                }
            }
        })
    }
}

/// Records a call in the client metrics.
struct CallRecord {
    metrics: ClientMetrics,
    labels: ClientMethodLabels,
    started: Instant,
}

impl CallRecord {
    fn observe(self, code: Code) {
        let ClientMethodLabels {
            caller,
            service,
            method,
        } = self.labels.clone();
        self.metrics
            .requests
            .get_or_create(&ClientLabels {
                caller,
                service,
                method,
                code: format!("{code:?}"),
            })
            .inc();
        self.metrics
            .durations
            .get_or_create(&self.labels)
            .observe(self.started.elapsed().as_secs_f64());
    }
}

impl RecordCall<Status> for CallRecord {
    fn code_of_error(&self, status: &Status) -> Code {
        status.code()
    }

    /// A response read to its end without a status is taken as answered.
    fn code_without_status(&self) -> Code {
        Code::Ok
    }

    fn record(self, code: Code) {
        self.observe(code);
    }
}

// ---------------------------------------------------------------------------
// Channels and retry policy

/// Client channel tuning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// Longest wait for a TCP connection to be established.
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// Longest wait for one attempt of a call to another service (0: none);
    /// when it runs out, the call answers DEADLINE_EXCEEDED.
    #[serde(with = "duration")]
    pub request_timeout: Duration,
    /// TCP keepalive, to notice vanished peers.
    #[serde(with = "duration")]
    pub tcp_keepalive: Duration,
    /// HTTP/2 ping interval, also on idle connections.
    #[serde(with = "duration")]
    pub http2_keepalive_interval: Duration,
    /// How long a ping may go unanswered before reconnecting.
    #[serde(with = "duration")]
    pub http2_keepalive_timeout: Duration,
    /// Retries of idempotent calls (reads, upserts keyed by the caller)
    /// made through [`client`].
    pub retry: RetryPolicy,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            tcp_keepalive: Duration::from_secs(60),
            http2_keepalive_interval: Duration::from_secs(30),
            http2_keepalive_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
        }
    }
}

/// Why a channel could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The endpoint is not a valid URI.
    #[error("invalid grpc endpoint `{endpoint}`: {source}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// The parse error.
        source: tonic::transport::Error,
    },
    /// The endpoint asks for TLS but no certificates are configured
    /// (`grpc_tls.*`).
    #[error(
        "grpc endpoint `{0}` uses https, but no certificates are configured: set grpc_tls.cert_file, key_file and ca_file, or use http://"
    )]
    TlsUnsupported(String),
    /// The channel's background task needs a Tokio runtime.
    #[error("grpc channel to `{0}` created outside a tokio runtime")]
    NoRuntime(String),
}

/// A lazily connected channel to `endpoint` (`http://host:port`, or
/// `host:port` meaning plain HTTP/2). Connecting happens on first use and
/// again after failures, so a service can start before its dependencies;
/// readiness checks reveal whether they answer.
pub fn channel(endpoint: &str, config: &ClientConfig) -> Result<Channel, ChannelError> {
    connect_lazy(endpoint, config, Some(config.request_timeout), None)
}

/// [`channel`], over mutual TLS with `tls` when given (whatever the
/// endpoint's scheme: `http://` and `https://` both mean TLS then).
pub fn channel_with(
    endpoint: &str,
    config: &ClientConfig,
    tls: Option<&Tls>,
) -> Result<Channel, ChannelError> {
    connect_lazy(endpoint, config, Some(config.request_timeout), tls)
}

fn connect_lazy(
    endpoint: &str,
    config: &ClientConfig,
    timeout: Option<Duration>,
    tls: Option<&Tls>,
) -> Result<Channel, ChannelError> {
    let mut uri = if endpoint.contains("://") {
        endpoint.to_owned()
    } else {
        format!("http://{endpoint}")
    };
    if let Some(rest) = uri.strip_prefix("https://") {
        if tls.is_none() {
            return Err(ChannelError::TlsUnsupported(endpoint.to_owned()));
        }
        // The connector makes every connection TLS; tonic must not try to.
        uri = format!("http://{rest}");
    }
    // connect_lazy spawns the channel's worker and would panic without a
    // runtime.
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(ChannelError::NoRuntime(endpoint.to_owned()));
    }
    let endpoint_config = Endpoint::from_shared(uri)
        .map_err(|source| ChannelError::InvalidEndpoint {
            endpoint: endpoint.to_owned(),
            source,
        })?
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true)
        .tcp_keepalive(Some(config.tcp_keepalive))
        .http2_keep_alive_interval(config.http2_keepalive_interval)
        .keep_alive_timeout(config.http2_keepalive_timeout)
        .keep_alive_while_idle(true);
    let endpoint_config = match timeout {
        Some(timeout) => endpoint_config.timeout(timeout),
        None => endpoint_config,
    };
    Ok(match tls {
        None => endpoint_config.connect_lazy(),
        Some(tls) => endpoint_config.connect_with_connector_lazy(TlsConnector::new(
            tls.clone(),
            config.connect_timeout,
            config.tcp_keepalive,
        )),
    })
}

/// A client channel to `endpoint` for the service `caller`, through the
/// client stack (this module): metrics (recorded in `metrics`), trace
/// propagation, retry of idempotent calls ([`ClientConfig::retry`]) and a
/// timeout per attempt ([`ClientConfig::request_timeout`]).
pub fn client(
    endpoint: &str,
    config: &ClientConfig,
    metrics: &Metrics,
    caller: &'static str,
) -> Result<GrpcChannel, ChannelError> {
    client_with(endpoint, config, metrics, caller, None)
}

/// [`client`], over mutual TLS with `tls` when given: the process's
/// certificate presented as its identity, the server's verified against the
/// CA for the endpoint's host name.
pub fn client_with(
    endpoint: &str,
    config: &ClientConfig,
    metrics: &Metrics,
    caller: &'static str,
    tls: Option<&Tls>,
) -> Result<GrpcChannel, ChannelError> {
    let channel = connect_lazy(endpoint, config, None, tls)?;
    let stack = StackConfig {
        caller,
        timeout: (!config.request_timeout.is_zero()).then_some(config.request_timeout),
        retry: config.retry.clone(),
    };
    Ok(stack_over(channel, &stack, metrics))
}

/// Retry schedule of idempotent calls ([`crate::client`]): exponential backoff (doubling)
/// with jitter, capped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Total attempts including the first; 1 disables retries.
    pub max_attempts: u32,
    /// Delay before the first retry (before jitter).
    #[serde(with = "duration")]
    pub initial_backoff: Duration,
    /// Upper bound of the delay between attempts.
    #[serde(with = "duration")]
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `retry` (1-based), without jitter.
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1));
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// Whether `status` is worth retrying for an idempotent call.
pub fn is_retryable(status: &Status) -> bool {
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded => true,
        // Not when a TELENET service said the payload is too large: that
        // will not change on retry.
        Code::ResourceExhausted => ErrorCode::from_status(status) == ErrorCode::ResourceExhausted,
        Code::Cancelled => caused_by_client_timeout(status),
        _ => false,
    }
}

fn caused_by_client_timeout(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if error.is::<tonic::TimeoutExpired>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// "Equal jitter": half the delay fixed, half random, so retries from many
/// callers spread out without ever retrying immediately.
pub(crate) fn jittered(delay: Duration) -> Duration {
    let half = delay / 2;
    let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(fastrand::u64(0..=nanos))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::call_status::grpc_status;

    /// A fake upstream answering each call with the next of `codes`
    /// (trailers-only for errors), recording what it received.
    #[derive(Clone, Default)]
    struct Upstream {
        calls: Arc<AtomicU32>,
        bodies: Arc<Mutex<Vec<bytes::Bytes>>>,
        headers: Arc<Mutex<Vec<http::HeaderMap>>>,
        codes: Arc<Vec<Code>>,
        delay: Duration,
    }

    impl Upstream {
        fn answering(codes: &[Code]) -> Self {
            Self {
                codes: Arc::new(codes.to_vec()),
                ..Self::default()
            }
        }

        fn channel(&self, retry: RetryPolicy, timeout: Duration) -> (GrpcChannel, Metrics) {
            let upstream = self.clone();
            let service = tower::service_fn(move |request: http::Request<Body>| {
                let upstream = upstream.clone();
                async move {
                    let n = upstream.calls.fetch_add(1, Ordering::SeqCst) as usize;
                    upstream
                        .headers
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(request.headers().clone());
                    let body = request.into_body().collect().await?.to_bytes();
                    upstream
                        .bodies
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(body);
                    tokio::time::sleep(upstream.delay).await;
                    let code = upstream.codes.get(n).copied().unwrap_or(Code::Ok);
                    let response = http::Response::builder()
                        .header("content-type", "application/grpc")
                        .header("grpc-status", (code as i32).to_string())
                        .body(Body::empty())?;
                    Ok::<_, BoxError>(response)
                }
            });
            let metrics = Metrics::new();
            let config = StackConfig {
                caller: "test",
                timeout: Some(timeout),
                retry,
            };
            (stack_over(service, &config, &metrics), metrics)
        }

        fn calls(&self) -> u32 {
            self.calls.load(Ordering::SeqCst)
        }
    }

    fn quick_retries() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
        }
    }

    fn request(path: &str, body: &'static [u8]) -> http::Request<Body> {
        http::Request::builder()
            .method("POST")
            .uri(format!("http://upstream{path}"))
            .body(Body::new(http_body_util::Full::new(
                bytes::Bytes::from_static(body),
            )))
            .unwrap_or_else(|e| panic!("request: {e}"))
    }

    async fn code_of(channel: GrpcChannel, req: http::Request<Body>) -> Result<Code, BoxError> {
        let response = channel.oneshot(req).await?;
        let code = grpc_status(response.headers()).unwrap_or(Code::Ok);
        // Reading the body to its end records the call.
        let _ = response.into_body().collect().await;
        Ok(code)
    }

    #[test]
    fn idempotent_methods_are_reads_and_keyed_calls() {
        assert!(is_idempotent("/telenet.contacts.v1.Contacts/GetContact"));
        assert!(is_idempotent("/telenet.contacts.v1.Contacts/ListContacts"));
        assert!(is_idempotent(
            "/telenet.contacts.v1.Contacts/UpsertByIdentity"
        ));
        assert!(!is_idempotent(
            "/telenet.conversations.v1.Conversations/SendMessage"
        ));
        assert!(!is_idempotent(
            "/telenet.conversations.v1.Members/CreateToken"
        ));
    }

    #[tokio::test]
    async fn idempotent_calls_are_retried_with_the_same_body_until_they_succeed() {
        let upstream = Upstream::answering(&[Code::Unavailable, Code::Unavailable, Code::Ok]);
        let (channel, _) = upstream.channel(quick_retries(), Duration::from_secs(5));
        let code = code_of(channel, request("/p.S/GetThing", b"abc"))
            .await
            .expect("call");
        assert_eq!(code, Code::Ok);
        assert_eq!(upstream.calls(), 3);
        let bodies = upstream
            .bodies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        assert!(bodies.iter().all(|b| b.as_ref() == b"abc"), "{bodies:?}");
    }

    #[tokio::test]
    async fn retries_stop_at_max_attempts_with_the_last_answer() {
        let upstream = Upstream::answering(&[Code::Unavailable; 5]);
        let (channel, _) = upstream.channel(quick_retries(), Duration::from_secs(5));
        let code = code_of(channel, request("/p.S/GetThing", b""))
            .await
            .expect("call");
        assert_eq!(code, Code::Unavailable);
        assert_eq!(upstream.calls(), 3);
    }

    #[tokio::test]
    async fn calls_with_effects_and_permanent_errors_are_not_retried() {
        let upstream = Upstream::answering(&[Code::Unavailable, Code::Ok]);
        let (channel, _) = upstream.channel(quick_retries(), Duration::from_secs(5));
        let code = code_of(channel, request("/p.S/SendMessage", b""))
            .await
            .expect("call");
        assert_eq!(code, Code::Unavailable);
        assert_eq!(upstream.calls(), 1);

        let upstream = Upstream::answering(&[Code::NotFound, Code::Ok]);
        let (channel, _) = upstream.channel(quick_retries(), Duration::from_secs(5));
        let code = code_of(channel, request("/p.S/GetThing", b""))
            .await
            .expect("call");
        assert_eq!(code, Code::NotFound);
        assert_eq!(upstream.calls(), 1);
    }

    #[tokio::test]
    async fn an_attempt_that_runs_out_of_time_is_the_clients_deadline_exceeded() {
        let upstream = Upstream {
            delay: Duration::from_millis(200),
            ..Upstream::answering(&[Code::Ok])
        };
        let no_retry = RetryPolicy {
            max_attempts: 1,
            ..quick_retries()
        };
        let (channel, _) = upstream.channel(no_retry, Duration::from_millis(20));
        let error = code_of(channel, request("/p.S/SendMessage", b""))
            .await
            .expect_err("times out");
        let status = Status::from_error(error);
        assert_eq!(status.code(), Code::DeadlineExceeded);
        assert!(is_client_timeout(&status), "{status:?}");
        assert!(!is_client_timeout(&Status::deadline_exceeded(
            "a service said so"
        )));
    }

    #[tokio::test]
    async fn calls_are_counted_by_caller_method_and_code() {
        let upstream = Upstream::answering(&[Code::Unavailable, Code::Ok, Code::NotFound]);
        let (channel, metrics) = upstream.channel(quick_retries(), Duration::from_secs(5));
        code_of(channel.clone(), request("/p.S/GetThing", b""))
            .await
            .expect("call");
        code_of(channel, request("/p.S/GetThing", b""))
            .await
            .expect("call");
        let text = metrics.encode().expect("encode");
        assert!(
            text.contains(r#"telenet_grpc_client_requests_total{caller="test",service="p.S",method="GetThing",code="Ok"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"telenet_grpc_client_requests_total{caller="test",service="p.S",method="GetThing",code="NotFound"} 1"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn the_current_trace_context_travels_with_every_call() {
        use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        use tracing_subscriber::layer::SubscriberExt as _;

        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let _guard = tracing::subscriber::set_default(subscriber);
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );

        let upstream = Upstream::answering(&[Code::Ok]);
        let (channel, _) = upstream.channel(quick_retries(), Duration::from_secs(5));
        let span = tracing::info_span!("caller");
        let trace_id = {
            let _entered = span.enter();
            let trace_id = span.context().span().span_context().trace_id();
            code_of(channel, request("/p.S/GetThing", b""))
                .await
                .expect("call");
            trace_id
        };
        let headers = upstream
            .headers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let traceparent = headers[0]
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            traceparent.contains(&trace_id.to_string()),
            "{traceparent:?} carries {trace_id}"
        );
    }
}
