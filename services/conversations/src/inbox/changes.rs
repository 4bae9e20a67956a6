//! Changes to stored messages that channels report: a contact's reaction
//! (the latest emoji of each contact; an empty one removes theirs), and a
//! sender's edit or unsend. None of them is a new message: they neither
//! count as activity nor reopen a conversation, and each is announced as
//! `message.updated`. A change to a message TELENET never stored (sent
//! before the channel was connected, or elsewhere) is acknowledged and
//! logged.

use telenet_proto::common::v1::Reaction;
use telenet_store::{Tx, idempotency, now_micros};

use super::events::Outbox;
use super::{Inbox, conversation_in};
use crate::consumers::INBOUND;
use crate::domain::message::{Change, apply_change, apply_reaction, arrival_time};
use crate::domain::{InboundMessage, Message};
use crate::error::Error;
use crate::store::messages;

impl Inbox {
    /// Apply bus event `event_id`: the contact at `reactor_external_id`
    /// reacted on the channel to the message `reaction` names.
    pub async fn apply_reaction(
        &self,
        event_id: &str,
        workspace_id: &str,
        channel_id: &str,
        reactor_external_id: &str,
        reaction: &Reaction,
    ) -> Result<(), Error> {
        let Some(mut tx) = idempotency::begin_once(&self.db, INBOUND, event_id).await? else {
            return Ok(());
        };
        let Some(mut message) = message_for_change(
            &mut tx,
            workspace_id,
            channel_id,
            &reaction.message_external_id,
        )
        .await?
        else {
            tracing::info!(
                channel_id,
                external_id = reaction.message_external_id,
                "reaction to a message never stored; ignored"
            );
            self.db.commit(tx).await?;
            return Ok(());
        };
        if apply_reaction(&mut message.reactions, reactor_external_id, &reaction.emoji) {
            self.updated(&mut tx, &message).await?;
        }
        self.db.commit(tx).await?;
        Ok(())
    }

    /// Apply bus event `event_id`: the sender edited or unsent the message
    /// `changed.external_id` names (an edit carries the new text).
    pub async fn apply_change(
        &self,
        event_id: &str,
        workspace_id: &str,
        changed: &InboundMessage,
        change: Change,
    ) -> Result<(), Error> {
        let Some(mut tx) = idempotency::begin_once(&self.db, INBOUND, event_id).await? else {
            return Ok(());
        };
        let Some(mut message) = message_for_change(
            &mut tx,
            workspace_id,
            &changed.channel_id,
            &changed.external_id,
        )
        .await?
        else {
            tracing::info!(
                channel_id = changed.channel_id,
                external_id = changed.external_id,
                ?change,
                "change of a message never stored; ignored"
            );
            self.db.commit(tx).await?;
            return Ok(());
        };
        let at = arrival_time(changed.received_at, now_micros());
        if apply_change(&mut message, change, &changed.text, at) {
            self.updated(&mut tx, &message).await?;
        }
        self.db.commit(tx).await?;
        Ok(())
    }

    /// Store the changed message and announce it.
    async fn updated(&self, tx: &mut Tx<'_>, message: &Message) -> Result<(), Error> {
        messages::set_changed(tx, message).await?;
        let conversation =
            conversation_in(tx, &message.workspace_id, &message.conversation_id).await?;
        let mut outbox = Outbox::new(&message.workspace_id);
        outbox.message_updated(message, &conversation.contact_id);
        outbox.write(tx).await?;
        Ok(())
    }
}

/// The workspace's message on the channel under the provider's id, locked
/// for its change.
async fn message_for_change(
    tx: &mut Tx<'_>,
    workspace_id: &str,
    channel_id: &str,
    external_id: &str,
) -> Result<Option<Message>, Error> {
    let Some(found) = messages::find_by_external(tx, workspace_id, channel_id, external_id).await?
    else {
        return Ok(None);
    };
    Ok(messages::find_for_update(tx, workspace_id, &found.id).await?)
}
