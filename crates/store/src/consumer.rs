//! The loop every event consumer runs: take a delivery, let the handler apply
//! it (the handler commits its own transaction, recording the event id with
//! `idempotency::mark_processed`), then acknowledge. Acknowledgement happens
//! only after the handler returned, i.e. after commit.

use std::future::Future;
use std::sync::Arc;

use telenet_bus::{BusError, Delivery, Event, SharedBus, SubscribeSpec, Subscription};
use tokio_util::sync::CancellationToken;

/// What went wrong while handling an event.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// Worth retrying later, with a growing delay through the bus's retry
    /// queues, and dead-lettered when those are used up (a lock timed out,
    /// an event arrived before the one it depends on).
    #[error("transient: {0}")]
    Transient(String),
    /// What the handler needs is down (the database shutting down, starting
    /// up, read-only after a failover, unreachable; another service not
    /// answering). Never dead-lettered: the delivery is held and handled
    /// again, with a growing pause, until it is back or the consumer stops
    /// (then the delivery returns to the queue).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Can never succeed (undecodable payload, unknown reference); goes to the dead-letter queue.
    #[error("permanent: {0}")]
    Permanent(String),
}

impl From<crate::StoreError> for HandleError {
    fn from(e: crate::StoreError) -> Self {
        if e.is_transient() {
            HandleError::Unavailable(e.to_string())
        } else {
            HandleError::Permanent(e.to_string())
        }
    }
}

/// One delivery as a handler sees it.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub event: Event,
    /// 1 for the first delivery, then 2, 3, … after retries.
    pub attempt: u32,
}

/// A consumer group's subscription, taken before its consumer runs:
/// subscribing declares the group's queue, which keeps every event from
/// that moment on however late the consumer starts. Consume it with
/// [`run_on`].
pub struct GroupSubscription {
    group: String,
    subscription: Subscription,
}

impl std::fmt::Debug for GroupSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupSubscription")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl GroupSubscription {
    /// The consumer group subscribed.
    pub fn group(&self) -> &str {
        &self.group
    }
}

/// Subscribe `spec` now, to be consumed later by [`run_on`]. Services do
/// this in `start`, before they accept requests, and hand the subscription
/// to the task that consumes it.
pub async fn subscribe(
    bus: &SharedBus,
    spec: SubscribeSpec,
) -> Result<GroupSubscription, BusError> {
    let group = spec.group.clone();
    let subscription = bus.subscribe(spec).await?;
    Ok(GroupSubscription {
        group,
        subscription,
    })
}

/// Consume `spec` until `token` is cancelled, with up to `concurrency`
/// deliveries handled at once.
pub async fn run<H, F>(
    bus: SharedBus,
    spec: SubscribeSpec,
    concurrency: usize,
    token: CancellationToken,
    handler: H,
) -> Result<(), BusError>
where
    H: Fn(Incoming) -> F + Send + Sync + 'static,
    F: Future<Output = Result<(), HandleError>> + Send + 'static,
{
    let subscription = subscribe(&bus, spec).await?;
    run_on(subscription, concurrency, token, handler).await;
    Ok(())
}

/// Subscribe now (so the group's queue exists and keeps every event from
/// this moment on), then consume in a spawned task until `token` is
/// cancelled. Services start their consumers this way before they accept
/// requests.
pub async fn spawn<H, F>(
    bus: SharedBus,
    spec: SubscribeSpec,
    concurrency: usize,
    token: CancellationToken,
    handler: H,
) -> Result<tokio::task::JoinHandle<()>, BusError>
where
    H: Fn(Incoming) -> F + Send + Sync + 'static,
    F: Future<Output = Result<(), HandleError>> + Send + 'static,
{
    let subscription = subscribe(&bus, spec).await?;
    Ok(tokio::spawn(run_on(
        subscription,
        concurrency,
        token,
        handler,
    )))
}

