//! Dispatch honours what each provider declares, end to end on both
//! backends: sending limits (per channel, per recipient) held in the shared
//! rate-limit store, pauses after a provider throttles, texts and media the
//! provider never takes refused without a call, and the `api_base_url`
//! egress policy. The provider is a stub that records each send and answers
//! from a script; the limiter is in memory, or Redis (127.0.0.1:6379, a
//! fresh key prefix per test) where replicas share it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use telenet_bus::memory::MemoryBus;
use telenet_bus::{RetryPolicy, SharedBus};
use telenet_channels::directory::{ChannelCredentials, ChannelDirectory, DirectoryError};
use telenet_channels::{
    Capabilities, CredentialsError, Inbound, MediaRule, Overflow, Provider, RateLimit, RateScope,
    Registry, SendOutcome, TextLimit, TextUnit, Webhook, WebhookError,
};
use telenet_dispatch::{Config, DispatchService, MIGRATIONS};
use telenet_kit::metrics::Metrics;
use telenet_proto::common::v1::{Attachment, AttachmentKind, ChannelKind, ChannelProvider};
use telenet_proto::dispatch::v1::{Delivery, DeliveryState};
use telenet_proto::events::v1::{OutboundRequested, event_envelope::Payload};
use telenet_proto::ingress::v1::TelegramConfig;
use telenet_proto::ingress::v1::channel_config::Provider as Case;
use telenet_ratelimit::{MemoryStore, RateLimiter};
use telenet_store::testing::Backend;
use telenet_store::{Db, events, outbox};
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------- provider

/// One send the stub provider got.
#[derive(Debug, Clone)]
struct Call {
    message_id: String,
    at: Instant,
}

#[derive(Default)]
struct StubState {
    calls: Vec<Call>,
    /// Answers in order; then every send is accepted.
    script: VecDeque<SendOutcome>,
}

/// A provider of LINE channels that sends nothing: it records each call
/// and answers from its script, and declares the capabilities it is given.
#[derive(Clone)]
struct Stub {
    capabilities: Capabilities,
    state: Arc<Mutex<StubState>>,
}

impl Stub {
    fn new(rate_limits: Vec<RateLimit>) -> Self {
        Self {
            capabilities: Capabilities {
                text: Some(TextLimit {
                    max: 20,
                    unit: TextUnit::Chars,
                    overflow: Overflow::Refuse,
                }),
                media: vec![MediaRule {
                    kind: AttachmentKind::Image,
                    mime_types: vec!["image/jpeg".into(), "image/png".into()],
                    max_bytes: Some(10 * 1024 * 1024),
                }],
                rate_limits,
                ..Capabilities::default()
            },
            state: Arc::default(),
        }
    }

    fn answer(&self, outcome: SendOutcome) {
        self.state.lock().expect("lock").script.push_back(outcome);
    }

    fn calls(&self) -> Vec<Call> {
        self.state.lock().expect("lock").calls.clone()
    }

    fn call_of(&self, message_id: &str) -> Vec<Instant> {
        self.calls()
            .into_iter()
            .filter(|c| c.message_id == message_id)
            .map(|c| c.at)
            .collect()
    }
}

#[async_trait]
impl Provider for Stub {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Line
    }

    fn provider(&self) -> ChannelProvider {
        ChannelProvider::Line
    }

    fn capabilities(&self, _: &ChannelCredentials) -> Capabilities {
        self.capabilities.clone()
    }

    fn connect(
        &self,
        requested: ChannelCredentials,
    ) -> Result<ChannelCredentials, CredentialsError> {
        Ok(requested)
    }

    fn verify(&self, _: &ChannelCredentials, _: &Webhook<'_>) -> Result<(), WebhookError> {
        Ok(())
    }

    fn parse(&self, _: &ChannelCredentials, _: &Webhook<'_>) -> Result<Inbound, WebhookError> {
        Ok(Inbound::default())
    }

    fn delivery_state(&self, _: &str) -> Option<DeliveryState> {
        None
    }

    async fn send(
        &self,
        _: &reqwest::Client,
        _: &ChannelCredentials,
        message: &OutboundRequested,
    ) -> SendOutcome {
        let mut state = self.state.lock().expect("lock");
        state.calls.push(Call {
            message_id: message.message_id.clone(),
            at: Instant::now(),
        });
        state.script.pop_front().unwrap_or(SendOutcome::Sent {
            external_id: format!("ext-{}", message.message_id),
        })
    }
}

