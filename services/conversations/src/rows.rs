//! Row ↔ protobuf mapping.

use prost::Message as _;
use sqlx::Row;
use telenet_proto::common::v1::Attachment;
use telenet_proto::conversations::v1 as pb;
use telenet_store::sqlx;
use telenet_store::timestamp;

pub const CONVERSATION_COLUMNS: &str = "id, workspace_id, contact_id, channel_id, contact_external_id, status, \
     assignee_user_id, opened_at, closed_at, closing_category, closing_summary, closed_by, \
     last_message_at, message_count";

pub const MESSAGE_COLUMNS: &str = "id, workspace_id, conversation_id, channel_id, direction, author_user_id, \
     text, attachments, status, external_id, error, created_at, status_changed_at";

pub fn conversation(row: &sqlx::any::AnyRow) -> Result<pb::Conversation, sqlx::Error> {
    let status: i64 = row.try_get("status")?;
    let closed_at: Option<i64> = row.try_get("closed_at")?;
    let closing_note = match closed_at {
        Some(_) => Some(pb::ClosingNote {
            category: row
                .try_get::<Option<String>, _>("closing_category")?
                .unwrap_or_default(),
            summary: row
                .try_get::<Option<String>, _>("closing_summary")?
                .unwrap_or_default(),
            closed_by_user_id: row
                .try_get::<Option<String>, _>("closed_by")?
                .unwrap_or_default(),
        }),
        None => None,
    };
    let count: i64 = row.try_get("message_count")?;
    Ok(pb::Conversation {
        id: row.try_get("id")?,
        workspace_id: row.try_get("workspace_id")?,
        contact_id: row.try_get("contact_id")?,
        channel_id: row.try_get("channel_id")?,
        status: i32::try_from(status).unwrap_or(0),
        assignee_user_id: row
            .try_get::<Option<String>, _>("assignee_user_id")?
            .unwrap_or_default(),
        opened_at: Some(timestamp(row.try_get("opened_at")?)),
        closed_at: closed_at.map(timestamp),
        closing_note,
        last_message_at: Some(timestamp(row.try_get("last_message_at")?)),
        contact_external_id: row.try_get("contact_external_id")?,
        message_count: u32::try_from(count).unwrap_or(u32::MAX),
        assignee_team_id: String::new(),
    })
}

pub fn message(row: &sqlx::any::AnyRow) -> Result<pb::Message, sqlx::Error> {
    let direction: i64 = row.try_get("direction")?;
    let status: i64 = row.try_get("status")?;
    let raw: Vec<u8> = row.try_get("attachments")?;
    Ok(pb::Message {
        id: row.try_get("id")?,
        workspace_id: row.try_get("workspace_id")?,
        conversation_id: row.try_get("conversation_id")?,
        direction: i32::try_from(direction).unwrap_or(0),
        author_user_id: row.try_get("author_user_id")?,
        text: row.try_get("text")?,
        attachments: decode_attachments(&raw),
        status: i32::try_from(status).unwrap_or(0),
        external_id: row.try_get("external_id")?,
        error: row.try_get("error")?,
        created_at: Some(timestamp(row.try_get("created_at")?)),
        status_changed_at: Some(timestamp(row.try_get("status_changed_at")?)),
    })
}

/// Attachments are stored as one protobuf `Attachments` blob per message.
#[derive(Clone, PartialEq, prost::Message)]
struct Attachments {
    #[prost(message, repeated, tag = "1")]
    items: Vec<Attachment>,
}

pub fn encode_attachments(items: &[Attachment]) -> Vec<u8> {
    Attachments {
        items: items.to_vec(),
    }
    .encode_to_vec()
}

pub fn decode_attachments(raw: &[u8]) -> Vec<Attachment> {
    Attachments::decode(raw)
        .map(|a| a.items)
        .unwrap_or_default()
}
