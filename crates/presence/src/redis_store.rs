//! Presence in Redis.
//!
//! Layout, for prefix `p`, workspace `w` and user `u`:
//! - `p` `presence:w:u` — hash `{last_seen: <ms>, chosen: online|away|offline}`
//!   with a TTL of `offline_after`, refreshed by heartbeats and status changes;
//!   an expired hash means the user is offline and their choice is forgotten;
//! - `p` `presence:w:users` — sorted set of user ids scored by last heartbeat,
//!   trimmed of entries older than `offline_after` on each heartbeat, with the
//!   same TTL;
//! - channel `p` `presence:w` — JSON [`PresenceChange`]s.
//!
//! Timestamps come from the writing process's clock, so instances sharing a
//! Redis should keep their clocks in sync (NTP is plenty at these scales).

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use telenet_kit::infra_tls::InfraTlsConfig;

use crate::{
    PresenceChange, PresenceError, PresenceStore, Status, StatusCounts, Thresholds, UserPresence,
    effective_status, now_ms, validate_ids, validate_workspace_id, watch,
};

/// Hash field: time of the last heartbeat, ms since the Unix epoch.
const FIELD_LAST_SEEN: &str = "last_seen";
/// Hash field: the chosen status.
const FIELD_CHOSEN: &str = "chosen";

/// How long to wait for a connection or for an answer before giving up.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest pause between two attempts to (re)connect, in milliseconds.
const RECONNECT_MAX_DELAY_MS: u64 = 2_000;
/// Attempts to (re)connect after the first one fails.
const RECONNECT_RETRIES: usize = 3;

/// Presence kept in Redis. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct RedisPresence {
    client: redis::Client,
    commands: ConnectionManager,
    prefix: String,
    thresholds: Thresholds,
}

impl std::fmt::Debug for RedisPresence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPresence")
            .field("prefix", &self.prefix)
            .field("thresholds", &self.thresholds)
            .finish_non_exhaustive()
    }
}

/// One user's hash as read from Redis.
#[derive(Debug, Default)]
struct Record {
    last_seen_ms: Option<i64>,
    chosen: Option<Status>,
}

impl RedisPresence {
    /// Connects to the Redis at `url` (`redis://[user:password@]host[:port][/db]`,
    /// or `rediss://…` for TLS).
    pub async fn connect(
        url: &str,
        prefix: &str,
        thresholds: Thresholds,
    ) -> Result<Self, PresenceError> {
        Self::connect_with_tls(url, prefix, thresholds, &InfraTlsConfig::default()).await
    }

    /// [`RedisPresence::connect`] for a `rediss://` URL with the files of
    /// `tls` (`presence_tls`): its CA (then the only one trusted, in place of
    /// the system's CAs) and its client certificate.
    pub async fn connect_with_tls(
        url: &str,
        prefix: &str,
        thresholds: Thresholds,
        tls: &InfraTlsConfig,
    ) -> Result<Self, PresenceError> {
        thresholds.validate()?;
        let client = if tls.is_empty() {
            redis::Client::open(url)?
        } else {
            let loaded = tls
                .load("presence_tls")
                .map_err(|e| PresenceError::InvalidTls(e.to_string()))?;
            let certificates = redis::TlsCertificates {
                client_tls: loaded.identity().map(|identity| redis::ClientTlsConfig {
                    client_cert: identity.cert_pem.clone(),
                    client_key: identity.key_pem.clone(),
                }),
                root_cert: loaded.ca_pem().map(<[u8]>::to_vec),
            };
            redis::Client::build_with_tls(url, certificates)?
        };
        // redis 0.32 feeds `factor` to backon as the growth multiplier over a
        // 1 s first delay (its default of 100 would wait up to a minute per
        // retry, minutes in all when Redis is down): keep reconnects short.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(IO_TIMEOUT)
            .set_response_timeout(IO_TIMEOUT)
            .set_factor(2)
            .set_max_delay(RECONNECT_MAX_DELAY_MS)
            .set_number_of_retries(RECONNECT_RETRIES);
        let commands = ConnectionManager::new_with_config(client.clone(), config).await?;
        Ok(Self {
            client,
            commands,
            prefix: prefix.to_owned(),
            thresholds,
        })
    }

    fn user_key(&self, workspace_id: &str, user_id: &str) -> String {
        format!("{}presence:{workspace_id}:{user_id}", self.prefix)
    }

    fn users_key(&self, workspace_id: &str) -> String {
        format!("{}presence:{workspace_id}:users", self.prefix)
    }

