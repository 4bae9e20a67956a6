//! The `deliveries` table: one row per outbound message, written only by
//! dispatch. A consumer takes a short lease on the row before it sends, so a
//! duplicated or concurrently redelivered `outbound.requested` never makes a
//! second POST while the first is in flight, and records each attempt's
//! result together with its `outbound.status` event in one transaction.

use sqlx::Row;
use telenet_proto::dispatch::v1 as pb;
use telenet_proto::events::v1::{
    OutboundRequested, OutboundStatusChanged, event_envelope::Payload,
};
use telenet_store::{Db, StoreError, events, idempotency, now_micros, outbox, sqlx, timestamp};

/// Consumer name for `processed_events`.
pub(crate) const CONSUMER: &str = "dispatch";

/// Where a delivery stands, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Pending,
    Sent,
    Failed,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Sent => "sent",
            State::Failed => "failed",
        }
    }

    fn proto(self) -> pb::DeliveryState {
        match self {
            State::Pending => pb::DeliveryState::Pending,
            State::Sent => pb::DeliveryState::Sent,
            State::Failed => pb::DeliveryState::Failed,
        }
    }

    pub(crate) fn is_final(self) -> bool {
        self != State::Pending
    }
}

fn proto_state(stored: &str) -> pb::DeliveryState {
    match stored {
        "pending" => pb::DeliveryState::Pending,
        "sent" => pb::DeliveryState::Sent,
        "failed" => pb::DeliveryState::Failed,
        _ => pb::DeliveryState::Unspecified,
    }
}

/// What `claim` found.
#[derive(Debug)]
pub(crate) enum Claim {
    /// This consumer may attempt the message; `attempts` were made before.
    Mine { attempts: u32, lease: String },
    /// The delivery is SENT or FAILED already: nothing to send.
    Settled,
    /// Another consumer holds the lease and is attempting it right now.
    Busy,
}

/// The outcome of one attempt, ready to be recorded.
#[derive(Debug)]
pub(crate) struct Attempted<'a> {
    pub workspace_id: &'a str,
    pub request: &'a OutboundRequested,
    pub lease: &'a str,
    pub attempts: u32,
    pub state: State,
    pub external_id: String,
    pub error: String,
    pub event_id: &'a str,
}

/// Create the delivery if it is new and take its lease when nobody holds a
/// live one. A settled delivery marks the event processed, so the caller can
/// simply acknowledge it.
pub(crate) async fn claim(
    db: &Db,
    workspace_id: &str,
    request: &OutboundRequested,
    event_id: &str,
    lease_micros: i64,
) -> Result<Claim, StoreError> {
    let now = now_micros();
    let lease = uuid::Uuid::new_v4().to_string();
    let mut tx = db.begin().await?;
    sqlx::query(
        "INSERT INTO deliveries \
         (workspace_id, message_id, conversation_id, channel_id, state, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $6) \
         ON CONFLICT (workspace_id, message_id) DO NOTHING",
    )
    .bind(workspace_id)
    .bind(&request.message_id)
    .bind(&request.conversation_id)
    .bind(&request.channel_id)
    .bind(State::Pending.as_str())
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let taken = sqlx::query(
        "UPDATE deliveries SET lease_owner = $3, lease_until = $4 \
         WHERE workspace_id = $1 AND message_id = $2 AND state = $5 AND lease_until <= $6",
    )
    .bind(workspace_id)
    .bind(&request.message_id)
    .bind(&lease)
    .bind(now.saturating_add(lease_micros))
    .bind(State::Pending.as_str())
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    let row = sqlx::query(
        "SELECT state, attempts FROM deliveries WHERE workspace_id = $1 AND message_id = $2",
    )
    .bind(workspace_id)
    .bind(&request.message_id)
    .fetch_one(&mut *tx)
    .await?;
    let state: String = row.try_get("state")?;
    let attempts: i64 = row.try_get("attempts")?;
    if taken {
        db.commit(tx).await?;
        return Ok(Claim::Mine {
            attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
            lease,
        });
    }
    if state != State::Pending.as_str() {
        idempotency::mark_processed(&mut tx, CONSUMER, event_id).await?;
        db.commit(tx).await?;
        return Ok(Claim::Settled);
    }
    tx.rollback().await?;
    Ok(Claim::Busy)
}

