//! Metrics for any [`EventBus`]: [`MeteredBus`] wraps a bus and records
//! what passes through it — events published (by routing key, confirmed or
//! not) and how long confirms took, deliveries settled by each consumer
//! group (by routing key and outcome) and how long consumers held them —
//! and polls the depth of the queues of the groups subscribed through it.
//!
//! Wrapping the bus once where a process starts measures every publisher
//! and consumer of that process without any of them knowing.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use telenet_kit::metrics::{ConsumeOutcome, Metrics};
use tokio_util::sync::CancellationToken;

use crate::{
    BusError, DeadLetter, DeadLetterFilter, Event, EventBus, QueueDepth, Settle, SharedBus,
    SubscribeSpec, Subscription,
};

/// A bus that records metrics for the bus it wraps; see the module docs.
pub struct MeteredBus {
    inner: SharedBus,
    metrics: Metrics,
    /// Groups subscribed or declared through this bus, whose queues
    /// [`watch_queues`] polls.
    ///
    /// [`watch_queues`]: MeteredBus::watch_queues
    groups: Mutex<BTreeSet<String>>,
}

impl std::fmt::Debug for MeteredBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeteredBus").finish_non_exhaustive()
    }
}

impl MeteredBus {
    pub fn new(inner: SharedBus, metrics: Metrics) -> Arc<Self> {
        Arc::new(Self {
            inner,
            metrics,
            groups: Mutex::new(BTreeSet::new()),
        })
    }

