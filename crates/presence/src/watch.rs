//! The subscription stream shared by both implementations.
//!
//! Published changes are only hints: on each one the stream re-reads that
//! user, and on a timer it re-lists the workspace, so decay (which nobody
//! publishes, since it happens by heartbeats *not* arriving) is noticed too.
//! Emitting only what was just read, compared with what this subscriber last
//! emitted, keeps every subscriber's view ordered and free of duplicates even
//! when hints and sweeps overlap.
//!
//! The stream does its work while it is polled and spawns nothing, so
//! dropping it stops everything.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::{self, BoxStream};
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::{PresenceChange, PresenceError, PresenceStore, Status};

/// Turns the raw change hints of one workspace into the subscriber's stream
/// of effective-status changes. `hints` must already be listening, so that
/// nothing between the snapshot taken here and the first poll is missed.
pub(crate) async fn watch_workspace<S>(
    store: S,
    workspace_id: String,
    hints: BoxStream<'static, PresenceChange>,
    sweep_every: Duration,
) -> Result<BoxStream<'static, PresenceChange>, PresenceError>
where
    S: PresenceStore + Clone,
{
    let known = store
        .list(&workspace_id)
        .await?
        .into_iter()
        .filter(|p| p.status != Status::Offline)
        .map(|p| (p.user_id, p.status))
        .collect();
    let mut sweep = tokio::time::interval_at(Instant::now() + sweep_every, sweep_every);
    sweep.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let watcher = Watcher {
        store,
        workspace_id,
        hints,
        sweep,
        known,
        pending: VecDeque::new(),
    };
    Ok(stream::unfold(watcher, |mut watcher| async move {
        let change = watcher.next_change().await?;
        Some((change, watcher))
    })
    .boxed())
}

struct Watcher<S> {
    store: S,
    workspace_id: String,
    hints: BoxStream<'static, PresenceChange>,
    sweep: Interval,
    /// What this subscriber last emitted per user; absent means offline.
    known: HashMap<String, Status>,
    /// Changes found but not yet handed out.
    pending: VecDeque<PresenceChange>,
}

impl<S: PresenceStore> Watcher<S> {
    /// The next change, or `None` when the hints end (backend connection
    /// lost).
    async fn next_change(&mut self) -> Option<PresenceChange> {
        loop {
            if let Some(change) = self.pending.pop_front() {
                return Some(change);
            }
            tokio::select! {
                hint = self.hints.next() => match hint {
                    Some(hint) if hint.workspace_id == self.workspace_id => {
                        self.recheck_user(&hint.user_id).await;
                    }
                    Some(_) => {}
                    None => {
                        tracing::warn!(
                            workspace_id = %self.workspace_id,
                            "presence subscription lost its backend connection; ending the stream"
                        );
                        return None;
                    }
                },
                _ = self.sweep.tick() => self.sweep_workspace().await,
            }
        }
    }

    /// Re-reads one user after a hint and records a change if there is one.
    async fn recheck_user(&mut self, user_id: &str) {
        match self.store.get(&self.workspace_id, user_id).await {
            Ok(presence) => self.observe(&presence.user_id, presence.status),
            Err(error) => tracing::warn!(
                workspace_id = %self.workspace_id,
                user_id,
                %error,
                "presence subscription could not re-read a user; the next sweep will catch up"
            ),
        }
    }

    /// Re-lists the workspace to notice decay; users no longer listed have
    /// gone offline.
    async fn sweep_workspace(&mut self) {
        let listed = match self.store.list(&self.workspace_id).await {
            Ok(listed) => listed,
            Err(error) => {
                tracing::warn!(
                    workspace_id = %self.workspace_id,
                    %error,
                    "presence subscription could not list the workspace; retrying at the next sweep"
                );
                return;
            }
        };
        let mut present = HashSet::with_capacity(listed.len());
        for presence in &listed {
            present.insert(presence.user_id.clone());
            self.observe(&presence.user_id, presence.status);
        }
        let gone: Vec<String> = self
            .known
            .keys()
            .filter(|user_id| !present.contains(*user_id))
            .cloned()
            .collect();
        for user_id in gone {
            self.observe(&user_id, Status::Offline);
        }
    }

    /// Queues a change if `status` differs from what was last emitted.
    fn observe(&mut self, user_id: &str, status: Status) {
        let previous = self.known.get(user_id).copied().unwrap_or(Status::Offline);
        if previous == status {
            return;
        }
        if status == Status::Offline {
            self.known.remove(user_id);
        } else {
            self.known.insert(user_id.to_owned(), status);
        }
        self.pending.push_back(PresenceChange {
            workspace_id: self.workspace_id.clone(),
            user_id: user_id.to_owned(),
            status,
        });
    }
}
