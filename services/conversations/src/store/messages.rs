//! The `messages` table. Attachments are stored as one protobuf
//! `Attachments` blob per message.

use prost::Message as _;
use sqlx::any::AnyRow;
use sqlx::{Any, Executor, Row};
use telenet_proto::common::v1::{Attachment, Location};
use telenet_proto::conversations::v1::{MessageDirection, MessageStatus};
use telenet_store::cursor::Cursor;
use telenet_store::{StoreError, Tx, sqlx};

use super::enum_or;
use crate::domain::message::{DeliveryUpdate, Message, ReactionOf};

const COLUMNS: &str = "id, workspace_id, conversation_id, channel_id, direction, author_user_id, \
     text, attachments, status, external_id, error, created_at, status_changed_at, location, \
     reply_to_message_id, unsupported_type, reactions, edited_at, unsent_at";

/// A message's location, as stored: wrapped, so that any location (even
/// one at 0°, 0° with no name) encodes to something, and nothing is none.
#[derive(Clone, PartialEq, prost::Message)]
struct StoredLocation {
    #[prost(message, optional, tag = "1")]
    location: Option<Location>,
}

/// A message's reactions, as stored.
#[derive(Clone, PartialEq, prost::Message)]
struct StoredReactions {
    #[prost(message, repeated, tag = "1")]
    items: Vec<StoredReaction>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct StoredReaction {
    #[prost(string, tag = "1")]
    reactor_external_id: String,
    #[prost(string, tag = "2")]
    emoji: String,
}

fn encode_location(location: Option<&Location>) -> Vec<u8> {
    location.map_or_else(Vec::new, |l| {
        StoredLocation {
            location: Some(l.clone()),
        }
        .encode_to_vec()
    })
}

/// An empty or undecodable blob reads as no location.
fn decode_location(raw: &[u8]) -> Option<Location> {
    if raw.is_empty() {
        return None;
    }
    StoredLocation::decode(raw).ok().and_then(|l| l.location)
}

fn encode_reactions(items: &[ReactionOf]) -> Vec<u8> {
    StoredReactions {
        items: items
            .iter()
            .map(|r| StoredReaction {
                reactor_external_id: r.reactor_external_id.clone(),
                emoji: r.emoji.clone(),
            })
            .collect(),
    }
    .encode_to_vec()
}

/// An undecodable blob reads as no reactions rather than hiding the
/// message.
fn decode_reactions(raw: &[u8]) -> Vec<ReactionOf> {
    StoredReactions::decode(raw)
        .map(|r| {
            r.items
                .into_iter()
                .map(|i| ReactionOf {
                    reactor_external_id: i.reactor_external_id,
                    emoji: i.emoji,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A message's attachments, as stored.
#[derive(Clone, PartialEq, prost::Message)]
struct Attachments {
    #[prost(message, repeated, tag = "1")]
    items: Vec<Attachment>,
}

fn encode_attachments(items: &[Attachment]) -> Vec<u8> {
    Attachments {
        items: items.to_vec(),
    }
    .encode_to_vec()
}

/// An undecodable blob reads as no attachments rather than hiding the
/// message.
fn decode_attachments(raw: &[u8]) -> Vec<Attachment> {
    Attachments::decode(raw)
        .map(|a| a.items)
        .unwrap_or_default()
}

fn decode(row: &AnyRow) -> Result<Message, sqlx::Error> {
    let raw: Vec<u8> = row.try_get("attachments")?;
    let location: Vec<u8> = row.try_get("location")?;
    let reactions: Vec<u8> = row.try_get("reactions")?;
    Ok(Message {
        id: row.try_get("id")?,
        workspace_id: row.try_get("workspace_id")?,
        conversation_id: row.try_get("conversation_id")?,
        channel_id: row.try_get("channel_id")?,
        direction: enum_or(row.try_get("direction")?, MessageDirection::Unspecified),
        author_user_id: row.try_get("author_user_id")?,
        text: row.try_get("text")?,
        attachments: decode_attachments(&raw),
        status: enum_or(row.try_get("status")?, MessageStatus::Unspecified),
        external_id: row.try_get("external_id")?,
        error: row.try_get("error")?,
        created_at: row.try_get("created_at")?,
        status_changed_at: row.try_get("status_changed_at")?,
        location: decode_location(&location),
        reply_to_message_id: row.try_get("reply_to_message_id")?,
        unsupported_type: row.try_get("unsupported_type")?,
        reactions: decode_reactions(&reactions),
        edited_at: row.try_get("edited_at")?,
        unsent_at: row.try_get("unsent_at")?,
    })
}

/// One message of the workspace.
pub(crate) async fn find<'c>(
    conn: impl Executor<'c, Database = Any>,
    workspace_id: &str,
    id: &str,
) -> Result<Option<Message>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM messages WHERE workspace_id = $1 AND id = $2"
    ))
    .bind(workspace_id)
    .bind(id)
    .fetch_optional(conn)
    .await?;
    Ok(row.as_ref().map(decode).transpose()?)
}

/// Whether the provider's message was stored on the channel already in
/// that direction (an echo is an outbound one). Provider ids are unique
/// per channel and direction (index `messages_external`), so the channel
/// alone identifies it.
pub(crate) async fn stored_on_channel(
    tx: &mut Tx<'_>,
    channel_id: &str,
    direction: MessageDirection,
    external_id: &str,
) -> Result<bool, StoreError> {
    let row = sqlx::query(
        "SELECT id FROM messages WHERE channel_id = $1 AND direction = $2 AND external_id = $3",
    )
    .bind(channel_id)
    .bind(direction as i64)
    .bind(external_id)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.is_some())
}

/// A message of the workspace's channel, either way, by the provider's id
/// (the contact's first when both directions carry it).
pub(crate) async fn find_by_external(
    tx: &mut Tx<'_>,
    workspace_id: &str,
    channel_id: &str,
    external_id: &str,
) -> Result<Option<Message>, StoreError> {
    if external_id.is_empty() {
        return Ok(None);
    }
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM messages \
         WHERE workspace_id = $1 AND channel_id = $2 AND external_id = $3 \
         ORDER BY direction LIMIT 1"
    ))
    .bind(workspace_id)
    .bind(channel_id)
    .bind(external_id)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.as_ref().map(decode).transpose()?)
}

