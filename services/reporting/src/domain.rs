//! The rules of reporting, without I/O: what each event counts, on which
//! UTC day and channel, and which days a report covers.
//!
//! Days are `YYYY-MM-DD` strings of years 1 to 9999, so they sort as text
//! (and as stored).

use chrono::{DateTime, Datelike, Utc};
use telenet_proto::common::v1::TimeRange;
use telenet_proto::conversations::v1::{Conversation, MessageDirection};
use telenet_proto::events::v1::EventEnvelope;
use telenet_proto::events::v1::event_envelope::Payload;

use crate::Error;

/// Longest range one report may cover: a (leap) year.
pub const MAX_RANGE_DAYS: i64 = 366;

/// The counts of one day's row, or what one event adds to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub opened: i64,
    pub closed: i64,
    pub messages_in: i64,
    pub messages_out: i64,
}

impl Counts {
    const ZERO: Counts = Counts {
        opened: 0,
        closed: 0,
        messages_in: 0,
        messages_out: 0,
    };
    pub(crate) const OPENED: Counts = Counts {
        opened: 1,
        ..Counts::ZERO
    };
    pub(crate) const CLOSED: Counts = Counts {
        closed: 1,
        ..Counts::ZERO
    };
    pub(crate) const MESSAGE_IN: Counts = Counts {
        messages_in: 1,
        ..Counts::ZERO
    };
    const MESSAGE_OUT: Counts = Counts {
        messages_out: 1,
        ..Counts::ZERO
    };
}

/// What one event adds, and to which row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contribution {
    pub workspace_id: String,
    /// The UTC day the event happened.
    pub day: String,
    pub channel_id: String,
    pub counts: Counts,
    /// The conversation's opening or closing this event reports, which
    /// counts once however many events report it; `None` for messages.
    pub milestone: Option<Milestone>,
}

/// A step in a conversation's life that happens once: it is opened once
/// and closed once (the contact's next message opens a new one), so a
/// second event reporting it (another close that raced the first, or an
/// event published again under another id) adds nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Milestone {
    pub conversation_id: String,
    pub kind: MilestoneKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MilestoneKind {
    Opened,
    Closed,
}

impl MilestoneKind {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            MilestoneKind::Opened => "opened",
            MilestoneKind::Closed => "closed",
        }
    }
}

/// One row of the daily volume report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayVolume {
    pub day: String,
    pub channel_id: String,
    pub counts: Counts,
}

/// Why an event can never be counted: it goes to the dead-letter queue
/// rather than being retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Uncountable {
    #[error("no workspace_id")]
    NoWorkspace,
    #[error("no occurred_at")]
    NoTime,
    #[error("occurred_at is out of range")]
    TimeOutOfRange,
    /// An event without the part that says where it happened.
    #[error("{event} without {part}")]
    Incomplete {
        event: &'static str,
        part: &'static str,
    },
    #[error("no channel_id")]
    NoChannel,
}

/// What an event adds to the report: `Ok(None)` for events that count
/// nothing (a message without direction, an event reporting does not bind),
/// `Err` for events that can never be attributed (no workspace, no time, no
/// conversation, no channel).
pub fn contribution_of(env: &EventEnvelope) -> Result<Option<Contribution>, Uncountable> {
    if env.workspace_id.trim().is_empty() {
        return Err(Uncountable::NoWorkspace);
    }
    let occurred_at = env.occurred_at.as_ref().ok_or(Uncountable::NoTime)?;
    let day = utc_day(occurred_at).ok_or(Uncountable::TimeOutOfRange)?;
    let Some(payload) = &env.payload else {
        return Ok(None);
    };
    let Some((channel_id, counts, milestone)) = counts_of(payload)? else {
        return Ok(None);
    };
    Ok(Some(Contribution {
        workspace_id: env.workspace_id.clone(),
        day,
        channel_id,
        counts,
        milestone,
    }))
}

/// Whether reporting counts events of this kind (those bound only so that
/// every event has a queue are acknowledged without a trace).
pub fn is_counted(env: &EventEnvelope) -> bool {
    matches!(
        env.payload,
        Some(
            Payload::ConversationOpened(_)
                | Payload::ConversationClosed(_)
                | Payload::MessageCreated(_)
        )
    )
}

