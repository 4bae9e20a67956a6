//! `telenet.conversations.v1.Conversations`. RPCs not listed here answer
//! UNIMPLEMENTED (the generated defaults).

use telenet_proto::conversations::v1 as pb;
use telenet_proto::conversations::v1::ConversationStatus;
use telenet_proto::conversations::v1::conversations_server::Conversations;
use tonic::{Request, Response, Status};

use super::{page_info, page_request, status};
use crate::domain::conversation::{Assign, AssigneeFilter, Close, ConversationQuery, Unassign};
use crate::domain::{MessagesQuery, Reply};
use crate::inbox::Inbox;

#[derive(Clone)]
pub struct ConversationsApi {
    inbox: Inbox,
}

impl ConversationsApi {
    pub fn new(inbox: Inbox) -> Self {
        Self { inbox }
    }
}

#[tonic::async_trait]
impl Conversations for ConversationsApi {
    async fn list_conversations(
        &self,
        request: Request<pb::ListConversationsRequest>,
    ) -> Result<Response<pb::ListConversationsResponse>, Status> {
        let page = self
            .inbox
            .list_conversations(&conversation_query(request.into_inner()))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListConversationsResponse {
            conversations: page.items.iter().map(pb::Conversation::from).collect(),
            page: page_info(page.next),
        }))
    }

    async fn get_conversation(
        &self,
        request: Request<pb::GetConversationRequest>,
    ) -> Result<Response<pb::Conversation>, Status> {
        let r = request.get_ref();
        let conversation = self
            .inbox
            .get_conversation(&r.workspace_id, &r.conversation_id)
            .await
            .map_err(status)?;
        Ok(Response::new((&conversation).into()))
    }

    async fn assign_conversation(
        &self,
        request: Request<pb::AssignConversationRequest>,
    ) -> Result<Response<pb::Conversation>, Status> {
        let r = request.into_inner();
        let command = Assign {
            workspace_id: r.workspace_id,
            conversation_id: r.conversation_id,
            user_id: r.user_id,
            caller_user_id: r.caller_user_id,
        };
        let conversation = self.inbox.assign(&command).await.map_err(status)?;
        Ok(Response::new((&conversation).into()))
    }

    async fn unassign_conversation(
        &self,
        request: Request<pb::UnassignConversationRequest>,
    ) -> Result<Response<pb::Conversation>, Status> {
        let r = request.into_inner();
        let command = Unassign {
            workspace_id: r.workspace_id,
            conversation_id: r.conversation_id,
            caller_user_id: r.caller_user_id,
        };
        let conversation = self.inbox.unassign(&command).await.map_err(status)?;
        Ok(Response::new((&conversation).into()))
    }

    async fn close_conversation(
        &self,
        request: Request<pb::CloseConversationRequest>,
    ) -> Result<Response<pb::Conversation>, Status> {
        let r = request.into_inner();
        // Who closed is the caller, whatever the note says.
        let note = r.closing_note.unwrap_or_default();
        let command = Close {
            workspace_id: r.workspace_id,
            conversation_id: r.conversation_id,
            caller_user_id: r.caller_user_id,
            category: note.category,
            summary: note.summary,
        };
        let conversation = self.inbox.close(&command).await.map_err(status)?;
        Ok(Response::new((&conversation).into()))
    }

    async fn list_messages(
        &self,
        request: Request<pb::ListMessagesRequest>,
    ) -> Result<Response<pb::ListMessagesResponse>, Status> {
        let r = request.into_inner();
        let query = MessagesQuery {
            workspace_id: r.workspace_id,
            conversation_id: r.conversation_id,
            page: page_request(r.page),
        };
        let page = self.inbox.list_messages(&query).await.map_err(status)?;
        Ok(Response::new(pb::ListMessagesResponse {
            messages: page.items.iter().map(pb::Message::from).collect(),
            page: page_info(page.next),
        }))
    }

    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::SendMessageResponse>, Status> {
        let r = request.into_inner();
        let reply = Reply {
            workspace_id: r.workspace_id,
            conversation_id: r.conversation_id,
            author_user_id: r.author_user_id,
            text: r.text,
            attachments: r.attachments,
            client_message_id: r.client_message_id,
        };
        let sent = self.inbox.reply(&reply).await.map_err(status)?;
        Ok(Response::new(pb::SendMessageResponse {
            message: Some((&sent.message).into()),
            conversation: Some((&sent.conversation).into()),
        }))
    }
}

/// Unknown enum numbers read as their default: any status, anyone's.
fn conversation_query(r: pb::ListConversationsRequest) -> ConversationQuery {
    let status = match ConversationStatus::try_from(r.status) {
        Ok(ConversationStatus::Unspecified) | Err(_) => None,
        Ok(status) => Some(status),
    };
    let assignee = match pb::AssigneeFilter::try_from(r.assignee) {
        Ok(pb::AssigneeFilter::Any) | Err(_) => AssigneeFilter::Any,
        Ok(pb::AssigneeFilter::Me) => AssigneeFilter::Me,
        Ok(pb::AssigneeFilter::Unassigned) => AssigneeFilter::Unassigned,
        Ok(pb::AssigneeFilter::User) => AssigneeFilter::User,
    };
    ConversationQuery {
        workspace_id: r.workspace_id,
        caller_user_id: r.caller_user_id,
        status,
        assignee,
        assignee_user_id: r.assignee_user_id,
        contact_id: r.contact_id,
        page: page_request(r.page),
    }
}
