//! Ingress started as the process starts it, on both backends: the channel
//! registry through its gRPC API (and the directory client dispatch and
//! media use), and custom-channel webhooks over HTTP — verified, parsed,
//! published once, refused with the right status, answered 503 with
//! nothing recorded while the broker is down, and 429 past a channel's
//! rate limit (counted in memory, and in Redis on the PostgreSQL run).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use telenet_bus::{
    BusError, DeadLetter, DeadLetterFilter, Event, EventBus, QueueDepth, SharedBus, SubscribeSpec,
    Subscription,
};
use telenet_channels::directory::{ChannelDirectory, DirectoryError, GrpcChannelDirectory};
use telenet_ingress::{Config, MIGRATIONS, NAME, start};
use telenet_kit::grpc::GrpcChannel;
use telenet_proto::common::v1::{ChannelKind, PageRequest};
use telenet_proto::dispatch::v1::DeliveryState;
use telenet_proto::events::v1::event_envelope::Payload;
use telenet_proto::ingress::v1::channels_client::ChannelsClient;
use telenet_proto::ingress::v1::{
    Channel, CreateChannelRequest, DeleteChannelRequest, GetChannelRequest, ListChannelsRequest,
};
use telenet_runtime::testing::{TestService, TestSetup};
use telenet_signing::Secret;
use telenet_store::events;
use telenet_store::testing::Backend;
use tonic::Code;

telenet_store::on_both_backends!(
    the_registry_connects_lists_and_disconnects_channels,
    custom_webhooks_are_verified_parsed_and_published_once,
    a_broker_outage_answers_503_and_records_nothing,
    an_event_no_queue_binds_answers_503_and_records_nothing,
    internal_outbound_urls_are_refused_unless_allowed,
    a_channel_over_its_rate_limit_gets_429_before_its_signature_is_checked,
);

// ----------------------------------------------------------------- harness

/// A bus whose publishing can be cut, like a broker going away.
struct Flaky {
    inner: SharedBus,
    down: AtomicBool,
}

#[async_trait]
impl EventBus for Flaky {
    async fn publish(&self, events: &[Event]) -> Result<(), BusError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(BusError::Unavailable("the broker is down".into()));
        }
        self.inner.publish(events).await
    }

    async fn subscribe(&self, spec: SubscribeSpec) -> Result<Subscription, BusError> {
        self.inner.subscribe(spec).await
    }

    async fn declare(&self, specs: &[SubscribeSpec]) -> Result<(), BusError> {
        self.inner.declare(specs).await
    }

    fn known_groups(&self) -> Vec<String> {
        self.inner.known_groups()
    }

    async fn drain_dead_letters(
        &self,
        group: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BusError> {
        self.inner.drain_dead_letters(group, limit).await
    }

    async fn list_dead_letters(
        &self,
        group: &str,
        select: DeadLetterFilter<'_>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BusError> {
        self.inner.list_dead_letters(group, select, limit).await
    }

    async fn redrive_dead_letters(
        &self,
        group: &str,
        select: DeadLetterFilter<'_>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BusError> {
        self.inner.redrive_dead_letters(group, select, limit).await
    }

    async fn discard_dead_letters(
        &self,
        group: &str,
        select: DeadLetterFilter<'_>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BusError> {
        self.inner.discard_dead_letters(group, select, limit).await
    }

    async fn ping(&self) -> Result<(), BusError> {
        self.inner.ping().await
    }

    async fn queue_depth(&self, group: &str) -> Result<QueueDepth, BusError> {
        self.inner.queue_depth(group).await
    }
}

struct Harness {
    service: TestService,
    bus: Arc<Flaky>,
    grpc: GrpcChannel,
    inbound: Subscription,
    http: reqwest::Client,
}

impl Harness {
    async fn start(backend: Backend) -> Self {
        Self::start_with(backend, Config::default()).await
    }