/// The channel, counts and milestone a payload contributes, wherever it
/// happened.
fn counts_of(
    payload: &Payload,
) -> Result<Option<(String, Counts, Option<Milestone>)>, Uncountable> {
    let incomplete = |event, part| Uncountable::Incomplete { event, part };
    let milestone = |event, conversation: &Conversation, kind| {
        if conversation.id.trim().is_empty() {
            return Err(incomplete(event, "conversation.id"));
        }
        Ok(Some(Milestone {
            conversation_id: conversation.id.clone(),
            kind,
        }))
    };
    let (channel_id, counts, milestone) = match payload {
        Payload::ConversationOpened(e) => {
            let event = "conversation.opened";
            let conversation = e
                .conversation
                .as_ref()
                .ok_or(incomplete(event, "conversation"))?;
            (
                conversation.channel_id.clone(),
                Counts::OPENED,
                milestone(event, conversation, MilestoneKind::Opened)?,
            )
        }
        Payload::ConversationClosed(e) => {
            let event = "conversation.closed";
            let conversation = e
                .conversation
                .as_ref()
                .ok_or(incomplete(event, "conversation"))?;
            (
                conversation.channel_id.clone(),
                Counts::CLOSED,
                milestone(event, conversation, MilestoneKind::Closed)?,
            )
        }
        Payload::MessageCreated(e) => {
            let message = e
                .message
                .as_ref()
                .ok_or(incomplete("message.created", "message"))?;
            let counts = match message.direction() {
                MessageDirection::Inbound => Counts::MESSAGE_IN,
                MessageDirection::Outbound => Counts::MESSAGE_OUT,
                MessageDirection::Unspecified => {
                    tracing::warn!(message_id = %message.id, "message.created without direction; not counted");
                    return Ok(None);
                }
            };
            (e.channel_id.clone(), counts, None)
        }
        // Not bound by reporting; a stray one counts nothing.
        _ => return Ok(None),
    };
    if channel_id.trim().is_empty() {
        return Err(Uncountable::NoChannel);
    }
    Ok(Some((channel_id, counts, milestone)))
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
pub fn utc_day(ts: &prost_types::Timestamp) -> Option<String> {
    utc_time(ts).map(day_string)
}

/// The days a report covers, both included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaySpan {
    pub first: String,
    pub last: String,
}

/// The first and last day (inclusive) that overlap `[start, end)`, for a
/// range of at most [`MAX_RANGE_DAYS`].
pub fn day_span(range: Option<&TimeRange>) -> Result<DaySpan, Error> {
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
    Ok(DaySpan {
        first: day_string(start),
        last: day_string(last),
    })
}

/// A daily volume report to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeQuery {
    pub workspace_id: String,
    pub days: DaySpan,
    /// Only this channel, when set.
    pub channel_id: Option<String>,
}

