//! The `deliveries` table: one row per outbound message, written only by
//! dispatch. A consumer takes a short lease on the row before it sends, so a
//! duplicated or concurrently redelivered `outbound.requested` never makes a
//! second POST while the first is in flight, and records each attempt's
//! result together with its `outbound.status` event in one transaction.
//! Deliveries still pending past their deadline are failed by [`expire`],
//! with the same event, whichever replica gets there first.
//!
//! An attempt is counted when its lease is taken, before anything is sent:
//! an attempt whose process died before recording it (perhaps after the
//! channel took the message) still counts, so the channel never gets a
//! message more often than the attempts say, and no more than
//! `max_attempts` times however often the process dies.

use telenet_proto::dispatch::v1 as pb;
use telenet_proto::events::v1::{
    OutboundRequested, OutboundStatusChanged, event_envelope::Payload,
};
use telenet_store::sqlx::{self, Row, any::AnyRow};
use telenet_store::{Db, StoreError, events, idempotency, now_micros, outbox, timestamp};

use crate::domain::State;

/// Consumer name for `processed_events`.
pub(crate) const CONSUMER: &str = "dispatch";

/// A state as stored.
fn state_text(state: State) -> &'static str {
    match state {
        State::Pending => "pending",
        State::Sent => "sent",
        State::Failed => "failed",
    }
}

/// A stored state as the API shows it.
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
    /// This consumer makes attempt number `attempt` (counted already); the
    /// message was requested at `requested_at` (µs, as first recorded).
    Mine {
        attempt: u32,
        lease: String,
        requested_at: i64,
    },
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

