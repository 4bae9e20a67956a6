//! The ingress tables: `channels` (the registry, every statement scoped by
//! workspace except the webhook's lookup by id, which the URL names) and
//! `webhook_keys` (what was accepted, for de-duplication).
//!
//! A channel's secret is never stored as given: it is sealed under the
//! keyring's current key, bound to its row ([`domain::secret_context`]),
//! and `secret_key` names the key (NULL: a plain-text secret stored before
//! secrets were sealed, read as it is until it is sealed). Every secret
//! column a provider adds goes the same way, with its own field name.

use prost::Message as _;
use telenet_channels::ChannelCredentials;
use telenet_proto::common::v1::{ChannelKind, ChannelProvider};
use telenet_proto::ingress::v1::{ChannelConfig, ChannelStatus};
use telenet_signing::sealing::{self, Keyring};
use telenet_store::cursor::Cursor;
use telenet_store::sqlx::{self, Row, any::AnyRow};
use telenet_store::{Db, StoreError, Tx};

use crate::Error;
use crate::domain::{self, Channel};

const COLUMNS: &str = "id, workspace_id, kind, name, outbound_url, secret, secret_key, accepted_voice_types, created_at, \
     provider, config, status, status_detail, updated_at, last_webhook_at, last_rejected_webhook_at, last_rejection, last_send_at, last_send_error";

/// A channel's secret sealed for its row, and the key it is sealed under.
pub(crate) struct Sealed {
    pub value: String,
    pub key: String,
}

/// `secret` of the channel `channel_id` of `workspace_id`, sealed under the
/// keyring's current key.
pub(crate) fn seal_secret(
    keyring: &Keyring,
    workspace_id: &str,
    channel_id: &str,
    secret: &str,
) -> Result<Sealed, Error> {
    let context = domain::secret_context(workspace_id, channel_id, domain::SECRET_FIELD);
    Ok(Sealed {
        value: keyring.seal(secret.as_bytes(), &context)?,
        key: keyring.current().to_owned(),
    })
}

/// A channel's provider settings sealed for its row under the keyring's
/// current key (empty settings are stored empty).
pub(crate) fn seal_config(
    keyring: &Keyring,
    workspace_id: &str,
    channel_id: &str,
    config: &ChannelConfig,
) -> Result<String, Error> {
    if *config == ChannelConfig::default() {
        return Ok(String::new());
    }
    let context = domain::secret_context(workspace_id, channel_id, domain::CONFIG_FIELD);
    Ok(keyring.seal(&config.encode_to_vec(), &context)?)
}

/// A channel's provider settings as stored (sealed under `key`).
pub(crate) fn open_config(
    keyring: &Keyring,
    workspace_id: &str,
    channel_id: &str,
    stored: &str,
    key: Option<&str>,
) -> Result<ChannelConfig, Error> {
    if stored.is_empty() || key.is_none() {
        return Ok(ChannelConfig::default());
    }
    let context = domain::secret_context(workspace_id, channel_id, domain::CONFIG_FIELD);
    let opened = keyring.open(stored, &context)?;
    ChannelConfig::decode(opened.as_slice())
        .map_err(|_| Error::Secret(sealing::SealError::Unopened))
}

/// The secret of a channel as stored: opened when sealed (`key` set),
/// as it is when stored in plain text before secrets were sealed.
pub(crate) fn open_secret(
    keyring: &Keyring,
    workspace_id: &str,
    channel_id: &str,
    stored: &str,
    key: Option<&str>,
) -> Result<String, Error> {
    if key.is_none() {
        return Ok(stored.to_owned());
    }
    let context = domain::secret_context(workspace_id, channel_id, domain::SECRET_FIELD);
    let opened = keyring.open(stored, &context)?;
    String::from_utf8(opened).map_err(|_| Error::Secret(sealing::SealError::Unopened))
}

