//! Dispatch end to end on both backends: `outbound.requested` goes through the
//! in-memory bus to the consumer, which POSTs to a local receiver that checks
//! the signature and content type the way a real channel would; results are
//! read back through the gRPC API and the `outbound.status` events.
//! Receivers are on loopback, which the tests allow-list
//! (`private_receivers`), except where the policy itself is tested.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use telenet_bus::memory::MemoryBus;
use telenet_bus::{RetryPolicy, SharedBus, SubscribeSpec, Subscription};
use telenet_channels::directory::{ChannelCredentials, ChannelDirectory, DirectoryError};
use telenet_dispatch::{Config, DispatchService, MIGRATIONS};
use telenet_kit::error::to_status;
use telenet_kit::metrics::Metrics;
use telenet_proto::common::v1::{Attachment, AttachmentKind, ChannelKind};
use telenet_proto::dispatch::v1::dispatch_server::Dispatch;
use telenet_proto::dispatch::v1::{DeliveryState, GetDeliveryRequest, ListDeadLettersRequest};
use telenet_proto::events::v1::{
    OutboundRequested, OutboundStatusChanged, event_envelope::Payload,
};
use telenet_signing::Secret;
use telenet_store::testing::Backend;
use telenet_store::{Db, events, now_micros, outbox};
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------- receiver

/// One answer of the receiver: status, body, a delay before answering, and
/// where it redirects to.
#[derive(Clone)]
struct Reply {
    status: u16,
    body: String,
    delay: Duration,
    location: Option<String>,
}

fn reply(status: u16, body: &str) -> Reply {
    Reply {
        status,
        body: body.to_owned(),
        delay: Duration::ZERO,
        location: None,
    }
}

/// A request the receiver accepted as authentic.
#[derive(Debug, Clone)]
struct Post {
    webhook_id: String,
    body: serde_json::Value,
}

#[derive(Default)]
struct Endpoint {
    secret: Option<Secret>,
    /// Answers in order; the last one repeats.
    script: VecDeque<Reply>,
    posts: Vec<Post>,
    refused: Vec<String>,
}

/// A channel's receiving side: verifies each request like a provider would
/// (content type, Standard Webhooks signature with the channel's secret),
/// then answers from a script.
#[derive(Clone, Default)]
struct Receiver {
    base: String,
    endpoints: Arc<Mutex<HashMap<String, Endpoint>>>,
}

impl Receiver {
    async fn start(token: CancellationToken) -> Self {
        Self::start_on("127.0.0.1:0", token).await
    }

    /// A receiver listening on `addr`.
    async fn start_on(addr: &str, token: CancellationToken) -> Self {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver address");
        let receiver = Receiver {
            base: format!("http://{addr}"),
            endpoints: Arc::default(),
        };
        let app = axum::Router::new()
            .route("/in/{name}", axum::routing::post(receive))
            .with_state(receiver.clone());
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(token.cancelled_owned())
                .await
                .expect("receiver serves");
        });
        receiver
    }

    /// A new custom channel at `/in/{name}` with its own secret.
    fn channel(&self, name: &str, script: Vec<Reply>) -> ChannelCredentials {
        let secret = Secret::generate().expect("secret");
        let creds = ChannelCredentials {
            kind: ChannelKind::Custom,
            outbound_url: format!("{}/in/{name}", self.base),
            secret: secret.expose(),
            accepted_voice_types: Vec::new(),
            ..Default::default()
        };
        self.endpoints.lock().expect("lock").insert(
            name.to_owned(),
            Endpoint {
                secret: Some(secret),
                script: script.into(),
                ..Default::default()
            },
        );
        creds
    }

    /// Every request that reached the receiver, authentic or not.
    fn reached(&self, name: &str) -> usize {
        let endpoints = self.endpoints.lock().expect("lock");
        let endpoint = endpoints.get(name).expect("endpoint");
        endpoint.posts.len() + endpoint.refused.len()
    }

    fn posts(&self, name: &str) -> Vec<Post> {
        let endpoints = self.endpoints.lock().expect("lock");
        let endpoint = endpoints.get(name).expect("endpoint");
        assert!(
            endpoint.refused.is_empty(),
            "refused: {:?}",
            endpoint.refused
        );
        endpoint.posts.clone()
    }
}

async fn receive(
    State(receiver): State<Receiver>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let reply = {
        let mut endpoints = receiver.endpoints.lock().expect("lock");
        let Some(endpoint) = endpoints.get_mut(&name) else {
            return (StatusCode::NOT_FOUND, "no such endpoint").into_response();
        };
        if header("content-type").as_deref() != Some("application/json") {
            endpoint
                .refused
                .push(format!("content-type {:?}", header("content-type")));
            return (StatusCode::UNSUPPORTED_MEDIA_TYPE, "json only").into_response();
        }
        let Some(secret) = &endpoint.secret else {
            return (StatusCode::INTERNAL_SERVER_ERROR, "no secret").into_response();
        };
        if let Err(e) = secret.verify(
            header("webhook-id").as_deref(),
            header("webhook-timestamp").as_deref(),
            header("webhook-signature").as_deref(),
            &body,
            telenet_signing::unix_now(),
        ) {
            endpoint.refused.push(e.to_string());
            return (StatusCode::UNAUTHORIZED, e.to_string()).into_response();
        }
        let Ok(json) = serde_json::from_slice(&body) else {
            endpoint.refused.push("body is not json".into());
            return (StatusCode::BAD_REQUEST, "not json").into_response();
        };
        endpoint.posts.push(Post {
            webhook_id: header("webhook-id").unwrap_or_default(),
            body: json,
        });
        if endpoint.script.len() > 1 {
            endpoint.script.pop_front()
        } else {
            endpoint.script.front().cloned()
        }
        .unwrap_or_else(|| reply(200, "{}"))
    };
    tokio::time::sleep(reply.delay).await;
    let status = StatusCode::from_u16(reply.status).expect("scripted status");
    match reply.location {
        Some(to) => (status, [(header::LOCATION, to)], reply.body).into_response(),
        None => (status, reply.body).into_response(),
    }
}

