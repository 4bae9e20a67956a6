//! The conversations service's event consumers: inbound messages, and the
//! delivery states reported by dispatch and by channels.

use telenet_bus::{SharedBus, SubscribeSpec};
use telenet_proto::dispatch::v1::DeliveryState;
use telenet_proto::events::v1::event_envelope::Payload;
use telenet_store::consumer::{self, HandleError, Incoming};
use telenet_store::events;
use tokio_util::sync::CancellationToken;

use crate::inbox::{Inbox, StatusTarget};

/// Run both consumers until cancelled.
pub async fn run(inbox: Inbox, bus: SharedBus, concurrency: usize, token: CancellationToken) {
    let inbound = {
        let inbox = inbox.clone();
        consumer::run(
            bus.clone(),
            SubscribeSpec::new("conversations.inbound", &["inbound.message"]),
            concurrency,
            token.clone(),
            move |incoming| {
                let inbox = inbox.clone();
                async move { handle(&inbox, incoming).await }
            },
        )
    };
    let status = {
        let inbox = inbox.clone();
        consumer::run(
            bus,
            SubscribeSpec::new("conversations.status", &["inbound.status", "outbound.status"]),
            concurrency,
            token.clone(),
            move |incoming| {
                let inbox = inbox.clone();
                async move { handle(&inbox, incoming).await }
            },
        )
    };
    let (a, b) = tokio::join!(inbound, status);
    for r in [a, b] {
        if let Err(e) = r {
            tracing::error!(error = %e, "conversations consumer stopped");
        }
    }
}

async fn handle(inbox: &Inbox, incoming: Incoming) -> Result<(), HandleError> {
    let env = events::from_bus(&incoming.event)?;
    let ws = env.workspace_id.as_str();
    match env.payload {
        Some(Payload::InboundMessageReceived(m)) => inbox.receive_message(&env.event_id, ws, &m).await,
        Some(Payload::OutboundStatusChanged(s)) => {
            let state = DeliveryState::try_from(s.state).unwrap_or(DeliveryState::Unspecified);
            inbox
                .apply_status(&env.event_id, ws, StatusTarget::MessageId(&s.message_id), state, &s.external_id, &s.error)
                .await
        }
        Some(Payload::InboundStatusReceived(s)) => {
            let state = DeliveryState::try_from(s.state).unwrap_or(DeliveryState::Unspecified);
            inbox
                .apply_status(
                    &env.event_id,
                    ws,
                    StatusTarget::External { channel_id: &s.channel_id, external_id: &s.message_external_id },
                    state,
                    "",
                    &s.error,
                )
                .await
        }
        _ => Ok(()),
    }
}
