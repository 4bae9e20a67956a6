//! The contract of [`Provider`], as checks every provider must pass.
//!
//! A provider's test (`tests/<provider>.rs`) describes its channel in a
//! [`Fixture`]: how the provider signs webhooks, sample payloads and the
//! events each must give, its status names, and what its API checks on a
//! send. [`run_all`] then checks, provider-neutrally:
//!
//! - authentic webhooks verify; tampered bodies, another channel's secret,
//!   missing authentication headers and stale timestamps are refused; a
//!   channel whose secret is unusable is our fault, not the sender's;
//! - every sample parses into exactly its events (or is refused as
//!   malformed, naming what is wrong), and handshakes are answered as the
//!   provider expects while events are never taken for handshakes;
//! - the same delivery parses the same twice, and a redelivery keeps its
//!   events' identities (what ingress de-duplicates on);
//! - status names map to delivery states;
//! - capabilities are consistent, and connecting keeps a channel usable;
//! - sends reach a local HTTP server standing in for the provider's API,
//!   which checks each request as the real API would (authentication,
//!   content type, shape) and answers like it; the provider reads success,
//!   passing trouble (5xx, 429, unreachable) and refusals (4xx, redirects)
//!   right, and names them by their status, never copying the API's answer;
//! - fetching an announced file is authorised for this channel only.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use futures::FutureExt;
use futures::future::BoxFuture;
use http::{HeaderMap, Method, StatusCode};
use telenet_proto::common::v1::{Attachment, AttachmentKind};
use telenet_proto::dispatch::v1::DeliveryState;
use telenet_proto::events::v1::OutboundRequested;

use crate::{
    ChannelCredentials, HandshakeAnswer, Inbound, InboundEvent, Provider, SendOutcome, Webhook,
    WebhookError,
};

/// The id of the channel webhooks are delivered to.
pub const CHANNEL_ID: &str = "ch-conformance";
/// Its public webhook URL.
pub const WEBHOOK_URL: &str = "https://inbox.test/webhooks/ch-conformance";
/// The time webhooks are signed and checked at (unix seconds), so cases
/// never depend on the clock.
pub const NOW: i64 = 1_700_000_000;

const CASE_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed for one send attempt against the local server.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// A provider's channel, as its conformance test describes it.
pub trait Fixture: Send + Sync + 'static {
    /// The provider under test.
    fn provider(&self) -> Arc<dyn Provider>;

    /// A new test channel, with secrets of its own, whose provider API
    /// answers at `api_base` (`http://127.0.0.1:<port>`).
    fn channel(&self, api_base: &str) -> ChannelCredentials;

    /// The same channel with its secret made unusable (by default: empty).
    fn unusable(&self, channel: &ChannelCredentials) -> ChannelCredentials {
        ChannelCredentials {
            secret: String::new(),
            ..channel.clone()
        }
    }

    /// The headers the provider sends with `body` for `channel` at `now`,
    /// as its delivery `delivery_id` (when it names deliveries).
    fn sign(
        &self,
        channel: &ChannelCredentials,
        delivery_id: &str,
        body: &[u8],
        now: i64,
    ) -> HeaderMap;

    /// The headers that authenticate a webhook: without any one of them it
    /// must be refused.
    fn auth_headers(&self) -> &'static [&'static str];

    /// How far a webhook's signed timestamp may be from now, when the
    /// provider signs one.
    fn timestamp_tolerance(&self) -> Option<Duration>;

    /// Sample payloads, with what each must parse into.
    fn samples(&self) -> Vec<Sample>;

    /// Handshakes the provider makes, with their answers.
    fn handshakes(&self, channel: &ChannelCredentials) -> Vec<HandshakeSample> {
        let _ = channel;
        Vec::new()
    }

    /// The provider's status names and the delivery state each means.
    fn statuses(&self) -> Vec<(&'static str, DeliveryState)>;

    /// Whether the provider reports delivery states at all (Telegram and
    /// LINE give bots none: their `statuses` are empty and every name maps
    /// to nothing).
    fn reports_statuses(&self) -> bool {
        true
    }

    /// Whether the provider's authentication covers the body (a MAC over
    /// it). Telegram and 360dialog authenticate with a secret header only:
    /// a changed body cannot be told from the original, so the tampering
    /// case checks the header instead.
    fn signs_body(&self) -> bool {
        true
    }

    /// Whether `external_id`, what a send returned, names the message the
    /// API issued as `issued` (by default the same text; Telegram's ids
    /// are numbers per chat, returned as `{chat}:{number}`).
    fn names_issued(&self, issued: &str, external_id: &str) -> bool {
        issued == external_id
    }

    /// What the provider's API checks on a request made by a send, as it
    /// would check it; `Ok` is what it understood of the message.
    fn check_send(
        &self,
        channel: &ChannelCredentials,
        request: &Received,
    ) -> Result<Understood, String>;

    /// The API's answer to a request it accepted, naming the message
    /// `external_id`.
    fn accept_send(&self, request: &Received, external_id: &str) -> (StatusCode, String);

    /// What the provider's file server checks on a fetch of `url` with
    /// `headers`; `Err` is why it refuses.
    fn check_media_fetch(
        &self,
        channel: &ChannelCredentials,
        url: &str,
        headers: &HeaderMap,
    ) -> Result<(), String>;
}