    fn groups(&self) -> Vec<String> {
        self.groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// Polls the queue depth of every group subscribed through this bus
    /// every `interval` until `token` is cancelled, into
    /// `telenet_bus_queue_ready_messages` and `telenet_bus_queue_dead_letters`.
    /// A failed poll keeps the last values and is logged once until polls
    /// succeed again (the broker being down already shows in readiness).
    pub async fn watch_queues(self: Arc<Self>, interval: Duration, token: CancellationToken) {
        let mut failing = false;
        loop {
            for group in self.groups() {
                match self.inner.queue_depth(&group).await {
                    Ok(depth) => {
                        self.metrics
                            .set_queue_depth(&group, depth.ready, depth.dead_letters);
                        failing = false;
                    }
                    Err(error) => {
                        if !failing {
                            tracing::warn!(%error, group, "cannot read the queue depth");
                        }
                        failing = true;
                    }
                }
            }
            tokio::select! {
                () = token.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }
}

#[async_trait]
impl EventBus for MeteredBus {
    async fn publish(&self, events: &[Event]) -> Result<(), BusError> {
        if events.is_empty() {
            return self.inner.publish(events).await;
        }
        let started = Instant::now();
        let published = self.inner.publish(events).await;
        self.metrics.observe_publish(
            events.iter().map(|e| e.routing_key.as_str()),
            published.is_ok(),
            started.elapsed(),
        );
        published
    }

    async fn subscribe(&self, spec: SubscribeSpec) -> Result<Subscription, BusError> {
        let group = spec.group.clone();
        let mut subscription = self.inner.subscribe(spec).await?;
        self.groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(group.clone());
        subscription.meter = Some(ConsumeMeter {
            metrics: self.metrics.clone(),
            group: Arc::from(group),
        });
        Ok(subscription)
    }

    async fn declare(&self, specs: &[SubscribeSpec]) -> Result<(), BusError> {
        self.inner.declare(specs).await?;
        self.groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(specs.iter().map(|s| s.group.clone()));
        Ok(())
    }

    async fn drain_dead_letters(
        &self,
        group: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BusError> {
        self.inner.drain_dead_letters(group, limit).await
    }

    fn known_groups(&self) -> Vec<String> {
        self.inner.known_groups()
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

/// Measures the deliveries of one subscription.
pub(crate) struct ConsumeMeter {
    metrics: Metrics,
    group: Arc<str>,
}

impl ConsumeMeter {
    /// `settle` of a delivery of `routing_key` handed out now, measured.
    pub(crate) fn wrap(&self, routing_key: &str, settle: Box<dyn Settle>) -> Box<dyn Settle> {
        Box::new(MeteredSettle {
            inner: settle,
            metrics: self.metrics.clone(),
            group: self.group.clone(),
            routing_key: routing_key.to_owned(),
            received: Instant::now(),
        })
    }
}

struct MeteredSettle {
    inner: Box<dyn Settle>,
    metrics: Metrics,
    group: Arc<str>,
    routing_key: String,
    received: Instant,
}

impl MeteredSettle {
    /// Records `outcome` and hands back what settling still needs.
    fn record(self, outcome: ConsumeOutcome) -> (Box<dyn Settle>, SettleErrors) {
        self.metrics.observe_consume(
            &self.group,
            &self.routing_key,
            outcome,
            self.received.elapsed(),
        );
        (
            self.inner,
            SettleErrors {
                metrics: self.metrics,
                group: self.group,
            },
        )
    }
}

/// Counts a settle that failed (the broker will deliver the event again).
struct SettleErrors {
    metrics: Metrics,
    group: Arc<str>,
}

impl SettleErrors {
    fn check(&self, result: Result<(), BusError>) -> Result<(), BusError> {
        if result.is_err() {
            self.metrics.count_settle_error(&self.group);
        }
        result
    }
}

#[async_trait]
impl Settle for MeteredSettle {
    async fn ack(self: Box<Self>) -> Result<(), BusError> {
        let (inner, errors) = self.record(ConsumeOutcome::Ack);
        errors.check(inner.ack().await)
    }

    async fn retry(self: Box<Self>, reason: &str) -> Result<(), BusError> {
        let (inner, errors) = self.record(ConsumeOutcome::Retry);
        errors.check(inner.retry(reason).await)
    }

    async fn dead_letter(self: Box<Self>, reason: &str) -> Result<(), BusError> {
        let (inner, errors) = self.record(ConsumeOutcome::Dead);
        errors.check(inner.dead_letter(reason).await)
    }

    fn requeue(self: Box<Self>) {
        let (inner, _) = self.record(ConsumeOutcome::Requeue);
        inner.requeue();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryBus;
    use crate::{Event, RetryPolicy};
    use telenet_kit::metrics::sample;

    #[tokio::test]
    async fn publishes_settles_and_queue_depth_are_recorded() {
        let metrics = Metrics::new();
        let retry = RetryPolicy {
            delays: vec![Duration::from_secs(60)],
        };
        let bus = MeteredBus::new(Arc::new(MemoryBus::new(retry)), metrics.clone());
        let mut sub = bus
            .subscribe(SubscribeSpec::new("g", &["a.#"]))
            .await
            .expect("subscribe");
        let events: Vec<Event> = (0..4).map(|i| Event::new("a.b", vec![i])).collect();
        bus.publish(&events).await.expect("publish");
        let mut refused = Event::new("a.refused", vec![]);
        refused
            .headers
            .insert("x-telenet-attempt".into(), "1".into());
        bus.publish(&[refused])
            .await
            .expect_err("a reserved header is refused");

        async fn next(sub: &mut Subscription) -> crate::Delivery {
            sub.next().await.expect("a delivery")
        }
        next(&mut sub).await.ack().await.expect("ack");
        next(&mut sub).await.retry("later").await.expect("retry");
        next(&mut sub)
            .await
            .dead_letter("never")
            .await
            .expect("dead");
        drop(next(&mut sub).await);
        // Without a subscriber the requeued delivery stays in the queue.
        drop(sub);

        let token = CancellationToken::new();
        let watcher = tokio::spawn(
            bus.clone()
                .watch_queues(Duration::from_millis(10), token.clone()),
        );
        let text = loop {
            let text = metrics.encode().expect("encode");
            if sample(&text, r#"telenet_bus_queue_dead_letters{group="g"}"#) == Some(1.0) {
                break text;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        token.cancel();
        watcher.await.expect("watcher ends");

        for (series, want) in [
            (
                r#"telenet_bus_published_events_total{routing_key="a.b",outcome="ok"}"#,
                4.0,
            ),
            (
                r#"telenet_bus_published_events_total{routing_key="a.refused",outcome="error"}"#,
                1.0,
            ),
            ("telenet_bus_publish_duration_seconds_count", 2.0),
            (
                r#"telenet_bus_consumed_events_total{group="g",routing_key="a.b",outcome="ack"}"#,
                1.0,
            ),
            (
                r#"telenet_bus_consumed_events_total{group="g",routing_key="a.b",outcome="retry"}"#,
                1.0,
            ),
            (
                r#"telenet_bus_consumed_events_total{group="g",routing_key="a.b",outcome="dead"}"#,
                1.0,
            ),
            (
                r#"telenet_bus_consumed_events_total{group="g",routing_key="a.b",outcome="requeue"}"#,
                1.0,
            ),
            (
                r#"telenet_bus_consume_duration_seconds_count{group="g",routing_key="a.b"}"#,
                4.0,
            ),
            // The dropped delivery is back in the queue; the retried one waits out its delay.
            (r#"telenet_bus_queue_ready_messages{group="g"}"#, 1.0),
        ] {
            assert_eq!(sample(&text, series), Some(want), "{series}\n{text}");
        }
    }
}
