//! Prometheus metrics: one [`Metrics`] handle per process, created where the
//! process starts and passed down to whatever records (the gRPC server, the
//! HTTP listeners, the bus, the outbox relays), and
//! served as the Prometheus text format on `GET /metrics` by [`serve`].
//!
//! The metrics of the shared plumbing (gRPC and HTTP servers, bus, outbox)
//! are declared here with their help text. Each service declares its own in
//! its `metrics.rs` through [`Metrics::register`], and the client stack its
//! `telenet_grpc_client_…` pair in [`crate::client`]; `docs/metrics.md` lists
//! them all for operators. Histograms of a latency use the shared
//! [`LATENCY_BUCKETS`] ([`latency_histogram`], [`histograms`]). Label values
//! are always from small, known sets (route templates, method names, routing
//! keys, consumer groups, outcomes), never ids or raw paths, so a scrape
//! stays small however much traffic there is.
//!
//! ```
//! use std::time::Duration;
//! use telenet_kit::metrics::Metrics;
//!
//! let metrics = Metrics::new();
//! metrics.observe_publish(["inbound.message"], true, Duration::from_millis(12));
//! let text = metrics.encode().expect("encodes");
//! assert!(text.contains("telenet_bus_publish_duration_seconds_count 1"));
//! ```
//!
//! Handles are cheap to clone and clones share the registry. A handle made
//! with [`Metrics::default`] records into a registry nobody serves, which is
//! what tests and tools that do not care about metrics use.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body::Body as HttpBody;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tower::{Layer, Service};

