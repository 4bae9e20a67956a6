//! The ingress tables: `channels` (the registry, every statement scoped by
//! workspace except the webhook's lookup by id, which the URL names) and
//! `webhook_keys` (what was accepted, for de-duplication).

use telenet_channels::ChannelCredentials;
use telenet_proto::common::v1::ChannelKind;
use telenet_store::cursor::Cursor;
use telenet_store::sqlx::{self, Row, any::AnyRow};
use telenet_store::{Db, StoreError, Tx};

use crate::domain::Channel;

const COLUMNS: &str =
    "id, workspace_id, kind, name, outbound_url, secret, accepted_voice_types, created_at";

/// Store a new channel.
pub(crate) async fn insert_channel(db: &Db, channel: &Channel) -> Result<(), StoreError> {
    let c = &channel.credentials;
    let voice = serde_json::to_string(&c.accepted_voice_types).unwrap_or_else(|_| "[]".into());
    sqlx::query(
        "INSERT INTO channels (id, workspace_id, kind, name, outbound_url, secret, accepted_voice_types, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&channel.id)
    .bind(&channel.workspace_id)
    .bind(i64::from(c.kind as i32))
    .bind(&channel.name)
    .bind(&c.outbound_url)
    .bind(&c.secret)
    .bind(voice)
    .bind(channel.created_at)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// A channel of the workspace (deleted channels are not found).
pub(crate) async fn channel(
    db: &Db,
    workspace_id: &str,
    channel_id: &str,
) -> Result<Option<Channel>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM channels WHERE workspace_id = $1 AND id = $2 AND deleted_at IS NULL"
    ))
    .bind(workspace_id)
    .bind(channel_id)
    .fetch_optional(db.pool())
    .await?;
    Ok(row.as_ref().map(channel_of).transpose()?)
}

/// A channel by id alone, for webhooks (the URL names the channel).
pub(crate) async fn channel_by_id(
    db: &Db,
    channel_id: &str,
) -> Result<Option<Channel>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM channels WHERE id = $1 AND deleted_at IS NULL"
    ))
    .bind(channel_id)
    .fetch_optional(db.pool())
    .await?;
    Ok(row.as_ref().map(channel_of).transpose()?)
}

/// Up to `limit` channels of the workspace, newest first, after `after`.
pub(crate) async fn list_channels(
    db: &Db,
    workspace_id: &str,
    after: Option<Cursor>,
    limit: i64,
) -> Result<Vec<Channel>, StoreError> {
    let (key, id) = after.map_or((i64::MAX, "\u{10FFFF}".to_owned()), |c| (c.key, c.id));
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM channels WHERE workspace_id = $1 AND deleted_at IS NULL \
         AND (created_at < $2 OR (created_at = $2 AND id < $3)) \
         ORDER BY created_at DESC, id DESC LIMIT $4"
    ))
    .bind(workspace_id)
    .bind(key)
    .bind(id)
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    Ok(rows.iter().map(channel_of).collect::<Result<_, _>>()?)
}

/// Mark a channel of the workspace deleted at `at`; `false` when there is
/// no such (live) channel.
pub(crate) async fn delete_channel(
    db: &Db,
    workspace_id: &str,
    channel_id: &str,
    at: i64,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE channels SET deleted_at = $1 WHERE workspace_id = $2 AND id = $3 AND deleted_at IS NULL",
    )
    .bind(at)
    .bind(workspace_id)
    .bind(channel_id)
    .execute(db.pool())
    .await?;
    Ok(done.rows_affected() > 0)
}

fn channel_of(row: &AnyRow) -> Result<Channel, sqlx::Error> {
    let voice: String = row.try_get("accepted_voice_types")?;
    let kind: i64 = row.try_get("kind")?;
    let kind = i32::try_from(kind)
        .ok()
        .and_then(|k| ChannelKind::try_from(k).ok())
        .unwrap_or(ChannelKind::Unspecified);
    Ok(Channel {
        id: row.try_get("id")?,
        workspace_id: row.try_get("workspace_id")?,
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
        credentials: ChannelCredentials {
            kind,
            outbound_url: row.try_get("outbound_url")?,
            secret: row.try_get("secret")?,
            accepted_voice_types: serde_json::from_str(&voice).unwrap_or_default(),
        },
    })
}

/// Record a de-duplication key of the channel in the caller's transaction;
/// `false` when it was recorded before (the webhook, or the event, is a
/// duplicate).
pub(crate) async fn record_key(
    tx: &mut Tx<'_>,
    channel_id: &str,
    key: &str,
    at: i64,
) -> Result<bool, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO webhook_keys (channel_id, key, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (channel_id, key) DO NOTHING",
    )
    .bind(channel_id)
    .bind(key)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(inserted.rows_affected() > 0)
}

