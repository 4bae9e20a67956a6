//! The conversations service's event consumers: inbound messages, the
//! delivery states reported by dispatch and by channels, and media's
//! outcome for inbound attachments.

use telenet_bus::{SharedBus, SubscribeSpec};
use telenet_proto::dispatch::v1::DeliveryState;
use telenet_proto::events::v1::event_envelope::Payload;
use telenet_store::consumer::{self, HandleError, Incoming};
use telenet_store::events;
use tokio_util::sync::CancellationToken;

use crate::inbox::{Inbox, StatusTarget};

/// Subscribe every consumer, then consume in spawned tasks until cancelled.
pub async fn start(
    inbox: Inbox,
    bus: SharedBus,
    concurrency: usize,
    token: CancellationToken,
) -> Result<Vec<tokio::task::JoinHandle<()>>, telenet_bus::BusError> {
    let mut handles = Vec::new();
    for (group, keys) in [
        ("conversations.inbound", &["inbound.message"][..]),
        (
            "conversations.status",
            &["inbound.status", "outbound.status"][..],
        ),
        (
            "conversations.media",
            &["message.attachment_ready", "message.attachment_failed"][..],
        ),
    ] {
        let inbox = inbox.clone();
        handles.push(
            consumer::spawn(
                bus.clone(),
                SubscribeSpec::new(group, keys),
                concurrency,
                token.clone(),
                move |incoming| {
                    let inbox = inbox.clone();
                    async move { handle(&inbox, incoming).await }
                },
            )
            .await?,
        );
    }
    Ok(handles)
}

async fn handle(inbox: &Inbox, incoming: Incoming) -> Result<(), HandleError> {
    let env = events::from_bus(&incoming.event)?;
    let ws = env.workspace_id.as_str();
    match env.payload {
        Some(Payload::InboundMessageReceived(m)) => {
            inbox.receive_message(&env.event_id, ws, &m).await
        }
        Some(Payload::OutboundStatusChanged(s)) => {
            let state = DeliveryState::try_from(s.state).unwrap_or(DeliveryState::Unspecified);
            inbox
                .apply_status(
                    &env.event_id,
                    ws,
                    StatusTarget::MessageId(&s.message_id),
                    state,
                    &s.external_id,
                    &s.error,
                )
                .await
        }
        Some(Payload::InboundStatusReceived(s)) => {
            let state = DeliveryState::try_from(s.state).unwrap_or(DeliveryState::Unspecified);
            inbox
                .apply_status(
                    &env.event_id,
                    ws,
                    StatusTarget::External {
                        channel_id: &s.channel_id,
                        external_id: &s.message_external_id,
                    },
                    state,
                    "",
                    &s.error,
                )
                .await
        }
        Some(Payload::MessageAttachmentReady(a)) => {
            let outcome = a.attachment.unwrap_or_default();
            inbox
                .apply_attachment(&env.event_id, ws, &a.message_id, a.index, &outcome)
                .await
        }
        Some(Payload::MessageAttachmentFailed(a)) => {
            let outcome = a.attachment.unwrap_or_default();
            inbox
                .apply_attachment(&env.event_id, ws, &a.message_id, a.index, &outcome)
                .await
        }
        _ => Ok(()),
    }
}
