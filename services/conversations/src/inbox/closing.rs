//! PRODUCT.md 8 and 9, closing: the conversation leaves the queue,
//! unassigned from every user, with an optional closing note; the
//! contact's next message opens a new one.

use telenet_store::now_micros;

use super::events::Outbox;
use super::{Inbox, conversation_for_update, conversation_in};
use crate::domain::Conversation;
use crate::domain::conversation::{Close, close_conversation};
use crate::error::Error;
use crate::store::conversations;

impl Inbox {
    /// Close (resolve) a conversation. It closes once: of closes racing
    /// each other one wins, the others find it closed.
    pub async fn close(&self, command: &Close) -> Result<Conversation, Error> {
        let note = command.check()?;
        let workspace_id = command.workspace_id.as_str();
        let mut tx = self.db.begin().await?;
        let conversation =
            conversation_for_update(&mut tx, workspace_id, &command.conversation_id).await?;
        let closing = close_conversation(&conversation, note)?;
        conversations::close(&mut tx, &conversation, &closing.note, now_micros()).await?;
        let closed = conversation_in(&mut tx, workspace_id, &conversation.id).await?;
        let mut outbox = Outbox::new(workspace_id);
        if let Some(unassignment) = &closing.unassigned {
            outbox.conversation_unassigned(unassignment);
        }
        outbox.conversation_closed(&closed);
        outbox.write(&mut tx).await?;
        self.db.commit(tx).await?;
        Ok(closed)
    }
}
