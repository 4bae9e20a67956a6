//! The inbox rules of PRODUCT.md: receiving opens or continues a contact's
//! conversation (new ones unassigned), replying assigns an unassigned
//! conversation to the replier, closing unassigns and leaves the queue.
//! Every state change is written with its events in one transaction.

use sqlx::Row;
use telenet_proto::common::v1::{Attachment, AttachmentState, PageInfo};
use telenet_proto::contacts::v1::UpsertByIdentityRequest;
use telenet_proto::contacts::v1::contacts_client::ContactsClient;
use telenet_proto::conversations::v1 as pb;
use telenet_proto::conversations::v1::conversations_server::Conversations;
use telenet_proto::conversations::v1::{ConversationStatus, MessageDirection, MessageStatus};
use telenet_proto::dispatch::v1::DeliveryState;
use telenet_proto::events::v1::{self as ev, event_envelope::Payload};
use telenet_store::consumer::HandleError;
use telenet_store::cursor::{Cursor, finish_page, page_size};
use telenet_store::sqlx;
use telenet_store::{Db, Tx, events, idempotency, micros_of, now_micros, outbox};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::rows::{self, CONVERSATION_COLUMNS, MESSAGE_COLUMNS};
use crate::{Config, Error, members, require};

const OPEN: i64 = ConversationStatus::Open as i64;
const CLOSED: i64 = ConversationStatus::Closed as i64;

#[derive(Clone)]
pub struct Inbox {
    db: Db,
    contacts: ContactsClient<Channel>,
    config: Config,
}

/// Events produced by one change, written to the outbox with it.
struct Changes {
    workspace_id: String,
    payloads: Vec<Payload>,
}

impl Changes {
    fn new(workspace_id: &str) -> Self {
        Self {
            workspace_id: workspace_id.to_owned(),
            payloads: Vec::new(),
        }
    }

    async fn write(self, tx: &mut Tx<'_>) -> Result<(), telenet_store::StoreError> {
        let events: Vec<_> = self
            .payloads
            .into_iter()
            .map(|p| events::to_bus(&events::envelope(&self.workspace_id, p, None)))
            .collect();
        outbox::enqueue(tx, &events).await
    }
}

impl Inbox {
    pub fn new(db: Db, contacts: ContactsClient<Channel>, config: Config) -> Self {
        Self {
            db,
            contacts,
            config,
        }
    }

    // ---- receiving -------------------------------------------------------