/// Store an attempt's result, release the lease and emit `outbound.status`,
/// all in one transaction; a final result also marks the event processed.
/// Returns `false` when the lease was lost meanwhile (it expired and another
/// consumer took the delivery over): that consumer's result stands.
pub(crate) async fn record(db: &Db, attempted: Attempted<'_>) -> Result<bool, StoreError> {
    let now = now_micros();
    let request = attempted.request;
    let mut tx = db.begin().await?;
    let updated = sqlx::query(
        "UPDATE deliveries SET state = $3, attempts = $4, external_id = $5, error = $6, \
         last_attempt_at = $7, updated_at = $7, lease_owner = '', lease_until = 0 \
         WHERE workspace_id = $1 AND message_id = $2 AND lease_owner = $8",
    )
    .bind(attempted.workspace_id)
    .bind(&request.message_id)
    .bind(attempted.state.as_str())
    .bind(i64::from(attempted.attempts))
    .bind(&attempted.external_id)
    .bind(&attempted.error)
    .bind(now)
    .bind(attempted.lease)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated == 0 {
        tx.rollback().await?;
        return Ok(false);
    }
    let env = events::envelope(
        attempted.workspace_id,
        Payload::OutboundStatusChanged(OutboundStatusChanged {
            message_id: request.message_id.clone(),
            channel_id: request.channel_id.clone(),
            state: attempted.state.proto() as i32,
            external_id: attempted.external_id,
            error: attempted.error,
            attempts: attempted.attempts,
        }),
        // The consumer's span: the status continues the send's trace.
        None,
    );
    outbox::enqueue(&mut tx, &[events::to_bus(&env)]).await?;
    if attempted.state.is_final() {
        idempotency::mark_processed(&mut tx, CONSUMER, attempted.event_id).await?;
    }
    db.commit(tx).await?;
    Ok(true)
}

const COLUMNS: &str =
    "workspace_id, message_id, channel_id, state, attempts, external_id, error, last_attempt_at";

/// One delivery of the workspace.
pub(crate) async fn get(
    db: &Db,
    workspace_id: &str,
    message_id: &str,
) -> Result<Option<pb::Delivery>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM deliveries WHERE workspace_id = $1 AND message_id = $2"
    ))
    .bind(workspace_id)
    .bind(message_id)
    .fetch_optional(db.pool())
    .await?;
    Ok(row.as_ref().map(delivery_of).transpose()?)
}

/// The workspace's FAILED deliveries, most recently failed first.
pub(crate) async fn dead_letters(
    db: &Db,
    workspace_id: &str,
    limit: i64,
) -> Result<Vec<pb::Delivery>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM deliveries WHERE workspace_id = $1 AND state = $2 \
         ORDER BY last_attempt_at DESC, message_id DESC LIMIT $3"
    ))
    .bind(workspace_id)
    .bind(State::Failed.as_str())
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    Ok(rows.iter().map(delivery_of).collect::<Result<_, _>>()?)
}

fn delivery_of(row: &sqlx::any::AnyRow) -> Result<pb::Delivery, sqlx::Error> {
    let state: String = row.try_get("state")?;
    let attempts: i64 = row.try_get("attempts")?;
    let last: Option<i64> = row.try_get("last_attempt_at")?;
    Ok(pb::Delivery {
        message_id: row.try_get("message_id")?,
        workspace_id: row.try_get("workspace_id")?,
        channel_id: row.try_get("channel_id")?,
        state: proto_state(&state) as i32,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        external_id: row.try_get("external_id")?,
        error: row.try_get("error")?,
        last_attempt_at: last.map(timestamp),
    })
}