/// A sample webhook body and what it must parse into.
#[derive(Debug, Clone)]
pub struct Sample {
    /// For reports (e.g. the fixture file's name).
    pub name: &'static str,
    /// The delivery id it is signed as (for providers that name deliveries).
    pub delivery_id: &'static str,
    /// The raw body.
    pub body: Vec<u8>,
    /// What parsing it gives.
    pub expect: Expect,
}

/// What a sample parses into.
#[derive(Debug, Clone)]
pub enum Expect {
    /// These events (for [`CHANNEL_ID`], signed as the sample's delivery).
    Events(Vec<InboundEvent>),
    /// Refused as malformed, the reason mentioning this.
    Malformed(&'static str),
}

/// A handshake request and its answer.
#[derive(Debug, Clone)]
pub struct HandshakeSample {
    /// For reports.
    pub name: &'static str,
    /// Its method.
    pub method: Method,
    /// Its query string, without `?`.
    pub query: String,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Vec<u8>,
    /// The answer it must get (`None`: not a handshake).
    pub expect: Option<HandshakeAnswer>,
}

/// One request the stand-in API received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: Method,
    /// The path, as requested.
    pub path: String,
    /// The query string, without `?`.
    pub query: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Received {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// What a provider's API understood of one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Understood {
    /// Who the message is for.
    pub recipient: String,
    /// Its text (empty when the request carries none).
    pub text: String,
    /// The URLs of its files, in order.
    pub attachment_urls: Vec<String>,
    /// What the API de-duplicates the request on, if anything.
    pub idempotency_key: Option<String>,
}

/// Run every check against `fixture`. `Err` lists the failed cases.
pub async fn run_all(fixture: Arc<dyn Fixture>) -> Result<(), String> {
    let mut failures = Vec::new();
    for (name, case) in all_cases() {
        let started = Instant::now();
        let outcome = tokio::time::timeout(
            CASE_TIMEOUT,
            AssertUnwindSafe(case(fixture.clone())).catch_unwind(),
        )
        .await;
        let verdict = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(panic)) => Some(panic_message(panic.as_ref())),
            Err(_) => Some(format!("did not finish within {CASE_TIMEOUT:?}")),
        };
        match verdict {
            None => eprintln!("conformance: {name} ok ({:?})", started.elapsed()),
            Some(why) => {
                eprintln!("conformance: {name} FAILED: {why}");
                failures.push(format!("{name}: {why}"));
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} conformance case(s) failed:\n  {}",
            failures.len(),
            failures.join("\n  ")
        ))
    }
}