    async fn start_with(backend: Backend, config: Config) -> Self {
        Self::start_limited(backend, config, None, "inbound.*").await
    }

    /// Started with the observer bound to `pattern` only: a pattern no
    /// inbound event matches leaves ingress's events with no queue.
    async fn start_observing(backend: Backend, config: Config, pattern: &str) -> Self {
        Self::start_limited(backend, config, None, pattern).await
    }

    /// With rate limits counted in `rate_limits` (default: in memory) and
    /// the observer bound to `pattern`.
    async fn start_limited(
        backend: Backend,
        config: Config,
        rate_limits: Option<telenet_ratelimit::SharedStore>,
        pattern: &str,
    ) -> Self {
        let inner = telenet_bus::connect("memory://", "test.", Default::default())
            .await
            .expect("memory bus");
        let bus = Arc::new(Flaky {
            inner,
            down: AtomicBool::new(false),
        });
        // Watch what ingress publishes from the start.
        let inbound = bus
            .subscribe(SubscribeSpec::new("observer", &[pattern]))
            .await
            .expect("observe");
        let mut setup = TestSetup::new(NAME, config)
            .database(backend, MIGRATIONS)
            .bus(bus.clone())
            .listener();
        if let Some(store) = rate_limits {
            setup = setup.rate_limits(store);
        }
        let service = TestService::start(setup, start).await;
        let grpc = service.channel();
        Self {
            service,
            bus,
            grpc,
            inbound,
            http: reqwest::Client::new(),
        }
    }

    fn channels(&self) -> ChannelsClient<GrpcChannel> {
        ChannelsClient::new(self.grpc.clone())
    }

    /// A custom channel of `ws`, with its secret.
    async fn custom_channel(&self, ws: &str) -> (Channel, String) {
        let created = self
            .channels()
            .create_channel(create(ws, "Shop"))
            .await
            .expect("create")
            .into_inner();
        (created.channel.expect("the channel"), created.secret)
    }

    /// POST `body` to `url` signed with `secret` as delivery `id`, at `at`.
    async fn post(&self, url: &str, secret: &str, id: &str, at: i64, body: &[u8]) -> Reply {
        let signature = Secret::parse(secret).expect("secret").sign(id, at, body);
        let response = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", at.to_string())
            .header("webhook-signature", signature)
            .body(body.to_vec())
            .send()
            .await
            .expect("webhook request");
        Reply::of(response).await
    }

    async fn send(&self, url: &str, secret: &str, id: &str, body: &serde_json::Value) -> Reply {
        let body = body.to_string();
        self.post(
            url,
            secret,
            id,
            telenet_signing::unix_now(),
            body.as_bytes(),
        )
        .await
    }

    /// The next event published, within 5 s.
    async fn next_event(&mut self) -> (String, String, Payload) {
        let delivery = tokio::time::timeout(Duration::from_secs(5), self.inbound.next())
            .await
            .expect("an event in time")
            .expect("bus open");
        let env = events::from_bus(&delivery.event).expect("envelope");
        delivery.ack().await.expect("ack");
        (
            env.workspace_id,
            env.event_id,
            env.payload.expect("payload"),
        )
    }

    /// Nothing more was published.
    async fn nothing_more(&mut self) {
        let more = tokio::time::timeout(Duration::from_millis(300), self.inbound.next()).await;
        if let Ok(Some(delivery)) = more {
            panic!("unexpected event {}", delivery.event.routing_key);
        }
    }
}

/// A webhook's answer: status and JSON body.
#[derive(Debug)]
struct Reply {
    status: u16,
    allow: Option<String>,
    content_type: Option<String>,
    retry_after: Option<String>,
    body: serde_json::Value,
}

impl Reply {
    async fn of(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let allow = header("allow");
        let content_type = header("content-type");
        let retry_after = header("retry-after");
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        Self {
            status,
            allow,
            content_type,
            retry_after,
            body,
        }
    }
}