/// A message about to change, locked until the transaction ends (a no-op
/// write first, as [`attachments_for_update`]); `None` for one the
/// workspace does not have.
pub(crate) async fn find_for_update(
    tx: &mut Tx<'_>,
    workspace_id: &str,
    id: &str,
) -> Result<Option<Message>, StoreError> {
    let locked =
        sqlx::query("UPDATE messages SET status = status WHERE workspace_id = $1 AND id = $2")
            .bind(workspace_id)
            .bind(id)
            .execute(&mut **tx)
            .await?;
    if locked.rows_affected() == 0 {
        return Ok(None);
    }
    find(&mut **tx, workspace_id, id).await
}

/// Store what a sender's change or a reaction left of a message: its text,
/// when it was edited or unsent, its reactions.
pub(crate) async fn set_changed(tx: &mut Tx<'_>, m: &Message) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE messages SET text = $1, edited_at = $2, unsent_at = $3, reactions = $4 \
         WHERE workspace_id = $5 AND id = $6",
    )
    .bind(&m.text)
    .bind(m.edited_at)
    .bind(m.unsent_at)
    .bind(encode_reactions(&m.reactions))
    .bind(&m.workspace_id)
    .bind(&m.id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The replies sent on the workspace's channel to the contact at
/// `contact_external_id` and created at or before `up_to`, oldest first
/// (a watermark status covers them all).
pub(crate) async fn sent_up_to(
    tx: &mut Tx<'_>,
    workspace_id: &str,
    channel_id: &str,
    contact_external_id: &str,
    up_to: i64,
) -> Result<Vec<Message>, StoreError> {
    let columns = COLUMNS
        .split(", ")
        .map(|c| format!("m.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ");
    let rows = sqlx::query(&format!(
        "SELECT {columns} FROM messages m \
         JOIN conversations c ON c.id = m.conversation_id AND c.workspace_id = m.workspace_id \
         WHERE m.workspace_id = $1 AND m.channel_id = $2 AND m.direction = $3 \
         AND c.contact_external_id = $4 AND m.created_at <= $5 \
         ORDER BY m.created_at, m.id"
    ))
    .bind(workspace_id)
    .bind(channel_id)
    .bind(MessageDirection::Outbound as i64)
    .bind(contact_external_id)
    .bind(up_to)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows.iter().map(decode).collect::<Result<_, _>>()?)
}

/// A reply, found by the provider's id the channel reports it under.
pub(crate) async fn find_sent(
    tx: &mut Tx<'_>,
    workspace_id: &str,
    channel_id: &str,
    external_id: &str,
) -> Result<Option<Message>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM messages \
         WHERE workspace_id = $1 AND channel_id = $2 AND direction = $3 AND external_id = $4"
    ))
    .bind(workspace_id)
    .bind(channel_id)
    .bind(MessageDirection::Outbound as i64)
    .bind(external_id)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.as_ref().map(decode).transpose()?)
}

