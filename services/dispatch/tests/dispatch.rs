//! Dispatch end to end on both backends: `outbound.requested` goes through the
//! in-memory bus to the consumer, which POSTs to a local receiver that checks
//! the signature and content type the way a real channel would; results are
//! read back through the gRPC API and the `outbound.status` events.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
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
use telenet_store::{Db, events, outbox};
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------- receiver

/// One answer of the receiver: status, body, and a delay before answering.
#[derive(Clone)]
struct Reply {
    status: u16,
    body: String,
    delay: Duration,
}

fn reply(status: u16, body: &str) -> Reply {
    Reply {
        status,
        body: body.to_owned(),
        delay: Duration::ZERO,
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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
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
) -> (StatusCode, String) {
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let reply = {
        let mut endpoints = receiver.endpoints.lock().expect("lock");
        let Some(endpoint) = endpoints.get_mut(&name) else {
            return (StatusCode::NOT_FOUND, "no such endpoint".into());
        };
        if header("content-type").as_deref() != Some("application/json") {
            endpoint
                .refused
                .push(format!("content-type {:?}", header("content-type")));
            return (StatusCode::UNSUPPORTED_MEDIA_TYPE, "json only".into());
        }
        let Some(secret) = &endpoint.secret else {
            return (StatusCode::INTERNAL_SERVER_ERROR, "no secret".into());
        };
        if let Err(e) = secret.verify(
            header("webhook-id").as_deref(),
            header("webhook-timestamp").as_deref(),
            header("webhook-signature").as_deref(),
            &body,
            telenet_signing::unix_now(),
        ) {
            endpoint.refused.push(e.to_string());
            return (StatusCode::UNAUTHORIZED, e.to_string());
        }
        let Ok(json) = serde_json::from_slice(&body) else {
            endpoint.refused.push("body is not json".into());
            return (StatusCode::BAD_REQUEST, "not json".into());
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
    (
        StatusCode::from_u16(reply.status).expect("scripted status"),
        reply.body,
    )
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
        ..Config::default()
    }
}

impl Harness {
    async fn start(backend: Backend) -> Self {
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
        let svc = DispatchService::new(db.clone(), bus.clone(), directory.clone(), test_config())
            .expect("service")
            .with_metrics(&metrics);
        // Subscribe before anything is published.
        let requests = svc.subscribe().await.expect("subscribe");
        tokio::spawn(outbox::Relay::new(db.clone(), bus.clone()).run(token.clone()));
        tokio::spawn(svc.clone().consume(requests, token.clone()));
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
    assert!(
        last.error.contains("gave up after 4 attempts"),
        "{}",
        last.error
    );
    assert!(last.error.contains("http 500"), "{}", last.error);
    assert!(last.error.contains("boom"), "{}", last.error);

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
    assert!(
        statuses[0].error.contains("http 400"),
        "{}",
        statuses[0].error
    );
    assert!(
        statuses[0].error.contains("invalid recipient"),
        "{}",
        statuses[0].error
    );
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