type Case = fn(Arc<dyn Fixture>) -> BoxFuture<'static, ()>;

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        vec![$((stringify!($name), (|f| $name(f).boxed()) as Case)),*]
    };
}

fn all_cases() -> Vec<(&'static str, Case)> {
    cases![
        authentic_webhooks_verify,
        tampered_bodies_are_refused,
        another_channels_secret_is_refused,
        missing_authentication_headers_are_refused,
        stale_timestamps_are_refused,
        unusable_credentials_are_our_fault,
        samples_parse_into_their_events,
        handshakes_are_answered_and_events_are_not_handshakes,
        redeliveries_keep_their_identities,
        statuses_map_to_delivery_states,
        capabilities_are_consistent,
        connecting_keeps_a_channel_usable,
        sends_reach_the_api_as_it_expects,
        passing_trouble_is_retried_and_refusals_are_final,
        media_fetches_are_authorised_for_the_channel_only,
    ]
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "panicked".to_owned()
    }
}

// ------------------------------------------------------------ webhooks in

/// A signed delivery of `body`, owned, to be seen as a [`Webhook`].
struct Delivery {
    method: Method,
    query: String,
    headers: HeaderMap,
    body: Vec<u8>,
    now: i64,
}

impl Delivery {
    fn signed(
        fixture: &dyn Fixture,
        channel: &ChannelCredentials,
        delivery_id: &str,
        body: &[u8],
        signed_at: i64,
    ) -> Self {
        Self {
            method: Method::POST,
            query: String::new(),
            headers: fixture.sign(channel, delivery_id, body, signed_at),
            body: body.to_vec(),
            now: NOW,
        }
    }

    fn webhook(&self) -> Webhook<'_> {
        Webhook {
            channel_id: CHANNEL_ID,
            method: &self.method,
            url: WEBHOOK_URL,
            query: &self.query,
            headers: &self.headers,
            body: &self.body,
            now: self.now,
        }
    }

    fn verify(
        &self,
        provider: &dyn Provider,
        channel: &ChannelCredentials,
    ) -> Result<(), WebhookError> {
        provider.verify(channel, &self.webhook())
    }

    fn parse(
        &self,
        provider: &dyn Provider,
        channel: &ChannelCredentials,
    ) -> Result<Inbound, WebhookError> {
        provider.parse(channel, &self.webhook())
    }
}

/// The API base of the channel webhooks are parsed with (nobody listens
/// there); samples whose events carry URLs built from it use it.
pub const SAMPLE_API_BASE: &str = "http://127.0.0.1:9";

fn api_base() -> &'static str {
    SAMPLE_API_BASE
}

fn first_body(fixture: &dyn Fixture) -> Sample {
    fixture
        .samples()
        .into_iter()
        .find(|s| matches!(s.expect, Expect::Events(_)))
        .unwrap_or_else(|| panic!("the fixture has no sample that parses into events"))
}

async fn authentic_webhooks_verify(fixture: Arc<dyn Fixture>) {
    let provider = fixture.provider();
    let channel = fixture.channel(api_base());
    for sample in fixture.samples() {
        let delivery = Delivery::signed(&*fixture, &channel, sample.delivery_id, &sample.body, NOW);
        if let Err(e) = delivery.verify(&*provider, &channel) {
            panic!("{}: authentic webhook refused: {e}", sample.name);
        }
    }
}