/// A reply found by its author's idempotency key.
pub(crate) async fn find_by_client_id<'c>(
    conn: impl Executor<'c, Database = Any>,
    workspace_id: &str,
    author_user_id: &str,
    client_message_id: &str,
) -> Result<Option<Message>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM messages \
         WHERE workspace_id = $1 AND author_user_id = $2 AND client_message_id = $3"
    ))
    .bind(workspace_id)
    .bind(author_user_id)
    .bind(client_message_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.as_ref().map(decode).transpose()?)
}

/// Store a new message; `client_message_id` is the replier's idempotency
/// key (empty for none). A provider id or a key stored before is a unique
/// violation.
pub(crate) async fn insert(
    tx: &mut Tx<'_>,
    m: &Message,
    client_message_id: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO messages (id, workspace_id, conversation_id, channel_id, direction, author_user_id, \
         text, attachments, status, external_id, error, client_message_id, created_at, status_changed_at, \
         location, reply_to_message_id, unsupported_type, reactions, edited_at, unsent_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)",
    )
    .bind(&m.id)
    .bind(&m.workspace_id)
    .bind(&m.conversation_id)
    .bind(&m.channel_id)
    .bind(m.direction as i64)
    .bind(&m.author_user_id)
    .bind(&m.text)
    .bind(encode_attachments(&m.attachments))
    .bind(m.status as i64)
    .bind(&m.external_id)
    .bind(&m.error)
    .bind(client_message_id)
    .bind(m.created_at)
    .bind(m.status_changed_at)
    .bind(encode_location(m.location.as_ref()))
    .bind(&m.reply_to_message_id)
    .bind(&m.unsupported_type)
    .bind(encode_reactions(&m.reactions))
    .bind(m.edited_at)
    .bind(m.unsent_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Store a message's new delivery status.
pub(crate) async fn set_delivery(
    tx: &mut Tx<'_>,
    m: &Message,
    update: &DeliveryUpdate,
    at: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE messages SET status = $1, error = $2, external_id = $3, status_changed_at = $4 \
         WHERE workspace_id = $5 AND id = $6",
    )
    .bind(update.status as i64)
    .bind(&update.error)
    .bind(&update.external_id)
    .bind(at)
    .bind(&m.workspace_id)
    .bind(&m.id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A message's attachments, locked until the transaction ends; `None` for
/// a message the workspace does not have.
///
/// Attachments are rewritten whole, and the outcomes of one message's
/// attachments arrive together: a no-op write first locks the row
/// (portably; SQLite has no `FOR UPDATE`), so the read sees every outcome
/// committed before and none is lost.
pub(crate) async fn attachments_for_update(
    tx: &mut Tx<'_>,
    workspace_id: &str,
    id: &str,
) -> Result<Option<Vec<Attachment>>, StoreError> {
    let locked = sqlx::query(
        "UPDATE messages SET attachments = attachments WHERE workspace_id = $1 AND id = $2",
    )
    .bind(workspace_id)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    if locked.rows_affected() == 0 {
        return Ok(None);
    }
    let row = sqlx::query("SELECT attachments FROM messages WHERE workspace_id = $1 AND id = $2")
        .bind(workspace_id)
        .bind(id)
        .fetch_one(&mut **tx)
        .await?;
    let raw: Vec<u8> = row.try_get("attachments")?;
    Ok(Some(decode_attachments(&raw)))
}

/// Rewrite a message's attachments.
pub(crate) async fn set_attachments(
    tx: &mut Tx<'_>,
    workspace_id: &str,
    id: &str,
    attachments: &[Attachment],
) -> Result<(), StoreError> {
    sqlx::query("UPDATE messages SET attachments = $1 WHERE workspace_id = $2 AND id = $3")
        .bind(encode_attachments(attachments))
        .bind(workspace_id)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Up to `limit` messages of a conversation, oldest first, after the
/// `after` position.
pub(crate) async fn history<'c>(
    conn: impl Executor<'c, Database = Any>,
    workspace_id: &str,
    conversation_id: &str,
    after: Option<&Cursor>,
    limit: i64,
) -> Result<Vec<Message>, StoreError> {
    // Without a position, start below every stored key.
    let (key, after_id) = after.map_or((i64::MIN, String::new()), |c| (c.key, c.id.clone()));
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM messages WHERE workspace_id = $1 AND conversation_id = $2 \
         AND (created_at > $3 OR (created_at = $3 AND id > $4)) ORDER BY created_at, id LIMIT $5"
    ))
    .bind(workspace_id)
    .bind(conversation_id)
    .bind(key)
    .bind(after_id)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows.iter().map(decode).collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use telenet_proto::common::v1::AttachmentState;
    use telenet_store::Db;
    use telenet_store::testing::Backend;

    use super::*;
    use crate::domain::conversation::{Conversation, open_conversation};
    use crate::domain::message::{InboundMessage, Reply};
    use crate::store::{conversations, testing};

    telenet_store::on_both_backends!(
        messages_keep_their_text_and_attachments,
        a_provider_message_is_stored_once_per_channel,
        a_retried_reply_is_found_by_its_client_id,
        replies_are_found_by_the_provider_id_they_were_sent_under,
        delivery_statuses_are_stored,
        attachments_are_read_locked_and_rewritten,
        history_pages_oldest_first,
        workspaces_never_see_each_others_messages,
        what_channels_bring_is_stored_and_read_back,
        changes_and_reactions_are_rewritten,
        a_watermark_finds_the_contacts_replies_up_to_it,
    );

    async fn with_conversation(backend: Backend) -> (testing::TestDb, Conversation) {
        let t = testing::db(backend).await;
        let c = open_conversation("c1".into(), "ws", "ana", "ch", "+34", 1);
        let mut tx = t.db.begin().await.expect("begin");
        conversations::insert(&mut tx, &c).await.expect("insert");
        t.db.commit(tx).await.expect("commit");
        (t, c)
    }

    fn received(c: &Conversation, id: &str, external_id: &str, at: i64) -> Message {
        let inbound = InboundMessage {
            channel_id: c.channel_id.clone(),
            external_id: external_id.into(),
            text: format!("text of {id}"),
            ..Default::default()
        };
        Message::inbound(id.into(), c, &inbound, at)
    }

    fn reply(c: &Conversation, id: &str, at: i64) -> Message {
        let reply = Reply {
            author_user_id: "ari".into(),
            text: "¡Hola! 👋".into(),
            ..Default::default()
        };
        Message::reply(id.into(), c, &reply, at)
    }

    async fn stored(db: &Db, messages: &[(Message, &str)]) {
        let mut tx = db.begin().await.expect("begin");
        for (m, client_id) in messages {
            insert(&mut tx, m, client_id).await.expect("insert");
        }
        db.commit(tx).await.expect("commit");
    }

    async fn messages_keep_their_text_and_attachments(backend: Backend) {
        let (t, c) = with_conversation(backend).await;
        let mut m = reply(&c, "m1", 5);
        m.attachments = vec![Attachment {
            url: "https://cdn.example/a.ogg".into(),
            mime_type: "audio/ogg".into(),
            state: AttachmentState::Pending as i32,
            ..Default::default()
        }];
        stored(&t.db, &[(m.clone(), "")]).await;
        assert_eq!(find(t.db.pool(), "ws", "m1").await.expect("find"), Some(m));
    }

    async fn a_provider_message_is_stored_once_per_channel(backend: Backend) {
        let (t, c) = with_conversation(backend).await;
        stored(&t.db, &[(received(&c, "m1", "wamid.1", 5), "")]).await;
        let mut tx = t.db.begin().await.expect("begin");
        assert!(
            stored_on_channel(&mut tx, "ch", MessageDirection::Inbound, "wamid.1")
                .await
                .expect("exists")
        );
        assert!(
            !stored_on_channel(&mut tx, "other", MessageDirection::Inbound, "wamid.1")
                .await
                .expect("other channel")
        );
        let err = insert(&mut tx, &received(&c, "m2", "wamid.1", 6), "")
            .await
            .expect_err("stored twice");
        assert!(err.is_unique_violation(), "{err}");
    }

    async fn a_retried_reply_is_found_by_its_client_id(backend: Backend) {
        let (t, c) = with_conversation(backend).await;
        stored(
            &t.db,
            &[(reply(&c, "m1", 5), "c-1"), (reply(&c, "m2", 6), "")],
        )
        .await;
        let found = find_by_client_id(t.db.pool(), "ws", "ari", "c-1")
            .await
            .expect("find");
        assert_eq!(found.map(|m| m.id), Some("m1".to_owned()));
        assert_eq!(
            find_by_client_id(t.db.pool(), "ws", "olga", "c-1")
                .await
                .expect("another author's key"),
            None
        );
        let mut tx = t.db.begin().await.expect("begin");
        let err = insert(&mut tx, &reply(&c, "m3", 7), "c-1")
            .await
            .expect_err("same key");
        assert!(err.is_unique_violation(), "{err}");
    }

    async fn replies_are_found_by_the_provider_id_they_were_sent_under(backend: Backend) {
        let (t, c) = with_conversation(backend).await;
        let mut sent = reply(&c, "m1", 5);
        sent.external_id = "prov-1".into();
        // An inbound message under the same provider id is not a reply.
        stored(&t.db, &[(sent, ""), (received(&c, "m2", "prov-2", 6), "")]).await;
        let mut tx = t.db.begin().await.expect("begin");
        let found = find_sent(&mut tx, "ws", "ch", "prov-1")
            .await
            .expect("find");
        assert_eq!(found.map(|m| m.id), Some("m1".to_owned()));
        assert_eq!(
            find_sent(&mut tx, "ws", "ch", "prov-2")
                .await
                .expect("inbound"),
            None
        );
        assert_eq!(
            find_sent(&mut tx, "other", "ch", "prov-1")
                .await
                .expect("other workspace"),
            None
        );
    }

    async fn delivery_statuses_are_stored(backend: Backend) {
        let (t, c) = with_conversation(backend).await;
        let m = reply(&c, "m1", 5);
        stored(&t.db, &[(m.clone(), "")]).await;
        let update = DeliveryUpdate {
            status: MessageStatus::Failed,
            external_id: "prov-1".into(),
            error: "rejected by the provider".into(),
        };
        let mut tx = t.db.begin().await.expect("begin");
        set_delivery(&mut tx, &m, &update, 9).await.expect("update");
        t.db.commit(tx).await.expect("commit");
        let after = find(t.db.pool(), "ws", "m1")
            .await
            .expect("find")
            .expect("kept");
        assert_eq!(after.status, MessageStatus::Failed);
        assert_eq!(after.external_id, "prov-1");
        assert_eq!(after.error, "rejected by the provider");
        assert_eq!((after.created_at, after.status_changed_at), (5, 9));
    }

    async fn attachments_are_read_locked_and_rewritten(backend: Backend) {
        let (t, c) = with_conversation(backend).await;
        let mut m = received(&c, "m1", "wamid.1", 5);
        m.attachments = vec![Attachment::default(), Attachment::default()];
        stored(&t.db, &[(m, "")]).await;
        let mut tx = t.db.begin().await.expect("begin");
        let mut attachments = attachments_for_update(&mut tx, "ws", "m1")
            .await
            .expect("read")
            .expect("found");
        assert_eq!(attachments.len(), 2);
        attachments[1].blob_id = "blob".into();
        set_attachments(&mut tx, "ws", "m1", &attachments)
            .await
            .expect("rewrite");
        assert_eq!(
            attachments_for_update(&mut tx, "ws", "missing")
                .await
                .expect("read"),
            None
        );
        t.db.commit(tx).await.expect("commit");
        let after = find(t.db.pool(), "ws", "m1")
            .await
            .expect("find")
            .expect("kept");
        assert_eq!(after.attachments, attachments);
    }

    async fn history_pages_oldest_first(backend: Backend) {
        let (t, c) = with_conversation(backend).await;
        // m2 and m3 were created in the same microsecond: the id orders them.
        stored(
            &t.db,
            &[
                (received(&c, "m3", "e3", 20), ""),
                (received(&c, "m1", "e1", 10), ""),
                (reply(&c, "m2", 20), ""),
                (reply(&c, "m4", 30), ""),
            ],
        )
        .await;
        let ids = |page: Vec<Message>| page.into_iter().map(|m| m.id).collect::<Vec<_>>();
        let first = history(t.db.pool(), "ws", "c1", None, 3)
            .await
            .expect("page 1");
        assert_eq!(ids(first.clone()), ["m1", "m2", "m3"]);
        let last = first.last().expect("last");
        let after = Cursor {
            key: last.created_at,
            id: last.id.clone(),
        };
        assert_eq!(
            ids(history(t.db.pool(), "ws", "c1", Some(&after), 3)
                .await
                .expect("page 2")),
            ["m4"]
        );
    }

    async fn workspaces_never_see_each_others_messages(backend: Backend) {
        let (t, c) = with_conversation(backend).await;
        let m = reply(&c, "m1", 5);
        stored(&t.db, &[(m.clone(), "c-1")]).await;
        assert_eq!(find(t.db.pool(), "other", "m1").await.expect("find"), None);
        assert_eq!(
            find_by_client_id(t.db.pool(), "other", "ari", "c-1")
                .await
                .expect("find"),
            None
        );
        assert!(
            history(t.db.pool(), "other", "c1", None, 10)
                .await
                .expect("history")
                .is_empty()
        );
        let foreign = Message {
            workspace_id: "other".into(),
            ..m.clone()
        };
        let mut tx = t.db.begin().await.expect("begin");
        let update = DeliveryUpdate {
            status: MessageStatus::Read,
            external_id: "x".into(),
            error: String::new(),
        };
        set_delivery(&mut tx, &foreign, &update, 9)
            .await
            .expect("no-op");
        set_attachments(&mut tx, "other", "m1", &[Attachment::default()])
            .await
            .expect("no-op");
        t.db.commit(tx).await.expect("commit");
        assert_eq!(find(t.db.pool(), "ws", "m1").await.expect("find"), Some(m));
    }

    async fn what_channels_bring_is_stored_and_read_back(backend: Backend) {
        let (t, c) = with_conversation(backend).await;
        let mut m = received(&c, "m1", "wamid.1", 5);
        // At 0°, 0° with no name: still a location.
        m.location = Some(Location::default());
        m.reply_to_message_id = "m0".into();
        m.unsupported_type = "poll".into();
        m.reactions = vec![ReactionOf {
            reactor_external_id: "+34".into(),
            emoji: "👍".into(),
        }];
        m.edited_at = Some(7);
        m.unsent_at = Some(8);
        let plain = received(&c, "m2", "wamid.2", 6);
        stored(&t.db, &[(m.clone(), ""), (plain.clone(), "")]).await;
        assert_eq!(find(t.db.pool(), "ws", "m1").await.expect("find"), Some(m));
        let read = find(t.db.pool(), "ws", "m2")
            .await
            .expect("find")
            .expect("stored");
        assert_eq!(read, plain);
        assert_eq!(
            (read.location, read.edited_at, read.unsent_at),
            (None, None, None)
        );
    }

    async fn changes_and_reactions_are_rewritten(backend: Backend) {
        let (t, c) = with_conversation(backend).await;
        let out = Message {
            external_id: "prov-1".into(),
            ..reply(&c, "m2", 6)
        };
        stored(&t.db, &[(received(&c, "m1", "prov-1", 5), ""), (out, "")]).await;
        let mut tx = t.db.begin().await.expect("begin");
        // Both directions carry the id: the contact's message first.
        let mut m = find_by_external(&mut tx, "ws", "ch", "prov-1")
            .await
            .expect("find")
            .expect("found");
        assert_eq!(m.id, "m1");
        assert_eq!(
            find_by_external(&mut tx, "other", "ch", "prov-1")
                .await
                .expect("other workspace"),
            None
        );
        assert_eq!(
            find_by_external(&mut tx, "ws", "ch", "")
                .await
                .expect("no id"),
            None
        );
        assert_eq!(
            find_for_update(&mut tx, "other", "m1").await.expect("lock"),
            None
        );
        m.text = "edited".into();
        m.edited_at = Some(9);
        m.reactions = vec![ReactionOf {
            reactor_external_id: "+34".into(),
            emoji: "❤️".into(),
        }];
        set_changed(&mut tx, &m).await.expect("rewrite");
        t.db.commit(tx).await.expect("commit");
        assert_eq!(find(t.db.pool(), "ws", "m1").await.expect("find"), Some(m));
    }

    async fn a_watermark_finds_the_contacts_replies_up_to_it(backend: Backend) {
        let (t, c) = with_conversation(backend).await;
        let other_contact = open_conversation("c2".into(), "ws", "eva", "ch", "+35", 1);
        let foreign = Conversation {
            workspace_id: "other".into(),
            ..open_conversation("c3".into(), "ws", "ana", "ch", "+34", 1)
        };
        let mut tx = t.db.begin().await.expect("begin");
        conversations::insert(&mut tx, &other_contact)
            .await
            .expect("insert");
        conversations::insert(&mut tx, &foreign)
            .await
            .expect("insert");
        t.db.commit(tx).await.expect("commit");
        stored(
            &t.db,
            &[
                (reply(&c, "m1", 5), ""),
                (received(&c, "m2", "in", 6), ""),
                (reply(&c, "m3", 7), ""),
                (reply(&c, "m4", 8), ""),
                (reply(&other_contact, "m5", 5), ""),
                (reply(&foreign, "m6", 5), ""),
            ],
        )
        .await;
        let mut tx = t.db.begin().await.expect("begin");
        let found = sent_up_to(&mut tx, "ws", "ch", "+34", 7)
            .await
            .expect("find");
        let ids: Vec<_> = found.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["m1", "m3"]);
        assert!(
            sent_up_to(&mut tx, "ws", "other-channel", "+34", 100)
                .await
                .expect("find")
                .is_empty()
        );
    }
}
