//! The transactional outbox: a state change and the events describing it are
//! written in one transaction (`enqueue`), and a relay publishes committed
//! events to the bus and deletes them. Publishing is at least once; consumers
//! de-duplicate on the event id. A row is deleted only once the broker
//! confirmed its event in some queue: a failed or unroutable publish
//! ([`BusError::Unroutable`]) keeps it for a later try.

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::Row;
use telenet_bus::{BusError, Event, SharedBus};
use telenet_kit::metrics::Metrics;
use tokio_util::sync::CancellationToken;

use crate::{Db, StoreError, Tx, now_micros};

/// Add events to the outbox inside the caller's transaction.
pub async fn enqueue(tx: &mut Tx<'_>, events: &[Event]) -> Result<(), StoreError> {
    for event in events {
        let headers = serde_json::to_string(&event.headers).unwrap_or_else(|_| "{}".into());
        sqlx::query(
            "INSERT INTO outbox (event_id, routing_key, payload, headers, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&event.id)
        .bind(&event.routing_key)
        .bind(event.payload.to_vec())
        .bind(headers)
        .bind(now_micros())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Number of events waiting to be published (for metrics and tests).
pub async fn backlog(db: &Db) -> Result<i64, StoreError> {
    let row = sqlx::query("SELECT COUNT(*) AS n FROM outbox")
        .fetch_one(db.pool())
        .await?;
    Ok(row.try_get::<i64, _>("n")?)
}

/// Events waiting in the outbox and the time the oldest was written
/// (microseconds since the epoch; `None` when the outbox is empty).
pub async fn backlog_and_oldest(db: &Db) -> Result<(i64, Option<i64>), StoreError> {
    let row = sqlx::query("SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM outbox")
        .fetch_one(db.pool())
        .await?;
    Ok((
        row.try_get::<i64, _>("n")?,
        row.try_get::<Option<i64>, _>("oldest")?,
    ))
}

/// How often the relay counts its backlog for metrics: often enough for
/// alerting, rarely enough to cost nothing.
const MEASURE_EVERY: Duration = Duration::from_secs(5);

/// Publishes committed outbox rows in order, in batches.
pub struct Relay {
    db: Db,
    bus: SharedBus,
    batch: i64,
    idle_poll: Duration,
    metrics: Option<(Metrics, String)>,
}

impl Relay {
    pub fn new(db: Db, bus: SharedBus) -> Self {
        Self {
            db,
            bus,
            batch: 500,
            idle_poll: Duration::from_millis(500),
            metrics: None,
        }
    }

    /// Reports the events relayed and, every few seconds, the backlog into
    /// `metrics`, labelled `db` (the owning service's name).
    pub fn with_metrics(mut self, metrics: Metrics, db: impl Into<String>) -> Self {
        self.metrics = Some((metrics, db.into()));
        self
    }

    /// Counts the backlog into the metrics, if any. A failed count is only
    /// logged: the relay's own failures already say the database is down.
    async fn measure(&self) {
        let Some((metrics, db)) = &self.metrics else {
            return;
        };
        match backlog_and_oldest(&self.db).await {
            Ok((backlog, oldest)) => {
                let age = oldest.map_or(Duration::ZERO, |at| {
                    Duration::from_micros(u64::try_from(now_micros() - at).unwrap_or(0))
                });
                metrics.set_outbox_backlog(db, u64::try_from(backlog).unwrap_or(0), age);
            }
            Err(e) => tracing::debug!(error = %e, "counting the outbox backlog failed"),
        }
    }

    /// Publish one batch; returns how many events went out.
    pub async fn relay_once(&self) -> Result<usize, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, event_id, routing_key, payload, headers FROM outbox ORDER BY seq LIMIT $1",
        )
        .bind(self.batch)
        .fetch_all(self.db.pool())
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut seqs = Vec::with_capacity(rows.len());
        let mut events = Vec::with_capacity(rows.len());
        for row in rows {
            seqs.push(row.try_get::<i64, _>("seq")?);
            let headers: String = row.try_get("headers")?;
            events.push(Event {
                id: row.try_get("event_id")?,
                routing_key: row.try_get("routing_key")?,
                payload: row.try_get::<Vec<u8>, _>("payload")?.into(),
                headers: serde_json::from_str::<BTreeMap<String, String>>(&headers)
                    .unwrap_or_default(),
            });
        }
        self.bus.publish(&events).await?;
        // Delete exactly the rows published: a lower sequence number may still
        // be uncommitted in another transaction, so no range delete.
        let list = seqs
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        sqlx::query(&format!("DELETE FROM outbox WHERE seq IN ({list})"))
            .execute(self.db.pool())
            .await?;
        Ok(events.len())
    }

    /// Run until cancelled: publish whenever a commit wakes the relay, and
    /// poll now and then for rows committed by other processes. On broker
    /// trouble it backs off and keeps the rows.
    pub async fn run(self, token: CancellationToken) {
        let wakeup = self.db.outbox_wakeup();
        let mut backoff = Duration::from_millis(100);
        let mut measured: Option<std::time::Instant> = None;
        loop {
            if token.is_cancelled() {
                break;
            }
            if measured.is_none_or(|at| at.elapsed() >= MEASURE_EVERY) {
                self.measure().await;
                measured = Some(std::time::Instant::now());
            }
            match self.relay_once().await {
                Ok(n) if n > 0 => {
                    if let Some((metrics, db)) = &self.metrics {
                        metrics.count_outbox_relayed(db, n as u64);
                    }
                    backoff = Duration::from_millis(100);
                    continue;
                }
                Ok(_) => {
                    tokio::select! {
                        _ = token.cancelled() => break,
                        _ = wakeup.notified() => {}
                        _ = tokio::time::sleep(self.idle_poll) => {}
                    }
                }
                Err(StoreError::Bus(e @ BusError::Unroutable { .. })) => {
                    // Nothing binds the event: deleting the row would lose
                    // it. Kept (with the rows after it) until the topology
                    // is declared.
                    tracing::error!(error = %e, "outbox relay: an event would reach no queue; kept, retrying");
                    tokio::select! {
                        _ = token.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "outbox relay failed; retrying");
                    tokio::select! {
                        _ = token.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        // Publish what is already committed before stopping: the relay stops
        // after every consumer and handler has, so this is the last of it.
        self.flush().await;
    }

    /// Relays batches until the outbox is empty, the bus fails, or a bound
    /// is reached (a shutdown must end; what is left stays committed and is
    /// published by the next start).
    async fn flush(&self) {
        const MAX_BATCHES: usize = 100;
        for _ in 0..MAX_BATCHES {
            match self.relay_once().await {
                Ok(0) => return,
                Ok(n) => {
                    if let Some((metrics, db)) = &self.metrics {
                        metrics.count_outbox_relayed(db, n as u64);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "outbox flush at shutdown failed; the rest is published on the next start");
                    return;
                }
            }
        }
    }
}