/// Store a new channel, its secret sealed.
pub(crate) async fn insert_channel(
    db: &Db,
    keyring: &Keyring,
    channel: &Channel,
) -> Result<(), Error> {
    let c = &channel.credentials;
    let voice = serde_json::to_string(&c.accepted_voice_types).unwrap_or_else(|_| "[]".into());
    let sealed = seal_secret(keyring, &channel.workspace_id, &channel.id, &c.secret)?;
    let config = seal_config(keyring, &channel.workspace_id, &channel.id, &c.config)?;
    sqlx::query(
        "INSERT INTO channels (id, workspace_id, kind, name, outbound_url, secret, secret_key, accepted_voice_types, created_at, \
         provider, config, status, status_detail, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(&channel.id)
    .bind(&channel.workspace_id)
    .bind(i64::from(c.kind as i32))
    .bind(&channel.name)
    .bind(&c.outbound_url)
    .bind(sealed.value)
    .bind(sealed.key)
    .bind(voice)
    .bind(channel.created_at)
    .bind(i64::from(c.provider as i32))
    .bind(config)
    .bind(i64::from(channel.status as i32))
    .bind(&channel.status_detail)
    .bind(channel.updated_at)
    .execute(db.pool())
    .await
    .map_err(StoreError::from)?;
    Ok(())
}

/// Replace a channel's name, settings and secret (sealed anew under the
/// current key) and status; `false` when there is no such live channel.
pub(crate) async fn update_channel(
    db: &Db,
    keyring: &Keyring,
    channel: &Channel,
) -> Result<bool, Error> {
    let c = &channel.credentials;
    let voice = serde_json::to_string(&c.accepted_voice_types).unwrap_or_else(|_| "[]".into());
    let sealed = seal_secret(keyring, &channel.workspace_id, &channel.id, &c.secret)?;
    let config = seal_config(keyring, &channel.workspace_id, &channel.id, &c.config)?;
    let done = sqlx::query(
        "UPDATE channels SET name = $1, outbound_url = $2, secret = $3, secret_key = $4, accepted_voice_types = $5, \
         config = $6, status = $7, status_detail = $8, updated_at = $9 \
         WHERE workspace_id = $10 AND id = $11 AND deleted_at IS NULL",
    )
    .bind(&channel.name)
    .bind(&c.outbound_url)
    .bind(sealed.value)
    .bind(sealed.key)
    .bind(voice)
    .bind(config)
    .bind(i64::from(channel.status as i32))
    .bind(&channel.status_detail)
    .bind(channel.updated_at)
    .bind(&channel.workspace_id)
    .bind(&channel.id)
    .execute(db.pool())
    .await
    .map_err(StoreError::from)?;
    Ok(done.rows_affected() > 0)
}

/// Set a channel's status (a test, a webhook handshake that succeeded).
pub(crate) async fn set_status(
    db: &Db,
    channel_id: &str,
    status: ChannelStatus,
    detail: &str,
    at: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE channels SET status = $1, status_detail = $2, updated_at = $3 WHERE id = $4 AND deleted_at IS NULL",
    )
    .bind(i64::from(status as i32))
    .bind(detail)
    .bind(at)
    .bind(channel_id)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Which news of a channel's health is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HealthNews<'a> {
    /// A verified webhook arrived.
    Webhook,
    /// A webhook was refused, for this reason.
    Rejected(&'a str),
    /// A send was made; its error (empty: sent).
    Sent(&'a str),
}

/// Record `news` of a channel at `at`, unless the same news was recorded
/// less than `every` microseconds before (a busy channel writes at most
/// once a minute per kind of news, not once per webhook). A pending
/// verification becomes active with the first verified webhook.
pub(crate) async fn record_health(
    db: &Db,
    channel_id: &str,
    news: HealthNews<'_>,
    at: i64,
    every: i64,
) -> Result<(), StoreError> {
    let since = at - every;
    let active = i64::from(ChannelStatus::Active as i32);
    let pending = i64::from(ChannelStatus::PendingVerification as i32);
    let query = match news {
        HealthNews::Webhook => sqlx::query(
            "UPDATE channels SET last_webhook_at = $1, \
             status = CASE WHEN status = $4 THEN $5 ELSE status END, \
             status_detail = CASE WHEN status = $4 THEN '' ELSE status_detail END \
             WHERE id = $2 AND (last_webhook_at IS NULL OR last_webhook_at < $3 OR status = $4)",
        )
        .bind(at)
        .bind(channel_id)
        .bind(since)
        .bind(pending)
        .bind(active),
        HealthNews::Rejected(reason) => sqlx::query(
            "UPDATE channels SET last_rejected_webhook_at = $1, last_rejection = $4 \
             WHERE id = $2 AND (last_rejected_webhook_at IS NULL OR last_rejected_webhook_at < $3 OR last_rejection <> $4)",
        )
        .bind(at)
        .bind(channel_id)
        .bind(since)
        .bind(reason),
        HealthNews::Sent(error) => sqlx::query(
            "UPDATE channels SET last_send_at = $1, last_send_error = $4 \
             WHERE id = $2 AND (last_send_at IS NULL OR last_send_at < $3 OR last_send_error <> $4)",
        )
        .bind(at)
        .bind(channel_id)
        .bind(since)
        .bind(error),
    };
    query.execute(db.pool()).await?;
    Ok(())
}

/// A channel of the workspace (deleted channels are not found).
pub(crate) async fn channel(
    db: &Db,
    keyring: &Keyring,
    workspace_id: &str,
    channel_id: &str,
) -> Result<Option<Channel>, Error> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM channels WHERE workspace_id = $1 AND id = $2 AND deleted_at IS NULL"
    ))
    .bind(workspace_id)
    .bind(channel_id)
    .fetch_optional(db.pool())
    .await?;
    row.as_ref().map(|r| channel_of(r, keyring)).transpose()
}