fn create(ws: &str, name: &str) -> CreateChannelRequest {
    CreateChannelRequest {
        workspace_id: ws.into(),
        kind: ChannelKind::Custom as i32,
        name: name.into(),
        outbound_url: "http://shop.example".into(),
        secret: String::new(),
        accepted_voice_types: vec!["audio/ogg; codecs=opus".into()],
    }
}

fn get(ws: &str, id: &str) -> GetChannelRequest {
    GetChannelRequest {
        workspace_id: ws.into(),
        channel_id: id.into(),
    }
}

fn inbound_text(external_id: &str, text: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "message.inbound",
        "message": {
            "external_id": external_id,
            "sender": {"external_id": "+34600", "display_name": "Ana"},
            "text": text,
        }
    })
}

fn status(external_id: &str, state: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "message.status",
        "status": {"message_external_id": external_id, "state": state}
    })
}

// ------------------------------------------------------------------- tests

async fn the_registry_connects_lists_and_disconnects_channels(backend: Backend) {
    let h = Harness::start(backend).await;
    let mut channels = h.channels();

    // Refusals name what is wrong.
    for (request, needle) in [
        (create("ws1", " "), "name must be 1 to 100 characters"),
        (create("", "Shop"), "workspace_id is required"),
        (
            CreateChannelRequest {
                kind: ChannelKind::Whatsapp as i32,
                ..create("ws1", "Shop")
            },
            "CreateChannel connects custom channels only; connect a whatsapp channel with ConnectChannel",
        ),
        (
            CreateChannelRequest {
                outbound_url: "shop.example/in".into(),
                ..create("ws1", "Shop")
            },
            "outbound_url is not an absolute URL",
        ),
        (
            CreateChannelRequest {
                secret: "abc".into(),
                ..create("ws1", "Shop")
            },
            "secret: ",
        ),
        (
            CreateChannelRequest {
                accepted_voice_types: vec!["ogg".into()],
                ..create("ws1", "Shop")
            },
            "accepted_voice_types",
        ),
    ] {
        let status = channels.create_channel(request).await.expect_err(needle);
        assert_eq!(status.code(), Code::InvalidArgument, "{needle}");
        assert!(status.message().contains(needle), "{}", status.message());
    }

    // Connected: a generated secret, the URL normalised, the webhook URL on
    // the listener the process bound.
    let (first, secret) = h.custom_channel("ws1").await;
    assert!(secret.starts_with("whsec_"));
    assert_eq!(first.outbound_url, "http://shop.example/");
    assert!(
        first.webhook_url.starts_with("http://127.0.0.1:"),
        "{}",
        first.webhook_url
    );
    assert!(
        first
            .webhook_url
            .ends_with(&format!("/webhooks/{}", first.id))
    );
    let given = Secret::generate().expect("rng").expose();
    let second = channels
        .create_channel(CreateChannelRequest {
            secret: given.clone(),
            ..create("ws1", "Second")
        })
        .await
        .expect("create")
        .into_inner();
    assert_eq!(second.secret, given);
    let second = second.channel.expect("channel");

    // Read back, within the workspace only.
    let got = channels
        .get_channel(get("ws1", &first.id))
        .await
        .expect("get");
    assert_eq!(got.into_inner(), first);
    let status = channels
        .get_channel(get("ws2", &first.id))
        .await
        .expect_err("another workspace");
    assert_eq!(status.code(), Code::NotFound);

    // Pages, newest first.
    let page = |token: &str| ListChannelsRequest {
        workspace_id: "ws1".into(),
        page: Some(PageRequest {
            page_size: 1,
            page_token: token.into(),
        }),
    };
    let one = channels
        .list_channels(page(""))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(one.channels, vec![second.clone()]);
    let token = one.page.expect("page").next_page_token;
    let two = channels
        .list_channels(page(&token))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(two.channels, vec![first.clone()]);
    assert_eq!(two.page.expect("page").next_page_token, "");

    // What dispatch and media ask for.
    let credentials = channels
        .get_channel_credentials(get("ws1", &first.id))
        .await
        .expect("credentials")
        .into_inner();
    assert_eq!(credentials.secret, secret);
    let directory = GrpcChannelDirectory::new(h.grpc.clone());
    let found = directory
        .credentials("ws1", &first.id)
        .await
        .expect("found");
    assert_eq!(found.kind, ChannelKind::Custom);
    assert_eq!(found.outbound_url, "http://shop.example/");
    assert_eq!(found.secret, secret);
    assert_eq!(found.accepted_voice_types, vec!["audio/ogg; codecs=opus"]);
    assert_eq!(
        directory.credentials("ws2", &first.id).await,
        Err(DirectoryError::NotFound)
    );
    assert!(matches!(
        directory.credentials("ws1", " ").await,
        Err(DirectoryError::Rejected(_))
    ));

    // Disconnected: gone from the registry, its webhooks refused.
    let delete = DeleteChannelRequest {
        workspace_id: "ws1".into(),
        channel_id: first.id.clone(),
    };
    channels
        .delete_channel(delete.clone())
        .await
        .expect("delete");
    let status = channels.delete_channel(delete).await.expect_err("gone");
    assert_eq!(status.code(), Code::NotFound);
    let status = channels
        .get_channel(get("ws1", &first.id))
        .await
        .expect_err("gone");
    assert_eq!(status.code(), Code::NotFound);
    let reply = h
        .send(
            &first.webhook_url,
            &secret,
            "wh-1",
            &inbound_text("m-1", "hola"),
        )
        .await;
    assert_eq!(reply.status, 404);
    h.service.stop().await;
}

