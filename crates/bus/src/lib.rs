//! The event bus: a topic exchange of events with durable queues per consumer
//! group, publisher confirms, manual acks, retries with growing delay and a
//! dead-letter queue.
//!
//! Two implementations share one contract (see `conformance`): RabbitMQ
//! (`amqp://…`) for production and in-memory (`memory://`) for the dev server
//! and unit tests.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use telenet_kit::infra_tls::InfraTlsConfig;

#[doc(hidden)]
pub mod conformance;
pub mod memory;
pub mod metered;
pub mod rabbitmq;
pub mod routing;
mod tls;

pub use metered::MeteredBus;

/// One event on the bus. The payload is opaque to the bus (in TELENET it is an
/// encoded `telenet.events.v1.EventEnvelope`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Unique id of the event (UUIDv7); consumers de-duplicate on it.
    pub id: String,
    /// `<area>.<event>`, e.g. `inbound.message`.
    pub routing_key: String,
    /// Encoded body.
    pub payload: Bytes,
    /// Headers carried with the event (e.g. W3C `traceparent`).
    pub headers: BTreeMap<String, String>,
}

impl Event {
    /// A new event with a fresh UUIDv7 id and no headers.
    pub fn new(routing_key: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            routing_key: routing_key.into(),
            payload: payload.into(),
            headers: BTreeMap::new(),
        }
    }
}

/// What a consumer group subscribes to.
#[derive(Debug, Clone)]
pub struct SubscribeSpec {
    /// Consumer group: one durable queue per group; each event goes to one
    /// member of the group.
    pub group: String,
    /// Routing-key patterns (`*` one word, `#` zero or more words).
    pub bindings: Vec<String>,
    /// How many unacknowledged deliveries a subscriber may hold (0: no limit,
    /// as in AMQP).
    pub prefetch: u16,
    /// A broadcast: this subscriber gets a queue of its own (exclusive,
    /// deleted when it goes away), so every broadcast subscriber receives
    /// every matching event, and `group` only names the queues. Events
    /// published while it is not subscribed are not kept for it, and it
    /// has no retry or dead-letter path: `retry` and `dead_letter` drop the
    /// delivery. For state kept in each replica's memory (caches to
    /// invalidate), never for work that must be done once.
    pub broadcast: bool,
}

impl SubscribeSpec {
    pub fn new(group: impl Into<String>, bindings: &[&str]) -> Self {
        Self {
            group: group.into(),
            bindings: bindings.iter().map(|b| (*b).to_owned()).collect(),
            prefetch: 64,
            broadcast: false,
        }
    }

    /// A broadcast subscription (see [`SubscribeSpec::broadcast`]) whose
    /// queues are named after `name`.
    pub fn broadcast(name: impl Into<String>, bindings: &[&str]) -> Self {
        Self {
            broadcast: true,
            ..Self::new(name, bindings)
        }
    }
}

/// Retry behaviour shared by both implementations: a delivery that asks for a
/// retry comes back after `delays[attempt-1]`; when the delays are used up it
/// goes to the group's dead-letter queue.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub delays: Vec<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            delays: [1, 5, 30, 120, 600]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The broker cannot be reached or refused the operation; the caller may retry later.
    #[error("event bus unavailable: {0}")]
    Unavailable(String),
    /// The broker did not confirm a publish (nacked it).
    #[error("event bus did not confirm the publish: {0}")]
    NotConfirmed(String),
    /// A configuration mistake (bad URL, bad pattern).
    #[error("event bus configuration: {0}")]
    Config(String),
    /// No queue is bound to the event's routing key: the broker would have
    /// dropped it, so the publish failed and nothing may count it as sent.
    /// Usually the topology was never declared (`telenet migrate`) under this
    /// prefix or vhost; the caller may retry once it is.
    #[error(
        "no consumer group's queue is bound to routing key {routing_key:?}; \
         the event was not stored (is the bus topology declared? see `telenet migrate`)"
    )]
    Unroutable { routing_key: String },
}

/// A received event with its acknowledgement handle. Dropping a delivery
/// without settling it returns it to the queue (like a closed AMQP channel).
pub struct Delivery {
    pub event: Event,
    /// 1 for the first delivery, 2 after the first retry, …
    pub attempt: u32,
    settle: Option<Box<dyn Settle>>,
}