// --------------------------------------------------------------- directory

/// A fixed channel directory, keyed by (workspace, channel) like ingress.
#[derive(Default)]
struct FixedDirectory(Mutex<HashMap<(String, String), ChannelCredentials>>);

impl FixedDirectory {
    fn add(&self, ws: &str, channel: &str, creds: ChannelCredentials) {
        self.0
            .lock()
            .expect("lock")
            .insert((ws.to_owned(), channel.to_owned()), creds);
    }
}

#[async_trait]
impl ChannelDirectory for FixedDirectory {
    async fn credentials(
        &self,
        ws: &str,
        channel: &str,
    ) -> Result<ChannelCredentials, DirectoryError> {
        self.0
            .lock()
            .expect("lock")
            .get(&(ws.to_owned(), channel.to_owned()))
            .cloned()
            .ok_or(DirectoryError::NotFound)
    }
}

// ----------------------------------------------------------------- harness

struct Harness {
    db: Db,
    bus: SharedBus,
    svc: DispatchService,
    receiver: Receiver,
    directory: Arc<FixedDirectory>,
    statuses: Subscription,
    seen: Vec<(String, OutboundStatusChanged)>,
    metrics: Metrics,
    token: CancellationToken,
    _dir: tempfile::TempDir,
}

const MAX_ATTEMPTS: u32 = 4;
/// Generous enough for a loaded machine: an unplanned timeout would add an
/// attempt and break the exact counts the tests expect.
const HTTP_TIMEOUT: Duration = Duration::from_millis(1500);

fn test_config() -> Config {
    Config {
        http_connect_timeout: HTTP_TIMEOUT,
        http_timeout: HTTP_TIMEOUT,
        max_attempts: MAX_ATTEMPTS,
        concurrency: 8,
        // The receiver runs on this machine.
        private_receivers: vec!["127.0.0.1".into()],
        ..Config::default()
    }
}

/// Logs at info and above of every test of this binary (a process has one
/// global subscriber), to check what they never contain.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || LogSink(sink.clone()))
            .try_init();
        buffer
    })
    .clone()
}

struct LogSink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Harness {
    async fn start(backend: Backend) -> Self {
        Self::start_with(backend, test_config()).await
    }

    async fn start_with(backend: Backend, config: Config) -> Self {
        captured_logs();
        let dir = tempfile::tempdir().expect("tempdir");
        let url = backend.url(dir.path(), "dispatch").await;
        let db = Db::connect(&url, "dispatch").await.expect("connect");
        db.migrate(&MIGRATIONS).await.expect("migrate");
        let bus: SharedBus = Arc::new(MemoryBus::new(RetryPolicy {
            delays: vec![Duration::from_millis(20); 10],
        }));
        let statuses = bus
            .subscribe(SubscribeSpec::new("observer", &["outbound.status"]))
            .await
            .expect("observe");
        let token = CancellationToken::new();
        let receiver = Receiver::start(token.clone()).await;
        let directory = Arc::new(FixedDirectory::default());
        let metrics = Metrics::new();
        let svc = DispatchService::new(db.clone(), bus.clone(), directory.clone(), config)
            .expect("service")
            .with_metrics(&metrics);
        // Subscribe before anything is published.
        let requests = svc.subscribe().await.expect("subscribe");
        tokio::spawn(outbox::Relay::new(db.clone(), bus.clone()).run(token.clone()));
        tokio::spawn(svc.clone().consume(requests, token.clone()));
        tokio::spawn(svc.clone().run_sweeper(token.clone()));
        Self {
            db,
            bus,
            svc,
            receiver,
            directory,
            statuses,
            seen: Vec::new(),
            metrics,
            token,
            _dir: dir,
        }
    }

    /// A channel of `ws` named `name` that answers with `script`.
    fn channel(&self, ws: &str, name: &str, script: Vec<Reply>) {
        let creds = self.receiver.channel(name, script);
        self.directory.add(ws, name, creds);
    }

    async fn request(&self, ws: &str, message_id: &str, channel: &str) -> telenet_bus::Event {
        let event = requested(ws, message_id, channel);
        self.bus
            .publish(std::slice::from_ref(&event))
            .await
            .expect("publish");
        event
    }