async fn custom_webhooks_are_verified_parsed_and_published_once(backend: Backend) {
    let mut h = Harness::start(backend).await;
    let (channel, secret) = h.custom_channel("ws1").await;
    let url = channel.webhook_url.clone();

    // Accepted, published with the workspace, the delivery id, the message.
    let ok = h
        .send(&url, &secret, "wh-1", &inbound_text("m-1", "hola"))
        .await;
    assert_eq!(
        (ok.status, ok.body["status"].as_str()),
        (200, Some("accepted"))
    );
    let (ws, event_id, payload) = h.next_event().await;
    assert_eq!(ws, "ws1");
    assert_eq!(ok.body["event_id"].as_str(), Some(event_id.as_str()));
    let Payload::InboundMessageReceived(message) = payload else {
        panic!("not a message: {payload:?}");
    };
    assert_eq!(message.channel_id, channel.id);
    assert_eq!(message.channel_kind, ChannelKind::Custom as i32);
    assert_eq!(message.webhook_id, "wh-1");
    assert_eq!(message.external_id, "m-1");
    assert_eq!(message.text, "hola");

    // Duplicates: the same delivery again, the same message in a new one.
    for id in ["wh-1", "wh-2"] {
        let dup = h
            .send(&url, &secret, id, &inbound_text("m-1", "hola"))
            .await;
        assert_eq!(
            (dup.status, dup.body["status"].as_str()),
            (200, Some("duplicate")),
            "{id}"
        );
    }

    // Statuses: each state of a message is news once.
    let delivered = h
        .send(&url, &secret, "wh-3", &status("out-1", "delivered"))
        .await;
    assert_eq!(delivered.body["status"], "accepted");
    let (_, _, payload) = h.next_event().await;
    let Payload::InboundStatusReceived(reported) = payload else {
        panic!("not a status: {payload:?}");
    };
    assert_eq!(reported.message_external_id, "out-1");
    assert_eq!(reported.state, DeliveryState::Delivered as i32);
    let again = h
        .send(&url, &secret, "wh-4", &status("out-1", "delivered"))
        .await;
    assert_eq!(again.body["status"], "duplicate");
    let read = h
        .send(&url, &secret, "wh-5", &status("out-1", "read"))
        .await;
    assert_eq!(read.body["status"], "accepted");
    h.next_event().await;

    // Refusals, each naming why, and recording nothing.
    let body = inbound_text("m-2", "x").to_string();
    let now = telenet_signing::unix_now();
    let other = Secret::generate().expect("rng").expose();
    let wrong_secret = h.post(&url, &other, "wh-6", now, body.as_bytes()).await;
    assert_eq!(wrong_secret.status, 401);
    let stale = h
        .post(&url, &secret, "wh-6", now - 600, body.as_bytes())
        .await;
    assert_eq!(stale.status, 401);
    assert!(
        stale.body["error"]
            .as_str()
            .is_some_and(|e| e.contains("tolerance"))
    );
    let unsigned = Reply::of(h.http.post(&url).body("{}").send().await.expect("send")).await;
    assert_eq!(
        (unsigned.status, unsigned.body["error"].as_str()),
        (401, Some("missing header webhook-id"))
    );
    let malformed = h.post(&url, &secret, "wh-6", now, b"{\"type\":").await;
    assert_eq!(malformed.status, 400);
    let invalid = serde_json::json!({"type":"message.inbound","message":{"external_id":"m-2","sender":{"external_id":""},"text":"x"}});
    let invalid = h.send(&url, &secret, "wh-7", &invalid).await;
    assert_eq!(invalid.status, 400);
    assert!(
        invalid.body["error"]
            .as_str()
            .is_some_and(|e| e.contains("sender.external_id"))
    );
    let unknown = url.replace(&channel.id, "00000000-0000-7000-8000-000000000000");
    let unknown = h
        .send(&unknown, &secret, "wh-8", &inbound_text("m-2", "x"))
        .await;
    assert_eq!(
        (unknown.status, unknown.body["error"].as_str()),
        (404, Some("unknown channel"))
    );
    let big = h
        .send(
            &url,
            &secret,
            "wh-9",
            &inbound_text("m-2", &"x".repeat(1024 * 1024 + 10)),
        )
        .await;
    assert_eq!(big.status, 413);
    // The custom channel has no handshake: a GET is not served.
    let probe = Reply::of(h.http.get(&url).send().await.expect("send")).await;
    assert_eq!((probe.status, probe.allow.as_deref()), (405, Some("POST")));
    h.nothing_more().await;

    // A refused delivery id is not burnt: sent right, it is accepted.
    let retried = h
        .send(&url, &secret, "wh-6", &inbound_text("m-2", "again"))
        .await;
    assert_eq!(retried.body["status"], "accepted");
    let (_, _, payload) = h.next_event().await;
    assert!(matches!(payload, Payload::InboundMessageReceived(m) if m.text == "again"));
    h.nothing_more().await;
    h.service.stop().await;
}

