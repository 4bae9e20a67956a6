//! Logs and traces: `tracing` everywhere, exported as OpenTelemetry traces
//! over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and W3C trace
//! context (`traceparent`) carried across gRPC metadata and AMQP headers.
//!
//! ```no_run
//! # async fn run() -> Result<(), telenet_kit::telemetry::TelemetryError> {
//! use telenet_kit::telemetry::{self, LogFormat};
//!
//! // Keep the guard alive for the whole of `main`: dropping it flushes spans.
//! let _telemetry = telemetry::init("contacts", LogFormat::Json, "info")?;
//! # Ok(()) }
//! ```
//!
//! The OpenTelemetry layer is installed even when nothing is exported, so a
//! service that does not export still passes its callers' trace ids on to
//! the services it calls and the events it publishes; without it the trace
//! would break at the first non-exporting hop.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Log filter variable; wins over `RUST_LOG` so TELENET can be tuned without
/// also changing the verbosity of unrelated Rust tools in the same shell.
pub const LOG_ENV: &str = "TELENET_LOG";

/// Standard OpenTelemetry variable; when set, traces are exported there.
pub const OTLP_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// W3C trace context header.
pub const TRACEPARENT: &str = "traceparent";

/// How long dropping the [`TelemetryGuard`] waits for the last spans to leave.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// gRPC paths that get no request span: probes hit them every few seconds
/// and would drown real traffic in the trace backend.
const UNTRACED_PREFIX: &str = "/grpc.health.v1.Health/";

/// Log line format.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines, for terminals.
    #[default]
    Pretty,
    /// One JSON object per line, for containers and log collectors.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "pretty" | "text" => Ok(LogFormat::Pretty),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "unknown log format `{other}`, expected `pretty` or `json`"
            )),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Pretty => "pretty",
            LogFormat::Json => "json",
        })
    }
}

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The log filter is not valid `EnvFilter` syntax.
    #[error("invalid log filter `{directives}` (from {origin}): {message}")]
    Filter {
        /// Where the filter came from: a variable name or "default".
        origin: &'static str,
        /// The filter text.
        directives: String,
        /// The parser's complaint.
        message: String,
    },
    /// The OTLP exporter could not be built.
    #[error("cannot export traces to {OTLP_ENDPOINT_ENV}: {0}")]
    Exporter(String),
    /// OTLP export over gRPC needs a Tokio runtime to run its client on.
    #[error(
        "trace export is configured ({OTLP_ENDPOINT_ENV}) but telemetry::init was called outside a tokio runtime"
    )]
    NoRuntime,
}

/// Keeps trace export running; dropping it flushes buffered spans and shuts
/// the exporter down. Hold it until the end of `main`.
///
/// Drop it on a multi-threaded runtime (the `#[tokio::main]` default) or
/// outside any runtime: on a current-thread runtime the flush cannot make
/// progress and waits out its 5 s timeout.
#[must_use = "dropping the guard stops trace export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelemetryGuard")
            .field("active", &self.provider.is_some())
            .finish()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let Some(provider) = self.provider.take() else {
            return;
        };
        let shutdown = move || {
            if let Err(error) = provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
                // The subscriber may be half torn down: write directly.
                eprintln!("telemetry shutdown: {error}");
            }
        };
        // Flushing blocks; on a multi-threaded runtime let the other workers
        // keep driving the exporter's gRPC client meanwhile.
        match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(shutdown);
            }
            _ => shutdown(),
        }
    }
}