    /// The `outbound.status` events of `message_id` (workspace `ws`) up to
    /// and including the first SENT or FAILED one.
    async fn until_settled(&mut self, ws: &str, message_id: &str) -> Vec<OutboundStatusChanged> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let mine: Vec<_> = self
                .seen
                .iter()
                .filter(|(w, s)| w == ws && s.message_id == message_id)
                .map(|(_, s)| s.clone())
                .collect();
            if mine.iter().any(|s| is_final(s.state())) {
                return mine;
            }
            let delivery = tokio::time::timeout_at(deadline, self.statuses.next())
                .await
                .unwrap_or_else(|_| panic!("{message_id} not settled; saw {mine:?}"))
                .expect("bus open");
            let env = events::from_bus(&delivery.event).expect("envelope");
            delivery.ack().await.expect("ack");
            let Some(Payload::OutboundStatusChanged(status)) = env.payload else {
                panic!("unexpected event {env:?}");
            };
            self.seen.push((env.workspace_id, status));
        }
    }

    async fn delivery(&self, ws: &str, message_id: &str) -> telenet_proto::dispatch::v1::Delivery {
        self.svc
            .get_delivery(ws, message_id)
            .await
            .expect("delivery")
    }

    /// The value of the metric series `series` (name and labels).
    fn metric(&self, series: &str) -> Option<f64> {
        let text = self.metrics.encode().expect("metrics encode");
        telenet_kit::metrics::sample(&text, series)
    }

    async fn stop(self) {
        self.token.cancel();
        self.db.close().await;
    }
}

fn is_final(state: DeliveryState) -> bool {
    matches!(state, DeliveryState::Sent | DeliveryState::Failed)
}

fn requested(ws: &str, message_id: &str, channel: &str) -> telenet_bus::Event {
    let env = events::envelope(
        ws,
        Payload::OutboundRequested(OutboundRequested {
            message_id: message_id.to_owned(),
            conversation_id: "conv-1".into(),
            channel_id: channel.to_owned(),
            recipient_external_id: "+4915550001".into(),
            text: format!("reply {message_id}"),
            attachments: vec![Attachment {
                kind: AttachmentKind::Image as i32,
                url: "https://files.example/cat.png".into(),
                mime_type: "image/png".into(),
                size_bytes: 2048,
                ..Default::default()
            }],
            ..Default::default()
        }),
        None,
    );
    events::to_bus(&env)
}

/// Time for work that must *not* happen (a second POST) to show up if it would.
async fn quiet_period() {
    tokio::time::sleep(Duration::from_millis(400)).await;
}

telenet_store::on_both_backends!(
    accepted_message_is_sent_with_its_external_id,
    server_errors_are_retried_until_sent,
    persistent_server_errors_fail_after_max_attempts,
    client_errors_fail_at_once,
    duplicates_post_once_and_redeliveries_keep_counting,
    timeouts_and_unreachable_receivers_are_retried,
    workspaces_are_isolated,
    non_public_receivers_are_refused,
    redirects_are_never_followed,
    receivers_allowed_by_name_are_reached,
    receiver_answers_never_reach_agents,
    messages_pending_past_their_deadline_fail,
    late_requests_fail_without_being_sent,
    attempts_that_never_reported_back_count_toward_the_limit,
);

// ------------------------------------------------------------------- tests

async fn accepted_message_is_sent_with_its_external_id(backend: Backend) {
    let mut h = Harness::start(backend).await;
    h.channel("ws1", "ok", vec![reply(200, r#"{"external_id":"ext-42"}"#)]);
    h.request("ws1", "m-ok", "ok").await;

    let statuses = h.until_settled("ws1", "m-ok").await;
    assert_eq!(statuses.len(), 1, "{statuses:?}");
    let sent = &statuses[0];
    assert_eq!(sent.state(), DeliveryState::Sent);
    assert_eq!(sent.external_id, "ext-42");
    assert_eq!(sent.attempts, 1);
    assert_eq!(sent.channel_id, "ok");
    assert!(sent.error.is_empty());

    let posts = h.receiver.posts("ok");
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].webhook_id, "m-ok");
    assert_eq!(
        posts[0].body,
        serde_json::json!({
            "type": "message.outbound",
            "message": {
                "id": "m-ok",
                "recipient": {"external_id": "+4915550001"},
                "text": "reply m-ok",
                "attachments": [{
                    "kind": "image",
                    "url": "https://files.example/cat.png",
                    "mime_type": "image/png",
                    "size_bytes": 2048
                }]
            }
        })
    );

    let delivery = h.delivery("ws1", "m-ok").await;
    assert_eq!(delivery.state(), DeliveryState::Sent);
    assert_eq!(delivery.workspace_id, "ws1");
    assert_eq!(delivery.channel_id, "ok");
    assert_eq!(delivery.attempts, 1);
    assert_eq!(delivery.external_id, "ext-42");
    assert!(delivery.last_attempt_at.is_some());

    // A 2xx without a JSON external_id is sent all the same.
    h.channel("ws1", "plain", vec![reply(202, "accepted")]);
    h.request("ws1", "m-plain", "plain").await;
    let statuses = h.until_settled("ws1", "m-plain").await;
    assert_eq!(statuses[0].state(), DeliveryState::Sent);
    assert!(statuses[0].external_id.is_empty());
    h.stop().await;
}

async fn server_errors_are_retried_until_sent(backend: Backend) {
    let mut h = Harness::start(backend).await;
    h.channel(
        "ws1",
        "flaky",
        vec![
            reply(503, "down for maintenance"),
            reply(503, "still down"),
            reply(200, r#"{"external_id":"ext-3"}"#),
        ],
    );
    h.request("ws1", "m-flaky", "flaky").await;

    let statuses = h.until_settled("ws1", "m-flaky").await;
    let summary: Vec<_> = statuses.iter().map(|s| (s.state(), s.attempts)).collect();
    assert_eq!(
        summary,
        vec![
            (DeliveryState::Pending, 1),
            (DeliveryState::Pending, 2),
            (DeliveryState::Sent, 3)
        ]
    );
    assert!(statuses[0].error.contains("503"), "{}", statuses[0].error);
    assert_eq!(statuses[2].external_id, "ext-3");

    // Every retry is the same message to the receiver.
    let posts = h.receiver.posts("flaky");
    assert_eq!(posts.len(), 3);
    assert!(posts.iter().all(|p| p.webhook_id == "m-flaky"));

    let delivery = h.delivery("ws1", "m-flaky").await;
    assert_eq!(delivery.state(), DeliveryState::Sent);
    assert_eq!(delivery.attempts, 3);
    assert!(delivery.error.is_empty());

    for (series, want) in [
        (
            r#"telenet_dispatch_attempts_total{channel_kind="custom",outcome="retry"}"#,
            2.0,
        ),
        (
            r#"telenet_dispatch_attempts_total{channel_kind="custom",outcome="sent"}"#,
            1.0,
        ),
        (
            r#"telenet_dispatch_send_duration_seconds_count{channel_kind="custom"}"#,
            3.0,
        ),
    ] {
        assert_eq!(h.metric(series), Some(want), "{series}");
    }
    h.stop().await;
}

async fn persistent_server_errors_fail_after_max_attempts(backend: Backend) {
    let mut h = Harness::start(backend).await;
    h.channel("ws1", "broken", vec![reply(500, "boom")]);
    h.request("ws1", "m-broken", "broken").await;

    let statuses = h.until_settled("ws1", "m-broken").await;
    assert_eq!(statuses.len(), MAX_ATTEMPTS as usize, "{statuses:?}");
    let last = statuses.last().expect("final status");
    assert_eq!(last.state(), DeliveryState::Failed);
    assert_eq!(last.attempts, MAX_ATTEMPTS);
    assert_eq!(
        last.error,
        "gave up after 4 attempts: receiver answered HTTP 500 Internal Server Error"
    );

    quiet_period().await;
    assert_eq!(h.receiver.posts("broken").len(), MAX_ATTEMPTS as usize);

    let dead = h
        .svc
        .list_dead_letters("ws1", 0)
        .await
        .expect("dead letters");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].message_id, "m-broken");
    assert_eq!(dead[0].state(), DeliveryState::Failed);
    assert_eq!(dead[0].attempts, MAX_ATTEMPTS);
    h.stop().await;
}

