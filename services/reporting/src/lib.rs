//! Reporting: aggregates fed by events, never by reading other services'
//! tables.
//!
//! It consumes `conversation.opened`, `conversation.closed` and
//! `message.created` and keeps, per workspace, UTC day and channel, how many
//! conversations were opened and closed and how many messages came in and
//! went out. Each event is counted in the same transaction that records it as
//! processed, so a redelivered event counts once.

use chrono::{DateTime, Datelike, Utc};
use serde::{Deserialize, Serialize};
use telenet_bus::{BusError, SharedBus, SubscribeSpec};
use telenet_kit::error::{ErrorCode, ServiceError};
use telenet_proto::conversations::v1::MessageDirection;
use telenet_proto::events::v1::event_envelope::Payload;
use telenet_proto::reporting::v1 as pb;
use telenet_proto::reporting::v1::reports_server::{Reports, ReportsServer};
use telenet_store::consumer::{HandleError, Incoming};
use telenet_store::sqlx::{self, Row};
use telenet_store::{Db, StoreError, events, idempotency};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

pub const MIGRATIONS: telenet_store::Migrations = telenet_store::migrations!("0100_daily_volume");

/// Consumer group of reporting on the bus (also its `processed_events` name).
pub const GROUP: &str = "reporting";

/// Longest range one report may cover: a (leap) year.
pub const MAX_RANGE_DAYS: i64 = 366;

/// What reporting consumes: its group and bindings. Subscribing once declares
/// the group's queue, so events published before the consumers start wait.
pub fn subscription() -> SubscribeSpec {
    SubscribeSpec::new(
        GROUP,
        &[
            "conversation.opened",
            "conversation.closed",
            "message.created",
        ],
    )
}

/// Reporting settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Events applied at once. Events of one day and channel update the same
    /// row, so more mostly adds lock waits; a few keep the database busy.
    pub concurrency: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self { concurrency: 8 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bus(#[from] BusError),
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Store(e.into())
    }
}

impl ServiceError for Error {
    fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidArgument(_) => ErrorCode::InvalidArgument,
            Error::Store(e) if e.is_transient() => ErrorCode::Unavailable,
            Error::Store(_) | Error::Bus(_) => ErrorCode::Internal,
        }
    }
}

impl Error {
    /// The gRPC status for this error (internal ones logged and made opaque).
    pub fn to_status(&self) -> Status {
        telenet_kit::error::to_status(self)
    }
}

/// What one event adds to a day's row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    opened: i64,
    closed: i64,
    messages_in: i64,
    messages_out: i64,
}

/// The reporting service: the event consumer and the
/// `telenet.reporting.v1.Reports` API. Clones share everything.
#[derive(Clone)]
pub struct ReportingService {
    db: Db,
    bus: SharedBus,
    config: Config,
}

impl ReportingService {
    pub async fn new(db: Db, bus: SharedBus, config: Config) -> Result<Self, Error> {
        Ok(Self { db, bus, config })
    }

    pub fn grpc(&self) -> ReportsServer<Self> {
        ReportsServer::new(self.clone())
    }

    /// Consume the counted events until `token` is cancelled; events being
    /// applied finish before it returns.
    pub async fn run(self, token: CancellationToken) -> Result<(), Error> {
        let bus = self.bus.clone();
        let concurrency = self.config.concurrency;
        telenet_store::consumer::run(bus, subscription(), concurrency, token, move |incoming| {
            let service = self.clone();
            async move { service.apply(incoming).await }
        })
        .await?;
        Ok(())
    }