/// Installs the global `tracing` subscriber: a log layer in `format`, the
/// filter from `TELENET_LOG`, else `RUST_LOG`, else `default_filter`, and the
/// OpenTelemetry layer (exporting over OTLP/gRPC with a batch processor when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set). Also installs the W3C trace context
/// propagator globally.
///
/// Calling it again (tests, the dev server starting several services) keeps
/// the first subscriber and returns an inert guard.
pub fn init(
    service: &str,
    format: LogFormat,
    default_filter: &str,
) -> Result<TelemetryGuard, TelemetryError> {
    let (origin, directives) = filter_directives(
        std::env::var(LOG_ENV).ok(),
        std::env::var("RUST_LOG").ok(),
        default_filter,
    );
    let filter = EnvFilter::try_new(&directives).map_err(|e| TelemetryError::Filter {
        origin,
        directives: directives.clone(),
        message: e.to_string(),
    })?;

    let export = std::env::var(OTLP_ENDPOINT_ENV).is_ok_and(|v| !v.trim().is_empty());
    let provider = tracer_provider(service, export)?;
    let otel_layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("telenet"));

    let log_layer = match format {
        LogFormat::Pretty => tracing_subscriber::fmt::layer().boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    };

    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(otel_layer)
        .with(log_layer)
        .try_init();

    match installed {
        Ok(()) => {
            opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
            opentelemetry::global::set_tracer_provider(provider.clone());
            tracing::debug!(service, %format, filter = %directives, export, "telemetry initialised");
            Ok(TelemetryGuard {
                provider: Some(provider),
            })
        }
        Err(_already_installed) => {
            // Nobody will use this provider; stop it now (it has no pending
            // spans) rather than let it linger.
            let _ = provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT);
            tracing::debug!(
                service,
                "telemetry already initialised; keeping the existing subscriber"
            );
            Ok(TelemetryGuard { provider: None })
        }
    }
}

/// Chooses the filter text and says where it came from.
fn filter_directives(
    telenet_log: Option<String>,
    rust_log: Option<String>,
    default_filter: &str,
) -> (&'static str, String) {
    let set = |value: Option<String>| value.filter(|v| !v.trim().is_empty());
    if let Some(value) = set(telenet_log) {
        (LOG_ENV, value)
    } else if let Some(value) = set(rust_log) {
        ("RUST_LOG", value)
    } else {
        ("default", default_filter.to_owned())
    }
}

/// A tracer provider that always creates (and so propagates) spans, and
/// exports them only when `export` is set. The OTLP exporter reads its
/// endpoint, headers and timeout from the standard `OTEL_EXPORTER_OTLP_*`
/// variables.
fn tracer_provider(service: &str, export: bool) -> Result<SdkTracerProvider, TelemetryError> {
    let resource = Resource::builder()
        .with_service_name(service.to_owned())
        .build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    if export {
        // tonic's client spawns onto the current runtime and would panic
        // without one.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(TelemetryError::NoRuntime);
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        builder = builder.with_batch_exporter(exporter);
    }
    Ok(builder.build())
}

// ---------------------------------------------------------------------------
// W3C trace context over string maps (AMQP headers, event envelopes)

/// Writes `cx` as `traceparent` (and `tracestate`) into `headers`.
pub fn inject_context(cx: &Context, headers: &mut BTreeMap<String, String>) {
    TraceContextPropagator::new().inject_context(cx, &mut MapInjector(headers));
}

/// Writes the current span's trace context into `headers`, e.g. before
/// publishing an event, so consumers continue the same trace.
pub fn inject_current(headers: &mut BTreeMap<String, String>) {
    inject_context(&current_context(), headers);
}

/// Reads the trace context from `headers`; an empty context when absent or
/// malformed (a bad header must never fail message handling).
pub fn extract_parent(headers: &BTreeMap<String, String>) -> Context {
    TraceContextPropagator::new().extract(&MapExtractor(headers))
}

/// Makes `span` a child of the trace in `headers`. Call it right after
/// creating the span, before entering it. Does nothing if the headers carry
/// no trace or telemetry is not initialised.
pub fn set_span_parent(span: &Span, headers: &BTreeMap<String, String>) {
    set_parent_context(span, extract_parent(headers));
}

fn set_parent_context(span: &Span, parent: Context) {
    if !parent.span().span_context().is_valid() {
        return;
    }
    if let Err(error) = span.set_parent(parent) {
        tracing::trace!(%error, "cannot set span parent");
    }
}

/// The OpenTelemetry context of the current `tracing` span, or the ambient
/// OpenTelemetry context for code that uses the OpenTelemetry API directly.
fn current_context() -> Context {
    let cx = Span::current().context();
    if cx.span().span_context().is_valid() {
        cx
    } else {
        Context::current()
    }
}

struct MapInjector<'a>(&'a mut BTreeMap<String, String>);

impl Injector for MapInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_ascii_lowercase(), value);
    }
}

struct MapExtractor<'a>(&'a BTreeMap<String, String>);