    fn channel(&self, workspace_id: &str) -> String {
        format!("{}presence:{workspace_id}", self.prefix)
    }

    fn presence(&self, user_id: &str, record: &Record, now: i64) -> UserPresence {
        let chosen = record.chosen.unwrap_or(Status::Online);
        UserPresence {
            user_id: user_id.to_owned(),
            status: effective_status(record.last_seen_ms, chosen, now, &self.thresholds),
            chosen,
            last_seen_ms: record.last_seen_ms,
        }
    }

    /// Writes the user's hash (and, when `seen`, their heartbeat) in one
    /// transaction that also returns the hash as it was, then publishes a
    /// change if the effective status moved.
    async fn write_user(
        &self,
        workspace_id: &str,
        user_id: &str,
        seen: bool,
        chosen: Option<Status>,
    ) -> Result<UserPresence, PresenceError> {
        let now = now_ms();
        let ttl_ms = self.thresholds.offline_after_ms();
        let user_key = self.user_key(workspace_id, user_id);
        let users_key = self.users_key(workspace_id);

        let mut fields: Vec<(&str, String)> = Vec::with_capacity(2);
        if seen {
            fields.push((FIELD_LAST_SEEN, now.to_string()));
        }
        if let Some(chosen) = chosen {
            fields.push((FIELD_CHOSEN, chosen.as_str().to_owned()));
        }

        let mut pipe = redis::pipe();
        pipe.atomic()
            .hgetall(&user_key)
            .hset_multiple(&user_key, &fields)
            .ignore()
            .pexpire(&user_key, ttl_ms)
            .ignore();
        if seen {
            pipe.zadd(&users_key, user_id, now)
                .ignore()
                .zrembyscore(&users_key, "-inf", now.saturating_sub(ttl_ms))
                .ignore()
                .pexpire(&users_key, ttl_ms)
                .ignore();
        }
        let mut commands = self.commands.clone();
        let (raw_before,): (HashMap<String, String>,) = pipe.query_async(&mut commands).await?;

        let before_record = parse_record(&user_key, &raw_before);
        let after_record = Record {
            last_seen_ms: if seen {
                Some(now)
            } else {
                before_record.last_seen_ms
            },
            chosen: chosen.or(before_record.chosen),
        };
        let before = self.presence(user_id, &before_record, now);
        let after = self.presence(user_id, &after_record, now);
        if before.status != after.status {
            self.publish(workspace_id, user_id, after.status).await?;
        }
        Ok(after)
    }

    async fn publish(
        &self,
        workspace_id: &str,
        user_id: &str,
        status: Status,
    ) -> Result<(), PresenceError> {
        let change = PresenceChange {
            workspace_id: workspace_id.to_owned(),
            user_id: user_id.to_owned(),
            status,
        };
        let payload = serde_json::to_string(&change)?;
        let mut commands = self.commands.clone();
        let _receivers: i64 = commands
            .publish(self.channel(workspace_id), payload)
            .await?;
        Ok(())
    }
}

/// Reads a user's hash leniently: a field that does not parse is logged and
/// treated as absent, since presence heals itself within `offline_after`.
fn parse_record(key: &str, raw: &HashMap<String, String>) -> Record {
    let last_seen_ms = raw
        .get(FIELD_LAST_SEEN)
        .and_then(|value| match value.parse::<i64>() {
            Ok(ms) => Some(ms),
            Err(error) => {
                tracing::warn!(key, value, %error, "ignoring unreadable presence last_seen");
                None
            }
        });
    let chosen = raw
        .get(FIELD_CHOSEN)
        .and_then(|value| match value.parse::<Status>() {
            Ok(status) => Some(status),
            Err(error) => {
                tracing::warn!(key, value, %error, "ignoring unreadable presence chosen status");
                None
            }
        });
    Record {
        last_seen_ms,
        chosen,
    }
}

/// Decodes one published change; anything else on the channel is logged and
/// skipped.
fn parse_hint(message: &redis::Msg) -> Option<PresenceChange> {
    match serde_json::from_slice::<PresenceChange>(message.get_payload_bytes()) {
        Ok(change) => Some(change),
        Err(error) => {
            tracing::warn!(
                channel = message.get_channel_name(),
                %error,
                "ignoring unreadable presence change"
            );
            None
        }
    }
}

#[async_trait]
impl PresenceStore for RedisPresence {
    async fn heartbeat(
        &self,
        workspace_id: &str,
        user_id: &str,
    ) -> Result<UserPresence, PresenceError> {
        validate_ids(workspace_id, user_id)?;
        self.write_user(workspace_id, user_id, true, None).await
    }