/// A channel by id alone, for webhooks (the URL names the channel).
pub(crate) async fn channel_by_id(
    db: &Db,
    keyring: &Keyring,
    channel_id: &str,
) -> Result<Option<Channel>, Error> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM channels WHERE id = $1 AND deleted_at IS NULL"
    ))
    .bind(channel_id)
    .fetch_optional(db.pool())
    .await?;
    row.as_ref().map(|r| channel_of(r, keyring)).transpose()
}

/// Up to `limit` channels of the workspace, newest first, after `after`.
pub(crate) async fn list_channels(
    db: &Db,
    keyring: &Keyring,
    workspace_id: &str,
    after: Option<Cursor>,
    limit: i64,
) -> Result<Vec<Channel>, Error> {
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
    rows.iter().map(|r| channel_of(r, keyring)).collect()
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

fn channel_of(row: &AnyRow, keyring: &Keyring) -> Result<Channel, Error> {
    let voice: String = row.try_get("accepted_voice_types")?;
    let kind: i64 = row.try_get("kind")?;
    let kind = i32::try_from(kind)
        .ok()
        .and_then(|k| ChannelKind::try_from(k).ok())
        .unwrap_or(ChannelKind::Unspecified);
    let id: String = row.try_get("id")?;
    let workspace_id: String = row.try_get("workspace_id")?;
    let stored: String = row.try_get("secret")?;
    let key: Option<String> = row.try_get("secret_key")?;
    let secret = open_secret(keyring, &workspace_id, &id, &stored, key.as_deref())?;
    let sealed_config: String = row.try_get("config")?;
    let config = open_config(keyring, &workspace_id, &id, &sealed_config, key.as_deref())?;
    let provider: i64 = row.try_get("provider")?;
    let provider = i32::try_from(provider)
        .ok()
        .and_then(|p| ChannelProvider::try_from(p).ok())
        .unwrap_or(ChannelProvider::Unspecified);
    // Custom channels stored before providers were recorded.
    let provider = match (provider, kind) {
        (ChannelProvider::Unspecified, ChannelKind::Custom) => ChannelProvider::Custom,
        (p, _) => p,
    };
    let status: i64 = row.try_get("status")?;
    let status = i32::try_from(status)
        .ok()
        .and_then(|s| ChannelStatus::try_from(s).ok())
        .unwrap_or(ChannelStatus::Active);
    Ok(Channel {
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        status,
        status_detail: row.try_get("status_detail")?,
        health: domain::Health {
            last_webhook_at: row.try_get("last_webhook_at")?,
            last_rejected_webhook_at: row.try_get("last_rejected_webhook_at")?,
            last_rejection: row.try_get("last_rejection")?,
            last_send_at: row.try_get("last_send_at")?,
            last_send_error: row.try_get("last_send_error")?,
        },
        credentials: ChannelCredentials {
            channel_id: id.clone(),
            kind,
            provider,
            config,
            outbound_url: row.try_get("outbound_url")?,
            secret,
            accepted_voice_types: serde_json::from_str(&voice).unwrap_or_default(),
        },
        id,
        workspace_id,
    })
}

/// A channel's secret as stored, for re-sealing.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct StoredSecret {
    pub channel_id: String,
    pub workspace_id: String,
    /// Sealed, or plain text when `key` is `None`.
    pub value: String,
    pub key: Option<String>,
    /// The provider settings, sealed under `key` (empty: none).
    pub config: String,
}