impl VolumeQuery {
    /// The workspace is required, then a valid range; a blank channel means
    /// every channel.
    pub fn new(
        workspace_id: &str,
        range: Option<&TimeRange>,
        channel_id: &str,
    ) -> Result<Self, Error> {
        telenet_kit::error::required("workspace_id", workspace_id)
            .map_err(Error::InvalidArgument)?;
        let days = day_span(range)?;
        let channel_id = channel_id.trim();
        Ok(Self {
            workspace_id: workspace_id.to_owned(),
            days,
            channel_id: (!channel_id.is_empty()).then(|| channel_id.to_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use telenet_proto::conversations::v1::Message;
    use telenet_proto::events::v1::{
        ContactCreated, ConversationClosed, ConversationOpened, MessageCreated,
    };

    fn ts(seconds: i64, nanos: i32) -> prost_types::Timestamp {
        prost_types::Timestamp { seconds, nanos }
    }

    // 2024-03-01T00:00:00Z
    const MARCH_1: i64 = 1_709_251_200;
    const DAY: i64 = 86_400;

    /// Reporting binds every routing key; only these three count.
    #[test]
    fn only_opened_closed_and_created_are_counted() {
        let env = |payload| EventEnvelope {
            workspace_id: "ws".into(),
            payload: Some(payload),
            ..Default::default()
        };
        for counted in [
            Payload::ConversationOpened(ConversationOpened::default()),
            Payload::ConversationClosed(ConversationClosed::default()),
            Payload::MessageCreated(MessageCreated::default()),
        ] {
            assert!(is_counted(&env(counted)));
        }
        assert!(!is_counted(&env(Payload::ContactCreated(
            ContactCreated::default()
        ))));
        assert!(!is_counted(&EventEnvelope::default()));
    }

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

    #[test]
    fn days_stay_within_years_that_sort_as_text() {
        // 0001-01-01 and 9999-12-31 are the first and last days kept.
        assert_eq!(
            utc_day(&ts(-62_135_596_800, 0)).as_deref(),
            Some("0001-01-01")
        );
        assert_eq!(utc_day(&ts(-62_135_596_801, 0)), None);
        assert_eq!(
            utc_day(&ts(253_402_300_799, 0)).as_deref(),
            Some("9999-12-31")
        );
        assert_eq!(utc_day(&ts(253_402_300_800, 0)), None);
    }

    fn span(start: i64, end: i64) -> Result<DaySpan, Error> {
        day_span(Some(&TimeRange {
            start: Some(ts(start, 0)),
            end: Some(ts(end, 0)),
        }))
    }

    fn days(first: &str, last: &str) -> DaySpan {
        DaySpan {
            first: first.into(),
            last: last.into(),
        }
    }

    #[test]
    fn ranges_cover_the_days_they_overlap() {
        assert_eq!(
            span(MARCH_1, MARCH_1 + DAY).expect("one day"),
            days("2024-03-01", "2024-03-01")
        );
        assert_eq!(
            span(MARCH_1 + 3600, MARCH_1 + DAY + 1).expect("two days"),
            days("2024-03-01", "2024-03-02")
        );
        assert!(span(MARCH_1, MARCH_1 + 366 * DAY).is_ok());
        assert!(span(MARCH_1, MARCH_1 + 366 * DAY + 1).is_err());
        assert!(span(MARCH_1, MARCH_1).is_err());
        assert!(day_span(None).is_err());
    }

    fn invalid(result: Result<impl std::fmt::Debug, Error>) -> String {
        match result {
            Err(Error::InvalidArgument(message)) => message,
            other => panic!("expected an invalid argument, got {other:?}"),
        }
    }

    #[test]
    fn ranges_name_what_is_wrong() {
        let range = |start, end| TimeRange { start, end };
        assert_eq!(invalid(day_span(None)), "range is required");
        assert_eq!(
            invalid(day_span(Some(&range(None, Some(ts(MARCH_1, 0)))))),
            "range.start is required"
        );
        assert_eq!(
            invalid(day_span(Some(&range(Some(ts(MARCH_1, 0)), None)))),
            "range.end is required"
        );
        assert_eq!(
            invalid(day_span(Some(&range(
                Some(ts(MARCH_1, -1)),
                Some(ts(MARCH_1, 0))
            )))),
            "range.start is not a valid time"
        );
        assert_eq!(
            invalid(day_span(Some(&range(
                Some(ts(MARCH_1, 0)),
                Some(ts(i64::MAX, 0))
            )))),
            "range.end is not a valid time"
        );
        assert_eq!(
            invalid(span(MARCH_1, MARCH_1 - 1)),
            "range.end must be after range.start"
        );
        assert_eq!(
            invalid(span(MARCH_1, MARCH_1 + 366 * DAY + 1)),
            "range must span at most 366 days"
        );
    }

    #[test]
    fn queries_need_a_workspace_first_and_read_a_blank_channel_as_all() {
        let range = TimeRange {
            start: Some(ts(MARCH_1, 0)),
            end: Some(ts(MARCH_1 + DAY, 0)),
        };
        assert_eq!(
            invalid(VolumeQuery::new(" ", None, "")),
            "workspace_id is required"
        );
        let all = VolumeQuery::new("ws", Some(&range), " ").expect("valid");
        assert_eq!(all.channel_id, None);
        assert_eq!(all.days, days("2024-03-01", "2024-03-01"));
        let one = VolumeQuery::new("ws", Some(&range), " ch1 ").expect("valid");
        assert_eq!(one.channel_id.as_deref(), Some("ch1"));
    }

    fn envelope(ws: &str, at: Option<prost_types::Timestamp>, payload: Payload) -> EventEnvelope {
        EventEnvelope {
            event_id: "e1".into(),
            workspace_id: ws.into(),
            occurred_at: at,
            trace: None,
            payload: Some(payload),
        }
    }

    fn conversation(channel: &str) -> Option<Conversation> {
        Some(Conversation {
            id: "conv".into(),
            channel_id: channel.into(),
            ..Default::default()
        })
    }

    fn opened(channel: &str) -> Payload {
        Payload::ConversationOpened(ConversationOpened {
            conversation: conversation(channel),
        })
    }

    fn message(channel: &str, direction: MessageDirection) -> Payload {
        Payload::MessageCreated(MessageCreated {
            message: Some(Message {
                direction: direction as i32,
                ..Default::default()
            }),
            channel_id: channel.into(),
            contact_id: "contact".into(),
        })
    }

    fn counted(payload: Payload) -> Result<Option<Contribution>, Uncountable> {
        contribution_of(&envelope("ws", Some(ts(MARCH_1 + 60, 0)), payload))
    }

    fn counts(payload: Payload) -> Option<Counts> {
        counted(payload).expect("countable").map(|c| c.counts)
    }

    #[test]
    fn each_event_counts_once_on_its_day_and_channel() {
        assert_eq!(
            counted(opened("ch1")),
            Ok(Some(Contribution {
                workspace_id: "ws".into(),
                day: "2024-03-01".into(),
                channel_id: "ch1".into(),
                counts: Counts {
                    opened: 1,
                    ..Counts::default()
                },
                milestone: Some(Milestone {
                    conversation_id: "conv".into(),
                    kind: MilestoneKind::Opened,
                }),
            }))
        );
        let closed = Payload::ConversationClosed(ConversationClosed {
            conversation: conversation("ch1"),
        });
        let closing = counted(closed).expect("countable").expect("counts");
        assert_eq!(
            closing.counts,
            Counts {
                closed: 1,
                ..Counts::default()
            }
        );
        assert_eq!(
            closing.milestone,
            Some(Milestone {
                conversation_id: "conv".into(),
                kind: MilestoneKind::Closed,
            })
        );
        // Messages are counted per event, not per conversation.
        let message_in = counted(message("ch1", MessageDirection::Inbound));
        assert_eq!(
            message_in.expect("countable").expect("counts").milestone,
            None
        );
        assert_eq!(
            counts(message("ch1", MessageDirection::Inbound)),
            Some(Counts {
                messages_in: 1,
                ..Counts::default()
            })
        );
        assert_eq!(
            counts(message("ch1", MessageDirection::Outbound)),
            Some(Counts {
                messages_out: 1,
                ..Counts::default()
            })
        );
    }

    #[test]
    fn some_events_count_nothing() {
        assert_eq!(counts(message("ch1", MessageDirection::Unspecified)), None);
        let contact = Payload::ContactCreated(ContactCreated::default());
        assert_eq!(counts(contact), None);
        let mut no_payload = envelope("ws", Some(ts(MARCH_1, 0)), opened("ch1"));
        no_payload.payload = None;
        assert_eq!(contribution_of(&no_payload), Ok(None));
    }

    #[test]
    fn events_that_cannot_be_placed_are_uncountable() {
        let at = Some(ts(MARCH_1, 0));
        let err = |env: EventEnvelope| contribution_of(&env).expect_err("uncountable");
        assert_eq!(
            err(envelope(" ", at, opened("ch1"))),
            Uncountable::NoWorkspace
        );
        assert_eq!(
            err(envelope("ws", None, opened("ch1"))),
            Uncountable::NoTime
        );
        assert_eq!(
            err(envelope("ws", Some(ts(MARCH_1, -1)), opened("ch1"))),
            Uncountable::TimeOutOfRange
        );
        assert_eq!(err(envelope("ws", at, opened(" "))), Uncountable::NoChannel);
        let bare = Payload::ConversationOpened(ConversationOpened { conversation: None });
        let uncountable = err(envelope("ws", at, bare));
        assert_eq!(
            uncountable.to_string(),
            "conversation.opened without conversation"
        );
        // A conversation's opening and closing count once per conversation,
        // so they need its id.
        let anonymous = Payload::ConversationClosed(ConversationClosed {
            conversation: Some(Conversation {
                channel_id: "ch1".into(),
                ..Default::default()
            }),
        });
        assert_eq!(
            err(envelope("ws", at, anonymous)).to_string(),
            "conversation.closed without conversation.id"
        );
        let bare = Payload::MessageCreated(MessageCreated::default());
        assert_eq!(
            err(envelope("ws", at, bare)).to_string(),
            "message.created without message"
        );
        // Even an event that would count nothing needs a workspace and a time.
        let contact = Payload::ContactCreated(ContactCreated::default());
        assert_eq!(err(envelope("", at, contact)), Uncountable::NoWorkspace);
    }
}