impl Extractor for MapExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        // Other producers may capitalise header names; keys are few, so a
        // linear fallback is cheap.
        self.0
            .get(key)
            .or_else(|| {
                self.0
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(key))
                    .map(|(_, v)| v)
            })
            .map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

// ---------------------------------------------------------------------------
// W3C trace context over gRPC

// Outgoing gRPC calls carry the context through the client stack
// (`crate::client`), which calls [`inject_http`] on every request.

/// Adds the current trace context (`traceparent`, `tracestate`) to the
/// headers of an outgoing HTTP request, so the receiver can join the trace.
pub fn inject_http(headers: &mut http::HeaderMap) {
    TraceContextPropagator::new().inject_context(&current_context(), &mut HeaderInjector(headers));
}

/// The span for one incoming HTTP request, child of the caller's trace when
/// the request carries `traceparent`. Install it with tower-http's
/// `TraceLayer::make_span_with` added by `Router::layer`, so the matched
/// route template names the span (`POST /webhooks/{channel_id}`); the raw
/// path and the `x-request-id` header are recorded as fields.
///
/// The span is at INFO, the level services log at: a span that is filtered
/// out cannot carry the trace on to the events and calls the request makes.
pub fn http_request_span<B>(request: &http::Request<B>) -> Span {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or(crate::metrics::UNMATCHED_ROUTE, |path| path.as_str());
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|id| id.to_str().ok())
        .unwrap_or_default();
    let span = tracing::info_span!(
        target: "telenet::http",
        "http.request",
        otel.name = %format_args!("{} {route}", request.method()),
        otel.kind = "server",
        http.request.method = %request.method(),
        http.route = route,
        url.path = %request.uri().path(),
        request_id,
    );
    set_parent_context(&span, extract_http_parent(request.headers()));
    span
}