// --------------------------------------------------------------- directory

#[derive(Default)]
struct FixedDirectory(Mutex<HashMap<String, ChannelCredentials>>);

impl FixedDirectory {
    /// A LINE channel `id` of workspace `ws1`, calling its API at
    /// `api_base_url` (empty: the provider's own).
    fn line(&self, id: &str, api_base_url: &str) {
        self.add(
            id,
            ChannelKind::Line,
            ChannelProvider::Line,
            api_base_url,
            None,
        );
    }

    /// A Telegram channel `id` of workspace `ws1` whose Bot API is at
    /// `api_base_url`.
    fn telegram(&self, id: &str, api_base_url: &str) {
        let settings = TelegramConfig {
            bot_token: format!("123456:{}", "A".repeat(35)),
            secret_token: "secret".into(),
            ..Default::default()
        };
        self.add(
            id,
            ChannelKind::Telegram,
            ChannelProvider::Telegram,
            api_base_url,
            Some(Case::Telegram(settings)),
        );
    }

    fn add(
        &self,
        id: &str,
        kind: ChannelKind,
        provider: ChannelProvider,
        api_base_url: &str,
        settings: Option<Case>,
    ) {
        let mut creds = ChannelCredentials {
            channel_id: id.to_owned(),
            kind,
            provider,
            ..Default::default()
        };
        creds.config.api_base_url = api_base_url.to_owned();
        creds.config.provider = settings;
        self.0.lock().expect("lock").insert(id.to_owned(), creds);
    }
}

#[async_trait]
impl ChannelDirectory for FixedDirectory {
    async fn credentials(
        &self,
        ws: &str,
        channel: &str,
    ) -> Result<ChannelCredentials, DirectoryError> {
        if ws != "ws1" {
            return Err(DirectoryError::NotFound);
        }
        self.0
            .lock()
            .expect("lock")
            .get(channel)
            .cloned()
            .ok_or(DirectoryError::NotFound)
    }
}

// ----------------------------------------------------------------- harness

/// One dispatch replica: its bus (requests are published to one replica),
/// its limiter and metrics; replicas of a test share the database.
struct Replica {
    bus: SharedBus,
    svc: DispatchService,
    metrics: Metrics,
}

struct Harness {
    db: Db,
    directory: Arc<FixedDirectory>,
    stub: Stub,
    token: CancellationToken,
    _dir: tempfile::TempDir,
}

const MAX_ATTEMPTS: u32 = 4;

fn config() -> Config {
    Config {
        max_attempts: MAX_ATTEMPTS,
        concurrency: 8,
        ..Config::default()
    }
}

/// A limiter of its own, in memory.
fn memory_limiter(metrics: &Metrics) -> RateLimiter {
    RateLimiter::new(Arc::new(MemoryStore::default()), metrics)
}

/// A limiter over Redis at 127.0.0.1:6379 under `prefix`.
fn redis_limiter(prefix: &str, metrics: &Metrics) -> RateLimiter {
    let store = telenet_ratelimit::connect("redis://127.0.0.1:6379", prefix).expect("redis store");
    RateLimiter::new(store, metrics)
}

/// A key prefix no other test (or run) uses.
fn fresh_prefix() -> String {
    format!("test-dispatch-limits-{}:", uuid::Uuid::new_v4())
}

