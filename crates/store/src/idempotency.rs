//! Consumer idempotency: a consumer records each event id it processed in the
//! same transaction as the state change, so a redelivered event is skipped.

use crate::{StoreError, Tx, now_micros};

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
