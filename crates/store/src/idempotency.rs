//! Consumer idempotency: a consumer records each event id it processed in the
//! same transaction as the state change, so a redelivered event is skipped.

use crate::{Db, StoreError, Tx, now_micros};

/// Record that `consumer` processed `event_id`. Returns `false` when it was
/// already processed: the caller must then roll back and just acknowledge.
pub async fn mark_processed(
    tx: &mut Tx<'_>,
    consumer: &str,
    event_id: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO processed_events (consumer, event_id, processed_at) VALUES ($1, $2, $3) \
         ON CONFLICT (consumer, event_id) DO NOTHING",
    )
    .bind(consumer)
    .bind(event_id)
    .bind(now_micros())
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Whether `consumer` processed `event_id` already: read outside any
/// transaction, so a consumer can skip work it finished before; the mark
/// itself is still written with the result ([`mark_processed`]).
pub async fn is_processed(db: &Db, consumer: &str, event_id: &str) -> Result<bool, StoreError> {
    let row = sqlx::query("SELECT 1 FROM processed_events WHERE consumer = $1 AND event_id = $2")
        .bind(consumer)
        .bind(event_id)
        .fetch_optional(db.pool())
        .await?;
    Ok(row.is_some())
}

/// The transaction in which `consumer` applies event `event_id`, the event
/// already marked processed in it; `None` (nothing written) when `consumer`
/// processed it before, so a redelivery changes nothing. Committing the
/// caller's change commits the mark with it.
pub async fn begin_once(
    db: &Db,
    consumer: &str,
    event_id: &str,
) -> Result<Option<Tx<'static>>, StoreError> {
    let mut tx = db.begin().await?;
    if !mark_processed(&mut tx, consumer, event_id).await? {
        tx.rollback().await?;
        return Ok(None);
    }
    Ok(Some(tx))
}