impl Harness {
    async fn start(backend: Backend, stub: Stub) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = backend.url(dir.path(), "dispatch").await;
        let db = Db::connect(&url, "dispatch").await.expect("connect");
        db.migrate(&MIGRATIONS).await.expect("migrate");
        Self {
            db,
            directory: Arc::default(),
            stub,
            token: CancellationToken::new(),
            _dir: dir,
        }
    }

    /// A running replica sending through the stub, counting limits with
    /// the limiter `limiter` makes.
    async fn replica(&self, limiter: impl FnOnce(&Metrics) -> RateLimiter) -> Replica {
        let stub = Registry::empty().with(Arc::new(self.stub.clone()));
        self.replica_with(limiter, stub, config()).await
    }

    /// A running replica sending through `providers` with `config`.
    async fn replica_with(
        &self,
        limiter: impl FnOnce(&Metrics) -> RateLimiter,
        providers: Registry,
        config: Config,
    ) -> Replica {
        let bus: SharedBus = Arc::new(MemoryBus::new(RetryPolicy {
            delays: vec![Duration::from_millis(20); 10],
        }));
        let metrics = Metrics::new();
        let svc =
            DispatchService::new(self.db.clone(), bus.clone(), self.directory.clone(), config)
                .expect("service")
                .with_metrics(&metrics)
                .with_rate_limiter(limiter(&metrics))
                .with_providers(providers);
        let requests = svc.subscribe().await.expect("subscribe");
        tokio::spawn(outbox::Relay::new(self.db.clone(), bus.clone()).run(self.token.clone()));
        tokio::spawn(svc.clone().consume(requests, self.token.clone()));
        Replica { bus, svc, metrics }
    }

    async fn stop(self) {
        self.token.cancel();
        self.db.close().await;
    }
}

impl Replica {
    async fn request(&self, message: OutboundRequested) {
        let env = events::envelope("ws1", Payload::OutboundRequested(message), None);
        self.bus
            .publish(&[events::to_bus(&env)])
            .await
            .expect("publish");
    }

