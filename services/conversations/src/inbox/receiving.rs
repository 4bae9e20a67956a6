//! PRODUCT.md 1, receiving: a contact's message joins its open
//! conversation on that channel, or opens a new, unassigned one (a contact
//! never seen before is created by the contacts service).

use telenet_proto::conversations::v1::MessageDirection;
use telenet_store::{idempotency, now_micros};

use super::events::Outbox;
use super::{Inbox, conversation_in, message_in, new_id};
use crate::consumers::INBOUND;
use crate::domain::conversation::open_conversation;
use crate::domain::{InboundMessage, Message};
use crate::error::Error;
use crate::store::{conversations, messages};

impl Inbox {
    /// Apply bus event `event_id`: `received` arrived in the workspace.
    pub async fn receive_message(
        &self,
        event_id: &str,
        workspace_id: &str,
        received: &InboundMessage,
    ) -> Result<(), Error> {
        self.store_received(event_id, workspace_id, received, false)
            .await
    }

    /// Apply bus event `event_id`: the channel's own account sent `echoed`
    /// from elsewhere to the contact it names as sender. It is stored in
    /// the contact's conversation as a reply already sent, by no member,
    /// and never dispatched; once per channel and provider id.
    pub async fn receive_echo(
        &self,
        event_id: &str,
        workspace_id: &str,
        echoed: &InboundMessage,
    ) -> Result<(), Error> {
        self.store_received(event_id, workspace_id, echoed, true)
            .await
    }

    async fn store_received(
        &self,
        event_id: &str,
        workspace_id: &str,
        received: &InboundMessage,
        echo: bool,
    ) -> Result<(), Error> {
        let direction = if echo {
            MessageDirection::Outbound
        } else {
            MessageDirection::Inbound
        };
        let contact_id = self.contacts.resolve_sender(workspace_id, received).await?;
        let Some(mut tx) = idempotency::begin_once(&self.db, INBOUND, event_id).await? else {
            return Ok(());
        };
        // The same provider message, delivered under another event id.
        if !received.external_id.is_empty()
            && messages::stored_on_channel(
                &mut tx,
                &received.channel_id,
                direction,
                &received.external_id,
            )
            .await?
        {
            self.db.commit(tx).await?;
            return Ok(());
        }
        let now = now_micros();
        let mut outbox = Outbox::new(workspace_id);
        // Locked: a close waits for this message, or this message finds
        // the conversation closed and opens the next one.
        let open = conversations::find_open_for_update(
            &mut tx,
            workspace_id,
            &contact_id,
            &received.channel_id,
        )
        .await?;
        let conversation = match open {
            Some(conversation) => conversation,
            None => {
                let opened = open_conversation(
                    new_id(),
                    workspace_id,
                    &contact_id,
                    &received.channel_id,
                    &received.sender_external_id,
                    now,
                );
                conversations::insert(&mut tx, &opened).await.map_err(|e| {
                    if e.is_unique_violation() {
                        Error::OpenedConcurrently
                    } else {
                        e.into()
                    }
                })?;
                let opened = conversation_in(&mut tx, workspace_id, &opened.id).await?;
                outbox.conversation_opened(&opened);
                opened
            }
        };
        let mut message = if echo {
            Message::echo(new_id(), &conversation, received, now)
        } else {
            Message::inbound(new_id(), &conversation, received, now)
        };
        // The quoted message, when we have it.
        if let Some(quoted) = messages::find_by_external(
            &mut tx,
            workspace_id,
            &received.channel_id,
            &received.reply_to_external_id,
        )
        .await?
        {
            message.reply_to_message_id = quoted.id;
        }
        messages::insert(&mut tx, &message, "").await.map_err(|e| {
            if e.is_unique_violation() {
                Error::StoredConcurrently
            } else {
                e.into()
            }
        })?;
        conversations::record_message(&mut tx, &conversation, now).await?;
        if !echo {
            // The contact wrote: their reply window (re)opens.
            conversations::record_inbound(&mut tx, &conversation, message.created_at).await?;
        }
        let message = message_in(&mut tx, workspace_id, &message.id).await?;
        outbox.message_created(&message, &contact_id);
        outbox.write(&mut tx).await?;
        self.db.commit(tx).await?;
        Ok(())
    }
}
