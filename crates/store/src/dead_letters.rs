//! The bus's dead letters for people: listed, redriven or discarded by
//! consumer group, workspace and event id, as the `DeadLetters` gRPC service
//! (for the gateway's managers) and `telenet dead-letters` (for operators)
//! both do it. The bus does not read payloads; the workspace of a dead
//! letter is its event envelope's.

use telenet_bus::{BusError, DeadLetter, Event, SharedBus};
use telenet_proto::events::v1::EventEnvelope;
use telenet_proto::operations::v1 as pb;

/// Dead letters listed when the caller names no limit.
pub const DEFAULT_LIMIT: usize = 100;
/// Most dead letters one call lists or acts on.
pub const MAX_LIMIT: usize = 500;

/// Which dead letters a call applies to.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only this workspace's (`None`: every workspace's, for operators).
    pub workspace_id: Option<String>,
    /// Groups to look in (empty: every group the bus knows).
    pub groups: Vec<String>,
    /// Only these event ids (empty: every dead letter the rest selects).
    pub event_ids: Vec<String>,
}

/// What to do with the selected dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Back into their group's queue, as first deliveries.
    Redrive,
    /// Deleted.
    Discard,
}

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// The request names a group the topology does not have, or is
    /// otherwise unusable; nothing was done.
    #[error("{0}")]
    Invalid(String),
    /// Event ids that name no dead letter of the selection (another
    /// workspace's, already acted on, or never dead-lettered); nothing was
    /// done.
    #[error("no such dead letter: {}", .0.join(", "))]
    NotFound(Vec<String>),
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// The workspace an event belongs to: its envelope's (empty when the payload
/// is no envelope, so only installation-wide callers see it).
pub fn workspace_of(event: &Event) -> String {
    <EventEnvelope as prost::Message>::decode(event.payload.as_ref())
        .map(|env| env.workspace_id)
        .unwrap_or_default()
}

impl Selection {
    /// The groups to visit: those named, each checked against the groups
    /// the bus knows, or all of them.
    fn groups(&self, bus: &SharedBus) -> Result<Vec<String>, DeadLetterError> {
        let known = bus.known_groups();
        if self.groups.is_empty() {
            return Ok(known);
        }
        for group in &self.groups {
            if !known.contains(group) {
                return Err(DeadLetterError::Invalid(format!(
                    "unknown consumer group {group:?}; the groups are: {}",
                    known.join(", ")
                )));
            }
        }
        Ok(self.groups.clone())
    }

    fn picks(&self, dead: &DeadLetter) -> bool {
        (self.event_ids.is_empty() || self.event_ids.contains(&dead.event.id))
            && self
                .workspace_id
                .as_ref()
                .is_none_or(|ws| *ws == workspace_of(&dead.event))
    }
}

/// `limit` as asked (0: the default), at most [`MAX_LIMIT`].
pub fn limit(asked: u32) -> usize {
    match usize::try_from(asked).unwrap_or(MAX_LIMIT) {
        0 => DEFAULT_LIMIT,
        n => n.min(MAX_LIMIT),
    }
}

/// Up to `limit` selected dead letters, group by group, oldest first within
/// a group; nothing is taken out.
pub async fn list(
    bus: &SharedBus,
    selection: &Selection,
    limit: usize,
) -> Result<Vec<pb::DeadLetter>, DeadLetterError> {
    let mut listed = Vec::new();
    let picks = |d: &DeadLetter| selection.picks(d);
    for group in selection.groups(bus)? {
        let room = limit.saturating_sub(listed.len());
        if room == 0 {
            break;
        }
        let dead = bus.list_dead_letters(&group, &picks, room).await?;
        listed.extend(dead.into_iter().map(|d| to_proto(&group, d)));
    }
    Ok(listed)
}

/// Redrives or discards up to `limit` selected dead letters; returns those
/// acted on. Event ids that name none of the selection's dead letters are
/// [`DeadLetterError::NotFound`], and then nothing is done.
pub async fn act(
    bus: &SharedBus,
    selection: &Selection,
    action: Action,
    limit: usize,
) -> Result<Vec<pb::DeadLetter>, DeadLetterError> {
    if !selection.event_ids.is_empty() {
        // Every id named must be one of the selection's dead letters, or
        // nothing is done: a typo or another workspace's id is an error, not
        // a silent no-op.
        let found: std::collections::HashSet<String> = list(bus, selection, MAX_LIMIT)
            .await?
            .into_iter()
            .map(|d| d.event_id)
            .collect();
        let missing: Vec<String> = selection
            .event_ids
            .iter()
            .filter(|id| !found.contains(*id))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(DeadLetterError::NotFound(missing));
        }
    }
    let mut done = Vec::new();
    let picks = |d: &DeadLetter| selection.picks(d);
    for group in selection.groups(bus)? {
        let room = limit.saturating_sub(done.len());
        if room == 0 {
            break;
        }
        let dead = match action {
            Action::Redrive => bus.redrive_dead_letters(&group, &picks, room).await?,
            Action::Discard => bus.discard_dead_letters(&group, &picks, room).await?,
        };
        for d in &dead {
            tracing::info!(group, event_id = %d.event.id, routing_key = %d.event.routing_key, ?action, "dead letter");
        }
        done.extend(dead.into_iter().map(|d| to_proto(&group, d)));
    }
    Ok(done)
}

fn to_proto(group: &str, dead: DeadLetter) -> pb::DeadLetter {
    pb::DeadLetter {
        workspace_id: workspace_of(&dead.event),
        group: group.to_owned(),
        event_id: dead.event.id,
        routing_key: dead.event.routing_key,
        reason: dead.reason,
        attempts: dead.attempts,
        headers: dead.event.headers.into_iter().collect(),
    }
}