async fn a_broker_outage_answers_503_and_records_nothing(backend: Backend) {
    let mut h = Harness::start(backend).await;
    let (channel, secret) = h.custom_channel("ws1").await;
    let url = channel.webhook_url.clone();
    let message = inbound_text("m-down", "are you there?");

    h.bus.down.store(true, Ordering::SeqCst);
    let down = h.send(&url, &secret, "wh-down", &message).await;
    assert_eq!(
        (down.status, down.body["error"].as_str()),
        (503, Some("temporarily unavailable, retry later"))
    );
    assert_eq!(down.retry_after.as_deref(), Some("5"));
    h.nothing_more().await;

    // The provider retries the same delivery once the broker is back.
    h.bus.down.store(false, Ordering::SeqCst);
    let retried = h.send(&url, &secret, "wh-down", &message).await;
    assert_eq!(
        (retried.status, retried.body["status"].as_str()),
        (200, Some("accepted"))
    );
    let (_, _, payload) = h.next_event().await;
    assert!(matches!(payload, Payload::InboundMessageReceived(m) if m.external_id == "m-down"));
    h.service.stop().await;
}

/// On a bus where no consumer group binds `inbound.message` (a first
/// install whose topology was never declared), the broker would drop the
/// event: the webhook is refused with 503 and nothing is recorded, so the
/// provider's retry, once the topology is declared, is accepted and its
/// event delivered.
async fn an_event_no_queue_binds_answers_503_and_records_nothing(backend: Backend) {
    let mut h = Harness::start_observing(backend, Config::default(), "nothing.binds.this").await;
    let (channel, secret) = h.custom_channel("ws1").await;
    let url = channel.webhook_url.clone();
    let message = inbound_text("m-nowhere", "anyone?");

    let refused = h.send(&url, &secret, "wh-nowhere", &message).await;
    assert_eq!(refused.status, 503, "{:?}", refused.body);
    assert_eq!(
        refused.content_type.as_deref(),
        Some("application/problem+json")
    );
    assert_eq!(refused.retry_after.as_deref(), Some("5"));
    assert_eq!(refused.body["status"], 503);
    assert_eq!(
        refused.body["error"].as_str(),
        Some("temporarily unavailable, retry later")
    );

    // The topology is declared; the provider retries the same delivery.
    let declared = SubscribeSpec::new("inbox", &["inbound.*"]);
    h.bus
        .declare(std::slice::from_ref(&declared))
        .await
        .expect("declare");
    let retried = h.send(&url, &secret, "wh-nowhere", &message).await;
    assert_eq!(
        (retried.status, retried.body["status"].as_str()),
        (200, Some("accepted")),
        "the refused delivery left no de-duplication key behind"
    );
    let mut inbox = h.bus.subscribe(declared).await.expect("subscribe");
    let delivery = tokio::time::timeout(Duration::from_secs(5), inbox.next())
        .await
        .expect("the event in time")
        .expect("bus open");
    let env = events::from_bus(&delivery.event).expect("envelope");
    assert!(
        matches!(env.payload, Some(Payload::InboundMessageReceived(m)) if m.external_id == "m-nowhere")
    );
    delivery.ack().await.expect("ack");
    let again = tokio::time::timeout(Duration::from_millis(300), inbox.next()).await;
    assert!(again.is_err(), "published once: {again:?}");
    h.nothing_more().await;
    h.service.stop().await;
}

