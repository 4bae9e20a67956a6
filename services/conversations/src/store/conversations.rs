//! The `conversations` table.

use sqlx::any::AnyRow;
use sqlx::{Any, Executor, Row};
use telenet_proto::conversations::v1::ConversationStatus;
use telenet_store::cursor::Cursor;
use telenet_store::{StoreError, Tx, sqlx};

use super::{enum_or, present};
use crate::domain::conversation::{
    Assignee, Closed, ClosingNote, Conversation, ConversationFilter,
};

const COLUMNS: &str = "id, workspace_id, contact_id, channel_id, contact_external_id, status, \
     assignee_user_id, opened_at, closed_at, closing_category, closing_summary, closed_by, \
     last_message_at, message_count, last_inbound_at";

fn decode(row: &AnyRow) -> Result<Conversation, sqlx::Error> {
    let closed_at: Option<i64> = row.try_get("closed_at")?;
    let closed = match closed_at {
        Some(at) => Some(Closed {
            at,
            note: ClosingNote {
                category: row
                    .try_get::<Option<String>, _>("closing_category")?
                    .unwrap_or_default(),
                summary: row
                    .try_get::<Option<String>, _>("closing_summary")?
                    .unwrap_or_default(),
                closed_by: row
                    .try_get::<Option<String>, _>("closed_by")?
                    .unwrap_or_default(),
            },
        }),
        None => None,
    };
    let count: i64 = row.try_get("message_count")?;
    Ok(Conversation {
        id: row.try_get("id")?,
        workspace_id: row.try_get("workspace_id")?,
        contact_id: row.try_get("contact_id")?,
        channel_id: row.try_get("channel_id")?,
        contact_external_id: row.try_get("contact_external_id")?,
        status: enum_or(row.try_get("status")?, ConversationStatus::Unspecified),
        assignee: present(row.try_get("assignee_user_id")?),
        opened_at: row.try_get("opened_at")?,
        closed,
        last_message_at: row.try_get("last_message_at")?,
        message_count: u32::try_from(count).unwrap_or(u32::MAX),
        last_inbound_at: row.try_get("last_inbound_at")?,
        reply_window_closes_at: None,
    })
}

/// One conversation of the workspace.
pub(crate) async fn find<'c>(
    conn: impl Executor<'c, Database = Any>,
    workspace_id: &str,
    id: &str,
) -> Result<Option<Conversation>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM conversations WHERE workspace_id = $1 AND id = $2"
    ))
    .bind(workspace_id)
    .bind(id)
    .fetch_optional(conn)
    .await?;
    Ok(row.as_ref().map(decode).transpose()?)
}

/// One conversation of the workspace, locked until the transaction ends;
/// `None` for a conversation the workspace does not have.
///
/// Every change to a conversation starts here, so changes to one
/// conversation happen one at a time (ADR 12): a no-op write first takes
/// the row's lock (portably; SQLite has no `FOR UPDATE`), a concurrent
/// change waits for it until this transaction ends, and the read after it
/// sees every change committed before, which the domain then judges (a
/// second close is refused, an assignment knows the assignee it replaces,
/// a reply finds the conversation closed).
pub(crate) async fn find_for_update(
    tx: &mut Tx<'_>,
    workspace_id: &str,
    id: &str,
) -> Result<Option<Conversation>, StoreError> {
    let locked =
        sqlx::query("UPDATE conversations SET status = status WHERE workspace_id = $1 AND id = $2")
            .bind(workspace_id)
            .bind(id)
            .execute(&mut **tx)
            .await?;
    if locked.rows_affected() == 0 {
        return Ok(None);
    }
    find(&mut **tx, workspace_id, id).await
}