    /// Count one event, once.
    async fn apply(&self, incoming: Incoming) -> Result<(), HandleError> {
        let env = events::from_bus(&incoming.event)?;
        let permanent =
            |why: String| HandleError::Permanent(format!("event {}: {why}", incoming.event.id));
        if env.workspace_id.trim().is_empty() {
            return Err(permanent("no workspace_id".into()));
        }
        let occurred_at = env
            .occurred_at
            .as_ref()
            .ok_or_else(|| permanent("no occurred_at".into()))?;
        let day =
            utc_day(occurred_at).ok_or_else(|| permanent("occurred_at is out of range".into()))?;
        let effect = match &env.payload {
            Some(payload) => counts_of(payload).map_err(permanent)?,
            None => None,
        };
        let event_id = if env.event_id.is_empty() {
            incoming.event.id.as_str()
        } else {
            env.event_id.as_str()
        };

        let mut tx = self.db.begin().await?;
        if !idempotency::mark_processed(&mut tx, GROUP, event_id).await? {
            tx.rollback().await.map_err(StoreError::from)?;
            return Ok(());
        }
        if let Some((channel_id, counts)) = effect {
            add_counts(&mut tx, &env.workspace_id, &day, &channel_id, counts).await?;
        }
        tx.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    /// Rows of the workspace whose day overlaps `range`, by day then channel.
    pub async fn daily_volume(
        &self,
        req: &pb::GetDailyVolumeRequest,
    ) -> Result<Vec<pb::DailyVolume>, Error> {
        if req.workspace_id.trim().is_empty() {
            return Err(Error::InvalidArgument("workspace_id is required".into()));
        }
        let (first_day, last_day) = day_span(req.range.as_ref())?;
        let rows = sqlx::query(
            "SELECT day, channel_id, conversations_opened, conversations_closed, \
             messages_in, messages_out FROM daily_volume \
             WHERE workspace_id = $1 AND day >= $2 AND day <= $3 \
             AND ($4 = '' OR channel_id = $4) \
             ORDER BY day, channel_id",
        )
        .bind(&req.workspace_id)
        .bind(first_day)
        .bind(last_day)
        .bind(req.channel_id.trim())
        .fetch_all(self.db.pool())
        .await?;
        let count = |row: &sqlx::any::AnyRow, column: &str| -> Result<u64, sqlx::Error> {
            Ok(u64::try_from(row.try_get::<i64, _>(column)?).unwrap_or(0))
        };
        rows.iter()
            .map(|row| {
                Ok(pb::DailyVolume {
                    day: row.try_get("day")?,
                    channel_id: row.try_get("channel_id")?,
                    conversations_opened: count(row, "conversations_opened")?,
                    conversations_closed: count(row, "conversations_closed")?,
                    messages_in: count(row, "messages_in")?,
                    messages_out: count(row, "messages_out")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Error::from)
    }
}

/// The channel and counts an event contributes; `Ok(None)` for events that
/// count nothing (a message without direction), `Err` for events that can
/// never be attributed (no conversation, no channel).
fn counts_of(payload: &Payload) -> Result<Option<(String, Counts)>, String> {
    let (channel_id, counts) = match payload {
        Payload::ConversationOpened(e) => {
            let conversation = e
                .conversation
                .as_ref()
                .ok_or("conversation.opened without conversation")?;
            (
                conversation.channel_id.clone(),
                Counts {
                    opened: 1,
                    ..Counts::default()
                },
            )
        }
        Payload::ConversationClosed(e) => {
            let conversation = e
                .conversation
                .as_ref()
                .ok_or("conversation.closed without conversation")?;
            (
                conversation.channel_id.clone(),
                Counts {
                    closed: 1,
                    ..Counts::default()
                },
            )
        }
        Payload::MessageCreated(e) => {
            let message = e
                .message
                .as_ref()
                .ok_or("message.created without message")?;
            let counts = match message.direction() {
                MessageDirection::Inbound => Counts {
                    messages_in: 1,
                    ..Counts::default()
                },
                MessageDirection::Outbound => Counts {
                    messages_out: 1,
                    ..Counts::default()
                },
                MessageDirection::Unspecified => {
                    tracing::warn!(message_id = %message.id, "message.created without direction; not counted");
                    return Ok(None);
                }
            };
            (e.channel_id.clone(), counts)
        }
        // Not bound by reporting; a stray one counts nothing.
        _ => return Ok(None),
    };
    if channel_id.trim().is_empty() {
        return Err("no channel_id".into());
    }
    Ok(Some((channel_id, counts)))
}

async fn add_counts(
    tx: &mut telenet_store::Tx<'_>,
    workspace_id: &str,
    day: &str,
    channel_id: &str,
    counts: Counts,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO daily_volume (workspace_id, day, channel_id, conversations_opened, \
         conversations_closed, messages_in, messages_out) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (workspace_id, day, channel_id) DO UPDATE SET \
         conversations_opened = daily_volume.conversations_opened + excluded.conversations_opened, \
         conversations_closed = daily_volume.conversations_closed + excluded.conversations_closed, \
         messages_in = daily_volume.messages_in + excluded.messages_in, \
         messages_out = daily_volume.messages_out + excluded.messages_out",
    )
    .bind(workspace_id)
    .bind(day)
    .bind(channel_id)
    .bind(counts.opened)
    .bind(counts.closed)
    .bind(counts.messages_in)
    .bind(counts.messages_out)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A protobuf timestamp as a UTC time, for years 1 to 9999 only: day strings
/// of other years would not sort as text.
fn utc_time(ts: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(ts.nanos).ok()?;
    let time = DateTime::from_timestamp(ts.seconds, nanos)?;
    (1..=9999).contains(&time.year()).then_some(time)
}

fn day_string(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%d").to_string()
}

/// The UTC day (`YYYY-MM-DD`) of a time.
fn utc_day(ts: &prost_types::Timestamp) -> Option<String> {
    utc_time(ts).map(day_string)
}

/// The first and last day (inclusive) that overlap `[start, end)`.
fn day_span(
    range: Option<&telenet_proto::common::v1::TimeRange>,
) -> Result<(String, String), Error> {
    let invalid = |m: &str| Error::InvalidArgument(m.to_owned());
    let range = range.ok_or_else(|| invalid("range is required"))?;
    let start = range
        .start
        .as_ref()
        .ok_or_else(|| invalid("range.start is required"))?;
    let end = range
        .end
        .as_ref()
        .ok_or_else(|| invalid("range.end is required"))?;
    let start = utc_time(start).ok_or_else(|| invalid("range.start is not a valid time"))?;
    let end = utc_time(end).ok_or_else(|| invalid("range.end is not a valid time"))?;
    if end <= start {
        return Err(invalid("range.end must be after range.start"));
    }
    if end - start > chrono::Duration::days(MAX_RANGE_DAYS) {
        return Err(Error::InvalidArgument(format!(
            "range must span at most {MAX_RANGE_DAYS} days"
        )));
    }
    // `end` is exclusive: a range ending at midnight does not include that day.
    let last = end - chrono::Duration::nanoseconds(1);
    Ok((day_string(start), day_string(last)))
}

#[tonic::async_trait]
impl Reports for ReportingService {
    async fn get_daily_volume(
        &self,
        request: Request<pb::GetDailyVolumeRequest>,
    ) -> Result<Response<pb::GetDailyVolumeResponse>, Status> {
        let rows = self
            .daily_volume(request.get_ref())
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(pb::GetDailyVolumeResponse { rows }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use telenet_proto::common::v1::TimeRange;

    fn ts(seconds: i64, nanos: i32) -> prost_types::Timestamp {
        prost_types::Timestamp { seconds, nanos }
    }

    // 2024-03-01T00:00:00Z
    const MARCH_1: i64 = 1_709_251_200;
    const DAY: i64 = 86_400;

    #[test]
    fn days_are_utc() {
        assert_eq!(
            utc_day(&ts(MARCH_1 - 1, 999_999_999)).as_deref(),
            Some("2024-02-29")
        );
        assert_eq!(utc_day(&ts(MARCH_1, 0)).as_deref(), Some("2024-03-01"));
        assert_eq!(utc_day(&ts(MARCH_1, -1)), None);
        assert_eq!(utc_day(&ts(i64::MAX, 0)), None);
    }

    fn span(start: i64, end: i64) -> Result<(String, String), Error> {
        day_span(Some(&TimeRange {
            start: Some(ts(start, 0)),
            end: Some(ts(end, 0)),
        }))
    }

    #[test]
    fn ranges_cover_the_days_they_overlap() {
        let (a, b) = span(MARCH_1, MARCH_1 + DAY).expect("one day");
        assert_eq!((a.as_str(), b.as_str()), ("2024-03-01", "2024-03-01"));
        let (a, b) = span(MARCH_1 + 3600, MARCH_1 + DAY + 1).expect("two days");
        assert_eq!((a.as_str(), b.as_str()), ("2024-03-01", "2024-03-02"));
        assert!(span(MARCH_1, MARCH_1 + 366 * DAY).is_ok());
        assert!(span(MARCH_1, MARCH_1 + 366 * DAY + 1).is_err());
        assert!(span(MARCH_1, MARCH_1).is_err());
        assert!(day_span(None).is_err());
    }
}