/// Forget de-duplication keys recorded before `cutoff`; how many.
pub(crate) async fn forget_keys_before(db: &Db, cutoff: i64) -> Result<u64, StoreError> {
    let done = sqlx::query("DELETE FROM webhook_keys WHERE created_at < $1")
        .bind(cutoff)
        .execute(db.pool())
        .await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MIGRATIONS;
    use telenet_store::testing::{Backend, TestDb};

    telenet_store::on_both_backends!(
        channels_are_stored_and_scoped_by_workspace,
        pages_are_newest_first_and_stable,
        keys_are_recorded_once_and_forgotten_by_age,
    );

    async fn fixture(backend: Backend) -> TestDb {
        backend.database("ingress", &MIGRATIONS).await
    }

    fn sample(ws: &str, id: &str, at: i64) -> Channel {
        Channel {
            id: id.into(),
            workspace_id: ws.into(),
            name: format!("channel {id}"),
            created_at: at,
            credentials: ChannelCredentials {
                kind: ChannelKind::Custom,
                outbound_url: format!("https://{id}.example/in"),
                secret: format!("whsec_{id}"),
                accepted_voice_types: vec!["audio/ogg; codecs=opus".into(), "audio/mpeg".into()],
            },
        }
    }

    async fn channels_are_stored_and_scoped_by_workspace(backend: Backend) {
        let f = fixture(backend).await;
        let a = sample("wsA", "ch-a", 1_000);
        insert_channel(&f.db, &a).await.expect("insert");
        assert_eq!(
            channel(&f.db, "wsA", "ch-a").await.expect("get"),
            Some(a.clone())
        );
        assert_eq!(channel(&f.db, "wsB", "ch-a").await.expect("get"), None);
        assert_eq!(
            channel_by_id(&f.db, "ch-a").await.expect("find"),
            Some(a.clone())
        );
        assert_eq!(channel_by_id(&f.db, "ch-x").await.expect("find"), None);

        assert!(
            !delete_channel(&f.db, "wsB", "ch-a", 2_000)
                .await
                .expect("delete")
        );
        assert!(
            delete_channel(&f.db, "wsA", "ch-a", 2_000)
                .await
                .expect("delete")
        );
        assert!(
            !delete_channel(&f.db, "wsA", "ch-a", 3_000)
                .await
                .expect("again")
        );
        assert_eq!(channel(&f.db, "wsA", "ch-a").await.expect("get"), None);
        assert_eq!(channel_by_id(&f.db, "ch-a").await.expect("find"), None);
        f.db.close().await;
    }

    async fn pages_are_newest_first_and_stable(backend: Backend) {
        let f = fixture(backend).await;
        // Two created in the same microsecond: the id breaks the tie.
        for (id, at) in [("c1", 10), ("c2", 20), ("c3", 20), ("c4", 30)] {
            insert_channel(&f.db, &sample("ws", id, at))
                .await
                .expect("insert");
        }
        insert_channel(&f.db, &sample("other", "o1", 40))
            .await
            .expect("insert");
        delete_channel(&f.db, "ws", "c4", 50).await.expect("delete");
        let ids = |page: &[Channel]| page.iter().map(|c| c.id.clone()).collect::<Vec<_>>();
        let first = list_channels(&f.db, "ws", None, 2).await.expect("page");
        assert_eq!(ids(&first), ["c3", "c2"]);
        let last = &first[1];
        let after = Cursor {
            key: last.created_at,
            id: last.id.clone(),
        };
        let second = list_channels(&f.db, "ws", Some(after), 2)
            .await
            .expect("page");
        assert_eq!(ids(&second), ["c1"]);
        f.db.close().await;
    }

    async fn keys_are_recorded_once_and_forgotten_by_age(backend: Backend) {
        let f = fixture(backend).await;
        let mut tx = f.db.begin().await.expect("begin");
        assert!(
            record_key(&mut tx, "ch", "webhook:1", 100)
                .await
                .expect("record")
        );
        assert!(
            !record_key(&mut tx, "ch", "webhook:1", 100)
                .await
                .expect("again")
        );
        // Keys are per channel.
        assert!(
            record_key(&mut tx, "other", "webhook:1", 100)
                .await
                .expect("record")
        );
        assert!(
            record_key(&mut tx, "ch", "message:m1", 200)
                .await
                .expect("record")
        );
        tx.commit().await.expect("commit");

        // A rolled-back key was never recorded.
        let mut tx = f.db.begin().await.expect("begin");
        assert!(
            record_key(&mut tx, "ch", "webhook:2", 300)
                .await
                .expect("record")
        );
        tx.rollback().await.expect("rollback");
        let mut tx = f.db.begin().await.expect("begin");
        assert!(
            record_key(&mut tx, "ch", "webhook:2", 300)
                .await
                .expect("record")
        );
        tx.commit().await.expect("commit");

        assert_eq!(forget_keys_before(&f.db, 200).await.expect("forget"), 2);
        let mut tx = f.db.begin().await.expect("begin");
        assert!(
            record_key(&mut tx, "ch", "webhook:1", 400)
                .await
                .expect("record")
        );
        assert!(
            !record_key(&mut tx, "ch", "message:m1", 400)
                .await
                .expect("kept")
        );
        tx.rollback().await.expect("rollback");
        f.db.close().await;
    }
}