impl std::fmt::Debug for StoredSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSecret")
            .field("channel_id", &self.channel_id)
            .field("workspace_id", &self.workspace_id)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// Up to `limit` channel secrets (deleted channels' too) not sealed under
/// `current` (plain text or another key), by channel id after `after`.
pub(crate) async fn secrets_not_under(
    db: &Db,
    current: &str,
    after: &str,
    limit: i64,
) -> Result<Vec<StoredSecret>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, workspace_id, secret, secret_key, config FROM channels \
         WHERE (secret_key IS NULL OR secret_key <> $1) AND id > $2 ORDER BY id LIMIT $3",
    )
    .bind(current)
    .bind(after)
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|row| {
            Ok(StoredSecret {
                channel_id: row.try_get("id")?,
                workspace_id: row.try_get("workspace_id")?,
                value: row.try_get("secret")?,
                key: row.try_get("secret_key")?,
                config: row.try_get("config")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}

/// Replace the channel's secret `was` (as stored) by `sealed`, in the
/// caller's transaction; `false` when the stored value is no longer `was`
/// (another replica re-sealed it, or the secret changed), which leaves it.
pub(crate) async fn replace_secret(
    tx: &mut Tx<'_>,
    stored: &StoredSecret,
    sealed: &Sealed,
    config: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE channels SET secret = $1, secret_key = $2, config = $3 WHERE id = $4 AND secret = $5 AND config = $6",
    )
    .bind(&sealed.value)
    .bind(&sealed.key)
    .bind(config)
    .bind(&stored.channel_id)
    .bind(&stored.value)
    .bind(&stored.config)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// How many channel secrets (deleted channels' too) are sealed under each
/// key; `None`: in plain text. By key id, plain text first.
pub(crate) async fn secrets_by_key(db: &Db) -> Result<Vec<(Option<String>, u64)>, StoreError> {
    let rows = sqlx::query(
        "SELECT secret_key, COUNT(*) AS n FROM channels GROUP BY secret_key ORDER BY secret_key",
    )
    .fetch_all(db.pool())
    .await?;
    let mut counts = rows
        .iter()
        .map(|row| {
            let n: i64 = row.try_get("n")?;
            Ok((row.try_get("secret_key")?, u64::try_from(n).unwrap_or(0)))
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    // Backends order NULL differently.
    counts.sort();
    Ok(counts)
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
    use telenet_signing::sealing::{SealError, generate_key};
    use telenet_store::testing::{Backend, TestDb};

    telenet_store::on_both_backends!(
        channels_are_stored_and_scoped_by_workspace,
        pages_are_newest_first_and_stable,
        keys_are_recorded_once_and_forgotten_by_age,
        secrets_are_sealed_at_rest_and_bound_to_their_row,
        plain_text_secrets_read_until_replaced_once,
    );

    async fn fixture(backend: Backend) -> TestDb {
        backend.database("ingress", &MIGRATIONS).await
    }

    fn keyring() -> Keyring {
        Keyring::new("k1", [("k1", generate_key().expect("rng"))]).expect("keyring")
    }

    /// Every row's `secret` and `secret_key` as stored, by channel id.
    async fn raw_secrets(db: &Db) -> Vec<(String, String, Option<String>)> {
        sqlx::query("SELECT id, secret, secret_key FROM channels ORDER BY id")
            .fetch_all(db.pool())
            .await
            .expect("raw rows")
            .iter()
            .map(|r| {
                (
                    r.try_get("id").expect("id"),
                    r.try_get("secret").expect("secret"),
                    r.try_get("secret_key").expect("key"),
                )
            })
            .collect()
    }

    fn sample(ws: &str, id: &str, at: i64) -> Channel {
        Channel {
            id: id.into(),
            workspace_id: ws.into(),
            name: format!("channel {id}"),
            created_at: at,
            status: ChannelStatus::Active,
            credentials: ChannelCredentials {
                channel_id: id.into(),
                kind: ChannelKind::Custom,
                provider: ChannelProvider::Custom,
                outbound_url: format!("https://{id}.example/in"),
                secret: format!("whsec_{id}"),
                accepted_voice_types: vec!["audio/ogg; codecs=opus".into(), "audio/mpeg".into()],
                ..Default::default()
            },
            ..Default::default()
        }
    }

    async fn channels_are_stored_and_scoped_by_workspace(backend: Backend) {
        let f = fixture(backend).await;
        let k = keyring();
        let a = sample("wsA", "ch-a", 1_000);
        insert_channel(&f.db, &k, &a).await.expect("insert");
        assert_eq!(
            channel(&f.db, &k, "wsA", "ch-a").await.expect("get"),
            Some(a.clone())
        );
        assert_eq!(channel(&f.db, &k, "wsB", "ch-a").await.expect("get"), None);
        assert_eq!(
            channel_by_id(&f.db, &k, "ch-a").await.expect("find"),
            Some(a.clone())
        );
        assert_eq!(channel_by_id(&f.db, &k, "ch-x").await.expect("find"), None);

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
        assert_eq!(channel(&f.db, &k, "wsA", "ch-a").await.expect("get"), None);
        assert_eq!(channel_by_id(&f.db, &k, "ch-a").await.expect("find"), None);
        f.db.close().await;
    }

    async fn pages_are_newest_first_and_stable(backend: Backend) {
        let f = fixture(backend).await;
        let k = keyring();
        // Two created in the same microsecond: the id breaks the tie.
        for (id, at) in [("c1", 10), ("c2", 20), ("c3", 20), ("c4", 30)] {
            insert_channel(&f.db, &k, &sample("ws", id, at))
                .await
                .expect("insert");
        }
        insert_channel(&f.db, &k, &sample("other", "o1", 40))
            .await
            .expect("insert");
        delete_channel(&f.db, "ws", "c4", 50).await.expect("delete");
        let ids = |page: &[Channel]| page.iter().map(|c| c.id.clone()).collect::<Vec<_>>();
        let first = list_channels(&f.db, &k, "ws", None, 2).await.expect("page");
        assert_eq!(ids(&first), ["c3", "c2"]);
        let last = &first[1];
        let after = Cursor {
            key: last.created_at,
            id: last.id.clone(),
        };
        let second = list_channels(&f.db, &k, "ws", Some(after), 2)
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

    async fn secrets_are_sealed_at_rest_and_bound_to_their_row(backend: Backend) {
        let f = fixture(backend).await;
        let k = keyring();
        let a = sample("wsA", "ch-a", 1_000);
        let b = sample("wsA", "ch-b", 2_000);
        insert_channel(&f.db, &k, &a).await.expect("insert");
        insert_channel(&f.db, &k, &b).await.expect("insert");

        // Read straight from the table: sealed under k1, no trace of the secret.
        let raw = raw_secrets(&f.db).await;
        assert_eq!(raw.len(), 2);
        for ((id, stored, key), channel) in raw.iter().zip([&a, &b]) {
            assert_eq!(id, &channel.id);
            assert_eq!(key.as_deref(), Some("k1"));
            assert!(stored.starts_with("sealed:v1:k1:"), "{stored}");
            assert!(!stored.contains(&channel.credentials.secret), "{stored}");
            assert!(!stored.contains(&channel.credentials.secret["whsec_".len()..]));
        }

        // b's sealed secret copied into a's row does not open there.
        sqlx::query("UPDATE channels SET secret = $1 WHERE id = 'ch-a'")
            .bind(&raw[1].1)
            .execute(f.db.pool())
            .await
            .expect("copy");
        let copied = channel(&f.db, &k, "wsA", "ch-a").await;
        assert!(
            matches!(copied, Err(Error::Secret(SealError::Unopened))),
            "{copied:?}"
        );
        // Nor does a row moved to another workspace.
        sqlx::query("UPDATE channels SET workspace_id = 'wsB' WHERE id = 'ch-b'")
            .execute(f.db.pool())
            .await
            .expect("move");
        let moved = channel(&f.db, &k, "wsB", "ch-b").await;
        assert!(
            matches!(moved, Err(Error::Secret(SealError::Unopened))),
            "{moved:?}"
        );
        // A keyring without the key names it.
        let other = Keyring::new("k2", [("k2", generate_key().expect("rng"))]).expect("keyring");
        sqlx::query("UPDATE channels SET workspace_id = 'wsA' WHERE id = 'ch-b'")
            .execute(f.db.pool())
            .await
            .expect("back");
        let missing = channel_by_id(&f.db, &other, "ch-b").await;
        assert!(
            matches!(&missing, Err(Error::Secret(SealError::UnknownKey(key))) if key == "k1"),
            "{missing:?}"
        );
        assert_eq!(
            channel_by_id(&f.db, &k, "ch-b").await.expect("find"),
            Some(b)
        );
        f.db.close().await;
    }

    async fn plain_text_secrets_read_until_replaced_once(backend: Backend) {
        let f = fixture(backend).await;
        let k = keyring();
        // A row as stored before secrets were sealed.
        let old = sample("ws", "ch-old", 1_000);
        sqlx::query(
            "INSERT INTO channels (id, workspace_id, kind, name, outbound_url, secret, created_at) \
             VALUES ('ch-old', 'ws', $1, $2, $3, $4, 1000)",
        )
        .bind(i64::from(ChannelKind::Custom as i32))
        .bind(&old.name)
        .bind(&old.credentials.outbound_url)
        .bind(&old.credentials.secret)
        .execute(f.db.pool())
        .await
        .expect("legacy row");
        sqlx::query("UPDATE channels SET accepted_voice_types = $1 WHERE id = 'ch-old'")
            .bind(serde_json::to_string(&old.credentials.accepted_voice_types).expect("json"))
            .execute(f.db.pool())
            .await
            .expect("voice");
        insert_channel(&f.db, &k, &sample("ws", "ch-new", 2_000))
            .await
            .expect("insert");
        assert_eq!(
            channel(&f.db, &k, "ws", "ch-old").await.expect("plain"),
            Some(old.clone())
        );
        assert_eq!(
            secrets_by_key(&f.db).await.expect("counts"),
            [(None, 1), (Some("k1".to_owned()), 1)]
        );

        // What is not under k1: the plain row only; under k2: both.
        let todo = secrets_not_under(&f.db, "k1", "", 10).await.expect("todo");
        assert_eq!(todo.len(), 1);
        assert_eq!(todo[0].key, None);
        assert_eq!(todo[0].value, old.credentials.secret);
        let both = secrets_not_under(&f.db, "k2", "", 10).await.expect("todo");
        assert_eq!(
            both.iter()
                .map(|s| s.channel_id.as_str())
                .collect::<Vec<_>>(),
            ["ch-new", "ch-old"]
        );
        let after = secrets_not_under(&f.db, "k2", "ch-new", 10)
            .await
            .expect("todo");
        assert_eq!(after.len(), 1);
        assert!(!format!("{:?}", todo[0]).contains(&old.credentials.secret));

        // Replaced only while it is still what was read.
        let sealed = seal_secret(&k, "ws", "ch-old", &old.credentials.secret).expect("seal");
        let mut tx = f.db.begin().await.expect("begin");
        assert!(
            replace_secret(&mut tx, &todo[0], &sealed, "")
                .await
                .expect("replace")
        );
        assert!(
            !replace_secret(&mut tx, &todo[0], &sealed, "")
                .await
                .expect("again")
        );
        tx.commit().await.expect("commit");
        assert_eq!(
            channel(&f.db, &k, "ws", "ch-old").await.expect("sealed"),
            Some(old)
        );
        assert!(
            secrets_not_under(&f.db, "k1", "", 10)
                .await
                .expect("todo")
                .is_empty()
        );
        assert_eq!(
            secrets_by_key(&f.db).await.expect("counts"),
            [(Some("k1".to_owned()), 2)]
        );
        f.db.close().await;
    }
}