/// How a delivery is settled; implemented by each bus.
#[async_trait]
pub trait Settle: Send + Sync {
    async fn ack(self: Box<Self>) -> Result<(), BusError>;
    /// Retry later (growing delay), or dead-letter when the retries are used up.
    async fn retry(self: Box<Self>, reason: &str) -> Result<(), BusError>;
    /// Straight to the dead-letter queue (the event can never succeed).
    async fn dead_letter(self: Box<Self>, reason: &str) -> Result<(), BusError>;
    /// Return to the queue now (not processed; e.g. on shutdown).
    fn requeue(self: Box<Self>);
}

impl Delivery {
    pub fn new(event: Event, attempt: u32, settle: Box<dyn Settle>) -> Self {
        Self {
            event,
            attempt,
            settle: Some(settle),
        }
    }

    pub async fn ack(mut self) -> Result<(), BusError> {
        match self.settle.take() {
            Some(s) => s.ack().await,
            None => Ok(()),
        }
    }

    pub async fn retry(mut self, reason: &str) -> Result<(), BusError> {
        match self.settle.take() {
            Some(s) => s.retry(reason).await,
            None => Ok(()),
        }
    }

    pub async fn dead_letter(mut self, reason: &str) -> Result<(), BusError> {
        match self.settle.take() {
            Some(s) => s.dead_letter(reason).await,
            None => Ok(()),
        }
    }
}

impl Delivery {
    /// Takes the settle handle out, so that dropping the delivery no longer
    /// requeues it. A bus uses this when it takes back a delivery it could not
    /// hand over (the subscriber went away), to avoid settling it twice.
    pub(crate) fn disarm(&mut self) -> Option<Box<dyn Settle>> {
        self.settle.take()
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if let Some(s) = self.settle.take() {
            s.requeue();
        }
    }
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("event", &self.event)
            .field("attempt", &self.attempt)
            .finish()
    }
}

/// Header names the buses use for their own bookkeeping (attempt, reason,
/// original routing key) or that RabbitMQ sets when it dead-letters a message.
/// Events may not carry them: they would be overwritten or dropped on the way.
pub fn is_reserved_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.starts_with("x-telenet-")
        || name == "x-death"
        || name.starts_with("x-first-death-")
        || name.starts_with("x-last-death-")
}

/// Refuses, in both implementations alike, events RabbitMQ could not carry
/// unchanged, so the in-memory bus never accepts what production would reject.
pub(crate) fn check_event(event: &Event) -> Result<(), BusError> {
    routing::check_routing_key(&event.routing_key).map_err(BusError::Config)?;
    routing::check_short("event id", &event.id).map_err(BusError::Config)?;
    for name in event.headers.keys() {
        routing::check_short("header name", name).map_err(BusError::Config)?;
        if is_reserved_header(name) {
            return Err(BusError::Config(format!(
                "header {name:?} is reserved for the event bus"
            )));
        }
    }
    Ok(())
}

/// Refuses, in both implementations alike, subscriptions RabbitMQ would refuse.
pub(crate) fn check_spec(spec: &SubscribeSpec) -> Result<(), BusError> {
    if spec.group.is_empty() {
        return Err(BusError::Config("consumer group name is empty".into()));
    }
    if spec.group.contains('\0') {
        return Err(BusError::Config(
            "consumer group name contains a NUL character".into(),
        ));
    }
    for pattern in &spec.bindings {
        routing::check_pattern(pattern).map_err(BusError::Config)?;
    }
    Ok(())
}

/// A stream of deliveries for one consumer-group member.
pub struct Subscription {
    rx: tokio::sync::mpsc::Receiver<Delivery>,
    /// Set by [`MeteredBus`]: every delivery handed out is measured.
    meter: Option<metered::ConsumeMeter>,
}

impl Subscription {
    pub fn from_receiver(rx: tokio::sync::mpsc::Receiver<Delivery>) -> Self {
        Self { rx, meter: None }
    }

    /// The next delivery; `None` when the bus shut the subscription down.
    pub async fn next(&mut self) -> Option<Delivery> {
        let mut delivery = self.rx.recv().await?;
        if let Some(meter) = &self.meter
            && let Some(settle) = delivery.disarm()
        {
            delivery.settle = Some(meter.wrap(&delivery.event.routing_key, settle));
        }
        Some(delivery)
    }
}

/// How many messages wait in a consumer group's queues.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Ready in the group's queue: published, not yet delivered to a
    /// consumer (the group's lag). Deliveries held unsettled and retries
    /// waiting out their delay are not counted.
    pub ready: u64,
    /// In the group's dead-letter queue.
    pub dead_letters: u64,
}

