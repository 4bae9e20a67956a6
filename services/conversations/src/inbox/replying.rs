//! PRODUCT.md 2, 3, 5 and 7, replying: a member answers in an open
//! conversation with text or files; replying to an unassigned conversation
//! assigns it to them; dispatch is asked to send.

use telenet_store::{Tx, now_micros};

use super::events::Outbox;
use super::{Inbox, conversation_for_update, conversation_in, message_in, new_id};
use crate::domain::conversation::{
    assign_on_reply, check_reply_allowed, check_reply_window, with_reply_window,
};
use crate::domain::{Conversation, Message, Reply};
use crate::error::Error;
use crate::store::{conversations, members, messages};

/// A reply as stored (pending until dispatch reports), and its
/// conversation after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    pub message: Message,
    pub conversation: Conversation,
}

impl Inbox {
    /// Reply in a conversation. A retried reply (same author and client
    /// message id) returns the first one. A reply racing a close either
    /// comes before it (and the close follows) or finds it closed.
    pub async fn reply(&self, reply: &Reply) -> Result<Sent, Error> {
        reply.check(self.config.max_text_chars)?;
        if !members::is_member(self.db.pool(), &reply.workspace_id, &reply.author_user_id).await? {
            return Err(Error::AuthorNotMember);
        }
        let workspace_id = reply.workspace_id.as_str();
        // The channel's window, asked before the transaction (a call to
        // ingress); judged under the lock, on when the contact last wrote.
        let channel_id = conversations::find(self.db.pool(), workspace_id, &reply.conversation_id)
            .await?
            .ok_or(Error::ConversationNotFound)?
            .channel_id;
        let window = self.reply_window(workspace_id, &channel_id).await;
        let mut tx = self.db.begin().await?;
        let conversation =
            conversation_for_update(&mut tx, workspace_id, &reply.conversation_id).await?;
        // Under the lock, so a retry racing its first attempt finds it.
        if let Some(sent) = sent_before(&mut tx, reply).await? {
            return Ok(Sent {
                conversation: with_reply_window(sent.conversation, window.as_ref()),
                ..sent
            });
        }
        check_reply_allowed(&conversation)?;
        let now = now_micros();
        check_reply_window(&conversation, window.as_ref(), now)?;
        let mut outbox = Outbox::new(workspace_id);
        if let Some(assignment) = assign_on_reply(&conversation, &reply.author_user_id) {
            conversations::set_assignee(&mut tx, &conversation, Some(&assignment.assignee)).await?;
            outbox.conversation_assigned(&assignment);
        }
        let message = Message::reply(new_id(), &conversation, reply, now);
        messages::insert(&mut tx, &message, &reply.client_message_id).await?;
        conversations::record_message(&mut tx, &conversation, now).await?;
        let message = message_in(&mut tx, workspace_id, &message.id).await?;
        outbox.message_created(&message, &conversation.contact_id);
        outbox.outbound_requested(&message, &conversation, reply);
        outbox.write(&mut tx).await?;
        let conversation = conversation_in(&mut tx, workspace_id, &conversation.id).await?;
        self.db.commit(tx).await?;
        Ok(Sent {
            message,
            conversation: with_reply_window(conversation, window.as_ref()),
        })
    }
}

/// The reply stored before under the same client message id, if any, and
/// its conversation.
async fn sent_before(tx: &mut Tx<'_>, reply: &Reply) -> Result<Option<Sent>, Error> {
    if reply.client_message_id.is_empty() {
        return Ok(None);
    }
    let first = messages::find_by_client_id(
        &mut **tx,
        &reply.workspace_id,
        &reply.author_user_id,
        &reply.client_message_id,
    )
    .await?;
    let Some(message) = first else {
        return Ok(None);
    };
    let conversation = conversation_in(tx, &reply.workspace_id, &message.conversation_id).await?;
    Ok(Some(Sent {
        message,
        conversation,
    }))
}