    /// Apply an inbound message: resolve the contact, append to its open
    /// conversation on that channel or open a new unassigned one.
    pub async fn receive_message(
        &self,
        event_id: &str,
        workspace_id: &str,
        msg: &ev::InboundMessageReceived,
    ) -> Result<(), HandleError> {
        let sender = msg.sender.clone().unwrap_or_default();
        let contact = self
            .contacts
            .clone()
            .upsert_by_identity(telenet_kit::telemetry::grpc_request(
                UpsertByIdentityRequest {
                    workspace_id: workspace_id.to_owned(),
                    channel_id: msg.channel_id.clone(),
                    external_id: sender.external_id.clone(),
                    display_name: sender.display_name.clone(),
                },
            ))
            .await
            .map_err(|s| match s.code() {
                tonic::Code::InvalidArgument => {
                    HandleError::Permanent(format!("contacts: {}", s.message()))
                }
                _ => HandleError::Transient(format!("contacts: {}", s.message())),
            })?
            .into_inner()
            .contact
            .ok_or_else(|| HandleError::Transient("contacts returned no contact".into()))?;

        let mut tx = self.db.begin().await?;
        if !idempotency::mark_processed(&mut tx, "conversations.inbound", event_id).await? {
            tx.rollback()
                .await
                .map_err(telenet_store::StoreError::from)?;
            return Ok(());
        }
        // The same provider message delivered under another event id.
        let seen = sqlx::query(
            "SELECT id FROM messages WHERE channel_id = $1 AND direction = $2 AND external_id = $3",
        )
        .bind(&msg.channel_id)
        .bind(MessageDirection::Inbound as i64)
        .bind(&msg.external_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(telenet_store::StoreError::from)?;
        if seen.is_some() {
            self.db.commit(tx).await?;
            return Ok(());
        }

        let now = now_micros();
        let mut changes = Changes::new(workspace_id);
        let open = sqlx::query(&format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations \
             WHERE workspace_id = $1 AND contact_id = $2 AND channel_id = $3 AND status = $4"
        ))
        .bind(workspace_id)
        .bind(&contact.id)
        .bind(&msg.channel_id)
        .bind(OPEN)
        .fetch_optional(&mut *tx)
        .await
        .map_err(telenet_store::StoreError::from)?;
        let conversation_id = match open {
            Some(row) => row
                .try_get::<String, _>("id")
                .map_err(telenet_store::StoreError::from)?,
            None => {
                let id = uuid::Uuid::now_v7().to_string();
                let inserted = sqlx::query(
                    "INSERT INTO conversations (id, workspace_id, contact_id, channel_id, contact_external_id, \
                     status, opened_at, last_message_at, message_count) VALUES ($1, $2, $3, $4, $5, $6, $7, $7, 0)",
                )
                .bind(&id)
                .bind(workspace_id)
                .bind(&contact.id)
                .bind(&msg.channel_id)
                .bind(&sender.external_id)
                .bind(OPEN)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(telenet_store::StoreError::from);
                if let Err(e) = inserted {
                    // Another message of the same contact opened it first.
                    return Err(if e.is_unique_violation() {
                        HandleError::Transient("conversation opened concurrently".into())
                    } else {
                        e.into()
                    });
                }
                let conv = self.conversation_in(&mut tx, workspace_id, &id).await?;
                changes
                    .payloads
                    .push(Payload::ConversationOpened(ev::ConversationOpened {
                        conversation: Some(conv),
                    }));
                id
            }
        };
        let message_id = uuid::Uuid::now_v7().to_string();
        sqlx::query(
            "INSERT INTO messages (id, workspace_id, conversation_id, channel_id, direction, text, attachments, \
             status, external_id, created_at, status_changed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
        )
        .bind(&message_id)
        .bind(workspace_id)
        .bind(&conversation_id)
        .bind(&msg.channel_id)
        .bind(MessageDirection::Inbound as i64)
        .bind(&msg.text)
        .bind(rows::encode_attachments(&msg.attachments))
        .bind(MessageStatus::Received as i64)
        .bind(&msg.external_id)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(telenet_store::StoreError::from)?;
        touch(&mut tx, &conversation_id, now).await?;
        let message = self.message_in(&mut tx, workspace_id, &message_id).await?;
        changes
            .payloads
            .push(Payload::MessageCreated(ev::MessageCreated {
                message: Some(message),
                channel_id: msg.channel_id.clone(),
                contact_id: contact.id.clone(),
            }));
        changes.write(&mut tx).await?;
        self.db.commit(tx).await?;
        Ok(())
    }