/// Consume a subscription taken with [`subscribe`] until `token` is
/// cancelled or the bus ends it, with up to `concurrency` deliveries
/// handled at once; deliveries being handled finish and are settled before
/// it returns.
pub async fn run_on<H, F>(
    subscription: GroupSubscription,
    concurrency: usize,
    token: CancellationToken,
    handler: H,
) where
    H: Fn(Incoming) -> F + Send + Sync + 'static,
    F: Future<Output = Result<(), HandleError>> + Send + 'static,
{
    let GroupSubscription {
        group,
        subscription: mut sub,
    } = subscription;
    let handler = Arc::new(handler);
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let tasks = tokio_util::task::TaskTracker::new();
    loop {
        let delivery = tokio::select! {
            _ = token.cancelled() => break,
            d = sub.next() => match d {
                Some(d) => d,
                None => break,
            },
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let handler = handler.clone();
        let group = group.clone();
        let token = token.clone();
        tasks.spawn(async move {
            settle(&group, delivery, &*handler, &token).await;
            drop(permit);
        });
    }
    // Stop taking new work, let in-flight handlers finish and settle.
    tasks.close();
    tasks.wait().await;
}

/// The pause before handling a delivery again while what it needs is
/// unavailable: 200 ms, doubling, at most 10 s.
fn unavailable_pause(tries: u32) -> std::time::Duration {
    let ms = 200u64.saturating_mul(1u64 << tries.min(6));
    std::time::Duration::from_millis(ms.min(10_000))
}

async fn settle<H, F>(group: &str, delivery: Delivery, handler: &H, token: &CancellationToken)
where
    H: Fn(Incoming) -> F,
    F: Future<Output = Result<(), HandleError>>,
{
    use tracing::Instrument as _;
    let event = delivery.event.clone();
    // Continue the producer's trace (W3C context in the event's headers).
    let span = tracing::info_span!("consume", group, key = %event.routing_key, event_id = %event.id, attempt = delivery.attempt);
    telenet_kit::telemetry::set_span_parent(&span, &event.headers);
    let mut tries = 0u32;
    let result = loop {
        let result = handler(Incoming {
            event: event.clone(),
            attempt: delivery.attempt,
        })
        .instrument(span.clone())
        .await;
        let Err(HandleError::Unavailable(reason)) = result else {
            break result;
        };
        // Hold the delivery until what it needs is back: dead-lettering it
        // would lose an event the platform was already told we have.
        let pause = unavailable_pause(tries);
        if tries == 0 || tries.is_power_of_two() {
            tracing::warn!(group, event_id = %event.id, key = %event.routing_key, tries, %reason, "dependency unavailable; the event will be handled again in {pause:?}");
        }
        tries = tries.saturating_add(1);
        tokio::select! {
            _ = token.cancelled() => {
                // Not handled: back to the queue for the next consumer.
                drop(delivery);
                return;
            }
            _ = tokio::time::sleep(pause) => {}
        }
    };
    let settled = match result {
        Ok(()) => delivery.ack().await,
        Err(HandleError::Transient(reason)) => {
            tracing::warn!(group, event_id = %event.id, key = %event.routing_key, attempt = delivery.attempt, %reason, "event will be retried");
            delivery.retry(&reason).await
        }
        Err(HandleError::Permanent(reason)) => {
            tracing::error!(group, event_id = %event.id, key = %event.routing_key, %reason, "event dead-lettered");
            delivery.dead_letter(&reason).await
        }
        Err(HandleError::Unavailable(_)) => unreachable!("handled above"),
    };
    if let Err(e) = settled {
        tracing::warn!(group, event_id = %event.id, error = %e, "could not settle delivery; it will be redelivered");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_pause_grows_and_is_capped() {
        assert_eq!(unavailable_pause(0).as_millis(), 200);
        assert_eq!(unavailable_pause(1).as_millis(), 400);
        assert_eq!(unavailable_pause(5).as_millis(), 6_400);
        assert_eq!(unavailable_pause(6).as_millis(), 10_000);
        assert_eq!(unavailable_pause(60).as_millis(), 10_000);
    }
}