async fn internal_outbound_urls_are_refused_unless_allowed(backend: Backend) {
    let h = Harness::start(backend).await;
    let mut channels = h.channels();
    let with_url = |url: &str| CreateChannelRequest {
        outbound_url: url.into(),
        ..create("ws1", "Shop")
    };
    for url in [
        "http://127.0.0.1/",
        "http://127.0.0.1:8080/in",
        "http://[::1]:8080/in",
        "http://10.1.2.3/in",
        "http://172.16.0.9/in",
        "http://192.168.0.1/in",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:127.0.0.1]/in",
        "http://0.0.0.0/",
    ] {
        let status = channels.create_channel(with_url(url)).await.expect_err(url);
        assert_eq!(status.code(), Code::InvalidArgument, "{url}");
        assert!(
            status.message().starts_with("outbound_url: ")
                && status.message().contains("is not a public address")
                && status.message().contains("ingress.private_receivers"),
            "{url}: {}",
            status.message()
        );
    }
    let status = channels
        .create_channel(with_url("ftp://shop.example/in"))
        .await
        .expect_err("ftp");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("outbound_url"),
        "{}",
        status.message()
    );
    // Nothing was created.
    let listed = channels
        .list_channels(ListChannelsRequest {
            workspace_id: "ws1".into(),
            page: None,
        })
        .await
        .expect("list")
        .into_inner();
    assert!(listed.channels.is_empty(), "{:?}", listed.channels);
    // Public addresses, and names (judged by dispatch when it resolves
    // them), are accepted.
    for url in ["https://8.8.8.8/in", "https://receiver.example/in"] {
        channels.create_channel(with_url(url)).await.expect(url);
    }
    h.service.stop().await;

    // An on-premise receiver, allowed on purpose.
    let allowed = Config {
        private_receivers: vec!["10.1.0.0/16".into()],
        ..Config::default()
    };
    let h = Harness::start_with(backend, allowed).await;
    let mut channels = h.channels();
    let created = channels
        .create_channel(with_url("http://10.1.2.3/in"))
        .await
        .expect("allowed")
        .into_inner();
    assert_eq!(
        created.channel.expect("channel").outbound_url,
        "http://10.1.2.3/in"
    );
    for url in ["http://10.2.0.1/in", "http://127.0.0.1/in"] {
        let status = channels.create_channel(with_url(url)).await.expect_err(url);
        assert_eq!(status.code(), Code::InvalidArgument, "{url}");
    }
    h.service.stop().await;
}