/// Create the delivery if it is new (requested at `requested_at`, µs) and
/// take its lease when nobody holds a live one, counting the attempt about
/// to be made. A settled delivery marks the event processed, so the caller
/// can simply acknowledge it.
pub(crate) async fn claim(
    db: &Db,
    workspace_id: &str,
    request: &OutboundRequested,
    event_id: &str,
    lease_micros: i64,
    requested_at: i64,
) -> Result<Claim, StoreError> {
    let now = now_micros();
    let lease = uuid::Uuid::new_v4().to_string();
    let mut tx = db.begin().await?;
    sqlx::query(
        "INSERT INTO deliveries \
         (workspace_id, message_id, conversation_id, channel_id, state, created_at, updated_at, \
          requested_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $6, $7) \
         ON CONFLICT (workspace_id, message_id) DO NOTHING",
    )
    .bind(workspace_id)
    .bind(&request.message_id)
    .bind(&request.conversation_id)
    .bind(&request.channel_id)
    .bind(state_text(State::Pending))
    .bind(now)
    .bind(requested_at)
    .execute(&mut *tx)
    .await?;
    let taken = sqlx::query(
        "UPDATE deliveries SET lease_owner = $3, lease_until = $4, attempts = attempts + 1 \
         WHERE workspace_id = $1 AND message_id = $2 AND state = $5 AND lease_until <= $6",
    )
    .bind(workspace_id)
    .bind(&request.message_id)
    .bind(&lease)
    .bind(now.saturating_add(lease_micros))
    .bind(state_text(State::Pending))
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    let row = sqlx::query(
        "SELECT state, attempts, requested_at FROM deliveries \
         WHERE workspace_id = $1 AND message_id = $2",
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
            attempt: u32::try_from(attempts).unwrap_or(u32::MAX),
            lease,
            requested_at: row.try_get("requested_at")?,
        });
    }
    if state != state_text(State::Pending) {
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
    .bind(state_text(attempted.state))
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

/// Give back the lease of a claimed delivery without an attempt (a
/// sending limit asked it to wait): the attempt counted by [`claim`] is
/// uncounted and nothing else changes, so no event is emitted. Returns
/// `false` when the lease was lost meanwhile.
pub(crate) async fn release(
    db: &Db,
    workspace_id: &str,
    message_id: &str,
    lease: &str,
) -> Result<bool, StoreError> {
    let released = sqlx::query(
        "UPDATE deliveries SET attempts = attempts - 1, lease_owner = '', lease_until = 0 \
         WHERE workspace_id = $1 AND message_id = $2 AND lease_owner = $3 AND attempts > 0",
    )
    .bind(workspace_id)
    .bind(message_id)
    .bind(lease)
    .execute(db.pool())
    .await?
    .rows_affected();
    Ok(released == 1)
}

/// Fail, with `reason`, up to `limit` deliveries still pending that were
/// requested before `requested_before` (µs) and that no consumer is
/// attempting right now (a live lease finishes first; its result stands or
/// the next sweep finds it). Each is failed with its `outbound.status`
/// event in one transaction, by a conditional update, so several replicas
/// sweeping at once fail each delivery once. Returns how many were failed.
pub(crate) async fn expire(
    db: &Db,
    requested_before: i64,
    reason: &str,
    limit: i64,
) -> Result<usize, StoreError> {
    let now = now_micros();
    let overdue = sqlx::query(
        "SELECT workspace_id, message_id FROM deliveries \
         WHERE state = $1 AND requested_at < $2 AND lease_until <= $3 \
         ORDER BY requested_at LIMIT $4",
    )
    .bind(state_text(State::Pending))
    .bind(requested_before)
    .bind(now)
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    let mut expired = 0;
    for row in &overdue {
        let workspace_id: String = row.try_get("workspace_id")?;
        let message_id: String = row.try_get("message_id")?;
        let mut tx = db.begin().await?;
        let updated = sqlx::query(
            "UPDATE deliveries SET state = $3, error = $4, updated_at = $5 \
             WHERE workspace_id = $1 AND message_id = $2 AND state = $6 \
             AND requested_at < $7 AND lease_until <= $5",
        )
        .bind(&workspace_id)
        .bind(&message_id)
        .bind(state_text(State::Failed))
        .bind(reason)
        .bind(now)
        .bind(state_text(State::Pending))
        .bind(requested_before)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            // Settled, or taken by a consumer, since it was read.
            tx.rollback().await?;
            continue;
        }
        let row = sqlx::query(
            "SELECT channel_id, attempts FROM deliveries \
             WHERE workspace_id = $1 AND message_id = $2",
        )
        .bind(&workspace_id)
        .bind(&message_id)
        .fetch_one(&mut *tx)
        .await?;
        let attempts: i64 = row.try_get("attempts")?;
        let env = events::envelope(
            &workspace_id,
            Payload::OutboundStatusChanged(OutboundStatusChanged {
                message_id,
                channel_id: row.try_get("channel_id")?,
                state: State::Failed.proto() as i32,
                external_id: String::new(),
                error: reason.to_owned(),
                attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
            }),
            None,
        );
        outbox::enqueue(&mut tx, &[events::to_bus(&env)]).await?;
        db.commit(tx).await?;
        expired += 1;
    }
    Ok(expired)
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
    .bind(state_text(State::Failed))
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    Ok(rows.iter().map(delivery_of).collect::<Result<_, _>>()?)
}