/// Reads the trace context from HTTP/2 request headers.
pub fn extract_http_parent(headers: &http::HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// The span for one incoming gRPC request, child of the caller's trace when
/// the request carries `traceparent`. [`crate::grpc::GrpcServer`] installs it
/// with `tonic::transport::Server::trace_fn`; health probes get no span.
pub fn grpc_request_span(request: &http::Request<()>) -> Span {
    let path = request.uri().path();
    if path.starts_with(UNTRACED_PREFIX) {
        return Span::none();
    }
    let full_method = path.trim_start_matches('/');
    let (service, method) = full_method.split_once('/').unwrap_or((full_method, ""));
    let span = tracing::info_span!(
        target: "telenet::grpc",
        "grpc.request",
        otel.name = %full_method,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
    );
    set_parent_context(&span, extract_http_parent(request.headers()));
    span
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        let name = http::HeaderName::from_bytes(key.to_ascii_lowercase().as_bytes());
        let value = http::HeaderValue::from_str(&value);
        if let (Ok(name), Ok(value)) = (name, value) {
            self.0.insert(name, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    use super::*;

    const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn remote_context() -> Context {
        let span_context = SpanContext::new(
            TraceId::from_hex(TRACE_ID).expect("valid trace id"),
            SpanId::from_hex("00f067aa0ba902b7").expect("valid span id"),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        Context::new().with_remote_span_context(span_context)
    }

    /// Runs `f` under a local subscriber with the OpenTelemetry layer, as
    /// `init` would install globally.
    fn with_otel<R>(f: impl FnOnce() -> R) -> R {
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, f)
    }

    fn trace_id_of(traceparent: &str) -> &str {
        traceparent.split('-').nth(1).unwrap_or_default()
    }

    #[test]
    fn inject_then_extract_round_trips_trace_id() {
        let mut headers = BTreeMap::new();
        inject_context(&remote_context(), &mut headers);
        assert_eq!(headers.get(TRACEPARENT).map(String::as_str), Some(PARENT));

        let extracted = extract_parent(&headers);
        assert_eq!(
            extracted.span().span_context().trace_id().to_string(),
            TRACE_ID
        );
    }

    #[test]
    fn extract_tolerates_garbage_and_capitals() {
        let garbage = BTreeMap::from([(TRACEPARENT.to_owned(), "nonsense".to_owned())]);
        assert!(!extract_parent(&garbage).span().span_context().is_valid());

        let capitalised = BTreeMap::from([("Traceparent".to_owned(), PARENT.to_owned())]);
        assert!(
            extract_parent(&capitalised)
                .span()
                .span_context()
                .is_valid()
        );
    }

    #[test]
    fn consumer_span_continues_publisher_trace() {
        with_otel(|| {
            let incoming = BTreeMap::from([(TRACEPARENT.to_owned(), PARENT.to_owned())]);
            let span = tracing::info_span!("consume");
            set_span_parent(&span, &incoming);
            let _entered = span.enter();

            let mut outgoing = BTreeMap::new();
            inject_current(&mut outgoing);
            let traceparent = outgoing.get(TRACEPARENT).expect("traceparent injected");
            assert_eq!(trace_id_of(traceparent), TRACE_ID);
            assert_ne!(traceparent, PARENT, "the child has its own span id");
        });
    }

    #[test]
    fn grpc_request_span_continues_caller_trace_and_client_injects_it() {
        with_otel(|| {
            let request = http::Request::builder()
                .uri("/telenet.contacts.v1.ContactService/GetContact")
                .header(TRACEPARENT, PARENT)
                .body(())
                .expect("valid request");
            let span = grpc_request_span(&request);
            let _entered = span.enter();

            // What the client stack does to every outgoing call.
            let mut outgoing = http::HeaderMap::new();
            inject_http(&mut outgoing);
            let traceparent = outgoing
                .get(TRACEPARENT)
                .and_then(|v| v.to_str().ok())
                .expect("traceparent in metadata");
            assert_eq!(trace_id_of(traceparent), TRACE_ID);
        });
    }

    #[test]
    fn http_request_span_continues_caller_trace_and_outgoing_calls_carry_it() {
        with_otel(|| {
            let request = http::Request::builder()
                .method("POST")
                .uri("/webhooks/abc")
                .header(TRACEPARENT, PARENT)
                .body(())
                .expect("valid request");
            let span = http_request_span(&request);
            assert!(!span.is_none(), "an INFO span exists");
            let _entered = span.enter();

            let mut headers = http::HeaderMap::new();
            inject_http(&mut headers);
            let traceparent = headers
                .get(TRACEPARENT)
                .and_then(|v| v.to_str().ok())
                .expect("traceparent header");
            assert_eq!(trace_id_of(traceparent), TRACE_ID);
        });
    }

    #[test]
    fn health_probes_get_no_span() {
        let request = http::Request::builder()
            .uri("/grpc.health.v1.Health/Check")
            .body(())
            .expect("valid request");
        assert!(grpc_request_span(&request).is_none());
    }

    #[test]
    fn without_a_trace_nothing_is_injected() {
        let mut headers = BTreeMap::new();
        inject_current(&mut headers);
        assert!(headers.is_empty());
    }

    #[test]
    fn filter_precedence() {
        assert_eq!(
            filter_directives(Some("debug".into()), Some("warn".into()), "info"),
            (LOG_ENV, "debug".to_owned())
        );
        assert_eq!(
            filter_directives(Some(" ".into()), Some("warn".into()), "info"),
            ("RUST_LOG", "warn".to_owned())
        );
        assert_eq!(
            filter_directives(None, None, "info"),
            ("default", "info".to_owned())
        );
    }

    #[test]
    fn log_format_parses() {
        assert_eq!("JSON".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("pretty".parse::<LogFormat>(), Ok(LogFormat::Pretty));
        assert!("xml".parse::<LogFormat>().is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn init_twice_is_harmless() {
        let first = init("kit-test", LogFormat::Pretty, "warn").expect("first init");
        let second = init("kit-test", LogFormat::Json, "warn").expect("second init");
        tracing::info!("logged after double init");
        drop(second);
        drop(first);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exporting_provider_builds_and_shuts_down_without_a_collector() {
        // Nothing listens on the default endpoint in tests: export fails
        // quietly and shutdown must still return within its timeout.
        let provider = tracer_provider("kit-test", true).expect("exporter builds");
        let guard = TelemetryGuard {
            provider: Some(provider),
        };
        let started = std::time::Instant::now();
        drop(guard);
        assert!(started.elapsed() < SHUTDOWN_TIMEOUT + Duration::from_secs(2));
    }

    #[test]
    fn exporting_outside_a_runtime_is_an_error() {
        assert!(matches!(
            tracer_provider("kit-test", true),
            Err(TelemetryError::NoRuntime)
        ));
    }
}