    /// Apply a delivery state reported by dispatch (by message id) or by the
    /// channel (by the provider's message id). States never go backwards.
    pub async fn apply_status(
        &self,
        event_id: &str,
        workspace_id: &str,
        target: StatusTarget<'_>,
        state: DeliveryState,
        external_id: &str,
        error: &str,
    ) -> Result<(), HandleError> {
        let Some(new_status) = status_of(state) else {
            return Ok(());
        };
        let mut tx = self.db.begin().await?;
        if !idempotency::mark_processed(&mut tx, "conversations.status", event_id).await? {
            tx.rollback()
                .await
                .map_err(telenet_store::StoreError::from)?;
            return Ok(());
        }
        let by_id =
            format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE workspace_id = $1 AND id = $2");
        let by_external = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages \
             WHERE workspace_id = $1 AND channel_id = $2 AND direction = $3 AND external_id = $4"
        );
        let query = match target {
            StatusTarget::MessageId(id) => sqlx::query(&by_id).bind(workspace_id).bind(id),
            StatusTarget::External {
                channel_id,
                external_id,
            } => sqlx::query(&by_external)
                .bind(workspace_id)
                .bind(channel_id)
                .bind(MessageDirection::Outbound as i64)
                .bind(external_id),
        };
        let row = query
            .fetch_optional(&mut *tx)
            .await
            .map_err(telenet_store::StoreError::from)?;
        let Some(row) = row else {
            // A channel's status can overtake dispatch's record of the
            // provider id; try again later.
            return Err(HandleError::Transient(
                "message of status not found (yet)".into(),
            ));
        };
        let message = rows::message(&row).map_err(telenet_store::StoreError::from)?;
        let current = MessageStatus::try_from(message.status).unwrap_or(MessageStatus::Unspecified);
        if !advances(current, new_status) {
            self.db.commit(tx).await?;
            return Ok(());
        }
        let now = now_micros();
        let external = if external_id.is_empty() {
            message.external_id.clone()
        } else {
            external_id.to_owned()
        };
        sqlx::query(
            "UPDATE messages SET status = $1, error = $2, external_id = $3, status_changed_at = $4 WHERE id = $5",
        )
        .bind(new_status as i64)
        .bind(error)
        .bind(&external)
        .bind(now)
        .bind(&message.id)
        .execute(&mut *tx)
        .await
        .map_err(telenet_store::StoreError::from)?;
        let channel_id: String = row
            .try_get("channel_id")
            .map_err(telenet_store::StoreError::from)?;
        let mut changes = Changes::new(workspace_id);
        changes
            .payloads
            .push(Payload::MessageStatusChanged(ev::MessageStatusChanged {
                message_id: message.id.clone(),
                conversation_id: message.conversation_id.clone(),
                status: new_status as i32,
                error: error.to_owned(),
                channel_id,
            }));
        changes.write(&mut tx).await?;
        self.db.commit(tx).await?;
        Ok(())
    }

    // ---- inbound media ---------------------------------------------------

    /// Apply media's outcome for one attachment of a stored message (events
    /// `message.attachment_ready` / `message.attachment_failed`): the state,
    /// blob id, size, MIME type, duration and error replace the pending
    /// ones. A ready
    /// attachment never goes back to failed.
    pub async fn apply_attachment(
        &self,
        event_id: &str,
        workspace_id: &str,
        message_id: &str,
        index: u32,
        outcome: &Attachment,
    ) -> Result<(), HandleError> {
        let mut tx = self.db.begin().await?;
        if !idempotency::mark_processed(&mut tx, "conversations.media", event_id).await? {
            tx.rollback()
                .await
                .map_err(telenet_store::StoreError::from)?;
            return Ok(());
        }
        // The attachments are rewritten whole, and outcomes of one message
        // arrive together: a no-op write first locks the row (portably; no
        // FOR UPDATE in SQLite), so the read below sees the outcomes
        // committed before and none is lost.
        let locked = sqlx::query(
            "UPDATE messages SET attachments = attachments WHERE workspace_id = $1 AND id = $2",
        )
        .bind(workspace_id)
        .bind(message_id)
        .execute(&mut *tx)
        .await
        .map_err(telenet_store::StoreError::from)?;
        if locked.rows_affected() == 0 {
            return Err(HandleError::Permanent(format!(
                "message {message_id} not found"
            )));
        }
        let row =
            sqlx::query("SELECT attachments FROM messages WHERE workspace_id = $1 AND id = $2")
                .bind(workspace_id)
                .bind(message_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(telenet_store::StoreError::from)?;
        let raw: Vec<u8> = row
            .try_get("attachments")
            .map_err(telenet_store::StoreError::from)?;
        let mut attachments = rows::decode_attachments(&raw);
        let Some(current) = usize::try_from(index)
            .ok()
            .and_then(|i| attachments.get_mut(i))
        else {
            return Err(HandleError::Permanent(format!(
                "message {message_id} has no attachment {index}"
            )));
        };
        let ready = AttachmentState::Ready as i32;
        if current.state != ready || outcome.state == ready {
            current.state = outcome.state;
            current.blob_id = outcome.blob_id.clone();
            current.error = outcome.error.clone();
            if outcome.size_bytes > 0 {
                current.size_bytes = outcome.size_bytes;
            }
            if !outcome.mime_type.is_empty() {
                current.mime_type = outcome.mime_type.clone();
            }
            if outcome.duration_ms > 0 {
                current.duration_ms = outcome.duration_ms;
            }
            sqlx::query("UPDATE messages SET attachments = $1 WHERE id = $2")
                .bind(rows::encode_attachments(&attachments))
                .bind(message_id)
                .execute(&mut *tx)
                .await
                .map_err(telenet_store::StoreError::from)?;
        }
        self.db.commit(tx).await?;
        Ok(())
    }

    // ---- agents ----------------------------------------------------------

    /// Reply in a conversation; assigns an unassigned conversation to the
    /// replier and asks dispatch to send.
    pub async fn send_message(
        &self,
        req: &pb::SendMessageRequest,
    ) -> Result<pb::SendMessageResponse, Error> {
        require("workspace_id", &req.workspace_id)?;
        require("conversation_id", &req.conversation_id)?;
        require("author_user_id", &req.author_user_id)?;
        if req.text.trim().is_empty() && req.attachments.is_empty() {
            return Err(Error::InvalidArgument(
                "text or attachments are required".into(),
            ));
        }
        if req.text.chars().count() > self.config.max_text_chars {
            return Err(Error::InvalidArgument(format!(
                "text is longer than {} characters",
                self.config.max_text_chars
            )));
        }
        if req.client_message_id.len() > 200 {
            return Err(Error::InvalidArgument(
                "client_message_id is longer than 200 bytes".into(),
            ));
        }
        if !members::is_member(&self.db, &req.workspace_id, &req.author_user_id).await? {
            return Err(Error::NotFound(
                "author is not a member of the workspace".into(),
            ));
        }
        if !req.client_message_id.is_empty()
            && let Some(existing) = self.message_by_client_id(req).await?
        {
            let conversation = self
                .get(&req.workspace_id, &existing.conversation_id)
                .await?;
            return Ok(pb::SendMessageResponse {
                message: Some(existing),
                conversation: Some(conversation),
            });
        }
        let mut tx = self.db.begin().await?;
        let conv = self
            .conversation_in(&mut tx, &req.workspace_id, &req.conversation_id)
            .await?;
        if conv.status == ConversationStatus::Closed as i32 {
            return Err(Error::FailedPrecondition(
                "conversation is closed; the contact's next message opens a new one".into(),
            ));
        }
        let now = now_micros();
        let mut changes = Changes::new(&req.workspace_id);
        if conv.assignee_user_id.is_empty() {
            assign_on_reply(&mut tx, &conv, &req.author_user_id, &mut changes).await?;
        }
        let id = uuid::Uuid::now_v7().to_string();
        sqlx::query(
            "INSERT INTO messages (id, workspace_id, conversation_id, channel_id, direction, author_user_id, text, \
             attachments, status, client_message_id, created_at, status_changed_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)",
        )
        .bind(&id)
        .bind(&req.workspace_id)
        .bind(&conv.id)
        .bind(&conv.channel_id)
        .bind(MessageDirection::Outbound as i64)
        .bind(&req.author_user_id)
        .bind(&req.text)
        .bind(rows::encode_attachments(&req.attachments))
        .bind(MessageStatus::Pending as i64)
        .bind(&req.client_message_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        touch(&mut tx, &conv.id, now).await?;
        let message = self.message_in(&mut tx, &req.workspace_id, &id).await?;
        changes
            .payloads
            .push(Payload::MessageCreated(ev::MessageCreated {
                message: Some(message.clone()),
                channel_id: conv.channel_id.clone(),
                contact_id: conv.contact_id.clone(),
            }));
        changes
            .payloads
            .push(Payload::OutboundRequested(ev::OutboundRequested {
                message_id: id.clone(),
                conversation_id: conv.id.clone(),
                channel_id: conv.channel_id.clone(),
                recipient_external_id: conv.contact_external_id.clone(),
                text: req.text.clone(),
                attachments: req.attachments.clone(),
            }));
        changes.write(&mut tx).await?;
        let conversation = self
            .conversation_in(&mut tx, &req.workspace_id, &conv.id)
            .await?;
        self.db.commit(tx).await?;
        Ok(pb::SendMessageResponse {
            message: Some(message),
            conversation: Some(conversation),
        })
    }

    /// Assign to a member (manual assignment).
    pub async fn assign(
        &self,
        req: &pb::AssignConversationRequest,
    ) -> Result<pb::Conversation, Error> {
        require("workspace_id", &req.workspace_id)?;
        require("conversation_id", &req.conversation_id)?;
        require("user_id", &req.user_id)?;
        if !members::is_member(&self.db, &req.workspace_id, &req.user_id).await? {
            return Err(Error::NotFound(
                "user is not a member of the workspace".into(),
            ));
        }
        let mut tx = self.db.begin().await?;
        let conv = self
            .conversation_in(&mut tx, &req.workspace_id, &req.conversation_id)
            .await?;
        if conv.status == ConversationStatus::Closed as i32 {
            return Err(Error::FailedPrecondition(
                "a closed conversation cannot be assigned".into(),
            ));
        }
        if conv.assignee_user_id == req.user_id {
            return Ok(conv);
        }
        let mut changes = Changes::new(&req.workspace_id);
        set_assignee(&mut tx, &conv, Some(&req.user_id)).await?;
        changes
            .payloads
            .push(Payload::ConversationAssigned(ev::ConversationAssigned {
                conversation_id: conv.id.clone(),
                assignee_user_id: req.user_id.clone(),
                previous_assignee_user_id: conv.assignee_user_id.clone(),
                by_user_id: req.caller_user_id.clone(),
                reason: "manual".into(),
                channel_id: conv.channel_id.clone(),
            }));
        changes.write(&mut tx).await?;
        let updated = self
            .conversation_in(&mut tx, &req.workspace_id, &conv.id)
            .await?;
        self.db.commit(tx).await?;
        Ok(updated)
    }

    pub async fn unassign(
        &self,
        req: &pb::UnassignConversationRequest,
    ) -> Result<pb::Conversation, Error> {
        require("workspace_id", &req.workspace_id)?;
        require("conversation_id", &req.conversation_id)?;
        let mut tx = self.db.begin().await?;
        let conv = self
            .conversation_in(&mut tx, &req.workspace_id, &req.conversation_id)
            .await?;
        if conv.assignee_user_id.is_empty() {
            return Ok(conv);
        }
        let mut changes = Changes::new(&req.workspace_id);
        set_assignee(&mut tx, &conv, None).await?;
        changes.payloads.push(Payload::ConversationUnassigned(
            ev::ConversationUnassigned {
                conversation_id: conv.id.clone(),
                previous_assignee_user_id: conv.assignee_user_id.clone(),
                by_user_id: req.caller_user_id.clone(),
                channel_id: conv.channel_id.clone(),
            },
        ));
        changes.write(&mut tx).await?;
        let updated = self
            .conversation_in(&mut tx, &req.workspace_id, &conv.id)
            .await?;
        self.db.commit(tx).await?;
        Ok(updated)
    }

    /// Close (resolve): out of the queue, unassigned from everyone, with an
    /// optional closing note.
    pub async fn close(
        &self,
        req: &pb::CloseConversationRequest,
    ) -> Result<pb::Conversation, Error> {
        require("workspace_id", &req.workspace_id)?;
        require("conversation_id", &req.conversation_id)?;
        let note = req.closing_note.clone().unwrap_or_default();
        if note.category.chars().count() > 100 {
            return Err(Error::InvalidArgument(
                "closing_note.category is longer than 100 characters".into(),
            ));
        }
        if note.summary.chars().count() > 10_000 {
            return Err(Error::InvalidArgument(
                "closing_note.summary is longer than 10000 characters".into(),
            ));
        }
        let mut tx = self.db.begin().await?;
        let conv = self
            .conversation_in(&mut tx, &req.workspace_id, &req.conversation_id)
            .await?;
        if conv.status == ConversationStatus::Closed as i32 {
            return Err(Error::FailedPrecondition(
                "conversation is already closed".into(),
            ));
        }
        let now = now_micros();
        sqlx::query(
            "UPDATE conversations SET status = $1, assignee_user_id = NULL, closed_at = $2, \
             closing_category = $3, closing_summary = $4, closed_by = $5 WHERE id = $6",
        )
        .bind(CLOSED)
        .bind(now)
        .bind(note.category.trim())
        .bind(note.summary.trim())
        .bind(&req.caller_user_id)
        .bind(&conv.id)
        .execute(&mut *tx)
        .await?;
        let closed = self
            .conversation_in(&mut tx, &req.workspace_id, &conv.id)
            .await?;
        let mut changes = Changes::new(&req.workspace_id);
        if !conv.assignee_user_id.is_empty() {
            changes.payloads.push(Payload::ConversationUnassigned(
                ev::ConversationUnassigned {
                    conversation_id: conv.id.clone(),
                    previous_assignee_user_id: conv.assignee_user_id.clone(),
                    by_user_id: req.caller_user_id.clone(),
                    channel_id: conv.channel_id.clone(),
                },
            ));
        }
        changes
            .payloads
            .push(Payload::ConversationClosed(ev::ConversationClosed {
                conversation: Some(closed.clone()),
            }));
        changes.write(&mut tx).await?;
        self.db.commit(tx).await?;
        Ok(closed)
    }

    // ---- reads -----------------------------------------------------------

    pub async fn get(
        &self,
        workspace_id: &str,
        conversation_id: &str,
    ) -> Result<pb::Conversation, Error> {
        require("workspace_id", workspace_id)?;
        require("conversation_id", conversation_id)?;
        let row = sqlx::query(&format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE workspace_id = $1 AND id = $2"
        ))
        .bind(workspace_id)
        .bind(conversation_id)
        .fetch_optional(self.db.pool())
        .await?
        .ok_or_else(|| Error::NotFound("conversation not found".into()))?;
        Ok(rows::conversation(&row)?)
    }

    /// Conversations by latest activity, newest first.
    pub async fn list(
        &self,
        req: &pb::ListConversationsRequest,
    ) -> Result<(Vec<pb::Conversation>, String), Error> {
        require("workspace_id", &req.workspace_id)?;
        let page = req.page.clone().unwrap_or_default();
        let size = page_size(page.page_size);
        let after = Cursor::decode(&page.page_token).map_err(Error::InvalidArgument)?;
        let (key, after_id) = after.map_or((i64::MAX, "\u{10FFFF}".to_owned()), |c| (c.key, c.id));
        let mut sql = format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE workspace_id = $1 \
             AND (last_message_at < $2 OR (last_message_at = $2 AND id < $3))"
        );
        let mut binds: Vec<Bind> = vec![
            Bind::Text(req.workspace_id.clone()),
            Bind::Int(key),
            Bind::Text(after_id),
        ];
        match ConversationStatus::try_from(req.status).unwrap_or(ConversationStatus::Unspecified) {
            ConversationStatus::Unspecified => {}
            s => {
                binds.push(Bind::Int(s as i64));
                sql.push_str(&format!(" AND status = ${}", binds.len()));
            }
        }
        match pb::AssigneeFilter::try_from(req.assignee).unwrap_or(pb::AssigneeFilter::Any) {
            pb::AssigneeFilter::Any => {}
            pb::AssigneeFilter::Unassigned => sql.push_str(" AND assignee_user_id IS NULL"),
            pb::AssigneeFilter::Me => {
                require("caller_user_id", &req.caller_user_id)?;
                binds.push(Bind::Text(req.caller_user_id.clone()));
                sql.push_str(&format!(" AND assignee_user_id = ${}", binds.len()));
            }
            pb::AssigneeFilter::User => {
                require("assignee_user_id", &req.assignee_user_id)?;
                binds.push(Bind::Text(req.assignee_user_id.clone()));
                sql.push_str(&format!(" AND assignee_user_id = ${}", binds.len()));
            }
        }
        if !req.contact_id.is_empty() {
            binds.push(Bind::Text(req.contact_id.clone()));
            sql.push_str(&format!(" AND contact_id = ${}", binds.len()));
        }
        binds.push(Bind::Int(size + 1));
        sql.push_str(&format!(
            " ORDER BY last_message_at DESC, id DESC LIMIT ${}",
            binds.len()
        ));
        let mut query = sqlx::query(&sql);
        for b in binds {
            query = match b {
                Bind::Text(t) => query.bind(t),
                Bind::Int(i) => query.bind(i),
            };
        }
        let rows = query.fetch_all(self.db.pool()).await?;
        let mut items = rows
            .iter()
            .map(rows::conversation)
            .collect::<Result<Vec<_>, _>>()?;
        let next = finish_page(&mut items, size, |last| Cursor {
            key: last.last_message_at.as_ref().map_or(0, micros_of),
            id: last.id.clone(),
        });
        Ok((items, next))
    }

    /// Messages of a conversation, oldest first.
    pub async fn messages(
        &self,
        req: &pb::ListMessagesRequest,
    ) -> Result<(Vec<pb::Message>, String), Error> {
        let conv = self.get(&req.workspace_id, &req.conversation_id).await?;
        let page = req.page.clone().unwrap_or_default();
        let size = page_size(page.page_size);
        let after = Cursor::decode(&page.page_token).map_err(Error::InvalidArgument)?;
        let (key, after_id) = after.map_or((i64::MIN, String::new()), |c| (c.key, c.id));
        let rows = sqlx::query(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE workspace_id = $1 AND conversation_id = $2 \
             AND (created_at > $3 OR (created_at = $3 AND id > $4)) ORDER BY created_at, id LIMIT $5"
        ))
        .bind(&req.workspace_id)
        .bind(&conv.id)
        .bind(key)
        .bind(after_id)
        .bind(size + 1)
        .fetch_all(self.db.pool())
        .await?;
        let mut items = rows
            .iter()
            .map(rows::message)
            .collect::<Result<Vec<_>, _>>()?;
        let next = finish_page(&mut items, size, |last| Cursor {
            key: last.created_at.as_ref().map_or(0, micros_of),
            id: last.id.clone(),
        });
        Ok((items, next))
    }

    async fn message_by_client_id(
        &self,
        req: &pb::SendMessageRequest,
    ) -> Result<Option<pb::Message>, Error> {
        let row = sqlx::query(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE workspace_id = $1 AND author_user_id = $2 AND client_message_id = $3"
        ))
        .bind(&req.workspace_id)
        .bind(&req.author_user_id)
        .bind(&req.client_message_id)
        .fetch_optional(self.db.pool())
        .await?;
        Ok(row.as_ref().map(rows::message).transpose()?)
    }

    async fn conversation_in(
        &self,
        tx: &mut Tx<'_>,
        workspace_id: &str,
        id: &str,
    ) -> Result<pb::Conversation, Error> {
        let row = sqlx::query(&format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE workspace_id = $1 AND id = $2"
        ))
        .bind(workspace_id)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| Error::NotFound("conversation not found".into()))?;
        Ok(rows::conversation(&row)?)
    }

    async fn message_in(
        &self,
        tx: &mut Tx<'_>,
        workspace_id: &str,
        id: &str,
    ) -> Result<pb::Message, Error> {
        let row = sqlx::query(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE workspace_id = $1 AND id = $2"
        ))
        .bind(workspace_id)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| Error::NotFound("message not found".into()))?;
        Ok(rows::message(&row)?)
    }
}