async fn client_errors_fail_at_once(backend: Backend) {
    let mut h = Harness::start(backend).await;
    h.channel(
        "ws1",
        "picky",
        vec![reply(400, r#"{"error":"invalid recipient"}"#)],
    );
    h.request("ws1", "m-picky", "picky").await;

    let statuses = h.until_settled("ws1", "m-picky").await;
    assert_eq!(statuses.len(), 1, "{statuses:?}");
    assert_eq!(statuses[0].state(), DeliveryState::Failed);
    assert_eq!(statuses[0].attempts, 1);
    assert_eq!(statuses[0].error, "receiver answered HTTP 400 Bad Request");
    quiet_period().await;
    assert_eq!(h.receiver.posts("picky").len(), 1);

    // A channel ingress does not know and a kind we cannot send on yet fail
    // without any request.
    h.request("ws1", "m-nowhere", "unknown-channel").await;
    let statuses = h.until_settled("ws1", "m-nowhere").await;
    assert_eq!(statuses[0].state(), DeliveryState::Failed);
    assert_eq!(statuses[0].error, "channel not found");
    let mut whatsapp = h.receiver.channel("wa", vec![]);
    whatsapp.kind = ChannelKind::Whatsapp;
    h.directory.add("ws1", "wa", whatsapp);
    h.request("ws1", "m-wa", "wa").await;
    let statuses = h.until_settled("ws1", "m-wa").await;
    assert_eq!(statuses[0].state(), DeliveryState::Failed);
    assert!(
        statuses[0].error.contains("not supported"),
        "{}",
        statuses[0].error
    );
    assert!(h.receiver.posts("wa").is_empty());

    // Newest failure first.
    let dead = h
        .svc
        .list_dead_letters("ws1", 2)
        .await
        .expect("dead letters");
    let ids: Vec<_> = dead.iter().map(|d| d.message_id.as_str()).collect();
    assert_eq!(ids, vec!["m-wa", "m-nowhere"]);

    // Failures are counted by the kind of channel they were for; nothing
    // was sent to the channels that could not be sent on.
    for (series, want) in [
        (
            r#"telenet_dispatch_attempts_total{channel_kind="custom",outcome="failed"}"#,
            Some(1.0),
        ),
        (
            r#"telenet_dispatch_attempts_total{channel_kind="unknown",outcome="failed"}"#,
            Some(1.0),
        ),
        (
            r#"telenet_dispatch_attempts_total{channel_kind="whatsapp",outcome="failed"}"#,
            Some(1.0),
        ),
        (
            r#"telenet_dispatch_send_duration_seconds_count{channel_kind="custom"}"#,
            Some(1.0),
        ),
        (
            r#"telenet_dispatch_send_duration_seconds_count{channel_kind="whatsapp"}"#,
            None,
        ),
    ] {
        assert_eq!(h.metric(series), want, "{series}");
    }
    h.stop().await;
}

async fn duplicates_post_once_and_redeliveries_keep_counting(backend: Backend) {
    let mut h = Harness::start(backend).await;
    // A slow answer keeps the first POST in flight while the duplicate arrives.
    let mut slow_ok = reply(200, r#"{"external_id":"e1"}"#);
    slow_ok.delay = Duration::from_millis(150);
    h.channel("ws1", "once", vec![slow_ok]);
    // The same event twice at once (at-least-once publishing does this).
    let event = requested("ws1", "m-dup", "once");
    h.bus
        .publish(&[event.clone(), event.clone()])
        .await
        .expect("publish");
    let statuses = h.until_settled("ws1", "m-dup").await;
    assert_eq!(statuses.last().map(|s| s.attempts), Some(1));
    // Redelivered after it was sent, and requested again under a new event id.
    h.bus.publish(&[event]).await.expect("publish");
    h.request("ws1", "m-dup", "once").await;
    quiet_period().await;
    assert_eq!(h.receiver.posts("once").len(), 1);
    let delivery = h.delivery("ws1", "m-dup").await;
    assert_eq!(
        (delivery.state(), delivery.attempts),
        (DeliveryState::Sent, 1)
    );

    // A request arriving again while the message waits for its retry does
    // not start over: the attempts go on from where they were.
    h.channel(
        "ws1",
        "slowfix",
        vec![reply(503, ""), reply(503, ""), reply(200, "{}")],
    );
    let first = h.request("ws1", "m-retry", "slowfix").await;
    let statuses = h.until_settled_or_pending(1, "m-retry").await;
    assert_eq!(statuses[0].attempts, 1);
    let mut again = requested("ws1", "m-retry", "slowfix");
    again.id = format!("{}-again", first.id);
    h.bus.publish(&[again]).await.expect("publish");
    let statuses = h.until_settled("ws1", "m-retry").await;
    let last = statuses.last().expect("final");
    assert_eq!(last.state(), DeliveryState::Sent);
    assert_eq!(last.attempts, 3);
    quiet_period().await;
    assert_eq!(h.receiver.posts("slowfix").len(), 3);
    assert_eq!(h.delivery("ws1", "m-retry").await.attempts, 3);
    h.stop().await;
}

impl Harness {
    /// Wait until at least `n` statuses of `message_id` (workspace ws1) were seen.
    async fn until_settled_or_pending(
        &mut self,
        n: usize,
        message_id: &str,
    ) -> Vec<OutboundStatusChanged> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let mine: Vec<_> = self
                .seen
                .iter()
                .filter(|(w, s)| w == "ws1" && s.message_id == message_id)
                .map(|(_, s)| s.clone())
                .collect();
            if mine.len() >= n {
                return mine;
            }
            let delivery = tokio::time::timeout_at(deadline, self.statuses.next())
                .await
                .expect("status in time")
                .expect("bus open");
            let env = events::from_bus(&delivery.event).expect("envelope");
            delivery.ack().await.expect("ack");
            if let Some(Payload::OutboundStatusChanged(status)) = env.payload {
                self.seen.push((env.workspace_id, status));
            }
        }
    }
}

async fn timeouts_and_unreachable_receivers_are_retried(backend: Backend) {
    let mut h = Harness::start(backend).await;
    // Slower than the time budget once, then prompt.
    let mut slow = reply(200, r#"{"external_id":"late"}"#);
    slow.delay = HTTP_TIMEOUT * 2;
    h.channel(
        "ws1",
        "slow",
        vec![slow, reply(200, r#"{"external_id":"prompt"}"#)],
    );
    h.request("ws1", "m-slow", "slow").await;
    let statuses = h.until_settled("ws1", "m-slow").await;
    assert_eq!(statuses[0].state(), DeliveryState::Pending);
    assert!(
        statuses[0].error.contains("timed out"),
        "{}",
        statuses[0].error
    );
    let last = statuses.last().expect("final");
    assert_eq!((last.state(), last.attempts), (DeliveryState::Sent, 2));
    assert_eq!(last.external_id, "prompt");

    // Nobody listens on the port: connection refused on every attempt.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    h.directory.add(
        "ws1",
        "gone",
        ChannelCredentials {
            kind: ChannelKind::Custom,
            outbound_url: format!("http://127.0.0.1:{port}/in/gone"),
            secret: Secret::generate().expect("secret").expose(),
            accepted_voice_types: Vec::new(),
            ..Default::default()
        },
    );
    h.request("ws1", "m-gone", "gone").await;
    let statuses = h.until_settled("ws1", "m-gone").await;
    let last = statuses.last().expect("final");
    assert_eq!(
        (last.state(), last.attempts),
        (DeliveryState::Failed, MAX_ATTEMPTS)
    );
    assert!(last.error.contains("connection failed"), "{}", last.error);
    h.stop().await;
}

async fn workspaces_are_isolated(backend: Backend) {
    let mut h = Harness::start(backend).await;
    h.channel("wsA", "a-chan", vec![reply(400, "no")]);
    h.channel("wsB", "b-chan", vec![reply(200, "{}")]);
    // The same message id in two workspaces is two deliveries.
    h.request("wsA", "m-same", "a-chan").await;
    h.request("wsB", "m-same", "b-chan").await;
    assert_eq!(
        h.until_settled("wsA", "m-same")
            .await
            .last()
            .map(|s| s.state()),
        Some(DeliveryState::Failed)
    );
    assert_eq!(
        h.until_settled("wsB", "m-same")
            .await
            .last()
            .map(|s| s.state()),
        Some(DeliveryState::Sent)
    );
    assert_eq!(h.receiver.posts("a-chan").len(), 1);
    assert_eq!(h.receiver.posts("b-chan").len(), 1);

    // Another workspace's channel is not found from this one.
    h.request("wsB", "m-cross", "a-chan").await;
    let statuses = h.until_settled("wsB", "m-cross").await;
    assert_eq!(statuses[0].error, "channel not found");
    assert_eq!(h.receiver.posts("a-chan").len(), 1);

    h.request("wsA", "m-only-a", "a-chan").await;
    h.until_settled("wsA", "m-only-a").await;
    let err = h
        .svc
        .get_delivery("wsB", "m-only-a")
        .await
        .expect_err("other workspace");
    assert_eq!(to_status(&err).code(), tonic::Code::NotFound);

    // Through the gRPC adapter as well.
    let status = Dispatch::get_delivery(
        &h.svc,
        tonic::Request::new(GetDeliveryRequest {
            workspace_id: "wsB".into(),
            message_id: "m-only-a".into(),
        }),
    )
    .await
    .expect_err("other workspace");
    assert_eq!(status.code(), tonic::Code::NotFound);
    let own = Dispatch::get_delivery(
        &h.svc,
        tonic::Request::new(GetDeliveryRequest {
            workspace_id: "wsA".into(),
            message_id: "m-only-a".into(),
        }),
    )
    .await
    .expect("own delivery")
    .into_inner();
    assert_eq!(own.state(), DeliveryState::Failed);

    let dead_a = Dispatch::list_dead_letters(
        &h.svc,
        tonic::Request::new(ListDeadLettersRequest {
            workspace_id: "wsA".into(),
            limit: 0,
        }),
    )
    .await
    .expect("list")
    .into_inner()
    .deliveries;
    assert_eq!(dead_a.len(), 2);
    assert!(dead_a.iter().all(|d| d.workspace_id == "wsA"));
    let dead_b = h.svc.list_dead_letters("wsB", 0).await.expect("list");
    let ids: Vec<_> = dead_b.iter().map(|d| d.message_id.as_str()).collect();
    assert_eq!(ids, vec!["m-cross"]);

    // Validation names the field.
    let status = Dispatch::get_delivery(
        &h.svc,
        tonic::Request::new(GetDeliveryRequest {
            workspace_id: "wsA".into(),
            message_id: String::new(),
        }),
    )
    .await
    .expect_err("validation");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("message_id"),
        "{}",
        status.message()
    );
    let err = h
        .svc
        .list_dead_letters(" ", 0)
        .await
        .expect_err("validation");
    assert_eq!(to_status(&err).code(), tonic::Code::InvalidArgument);
    h.stop().await;
}

// ------------------------------------------------ where sends may go

/// The port the test receiver listens on.
fn port_of(receiver: &Receiver) -> String {
    receiver.base.rsplit(':').next().expect("port").to_owned()
}

async fn non_public_receivers_are_refused(backend: Backend) {
    let strict = Config {
        private_receivers: Vec::new(),
        ..test_config()
    };
    let mut h = Harness::start_with(backend, strict).await;
    let port = port_of(&h.receiver);
    let cases = [
        ("loopback", format!("http://127.0.0.1:{port}/in/loopback")),
        ("loopback-v6", format!("http://[::1]:{port}/in/loopback-v6")),
        ("private", "http://10.0.0.1/in/private".to_owned()),
        (
            "metadata",
            "http://169.254.169.254/latest/meta-data/".to_owned(),
        ),
        // A name is judged by the addresses it resolves to.
        ("by-name", format!("http://localhost:{port}/in/by-name")),
    ];
    for (name, url) in &cases {
        let mut creds = h.receiver.channel(name, vec![reply(200, "{}")]);
        creds.outbound_url = url.clone();
        h.directory.add("ws1", name, creds);
        let id = format!("m-{name}");
        h.request("ws1", &id, name).await;
        let statuses = h.until_settled("ws1", &id).await;
        assert_eq!(
            statuses.len(),
            1,
            "{name}: refused at once, never retried: {statuses:?}"
        );
        let failed = &statuses[0];
        assert_eq!(failed.state(), DeliveryState::Failed, "{name}");
        assert!(
            failed.error.contains("is not a public address")
                && failed.error.contains("dispatch.private_receivers"),
            "{name}: {}",
            failed.error
        );
    }
    assert_eq!(
        h.delivery("ws1", "m-metadata").await.error,
        "outbound_url: 169.254.169.254 is not a public address and is not allowed by \
         dispatch.private_receivers"
    );
    assert_eq!(
        h.delivery("ws1", "m-by-name").await.error,
        "localhost is not a public address and is not allowed by dispatch.private_receivers"
    );
    quiet_period().await;
    for (name, _) in &cases {
        assert_eq!(h.receiver.reached(name), 0, "{name} was reached");
    }
    h.stop().await;
}

async fn redirects_are_never_followed(backend: Backend) {
    // 127.0.0.1 is allowed; 127.0.0.2 (another loopback address, standing
    // in for an internal service) is not.
    let mut h = Harness::start(backend).await;
    let internal = Receiver::start_on("127.0.0.2:0", h.token.clone()).await;
    internal.channel("admin", vec![reply(200, r#"{"external_id":"internal"}"#)]);
    for (status, name) in [(307, "moved"), (302, "found")] {
        let mut moved = reply(status, "");
        moved.location = Some(format!("{}/in/admin", internal.base));
        h.channel("ws1", name, vec![moved]);
        let id = format!("m-{name}");
        h.request("ws1", &id, name).await;
        let statuses = h.until_settled("ws1", &id).await;
        assert_eq!(statuses.len(), 1, "{statuses:?}");
        assert_eq!(statuses[0].state(), DeliveryState::Failed);
        assert!(
            statuses[0]
                .error
                .starts_with(&format!("receiver answered HTTP {status} "))
                && statuses[0].error.contains("redirects are not followed"),
            "{}",
            statuses[0].error
        );
    }
    quiet_period().await;
    assert_eq!(internal.reached("admin"), 0, "the redirect was followed");
    h.stop().await;
}

async fn receivers_allowed_by_name_are_reached(backend: Backend) {
    let by_name = Config {
        private_receivers: vec!["localhost".into()],
        ..test_config()
    };
    let mut h = Harness::start_with(backend, by_name).await;
    let port = port_of(&h.receiver);
    let mut named = h
        .receiver
        .channel("named", vec![reply(200, r#"{"external_id":"n-1"}"#)]);
    named.outbound_url = format!("http://localhost:{port}/in/named");
    h.directory.add("ws1", "named", named);
    h.request("ws1", "m-named", "named").await;
    let statuses = h.until_settled("ws1", "m-named").await;
    assert_eq!(
        (statuses[0].state(), statuses[0].external_id.as_str()),
        (DeliveryState::Sent, "n-1"),
        "{statuses:?}"
    );
    assert_eq!(h.receiver.posts("named").len(), 1);

    // The name is allowed, not the addresses it has.
    h.channel("ws1", "literal", vec![reply(200, "{}")]);
    h.request("ws1", "m-literal", "literal").await;
    let statuses = h.until_settled("ws1", "m-literal").await;
    assert_eq!(statuses[0].state(), DeliveryState::Failed);
    assert!(
        statuses[0]
            .error
            .contains("127.0.0.1 is not a public address"),
        "{}",
        statuses[0].error
    );
    assert_eq!(h.receiver.reached("literal"), 0);
    h.stop().await;
}

// ------------------------------------------- what receivers answer

async fn receiver_answers_never_reach_agents(backend: Backend) {
    let mut h = Harness::start(backend).await;
    let secret = format!(
        "sk_live_{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .as_nanos()
    );
    let page = format!(
        "<!DOCTYPE html><html><body><h1>Internal Server Error</h1><pre>\n\
         Traceback: db.connect(password='{secret}')\n\u{1b}[31m</pre></body></html>"
    );
    h.channel("ws1", "leaky", vec![reply(500, &page)]);
    h.channel("ws1", "leaky-4xx", vec![reply(422, &page)]);
    h.request("ws1", "m-leaky", "leaky").await;
    h.request("ws1", "m-leaky-4xx", "leaky-4xx").await;

    let statuses = h.until_settled("ws1", "m-leaky").await;
    assert_eq!(statuses.len(), MAX_ATTEMPTS as usize);
    let (last, retries) = statuses.split_last().expect("statuses");
    for retry in retries {
        assert_eq!(
            retry.error,
            "receiver answered HTTP 500 Internal Server Error"
        );
    }
    assert_eq!(
        last.error,
        "gave up after 4 attempts: receiver answered HTTP 500 Internal Server Error"
    );
    let refused = h.until_settled("ws1", "m-leaky-4xx").await;
    assert_eq!(
        refused[0].error,
        "receiver answered HTTP 422 Unprocessable Entity"
    );

    // Nor through the API.
    let mut shown: Vec<String> = statuses
        .iter()
        .chain(&refused)
        .map(|s| s.error.clone())
        .collect();
    for id in ["m-leaky", "m-leaky-4xx"] {
        shown.push(h.delivery("ws1", id).await.error);
        let answered = Dispatch::get_delivery(
            &h.svc,
            tonic::Request::new(GetDeliveryRequest {
                workspace_id: "ws1".into(),
                message_id: id.into(),
            }),
        )
        .await
        .expect("get")
        .into_inner();
        shown.push(answered.error);
    }
    for dead in h.svc.list_dead_letters("ws1", 0).await.expect("dead") {
        shown.push(dead.error);
    }
    for text in &shown {
        assert!(
            !text.contains(&secret) && !text.contains("Traceback") && !text.contains('<'),
            "the receiver's answer is shown: {text}"
        );
    }

    // Nor in the logs (at info and above), which did record the failures.
    let logs = String::from_utf8_lossy(&captured_logs().lock().expect("lock")).into_owned();
    assert!(
        logs.contains("m-leaky") && logs.contains("outbound message failed"),
        "the failures are logged:\n{logs}"
    );
    assert!(!logs.contains(&secret), "a secret in the logs:\n{logs}");
    assert!(!logs.contains("Traceback"), "the body in the logs:\n{logs}");
    h.stop().await;
}

// -------------------------------------------------------------- deadline

impl Harness {
    /// Read `outbound.status` events for `period` into `seen`.
    async fn drain(&mut self, period: Duration) {
        let until = tokio::time::Instant::now() + period;
        while let Ok(Some(delivery)) = tokio::time::timeout_at(until, self.statuses.next()).await {
            let env = events::from_bus(&delivery.event).expect("envelope");
            delivery.ack().await.expect("ack");
            if let Some(Payload::OutboundStatusChanged(status)) = env.payload {
                self.seen.push((env.workspace_id, status));
            }
        }
    }
}

async fn messages_pending_past_their_deadline_fail(backend: Backend) {
    let config = Config {
        // More attempts than the bus retries: the request is dead-lettered
        // while its delivery is still pending, and nothing would ever
        // settle it.
        max_attempts: 1000,
        pending_deadline: Duration::from_secs(2),
        sweep_interval: Duration::from_millis(100),
        ..test_config()
    };
    let mut h = Harness::start_with(backend, config).await;
    h.channel(
        "ws1",
        "ok",
        vec![reply(200, r#"{"external_id":"in-time"}"#)],
    );
    h.channel("ws1", "down", vec![reply(503, "")]);
    h.request("ws1", "m-in-time", "ok").await;
    h.request("ws1", "m-stuck", "down").await;

    let statuses = h.until_settled("ws1", "m-stuck").await;
    let (last, before) = statuses.split_last().expect("statuses");
    assert!(
        before.iter().all(|s| s.state() == DeliveryState::Pending),
        "{statuses:?}"
    );
    assert_eq!(last.state(), DeliveryState::Failed);
    assert_eq!(last.error, "not delivered within 2 seconds");
    let delivery = h.delivery("ws1", "m-stuck").await;
    assert_eq!(
        (delivery.state(), delivery.error.as_str(), delivery.attempts),
        (
            DeliveryState::Failed,
            "not delivered within 2 seconds",
            last.attempts
        )
    );
    assert!(last.attempts >= 1);

    // Sent in time: untouched, announced once.
    h.drain(Duration::from_millis(500)).await;
    let in_time: Vec<_> = h
        .seen
        .iter()
        .filter(|(_, s)| s.message_id == "m-in-time")
        .map(|(_, s)| (s.state(), s.external_id.clone()))
        .collect();
    assert_eq!(in_time, vec![(DeliveryState::Sent, "in-time".to_owned())]);
    let sent = h.delivery("ws1", "m-in-time").await;
    assert_eq!(
        (sent.state(), sent.error.as_str()),
        (DeliveryState::Sent, "")
    );
    // Failed once, and never sent afterwards.
    let stuck = h
        .seen
        .iter()
        .filter(|(_, s)| s.message_id == "m-stuck" && s.state() == DeliveryState::Failed)
        .count();
    assert_eq!(stuck, 1);
    assert_eq!(h.receiver.posts("down").len() as u32, last.attempts);
    assert_eq!(h.metric("telenet_dispatch_overdue_total"), Some(1.0));
    h.stop().await;
}

async fn late_requests_fail_without_being_sent(backend: Backend) {
    let config = Config {
        pending_deadline: Duration::from_secs(60),
        ..test_config()
    };
    let mut h = Harness::start_with(backend, config).await;
    h.channel("ws1", "ok", vec![reply(200, "{}")]);
    // A reply made two minutes ago, requested only now (dispatch was down,
    // or the request comes back from the dead letters).
    let mut env = events::envelope(
        "ws1",
        Payload::OutboundRequested(OutboundRequested {
            message_id: "m-late".into(),
            conversation_id: "conv-1".into(),
            channel_id: "ok".into(),
            recipient_external_id: "+4915550001".into(),
            text: "too late".into(),
            attachments: Vec::new(),
            ..Default::default()
        }),
        None,
    );
    env.occurred_at = Some(telenet_store::timestamp(now_micros() - 120_000_000));
    h.bus
        .publish(&[events::to_bus(&env)])
        .await
        .expect("publish");
    let statuses = h.until_settled("ws1", "m-late").await;
    assert_eq!(statuses.len(), 1, "{statuses:?}");
    assert_eq!(
        (
            statuses[0].state(),
            statuses[0].error.as_str(),
            statuses[0].attempts
        ),
        (DeliveryState::Failed, "not delivered within 1 minute", 0)
    );
    // A reply made now goes out.
    h.request("ws1", "m-now", "ok").await;
    let statuses = h.until_settled("ws1", "m-now").await;
    assert_eq!(statuses[0].state(), DeliveryState::Sent);
    let posts = h.receiver.posts("ok");
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].webhook_id, "m-now");
    assert_eq!(h.metric("telenet_dispatch_overdue_total"), Some(1.0));
    h.stop().await;
}

/// Every allowed attempt was made by a process that died before recording
/// it (the row as such processes leave it: attempts counted, lease run
/// out, still pending). The redelivered request must not POST once more:
/// the delivery fails, saying why.
async fn attempts_that_never_reported_back_count_toward_the_limit(backend: Backend) {
    use telenet_store::sqlx;
    let mut h = Harness::start(backend).await;
    h.channel("ws1", "ok", vec![reply(200, r#"{"external_id":"ext-1"}"#)]);
    let now = telenet_store::now_micros();
    sqlx::query(
        "INSERT INTO deliveries \
         (workspace_id, message_id, conversation_id, channel_id, state, attempts, \
          lease_owner, lease_until, created_at, updated_at, requested_at) \
         VALUES ('ws1', 'm-dying', 'conv-1', 'ok', 'pending', $1, 'a dead consumer', 1, $2, $2, $2)",
    )
    .bind(i64::from(MAX_ATTEMPTS))
    .bind(now)
    .execute(h.db.pool())
    .await
    .expect("the dead attempts' row");
    h.request("ws1", "m-dying", "ok").await;

    let statuses = h.until_settled("ws1", "m-dying").await;
    let last = statuses.last().expect("final status");
    assert_eq!(
        (last.state(), last.attempts, last.error.as_str()),
        (
            DeliveryState::Failed,
            MAX_ATTEMPTS,
            "gave up after 4 attempts: the last one never reported back"
        )
    );
    quiet_period().await;
    assert!(
        h.receiver.posts("ok").is_empty(),
        "no attempt beyond the limit"
    );
    h.stop().await;
}
