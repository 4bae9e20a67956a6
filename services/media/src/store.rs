//! The media service's SQL, and the only place that speaks it: which
//! workspace recorded which blob (`blobs`), kept probe answers (`probes`),
//! and variants and their parts (`variants`, `variant_parts`); inbound
//! attachments already announced are marked with the store crate's
//! `idempotency`. Events are put in the outbox in the transaction that
//! records what they announce.

use prost::Message;
use telenet_bus::Event;
use telenet_proto::events::v1::event_envelope::Payload;
use telenet_proto::media::v1 as pb;
use telenet_store::sqlx::{self, Row};
use telenet_store::{Db, StoreError, Tx, events, idempotency, outbox};

use crate::Error;

/// States of a variant as stored.
pub(crate) const PENDING: &str = "pending";
pub(crate) const READY: &str = "ready";
pub(crate) const FAILED: &str = "failed";

/// Record that `workspace_id` uploaded blob `blob_id`. A workspace storing
/// the same bytes again keeps its first record (and MIME type).
pub(crate) async fn insert_blob(
    db: &Db,
    workspace_id: &str,
    blob_id: &str,
    size_bytes: i64,
    mime_type: &str,
    created_at: i64,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO blobs (workspace_id, blob_id, size_bytes, mime_type, created_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (workspace_id, blob_id) DO NOTHING",
    )
    .bind(workspace_id)
    .bind(blob_id)
    .bind(size_bytes)
    .bind(mime_type)
    .bind(created_at)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// The workspace's record of a blob, and when it was first uploaded (µs).
pub(crate) async fn find_blob(
    db: &Db,
    workspace_id: &str,
    blob_id: &str,
) -> Result<Option<(pb::Blob, i64)>, Error> {
    let row = sqlx::query(
        "SELECT workspace_id, blob_id, size_bytes, mime_type, created_at FROM blobs \
         WHERE workspace_id = $1 AND blob_id = $2",
    )
    .bind(workspace_id)
    .bind(blob_id)
    .fetch_optional(db.pool())
    .await?;
    row.map(|r| -> Result<(pb::Blob, i64), Error> {
        let size: i64 = r.try_get("size_bytes")?;
        let blob = pb::Blob {
            id: r.try_get("blob_id")?,
            workspace_id: r.try_get("workspace_id")?,
            // Only ever written from a u64, so never negative.
            size_bytes: u64::try_from(size).unwrap_or_default(),
            mime_type: r.try_get("mime_type")?,
        };
        Ok((blob, r.try_get("created_at")?))
    })
    .transpose()
}

/// The kept probe answer for these bytes and this many peaks, if any. One
/// that no longer decodes (written by another version) is ignored.
pub(crate) async fn cached_probe(
    db: &Db,
    blob_id: &str,
    peaks: usize,
) -> Result<Option<pb::ProbeResult>, Error> {
    let row = sqlx::query("SELECT result FROM probes WHERE blob_id = $1 AND peaks = $2")
        .bind(blob_id)
        .bind(i64::try_from(peaks).unwrap_or(i64::MAX))
        .fetch_optional(db.pool())
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let bytes: Vec<u8> = row.try_get("result")?;
    Ok(pb::ProbeResult::decode(&bytes[..]).ok())
}

/// Keep a probe answer; a concurrent probe of the same bytes keeps the same
/// answer, so the first one written stays.
pub(crate) async fn keep_probe(
    db: &Db,
    result: &pb::ProbeResult,
    peaks: usize,
    probed_at: i64,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO probes (blob_id, peaks, result, probed_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (blob_id, peaks) DO NOTHING",
    )
    .bind(&result.blob_id)
    .bind(i64::try_from(peaks).unwrap_or(i64::MAX))
    .bind(result.encode_to_vec())
    .bind(probed_at)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// A variant: (source blob id, profile name).
pub(crate) type VariantKey = (String, &'static str);

/// A `variants` row with its parts (parts only when READY).
#[derive(Debug, Clone)]
pub(crate) struct VariantRow {
    pub state: String,
    pub remuxed: bool,
    pub error: String,
    pub permanent: bool,
    pub created_at: i64,
    pub finished_at: i64,
    pub parts: Vec<pb::VariantPart>,
}

pub(crate) async fn load_variant(db: &Db, key: &VariantKey) -> Result<Option<VariantRow>, Error> {
    let row = sqlx::query(
        "SELECT state, remuxed, error, permanent, created_at, finished_at FROM variants \
         WHERE source_blob_id = $1 AND profile = $2",
    )
    .bind(&key.0)
    .bind(key.1)
    .fetch_optional(db.pool())
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let state: String = row.try_get("state")?;
    let parts = if state == READY {
        variant_parts(db, key).await?
    } else {
        Vec::new()
    };
    Ok(Some(VariantRow {
        state,
        remuxed: row.try_get::<i64, _>("remuxed")? != 0,
        error: row.try_get("error")?,
        permanent: row.try_get::<i64, _>("permanent")? != 0,
        created_at: row.try_get("created_at")?,
        finished_at: row.try_get("finished_at")?,
        parts,
    }))
}

async fn variant_parts(db: &Db, key: &VariantKey) -> Result<Vec<pb::VariantPart>, Error> {
    sqlx::query(
        "SELECT part_index, blob_id, mime_type, size_bytes, duration_ms FROM variant_parts \
         WHERE source_blob_id = $1 AND profile = $2 ORDER BY part_index",
    )
    .bind(&key.0)
    .bind(key.1)
    .fetch_all(db.pool())
    .await?
    .iter()
    .map(|r| -> Result<pb::VariantPart, Error> {
        Ok(pb::VariantPart {
            index: u32::try_from(r.try_get::<i64, _>("part_index")?).unwrap_or_default(),
            blob_id: r.try_get("blob_id")?,
            mime_type: r.try_get("mime_type")?,
            size_bytes: u64::try_from(r.try_get::<i64, _>("size_bytes")?).unwrap_or_default(),
            duration_ms: u64::try_from(r.try_get::<i64, _>("duration_ms")?).unwrap_or_default(),
        })
    })
    .collect()
}

/// The profile names of a source's variants, in name order.
pub(crate) async fn variant_profiles(db: &Db, source_blob_id: &str) -> Result<Vec<String>, Error> {
    sqlx::query("SELECT profile FROM variants WHERE source_blob_id = $1 ORDER BY profile")
        .bind(source_blob_id)
        .fetch_all(db.pool())
        .await?
        .iter()
        .map(|r| r.try_get::<String, _>("profile").map_err(Error::from))
        .collect()
}

/// A PENDING row for the key (kept if one exists; a retryable failure goes
/// back to PENDING).
pub(crate) async fn ensure_pending(db: &Db, key: &VariantKey, now: i64) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO variants (source_blob_id, profile, state, created_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (source_blob_id, profile) DO UPDATE \
         SET state = $3, error = '' WHERE variants.state = $5 AND variants.permanent = 0",
    )
    .bind(&key.0)
    .bind(key.1)
    .bind(PENDING)
    .bind(now)
    .bind(FAILED)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Take the job until `lease_until`: a PENDING row nobody holds (or whose
/// holder's lease ran out). `false` when it is READY, FAILED for good, or
/// held.
pub(crate) async fn claim_variant(
    db: &Db,
    key: &VariantKey,
    now: i64,
    lease_until: i64,
) -> Result<bool, Error> {
    let claimed = sqlx::query(
        "UPDATE variants SET lease_until = $3, attempts = attempts + 1 \
         WHERE source_blob_id = $1 AND profile = $2 AND state = $4 AND lease_until < $5",
    )
    .bind(&key.0)
    .bind(key.1)
    .bind(lease_until)
    .bind(PENDING)
    .bind(now)
    .execute(db.pool())
    .await?
    .rows_affected();
    Ok(claimed == 1)
}

/// Record the parts and mark the variant READY; `announce` makes the event
/// (from the row's `created_at`), put in the outbox in the same
/// transaction.
pub(crate) async fn finish_ready(
    db: &Db,
    key: &VariantKey,
    parts: &[pb::VariantPart],
    remuxed: bool,
    finished_at: i64,
    announce: impl FnOnce(i64) -> (String, Payload),
) -> Result<(), Error> {
    let mut tx = db.begin().await?;
    sqlx::query("DELETE FROM variant_parts WHERE source_blob_id = $1 AND profile = $2")
        .bind(&key.0)
        .bind(key.1)
        .execute(&mut *tx)
        .await?;
    for part in parts {
        sqlx::query(
            "INSERT INTO variant_parts (source_blob_id, profile, part_index, blob_id, mime_type, \
             size_bytes, duration_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&key.0)
        .bind(key.1)
        .bind(i64::from(part.index))
        .bind(&part.blob_id)
        .bind(&part.mime_type)
        .bind(i64::try_from(part.size_bytes).unwrap_or(i64::MAX))
        .bind(i64::try_from(part.duration_ms).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
    }
    let created_at: i64 = sqlx::query(
        "UPDATE variants SET state = $3, remuxed = $4, error = '', permanent = 0, \
         lease_until = 0, finished_at = $5 WHERE source_blob_id = $1 AND profile = $2 \
         RETURNING created_at",
    )
    .bind(&key.0)
    .bind(key.1)
    .bind(READY)
    .bind(i64::from(remuxed))
    .bind(finished_at)
    .fetch_one(&mut *tx)
    .await?
    .try_get("created_at")?;
    commit_announced(db, tx, created_at, announce).await
}

/// Mark the variant FAILED with the reason; `announce` makes the event
/// (from the row's `created_at`), put in the outbox in the same
/// transaction.
pub(crate) async fn finish_failed(
    db: &Db,
    key: &VariantKey,
    reason: &str,
    permanent: bool,
    finished_at: i64,
    announce: impl FnOnce(i64) -> (String, Payload),
) -> Result<(), Error> {
    let mut tx = db.begin().await?;
    let created_at: i64 = sqlx::query(
        "UPDATE variants SET state = $3, error = $4, permanent = $5, lease_until = 0, \
         finished_at = $6 WHERE source_blob_id = $1 AND profile = $2 RETURNING created_at",
    )
    .bind(&key.0)
    .bind(key.1)
    .bind(FAILED)
    .bind(reason)
    .bind(i64::from(permanent))
    .bind(finished_at)
    .fetch_one(&mut *tx)
    .await?
    .try_get("created_at")?;
    commit_announced(db, tx, created_at, announce).await
}

/// Put the event `announce` makes from the variant's `created_at` in the
/// outbox and commit `tx`: a variant's outcome and its announcement are
/// written together.
async fn commit_announced(
    db: &Db,
    mut tx: Tx<'static>,
    created_at: i64,
    announce: impl FnOnce(i64) -> (String, Payload),
) -> Result<(), Error> {
    let (workspace_id, payload) = announce(created_at);
    let event = events::to_bus(&events::envelope(&workspace_id, payload, None));
    outbox::enqueue(&mut tx, &[event]).await?;
    db.commit(tx).await?;
    Ok(())
}

/// Mark `key` processed by `group` and put `event` in the outbox, in one
/// transaction; `false` (and nothing written) when it was marked already.
pub(crate) async fn settle_once(
    db: &Db,
    group: &str,
    key: &str,
    event: Event,
) -> Result<bool, StoreError> {
    let Some(mut tx) = idempotency::begin_once(db, group, key).await? else {
        return Ok(false);
    };
    outbox::enqueue(&mut tx, &[event]).await?;
    db.commit(tx).await?;
    Ok(true)
}