async fn a_channel_over_its_rate_limit_gets_429_before_its_signature_is_checked(backend: Backend) {
    // In memory on SQLite; in Redis on PostgreSQL, as a production install.
    let store = match backend {
        Backend::Sqlite => telenet_ratelimit::connect("memory://", ""),
        Backend::Postgres => {
            let url = std::env::var("TELENET_TEST_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
            let prefix = format!("telenet-test-{}:", uuid::Uuid::new_v4().simple());
            telenet_ratelimit::connect(&url, &prefix)
        }
    }
    .expect("rate limit store");
    store.ping().await.expect("the rate limit store answers");
    let config = Config {
        rate_limits: telenet_ingress::RateLimits {
            enabled: true,
            per_channel_per_second: 1,
            per_channel_burst: 2,
        },
        ..Config::default()
    };
    let mut h = Harness::start_limited(backend, config, Some(store), "inbound.*").await;
    let (busy, secret) = h.custom_channel("ws1").await;
    let (quiet, quiet_secret) = h.custom_channel("ws1").await;

    for (id, external) in [("wh-1", "m-1"), ("wh-2", "m-2")] {
        let ok = h
            .send(
                &busy.webhook_url,
                &secret,
                id,
                &inbound_text(external, "hola"),
            )
            .await;
        assert_eq!(ok.status, 200, "{id}: {:?}", ok.body);
        h.next_event().await;
    }
    // Over the burst: 429 with the wait in whole seconds; nothing published.
    let over = h
        .send(
            &busy.webhook_url,
            &secret,
            "wh-3",
            &inbound_text("m-3", "hola"),
        )
        .await;
    assert_eq!(over.status, 429, "{:?}", over.body);
    assert_eq!(over.retry_after.as_deref(), Some("1"));
    assert!(
        over.body["error"]
            .as_str()
            .is_some_and(|e| e.contains("too many webhooks")),
        "{:?}",
        over.body
    );
    // A badly signed one is refused for the rate, not checked (no 401).
    let wrong_secret = Secret::generate().expect("rng").expose();
    let forged = h
        .post(
            &busy.webhook_url,
            &wrong_secret,
            "wh-4",
            telenet_signing::unix_now(),
            inbound_text("m-4", "x").to_string().as_bytes(),
        )
        .await;
    assert_eq!(forged.status, 429, "{:?}", forged.body);
    h.nothing_more().await;

    // Another channel is not affected.
    let other = h
        .send(
            &quiet.webhook_url,
            &quiet_secret,
            "wh-1",
            &inbound_text("m-1", "hola"),
        )
        .await;
    assert_eq!(other.status, 200, "{:?}", other.body);
    h.next_event().await;

    // Once the wait is over the channel is served again, and the refused
    // webhook, sent again as providers do, is accepted.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let retried = h
        .send(
            &busy.webhook_url,
            &secret,
            "wh-3",
            &inbound_text("m-3", "hola"),
        )
        .await;
    assert_eq!(
        (retried.status, retried.body["status"].as_str()),
        (200, Some("accepted"))
    );
    h.next_event().await;
}