async fn tampered_bodies_are_refused(fixture: Arc<dyn Fixture>) {
    let provider = fixture.provider();
    let channel = fixture.channel(api_base());
    if !fixture.signs_body() {
        // Nothing covers the body: what is checked is that the secret
        // header itself cannot be tampered with.
        for sample in fixture.samples() {
            let mut delivery =
                Delivery::signed(&*fixture, &channel, sample.delivery_id, &sample.body, NOW);
            for name in fixture.auth_headers() {
                let Some(value) = delivery.headers.get(*name).cloned() else {
                    continue;
                };
                let mut altered = value.as_bytes().to_vec();
                if let Some(last) = altered.last_mut() {
                    *last = if *last == b'A' { b'B' } else { b'A' };
                }
                delivery.headers.insert(
                    *name,
                    http::HeaderValue::from_bytes(&altered).expect("header value"),
                );
                match delivery.verify(&*provider, &channel) {
                    Err(WebhookError::BadSignature(_)) => {}
                    other => panic!("{}: an altered {name} gave {other:?}", sample.name),
                }
                delivery.headers.insert(*name, value);
            }
        }
        return;
    }
    for sample in fixture.samples() {
        let mut delivery =
            Delivery::signed(&*fixture, &channel, sample.delivery_id, &sample.body, NOW);
        // Trailing whitespace: still the same JSON, no longer the same bytes.
        delivery.body.push(b' ');
        match delivery.verify(&*provider, &channel) {
            Err(WebhookError::BadSignature(_)) => {}
            other => panic!("{}: a tampered body gave {other:?}", sample.name),
        }
    }
}

async fn another_channels_secret_is_refused(fixture: Arc<dyn Fixture>) {
    let provider = fixture.provider();
    let ours = fixture.channel(api_base());
    let theirs = fixture.channel(api_base());
    let sample = first_body(&*fixture);
    let delivery = Delivery::signed(&*fixture, &theirs, sample.delivery_id, &sample.body, NOW);
    match delivery.verify(&*provider, &ours) {
        Err(WebhookError::BadSignature(_)) => {}
        other => panic!("signed for another channel, it gave {other:?}"),
    }
}

async fn missing_authentication_headers_are_refused(fixture: Arc<dyn Fixture>) {
    let provider = fixture.provider();
    let channel = fixture.channel(api_base());
    let sample = first_body(&*fixture);
    assert!(
        !fixture.auth_headers().is_empty(),
        "the fixture names no authentication header"
    );
    for header in fixture.auth_headers() {
        let mut delivery =
            Delivery::signed(&*fixture, &channel, sample.delivery_id, &sample.body, NOW);
        assert!(
            delivery.headers.remove(*header).is_some(),
            "the fixture's signature has no {header}"
        );
        match delivery.verify(&*provider, &channel) {
            Err(e) if e.is_unauthenticated() => {}
            other => panic!("without {header} it gave {other:?}"),
        }
    }
}

async fn stale_timestamps_are_refused(fixture: Arc<dyn Fixture>) {
    let Some(tolerance) = fixture.timestamp_tolerance() else {
        return;
    };
    let provider = fixture.provider();
    let channel = fixture.channel(api_base());
    let sample = first_body(&*fixture);
    let tolerance = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    for (signed_at, fresh) in [
        (NOW - tolerance - 60, false),
        (NOW + tolerance + 60, false),
        (NOW - tolerance + 30, true),
        (NOW + tolerance - 30, true),
    ] {
        let delivery = Delivery::signed(
            &*fixture,
            &channel,
            sample.delivery_id,
            &sample.body,
            signed_at,
        );
        match (delivery.verify(&*provider, &channel), fresh) {
            (Ok(()), true) | (Err(WebhookError::Stale(_)), false) => {}
            (other, _) => panic!("signed {}s from now, it gave {other:?}", signed_at - NOW),
        }
    }
}

async fn unusable_credentials_are_our_fault(fixture: Arc<dyn Fixture>) {
    let provider = fixture.provider();
    let channel = fixture.channel(api_base());
    let sample = first_body(&*fixture);
    let delivery = Delivery::signed(&*fixture, &channel, sample.delivery_id, &sample.body, NOW);
    match delivery.verify(&*provider, &fixture.unusable(&channel)) {
        Err(WebhookError::Credentials(_)) => {}
        other => panic!("with unusable credentials, it gave {other:?}"),
    }
}

