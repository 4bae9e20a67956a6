//! PRODUCT.md 7, manual assignment: a user gives a conversation to a
//! member of the workspace, or takes it from its assignee.

use super::events::Outbox;
use super::{Inbox, conversation_for_update, conversation_in};
use crate::domain::Conversation;
use crate::domain::conversation::{Assign, Unassign, assign_conversation, unassign_conversation};
use crate::error::Error;
use crate::store::{conversations, members};

impl Inbox {
    /// Assign to a member; assigning to the assignee changes nothing.
    /// Assignments racing each other take turns: each event names the
    /// assignee the one before it left.
    pub async fn assign(&self, command: &Assign) -> Result<Conversation, Error> {
        command.check()?;
        let workspace_id = command.workspace_id.as_str();
        if !members::is_member(self.db.pool(), workspace_id, &command.user_id).await? {
            return Err(Error::AssigneeNotMember);
        }
        let mut tx = self.db.begin().await?;
        let conversation =
            conversation_for_update(&mut tx, workspace_id, &command.conversation_id).await?;
        let Some(assignment) =
            assign_conversation(&conversation, &command.user_id, &command.caller_user_id)?
        else {
            return Ok(conversation);
        };
        conversations::set_assignee(&mut tx, &conversation, Some(&assignment.assignee)).await?;
        let mut outbox = Outbox::new(workspace_id);
        outbox.conversation_assigned(&assignment);
        outbox.write(&mut tx).await?;
        let assigned = conversation_in(&mut tx, workspace_id, &conversation.id).await?;
        self.db.commit(tx).await?;
        Ok(assigned)
    }

    /// Unassign; an unassigned conversation stays as it is.
    pub async fn unassign(&self, command: &Unassign) -> Result<Conversation, Error> {
        command.check()?;
        let workspace_id = command.workspace_id.as_str();
        let mut tx = self.db.begin().await?;
        let conversation =
            conversation_for_update(&mut tx, workspace_id, &command.conversation_id).await?;
        let Some(unassignment) = unassign_conversation(&conversation, &command.caller_user_id)
        else {
            return Ok(conversation);
        };
        conversations::set_assignee(&mut tx, &conversation, None).await?;
        let mut outbox = Outbox::new(workspace_id);
        outbox.conversation_unassigned(&unassignment);
        outbox.write(&mut tx).await?;
        let unassigned = conversation_in(&mut tx, workspace_id, &conversation.id).await?;
        self.db.commit(tx).await?;
        Ok(unassigned)
    }
}
