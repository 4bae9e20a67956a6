//! Traces across every hop, with OpenTelemetry spans collected in memory.
//!
//! A caller that already traces (an edge proxy, a provider's gateway, the
//! agents' web app) sends the webhook and, later, the reply with its own
//! `traceparent`: everything both requests cause lands in that one trace —
//! the webhook's HTTP span → the `inbound.message` consumer → the gRPC call
//! to contacts; the reply's HTTP span → `SendMessage` over gRPC → the
//! `outbound.requested` consumer in dispatch → the outbound POST, whose
//! `traceparent` reaches the channel. Without a caller's trace each request
//! heads a trace of its own and its consequences still join it.
//!
//! This binary installs its own global subscriber (the same layers
//! `telemetry::init` installs, with an in-memory exporter), so it is a test
//! file of its own.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use telenet::ServiceName;
use telenet_tests::{Receiver, eventually, flow, world};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Every finished span, as an OTLP exporter would receive them.
#[derive(Debug, Clone, Default)]
struct Collected(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Collected {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(batch);
        std::future::ready(Ok(()))
    }
}

impl Collected {
    fn in_trace(&self, trace: TraceId) -> Vec<SpanData> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|s| s.span_context.trace_id() == trace)
            .cloned()
            .collect()
    }

    fn all(&self) -> Vec<SpanData> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Installs, once per process, the subscriber services log through in
/// production (filter `info`, the OpenTelemetry layer), exporting to memory.
fn collected() -> Collected {
    static INSTALLED: OnceLock<(Collected, SdkTracerProvider)> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            let collected = Collected::default();
            let provider = SdkTracerProvider::builder()
                .with_simple_exporter(collected.clone())
                .build();
            tracing_subscriber::registry()
                .with(tracing_subscriber::EnvFilter::new("info"))
                .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
                .init();
            (collected, provider)
        })
        .0
        .clone()
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.as_str().into_owned())
}

/// The span named `name` (and, if given, with `group`) among `spans`.
fn find<'a>(spans: &'a [SpanData], name: &str, group: Option<&str>) -> Option<&'a SpanData> {
    spans.iter().find(|s| {
        s.name == name && group.is_none_or(|g| attribute(s, "group").as_deref() == Some(g))
    })
}

/// Waits until `trace` holds every span of `wanted` (name, consumer group).
async fn spans_of(
    collected: &Collected,
    trace: TraceId,
    wanted: &[(&str, Option<&str>)],
) -> Vec<SpanData> {
    eventually(
        "every span of the trace",
        Duration::from_secs(20),
        || async {
            let spans = collected.in_trace(trace);
            wanted
                .iter()
                .all(|(name, group)| find(&spans, name, *group).is_some())
                .then_some(spans)
        },
    )
    .await
}

/// `(trace id, span id)` of a W3C `traceparent`.
fn parse_traceparent(traceparent: &str) -> (TraceId, SpanId) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    let trace = TraceId::from_hex(parts[1]).expect("trace id");
    let span = SpanId::from_hex(parts[2]).expect("span id");
    (trace, span)
}

fn assert_child(spans: &[SpanData], child: &SpanData, parent: &SpanData) {
    assert_eq!(
        child.parent_span_id,
        parent.span_context.span_id(),
        "{} should be a child of {}; trace: {:#?}",
        child.name,
        parent.name,
        spans
            .iter()
            .map(|s| (&s.name, s.span_context.span_id(), s.parent_span_id))
            .collect::<Vec<_>>()
    );
}