async fn samples_parse_into_their_events(fixture: Arc<dyn Fixture>) {
    let provider = fixture.provider();
    let channel = fixture.channel(api_base());
    for sample in fixture.samples() {
        let delivery = Delivery::signed(&*fixture, &channel, sample.delivery_id, &sample.body, NOW);
        let parsed = delivery.parse(&*provider, &channel);
        match (&sample.expect, parsed) {
            (Expect::Events(want), Ok(inbound)) => {
                assert_eq!(&inbound.events, want, "{}", sample.name)
            }
            (Expect::Malformed(needle), Err(WebhookError::Malformed(reason))) => assert!(
                reason.contains(needle),
                "{}: {reason:?} should mention {needle:?}",
                sample.name
            ),
            (want, got) => panic!("{}: expected {want:?}, got {got:?}", sample.name),
        }
    }
}

async fn handshakes_are_answered_and_events_are_not_handshakes(fixture: Arc<dyn Fixture>) {
    let provider = fixture.provider();
    let channel = fixture.channel(api_base());
    for sample in fixture.samples() {
        let delivery = Delivery::signed(&*fixture, &channel, sample.delivery_id, &sample.body, NOW);
        assert_eq!(
            provider.handshake(&channel, &delivery.webhook()),
            None,
            "{}: an event taken for a handshake",
            sample.name
        );
    }
    for handshake in fixture.handshakes(&channel) {
        let delivery = Delivery {
            method: handshake.method.clone(),
            query: handshake.query.clone(),
            headers: handshake.headers.clone(),
            body: handshake.body.clone(),
            now: NOW,
        };
        assert_eq!(
            provider.handshake(&channel, &delivery.webhook()),
            handshake.expect,
            "{}",
            handshake.name
        );
    }
}

/// What ingress de-duplicates an event on: the provider's id of the
/// message (for a watermark status: the contact and the watermark), and
/// the state of a status.
fn identity(event: &InboundEvent) -> (String, i32) {
    match event {
        InboundEvent::Message(m) => (m.external_id.clone(), 0),
        InboundEvent::Status(s) if s.message_external_id.is_empty() && s.watermark.is_some() => {
            if s.contact_external_id.trim().is_empty() {
                return (String::new(), s.state);
            }
            (event.identity(), s.state)
        }
        InboundEvent::Status(s) => (s.message_external_id.clone(), s.state),
    }
}

async fn redeliveries_keep_their_identities(fixture: Arc<dyn Fixture>) {
    let provider = fixture.provider();
    let channel = fixture.channel(api_base());
    for sample in fixture.samples() {
        if !matches!(sample.expect, Expect::Events(_)) {
            continue;
        }
        let first = Delivery::signed(&*fixture, &channel, sample.delivery_id, &sample.body, NOW);
        let once = first.parse(&*provider, &channel).expect("parses");
        let twice = first.parse(&*provider, &channel).expect("parses");
        assert_eq!(once, twice, "{}: the same delivery read twice", sample.name);
        for event in &once.events {
            let (id, state) = identity(event);
            assert!(
                !id.trim().is_empty(),
                "{}: an event without an id",
                sample.name
            );
            if let InboundEvent::Status(_) = event {
                assert!(
                    !matches!(
                        DeliveryState::try_from(state),
                        Ok(DeliveryState::Unspecified | DeliveryState::Pending) | Err(_)
                    ),
                    "{}: a status without a reported state",
                    sample.name
                );
            }
        }
        // The provider delivers the same events again, as another delivery.
        let again_id = format!("{}-again", sample.delivery_id);
        let again = Delivery::signed(&*fixture, &channel, &again_id, &sample.body, NOW + 60)
            .parse(&*provider, &channel)
            .expect("parses");
        assert_eq!(
            once.events.iter().map(identity).collect::<Vec<_>>(),
            again.events.iter().map(identity).collect::<Vec<_>>(),
            "{}: a redelivery changed what its events are",
            sample.name
        );
    }
}