/// The contact's open conversation on the channel (there is at most one),
/// locked until the transaction ends like [`find_for_update`]: a message
/// joins it only while it is open, and a close that committed first leaves
/// none (the message opens the contact's next conversation).
pub(crate) async fn find_open_for_update(
    tx: &mut Tx<'_>,
    workspace_id: &str,
    contact_id: &str,
    channel_id: &str,
) -> Result<Option<Conversation>, StoreError> {
    let open = ConversationStatus::Open as i64;
    let locked = sqlx::query(
        "UPDATE conversations SET status = status \
         WHERE workspace_id = $1 AND contact_id = $2 AND channel_id = $3 AND status = $4",
    )
    .bind(workspace_id)
    .bind(contact_id)
    .bind(channel_id)
    .bind(open)
    .execute(&mut **tx)
    .await?;
    if locked.rows_affected() == 0 {
        return Ok(None);
    }
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM conversations \
         WHERE workspace_id = $1 AND contact_id = $2 AND channel_id = $3 AND status = $4"
    ))
    .bind(workspace_id)
    .bind(contact_id)
    .bind(channel_id)
    .bind(open)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.as_ref().map(decode).transpose()?)
}

/// Store a newly opened conversation (its closing fields stay empty). A
/// second open conversation of the same contact on the same channel is a
/// unique violation.
pub(crate) async fn insert(tx: &mut Tx<'_>, c: &Conversation) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO conversations (id, workspace_id, contact_id, channel_id, contact_external_id, \
         status, assignee_user_id, opened_at, last_message_at, message_count) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&c.id)
    .bind(&c.workspace_id)
    .bind(&c.contact_id)
    .bind(&c.channel_id)
    .bind(&c.contact_external_id)
    .bind(c.status as i64)
    .bind(c.assignee.clone())
    .bind(c.opened_at)
    .bind(c.last_message_at)
    .bind(i64::from(c.message_count))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Give the conversation to `assignee`, or to nobody.
pub(crate) async fn set_assignee(
    tx: &mut Tx<'_>,
    c: &Conversation,
    assignee: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE conversations SET assignee_user_id = $1 WHERE workspace_id = $2 AND id = $3",
    )
    .bind(assignee.map(str::to_owned))
    .bind(&c.workspace_id)
    .bind(&c.id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Count a new message and make it the latest activity.
pub(crate) async fn record_message(
    tx: &mut Tx<'_>,
    c: &Conversation,
    at: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE conversations SET last_message_at = $1, message_count = message_count + 1 \
         WHERE workspace_id = $2 AND id = $3",
    )
    .bind(at)
    .bind(&c.workspace_id)
    .bind(&c.id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The contact wrote at `at`: the latest such time is kept (a retried
/// message applied late never moves it back).
pub(crate) async fn record_inbound(
    tx: &mut Tx<'_>,
    c: &Conversation,
    at: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE conversations SET last_inbound_at = $1 \
         WHERE workspace_id = $2 AND id = $3 AND (last_inbound_at IS NULL OR last_inbound_at < $1)",
    )
    .bind(at)
    .bind(&c.workspace_id)
    .bind(&c.id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Close with the note: out of the open queue, assigned to nobody.
pub(crate) async fn close(
    tx: &mut Tx<'_>,
    c: &Conversation,
    note: &ClosingNote,
    at: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE conversations SET status = $1, assignee_user_id = NULL, closed_at = $2, \
         closing_category = $3, closing_summary = $4, closed_by = $5 WHERE workspace_id = $6 AND id = $7",
    )
    .bind(ConversationStatus::Closed as i64)
    .bind(at)
    .bind(&note.category)
    .bind(&note.summary)
    .bind(&note.closed_by)
    .bind(&c.workspace_id)
    .bind(&c.id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

enum Bind {
    Text(String),
    Int(i64),
}

/// Up to `limit` conversations of the workspace that pass `filter`, by
/// latest activity (newest first), after the `after` position.
pub(crate) async fn list<'c>(
    conn: impl Executor<'c, Database = Any>,
    workspace_id: &str,
    filter: &ConversationFilter,
    after: Option<&Cursor>,
    limit: i64,
) -> Result<Vec<Conversation>, StoreError> {
    // Without a position, start above every stored key.
    let (key, after_id) = after.map_or((i64::MAX, "\u{10FFFF}".to_owned()), |c| {
        (c.key, c.id.clone())
    });
    let mut sql = format!(
        "SELECT {COLUMNS} FROM conversations WHERE workspace_id = $1 \
         AND (last_message_at < $2 OR (last_message_at = $2 AND id < $3))"
    );
    let mut binds = vec![
        Bind::Text(workspace_id.to_owned()),
        Bind::Int(key),
        Bind::Text(after_id),
    ];
    if let Some(status) = filter.status {
        binds.push(Bind::Int(status as i64));
        sql.push_str(&format!(" AND status = ${}", binds.len()));
    }
    match &filter.assignee {
        Assignee::Anyone => {}
        Assignee::Nobody => sql.push_str(" AND assignee_user_id IS NULL"),
        Assignee::User(user) => {
            binds.push(Bind::Text(user.clone()));
            sql.push_str(&format!(" AND assignee_user_id = ${}", binds.len()));
        }
    }
    if let Some(contact_id) = &filter.contact_id {
        binds.push(Bind::Text(contact_id.clone()));
        sql.push_str(&format!(" AND contact_id = ${}", binds.len()));
    }
    binds.push(Bind::Int(limit));
    sql.push_str(&format!(
        " ORDER BY last_message_at DESC, id DESC LIMIT ${}",
        binds.len()
    ));
    let mut query = sqlx::query(&sql);
    for bind in binds {
        query = match bind {
            Bind::Text(t) => query.bind(t),
            Bind::Int(i) => query.bind(i),
        };
    }
    let rows = query.fetch_all(conn).await?;
    Ok(rows.iter().map(decode).collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use telenet_store::testing::Backend;

    use super::*;
    use crate::domain::conversation::open_conversation;
    use crate::store::testing;

    telenet_store::on_both_backends!(
        an_open_conversation_is_found_until_it_is_closed,
        a_contact_has_one_open_conversation_per_channel,
        assignees_are_set_and_cleared,
        a_new_message_is_counted_and_moves_the_conversation_up,
        queues_list_by_latest_activity_with_filters_and_pages,
        workspaces_never_see_each_others_conversations,
        a_change_waits_for_the_one_holding_the_conversation,
        the_contacts_last_message_is_kept_and_never_moves_back,
        conversations_from_before_learn_when_their_contact_last_wrote,
    );

    fn opened(id: &str, contact: &str, at: i64) -> Conversation {
        open_conversation(id.into(), "ws", contact, "ch", "+34", at)
    }

    async fn stored(db: &telenet_store::Db, conversations: &[Conversation]) {
        let mut tx = db.begin().await.expect("begin");
        for c in conversations {
            insert(&mut tx, c).await.expect("insert");
        }
        db.commit(tx).await.expect("commit");
    }

    async fn an_open_conversation_is_found_until_it_is_closed(backend: Backend) {
        let t = testing::db(backend).await;
        let c = opened("c1", "ana", 10);
        stored(&t.db, std::slice::from_ref(&c)).await;
        assert_eq!(
            find(t.db.pool(), "ws", "c1").await.expect("find"),
            Some(c.clone())
        );

        let mut tx = t.db.begin().await.expect("begin");
        let open = find_open_for_update(&mut tx, "ws", "ana", "ch")
            .await
            .expect("open");
        assert_eq!(open.as_ref().map(|o| o.id.as_str()), Some("c1"));
        assert_eq!(
            find_open_for_update(&mut tx, "ws", "ana", "other-channel")
                .await
                .expect("other channel"),
            None
        );
        set_assignee(&mut tx, &c, Some("ari"))
            .await
            .expect("assign");
        let note = ClosingNote {
            category: "billing".into(),
            summary: "invoice resent".into(),
            closed_by: "ari".into(),
        };
        close(&mut tx, &c, &note, 20).await.expect("close");
        assert_eq!(
            find_open_for_update(&mut tx, "ws", "ana", "ch")
                .await
                .expect("none"),
            None
        );
        t.db.commit(tx).await.expect("commit");

        let closed = find(t.db.pool(), "ws", "c1")
            .await
            .expect("find")
            .expect("kept");
        assert_eq!(closed.status, ConversationStatus::Closed);
        assert_eq!(closed.assignee, None);
        assert_eq!(closed.closed, Some(Closed { at: 20, note }));
    }

    async fn a_contact_has_one_open_conversation_per_channel(backend: Backend) {
        let t = testing::db(backend).await;
        stored(&t.db, &[opened("c1", "ana", 10)]).await;
        let mut tx = t.db.begin().await.expect("begin");
        let err = insert(&mut tx, &opened("c2", "ana", 11))
            .await
            .expect_err("second open conversation");
        assert!(err.is_unique_violation(), "{err}");
        drop(tx);
        // Once the first is closed, a new one opens.
        let mut tx = t.db.begin().await.expect("begin");
        close(
            &mut tx,
            &opened("c1", "ana", 10),
            &ClosingNote::default(),
            12,
        )
        .await
        .expect("close");
        insert(&mut tx, &opened("c2", "ana", 13))
            .await
            .expect("reopened");
        t.db.commit(tx).await.expect("commit");
    }

    async fn assignees_are_set_and_cleared(backend: Backend) {
        let t = testing::db(backend).await;
        let c = opened("c1", "ana", 10);
        stored(&t.db, std::slice::from_ref(&c)).await;
        let assignee = |db: telenet_store::Db| async move {
            find(db.pool(), "ws", "c1")
                .await
                .expect("find")
                .expect("kept")
                .assignee
        };
        let mut tx = t.db.begin().await.expect("begin");
        set_assignee(&mut tx, &c, Some("ari"))
            .await
            .expect("assign");
        t.db.commit(tx).await.expect("commit");
        assert_eq!(assignee(t.db.clone()).await.as_deref(), Some("ari"));
        let mut tx = t.db.begin().await.expect("begin");
        set_assignee(&mut tx, &c, None).await.expect("unassign");
        t.db.commit(tx).await.expect("commit");
        assert_eq!(assignee(t.db.clone()).await, None);
    }

    async fn a_new_message_is_counted_and_moves_the_conversation_up(backend: Backend) {
        let t = testing::db(backend).await;
        let c = opened("c1", "ana", 10);
        stored(&t.db, std::slice::from_ref(&c)).await;
        let mut tx = t.db.begin().await.expect("begin");
        record_message(&mut tx, &c, 30).await.expect("first");
        record_message(&mut tx, &c, 40).await.expect("second");
        t.db.commit(tx).await.expect("commit");
        let after = find(t.db.pool(), "ws", "c1")
            .await
            .expect("find")
            .expect("kept");
        assert_eq!((after.message_count, after.last_message_at), (2, 40));
        assert_eq!(after.opened_at, 10);
    }

    async fn queues_list_by_latest_activity_with_filters_and_pages(backend: Backend) {
        let t = testing::db(backend).await;
        // c2 and c3 tie on activity: the id breaks the tie.
        let mine = Conversation {
            assignee: Some("ari".into()),
            ..opened("c2", "bea", 20)
        };
        stored(
            &t.db,
            &[
                opened("c1", "ana", 10),
                mine,
                opened("c3", "cai", 20),
                opened("c4", "dan", 30),
            ],
        )
        .await;
        let mut tx = t.db.begin().await.expect("begin");
        close(
            &mut tx,
            &opened("c1", "ana", 10),
            &ClosingNote::default(),
            40,
        )
        .await
        .expect("close");
        t.db.commit(tx).await.expect("commit");

        let ids = |list: Vec<Conversation>| list.into_iter().map(|c| c.id).collect::<Vec<_>>();
        let all = ConversationFilter::default();
        assert_eq!(
            ids(list(t.db.pool(), "ws", &all, None, 10).await.expect("all")),
            ["c4", "c3", "c2", "c1"]
        );
        let open = ConversationFilter {
            status: Some(ConversationStatus::Open),
            ..Default::default()
        };
        let first = list(t.db.pool(), "ws", &open, None, 2)
            .await
            .expect("page 1");
        assert_eq!(ids(first.clone()), ["c4", "c3"]);
        let last = first.last().expect("last");
        let after = Cursor {
            key: last.last_message_at,
            id: last.id.clone(),
        };
        assert_eq!(
            ids(list(t.db.pool(), "ws", &open, Some(&after), 2)
                .await
                .expect("page 2")),
            ["c2"]
        );
        let unassigned = ConversationFilter {
            status: Some(ConversationStatus::Open),
            assignee: Assignee::Nobody,
            ..Default::default()
        };
        assert_eq!(
            ids(list(t.db.pool(), "ws", &unassigned, None, 10)
                .await
                .expect("queue")),
            ["c4", "c3"]
        );
        let aris = ConversationFilter {
            assignee: Assignee::User("ari".into()),
            ..Default::default()
        };
        assert_eq!(
            ids(list(t.db.pool(), "ws", &aris, None, 10)
                .await
                .expect("ari's")),
            ["c2"]
        );
        let anas = ConversationFilter {
            contact_id: Some("ana".into()),
            ..Default::default()
        };
        assert_eq!(
            ids(list(t.db.pool(), "ws", &anas, None, 10)
                .await
                .expect("ana's")),
            ["c1"]
        );
    }

    async fn a_change_waits_for_the_one_holding_the_conversation(backend: Backend) {
        let t = testing::db(backend).await;
        let c = opened("c1", "ana", 10);
        stored(&t.db, std::slice::from_ref(&c)).await;
        let mut first = t.db.begin().await.expect("begin");
        let held = find_for_update(&mut first, "ws", "c1")
            .await
            .expect("lock")
            .expect("found");
        assert_eq!(held, c);
        let db = t.db.clone();
        let second = tokio::spawn(async move {
            let mut tx = db.begin().await.expect("begin");
            let seen = find_for_update(&mut tx, "ws", "c1").await.expect("lock");
            db.commit(tx).await.expect("commit");
            seen
        });
        // However long the second one had, it reads what the first left.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        close(&mut first, &held, &ClosingNote::default(), 20)
            .await
            .expect("close");
        t.db.commit(first).await.expect("commit");
        let seen = second.await.expect("join").expect("found");
        assert_eq!(seen.status, ConversationStatus::Closed);

        let mut tx = t.db.begin().await.expect("begin");
        assert_eq!(
            find_for_update(&mut tx, "other", "c1").await.expect("lock"),
            None
        );
        assert_eq!(
            find_for_update(&mut tx, "ws", "nope").await.expect("lock"),
            None
        );
        // The contact's open conversation is locked the same way; a closed
        // one is not open.
        assert_eq!(
            find_open_for_update(&mut tx, "ws", "ana", "ch")
                .await
                .expect("lock"),
            None
        );
    }

    async fn workspaces_never_see_each_others_conversations(backend: Backend) {
        let t = testing::db(backend).await;
        let c = opened("c1", "ana", 10);
        stored(&t.db, std::slice::from_ref(&c)).await;
        assert_eq!(find(t.db.pool(), "other", "c1").await.expect("find"), None);
        assert!(
            list(
                t.db.pool(),
                "other",
                &ConversationFilter::default(),
                None,
                10
            )
            .await
            .expect("list")
            .is_empty()
        );
        let mut tx = t.db.begin().await.expect("begin");
        assert_eq!(
            find_open_for_update(&mut tx, "other", "ana", "ch")
                .await
                .expect("open"),
            None
        );
        // Writes name the workspace too: another one's id changes nothing.
        let foreign = Conversation {
            workspace_id: "other".into(),
            ..c.clone()
        };
        set_assignee(&mut tx, &foreign, Some("eve"))
            .await
            .expect("no-op");
        record_message(&mut tx, &foreign, 99).await.expect("no-op");
        close(&mut tx, &foreign, &ClosingNote::default(), 99)
            .await
            .expect("no-op");
        t.db.commit(tx).await.expect("commit");
        assert_eq!(find(t.db.pool(), "ws", "c1").await.expect("find"), Some(c));
    }

    async fn the_contacts_last_message_is_kept_and_never_moves_back(backend: Backend) {
        let t = testing::db(backend).await;
        let c = opened("c1", "ana", 10);
        stored(&t.db, std::slice::from_ref(&c)).await;
        let last = |db: telenet_store::Db| async move {
            find(db.pool(), "ws", "c1")
                .await
                .expect("find")
                .expect("found")
                .last_inbound_at
        };
        assert_eq!(last(t.db.clone()).await, None);
        let mut tx = t.db.begin().await.expect("begin");
        record_inbound(&mut tx, &c, 30).await.expect("first");
        // A message applied late (a retry) never moves it back.
        record_inbound(&mut tx, &c, 20).await.expect("late");
        t.db.commit(tx).await.expect("commit");
        assert_eq!(last(t.db.clone()).await, Some(30));
        let foreign = Conversation {
            workspace_id: "other".into(),
            ..c.clone()
        };
        let mut tx = t.db.begin().await.expect("begin");
        record_inbound(&mut tx, &foreign, 90).await.expect("no-op");
        t.db.commit(tx).await.expect("commit");
        assert_eq!(last(t.db.clone()).await, Some(30));
    }

    /// Migration 0102 dates the contact's last message of conversations
    /// stored before it, from their messages.
    async fn conversations_from_before_learn_when_their_contact_last_wrote(backend: Backend) {
        const BEFORE: telenet_store::Migrations =
            telenet_store::migrations!("0100_conversations", "0101_token_lifecycle");
        let t = backend.database(crate::NAME, &BEFORE).await;
        for (id, contact) in [("c1", "ana"), ("c2", "eva")] {
            sqlx::query(
                "INSERT INTO conversations (id, workspace_id, contact_id, channel_id, \
                 contact_external_id, status, opened_at, last_message_at, message_count) \
                 VALUES ($1, 'ws', $2, 'ch', '+34', 1, 1, 1, 0)",
            )
            .bind(id)
            .bind(contact)
            .execute(t.db.pool())
            .await
            .expect("conversation");
        }
        // c1: the contact wrote at 5 and 7, a member replied at 9; c2: only a reply.
        for (id, conversation, direction, at) in [
            ("m1", "c1", 1_i64, 5_i64),
            ("m2", "c1", 1, 7),
            ("m3", "c1", 2, 9),
            ("m4", "c2", 2, 9),
        ] {
            sqlx::query(
                "INSERT INTO messages (id, workspace_id, conversation_id, channel_id, direction, \
                 text, attachments, status, created_at, status_changed_at) \
                 VALUES ($1, 'ws', $2, 'ch', $3, 'x', $4, 1, $5, $5)",
            )
            .bind(id)
            .bind(conversation)
            .bind(direction)
            .bind(Vec::<u8>::new())
            .bind(at)
            .execute(t.db.pool())
            .await
            .expect("message");
        }
        t.db.migrate(&crate::MIGRATIONS).await.expect("migrate");
        let last = |id: &'static str| {
            let db = t.db.clone();
            async move {
                find(db.pool(), "ws", id)
                    .await
                    .expect("find")
                    .expect("found")
                    .last_inbound_at
            }
        };
        assert_eq!(last("c1").await, Some(7));
        assert_eq!(last("c2").await, None);
    }
}
