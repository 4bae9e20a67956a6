//! The production bus on RabbitMQ (AMQP 0-9-1 through lapin).
//!
//! Topology, all names behind the configured prefix:
//!
//! - `{prefix}telenet.events`: durable topic exchange every event is published to;
//! - `{prefix}{group}`: durable queue per consumer group, bound to its patterns;
//! - `{prefix}{group}.retry.{i}`: one queue per retry step with
//!   `x-message-ttl` = the step's delay and dead-lettering through the default
//!   exchange back into the group's queue, so a retried event waits there and
//!   then flows back by itself (no timers in our process, nothing lost if we
//!   crash meanwhile);
//! - `{prefix}{group}.dlq`: the group's dead letters, read by `basic.get`;
//! - `{prefix}{name}.{uuid}`: a broadcast subscriber's own queue, exclusive
//!   to our connection and auto-deleted when its consumer goes, with no
//!   retry or dead-letter queues (a retried or dead-lettered delivery is
//!   dropped).
//!
//! [`EventBus::declare`] declares all of it for every consumer group without
//! consuming (`telenet migrate` and every process at start do), so no event
//! is published before its queues exist. Every publish is `mandatory`: an
//! event the exchange routes to no queue comes back (`basic.return`, then the
//! confirm) and the publish fails with [`BusError::Unroutable`] rather than
//! report as stored an event the broker dropped.
//!
//! Dead letters are listed, redriven and discarded by reading the
//! dead-letter queue with `basic.get` on a channel of their own: the chosen
//! ones are acknowledged (after a redrive's copy into the group's queue is
//! confirmed), the others stay unacknowledged and go back, in their order,
//! when the channel closes.
//!
//! A retry or dead-letter is a new message published with confirms straight
//! into the retry or dead-letter queue (default exchange, `mandatory`), and
//! only then is the original acknowledged: a crash in between duplicates the
//! event (consumers de-duplicate on the id) but never loses it. The attempt
//! number travels in [`ATTEMPT_HEADER`], the reason in [`REASON_HEADER`], and
//! the original routing key in [`ROUTING_KEY_HEADER`] (the retry path replaces
//! the AMQP routing key with queue names).
//!
//! Connection loss: every broker operation is bounded by a timeout, so callers
//! get [`BusError::Unavailable`] instead of hanging; the next call reconnects,
//! with an exponential backoff between failed attempts so a dead broker is not
//! hammered; subscriptions re-establish their consumer on the new connection
//! and keep feeding the same [`Subscription`]. We do our own reconnection
//! rather than lapin's auto-recovery because we want failures reported to the
//! caller promptly (ingress answers 503 on them) rather than operations
//! parked until the broker returns.
//!
//! TLS: an `amqps://` URL connects over rustls (ring), verifying the
//! broker's certificate against the system's CAs plus the private CA of
//! `bus_tls.ca_file`, and the URL's host name; `bus_tls.cert_file` and
//! `key_file` are presented to a broker that asks for a client certificate
//! (ADR 17, [`crate::tls`]).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::tcp::AsyncTcpStream;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{
    Acker, BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Consumer,
    ExchangeKind,
};
use telenet_kit::infra_tls::InfraTlsConfig;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::tls::{BrokerTls, TransportRuntime};
use crate::{
    BusError, DeadLetter, DeadLetterFilter, Delivery, Event, EventBus, QueueDepth, RetryPolicy,
    Settle, SubscribeSpec, Subscription, check_event, check_spec, is_reserved_header,
};

/// Header carrying the delivery attempt (absent on the first delivery).
pub const ATTEMPT_HEADER: &str = "x-telenet-attempt";
/// Header carrying why an event was dead-lettered.
pub const REASON_HEADER: &str = "x-telenet-reason";
/// Header carrying the event's routing key through the retry and dead-letter queues.
pub const ROUTING_KEY_HEADER: &str = "x-telenet-routing-key";

/// Upper bound of any one broker operation, so nothing waits on a dead broker.
const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// Shorter than [`OP_TIMEOUT`] so that a connection attempt fails (and is
/// counted for the backoff) before the operation that triggered it times out.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const CONTENT_TYPE: &str = "application/x-protobuf";
/// AMQP delivery mode 2: the broker writes the message to disk.
const PERSISTENT: u8 = 2;
/// AMQP reply code for a normal close.
const REPLY_SUCCESS: u16 = 200;
/// Deliveries buffered between lapin and the subscriber when prefetch is 0
/// (unlimited): the broker may push everything, we keep the rest in lapin.
const UNLIMITED_PREFETCH_BUFFER: usize = 256;

/// The RabbitMQ event bus. See the module documentation for the topology.
pub struct RabbitBus {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RabbitBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitBus")
            .field("exchange", &self.shared.names.exchange.as_str())
            .field("retry", &self.shared.retry)
            .finish_non_exhaustive()
    }
}

struct Shared {
    names: Names,
    retry: RetryPolicy,
    link: Link,
    /// Everything this instance declared, for [`RabbitBus::close_and_delete_declared`].
    declared: Mutex<Declared>,
    /// Stops the subscription tasks.
    stop: CancellationToken,
    tasks: TaskTracker,
}

#[derive(Default)]
struct Declared {
    exchanges: BTreeSet<String>,
    queues: BTreeSet<String>,
    /// Consumer groups (unprefixed) whose queues this instance declared.
    groups: BTreeSet<String>,
}

impl RabbitBus {
    /// Connects now, so a wrong URL or an unreachable broker is reported at
    /// startup; later losses of the connection are repaired on use.
    /// `amqps://` trusts the system's CAs only; see [`RabbitBus::connect_with_tls`].
    pub async fn connect(url: &str, prefix: &str, retry: RetryPolicy) -> Result<Self, BusError> {
        Self::connect_with_tls(url, prefix, retry, &InfraTlsConfig::default()).await
    }