async fn statuses_map_to_delivery_states(fixture: Arc<dyn Fixture>) {
    let provider = fixture.provider();
    let statuses = fixture.statuses();
    if !fixture.reports_statuses() {
        assert!(
            statuses.is_empty(),
            "a provider without statuses lists some"
        );
        for name in ["sent", "delivered", "read", "failed", "seen"] {
            assert_eq!(provider.delivery_state(name), None, "{name}");
        }
        return;
    }
    assert!(!statuses.is_empty(), "the fixture lists no status");
    for (name, state) in statuses {
        assert_eq!(provider.delivery_state(name), Some(state), "{name}");
        assert!(
            !matches!(state, DeliveryState::Unspecified | DeliveryState::Pending),
            "{name}: providers report what happened, not what is waiting"
        );
    }
    assert_eq!(provider.delivery_state("no-such-status"), None);
    assert_eq!(provider.delivery_state(""), None);
}

async fn capabilities_are_consistent(fixture: Arc<dyn Fixture>) {
    let provider = fixture.provider();
    let channel = fixture.channel(api_base());
    let caps = provider.capabilities(&channel);
    if let Some(limit) = caps.text {
        assert!(limit.max > 0, "a text limit of 0");
    }
    for t in &caps.voice.accepted_types {
        assert!(t.contains('/'), "voice type {t:?} is not a MIME type");
    }
    for rule in &caps.media {
        assert!(
            rule.kind != AttachmentKind::Unspecified,
            "a media rule without a kind"
        );
        for t in &rule.mime_types {
            assert!(t.contains('/'), "media type {t:?} is not a MIME type");
        }
    }
    if let Some(window) = caps.reply_window {
        assert!(!window.is_zero(), "a reply window of 0");
    }
    for limit in &caps.rate_limits {
        assert!(limit.messages > 0 && !limit.per.is_zero(), "{limit:?}");
    }
}

async fn connecting_keeps_a_channel_usable(fixture: Arc<dyn Fixture>) {
    let provider = fixture.provider();
    let channel = fixture.channel(api_base());
    let connected = provider
        .connect(channel.clone())
        .unwrap_or_else(|e| panic!("the fixture's channel cannot connect: {e}"));
    assert_eq!(connected.kind, provider.kind());
    let sample = first_body(&*fixture);
    let delivery = Delivery::signed(&*fixture, &channel, sample.delivery_id, &sample.body, NOW);
    if let Err(e) = delivery.verify(&*provider, &connected) {
        panic!("connecting changed the channel's secrets: {e}");
    }
}

// ------------------------------------------------------------ sending out

/// The stand-in for the provider's API.
#[derive(Clone)]
struct Api {
    fixture: Arc<dyn Fixture>,
    channel: Arc<Mutex<ChannelCredentials>>,
    state: Arc<Mutex<ApiState>>,
}

#[derive(Default)]
struct ApiState {
    /// Every request with the API's verdict on it.
    received: Vec<(Received, Result<Understood, String>)>,
    /// Answers to give instead of accepting, in order.
    script: VecDeque<(StatusCode, String)>,
    /// Ids given to accepted messages.
    issued: Vec<String>,
}

impl Api {
    async fn start(fixture: Arc<dyn Fixture>) -> (Self, String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the stand-in API");
        let base = format!("http://{}", listener.local_addr().expect("its address"));
        let api = Api {
            channel: Arc::new(Mutex::new(fixture.channel(&base))),
            fixture,
            state: Arc::default(),
        };
        let app = axum::Router::new().fallback(answer).with_state(api.clone());
        let serving = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (api, base, serving)
    }

