//! In-memory presence for the dev server and tests: the same semantics as the
//! Redis store, kept in one process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::broadcast;

use crate::{
    PresenceChange, PresenceError, PresenceStore, Status, StatusCounts, Thresholds, UserPresence,
    effective_status, now_ms, validate_ids, validate_workspace_id, watch,
};

/// How many change hints a slow subscriber may fall behind before it skips
/// some; it catches up at its next sweep.
const HINT_CAPACITY: usize = 1024;

/// What is kept of one user, like the Redis per-user hash.
#[derive(Debug, Clone)]
struct Entry {
    last_seen_ms: Option<i64>,
    chosen: Status,
    /// When the entry is forgotten, like the Redis key's TTL.
    expires_at_ms: i64,
}

#[derive(Debug)]
struct Inner {
    thresholds: Thresholds,
    /// workspace id → user id → entry.
    workspaces: Mutex<HashMap<String, HashMap<String, Entry>>>,
    hints: broadcast::Sender<PresenceChange>,
}

/// Presence kept in this process's memory. Cheap to clone; clones share state.
#[derive(Debug, Clone)]
pub struct MemoryPresence {
    inner: Arc<Inner>,
}

impl MemoryPresence {
    /// An empty store.
    pub fn new(thresholds: Thresholds) -> Self {
        let (hints, _) = broadcast::channel(HINT_CAPACITY);
        Self {
            inner: Arc::new(Inner {
                thresholds,
                workspaces: Mutex::new(HashMap::new()),
                hints,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, HashMap<String, Entry>>> {
        // A panic while holding the lock cannot leave an entry half-written
        // (every update is a single assignment), so the data stays usable.
        self.inner
            .workspaces
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn presence(&self, user_id: &str, entry: Option<&Entry>, now: i64) -> UserPresence {
        match entry.filter(|entry| entry.expires_at_ms > now) {
            None => UserPresence::unknown(user_id),
            Some(entry) => UserPresence {
                user_id: user_id.to_owned(),
                status: effective_status(
                    entry.last_seen_ms,
                    entry.chosen,
                    now,
                    &self.inner.thresholds,
                ),
                chosen: entry.chosen,
                last_seen_ms: entry.last_seen_ms,
            },
        }
    }

    /// Applies `update` to the user's entry (a fresh one if it expired),
    /// refreshes its lifetime, and publishes a hint if the effective status
    /// changed.
    fn update(
        &self,
        workspace_id: &str,
        user_id: &str,
        update: impl FnOnce(&mut Entry, i64),
    ) -> UserPresence {
        let now = now_ms();
        let (before, after) = {
            let mut workspaces = self.lock();
            let users = workspaces.entry(workspace_id.to_owned()).or_default();
            users.retain(|_, entry| entry.expires_at_ms > now);
            let before = self.presence(user_id, users.get(user_id), now);
            let entry = users.entry(user_id.to_owned()).or_insert(Entry {
                last_seen_ms: None,
                chosen: Status::Online,
                expires_at_ms: now,
            });
            update(entry, now);
            entry.expires_at_ms = now.saturating_add(self.inner.thresholds.offline_after_ms());
            let after = self.presence(user_id, Some(entry), now);
            (before, after)
        };
        if before.status != after.status {
            // No receivers is fine: nobody is watching this store.
            let _ = self.inner.hints.send(PresenceChange {
                workspace_id: workspace_id.to_owned(),
                user_id: user_id.to_owned(),
                status: after.status,
            });
        }
        after
    }
}

#[async_trait]
impl PresenceStore for MemoryPresence {
    async fn heartbeat(
        &self,
        workspace_id: &str,
        user_id: &str,
    ) -> Result<UserPresence, PresenceError> {
        validate_ids(workspace_id, user_id)?;
        Ok(self.update(workspace_id, user_id, |entry, now| {
            entry.last_seen_ms = Some(now);
        }))
    }

    async fn set_status(
        &self,
        workspace_id: &str,
        user_id: &str,
        chosen: Status,
    ) -> Result<UserPresence, PresenceError> {
        validate_ids(workspace_id, user_id)?;
        Ok(self.update(workspace_id, user_id, |entry, now| {
            entry.chosen = chosen;
            // Choosing online or away is activity; choosing offline is not.
            if chosen != Status::Offline {
                entry.last_seen_ms = Some(now);
            }
        }))
    }

    async fn get(&self, workspace_id: &str, user_id: &str) -> Result<UserPresence, PresenceError> {
        validate_ids(workspace_id, user_id)?;
        let now = now_ms();
        let workspaces = self.lock();
        let entry = workspaces
            .get(workspace_id)
            .and_then(|users| users.get(user_id));
        Ok(self.presence(user_id, entry, now))
    }

    async fn list(&self, workspace_id: &str) -> Result<Vec<UserPresence>, PresenceError> {
        validate_workspace_id(workspace_id)?;
        let now = now_ms();
        let cutoff = now.saturating_sub(self.inner.thresholds.offline_after_ms());
        let workspaces = self.lock();
        let mut listed: Vec<UserPresence> = workspaces
            .get(workspace_id)
            .into_iter()
            .flatten()
            .filter(|(_, entry)| entry.last_seen_ms.is_some_and(|seen| seen > cutoff))
            .map(|(user_id, entry)| self.presence(user_id, Some(entry), now))
            .collect();
        listed.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        Ok(listed)
    }

    async fn subscribe(
        &self,
        workspace_id: &str,
    ) -> Result<BoxStream<'static, PresenceChange>, PresenceError> {
        validate_workspace_id(workspace_id)?;
        let wanted = workspace_id.to_owned();
        let hints = tokio_stream::wrappers::BroadcastStream::new(self.inner.hints.subscribe())
            .filter_map(move |hint| {
                // A lagged subscriber skips hints; its next sweep catches up.
                let hint = hint.ok().filter(|hint| hint.workspace_id == wanted);
                async move { hint }
            })
            .boxed();
        watch::watch_workspace(
            self.clone(),
            workspace_id.to_owned(),
            hints,
            self.inner.thresholds.sweep_interval(),
        )
        .await
    }

    async fn ping(&self) -> Result<(), PresenceError> {
        Ok(())
    }

    async fn count_by_status(&self) -> Result<StatusCounts, PresenceError> {
        let now = now_ms();
        let cutoff = now.saturating_sub(self.inner.thresholds.offline_after_ms());
        let workspaces = self.lock();
        let mut counts = StatusCounts::default();
        for (user_id, entry) in workspaces.values().flatten() {
            if entry.last_seen_ms.is_some_and(|seen| seen > cutoff) {
                counts.add(self.presence(user_id, Some(entry), now).status);
            }
        }
        Ok(counts)
    }
}