/// Which message a status is about.
#[derive(Debug, Clone, Copy)]
pub enum StatusTarget<'a> {
    MessageId(&'a str),
    External {
        channel_id: &'a str,
        external_id: &'a str,
    },
}

enum Bind {
    Text(String),
    Int(i64),
}

impl From<Error> for HandleError {
    fn from(e: Error) -> Self {
        match e {
            Error::Store(s) => s.into(),
            Error::Unavailable(m) => HandleError::Transient(m),
            other => HandleError::Permanent(other.to_string()),
        }
    }
}

/// PRODUCT.md 7: replying to an unassigned contact assigns it to the replier.
async fn assign_on_reply(
    tx: &mut Tx<'_>,
    conv: &pb::Conversation,
    replier: &str,
    changes: &mut Changes,
) -> Result<(), Error> {
    set_assignee(tx, conv, Some(replier)).await?;
    changes
        .payloads
        .push(Payload::ConversationAssigned(ev::ConversationAssigned {
            conversation_id: conv.id.clone(),
            assignee_user_id: replier.to_owned(),
            previous_assignee_user_id: String::new(),
            by_user_id: replier.to_owned(),
            reason: "reply".into(),
            channel_id: conv.channel_id.clone(),
        }));
    Ok(())
}

async fn set_assignee(
    tx: &mut Tx<'_>,
    conv: &pb::Conversation,
    user: Option<&str>,
) -> Result<(), Error> {
    sqlx::query("UPDATE conversations SET assignee_user_id = $1 WHERE id = $2")
        .bind(user.map(str::to_owned))
        .bind(&conv.id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn touch(
    tx: &mut Tx<'_>,
    conversation_id: &str,
    now: i64,
) -> Result<(), telenet_store::StoreError> {
    sqlx::query(
        "UPDATE conversations SET last_message_at = $1, message_count = message_count + 1 WHERE id = $2",
    )
    .bind(now)
    .bind(conversation_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn status_of(state: DeliveryState) -> Option<MessageStatus> {
    match state {
        DeliveryState::Sent => Some(MessageStatus::Sent),
        DeliveryState::Delivered => Some(MessageStatus::Delivered),
        DeliveryState::Read => Some(MessageStatus::Read),
        DeliveryState::Failed => Some(MessageStatus::Failed),
        DeliveryState::Pending | DeliveryState::Unspecified => None,
    }
}

/// Statuses move forward only (a late "delivered" never undoes "read"); a
/// failure ends a message that was not delivered yet.
pub fn advances(current: MessageStatus, next: MessageStatus) -> bool {
    fn rank(s: MessageStatus) -> i32 {
        match s {
            MessageStatus::Pending => 0,
            MessageStatus::Sent => 1,
            MessageStatus::Delivered => 2,
            MessageStatus::Read => 3,
            _ => -1,
        }
    }
    match (current, next) {
        (MessageStatus::Failed, _) | (MessageStatus::Received, _) => false,
        (c, MessageStatus::Failed) => matches!(c, MessageStatus::Pending | MessageStatus::Sent),
        (c, n) => rank(n) > rank(c),
    }
}

#[tonic::async_trait]
impl Conversations for Inbox {
    async fn list_conversations(
        &self,
        request: Request<pb::ListConversationsRequest>,
    ) -> Result<Response<pb::ListConversationsResponse>, Status> {
        let (conversations, next) = self
            .list(request.get_ref())
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(pb::ListConversationsResponse {
            conversations,
            page: Some(PageInfo {
                next_page_token: next,
            }),
        }))
    }

    async fn get_conversation(
        &self,
        request: Request<pb::GetConversationRequest>,
    ) -> Result<Response<pb::Conversation>, Status> {
        let r = request.get_ref();
        self.get(&r.workspace_id, &r.conversation_id)
            .await
            .map(Response::new)
            .map_err(|e| e.to_status())
    }

    async fn assign_conversation(
        &self,
        request: Request<pb::AssignConversationRequest>,
    ) -> Result<Response<pb::Conversation>, Status> {
        self.assign(request.get_ref())
            .await
            .map(Response::new)
            .map_err(|e| e.to_status())
    }

    async fn unassign_conversation(
        &self,
        request: Request<pb::UnassignConversationRequest>,
    ) -> Result<Response<pb::Conversation>, Status> {
        self.unassign(request.get_ref())
            .await
            .map(Response::new)
            .map_err(|e| e.to_status())
    }

    async fn close_conversation(
        &self,
        request: Request<pb::CloseConversationRequest>,
    ) -> Result<Response<pb::Conversation>, Status> {
        self.close(request.get_ref())
            .await
            .map(Response::new)
            .map_err(|e| e.to_status())
    }

    async fn list_messages(
        &self,
        request: Request<pb::ListMessagesRequest>,
    ) -> Result<Response<pb::ListMessagesResponse>, Status> {
        let (messages, next) = self
            .messages(request.get_ref())
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(pb::ListMessagesResponse {
            messages,
            page: Some(PageInfo {
                next_page_token: next,
            }),
        }))
    }

    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::SendMessageResponse>, Status> {
        Inbox::send_message(self, request.get_ref())
            .await
            .map(Response::new)
            .map_err(|e| e.to_status())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_never_go_backwards() {
        use MessageStatus::*;
        assert!(advances(Pending, Sent));
        assert!(advances(Sent, Delivered));
        assert!(advances(Pending, Read));
        assert!(!advances(Read, Delivered));
        assert!(!advances(Delivered, Sent));
        assert!(advances(Sent, Failed));
        assert!(!advances(Delivered, Failed));
        assert!(!advances(Failed, Sent));
        assert!(!advances(Received, Sent));
    }
}