    fn channel(&self) -> ChannelCredentials {
        self.channel
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ApiState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn script(&self, answers: &[(StatusCode, &str)]) {
        self.state()
            .script
            .extend(answers.iter().map(|(s, b)| (*s, (*b).to_owned())));
    }

    /// What the API understood of the requests since the last call, every
    /// one of which it must have accepted as authentic and well-formed.
    fn take(&self) -> Vec<Understood> {
        let received = std::mem::take(&mut self.state().received);
        received
            .into_iter()
            .map(|(request, verdict)| {
                verdict.unwrap_or_else(|why| {
                    panic!("the API refused {} {}: {why}", request.method, request.path)
                })
            })
            .collect()
    }
}

async fn answer(
    State(api): State<Api>,
    method: Method,
    uri: http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let request = Received {
        method,
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or_default().to_owned(),
        headers,
        body: body.to_vec(),
    };
    let verdict = api.fixture.check_send(&api.channel(), &request);
    let mut state = api.state();
    let refused = verdict.as_ref().err().cloned();
    state.received.push((request.clone(), verdict));
    if let Some(why) = refused {
        return (StatusCode::UNAUTHORIZED, why);
    }
    if let Some(scripted) = state.script.pop_front() {
        return scripted;
    }
    let external_id = format!("ext-{}", state.issued.len() + 1);
    state.issued.push(external_id.clone());
    drop(state);
    api.fixture.accept_send(&request, &external_id)
}

/// A client as dispatch builds one: bounded in time, never redirected.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(SEND_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_else(|e| panic!("http client: {e}"))
}

fn message(id: &str, text: &str, attachments: Vec<Attachment>) -> OutboundRequested {
    OutboundRequested {
        message_id: id.to_owned(),
        conversation_id: "conv-conformance".into(),
        channel_id: CHANNEL_ID.into(),
        recipient_external_id: "+4915550001".into(),
        text: text.to_owned(),
        attachments,
        ..Default::default()
    }
}

fn files() -> Vec<Attachment> {
    vec![
        Attachment {
            kind: AttachmentKind::Image as i32,
            url: "https://files.test/v1/downloads/ws/blob-1/cat.png".into(),
            mime_type: "image/png".into(),
            size_bytes: 2048,
            ..Default::default()
        },
        Attachment {
            kind: AttachmentKind::Voice as i32,
            url: "https://files.test/v1/downloads/ws/blob-2/note.ogg".into(),
            mime_type: "audio/ogg; codecs=opus".into(),
            size_bytes: 9199,
            duration_ms: 3452,
            ..Default::default()
        },
    ]
}

async fn send(api: &Api, message: &OutboundRequested) -> SendOutcome {
    api.fixture
        .provider()
        .send(&client(), &api.channel(), message)
        .await
}

async fn sends_reach_the_api_as_it_expects(fixture: Arc<dyn Fixture>) {
    let (api, _, serving) = Api::start(fixture.clone()).await;
    let cases = [
        message("m-text", "hello from the conformance suite", Vec::new()),
        message("m-files", "see attached", files()),
        message("m-voice", "", files().split_off(1)),
    ];
    for message in &cases {
        let outcome = send(&api, message).await;
        let SendOutcome::Sent { external_id } = &outcome else {
            panic!("{}: {outcome:?}", message.message_id);
        };
        let issued = api.state().issued.clone();
        assert!(
            issued.iter().any(|i| fixture.names_issued(i, external_id)),
            "{}: sent as {external_id:?}, the API issued {issued:?}",
            message.message_id
        );
        let understood = api.take();
        assert!(
            !understood.is_empty(),
            "{}: nothing reached the API",
            message.message_id
        );
        for u in &understood {
            assert_eq!(
                u.recipient, message.recipient_external_id,
                "{}",
                message.message_id
            );
        }
        let text: Vec<&str> = understood
            .iter()
            .map(|u| u.text.as_str())
            .filter(|t| !t.is_empty())
            .collect();
        assert_eq!(text.concat(), message.text, "{}", message.message_id);
        let urls: Vec<String> = understood
            .iter()
            .flat_map(|u| u.attachment_urls.clone())
            .collect();
        let want: Vec<String> = message.attachments.iter().map(|a| a.url.clone()).collect();
        assert_eq!(
            urls, want,
            "{}: the files that reached the API",
            message.message_id
        );
    }
    // Sending the same message again (a retry) lets an API that
    // de-duplicates recognise it.
    let first = cases[0].clone();
    assert!(matches!(send(&api, &first).await, SendOutcome::Sent { .. }));
    let keys: Vec<_> = api.take().into_iter().map(|u| u.idempotency_key).collect();
    assert!(matches!(send(&api, &first).await, SendOutcome::Sent { .. }));
    let again: Vec<_> = api.take().into_iter().map(|u| u.idempotency_key).collect();
    assert_eq!(
        keys, again,
        "a retry is not recognisable as the same message"
    );
    serving.abort();
}

