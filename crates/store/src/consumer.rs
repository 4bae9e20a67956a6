//! The loop every event consumer runs: take a delivery, let the handler apply
//! it (the handler commits its own transaction, recording the event id with
//! `idempotency::mark_processed`), then acknowledge. Acknowledgement happens
//! only after the handler returned, i.e. after commit.

use std::future::Future;
use std::sync::Arc;

use telenet_bus::{Delivery, Event, SharedBus, SubscribeSpec};
use tokio_util::sync::CancellationToken;

/// What went wrong while handling an event.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// Worth retrying later (a dependency is down, a lock timed out).
    #[error("transient: {0}")]
    Transient(String),
    /// Can never succeed (undecodable payload, unknown reference); goes to the dead-letter queue.
    #[error("permanent: {0}")]
    Permanent(String),
}

impl From<crate::StoreError> for HandleError {
    fn from(e: crate::StoreError) -> Self {
        if e.is_transient() {
            HandleError::Transient(e.to_string())
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

/// Consume `spec` until `token` is cancelled, with up to `concurrency`
/// deliveries handled at once.
pub async fn run<H, F>(
    bus: SharedBus,
    spec: SubscribeSpec,
    concurrency: usize,
    token: CancellationToken,
    handler: H,
) -> Result<(), telenet_bus::BusError>
where
    H: Fn(Incoming) -> F + Send + Sync + 'static,
    F: Future<Output = Result<(), HandleError>> + Send + 'static,
{
    let group = spec.group.clone();
    let sub = bus.subscribe(spec).await?;
    consume(group, sub, concurrency, token, handler).await;
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
) -> Result<tokio::task::JoinHandle<()>, telenet_bus::BusError>
where
    H: Fn(Incoming) -> F + Send + Sync + 'static,
    F: Future<Output = Result<(), HandleError>> + Send + 'static,
{
    let group = spec.group.clone();
    let sub = bus.subscribe(spec).await?;
    Ok(tokio::spawn(consume(
        group,
        sub,
        concurrency,
        token,
        handler,
    )))
}

async fn consume<H, F>(
    group: String,
    mut sub: telenet_bus::Subscription,
    concurrency: usize,
    token: CancellationToken,
    handler: H,
) where
    H: Fn(Incoming) -> F + Send + Sync + 'static,
    F: Future<Output = Result<(), HandleError>> + Send + 'static,
{
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
        tasks.spawn(async move {
            settle(&group, delivery, &*handler).await;
            drop(permit);
        });
    }
    // Stop taking new work, let in-flight handlers finish and settle.
    tasks.close();
    tasks.wait().await;
}

async fn settle<H, F>(group: &str, delivery: Delivery, handler: &H)
where
    H: Fn(Incoming) -> F,
    F: Future<Output = Result<(), HandleError>>,
{
    use tracing::Instrument as _;
    let event = delivery.event.clone();
    // Continue the producer's trace (W3C context in the event's headers).
    let span = tracing::info_span!("consume", group, key = %event.routing_key, event_id = %event.id, attempt = delivery.attempt);
    telenet_kit::telemetry::set_span_parent(&span, &event.headers);
    let result = handler(Incoming {
        event: event.clone(),
        attempt: delivery.attempt,
    })
    .instrument(span)
    .await;
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
    };
    if let Err(e) = settled {
        tracing::warn!(group, event_id = %event.id, error = %e, "could not settle delivery; it will be redelivered");
    }
}