fn delivery_of(row: &AnyRow) -> Result<pb::Delivery, sqlx::Error> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MIGRATIONS;
    use telenet_store::testing::{Backend, TestDb};

    telenet_store::on_both_backends!(
        one_consumer_at_a_time_attempts_a_delivery,
        an_attempt_that_never_reported_back_still_counts,
        results_are_recorded_with_their_status_event,
        deliveries_are_scoped_by_workspace,
        overdue_deliveries_fail_once_with_their_status_event,
        sweepers_racing_fail_each_delivery_once,
        a_released_claim_uncounts_its_attempt_and_announces_nothing,
    );

    /// Long enough never to expire within a test.
    const LEASE: i64 = 60_000_000;

    async fn fixture(backend: Backend) -> TestDb {
        backend.database("dispatch", &MIGRATIONS).await
    }

    fn request(message_id: &str) -> OutboundRequested {
        OutboundRequested {
            message_id: message_id.into(),
            conversation_id: "conv-1".into(),
            channel_id: "ch-1".into(),
            recipient_external_id: "+4915550001".into(),
            text: "hello".into(),
            attachments: Vec::new(),
            ..Default::default()
        }
    }

    async fn mine(db: &Db, ws: &str, request: &OutboundRequested, event: &str) -> (u32, String) {
        match claim(db, ws, request, event, LEASE, now_micros())
            .await
            .expect("claim")
        {
            Claim::Mine { attempt, lease, .. } => (attempt, lease),
            other => panic!("not claimed: {other:?}"),
        }
    }

    fn attempted<'a>(
        request: &'a OutboundRequested,
        lease: &'a str,
        attempts: u32,
        state: State,
    ) -> Attempted<'a> {
        Attempted {
            workspace_id: "ws1",
            request,
            lease,
            attempts,
            state,
            external_id: if state == State::Sent {
                "ext-1".into()
            } else {
                String::new()
            },
            error: if state == State::Sent {
                String::new()
            } else {
                "http 503".into()
            },
            event_id: "ev-1",
        }
    }

    async fn one_consumer_at_a_time_attempts_a_delivery(backend: Backend) {
        let f = fixture(backend).await;
        let m = request("m-1");
        let (attempt, lease) = mine(&f.db, "ws1", &m, "ev-1").await;
        assert_eq!(attempt, 1);
        // A duplicate arriving meanwhile finds the lease taken.
        assert!(matches!(
            claim(&f.db, "ws1", &m, "ev-1", LEASE, now_micros())
                .await
                .expect("claim"),
            Claim::Busy
        ));
        assert!(
            record(&f.db, attempted(&m, &lease, 1, State::Pending))
                .await
                .expect("record")
        );
        // Released: the next attempt knows how many were made.
        let (attempt, lease) = mine(&f.db, "ws1", &m, "ev-1").await;
        assert_eq!(attempt, 2);
        // A lease that expired and was taken over no longer records.
        assert!(
            !record(&f.db, attempted(&m, "someone else's", 2, State::Sent))
                .await
                .expect("record")
        );
        assert!(
            record(&f.db, attempted(&m, &lease, 2, State::Sent))
                .await
                .expect("record")
        );
        // Settled: nothing more to attempt, under any event.
        for event in ["ev-1", "ev-2"] {
            assert!(matches!(
                claim(&f.db, "ws1", &m, event, LEASE, now_micros())
                    .await
                    .expect("claim"),
                Claim::Settled
            ));
        }
        // An expired lease is taken over.
        let n = request("m-2");
        let _ = claim(&f.db, "ws1", &n, "ev-3", -1, now_micros())
            .await
            .expect("claim");
        assert!(matches!(
            claim(&f.db, "ws1", &n, "ev-3", LEASE, now_micros())
                .await
                .expect("claim"),
            Claim::Mine { attempt: 2, .. }
        ));
        f.db.close().await;
    }

    /// The process making attempt 1 died after the channel took the
    /// message and before recording it; its lease ran out and the
    /// redelivered request is attempted again. That second POST is attempt
    /// 2, not a second attempt 1: the receiver never gets a message more
    /// often than the recorded attempts say.
    async fn an_attempt_that_never_reported_back_still_counts(backend: Backend) {
        let f = fixture(backend).await;
        let m = request("m-1");
        let expired_at_once = -1;
        let Claim::Mine { attempt, .. } =
            claim(&f.db, "ws1", &m, "ev-1", expired_at_once, now_micros())
                .await
                .expect("claim")
        else {
            panic!("the first claim is mine");
        };
        assert_eq!(attempt, 1);
        let (attempt, lease) = mine(&f.db, "ws1", &m, "ev-1").await;
        assert_eq!(attempt, 2, "the unrecorded attempt counts");
        assert!(
            record(&f.db, attempted(&m, &lease, attempt, State::Sent))
                .await
                .expect("record")
        );
        let sent = get(&f.db, "ws1", "m-1").await.expect("get").expect("found");
        assert_eq!((sent.state(), sent.attempts), (pb::DeliveryState::Sent, 2));
        f.db.close().await;
    }

    async fn results_are_recorded_with_their_status_event(backend: Backend) {
        let f = fixture(backend).await;
        let m = request("m-1");
        let (_, lease) = mine(&f.db, "ws1", &m, "ev-1").await;
        assert_eq!(outbox::backlog(&f.db).await.expect("backlog"), 0);
        record(&f.db, attempted(&m, &lease, 1, State::Pending))
            .await
            .expect("record");
        assert_eq!(outbox::backlog(&f.db).await.expect("backlog"), 1);
        let pending = get(&f.db, "ws1", "m-1").await.expect("get").expect("found");
        assert_eq!(pending.state(), pb::DeliveryState::Pending);
        assert_eq!((pending.attempts, pending.error.as_str()), (1, "http 503"));
        assert!(pending.last_attempt_at.is_some());

        let (_, lease) = mine(&f.db, "ws1", &m, "ev-1").await;
        record(&f.db, attempted(&m, &lease, 2, State::Failed))
            .await
            .expect("record");
        assert_eq!(outbox::backlog(&f.db).await.expect("backlog"), 2);
        let failed = get(&f.db, "ws1", "m-1").await.expect("get").expect("found");
        assert_eq!(
            (failed.state(), failed.attempts),
            (pb::DeliveryState::Failed, 2)
        );
        let dead = dead_letters(&f.db, "ws1", 10).await.expect("dead letters");
        assert_eq!(dead, vec![failed]);
        f.db.close().await;
    }

    async fn deliveries_are_scoped_by_workspace(backend: Backend) {
        let f = fixture(backend).await;
        let m = request("m-same");
        for ws in ["wsA", "wsB"] {
            let (attempt, _) = mine(&f.db, ws, &m, &format!("ev-{ws}")).await;
            assert_eq!(attempt, 1, "{ws}: a delivery of its own");
        }
        assert!(get(&f.db, "wsA", "m-same").await.expect("get").is_some());
        assert!(get(&f.db, "wsC", "m-same").await.expect("get").is_none());
        assert!(
            dead_letters(&f.db, "wsC", 10)
                .await
                .expect("dead")
                .is_empty()
        );
        f.db.close().await;
    }

    const MINUTE: i64 = 60_000_000;

    /// A pending delivery of `message_id` requested `age` µs ago, with no
    /// live lease (one attempt made and released).
    async fn pending_since(db: &Db, ws: &str, message_id: &str, age: i64) {
        let m = request(message_id);
        let Claim::Mine { lease, .. } = claim(db, ws, &m, "ev", LEASE, now_micros() - age)
            .await
            .expect("claim")
        else {
            panic!("{message_id}: not claimed");
        };
        let mut attempt = attempted(&m, &lease, 1, State::Pending);
        attempt.workspace_id = ws;
        assert!(record(db, attempt).await.expect("record"));
    }

    async fn overdue_deliveries_fail_once_with_their_status_event(backend: Backend) {
        let f = fixture(backend).await;
        let reason = "not delivered within 15 minutes";
        pending_since(&f.db, "ws1", "m-old", 20 * MINUTE).await;
        pending_since(&f.db, "ws2", "m-old-too", 16 * MINUTE).await;
        pending_since(&f.db, "ws1", "m-in-time", 2 * MINUTE).await;
        // Sent in time, long ago: untouched.
        let sent = request("m-sent");
        let Claim::Mine { lease, .. } =
            claim(&f.db, "ws1", &sent, "ev", LEASE, now_micros() - 60 * MINUTE)
                .await
                .expect("claim")
        else {
            panic!("not claimed");
        };
        record(&f.db, attempted(&sent, &lease, 1, State::Sent))
            .await
            .expect("record");
        // Being attempted right now: its attempt finishes first.
        let busy = request("m-busy");
        let Claim::Mine {
            lease: busy_lease, ..
        } = claim(&f.db, "ws1", &busy, "ev", LEASE, now_micros() - 30 * MINUTE)
            .await
            .expect("claim")
        else {
            panic!("not claimed");
        };
        let backlog = outbox::backlog(&f.db).await.expect("backlog");

        let cutoff = now_micros() - 15 * MINUTE;
        assert_eq!(expire(&f.db, cutoff, reason, 100).await.expect("expire"), 2);
        assert_eq!(
            outbox::backlog(&f.db).await.expect("backlog"),
            backlog + 2,
            "one status event per failed delivery"
        );
        for (ws, id) in [("ws1", "m-old"), ("ws2", "m-old-too")] {
            let d = get(&f.db, ws, id).await.expect("get").expect("found");
            assert_eq!(
                (d.state(), d.error.as_str(), d.attempts),
                (pb::DeliveryState::Failed, reason, 1),
                "{id}"
            );
        }
        let in_time = get(&f.db, "ws1", "m-in-time")
            .await
            .expect("get")
            .expect("found");
        assert_eq!(in_time.state(), pb::DeliveryState::Pending);
        let d = get(&f.db, "ws1", "m-sent")
            .await
            .expect("get")
            .expect("found");
        assert_eq!(d.state(), pb::DeliveryState::Sent);
        let d = get(&f.db, "ws1", "m-busy")
            .await
            .expect("get")
            .expect("found");
        assert_eq!(d.state(), pb::DeliveryState::Pending);

        // Again: nothing more to fail, nothing more announced.
        assert_eq!(expire(&f.db, cutoff, reason, 100).await.expect("expire"), 0);
        assert_eq!(outbox::backlog(&f.db).await.expect("backlog"), backlog + 2);
        // A failed delivery is never attempted again.
        assert!(matches!(
            claim(
                &f.db,
                "ws1",
                &request("m-old"),
                "ev-late",
                LEASE,
                now_micros()
            )
            .await
            .expect("claim"),
            Claim::Settled
        ));
        // The busy attempt records its result; had it stayed pending, the
        // next sweep fails it.
        assert!(
            record(&f.db, attempted(&busy, &busy_lease, 1, State::Pending))
                .await
                .expect("record")
        );
        assert_eq!(expire(&f.db, cutoff, reason, 100).await.expect("expire"), 1);
        let d = get(&f.db, "ws1", "m-busy")
            .await
            .expect("get")
            .expect("found");
        assert_eq!(d.state(), pb::DeliveryState::Failed);

        // The event is the one a failed attempt emits.
        let rows = sqlx::query("SELECT routing_key FROM outbox")
            .fetch_all(f.db.pool())
            .await
            .expect("outbox");
        let keys: Vec<String> = rows
            .iter()
            .map(|r| r.try_get("routing_key").expect("key"))
            .collect();
        assert!(keys.iter().all(|k| k == "outbound.status"), "{keys:?}");
        f.db.close().await;
    }

    async fn sweepers_racing_fail_each_delivery_once(backend: Backend) {
        let f = fixture(backend).await;
        for i in 0..20 {
            pending_since(&f.db, "ws1", &format!("m-{i}"), 20 * MINUTE).await;
        }
        let backlog = outbox::backlog(&f.db).await.expect("backlog");
        let cutoff = now_micros() - 15 * MINUTE;
        let sweep = || async {
            let mut total = 0;
            loop {
                match expire(&f.db, cutoff, "late", 3).await {
                    Ok(0) => return Ok::<_, StoreError>(total),
                    Ok(n) => total += n,
                    // SQLite: a concurrent writer may find the file busy.
                    Err(e) if e.is_transient() => continue,
                    Err(e) => return Err(e),
                }
            }
        };
        let (a, b, c) = tokio::join!(sweep(), sweep(), sweep());
        let total = a.expect("sweep") + b.expect("sweep") + c.expect("sweep");
        assert_eq!(total, 20, "each delivery failed once");
        assert_eq!(outbox::backlog(&f.db).await.expect("backlog"), backlog + 20);
        f.db.close().await;
    }

    async fn a_released_claim_uncounts_its_attempt_and_announces_nothing(backend: Backend) {
        let f = fixture(backend).await;
        let m = request("m-1");
        let (attempt, lease) = mine(&f.db, "ws1", &m, "ev-1").await;
        assert_eq!(attempt, 1);
        // Only the holder of the lease releases it.
        assert!(
            !release(&f.db, "ws1", "m-1", "someone else's")
                .await
                .expect("release")
        );
        assert!(release(&f.db, "ws1", "m-1", &lease).await.expect("release"));
        assert!(
            !release(&f.db, "ws1", "m-1", &lease).await.expect("release"),
            "released once"
        );
        assert_eq!(outbox::backlog(&f.db).await.expect("backlog"), 0);
        let d = get(&f.db, "ws1", "m-1").await.expect("get").expect("found");
        assert_eq!((d.state(), d.attempts), (pb::DeliveryState::Pending, 0));
        // Free at once for the next claim, which is attempt 1 again.
        let (attempt, _) = mine(&f.db, "ws1", &m, "ev-1").await;
        assert_eq!(attempt, 1);
        f.db.close().await;
    }
}
