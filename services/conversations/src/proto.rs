//! Domain values as the protobuf messages of the API: what the gRPC
//! services answer and what the events carry are the same messages.

use telenet_proto::common::v1::Reaction;
use telenet_proto::conversations::v1 as pb;
use telenet_store::timestamp;

use crate::domain::{Conversation, Member, Message, Workspace, WorkspaceSettings};

impl From<&Conversation> for pb::Conversation {
    fn from(c: &Conversation) -> Self {
        pb::Conversation {
            id: c.id.clone(),
            workspace_id: c.workspace_id.clone(),
            contact_id: c.contact_id.clone(),
            channel_id: c.channel_id.clone(),
            status: c.status as i32,
            assignee_user_id: c.assignee.clone().unwrap_or_default(),
            opened_at: Some(timestamp(c.opened_at)),
            closed_at: c.closed.as_ref().map(|closed| timestamp(closed.at)),
            closing_note: c.closed.as_ref().map(|closed| pb::ClosingNote {
                category: closed.note.category.clone(),
                summary: closed.note.summary.clone(),
                closed_by_user_id: closed.note.closed_by.clone(),
            }),
            last_message_at: Some(timestamp(c.last_message_at)),
            contact_external_id: c.contact_external_id.clone(),
            message_count: c.message_count,
            // Teams are not modelled yet.
            assignee_team_id: String::new(),
            reply_window_closes_at: c.reply_window_closes_at.map(timestamp),
        }
    }
}

impl From<&Message> for pb::Message {
    fn from(m: &Message) -> Self {
        pb::Message {
            id: m.id.clone(),
            workspace_id: m.workspace_id.clone(),
            conversation_id: m.conversation_id.clone(),
            direction: m.direction as i32,
            author_user_id: m.author_user_id.clone(),
            text: m.text.clone(),
            attachments: m.attachments.clone(),
            status: m.status as i32,
            external_id: m.external_id.clone(),
            error: m.error.clone(),
            created_at: Some(timestamp(m.created_at)),
            status_changed_at: Some(timestamp(m.status_changed_at)),
            location: m.location.clone(),
            reply_to_message_id: m.reply_to_message_id.clone(),
            reactions: m
                .reactions
                .iter()
                .map(|r| Reaction {
                    message_external_id: m.external_id.clone(),
                    emoji: r.emoji.clone(),
                })
                .collect(),
            unsupported_type: m.unsupported_type.clone(),
            edited_at: m.edited_at.map(timestamp),
            unsent_at: m.unsent_at.map(timestamp),
        }
    }
}

impl From<&Member> for pb::Member {
    fn from(m: &Member) -> Self {
        pb::Member {
            user_id: m.user_id.clone(),
            workspace_id: m.workspace_id.clone(),
            name: m.name.clone(),
            email: m.email.clone(),
            access_level: m.access_level as i32,
            created_at: Some(timestamp(m.created_at)),
            token_expires_at: None,
        }
    }
}

impl From<&Workspace> for pb::Workspace {
    fn from(w: &Workspace) -> Self {
        pb::Workspace {
            id: w.id.clone(),
            name: w.name.clone(),
            created_at: Some(timestamp(w.created_at)),
        }
    }
}

impl From<&WorkspaceSettings> for pb::WorkspaceSettings {
    fn from(s: &WorkspaceSettings) -> Self {
        pb::WorkspaceSettings {
            workspace_id: s.workspace_id.clone(),
            agent_visibility: s.agent_visibility as i32,
            agents_see_unassigned: s.agents_see_unassigned,
            closing_note_policy: s.closing_note_policy as i32,
            time_zone: s.time_zone.clone(),
            language: s.language.clone(),
            updated_at: (s.updated_at != 0).then(|| timestamp(s.updated_at)),
            updated_by_user_id: s.updated_by.clone(),
        }
    }
}