use crate::call_status::{RecordCall, StatusBody};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `Content-Type` of the Prometheus text exposition format (0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds (seconds) of the latency histograms every TELENET metric
/// shares (`docs/metrics.md`): from a millisecond (a local gRPC hop) to half
/// a minute (the longest request timeout).
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Label value for a gRPC method or HTTP route the server does not serve:
/// clients choose paths freely, and every distinct path would otherwise
/// become a series of its own.
pub const UNKNOWN: &str = "unknown";

/// Label value of `route` for HTTP requests that matched no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// gRPC paths that are not measured: probes hit them every few seconds and
/// say nothing about the service's traffic (the same paths get no trace span).
const UNMEASURED_GRPC_PREFIX: &str = "/grpc.health.v1.Health/";

/// A histogram with the shared [`LATENCY_BUCKETS`].
pub fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Histograms by label set `L`, each made by a plain function (so the
/// family's type can be named in a struct).
pub type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Latency histograms ([`latency_histogram`]) by label set `L`.
pub fn histograms<L: Clone + std::hash::Hash + Eq>() -> Histograms<L> {
    Family::new_with_constructor(latency_histogram)
}

/// The value of `series` (a metric's name with its labels, as the text
/// format writes them: `name{label="value"}`) in `text`, a scrape; `None`
/// when the scrape has no such series. For tests and tools that check one
/// value.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrpcLabels {
    grpc_service: String,
    grpc_method: String,
    grpc_code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrpcMethodLabels {
    grpc_service: String,
    grpc_method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    listener: String,
    route: String,
    method: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpRouteLabels {
    listener: String,
    route: String,
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PublishLabels {
    routing_key: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsumeLabels {
    group: String,
    routing_key: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsumeTimeLabels {
    group: String,
    routing_key: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    group: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DbLabels {
    db: String,
}

/// What a consumer decided for a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumeOutcome {
    /// Handled; acknowledged.
    Ack,
    /// Failed for now; back after the retry delay (or dead-lettered by the
    /// bus when the retries are used up).
    Retry,
    /// Can never succeed; moved to the dead-letter queue.
    Dead,
    /// Not handled (shutdown); returned to the queue as it was.
    Requeue,
}

impl ConsumeOutcome {
    fn as_str(self) -> &'static str {
        match self {
            ConsumeOutcome::Ack => "ack",
            ConsumeOutcome::Retry => "retry",
            ConsumeOutcome::Dead => "dead",
            ConsumeOutcome::Requeue => "requeue",
        }
    }
}

/// The process's metrics; see the module docs.
#[derive(Clone, Default)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Metrics registered by services ([`Metrics::register`]), by name.
type Registered = std::collections::HashMap<String, Box<dyn std::any::Any + Send + Sync>>;

struct Inner {
    /// Every metric, with those services registered ([`Metrics::register`])
    /// kept by name beside it.
    registry: std::sync::Mutex<(Registry, Registered)>,
    grpc_requests: Family<GrpcLabels, Counter>,
    grpc_duration: Histograms<GrpcMethodLabels>,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: Histograms<HttpRouteLabels>,
    bus_published: Family<PublishLabels, Counter>,
    bus_publish_duration: Histogram,
    bus_consumed: Family<ConsumeLabels, Counter>,
    bus_consume_duration: Histograms<ConsumeTimeLabels>,
    bus_settle_errors: Family<GroupLabels, Counter>,
    bus_queue_ready: Family<GroupLabels, Gauge>,
    bus_queue_dead: Family<GroupLabels, Gauge>,
    outbox_backlog: Family<DbLabels, Gauge>,
    outbox_oldest_age: Family<DbLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    outbox_relayed: Family<DbLabels, Counter>,
}

impl Default for Inner {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("telenet");
        let inner = Inner {
            grpc_requests: Family::default(),
            grpc_duration: histograms(),
            http_requests: Family::default(),
            http_duration: histograms(),
            bus_published: Family::default(),
            bus_publish_duration: latency_histogram(),
            bus_consumed: Family::default(),
            bus_consume_duration: histograms(),
            bus_settle_errors: Family::default(),
            bus_queue_ready: Family::default(),
            bus_queue_dead: Family::default(),
            outbox_backlog: Family::default(),
            outbox_oldest_age: Family::default(),
            outbox_relayed: Family::default(),
            registry: std::sync::Mutex::new((Registry::default(), Registered::default())),
        };

        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .set(1);
        registry.register(
            "build_info",
            "The running TELENET version (always 1)",
            build_info,
        );
        registry.register(
            "grpc_server_requests",
            "gRPC requests handled, by service, method and status code",
            inner.grpc_requests.clone(),
        );
        registry.register(
            "grpc_server_request_duration_seconds",
            "Time from a gRPC request's arrival until its response finished",
            inner.grpc_duration.clone(),
        );
        registry.register(
            "http_server_requests",
            "HTTP requests handled, by listener, route template, method and status",
            inner.http_requests.clone(),
        );
        registry.register(
            "http_server_request_duration_seconds",
            "Time from an HTTP request's arrival until its response was ready",
            inner.http_duration.clone(),
        );
        registry.register(
            "bus_published_events",
            "Events published to the bus, by routing key and outcome (ok: confirmed by the broker; error: not)",
            inner.bus_published.clone(),
        );
        registry.register(
            "bus_publish_duration_seconds",
            "Time one publish call (a batch of events) took until the broker confirmed it",
            inner.bus_publish_duration.clone(),
        );
        registry.register(
            "bus_consumed_events",
            "Deliveries settled by consumers, by group, routing key and outcome (ack, retry, dead, requeue)",
            inner.bus_consumed.clone(),
        );
        registry.register(
            "bus_consume_duration_seconds",
            "Time from a delivery reaching its consumer until the consumer settled it",
            inner.bus_consume_duration.clone(),
        );
        registry.register(
            "bus_settle_errors",
            "Deliveries the consumer could not settle (the broker will deliver them again)",
            inner.bus_settle_errors.clone(),
        );
        registry.register(
            "bus_queue_ready_messages",
            "Messages waiting in a consumer group's queue, not yet delivered (queue lag)",
            inner.bus_queue_ready.clone(),
        );
        registry.register(
            "bus_queue_dead_letters",
            "Messages in a consumer group's dead-letter queue",
            inner.bus_queue_dead.clone(),
        );
        registry.register(
            "outbox_backlog_events",
            "Events committed to a service database's outbox and not yet published",
            inner.outbox_backlog.clone(),
        );
        registry.register(
            "outbox_oldest_event_age_seconds",
            "Age of the oldest unpublished outbox event (0 when the outbox is empty)",
            inner.outbox_oldest_age.clone(),
        );
        registry.register(
            "outbox_relayed_events",
            "Outbox events published by the relay",
            inner.outbox_relayed.clone(),
        );
        Inner {
            registry: std::sync::Mutex::new((registry, Registered::default())),
            ..inner
        }
    }
}

impl Metrics {
    /// A fresh registry with the shared plumbing's metrics declared; the
    /// services and the client stack register theirs ([`Metrics::register`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares a service's own metric `telenet_<name>` with `help`, made by
    /// `make` on first registration; later registrations of the same name
    /// (a second instance of the service in this process) get the same
    /// metric back, so both count into one series.
    ///
    /// ```
    /// use prometheus_client::metrics::counter::Counter;
    /// let metrics = telenet_kit::metrics::Metrics::new();
    /// let sent: Counter = metrics.register("example_sent", "Things sent", Counter::default);
    /// sent.inc();
    /// let again: Counter = metrics.register("example_sent", "Things sent", Counter::default);
    /// assert_eq!(again.get(), 1);
    /// assert!(metrics.encode().unwrap().contains("telenet_example_sent_total 1"));
    /// ```
    pub fn register<M>(&self, name: &str, help: &str, make: impl FnOnce() -> M) -> M
    where
        M: prometheus_client::registry::Metric + Clone + Send + Sync + 'static,
    {
        let mut guard = match self.inner.registry.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let (registry, known) = &mut *guard;
        if let Some(existing) = known.get(name).and_then(|m| m.downcast_ref::<M>()) {
            return existing.clone();
        }
        let metric = make();
        registry.register(name, help, metric.clone());
        known.insert(name.to_owned(), Box::new(metric.clone()));
        metric
    }

    /// The current values in the Prometheus text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        let guard = match self.inner.registry.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        prometheus_client::encoding::prometheus_text::encode(&mut text, &guard.0)?;
        Ok(text)
    }

    /// One finished gRPC request.
    pub fn observe_grpc(&self, service: &str, method: &str, code: Code, elapsed: Duration) {
        self.inner
            .grpc_requests
            .get_or_create(&GrpcLabels {
                grpc_service: service.to_owned(),
                grpc_method: method.to_owned(),
                grpc_code: code_name(code).to_owned(),
            })
            .inc();
        self.inner
            .grpc_duration
            .get_or_create(&GrpcMethodLabels {
                grpc_service: service.to_owned(),
                grpc_method: method.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// One answered HTTP request. `route` is the route template
    /// (`/webhooks/{channel_id}`), never the raw path.
    pub fn observe_http(
        &self,
        listener: &str,
        route: &str,
        method: &http::Method,
        status: http::StatusCode,
        elapsed: Duration,
    ) {
        let method = method_label(method);
        self.inner
            .http_requests
            .get_or_create(&HttpLabels {
                listener: listener.to_owned(),
                route: route.to_owned(),
                method: method.to_owned(),
                status: status.as_str().to_owned(),
            })
            .inc();
        self.inner
            .http_duration
            .get_or_create(&HttpRouteLabels {
                listener: listener.to_owned(),
                route: route.to_owned(),
                method: method.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// One publish call of `routing_keys` (one per event) that took
    /// `elapsed` and was confirmed (`ok`) or not.
    pub fn observe_publish<'a>(
        &self,
        routing_keys: impl IntoIterator<Item = &'a str>,
        ok: bool,
        elapsed: Duration,
    ) {
        let outcome = if ok { "ok" } else { "error" };
        for key in routing_keys {
            self.inner
                .bus_published
                .get_or_create(&PublishLabels {
                    routing_key: key.to_owned(),
                    outcome: outcome.to_owned(),
                })
                .inc();
        }
        self.inner
            .bus_publish_duration
            .observe(elapsed.as_secs_f64());
    }

    /// One delivery settled by a consumer of `group`, `elapsed` after it
    /// reached the consumer.
    pub fn observe_consume(
        &self,
        group: &str,
        routing_key: &str,
        outcome: ConsumeOutcome,
        elapsed: Duration,
    ) {
        self.inner
            .bus_consumed
            .get_or_create(&ConsumeLabels {
                group: group.to_owned(),
                routing_key: routing_key.to_owned(),
                outcome: outcome.as_str().to_owned(),
            })
            .inc();
        self.inner
            .bus_consume_duration
            .get_or_create(&ConsumeTimeLabels {
                group: group.to_owned(),
                routing_key: routing_key.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// A delivery of `group` that could not be settled.
    pub fn count_settle_error(&self, group: &str) {
        self.inner
            .bus_settle_errors
            .get_or_create(&GroupLabels {
                group: group.to_owned(),
            })
            .inc();
    }

    /// The depth of a group's queue and dead-letter queue, as last polled.
    pub fn set_queue_depth(&self, group: &str, ready: u64, dead_letters: u64) {
        let labels = GroupLabels {
            group: group.to_owned(),
        };
        self.inner
            .bus_queue_ready
            .get_or_create(&labels)
            .set(saturating_i64(ready));
        self.inner
            .bus_queue_dead
            .get_or_create(&labels)
            .set(saturating_i64(dead_letters));
    }

    /// The outbox of database `db` (the owning service's name) as last
    /// counted: `backlog` events waiting, the oldest `oldest_age` old.
    pub fn set_outbox_backlog(&self, db: &str, backlog: u64, oldest_age: Duration) {
        let labels = DbLabels { db: db.to_owned() };
        self.inner
            .outbox_backlog
            .get_or_create(&labels)
            .set(saturating_i64(backlog));
        self.inner
            .outbox_oldest_age
            .get_or_create(&labels)
            .set(oldest_age.as_secs_f64());
    }

    /// `count` events of database `db`'s outbox published.
    pub fn count_outbox_relayed(&self, db: &str, count: u64) {
        self.inner
            .outbox_relayed
            .get_or_create(&DbLabels { db: db.to_owned() })
            .inc_by(count);
    }

    /// A tower layer recording [`Metrics::observe_http`] for every request
    /// of an axum router, labelled `listener` (e.g. `gateway`, `webhooks`).
    /// Add it with `Router::layer`, so the matched route is known.
    pub fn http_layer(&self, listener: &'static str) -> HttpMetricsLayer {
        HttpMetricsLayer {
            metrics: self.clone(),
            listener,
        }
    }
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// gRPC code names as in the specification (`OK`, `NOT_FOUND`, …).
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Standard methods by name; anything else (clients may invent methods) is
/// `OTHER`.
fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

// ---------------------------------------------------------------------------
// Serving

/// The `GET /metrics` endpoint.
pub fn router(metrics: Metrics) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move { scrape(&metrics) }
        }),
    )
}

fn scrape(metrics: &Metrics) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    match metrics.encode() {
        Ok(text) => ([(http::header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot encode metrics");
            http::StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Serves [`router`] on `listener` until `token` is cancelled, with the
/// read timeouts of every HTTP listener ([`crate::http::serve`]).
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    config: crate::http::HttpServerConfig,
    token: CancellationToken,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "metrics listening on /metrics");
    }
    crate::http::serve(listener, router(metrics), config, token).await
}

// ---------------------------------------------------------------------------
// gRPC: rate, errors and duration per method

/// The gRPC methods a server serves, as `/package.Service/Method` paths,
/// read from encoded `FileDescriptorSet`s. Undecodable sets add nothing
/// (reflection reports them when the server starts).
pub(crate) fn grpc_methods(sets: &[&[u8]]) -> HashSet<String> {
    use prost::Message as _;
    let mut methods = HashSet::new();
    for set in sets {
        let Ok(set) = prost_types::FileDescriptorSet::decode(*set) else {
            continue;
        };
        for file in set.file {
            let package = file.package.unwrap_or_default();
            for service in file.service {
                let service_name = service.name.unwrap_or_default();
                let full = if package.is_empty() {
                    service_name
                } else {
                    format!("{package}.{service_name}")
                };
                for method in service.method {
                    methods.insert(format!("/{full}/{}", method.name.unwrap_or_default()));
                }
            }
        }
    }
    methods
}

/// Records [`Metrics::observe_grpc`] for every request but health checks,
/// when the response body has been sent (streams included); see
/// [`crate::grpc::GrpcServer::with_metrics`].
#[derive(Clone)]
pub(crate) struct GrpcMetricsLayer {
    metrics: Option<Metrics>,
    known: Arc<HashSet<String>>,
}

impl GrpcMetricsLayer {
    pub(crate) fn new(metrics: Option<Metrics>, known: HashSet<String>) -> Self {
        Self {
            metrics,
            known: Arc::new(known),
        }
    }
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService {
            inner,
            metrics: self.metrics.clone(),
            known: self.known.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct GrpcMetricsService<S> {
    inner: S,
    metrics: Option<Metrics>,
    known: Arc<HashSet<String>>,
}

impl<S> GrpcMetricsService<S> {
    /// `(service, method)` labels of a request path, or `None` when the
    /// path is not measured.
    fn labels_of(&self, path: &str) -> Option<(String, String)> {
        if path.starts_with(UNMEASURED_GRPC_PREFIX) {
            return None;
        }
        if !self.known.contains(path) {
            return Some((UNKNOWN.to_owned(), UNKNOWN.to_owned()));
        }
        let full = path.trim_start_matches('/');
        let (service, method) = full.split_once('/').unwrap_or((full, ""));
        Some((service.to_owned(), method.to_owned()))
    }
}

impl<S, B, ResBody> Service<http::Request<B>> for GrpcMetricsService<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    ResBody: HttpBody + Send + 'static,
{
    type Response = http::Response<StatusBody<ResBody, GrpcRecorder>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let measured = self
            .metrics
            .clone()
            .and_then(|metrics| Some((metrics, self.labels_of(request.uri().path())?)));
        let started = Instant::now();
        let response = self.inner.call(request);
        Box::pin(async move {
            let Some((metrics, (service, method))) = measured else {
                return match response.await {
                    Ok(response) => Ok(StatusBody::wrap(response, None)),
                    Err(error) => Err(error.into()),
                };
            };
            let recorder = GrpcRecorder {
                metrics,
                service,
                method,
                started,
            };
            match response.await {
                Ok(response) => Ok(StatusBody::wrap(response, Some(recorder))),
                Err(error) => {
                    let error = error.into();
                    let code = error
                        .downcast_ref::<tonic::Status>()
                        .map_or(Code::Unknown, tonic::Status::code);
                    recorder.observe(code);
                    Err(error)
                }
            }
        })
    }
}

/// Records a served call in [`Metrics::observe_grpc`].
pub(crate) struct GrpcRecorder {
    metrics: Metrics,
    service: String,
    method: String,
    started: Instant,
}

impl GrpcRecorder {
    fn observe(self, code: Code) {
        self.metrics
            .observe_grpc(&self.service, &self.method, code, self.started.elapsed());
    }
}

impl<E> RecordCall<E> for GrpcRecorder {
    /// A response body that fails says nothing of the call's status.
    fn code_of_error(&self, _: &E) -> Code {
        Code::Unknown
    }

    /// Every gRPC response ends with a status; one without is broken.
    fn code_without_status(&self) -> Code {
        Code::Unknown
    }

    fn record(self, code: Code) {
        self.observe(code);
    }
}

// ---------------------------------------------------------------------------
// HTTP: rate, errors and duration per route

/// See [`Metrics::http_layer`].
#[derive(Clone)]
pub struct HttpMetricsLayer {
    metrics: Metrics,
    listener: &'static str,
}

impl<S> Layer<S> for HttpMetricsLayer {
    type Service = HttpMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpMetricsService {
            inner,
            metrics: self.metrics.clone(),
            listener: self.listener,
        }
    }
}

/// The service [`HttpMetricsLayer`] wraps around each route.
#[derive(Clone)]
pub struct HttpMetricsService<S> {
    inner: S,
    metrics: Metrics,
    listener: &'static str,
}

impl<S, B, ResBody> Service<http::Request<B>> for HttpMetricsService<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: 'static,
    S::Error: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let route = request
            .extensions()
            .get::<axum::extract::MatchedPath>()
            .map_or(UNMATCHED_ROUTE, |path| path.as_str())
            .to_owned();
        let method = request.method().clone();
        let metrics = self.metrics.clone();
        let listener = self.listener;
        let started = Instant::now();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            if let Ok(response) = &response {
                metrics.observe_http(
                    listener,
                    &route,
                    &method,
                    response.status(),
                    started.elapsed(),
                );
            }
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Frame;

    #[test]
    fn every_metric_is_declared_with_help_and_type() {
        // Families without series are left out of a scrape: record one of each.
        let metrics = Metrics::new();
        let tick = Duration::from_millis(1);
        metrics.observe_grpc("s", "m", Code::Ok, tick);
        metrics.observe_http("l", "/r", &http::Method::GET, http::StatusCode::OK, tick);
        metrics.observe_publish(["k"], true, tick);
        metrics.observe_consume("g", "k", ConsumeOutcome::Ack, tick);
        metrics.count_settle_error("g");
        metrics.set_queue_depth("g", 0, 0);
        metrics.set_outbox_backlog("d", 0, Duration::ZERO);
        metrics.count_outbox_relayed("d", 1);
        let text = metrics.encode().expect("encodes");
        for name in [
            "telenet_build_info",
            "telenet_grpc_server_requests_total",
            "telenet_grpc_server_request_duration_seconds",
            "telenet_http_server_requests_total",
            "telenet_http_server_request_duration_seconds",
            "telenet_bus_published_events_total",
            "telenet_bus_publish_duration_seconds",
            "telenet_bus_consumed_events_total",
            "telenet_bus_consume_duration_seconds",
            "telenet_bus_settle_errors_total",
            "telenet_bus_queue_ready_messages",
            "telenet_bus_queue_dead_letters",
            "telenet_outbox_backlog_events",
            "telenet_outbox_oldest_event_age_seconds",
            "telenet_outbox_relayed_events_total",
        ] {
            assert!(text.contains(&format!("# HELP {name} ")), "{name}:\n{text}");
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}:\n{text}");
        }
        assert_eq!(
            sample(
                &text,
                &format!(
                    "telenet_build_info{{version=\"{}\"}}",
                    env!("CARGO_PKG_VERSION")
                )
            ),
            Some(1.0)
        );
    }

    #[test]
    fn recorded_values_show_up_with_their_labels() {
        let metrics = Metrics::new();
        metrics.observe_publish(
            ["inbound.message", "inbound.message"],
            true,
            Duration::from_millis(3),
        );
        metrics.observe_consume(
            "dispatch",
            "outbound.requested",
            ConsumeOutcome::Retry,
            Duration::from_millis(5),
        );
        metrics.set_queue_depth("dispatch", 7, 1);
        metrics.set_outbox_backlog("conversations", 3, Duration::from_secs(2));
        metrics.count_outbox_relayed("conversations", 5);
        metrics.count_settle_error("dispatch");
        let text = metrics.encode().expect("encodes");
        for (series, value) in [
            (
                r#"telenet_bus_published_events_total{routing_key="inbound.message",outcome="ok"}"#,
                2.0,
            ),
            ("telenet_bus_publish_duration_seconds_count", 1.0),
            (
                r#"telenet_bus_consumed_events_total{group="dispatch",routing_key="outbound.requested",outcome="retry"}"#,
                1.0,
            ),
            (r#"telenet_bus_queue_ready_messages{group="dispatch"}"#, 7.0),
            (r#"telenet_bus_queue_dead_letters{group="dispatch"}"#, 1.0),
            (r#"telenet_outbox_backlog_events{db="conversations"}"#, 3.0),
            (
                r#"telenet_outbox_oldest_event_age_seconds{db="conversations"}"#,
                2.0,
            ),
            (
                r#"telenet_outbox_relayed_events_total{db="conversations"}"#,
                5.0,
            ),
            (r#"telenet_bus_settle_errors_total{group="dispatch"}"#, 1.0),
        ] {
            assert_eq!(sample(&text, series), Some(value), "{series}:\n{text}");
        }
    }

    #[test]
    fn methods_come_from_descriptor_sets() {
        let methods = grpc_methods(&[tonic_health::pb::FILE_DESCRIPTOR_SET, b"garbage"]);
        assert!(
            methods.contains("/grpc.health.v1.Health/Check"),
            "{methods:?}"
        );
        assert!(
            methods.contains("/grpc.health.v1.Health/Watch"),
            "{methods:?}"
        );
    }

    /// A stand-in for tonic's routes: answers by path.
    #[derive(Clone)]
    struct Fake;

    impl Service<http::Request<()>> for Fake {
        type Response = http::Response<tonic::body::Body>;
        type Error = BoxError;
        type Future =
            Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send + 'static>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<()>) -> Self::Future {
            let path = request.uri().path().to_owned();
            Box::pin(async move {
                match path.as_str() {
                    "/telenet.test.v1.Probe/Fail" => Ok(tonic::Status::not_found("no").into_http()),
                    "/telenet.test.v1.Probe/Shed" => {
                        Err(Box::new(tonic::Status::unavailable("busy")) as BoxError)
                    }
                    _ => {
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                        let body = http_body_util::StreamBody::new(futures_stream(trailers));
                        Ok(http::Response::new(tonic::body::Body::new(body)))
                    }
                }
            })
        }
    }

    fn futures_stream(
        trailers: http::HeaderMap,
    ) -> impl tokio_stream::Stream<Item = Result<Frame<bytes::Bytes>, std::convert::Infallible>>
    {
        tokio_stream::iter([
            Ok(Frame::data(bytes::Bytes::from_static(b"\0\0\0\0\0"))),
            Ok(Frame::trailers(trailers)),
        ])
    }

    async fn drive(service: &mut GrpcMetricsService<Fake>, path: &str) {
        use http_body_util::BodyExt as _;
        let request = http::Request::builder()
            .uri(path)
            .body(())
            .expect("request");
        if let Ok(response) = service.call(request).await {
            let _ = response.into_body().collect().await;
        }
    }

    #[tokio::test]
    async fn grpc_layer_counts_codes_from_trailers_headers_and_errors() {
        let metrics = Metrics::new();
        let known = HashSet::from([
            "/telenet.test.v1.Probe/Ok".to_owned(),
            "/telenet.test.v1.Probe/Fail".to_owned(),
            "/telenet.test.v1.Probe/Shed".to_owned(),
        ]);
        let mut service = GrpcMetricsLayer::new(Some(metrics.clone()), known).layer(Fake);
        drive(&mut service, "/telenet.test.v1.Probe/Ok").await;
        drive(&mut service, "/telenet.test.v1.Probe/Ok").await;
        drive(&mut service, "/telenet.test.v1.Probe/Fail").await;
        drive(&mut service, "/telenet.test.v1.Probe/Shed").await;
        drive(&mut service, "/made.up.Service/Anything").await;
        drive(&mut service, "/grpc.health.v1.Health/Check").await;
        let text = metrics.encode().expect("encodes");
        let series = |method: &str, code: &str| {
            format!(
                r#"telenet_grpc_server_requests_total{{grpc_service="telenet.test.v1.Probe",grpc_method="{method}",grpc_code="{code}"}}"#
            )
        };
        assert_eq!(sample(&text, &series("Ok", "OK")), Some(2.0), "{text}");
        assert_eq!(
            sample(&text, &series("Fail", "NOT_FOUND")),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            sample(&text, &series("Shed", "UNAVAILABLE")),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                r#"telenet_grpc_server_requests_total{grpc_service="unknown",grpc_method="unknown",grpc_code="OK"}"#
            ),
            Some(1.0),
            "{text}"
        );
        assert!(
            !text.contains("grpc.health"),
            "health checks are not measured:\n{text}"
        );
        assert_eq!(
            sample(
                &text,
                r#"telenet_grpc_server_request_duration_seconds_count{grpc_service="telenet.test.v1.Probe",grpc_method="Ok"}"#
            ),
            Some(2.0),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_response_dropped_before_its_status_counts_as_cancelled() {
        let metrics = Metrics::new();
        let known = HashSet::from(["/telenet.test.v1.Probe/Ok".to_owned()]);
        let mut service = GrpcMetricsLayer::new(Some(metrics.clone()), known).layer(Fake);
        let request = http::Request::builder()
            .uri("/telenet.test.v1.Probe/Ok")
            .body(())
            .expect("request");
        let response = service.call(request).await.expect("response");
        drop(response);
        let text = metrics.encode().expect("encodes");
        assert_eq!(
            sample(
                &text,
                r#"telenet_grpc_server_requests_total{grpc_service="telenet.test.v1.Probe",grpc_method="Ok",grpc_code="CANCELLED"}"#
            ),
            Some(1.0),
            "{text}"
        );
    }

    #[tokio::test]
    async fn http_layer_labels_route_templates_not_paths() {
        use tower::ServiceExt as _;
        let metrics = Metrics::new();
        let app = axum::Router::new()
            .route(
                "/items/{id}",
                axum::routing::get(|| async { "item" })
                    .post(|| async { (http::StatusCode::CONFLICT, "taken") }),
            )
            .layer(metrics.http_layer("test"));
        for (method, path) in [
            ("GET", "/items/1"),
            ("GET", "/items/2"),
            ("POST", "/items/3"),
            ("DELETE", "/items/4"),
            ("GET", "/nowhere/5"),
        ] {
            let request = http::Request::builder()
                .method(method)
                .uri(path)
                .body(axum::body::Body::empty())
                .expect("request");
            let _ = app.clone().oneshot(request).await;
        }
        let text = metrics.encode().expect("encodes");
        let series = |route: &str, method: &str, status: u16| {
            format!(
                r#"telenet_http_server_requests_total{{listener="test",route="{route}",method="{method}",status="{status}"}}"#
            )
        };
        assert_eq!(
            sample(&text, &series("/items/{id}", "GET", 200)),
            Some(2.0),
            "{text}"
        );
        assert_eq!(
            sample(&text, &series("/items/{id}", "POST", 409)),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            sample(&text, &series("/items/{id}", "DELETE", 405)),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            sample(&text, &series("unmatched", "GET", 404)),
            Some(1.0),
            "{text}"
        );
        assert!(!text.contains("/items/1"), "no raw paths:\n{text}");
    }

    #[tokio::test]
    async fn metrics_are_served_in_the_prometheus_text_format() {
        let metrics = Metrics::new();
        metrics.count_outbox_relayed("dispatch", 1);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let token = CancellationToken::new();
        let server = tokio::spawn(serve(listener, metrics, Default::default(), token.clone()));

        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("read");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
            "{answer}"
        );
        assert!(
            answer.contains(r#"telenet_outbox_relayed_events_total{db="dispatch"} 1"#),
            "{answer}"
        );
        token.cancel();
        server.await.expect("joins").expect("serves");
    }
}
