//! The bus handlers: inbound messages (from ingress: new messages, echoes,
//! reactions, edits and unsends), delivery statuses (from dispatch and from
//! the channels, single or watermarks) and media's outcome for received
//! attachments. Each event becomes a domain input for an [`Inbox`]
//! operation, which records the event in its transaction (redeliveries
//! change nothing); the delivery is acknowledged only after commit.

use telenet_bus::{BusError, SharedBus, SubscribeSpec};
use telenet_proto::common::v1::MessageChange;
use telenet_proto::dispatch::v1::DeliveryState;
use telenet_proto::events::v1::{self as ev, event_envelope::Payload};
use telenet_store::consumer::{self, HandleError, Incoming};
use telenet_store::events;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::domain::message::{Change, Watermark, error_with_code};
use crate::domain::{InboundMessage, StatusTarget};
use crate::error::Error;
use crate::inbox::Inbox;

/// Consumer groups: each is a durable queue, and the name under which its
/// processed events are recorded.
pub(crate) const INBOUND: &str = "conversations.inbound";
pub(crate) const STATUS: &str = "conversations.status";
pub(crate) const MEDIA: &str = "conversations.media";

/// Each group and the routing keys it binds.
const GROUPS: [(&str, &[&str]); 3] = [
    (INBOUND, &["inbound.message"]),
    (STATUS, &["inbound.status", "outbound.status"]),
    (
        MEDIA,
        &["message.attachment_ready", "message.attachment_failed"],
    ),
];

/// The specs of every group, as subscribed and as declared.
pub(crate) fn subscriptions() -> Vec<SubscribeSpec> {
    GROUPS
        .iter()
        .map(|(group, keys)| spec(group, keys))
        .collect()
}

fn spec(group: &str, keys: &[&str]) -> SubscribeSpec {
    SubscribeSpec::new(group, keys)
}

/// A subscribed consumer, consuming in its own task.
pub(crate) struct Consumer {
    pub group: &'static str,
    /// Stops it when dropped: a consumer nobody runs must not outlive its
    /// service.
    stop: DropGuard,
    handle: JoinHandle<()>,
}

/// Subscribe every group now (its queue keeps every event from this
/// moment on), then consume in spawned tasks until each is stopped
/// ([`Consumer::run_until`], or dropped).
pub(crate) async fn spawn(
    inbox: &Inbox,
    bus: &SharedBus,
    concurrency: usize,
) -> Result<Vec<Consumer>, BusError> {
    let mut consumers = Vec::with_capacity(GROUPS.len());
    for (group, keys) in GROUPS {
        let stop = CancellationToken::new();
        let inbox = inbox.clone();
        let handle = consumer::spawn(
            bus.clone(),
            spec(group, keys),
            concurrency,
            stop.clone(),
            move |incoming| {
                let inbox = inbox.clone();
                async move { handle(&inbox, incoming).await }
            },
        )
        .await?;
        consumers.push(Consumer {
            group,
            stop: stop.drop_guard(),
            handle,
        });
    }
    Ok(consumers)
}

impl Consumer {
    /// Consume until `phase` is cancelled, then finish the deliveries held.
    /// A consumer that stops on its own (its subscription ended, or it
    /// panicked) fails, so the process stops rather than run deaf.
    pub(crate) async fn run_until(self, phase: CancellationToken) -> anyhow::Result<()> {
        let Consumer {
            group,
            stop,
            mut handle,
        } = self;
        tokio::select! {
            () = phase.cancelled() => {
                drop(stop);
                handle
                    .await
                    .map_err(|e| anyhow::anyhow!("consumer {group} failed while stopping: {e}"))
            }
            ended = &mut handle => match ended {
                Ok(()) => Err(anyhow::anyhow!("consumer {group} stopped: its subscription ended")),
                Err(e) => Err(anyhow::anyhow!("consumer {group} failed: {e}")),
            },
        }
    }
}

async fn handle(inbox: &Inbox, incoming: Incoming) -> Result<(), HandleError> {
    let envelope = events::from_bus(&incoming.event)?;
    // When the event happened: for an inbound message, when ingress
    // accepted it, which dates the message.
    let occurred_at = envelope
        .occurred_at
        .as_ref()
        .map_or(0, telenet_store::micros_of);
    apply(
        inbox,
        &envelope.event_id,
        &envelope.workspace_id,
        occurred_at,
        envelope.payload,
    )
    .await
    .map_err(HandleError::from)
}