/// A dead-lettered event, as listed for operators. Its event id
/// (`event.id`) names it for redriving or discarding; its headers
/// (`event.headers`) are the event's own, without the bus's bookkeeping.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub event: Event,
    /// Why the consumer gave up on it (the last retry's or the dead-letter
    /// call's reason).
    pub reason: String,
    /// Deliveries it had before it was dead-lettered.
    pub attempts: u32,
}

/// Which dead letters an operation applies to (e.g. those of one workspace,
/// or with given event ids). The bus does not read payloads; the caller does.
pub type DeadLetterFilter<'a> = &'a (dyn Fn(&DeadLetter) -> bool + Send + Sync);

/// Selects every dead letter.
pub fn all_dead_letters(_: &DeadLetter) -> bool {
    true
}

#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Publish events; returns only once the broker has confirmed every one of
    /// them as safely stored (persistent + publisher confirms) in at least one
    /// consumer group's queue. An event no group binds is
    /// [`BusError::Unroutable`]: it was not stored anywhere. (Of a batch, the
    /// routable events may have been stored; publishing is at least once.)
    async fn publish(&self, events: &[Event]) -> Result<(), BusError>;

    /// Declare the group's queue (idempotent) and start receiving.
    async fn subscribe(&self, spec: SubscribeSpec) -> Result<Subscription, BusError>;

    /// Declare (idempotently) the exchange and, for every spec, the group's
    /// queue with its bindings, its retry queues and its dead-letter queue,
    /// without consuming: from then on every event a group binds waits in
    /// its queue, however late its consumers start (ADR 14).
    async fn declare(&self, specs: &[SubscribeSpec]) -> Result<(), BusError>;

    /// The consumer groups declared or subscribed through this bus (by this
    /// process), sorted: where its operators look for dead letters. Every
    /// process declares the whole topology at start, so it knows them all.
    fn known_groups(&self) -> Vec<String>;

    /// Take up to `limit` events out of the group's dead-letter queue.
    async fn drain_dead_letters(
        &self,
        group: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BusError>;

    /// Up to `limit` of the group's dead letters that `select` picks, oldest
    /// first, leaving them where they are.
    async fn list_dead_letters(
        &self,
        group: &str,
        select: DeadLetterFilter<'_>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BusError>;

    /// Moves up to `limit` of the group's dead letters that `select` picks
    /// back into the group's queue (only that group's: other groups already
    /// had them), as first deliveries again (attempt 1). Returns those moved.
    /// Each is re-published with confirms before it leaves the dead-letter
    /// queue: a failure in between duplicates it, never loses it.
    async fn redrive_dead_letters(
        &self,
        group: &str,
        select: DeadLetterFilter<'_>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BusError>;

    /// Deletes up to `limit` of the group's dead letters that `select` picks.
    /// Returns those deleted.
    async fn discard_dead_letters(
        &self,
        group: &str,
        select: DeadLetterFilter<'_>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BusError>;

    /// Whether the broker answers (readiness).
    async fn ping(&self) -> Result<(), BusError>;

    /// How many messages wait in the group's queue and dead-letter queue;
    /// zeros for a group that never subscribed.
    async fn queue_depth(&self, group: &str) -> Result<QueueDepth, BusError>;
}

pub type SharedBus = Arc<dyn EventBus>;

/// Connect by URL scheme: `amqp://` / `amqps://` for RabbitMQ, `memory://`
/// for the in-process bus. `prefix` is put in front of every exchange and
/// queue name so tests and instances never collide.
pub async fn connect(url: &str, prefix: &str, retry: RetryPolicy) -> Result<SharedBus, BusError> {
    connect_with_tls(url, prefix, retry, &InfraTlsConfig::default()).await
}

/// [`connect`] with the private CA and client certificate of `tls`
/// (`bus_tls`) for an `amqps://` broker; TLS files with any other URL are
/// refused.
pub async fn connect_with_tls(
    url: &str,
    prefix: &str,
    retry: RetryPolicy,
    tls: &InfraTlsConfig,
) -> Result<SharedBus, BusError> {
    if url.starts_with("memory:") {
        if !tls.is_empty() {
            return Err(BusError::Config(
                "bus_tls is set but the bus is memory://; it is for amqps:// only".into(),
            ));
        }
        Ok(Arc::new(memory::MemoryBus::new(retry)))
    } else if url.starts_with("amqp://") || url.starts_with("amqps://") {
        Ok(Arc::new(
            rabbitmq::RabbitBus::connect_with_tls(url, prefix, retry, tls).await?,
        ))
    } else {
        Err(BusError::Config(format!(
            "unsupported bus url {url:?}: expected amqp://… or memory://"
        )))
    }
}