async fn passing_trouble_is_retried_and_refusals_are_final(fixture: Arc<dyn Fixture>) {
    let (api, _, serving) = Api::start(fixture.clone()).await;
    let text = message("m-trouble", "hello", Vec::new());
    // What the API answers is its own text (an error page, a stack trace
    // with secrets): reasons name the status, never the body.
    for (status, body, retry) in [
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "down for maintenance",
            true,
        ),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "<html><pre>boom at db.connect(password=hunter2)</pre></html>",
            true,
        ),
        (StatusCode::TOO_MANY_REQUESTS, "slow down", true),
        (StatusCode::REQUEST_TIMEOUT, "", true),
        (StatusCode::BAD_REQUEST, "invalid recipient", false),
        (StatusCode::MOVED_PERMANENTLY, "", false),
    ] {
        api.script(&[(status, body)]);
        let outcome = send(&api, &text).await;
        match (&outcome, retry) {
            (SendOutcome::Retry(reason), true)
            | (SendOutcome::Throttled { reason, .. }, true)
            | (SendOutcome::Reject(reason), false) => {
                assert!(reason.contains(status.as_str()), "{status}: {reason}");
                for word in body.split(|c: char| !c.is_alphanumeric()) {
                    assert!(
                        word.len() < 4 || !reason.contains(word),
                        "{status}: the reason copies the body ({word:?}): {reason}"
                    );
                }
            }
            _ => panic!("{status}: {outcome:?}"),
        }
        api.take();
        api.state().script.clear();
    }
    serving.abort();

    // Nobody listens on the provider's address any more.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let channel = fixture.channel(&base);
    let outcome = fixture.provider().send(&client(), &channel, &text).await;
    assert!(
        matches!(outcome, SendOutcome::Retry(_)),
        "unreachable: {outcome:?}"
    );

    // Unusable credentials are never sent with.
    let outcome = fixture
        .provider()
        .send(&client(), &fixture.unusable(&channel), &text)
        .await;
    assert!(
        matches!(outcome, SendOutcome::Reject(_)),
        "unusable: {outcome:?}"
    );
}

async fn media_fetches_are_authorised_for_the_channel_only(fixture: Arc<dyn Fixture>) {
    let provider = fixture.provider();
    let ours = fixture.channel(api_base());
    let theirs = fixture.channel(api_base());
    let url = "https://files.provider.test/media/voice-1.ogg?token=abc";
    let headers = provider
        .authorize_media_fetch(&ours, url)
        .unwrap_or_else(|e| panic!("cannot authorise a fetch: {e}"));
    if let Err(why) = fixture.check_media_fetch(&ours, url, &headers) {
        panic!("the file server refused our fetch: {why}");
    }
    if headers.is_empty() {
        return;
    }
    let foreign = provider
        .authorize_media_fetch(&theirs, url)
        .unwrap_or_else(|e| panic!("cannot authorise a fetch: {e}"));
    assert!(
        fixture.check_media_fetch(&ours, url, &foreign).is_err(),
        "another channel's credentials fetch this channel's files"
    );
    let other_url = format!("{url}&x=1");
    assert!(
        fixture
            .check_media_fetch(&ours, &other_url, &headers)
            .is_err(),
        "a fetch's authorisation works for another file"
    );
}
