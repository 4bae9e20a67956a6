//! The transactional outbox: a state change and the events describing it are
//! written in one transaction (`enqueue`), and a relay publishes committed
//! events to the bus and deletes them. Publishing is at least once; consumers
//! de-duplicate on the event id.

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::Row;
use telenet_bus::{Event, SharedBus};
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

/// Publishes committed outbox rows in order, in batches.
pub struct Relay {
    db: Db,
    bus: SharedBus,
    batch: i64,
    idle_poll: Duration,
}

impl Relay {
    pub fn new(db: Db, bus: SharedBus) -> Self {
        Self {
            db,
            bus,
            batch: 500,
            idle_poll: Duration::from_millis(500),
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
        loop {
            if token.is_cancelled() {
                break;
            }
            match self.relay_once().await {
                Ok(n) if n > 0 => {
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
        // Publish what is already committed before stopping.
        if let Err(e) = self.relay_once().await {
            tracing::debug!(error = %e, "outbox flush at shutdown failed");
        }
    }
}
