//! Events as they travel: a `telenet.events.v1.EventEnvelope` encoded as
//! protobuf in a bus `Event`, routed by the payload's case.

use prost::Message as _;
use telenet_bus::Event;
use telenet_proto::events::v1::{EventEnvelope, TraceContext, event_envelope::Payload};

use crate::consumer::HandleError;

/// The routing key of a payload (`<area>.<event>`), as written in events.proto.
pub fn routing_key(payload: &Payload) -> &'static str {
    payload.routing_key()
}

/// A new envelope: fresh UUIDv7 id, occurred now, in `workspace_id`.
/// `traceparent` (W3C) continues that trace when given; without it the
/// envelope carries the current span's trace context (the request or the
/// consumed event that caused it), so consumers continue the same trace.
pub fn envelope(
    workspace_id: &str,
    payload: Payload,
    traceparent: Option<String>,
) -> EventEnvelope {
    let now = std::time::SystemTime::now();
    let trace = match traceparent {
        Some(tp) => Some(TraceContext {
            traceparent: tp,
            tracestate: String::new(),
        }),
        None => current_trace(),
    };
    EventEnvelope {
        event_id: uuid::Uuid::now_v7().to_string(),
        workspace_id: workspace_id.to_owned(),
        occurred_at: Some(prost_types::Timestamp::from(now)),
        trace,
        payload: Some(payload),
    }
}

/// The current span's W3C trace context; `None` outside any trace.
fn current_trace() -> Option<TraceContext> {
    let mut headers = std::collections::BTreeMap::new();
    telenet_kit::telemetry::inject_current(&mut headers);
    let traceparent = headers.remove(telenet_kit::telemetry::TRACEPARENT)?;
    Some(TraceContext {
        traceparent,
        tracestate: headers.remove("tracestate").unwrap_or_default(),
    })
}

/// Encode an envelope for the bus. Envelopes without payload are a bug of the
/// caller and get the routing key `invalid`, which no consumer binds.
pub fn to_bus(env: &EventEnvelope) -> Event {
    let key = env.payload.as_ref().map_or("invalid", routing_key);
    let mut event = Event::new(key, env.encode_to_vec());
    event.id = env.event_id.clone();
    if let Some(trace) = &env.trace {
        if !trace.traceparent.is_empty() {
            event
                .headers
                .insert("traceparent".into(), trace.traceparent.clone());
        }
        if !trace.tracestate.is_empty() {
            event
                .headers
                .insert("tracestate".into(), trace.tracestate.clone());
        }
    }
    event
}

/// Decode a bus event; undecodable bodies can never succeed (dead letter).
pub fn from_bus(event: &Event) -> Result<EventEnvelope, HandleError> {
    let env = EventEnvelope::decode(event.payload.as_ref())
        .map_err(|e| HandleError::Permanent(format!("undecodable event {}: {e}", event.id)))?;
    if env.payload.is_none() {
        return Err(HandleError::Permanent(format!(
            "event {} has no payload",
            event.id
        )));
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use telenet_proto::events::v1::ContactCreated;

    #[test]
    fn envelopes_round_trip_through_bus_events() {
        let env = envelope(
            "ws",
            Payload::ContactCreated(ContactCreated {
                contact_id: "c".into(),
                channel_id: "ch".into(),
                display_name: "Ana".into(),
            }),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        );
        let event = to_bus(&env);
        assert_eq!(event.routing_key, "contact.created");
        assert_eq!(event.id, env.event_id);
        assert!(event.headers.contains_key("traceparent"));
        assert_eq!(from_bus(&event).ok(), Some(env));
    }

    #[test]
    fn garbage_is_permanent() {
        let event = Event::new("contact.created", vec![0xff, 0xff, 0xff]);
        assert!(matches!(from_bus(&event), Err(HandleError::Permanent(_))));
    }
}