    /// [`RabbitBus::connect`] trusting the private CA of `tls` (`bus_tls`)
    /// too and presenting its client certificate, over `amqps://`. The
    /// files are read once, here; TLS files with a plaintext `amqp://` URL
    /// are refused rather than ignored.
    pub async fn connect_with_tls(
        url: &str,
        prefix: &str,
        retry: RetryPolicy,
        tls: &InfraTlsConfig,
    ) -> Result<Self, BusError> {
        let uri = parse_url(url)?;
        let tls = broker_tls(&uri, url, tls)?;
        for delay in &retry.delays {
            if u32::try_from(delay.as_millis()).is_err() {
                return Err(BusError::Config(format!(
                    "retry delay {delay:?} is longer than a RabbitMQ message TTL can be"
                )));
            }
        }
        let names = Names::new(prefix)?;
        let link = Link::new(
            uri,
            tls,
            names.exchange.clone(),
            format!("telenet-bus {prefix}"),
        );
        let shared = Arc::new(Shared {
            names,
            retry,
            link,
            declared: Mutex::new(Declared::default()),
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        shared.record_exchange(&shared.names.exchange);
        shared.link.live().await?;
        Ok(Self { shared })
    }

    /// Stops every subscription (their receivers end) and closes the
    /// connection. Deliveries still held can no longer be settled; the broker
    /// delivers them again. Further calls fail with `Unavailable`.
    pub async fn close(&self) {
        self.stop_subscriptions().await;
        self.shared.link.close().await;
    }

    /// Like [`close`](Self::close), but first deletes every queue and exchange
    /// this instance declared, messages included. For tests and throw-away
    /// instances, so the broker does not fill up with their prefixes.
    pub async fn close_and_delete_declared(&self) -> Result<(), BusError> {
        self.stop_subscriptions().await;
        let declared = std::mem::take(
            &mut *self
                .shared
                .declared
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let result = self.delete(&declared).await;
        self.shared.link.close().await;
        result
    }

    async fn stop_subscriptions(&self) {
        self.shared.stop.cancel();
        self.shared.tasks.close();
        if tokio::time::timeout(OP_TIMEOUT, self.shared.tasks.wait())
            .await
            .is_err()
        {
            warn!("subscription tasks did not stop in time");
        }
    }

    async fn delete(&self, declared: &Declared) -> Result<(), BusError> {
        let live = self.shared.link.live().await?;
        let mut failures = Vec::new();
        let mut channel = None;
        let queues = declared.queues.iter().map(|q| (true, q));
        let exchanges = declared.exchanges.iter().map(|e| (false, e));
        for (is_queue, name) in queues.chain(exchanges) {
            // A failed delete closes the channel: open a new one for the next.
            let ch = match channel.take() {
                Some(ch) => ch,
                None => {
                    within("open channel", async {
                        live.conn
                            .create_channel()
                            .await
                            .map_err(amqp("open channel"))
                    })
                    .await?
                }
            };
            let short = short_name("name", name.clone())?;
            let deleted = within("delete", async {
                if is_queue {
                    ch.queue_delete(short, QueueDeleteOptions::default())
                        .await
                        .map(|_| ())
                        .map_err(amqp("delete queue"))
                } else {
                    ch.exchange_delete(short, ExchangeDeleteOptions::default())
                        .await
                        .map_err(amqp("delete exchange"))
                }
            })
            .await;
            match deleted {
                Ok(()) => channel = Some(ch),
                Err(err) => failures.push(format!("{name}: {err}")),
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(BusError::Unavailable(format!(
                "could not delete {}",
                failures.join("; ")
            )))
        }
    }

    /// Closes the broker connection as if it had dropped.
    #[doc(hidden)]
    pub async fn kill_connection_for_test(&self) {
        let live = self.shared.link.state.lock().await.live.clone();
        if let Some(live) = live {
            // 320 CONNECTION_FORCED: what the broker sends when it drops us.
            if let Err(err) = live.conn.close(320, "killed by test".into()).await {
                debug!(error = %err, "closing the connection for a test");
            }
        }
    }

    /// Points future reconnections at another URL (e.g. a closed port, to
    /// keep the broker "down" for a while).
    #[doc(hidden)]
    pub fn redirect_for_test(&self, url: &str) -> Result<(), BusError> {
        let uri = parse_url(url)?;
        *self
            .shared
            .link
            .uri
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = uri;
        Ok(())
    }
}

#[async_trait]
impl EventBus for RabbitBus {
    async fn publish(&self, events: &[Event]) -> Result<(), BusError> {
        let mut messages = Vec::with_capacity(events.len());
        for event in events {
            check_event(event)?;
            messages.push(Outgoing {
                exchange: self.shared.names.exchange.clone(),
                routing_key: short_name("routing key", event.routing_key.clone())?,
                payload: event.payload.clone(),
                properties: properties(event, Vec::new())?,
            });
        }
        if messages.is_empty() {
            return Ok(());
        }
        self.shared.link.publish(messages).await
    }

    async fn subscribe(&self, spec: SubscribeSpec) -> Result<Subscription, BusError> {
        check_spec(&spec)?;
        if self.shared.stop.is_cancelled() {
            return Err(closed());
        }
        let topology = Arc::new(GroupTopology::new(
            &self.shared.names,
            &spec,
            &self.shared.retry,
        )?);
        let consumer = self.shared.open_consumer(&topology).await?;
        let capacity = match spec.prefetch {
            0 => UNLIMITED_PREFETCH_BUFFER,
            n => usize::from(n),
        };
        let (tx, rx) = mpsc::channel(capacity);
        let shared = Arc::clone(&self.shared);
        self.shared
            .tasks
            .spawn(run_subscription(shared, topology, tx, consumer));
        Ok(Subscription::from_receiver(rx))
    }

    async fn declare(&self, specs: &[SubscribeSpec]) -> Result<(), BusError> {
        let mut topologies = Vec::with_capacity(specs.len());
        for spec in specs {
            check_spec(spec)?;
            topologies.push(GroupTopology::new(
                &self.shared.names,
                spec,
                &self.shared.retry,
            )?);
        }
        if self.shared.stop.is_cancelled() {
            return Err(closed());
        }
        let shared = &self.shared;
        within("declare topology", async {
            let live = shared.link.live().await?;
            let ch = live
                .conn
                .create_channel()
                .await
                .map_err(amqp("open channel"))?;
            declare_exchange(&ch, &shared.names.exchange).await?;
            for t in &topologies {
                shared.declare_group(&ch, t).await?;
            }
            if let Err(err) = ch.close(REPLY_SUCCESS, "OK".into()).await {
                debug!(error = %err, "closing the declaring channel");
            }
            Ok(())
        })
        .await
    }

    fn known_groups(&self) -> Vec<String> {
        self.shared
            .declared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .groups
            .iter()
            .cloned()
            .collect()
    }

    async fn list_dead_letters(
        &self,
        group: &str,
        select: DeadLetterFilter<'_>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BusError> {
        self.shared
            .scan_dead_letters(group, select, limit, Take::Leave)
            .await
    }

    async fn redrive_dead_letters(
        &self,
        group: &str,
        select: DeadLetterFilter<'_>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BusError> {
        self.shared
            .scan_dead_letters(group, select, limit, Take::Redrive)
            .await
    }

    async fn discard_dead_letters(
        &self,
        group: &str,
        select: DeadLetterFilter<'_>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BusError> {
        self.shared
            .scan_dead_letters(group, select, limit, Take::Discard)
            .await
    }

    async fn drain_dead_letters(
        &self,
        group: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BusError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let dlq = self.shared.names.dlq(group)?;
        let link = &self.shared.link;
        within("drain dead letters", async {
            let live = link.live().await?;
            let ch = live
                .conn
                .create_channel()
                .await
                .map_err(amqp("open channel"))?;
            let passive = QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            };
            if let Err(err) = ch
                .queue_declare(dlq.clone(), passive, FieldTable::default())
                .await
            {
                // The group never subscribed: nothing was ever dead-lettered.
                return if is_soft(&err, AMQPSoftError::NOTFOUND) {
                    Ok(Vec::new())
                } else {
                    Err(amqp("look up dead-letter queue")(err))
                };
            }
            let mut dead = Vec::new();
            let mut last_tag = None;
            while dead.len() < limit {
                let got = ch
                    .basic_get(dlq.clone(), BasicGetOptions { no_ack: false })
                    .await
                    .map_err(amqp("get dead letter"))?;
                let Some(message) = got else { break };
                let mut delivery = message.delivery;
                last_tag = Some(delivery.delivery_tag);
                let incoming = Incoming::from_delivery(&mut delivery);
                dead.push(DeadLetter {
                    event: incoming.event,
                    reason: incoming.reason.unwrap_or_default(),
                    attempts: incoming.attempt,
                });
            }
            // Acknowledge only once all are in hand: a failure before this
            // point leaves every one of them in the queue.
            if let Some(tag) = last_tag {
                ch.basic_ack(tag, BasicAckOptions { multiple: true })
                    .await
                    .map_err(amqp("ack dead letters"))?;
            }
            if let Err(err) = ch.close(REPLY_SUCCESS, "OK".into()).await {
                debug!(error = %err, "closing the dead-letter channel");
            }
            Ok(dead)
        })
        .await
    }

    async fn ping(&self) -> Result<(), BusError> {
        self.shared.link.live().await.map(|_| ())
    }

    async fn queue_depth(&self, group: &str) -> Result<QueueDepth, BusError> {
        let queue = self.shared.names.queue(group)?;
        let dlq = self.shared.names.dlq(group)?;
        let link = &self.shared.link;
        within("read queue depth", async {
            let live = link.live().await?;
            Ok(QueueDepth {
                ready: ready_messages(&live.conn, queue).await?,
                dead_letters: ready_messages(&live.conn, dlq).await?,
            })
        })
        .await
    }
}

/// What a scan of a dead-letter queue does with the dead letters it picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Take {
    /// Nothing: they stay (listing).
    Leave,
    /// Copy into the group's queue as a first delivery, then remove.
    Redrive,
    /// Remove.
    Discard,
}

impl Shared {
    /// Reads the group's dead-letter queue once through, oldest first,
    /// applying `take` to up to `limit` dead letters `select` picks. Every
    /// message not removed stays unacknowledged until the scan's channel
    /// closes, which puts them back in their places.
    async fn scan_dead_letters(
        &self,
        group: &str,
        select: DeadLetterFilter<'_>,
        limit: usize,
        take: Take,
    ) -> Result<Vec<DeadLetter>, BusError> {
        let dlq = self.names.dlq(group)?;
        let queue = self.names.queue(group)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let live = self.link.live().await?;
        let ch = within("open channel", async {
            live.conn
                .create_channel()
                .await
                .map_err(amqp("open channel"))
        })
        .await?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let declared = within("look up dead-letter queue", async {
            Ok(ch
                .queue_declare(dlq.clone(), passive, FieldTable::default())
                .await)
        })
        .await?;
        let waiting = match declared {
            Ok(declared) => declared.message_count(),
            // The group was never declared: nothing was ever dead-lettered.
            Err(err) if is_soft(&err, AMQPSoftError::NOTFOUND) => return Ok(Vec::new()),
            Err(err) => return Err(amqp("look up dead-letter queue")(err)),
        };
        let scanned = self
            .scan(&ch, &dlq, &queue, waiting, select, limit, take)
            .await;
        // Closing returns the unacknowledged rest to the queue, in order.
        if let Err(err) = ch.close(REPLY_SUCCESS, "OK".into()).await {
            debug!(error = %err, "closing the dead-letter channel");
        }
        scanned
    }

    #[allow(clippy::too_many_arguments)]
    async fn scan(
        &self,
        ch: &Channel,
        dlq: &ShortString,
        queue: &ShortString,
        waiting: u32,
        select: DeadLetterFilter<'_>,
        limit: usize,
        take: Take,
    ) -> Result<Vec<DeadLetter>, BusError> {
        let mut taken = Vec::new();
        // Once through what was there when the scan began: messages
        // dead-lettered meanwhile wait for the next scan.
        for _ in 0..waiting {
            if taken.len() >= limit {
                break;
            }
            let got = within("get dead letter", async {
                ch.basic_get(dlq.clone(), BasicGetOptions { no_ack: false })
                    .await
                    .map_err(amqp("get dead letter"))
            })
            .await?;
            let Some(message) = got else { break };
            let mut delivery = message.delivery;
            let tag = delivery.delivery_tag;
            let incoming = Incoming::from_delivery(&mut delivery);
            let dead = DeadLetter {
                event: incoming.event,
                reason: incoming.reason.unwrap_or_default(),
                attempts: incoming.attempt,
            };
            if !select(&dead) {
                continue;
            }
            if take == Take::Redrive {
                // The original routing key travels in its header; no attempt
                // header: the consumer sees a first delivery.
                let message = Outgoing {
                    exchange: ShortString::from(""),
                    routing_key: queue.clone(),
                    payload: dead.event.payload.clone(),
                    properties: properties(
                        &dead.event,
                        vec![(
                            ROUTING_KEY_HEADER,
                            AMQPValue::LongString(dead.event.routing_key.as_str().into()),
                        )],
                    )?,
                };
                self.link.publish(vec![message]).await?;
            }
            if take != Take::Leave {
                within("ack dead letter", async {
                    ch.basic_ack(tag, BasicAckOptions { multiple: false })
                        .await
                        .map_err(amqp("ack dead letter"))
                })
                .await?;
            }
            taken.push(dead);
        }
        Ok(taken)
    }
}

/// Messages ready in `queue` (0 if it does not exist), read with a passive
/// declare on a channel of its own: a missing queue closes the channel.
async fn ready_messages(conn: &Connection, queue: ShortString) -> Result<u64, BusError> {
    let ch = conn.create_channel().await.map_err(amqp("open channel"))?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    match ch
        .queue_declare(queue, passive, FieldTable::default())
        .await
    {
        Ok(declared) => {
            if let Err(err) = ch.close(REPLY_SUCCESS, "OK".into()).await {
                debug!(error = %err, "closing the queue-depth channel");
            }
            Ok(u64::from(declared.message_count()))
        }
        Err(err) if is_soft(&err, AMQPSoftError::NOTFOUND) => Ok(0),
        Err(err) => Err(amqp("read queue depth")(err)),
    }
}

// ---------------------------------------------------------------------------
// Names and topology

struct Names {
    prefix: String,
    exchange: ShortString,
}

impl Names {
    fn new(prefix: &str) -> Result<Self, BusError> {
        Ok(Self {
            prefix: prefix.to_owned(),
            exchange: short_name("exchange name", format!("{prefix}telenet.events"))?,
        })
    }

    fn queue(&self, group: &str) -> Result<ShortString, BusError> {
        short_name("queue name", format!("{}{group}", self.prefix))
    }

    fn dlq(&self, group: &str) -> Result<ShortString, BusError> {
        short_name("queue name", format!("{}{group}.dlq", self.prefix))
    }

    fn retry(&self, group: &str, step: usize) -> Result<ShortString, BusError> {
        short_name("queue name", format!("{}{group}.retry.{step}", self.prefix))
    }
}

/// Everything one group's subscription declares, computed (and validated) once.
struct GroupTopology {
    group: String,
    queue: ShortString,
    dlq: ShortString,
    /// Retry step `i` (0-based) waits `delays[i]` in `retries[i]`.
    retries: Vec<(ShortString, Duration)>,
    bindings: Vec<ShortString>,
    prefetch: u16,
    /// A broadcast subscriber's own queue: exclusive, auto-delete, no
    /// retries or dead letters.
    broadcast: bool,
}

impl GroupTopology {
    fn new(names: &Names, spec: &SubscribeSpec, retry: &RetryPolicy) -> Result<Self, BusError> {
        let retries = retry
            .delays
            .iter()
            .enumerate()
            .map(|(i, delay)| Ok((names.retry(&spec.group, i + 1)?, *delay)))
            .collect::<Result<_, BusError>>()?;
        let bindings = spec
            .bindings
            .iter()
            .map(|b| short_name("binding pattern", b.clone()))
            .collect::<Result<_, _>>()?;
        if spec.broadcast {
            // Unique per subscription, so a new subscriber never finds
            // what an earlier one left.
            let own = format!("{}.{}", spec.group, uuid::Uuid::new_v4().simple());
            return Ok(Self {
                group: spec.group.clone(),
                queue: names.queue(&own)?,
                dlq: names.dlq(&own)?,
                retries: Vec::new(),
                bindings,
                prefetch: spec.prefetch,
                broadcast: true,
            });
        }
        Ok(Self {
            group: spec.group.clone(),
            queue: names.queue(&spec.group)?,
            dlq: names.dlq(&spec.group)?,
            retries,
            bindings,
            prefetch: spec.prefetch,
            broadcast: false,
        })
    }
}

impl Shared {
    fn record_exchange(&self, name: &ShortString) {
        self.declared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .exchanges
            .insert(name.to_string());
    }

    fn record_queue(&self, name: &ShortString) {
        self.declared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .queues
            .insert(name.to_string());
    }

    /// Declares (idempotently) the group's queue and its bindings, its
    /// dead-letter queue and its retry queues, on `ch`.
    async fn declare_group(&self, ch: &Channel, t: &GroupTopology) -> Result<(), BusError> {
        if t.broadcast {
            // A subscriber's own queue: gone with its consumer, so it is
            // neither recorded nor given a dead-letter queue.
            ch.queue_declare(
                t.queue.clone(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(amqp("declare broadcast queue"))?;
        } else {
            self.declared
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .groups
                .insert(t.group.clone());
            self.record_queue(&t.queue);
            declare_queue(ch, &t.queue, FieldTable::default()).await?;
        }
        for pattern in &t.bindings {
            ch.queue_bind(
                t.queue.clone(),
                self.names.exchange.clone(),
                pattern.clone(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(amqp("bind queue"))?;
        }
        if !t.broadcast {
            self.record_queue(&t.dlq);
            declare_queue(ch, &t.dlq, FieldTable::default()).await?;
        }
        for (name, delay) in &t.retries {
            self.record_queue(name);
            declare_queue(ch, name, retry_arguments(&t.queue, *delay)).await?;
        }
        Ok(())
    }

    /// Declares (idempotently) the group's queues and bindings, then starts a
    /// consumer on a channel of its own, so its prefetch is its own and a
    /// channel error cannot take the publisher down with it.
    async fn open_consumer(&self, t: &GroupTopology) -> Result<(Channel, Consumer), BusError> {
        within("subscribe", async {
            let live = self.link.live().await?;
            let ch = live
                .conn
                .create_channel()
                .await
                .map_err(amqp("open channel"))?;
            declare_exchange(&ch, &self.names.exchange).await?;
            self.declare_group(&ch, t).await?;
            ch.basic_qos(t.prefetch, BasicQosOptions::default())
                .await
                .map_err(amqp("set prefetch"))?;
            let consumer = ch
                .basic_consume(
                    t.queue.clone(),
                    // Empty: the broker picks a unique tag.
                    ShortString::from(""),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(amqp("consume"))?;
            Ok((ch, consumer))
        })
        .await
    }
}

async fn declare_exchange(ch: &Channel, exchange: &ShortString) -> Result<(), BusError> {
    ch.exchange_declare(
        exchange.clone(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .map_err(amqp("declare exchange"))
}

async fn declare_queue(
    ch: &Channel,
    queue: &ShortString,
    arguments: FieldTable,
) -> Result<(), BusError> {
    ch.queue_declare(
        queue.clone(),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        arguments,
    )
    .await
    .map(|_| ())
    .map_err(|err| {
        if is_soft(&err, AMQPSoftError::PRECONDITIONFAILED) {
            // Typically a retry queue declared earlier with another delay.
            BusError::Config(format!(
                "queue {queue} exists with other arguments (a changed retry policy?); \
                 delete it or keep its settings: {err}"
            ))
        } else {
            amqp("declare queue")(err)
        }
    })
}

/// A retry queue holds each message for `delay`, then dead-letters it through
/// the default exchange (which routes by queue name) back into `queue`.
fn retry_arguments(queue: &ShortString, delay: Duration) -> FieldTable {
    let ttl = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
    let mut args = FieldTable::default();
    args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(LongString::from("")),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(LongString::from(queue.as_str())),
    );
    args
}

// ---------------------------------------------------------------------------
// The connection

/// One connection and its confirm-mode publisher channel, (re)made on demand.
struct Link {
    uri: Mutex<AMQPUri>,
    /// TLS for `amqps://` (`None` for `amqp://`).
    tls: Option<BrokerTls>,
    exchange: ShortString,
    connection_name: String,
    state: tokio::sync::Mutex<LinkState>,
    /// Held while a publish call sends its frames. lapin numbers a publish
    /// for confirms before queueing its frames, so two tasks publishing at
    /// once could put them on the wire in the other order and have each
    /// other's confirms; the confirms themselves are awaited outside it.
    send_order: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct LinkState {
    live: Option<Live>,
    /// Consecutive failed connection attempts.
    failures: u32,
    /// No new attempt before this instant.
    retry_at: Option<Instant>,
    closed: bool,
}

#[derive(Clone)]
struct Live {
    conn: Arc<Connection>,
    publisher: Channel,
}

/// One message to publish, always `mandatory`: a message no queue takes is
/// an error ([`BusError::Unroutable`]), never silently dropped — for events
/// as for retry, dead-letter and redrive moves (whose original would
/// otherwise be acknowledged while the copy vanished).
struct Outgoing {
    exchange: ShortString,
    routing_key: ShortString,
    payload: Bytes,
    properties: BasicProperties,
}

impl Link {
    fn new(
        uri: AMQPUri,
        tls: Option<BrokerTls>,
        exchange: ShortString,
        connection_name: String,
    ) -> Self {
        Self {
            uri: Mutex::new(uri),
            tls,
            exchange,
            connection_name,
            state: tokio::sync::Mutex::new(LinkState::default()),
            send_order: tokio::sync::Mutex::new(()),
        }
    }

    /// The current connection, reconnecting if it was lost and the backoff
    /// allows; otherwise `Unavailable` at once.
    async fn live(&self) -> Result<Live, BusError> {
        let mut state = self.state.lock().await;
        if state.closed {
            return Err(closed());
        }
        if let Some(live) = state.live.as_mut() {
            if live.conn.status().connected() {
                if live.publisher.status().connected() {
                    return Ok(live.clone());
                }
                // Only the channel died (the broker closes a channel on a
                // channel-level error): a new one on the same connection.
                match within(
                    "open publisher channel",
                    open_publisher(&live.conn, &self.exchange),
                )
                .await
                {
                    Ok(publisher) => {
                        live.publisher = publisher;
                        return Ok(live.clone());
                    }
                    Err(err) => {
                        warn!(error = %err, "cannot reopen the publisher channel; reconnecting");
                        let _ = tokio::time::timeout(
                            OP_TIMEOUT,
                            live.conn.close(REPLY_SUCCESS, "reconnecting".into()),
                        )
                        .await;
                    }
                }
            }
            state.live = None;
        }
        if let Some(at) = state.retry_at {
            let now = Instant::now();
            if now < at {
                return Err(BusError::Unavailable(format!(
                    "broker unreachable; next connection attempt in {:?}",
                    at - now
                )));
            }
        }
        let uri = self
            .uri
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let attempt = tokio::time::timeout(CONNECT_TIMEOUT, self.connect(uri))
            .await
            .unwrap_or_else(|_| {
                Err(BusError::Unavailable(format!(
                    "connecting to the broker timed out after {CONNECT_TIMEOUT:?}"
                )))
            });
        match attempt {
            Ok(live) => {
                if state.failures > 0 {
                    info!(failures = state.failures, "reconnected to the broker");
                }
                state.failures = 0;
                state.retry_at = None;
                state.live = Some(live.clone());
                Ok(live)
            }
            Err(err) => {
                state.failures = state.failures.saturating_add(1);
                let wait = backoff(state.failures);
                state.retry_at = Some(Instant::now() + wait);
                warn!(error = %err, failures = state.failures, retry_in = ?wait, "broker connection failed");
                Err(err)
            }
        }
    }

    async fn connect(&self, uri: AMQPUri) -> Result<Live, BusError> {
        let properties = ConnectionProperties::default()
            .with_connection_name(self.connection_name.clone().into());
        let runtime = crate::tls::runtime(self.tls.clone());
        let plaintext = uri.scheme == AMQPScheme::AMQP;
        let conn = Connection::connector(uri, runtime, open_socket, properties)
            .await
            .map_err(|err| {
                // What a TLS listener answers to plaintext AMQP does not
                // parse: say what that usually means.
                let hint = plaintext && matches!(err.kind(), lapin::ErrorKind::ParsingError(_));
                match amqp("connect to the broker")(err) {
                    BusError::Unavailable(message) if hint => BusError::Unavailable(format!(
                        "{message} (the broker's answer is not AMQP: a TLS port? use amqps://)"
                    )),
                    other => other,
                }
            })?;
        let publisher = open_publisher(&conn, &self.exchange).await?;
        Ok(Live {
            conn: Arc::new(conn),
            publisher,
        })
    }

    /// Sends every message, then waits for all their confirms: one round trip
    /// for the batch instead of one per message.
    async fn publish(&self, messages: Vec<Outgoing>) -> Result<(), BusError> {
        within("publish", async {
            let live = self.live().await?;
            let confirms = {
                let _order = self.send_order.lock().await;
                let mut confirms = Vec::with_capacity(messages.len());
                for m in &messages {
                    let confirm = live
                        .publisher
                        .basic_publish(
                            m.exchange.clone(),
                            m.routing_key.clone(),
                            BasicPublishOptions {
                                mandatory: true,
                                immediate: false,
                            },
                            &m.payload,
                            m.properties.clone(),
                        )
                        .await
                        .map_err(amqp("publish"))?;
                    confirms.push(confirm);
                }
                confirms
            };
            let outcomes = futures::future::join_all(confirms).await;
            for (m, outcome) in messages.iter().zip(outcomes) {
                match outcome.map_err(amqp("publisher confirm"))? {
                    Confirmation::Ack(None) => {}
                    // Confirmed, but returned first: no queue took it.
                    Confirmation::Ack(Some(returned)) => {
                        debug!(routing_key = %m.routing_key, reply = %returned.reply_text, "returned unroutable");
                        return Err(BusError::Unroutable {
                            routing_key: m.routing_key.to_string(),
                        });
                    }
                    Confirmation::Nack(_) => {
                        return Err(BusError::NotConfirmed(format!(
                            "the broker nacked the message for {}",
                            m.routing_key
                        )));
                    }
                    Confirmation::NotRequested => {
                        return Err(BusError::NotConfirmed(
                            "the publisher channel is not in confirm mode".into(),
                        ));
                    }
                }
            }
            Ok(())
        })
        .await
    }

    async fn close(&self) {
        let mut state = self.state.lock().await;
        state.closed = true;
        let Some(live) = state.live.take() else {
            return;
        };
        if !live.conn.status().connected() {
            return;
        }
        let closing = live.conn.close(REPLY_SUCCESS, "OK".into());
        match tokio::time::timeout(OP_TIMEOUT, closing).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => debug!(error = %err, "closing the broker connection"),
            Err(_) => debug!("closing the broker connection timed out"),
        }
    }
}

async fn open_publisher(conn: &Connection, exchange: &ShortString) -> Result<Channel, BusError> {
    let ch = conn.create_channel().await.map_err(amqp("open channel"))?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(amqp("enable publisher confirms"))?;
    // Publishing to a missing exchange would close the channel: make sure it exists.
    declare_exchange(&ch, exchange).await?;
    Ok(ch)
}

/// Exponential from [`BACKOFF_MIN`] up to [`BACKOFF_MAX`], with jitter so that
/// many processes losing the broker together do not come back in lockstep.
fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    let base = BACKOFF_MIN.saturating_mul(1 << doublings).min(BACKOFF_MAX);
    base.mul_f64(0.75 + fastrand::f64() * 0.5).min(BACKOFF_MAX)
}

// ---------------------------------------------------------------------------
// Subscriptions

enum Ended {
    /// The subscriber went away or the bus is closing.
    Stopped,
    /// The consumer ended under us (connection or channel lost, queue deleted).
    Lost,
}

/// Feeds one `Subscription` for its whole life, re-establishing the consumer
/// whenever it is lost. On cancel (bus closing) or when the subscriber drops
/// its receiver, it cancels the consumer and returns what was not handed out.
async fn run_subscription(
    shared: Arc<Shared>,
    topology: Arc<GroupTopology>,
    tx: mpsc::Sender<Delivery>,
    first: (Channel, Consumer),
) {
    let mut current = Some(first);
    let mut failures = 0u32;
    loop {
        let (channel, consumer) = match current.take() {
            Some(pair) => pair,
            None => {
                let opened = tokio::select! {
                    () = shared.stop.cancelled() => return,
                    () = tx.closed() => return,
                    opened = shared.open_consumer(&topology) => opened,
                };
                match opened {
                    Ok(pair) => {
                        info!(group = %topology.group, "consumer re-established");
                        failures = 0;
                        pair
                    }
                    Err(err) => {
                        failures = failures.saturating_add(1);
                        let wait = backoff(failures);
                        warn!(group = %topology.group, error = %err, retry_in = ?wait, "cannot re-establish consumer");
                        tokio::select! {
                            () = shared.stop.cancelled() => return,
                            () = tx.closed() => return,
                            () = tokio::time::sleep(wait) => continue,
                        }
                    }
                }
            }
        };
        match forward(&shared, &topology, &tx, &channel, consumer).await {
            Ended::Stopped => return,
            Ended::Lost => warn!(group = %topology.group, "consumer lost; re-establishing"),
        }
    }
}

async fn forward(
    shared: &Arc<Shared>,
    topology: &Arc<GroupTopology>,
    tx: &mpsc::Sender<Delivery>,
    channel: &Channel,
    mut consumer: Consumer,
) -> Ended {
    loop {
        let next = tokio::select! {
            () = shared.stop.cancelled() => break,
            () = tx.closed() => break,
            next = consumer.next() => next,
        };
        match next {
            Some(Ok(delivery)) => {
                let delivery = to_delivery(shared, topology, channel, delivery);
                // If the send does not complete, the delivery is dropped and
                // so goes back to the queue.
                tokio::select! {
                    () = shared.stop.cancelled() => break,
                    sent = tx.send(delivery) => if sent.is_err() { break },
                }
            }
            // lapin always follows an error with the end of the stream.
            Some(Err(err)) => debug!(group = %topology.group, error = %err, "consumer error"),
            None => return Ended::Lost,
        }
    }
    stop_consumer(channel, consumer).await;
    Ended::Stopped
}

/// Cancels the consumer and requeues what the broker had already pushed to
/// it, so the rest of the group gets those now rather than when the channel
/// closes (it stays open while handed-out deliveries are unsettled).
async fn stop_consumer(channel: &Channel, mut consumer: Consumer) {
    let cancel = channel.basic_cancel(consumer.tag(), BasicCancelOptions::default());
    if let Ok(Err(err)) = tokio::time::timeout(OP_TIMEOUT, cancel).await {
        debug!(error = %err, "cancelling the consumer");
        return;
    }
    while let Ok(Some(Ok(delivery))) =
        tokio::time::timeout(Duration::from_millis(500), consumer.next()).await
    {
        let requeue = BasicNackOptions {
            multiple: false,
            requeue: true,
        };
        if let Ok(Err(err)) = tokio::time::timeout(OP_TIMEOUT, delivery.acker.nack(requeue)).await {
            debug!(error = %err, "requeueing a buffered delivery");
        }
    }
}

fn to_delivery(
    shared: &Arc<Shared>,
    topology: &Arc<GroupTopology>,
    channel: &Channel,
    mut delivery: lapin::message::Delivery,
) -> Delivery {
    let incoming = Incoming::from_delivery(&mut delivery);
    Delivery::new(
        incoming.event.clone(),
        incoming.attempt,
        Box::new(RabbitSettle {
            shared: Arc::clone(shared),
            topology: Arc::clone(topology),
            acker: delivery.acker,
            _channel: channel.clone(),
            event: incoming.event,
            attempt: incoming.attempt,
        }),
    )
}

struct RabbitSettle {
    shared: Arc<Shared>,
    topology: Arc<GroupTopology>,
    acker: Acker,
    /// Keeps the delivery's channel open until it is settled: acks must go
    /// on the channel that received the message.
    _channel: Channel,
    event: Event,
    attempt: u32,
}

impl RabbitSettle {
    async fn ack_original(&self) -> Result<(), BusError> {
        match tokio::time::timeout(OP_TIMEOUT, self.acker.ack(BasicAckOptions::default())).await {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err(BusError::Unavailable(
                "the delivery's channel closed before the ack; the broker will deliver it again"
                    .into(),
            )),
            Ok(Err(err)) => Err(amqp("ack")(err)),
            Err(_) => Err(BusError::Unavailable(format!(
                "ack timed out after {OP_TIMEOUT:?}"
            ))),
        }
    }

    /// Publishes a copy into `queue` (confirmed), then acks the original.
    async fn move_to(
        &self,
        queue: &ShortString,
        attempt: u32,
        reason: Option<&str>,
    ) -> Result<(), BusError> {
        let mut extra = vec![
            (ATTEMPT_HEADER, AMQPValue::LongLongInt(i64::from(attempt))),
            (
                ROUTING_KEY_HEADER,
                AMQPValue::LongString(self.event.routing_key.as_str().into()),
            ),
        ];
        if let Some(reason) = reason {
            extra.push((REASON_HEADER, AMQPValue::LongString(reason.into())));
        }
        let message = Outgoing {
            exchange: ShortString::from(""),
            routing_key: queue.clone(),
            payload: self.event.payload.clone(),
            properties: properties(&self.event, extra)?,
        };
        self.shared.link.publish(vec![message]).await?;
        self.ack_original().await
    }
}

#[async_trait]
impl Settle for RabbitSettle {
    async fn ack(self: Box<Self>) -> Result<(), BusError> {
        self.ack_original().await
    }

    async fn retry(self: Box<Self>, reason: &str) -> Result<(), BusError> {
        if self.topology.broadcast {
            return self.ack_original().await;
        }
        let step = usize::try_from(self.attempt.max(1) - 1).unwrap_or(usize::MAX);
        match self.topology.retries.get(step) {
            Some((queue, _)) => {
                self.move_to(queue, self.attempt.saturating_add(1), None)
                    .await
            }
            None => {
                self.move_to(&self.topology.dlq, self.attempt, Some(reason))
                    .await
            }
        }
    }

    async fn dead_letter(self: Box<Self>, reason: &str) -> Result<(), BusError> {
        if self.topology.broadcast {
            return self.ack_original().await;
        }
        self.move_to(&self.topology.dlq, self.attempt, Some(reason))
            .await
    }

    fn requeue(self: Box<Self>) {
        // Called from `Drop`, possibly outside a runtime (at shutdown): then
        // the broker requeues it anyway when the channel closes.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let requeue = BasicNackOptions {
                    multiple: false,
                    requeue: true,
                };
                if let Ok(Err(err)) =
                    tokio::time::timeout(OP_TIMEOUT, self.acker.nack(requeue)).await
                {
                    debug!(error = %err, "requeueing a dropped delivery");
                }
            });
        }
    }
}

// ---------------------------------------------------------------------------
// Messages

/// An event as it came off a queue, with our bookkeeping headers split off.
struct Incoming {
    event: Event,
    attempt: u32,
    reason: Option<String>,
}

impl Incoming {
    fn from_delivery(delivery: &mut lapin::message::Delivery) -> Self {
        let props = &delivery.properties;
        let mut headers = BTreeMap::new();
        let mut attempt = 1;
        let mut reason = None;
        let mut routing_key = delivery.routing_key.to_string();
        if let Some(table) = props.headers() {
            for (name, value) in table {
                match name.as_str() {
                    ATTEMPT_HEADER => attempt = as_u32(value).unwrap_or(1).max(1),
                    REASON_HEADER => reason = as_string(value),
                    ROUTING_KEY_HEADER => {
                        if let Some(key) = as_string(value) {
                            routing_key = key;
                        }
                    }
                    other if is_reserved_header(other) => {}
                    other => {
                        if let Some(value) = as_string(value) {
                            headers.insert(other.to_owned(), value);
                        }
                    }
                }
            }
        }
        // Messages from other publishers may lack an id; they get an empty one.
        let id = props
            .message_id()
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        let payload = Bytes::from(std::mem::take(&mut delivery.data));
        Self {
            event: Event {
                id,
                routing_key,
                payload,
                headers,
            },
            attempt,
            reason,
        }
    }
}

fn properties(
    event: &Event,
    extra: Vec<(&'static str, AMQPValue)>,
) -> Result<BasicProperties, BusError> {
    let mut headers = FieldTable::default();
    for (name, value) in &event.headers {
        headers.insert(
            short_name("header name", name.clone())?,
            AMQPValue::LongString(value.as_str().into()),
        );
    }
    for (name, value) in extra {
        headers.insert(name.into(), value);
    }
    Ok(BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_content_type(CONTENT_TYPE.into())
        .with_message_id(short_name("event id", event.id.clone())?)
        .with_headers(headers))
}

fn as_string(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn as_u32(value: &AMQPValue) -> Option<u32> {
    match value {
        AMQPValue::ShortShortInt(n) => u32::try_from(*n).ok(),
        AMQPValue::ShortShortUInt(n) => Some(u32::from(*n)),
        AMQPValue::ShortInt(n) => u32::try_from(*n).ok(),
        AMQPValue::ShortUInt(n) => Some(u32::from(*n)),
        AMQPValue::LongInt(n) => u32::try_from(*n).ok(),
        AMQPValue::LongUInt(n) => Some(*n),
        AMQPValue::LongLongInt(n) => u32::try_from(*n).ok(),
        other => as_string(other).and_then(|s| s.parse().ok()),
    }
}

// ---------------------------------------------------------------------------
// Errors and helpers

fn short_name(what: &str, value: String) -> Result<ShortString, BusError> {
    ShortString::try_new(value).map_err(|err| BusError::Config(format!("{what}: {err}")))
}

fn closed() -> BusError {
    BusError::Unavailable("the event bus was closed".into())
}

fn is_soft(err: &lapin::Error, kind: AMQPSoftError) -> bool {
    matches!(err.kind(), lapin::ErrorKind::ProtocolError(e)
        if *e.kind() == AMQPErrorKind::Soft(kind))
}

/// Maps a lapin error: what the broker refuses as a matter of configuration
/// (a queue declared with other arguments, missing permissions) is `Config`;
/// everything else may pass with time and is `Unavailable`.
fn amqp(what: &'static str) -> impl FnOnce(lapin::Error) -> BusError {
    move |err| {
        if is_soft(&err, AMQPSoftError::PRECONDITIONFAILED)
            || is_soft(&err, AMQPSoftError::ACCESSREFUSED)
        {
            BusError::Config(format!("{what}: {err}"))
        } else {
            BusError::Unavailable(format!("{what}: {err}"))
        }
    }
}

async fn within<T>(
    what: &str,
    operation: impl Future<Output = Result<T, BusError>>,
) -> Result<T, BusError> {
    tokio::time::timeout(OP_TIMEOUT, operation)
        .await
        .unwrap_or_else(|_| {
            Err(BusError::Unavailable(format!(
                "{what} timed out after {OP_TIMEOUT:?}"
            )))
        })
}

fn parse_url(url: &str) -> Result<AMQPUri, BusError> {
    let shown = redact(url);
    let uri: AMQPUri = url.parse().map_err(|err: String| {
        BusError::Config(format!(
            "invalid amqp url {shown}: {}",
            err.replace(url, &shown)
        ))
    })?;
    Ok(uri)
}

/// The TLS of an `amqps://` broker (`None` for `amqp://`), with the private
/// CA and client certificate of `tls`, read and checked now. TLS files with
/// a plaintext URL are refused rather than ignored.
fn broker_tls(
    uri: &AMQPUri,
    url: &str,
    tls: &InfraTlsConfig,
) -> Result<Option<BrokerTls>, BusError> {
    match uri.scheme {
        AMQPScheme::AMQPS => Ok(Some(BrokerTls::new(&uri.authority.host, tls)?)),
        AMQPScheme::AMQP if tls.is_empty() => Ok(None),
        AMQPScheme::AMQP => Err(BusError::Config(format!(
            "bus_tls is set but the bus URL {} is plaintext amqp://; use amqps://",
            redact(url)
        ))),
    }
}

/// The socket lapin talks AMQP over (again at each reconnection it makes
/// itself): the runtime's reactor adds TLS for `amqps://`.
async fn open_socket(
    uri: AMQPUri,
    runtime: TransportRuntime,
) -> lapin::Result<AsyncTcpStream<crate::tls::Transport>> {
    let addrs = runtime.to_socket_addrs((uri.authority.host.clone(), uri.authority.port));
    AsyncTcpStream::connect(&runtime, addrs)
        .await
        .map_err(lapin::Error::from)
}

/// The URL without its password, for error messages and logs.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    match rest[..at].split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_the_password_only() {
        assert_eq!(
            redact("amqp://guest:secret@host:5672/%2f"),
            "amqp://guest:***@host:5672/%2f"
        );
        assert_eq!(redact("amqp://host/%2f"), "amqp://host/%2f");
        assert_eq!(redact("amqp://user@host"), "amqp://user@host");
    }

    #[test]
    fn tls_files_with_a_plaintext_url_are_refused() {
        let url = "amqp://u:p@host/%2f";
        let uri = parse_url(url).expect("url");
        let tls = InfraTlsConfig::trusting("/etc/telenet/bus-tls/ca.crt");
        let Err(BusError::Config(message)) = broker_tls(&uri, url, &tls) else {
            panic!("bus_tls with amqp:// must be a config error");
        };
        assert!(message.contains("use amqps://"), "{message}");
        assert!(!message.contains(":p@"), "{message}");
        assert!(
            broker_tls(&uri, url, &InfraTlsConfig::default())
                .expect("plain")
                .is_none()
        );
        let url = "amqps://u:p@host/%2f";
        let uri = parse_url(url).expect("amqps url");
        assert!(
            broker_tls(&uri, url, &InfraTlsConfig::default())
                .expect("system CAs")
                .is_some()
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) <= Duration::from_millis(125));
        assert!(backoff(3) >= Duration::from_millis(300));
        for failures in [10, 100, u32::MAX] {
            assert!(backoff(failures) <= BACKOFF_MAX);
        }
    }

    #[test]
    fn retry_queues_flow_back_into_the_group_queue() {
        let args = retry_arguments(&"p.g".into(), Duration::from_millis(150));
        let inner = args.inner();
        assert_eq!(
            inner.get("x-message-ttl"),
            Some(&AMQPValue::LongLongInt(150))
        );
        assert_eq!(
            inner.get("x-dead-letter-routing-key"),
            Some(&AMQPValue::LongString("p.g".into()))
        );
    }

    #[test]
    fn bookkeeping_headers_do_not_leak_into_the_event() {
        let mut event = Event::new("a.b", "x");
        event.headers.insert("traceparent".into(), "00-abc".into());
        let props = properties(
            &event,
            vec![
                (ATTEMPT_HEADER, AMQPValue::LongLongInt(3)),
                (REASON_HEADER, AMQPValue::LongString("boom".into())),
                (ROUTING_KEY_HEADER, AMQPValue::LongString("a.b".into())),
            ],
        )
        .expect("properties");
        let mut delivery = lapin::message::Delivery::mock(
            1,
            "".into(),
            "p.g.retry.1".into(),
            false,
            b"x".to_vec(),
        );
        delivery.properties = props;
        let incoming = Incoming::from_delivery(&mut delivery);
        assert_eq!(incoming.event, event);
        assert_eq!(incoming.attempt, 3);
        assert_eq!(incoming.reason.as_deref(), Some("boom"));
    }
}
