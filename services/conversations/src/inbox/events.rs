//! The events an operation produces, written to the outbox in its
//! transaction (a relay publishes them after commit), in the order they
//! happened.

use telenet_proto::conversations::v1 as pb;
use telenet_proto::events::v1::{self as ev, event_envelope::Payload};
use telenet_store::{StoreError, Tx, events, outbox};

use crate::domain::{Assignment, Conversation, DeliveryUpdate, Message, Reply, Unassignment};

/// The events of one change in one workspace.
pub(super) struct Outbox {
    workspace_id: String,
    payloads: Vec<Payload>,
}

impl Outbox {
    pub(super) fn new(workspace_id: &str) -> Self {
        Self {
            workspace_id: workspace_id.to_owned(),
            payloads: Vec::new(),
        }
    }

    /// `conversation.opened`
    pub(super) fn conversation_opened(&mut self, conversation: &Conversation) {
        self.payloads
            .push(Payload::ConversationOpened(ev::ConversationOpened {
                conversation: Some(conversation.into()),
            }));
    }

    /// `message.created`, either way.
    pub(super) fn message_created(&mut self, message: &Message, contact_id: &str) {
        self.payloads
            .push(Payload::MessageCreated(ev::MessageCreated {
                message: Some(message.into()),
                channel_id: message.channel_id.clone(),
                contact_id: contact_id.to_owned(),
            }));
    }

    /// `message.updated`: edited, unsent, or its reactions changed.
    pub(super) fn message_updated(&mut self, message: &Message, contact_id: &str) {
        self.payloads
            .push(Payload::MessageUpdated(ev::MessageUpdated {
                message: Some(message.into()),
                channel_id: message.channel_id.clone(),
                contact_id: contact_id.to_owned(),
            }));
    }

    /// `conversation.assigned`
    pub(super) fn conversation_assigned(&mut self, a: &Assignment) {
        self.payloads
            .push(Payload::ConversationAssigned(ev::ConversationAssigned {
                conversation_id: a.conversation_id.clone(),
                assignee_user_id: a.assignee.clone(),
                previous_assignee_user_id: a.previous.clone().unwrap_or_default(),
                by_user_id: a.by.clone(),
                reason: a.reason.as_str().to_owned(),
                channel_id: a.channel_id.clone(),
            }));
    }

    /// `conversation.unassigned`
    pub(super) fn conversation_unassigned(&mut self, u: &Unassignment) {
        self.payloads.push(Payload::ConversationUnassigned(
            ev::ConversationUnassigned {
                conversation_id: u.conversation_id.clone(),
                previous_assignee_user_id: u.previous.clone(),
                by_user_id: u.by.clone(),
                channel_id: u.channel_id.clone(),
            },
        ));
    }

    /// `conversation.closed`, with the closing note.
    pub(super) fn conversation_closed(&mut self, conversation: &Conversation) {
        self.payloads
            .push(Payload::ConversationClosed(ev::ConversationClosed {
                conversation: Some(pb::Conversation::from(conversation)),
            }));
    }

    /// `outbound.requested`: dispatch sends the reply to the contact.
    pub(super) fn outbound_requested(
        &mut self,
        message: &Message,
        conversation: &Conversation,
        reply: &Reply,
    ) {
        self.payloads
            .push(Payload::OutboundRequested(ev::OutboundRequested {
                message_id: message.id.clone(),
                conversation_id: conversation.id.clone(),
                channel_id: conversation.channel_id.clone(),
                recipient_external_id: conversation.contact_external_id.clone(),
                text: reply.text.clone(),
                attachments: reply.attachments.clone(),
                contact_last_message_at: conversation.last_inbound_at.map(telenet_store::timestamp),
                ..Default::default()
            }));
    }

    /// `message.status`
    pub(super) fn message_status_changed(&mut self, message: &Message, update: &DeliveryUpdate) {
        self.payloads
            .push(Payload::MessageStatusChanged(ev::MessageStatusChanged {
                message_id: message.id.clone(),
                conversation_id: message.conversation_id.clone(),
                status: update.status as i32,
                error: update.error.clone(),
                channel_id: message.channel_id.clone(),
            }));
    }

    /// Enqueue the events in the change's transaction.
    pub(super) async fn write(self, tx: &mut Tx<'_>) -> Result<(), StoreError> {
        let events: Vec<_> = self
            .payloads
            .into_iter()
            .map(|p| events::to_bus(&events::envelope(&self.workspace_id, p, None)))
            .collect();
        outbox::enqueue(tx, &events).await
    }
}