    async fn set_status(
        &self,
        workspace_id: &str,
        user_id: &str,
        chosen: Status,
    ) -> Result<UserPresence, PresenceError> {
        validate_ids(workspace_id, user_id)?;
        // Choosing online or away is activity; choosing offline is not.
        let seen = chosen != Status::Offline;
        self.write_user(workspace_id, user_id, seen, Some(chosen))
            .await
    }

    async fn get(&self, workspace_id: &str, user_id: &str) -> Result<UserPresence, PresenceError> {
        validate_ids(workspace_id, user_id)?;
        let key = self.user_key(workspace_id, user_id);
        let mut commands = self.commands.clone();
        let raw: HashMap<String, String> = commands.hgetall(&key).await?;
        Ok(self.presence(user_id, &parse_record(&key, &raw), now_ms()))
    }

    async fn list(&self, workspace_id: &str) -> Result<Vec<UserPresence>, PresenceError> {
        validate_workspace_id(workspace_id)?;
        let now = now_ms();
        let cutoff = now.saturating_sub(self.thresholds.offline_after_ms());
        let mut commands = self.commands.clone();
        // Exclusive lower bound: a heartbeat exactly `offline_after` old is
        // already offline.
        let mut user_ids: Vec<String> = commands
            .zrangebyscore(self.users_key(workspace_id), format!("({cutoff}"), "+inf")
            .await?;
        if user_ids.is_empty() {
            return Ok(Vec::new());
        }
        user_ids.sort();

        let keys: Vec<String> = user_ids
            .iter()
            .map(|user_id| self.user_key(workspace_id, user_id))
            .collect();
        let mut pipe = redis::pipe();
        for key in &keys {
            pipe.hgetall(key);
        }
        let raws: Vec<HashMap<String, String>> = pipe.query_async(&mut commands).await?;
        Ok(user_ids
            .iter()
            .zip(&keys)
            .zip(&raws)
            .map(|((user_id, key), raw)| self.presence(user_id, &parse_record(key, raw), now))
            .collect())
    }

    async fn subscribe(
        &self,
        workspace_id: &str,
    ) -> Result<BoxStream<'static, PresenceChange>, PresenceError> {
        validate_workspace_id(workspace_id)?;
        let mut pubsub = tokio::time::timeout(IO_TIMEOUT, self.client.get_async_pubsub())
            .await
            .map_err(|_| PresenceError::Timeout("opening a pub/sub connection"))??;
        tokio::time::timeout(IO_TIMEOUT, pubsub.subscribe(self.channel(workspace_id)))
            .await
            .map_err(|_| PresenceError::Timeout("subscribing to presence changes"))??;
        let hints = pubsub
            .into_on_message()
            .filter_map(|message| async move { parse_hint(&message) })
            .boxed();
        watch::watch_workspace(
            self.clone(),
            workspace_id.to_owned(),
            hints,
            self.thresholds.sweep_interval(),
        )
        .await
    }

    async fn ping(&self) -> Result<(), PresenceError> {
        let mut commands = self.commands.clone();
        let _pong: String = redis::cmd("PING").query_async(&mut commands).await?;
        Ok(())
    }

    async fn count_by_status(&self) -> Result<StatusCounts, PresenceError> {
        // Every workspace with users has a `…presence:<w>:users` set; SCAN
        // walks the keyspace a slice at a time without blocking Redis.
        let pattern = format!("{}presence:*:users", escape_glob(&self.prefix));
        let mut commands = self.commands.clone();
        let mut workspaces = std::collections::BTreeSet::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(500)
                .query_async(&mut commands)
                .await?;
            for key in keys {
                let workspace = key
                    .strip_prefix(&self.prefix)
                    .and_then(|k| k.strip_prefix("presence:"))
                    .and_then(|k| k.strip_suffix(":users"));
                if let Some(workspace) = workspace.filter(|w| validate_workspace_id(w).is_ok()) {
                    workspaces.insert(workspace.to_owned());
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let mut counts = StatusCounts::default();
        for workspace in workspaces {
            for user in self.list(&workspace).await? {
                counts.add(user.status);
            }
        }
        Ok(counts)
    }
}

/// `text` matched literally in a Redis glob pattern.
fn escape_glob(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::escape_glob;

    #[test]
    fn prefixes_are_matched_literally() {
        assert_eq!(escape_glob("t1."), "t1.");
        assert_eq!(escape_glob(r"a*b?[c]\d"), r"a\*b\?\[c\]\\d");
    }
}