    /// The delivery of `message_id` once it is SENT or FAILED.
    async fn settled(&self, message_id: &str) -> Delivery {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(d) = self.svc.get_delivery("ws1", message_id).await
                && matches!(d.state(), DeliveryState::Sent | DeliveryState::Failed)
            {
                return d;
            }
            assert!(Instant::now() < deadline, "{message_id} not settled");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn metric(&self, series: &str) -> f64 {
        let text = self.metrics.encode().expect("metrics encode");
        telenet_kit::metrics::sample(&text, series).unwrap_or(0.0)
    }
}

fn message(id: &str, channel: &str, recipient: &str, text: &str) -> OutboundRequested {
    OutboundRequested {
        message_id: id.to_owned(),
        conversation_id: "conv-1".into(),
        channel_id: channel.to_owned(),
        recipient_external_id: recipient.to_owned(),
        text: text.to_owned(),
        ..Default::default()
    }
}

fn per_recipient(per: Duration) -> Vec<RateLimit> {
    vec![RateLimit {
        messages: 1,
        per,
        scope: RateScope::Recipient,
    }]
}

/// Less than the limit's interval, for the clocks of the store and the test
/// to differ a little.
const ALMOST: Duration = Duration::from_millis(900);

fn sent_once(d: &Delivery) {
    assert_eq!(
        (d.state(), d.attempts, d.error.as_str()),
        (DeliveryState::Sent, 1, ""),
        "{d:?}"
    );
}

telenet_store::on_both_backends!(
    a_per_recipient_limit_delays_the_second_message_without_failing_it,
    a_throttled_channel_pauses_then_the_message_is_sent,
    telegrams_429_with_retry_after_pauses_the_channel_then_the_message_is_sent,
    an_over_long_text_on_a_refusing_provider_fails_without_a_call,
    a_media_type_or_size_not_accepted_fails_without_a_call,
    an_api_base_url_outside_the_egress_policy_fails_without_a_call,
    two_replicas_share_the_limit_in_redis,
    a_limiter_whose_store_is_away_lets_messages_through,
);

// ------------------------------------------------------------------- tests

async fn a_per_recipient_limit_delays_the_second_message_without_failing_it(backend: Backend) {
    let h = Harness::start(backend, Stub::new(per_recipient(Duration::from_secs(1)))).await;
    h.directory.line("ch-1", "");
    let r = h.replica(memory_limiter).await;
    r.request(message("m-1", "ch-1", "alice", "first")).await;
    sent_once(&r.settled("m-1").await);
    r.request(message("m-2", "ch-1", "alice", "second")).await;
    r.request(message("m-3", "ch-1", "bob", "another contact"))
        .await;
    let (m2, m3) = (r.settled("m-2").await, r.settled("m-3").await);
    // Held, not failed, and the hold is no attempt.
    sent_once(&m2);
    sent_once(&m3);
    let first = h.stub.call_of("m-1");
    let second = h.stub.call_of("m-2");
    let other = h.stub.call_of("m-3");
    assert_eq!((first.len(), second.len(), other.len()), (1, 1, 1));
    assert!(
        second[0] - first[0] >= ALMOST,
        "the second message to alice waited: {:?}",
        second[0] - first[0]
    );
    assert!(
        other[0] - first[0] < ALMOST,
        "bob's message did not wait for alice's limit: {:?}",
        other[0] - first[0]
    );
    assert!(
        r.metric(r#"telenet_dispatch_held_total{channel_kind="line",cause="rate_limit"}"#) >= 1.0
    );
    assert_eq!(
        r.metric(r#"telenet_dispatch_attempts_total{channel_kind="line",outcome="sent"}"#),
        3.0
    );
    h.stop().await;
}

async fn a_throttled_channel_pauses_then_the_message_is_sent(backend: Backend) {
    let h = Harness::start(backend, Stub::new(Vec::new())).await;
    h.directory.line("ch-1", "");
    h.stub.answer(SendOutcome::Throttled {
        reason: "http 429: too many requests".into(),
        retry_after: Duration::from_secs(1),
    });
    let r = h.replica(memory_limiter).await;
    r.request(message("m-1", "ch-1", "alice", "first")).await;
    // Once throttled, the channel is paused for everyone on it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while r.metric(r#"telenet_dispatch_channel_pauses_total{channel_kind="line"}"#) < 1.0 {
        assert!(Instant::now() < deadline, "never paused");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    r.request(message("m-2", "ch-1", "bob", "second")).await;
    let m1 = r.settled("m-1").await;
    // The throttled attempt counts as one retry.
    assert_eq!(
        (m1.state(), m1.attempts, m1.external_id.as_str()),
        (DeliveryState::Sent, 2, "ext-m-1"),
        "{m1:?}"
    );
    sent_once(&r.settled("m-2").await);
    let throttled = h.stub.call_of("m-1");
    assert_eq!(throttled.len(), 2, "throttled once, then sent");
    assert!(
        throttled[1] - throttled[0] >= ALMOST,
        "the retry waited for the pause: {:?}",
        throttled[1] - throttled[0]
    );
    let other = h.stub.call_of("m-2");
    assert_eq!(other.len(), 1);
    assert!(
        other[0] - throttled[0] >= ALMOST,
        "another contact's message waited for the channel's pause: {:?}",
        other[0] - throttled[0]
    );
    assert_eq!(
        r.metric(r#"telenet_dispatch_channel_pauses_total{channel_kind="line"}"#),
        1.0
    );
    assert!(r.metric(r#"telenet_dispatch_held_total{channel_kind="line",cause="paused"}"#) >= 1.0);
    h.stop().await;
}

async fn an_over_long_text_on_a_refusing_provider_fails_without_a_call(backend: Backend) {
    let h = Harness::start(backend, Stub::new(Vec::new())).await;
    h.directory.line("ch-1", "");
    let r = h.replica(memory_limiter).await;
    r.request(message("m-long", "ch-1", "alice", &"ü".repeat(25)))
        .await;
    let failed = r.settled("m-long").await;
    assert_eq!(failed.state(), DeliveryState::Failed);
    assert_eq!(
        failed.error,
        "text is 25 characters; LINE takes at most 20 per message"
    );
    // Exactly at the limit: sent.
    r.request(message("m-fits", "ch-1", "bob", &"ü".repeat(20)))
        .await;
    sent_once(&r.settled("m-fits").await);
    assert!(
        h.stub.call_of("m-long").is_empty(),
        "no call for the refused text"
    );
    h.stop().await;
}

async fn a_media_type_or_size_not_accepted_fails_without_a_call(backend: Backend) {
    let h = Harness::start(backend, Stub::new(Vec::new())).await;
    h.directory.line("ch-1", "");
    let r = h.replica(memory_limiter).await;
    let with = |id: &str, mime: &str, size: u64| {
        let mut m = message(id, "ch-1", "alice", "a picture");
        m.attachments = vec![Attachment {
            kind: AttachmentKind::Image as i32,
            url: "https://files.example/picture".into(),
            mime_type: mime.into(),
            size_bytes: size,
            ..Default::default()
        }];
        m
    };
    r.request(with("m-bmp", "image/bmp", 2048)).await;
    r.request(with("m-big", "image/png", 11 * 1024 * 1024))
        .await;
    r.request(with("m-png", "image/png", 2048)).await;
    let bmp = r.settled("m-bmp").await;
    assert_eq!(
        (bmp.state(), bmp.error.as_str()),
        (
            DeliveryState::Failed,
            "image of type image/bmp is not accepted by LINE (it takes image/jpeg, image/png)"
        )
    );
    let big = r.settled("m-big").await;
    assert_eq!(
        (big.state(), big.error.as_str()),
        (
            DeliveryState::Failed,
            "image is 11 MiB (11534336 bytes); LINE takes at most 10 MiB per image"
        )
    );
    sent_once(&r.settled("m-png").await);
    assert!(h.stub.call_of("m-bmp").is_empty());
    assert!(h.stub.call_of("m-big").is_empty());
    h.stop().await;
}

async fn an_api_base_url_outside_the_egress_policy_fails_without_a_call(backend: Backend) {
    let h = Harness::start(backend, Stub::new(Vec::new())).await;
    // A private address no `private_receivers` allows.
    h.directory.line("ch-private", "https://10.20.30.40/api");
    h.directory.line("ch-public", "https://api.line.example");
    let r = h.replica(memory_limiter).await;
    r.request(message("m-private", "ch-private", "alice", "hi"))
        .await;
    r.request(message("m-public", "ch-public", "alice", "hi"))
        .await;
    let refused = r.settled("m-private").await;
    assert_eq!(refused.state(), DeliveryState::Failed);
    assert!(
        refused.error.starts_with("api_base_url: "),
        "{}",
        refused.error
    );
    sent_once(&r.settled("m-public").await);
    assert!(h.stub.call_of("m-private").is_empty());
    h.stop().await;
}

async fn two_replicas_share_the_limit_in_redis(backend: Backend) {
    let h = Harness::start(backend, Stub::new(per_recipient(Duration::from_secs(2)))).await;
    h.directory.line("ch-1", "");
    let prefix = fresh_prefix();
    let a = h.replica(|m| redis_limiter(&prefix, m)).await;
    let b = h.replica(|m| redis_limiter(&prefix, m)).await;
    a.request(message("m-a", "ch-1", "alice", "from a")).await;
    sent_once(&a.settled("m-a").await);
    b.request(message("m-b", "ch-1", "alice", "from b")).await;
    sent_once(&b.settled("m-b").await);
    let (from_a, from_b) = (h.stub.call_of("m-a"), h.stub.call_of("m-b"));
    assert!(
        from_b[0] - from_a[0] >= Duration::from_millis(1800),
        "replica b waited for replica a's count: {:?}",
        from_b[0] - from_a[0]
    );
    assert!(
        b.metric(r#"telenet_dispatch_held_total{channel_kind="line",cause="rate_limit"}"#) >= 1.0
    );
    // Replicas counting apart (memory each) would not have waited.
    let c = h.replica(memory_limiter).await;
    c.request(message("m-c", "ch-1", "alice", "from c")).await;
    sent_once(&c.settled("m-c").await);
    assert!(
        h.stub.call_of("m-c")[0] - from_b[0] < Duration::from_millis(1800),
        "a separate count does not hold"
    );
    h.stop().await;
}

async fn a_limiter_whose_store_is_away_lets_messages_through(backend: Backend) {
    let h = Harness::start(backend, Stub::new(per_recipient(Duration::from_secs(60)))).await;
    h.directory.line("ch-1", "");
    // Nothing listens on port 1.
    let r = h
        .replica(|m| {
            let store = telenet_ratelimit::connect("redis://127.0.0.1:1", &fresh_prefix())
                .expect("redis store");
            RateLimiter::new(store, m)
        })
        .await;
    r.request(message("m-1", "ch-1", "alice", "first")).await;
    sent_once(&r.settled("m-1").await);
    r.request(message("m-2", "ch-1", "alice", "second")).await;
    sent_once(&r.settled("m-2").await);
    assert!(r.metric("telenet_rate_limit_store_errors_total") >= 2.0);
    h.stop().await;
}

/// A local Bot API: answers `sendMessage` first with Telegram's flood
/// control (HTTP 429, `retry_after` 1), then with the sent message; records
/// when each call came.
async fn bot_api(token: CancellationToken) -> (String, Arc<Mutex<Vec<Instant>>>) {
    let calls: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let seen = calls.clone();
    let app = axum::Router::new().route(
        "/{bot}/sendMessage",
        axum::routing::post(move || {
            let seen = seen.clone();
            async move {
                let n = {
                    let mut calls = seen.lock().expect("lock");
                    calls.push(Instant::now());
                    calls.len()
                };
                if n == 1 {
                    (
                        axum::http::StatusCode::TOO_MANY_REQUESTS,
                        [("retry-after", "1")],
                        r#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 1","parameters":{"retry_after":1}}"#,
                    )
                } else {
                    (
                        axum::http::StatusCode::OK,
                        [("retry-after", "0")],
                        r#"{"ok":true,"result":{"message_id":7,"chat":{"id":42}}}"#,
                    )
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(token.cancelled_owned())
            .await
            .expect("serves");
    });
    (format!("http://{addr}"), calls)
}

async fn telegrams_429_with_retry_after_pauses_the_channel_then_the_message_is_sent(
    backend: Backend,
) {
    let h = Harness::start(backend, Stub::new(Vec::new())).await;
    let (base, calls) = bot_api(h.token.clone()).await;
    h.directory.telegram("tg-1", &base);
    let config = Config {
        // The local Bot API is on loopback.
        private_receivers: vec!["127.0.0.1".into()],
        ..config()
    };
    let r = h
        .replica_with(memory_limiter, Registry::builtin(), config)
        .await;
    r.request(message("m-1", "tg-1", "42", "hello")).await;
    let sent = r.settled("m-1").await;
    assert_eq!(
        (sent.state(), sent.attempts, sent.external_id.as_str()),
        (DeliveryState::Sent, 2, "42:7"),
        "{sent:?}"
    );
    let calls = calls.lock().expect("lock").clone();
    assert_eq!(calls.len(), 2, "throttled once, then sent");
    assert!(
        calls[1] - calls[0] >= ALMOST,
        "the retry waited for Telegram's retry_after: {:?}",
        calls[1] - calls[0]
    );
    assert_eq!(
        r.metric(r#"telenet_dispatch_channel_pauses_total{channel_kind="telegram"}"#),
        1.0
    );
    h.stop().await;
}