const WEBHOOK: &str = "POST /webhooks/{channel_id}";
const REPLY: &str = "POST /v1/conversations/{id}/messages";
const CONSUME: &str = "consume";
const UPSERT: &str = "telenet.contacts.v1.Contacts/UpsertByIdentity";
const SEND_MESSAGE: &str = "telenet.conversations.v1.Conversations/SendMessage";
const DISPATCH_SEND: &str = "dispatch.send";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_trace_from_the_webhook_to_the_outbound_send() {
    let collected = collected();
    let dir = tempfile::tempdir().expect("tempdir");
    let (running, token) = world::start(world::embedded(dir.path()), &ServiceName::ALL).await;
    let receiver = Receiver::start().await;

    // The caller's trace and the spans it sent each request from.
    let trace = TraceId::from_hex(&uuid::Uuid::new_v4().simple().to_string()).expect("trace id");
    let (webhook_parent, reply_parent) = (SpanId::from(1u64), SpanId::from(2u64));
    let traceparent = |span: SpanId| vec![("traceparent", format!("00-{trace}-{span}-01"))];
    let round = flow::webhook_then_reply(
        &running,
        &receiver,
        &traceparent(webhook_parent),
        &traceparent(reply_parent),
    )
    .await;

    // The channel received the reply inside the caller's trace.
    let received = round
        .received
        .traceparent
        .as_deref()
        .expect("the outbound request carries traceparent");
    let (received_trace, received_parent) = parse_traceparent(received);
    assert_eq!(received_trace, trace, "{received}");

    let spans = spans_of(
        &collected,
        trace,
        &[
            (WEBHOOK, None),
            (CONSUME, Some("conversations.inbound")),
            (UPSERT, None),
            (REPLY, None),
            (SEND_MESSAGE, None),
            (CONSUME, Some("dispatch")),
            (DISPATCH_SEND, None),
        ],
    )
    .await;
    let span = |name, group| find(&spans, name, group).expect("collected above");

    // Webhook → event → consumer → gRPC call.
    let webhook = span(WEBHOOK, None);
    assert_eq!(webhook.parent_span_id, webhook_parent);
    let inbound = span(CONSUME, Some("conversations.inbound"));
    assert_child(&spans, inbound, webhook);
    assert_child(&spans, span(UPSERT, None), inbound);

    // Reply → gRPC → event → consumer → outbound POST.
    let reply = span(REPLY, None);
    assert_eq!(reply.parent_span_id, reply_parent);
    let send_message = span(SEND_MESSAGE, None);
    assert_child(&spans, send_message, reply);
    let dispatch = span(CONSUME, Some("dispatch"));
    assert_child(&spans, dispatch, send_message);
    let send = span(DISPATCH_SEND, None);
    assert_child(&spans, send, dispatch);
    assert_eq!(
        received_parent,
        send.span_context.span_id(),
        "the channel sees the send as its parent"
    );
    assert_eq!(attribute(send, "channel_kind").as_deref(), Some("custom"));

    token.cancel();
    running.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_callers_trace_each_request_heads_its_own() {
    let collected = collected();
    let dir = tempfile::tempdir().expect("tempdir");
    let (running, token) = world::start(world::embedded(dir.path()), &ServiceName::ALL).await;
    let receiver = Receiver::start().await;
    let round = flow::webhook_then_reply(&running, &receiver, &[], &[]).await;

    // The reply's trace reaches the channel…
    let received = round
        .received
        .traceparent
        .as_deref()
        .expect("the outbound request carries traceparent");
    let (reply_trace, _) = parse_traceparent(received);
    let spans = spans_of(
        &collected,
        reply_trace,
        &[(REPLY, None), (SEND_MESSAGE, None), (DISPATCH_SEND, None)],
    )
    .await;
    let reply = find(&spans, REPLY, None).expect("reply span");
    assert_eq!(
        reply.parent_span_id,
        SpanId::INVALID,
        "the reply heads its trace"
    );
    assert!(
        attribute(reply, "url.path").is_some_and(|p| p.contains(&round.conversation_id)),
        "{:?}",
        reply.attributes
    );

    // …and the webhook heads another, which its consumer continued.
    let path = format!("/webhooks/{}", round.channel_id);
    let webhook = eventually("the webhook's span", Duration::from_secs(20), || async {
        collected
            .all()
            .into_iter()
            .find(|s| s.name == WEBHOOK && attribute(s, "url.path") == Some(path.clone()))
    })
    .await;
    assert_eq!(
        webhook.parent_span_id,
        SpanId::INVALID,
        "the webhook heads its trace"
    );
    assert_ne!(webhook.span_context.trace_id(), reply_trace);
    let webhook_spans = spans_of(
        &collected,
        webhook.span_context.trace_id(),
        &[(CONSUME, Some("conversations.inbound")), (UPSERT, None)],
    )
    .await;
    assert_child(
        &webhook_spans,
        find(&webhook_spans, CONSUME, Some("conversations.inbound")).expect("consumer"),
        &webhook,
    );

    token.cancel();
    running.wait().await;
}
