//! The event consumer: counts each conversation and message event once,
//! acknowledged only after its transaction committed (the store crate's
//! consumer loop acks when the handler returns). Events that can never be
//! counted are dead-lettered; database trouble is retried.

use telenet_bus::{BusError, SharedBus, SubscribeSpec};
use telenet_proto::events::v1::{EventEnvelope, ROUTING_KEYS};
use telenet_store::consumer::{self, GroupSubscription, HandleError, Incoming};
use telenet_store::{Db, events};
use tokio_util::sync::CancellationToken;

use crate::{domain, store};

/// Consumer group of reporting on the bus (also its `processed_events` name).
pub const GROUP: &str = "reporting";

/// What reporting consumes: its group and bindings. Reporting consumes
/// every event (docs/architecture.md), so it binds every routing key
/// published ([`ROUTING_KEYS`]): no event is ever unroutable while the
/// topology is declared (ADR 14). It counts those [`domain::is_counted`]
/// and acknowledges the others at once.
pub fn subscription() -> SubscribeSpec {
    SubscribeSpec::new(GROUP, ROUTING_KEYS)
}

/// Subscribe now, so events published from now on wait for the consumer
/// however late it starts ([`run`]).
pub(crate) async fn subscribe(bus: &SharedBus) -> Result<GroupSubscription, BusError> {
    consumer::subscribe(bus, subscription()).await
}

/// Count the events of `events`, `concurrency` at a time, until `token` is
/// cancelled; events being counted finish before it returns.
pub(crate) async fn run(
    db: Db,
    events: GroupSubscription,
    concurrency: usize,
    token: CancellationToken,
) {
    consumer::run_on(events, concurrency, token, move |incoming| {
        let db = db.clone();
        async move { count_event(&db, incoming).await }
    })
    .await;
}

/// Count one event, once.
async fn count_event(db: &Db, incoming: Incoming) -> Result<(), HandleError> {
    let env = events::from_bus(&incoming.event)?;
    if !domain::is_counted(&env) {
        // Nothing to count and nothing to remember: a redelivery is as harmless.
        return Ok(());
    }
    let contribution = domain::contribution_of(&env)
        .map_err(|why| HandleError::Permanent(format!("event {}: {why}", incoming.event.id)))?;
    store::count_once(
        db,
        GROUP,
        event_id_of(&env, &incoming),
        contribution.as_ref(),
    )
    .await?;
    Ok(())
}

/// The id an event is remembered by: its envelope's, or the bus message's
/// for an envelope written without one.
fn event_id_of<'a>(env: &'a EventEnvelope, incoming: &'a Incoming) -> &'a str {
    if env.event_id.is_empty() {
        &incoming.event.id
    } else {
        &env.event_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use telenet_bus::Event;

    #[test]
    fn events_are_remembered_by_their_envelope_id_or_else_the_bus_id() {
        let mut event = Event::new("conversation.opened", Vec::new());
        event.id = "bus-id".into();
        let incoming = Incoming { event, attempt: 1 };
        let mut env = EventEnvelope {
            event_id: "envelope-id".into(),
            ..Default::default()
        };
        assert_eq!(event_id_of(&env, &incoming), "envelope-id");
        env.event_id.clear();
        assert_eq!(event_id_of(&env, &incoming), "bus-id");
    }
}