async fn apply(
    inbox: &Inbox,
    event_id: &str,
    workspace_id: &str,
    occurred_at: i64,
    payload: Option<Payload>,
) -> Result<(), Error> {
    match payload {
        Some(Payload::InboundMessageReceived(m)) => {
            let echo = m.echo;
            let change = change_of(m.change());
            let reaction = m.reaction.clone();
            let received = InboundMessage {
                received_at: occurred_at,
                ..m.into()
            };
            if let Some(reaction) = reaction {
                return inbox
                    .apply_reaction(
                        event_id,
                        workspace_id,
                        &received.channel_id,
                        &received.sender_external_id,
                        &reaction,
                    )
                    .await;
            }
            if let Some(change) = change {
                return inbox
                    .apply_change(event_id, workspace_id, &received, change)
                    .await;
            }
            if echo {
                return inbox.receive_echo(event_id, workspace_id, &received).await;
            }
            inbox
                .receive_message(event_id, workspace_id, &received)
                .await
        }
        Some(Payload::OutboundStatusChanged(s)) => {
            inbox
                .apply_status(
                    event_id,
                    workspace_id,
                    StatusTarget::MessageId(&s.message_id),
                    delivery_state(s.state),
                    &s.external_id,
                    &s.error,
                )
                .await
        }
        Some(Payload::InboundStatusReceived(s)) => {
            let error = error_with_code(&s.error_code, &s.error);
            // A watermark covers every reply to the contact up to it.
            if let (Some(watermark), true) = (&s.watermark, s.message_external_id.is_empty()) {
                return inbox
                    .apply_watermark(
                        event_id,
                        workspace_id,
                        &Watermark {
                            channel_id: &s.channel_id,
                            contact_external_id: &s.contact_external_id,
                            up_to: telenet_store::micros_of(watermark),
                        },
                        delivery_state(s.state),
                        &error,
                    )
                    .await;
            }
            let target = StatusTarget::External {
                channel_id: &s.channel_id,
                external_id: &s.message_external_id,
            };
            inbox
                .apply_status(
                    event_id,
                    workspace_id,
                    target,
                    delivery_state(s.state),
                    "",
                    &error,
                )
                .await
        }
        Some(Payload::MessageAttachmentReady(a)) => {
            let outcome = a.attachment.unwrap_or_default();
            inbox
                .apply_attachment(event_id, workspace_id, &a.message_id, a.index, &outcome)
                .await
        }
        Some(Payload::MessageAttachmentFailed(a)) => {
            let outcome = a.attachment.unwrap_or_default();
            inbox
                .apply_attachment(event_id, workspace_id, &a.message_id, a.index, &outcome)
                .await
        }
        // Nothing else is bound; anything that still arrives is acknowledged.
        _ => Ok(()),
    }
}

/// What a message change is, if it is one.
fn change_of(change: MessageChange) -> Option<Change> {
    match change {
        MessageChange::Edited => Some(Change::Edited),
        MessageChange::Unsent => Some(Change::Unsent),
        MessageChange::Unspecified => None,
    }
}

/// A state this build does not know tells nothing new.
fn delivery_state(state: i32) -> DeliveryState {
    DeliveryState::try_from(state).unwrap_or(DeliveryState::Unspecified)
}

/// A sender may be missing from a malformed event; it then reads as empty.
impl From<ev::InboundMessageReceived> for InboundMessage {
    fn from(m: ev::InboundMessageReceived) -> Self {
        let sender = m.sender.unwrap_or_default();
        InboundMessage {
            channel_id: m.channel_id,
            external_id: m.external_id,
            sender_external_id: sender.external_id,
            sender_display_name: sender.display_name,
            text: m.text,
            attachments: m.attachments,
            received_at: 0,
            location: m.location,
            reply_to_external_id: m.reply_to_external_id,
            unsupported_type: m.unsupported_type,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use telenet_store::testing::Backend;

    use super::*;
    use crate::Config;
    use crate::store::testing;

    /// How the process stops them (their phase), and how a process that
    /// never ran them drops them.
    #[tokio::test]
    async fn consumers_stop_with_their_phase_or_when_dropped_unrun() {
        let t = testing::db(Backend::Sqlite).await;
        let contacts = telenet_kit::grpc::client(
            "http://127.0.0.1:9",
            &Default::default(),
            &telenet_kit::metrics::Metrics::new(),
            "test",
        )
        .expect("channel");
        let inbox = Inbox::new(t.db.clone(), contacts, Config::default());
        let bus: SharedBus = Arc::new(telenet_bus::memory::MemoryBus::new(Default::default()));
        let mut consumers = spawn(&inbox, &bus, 1).await.expect("subscribed");
        let groups: Vec<_> = consumers.iter().map(|c| c.group).collect();
        assert_eq!(groups, [INBOUND, STATUS, MEDIA]);
        let stopped = |handle: JoinHandle<()>| async move {
            tokio::time::timeout(Duration::from_secs(5), handle)
                .await
                .expect("stopped in time")
                .expect("stopped cleanly");
        };

        let phase = CancellationToken::new();
        phase.cancel();
        consumers
            .remove(0)
            .run_until(phase)
            .await
            .expect("stopped by its phase");

        let Consumer { stop, handle, .. } = consumers.remove(0);
        drop(stop);
        stopped(handle).await;
    }
}
