//! The contract every [`PresenceStore`](crate::PresenceStore) implementation
//! must meet, as one suite run against each of them (see
//! `tests/conformance.rs`).
//!
//! Every case works in workspaces of its own (random ids), so the suite can
//! share a store with other runs. Timing is relative to the store's
//! [`Thresholds`]: run it with short ones (a few hundred milliseconds) and it
//! finishes in seconds. Assertions on decay poll with deadlines rather than
//! sleeping for exact durations.

use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::time::Instant;

use crate::{
    PresenceChange, PresenceError, SharedPresence, Status, StatusCounts, Thresholds, UserPresence,
};

/// Thresholds short enough for tests, with an away window wide enough to be
/// observed on a busy machine.
pub fn test_thresholds() -> Thresholds {
    Thresholds {
        away_after: Duration::from_millis(250),
        offline_after: Duration::from_millis(750),
    }
}

/// The store under test and the thresholds it was opened with.
pub struct Ctx {
    /// The store under test.
    pub store: SharedPresence,
    /// The thresholds `store` was opened with.
    pub thresholds: Thresholds,
}

macro_rules! run_cases {
    ($ctx:expr, $($case:ident),+ $(,)?) => {
        $(
            eprintln!("presence conformance: {}", stringify!($case));
            $case($ctx).await;
        )+
    };
}

/// Runs every case against `store`, which must have been opened with
/// `thresholds`. Panics, naming the case, on the first violation.
pub async fn run_all(store: SharedPresence, thresholds: Thresholds) {
    let ctx = &Ctx { store, thresholds };
    run_cases!(
        ctx,
        ping_answers,
        unknown_user_is_offline,
        heartbeat_makes_user_online,
        status_decays_to_away_then_offline,
        chosen_status_caps_effective_status,
        set_online_counts_as_heartbeat,
        chosen_status_is_forgotten_when_user_is_gone,
        list_is_per_workspace,
        decayed_users_leave_the_list,
        subscribe_sees_changes_and_decay,
        subscribe_reports_only_changes,
        invalid_ids_are_rejected,
        counts_span_workspaces_and_follow_decay,
    );
}

fn fresh_workspace() -> String {
    format!("ws-{}", uuid::Uuid::new_v4().simple())
}

fn ok<T>(result: Result<T, PresenceError>, what: &str) -> T {
    match result {
        Ok(value) => value,
        Err(error) => panic!("{what} failed: {error}"),
    }
}

impl Ctx {
    /// A generous deadline for anything that should happen within the
    /// thresholds.
    fn patience(&self) -> Duration {
        self.thresholds.offline_after * 4 + Duration::from_secs(2)
    }

    async fn get(&self, ws: &str, user: &str) -> UserPresence {
        ok(self.store.get(ws, user).await, "get")
    }

    async fn heartbeat(&self, ws: &str, user: &str) -> UserPresence {
        ok(self.store.heartbeat(ws, user).await, "heartbeat")
    }

    async fn set_status(&self, ws: &str, user: &str, chosen: Status) -> UserPresence {
        ok(self.store.set_status(ws, user, chosen).await, "set_status")
    }

    async fn listed_users(&self, ws: &str) -> Vec<(String, Status)> {
        ok(self.store.list(ws).await, "list")
            .into_iter()
            .map(|p| (p.user_id, p.status))
            .collect()
    }

    async fn subscribe(&self, ws: &str) -> BoxStream<'static, PresenceChange> {
        ok(self.store.subscribe(ws).await, "subscribe")
    }

    /// Polls the user until their status is no longer `from`; returns the new
    /// status and when it was first seen.
    async fn wait_for_status_change(
        &self,
        ws: &str,
        user: &str,
        from: Status,
    ) -> (Status, Instant) {
        let deadline = Instant::now() + self.patience();
        loop {
            let status = self.get(ws, user).await.status;
            if status != from {
                return (status, Instant::now());
            }
            assert!(
                Instant::now() < deadline,
                "{user} stayed {from} for more than {:?}",
                self.patience()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn next_change(
        &self,
        changes: &mut BoxStream<'static, PresenceChange>,
        expecting: &str,
    ) -> PresenceChange {
        match tokio::time::timeout(self.patience(), changes.next()).await {
            Ok(Some(change)) => change,
            Ok(None) => panic!("subscription ended while expecting {expecting}"),
            Err(_) => panic!(
                "no change within {:?} while expecting {expecting}",
                self.patience()
            ),
        }
    }
}

fn change(ws: &str, user: &str, status: Status) -> PresenceChange {
    PresenceChange {
        workspace_id: ws.to_owned(),
        user_id: user.to_owned(),
        status,
    }
}

async fn ping_answers(ctx: &Ctx) {
    ok(ctx.store.ping().await, "ping");
}

async fn unknown_user_is_offline(ctx: &Ctx) {
    let ws = fresh_workspace();
    assert_eq!(
        ctx.get(&ws, "nobody").await,
        UserPresence::unknown("nobody")
    );
    assert!(ctx.listed_users(&ws).await.is_empty());
}

async fn heartbeat_makes_user_online(ctx: &Ctx) {
    let ws = fresh_workspace();
    let returned = ctx.heartbeat(&ws, "alice").await;
    assert_eq!(returned.status, Status::Online);
    assert_eq!(returned.chosen, Status::Online);
    assert!(returned.last_seen_ms.is_some(), "heartbeat sets last_seen");

    let read = ctx.get(&ws, "alice").await;
    assert_eq!(read.status, Status::Online);
    assert_eq!(read.last_seen_ms, returned.last_seen_ms);
    assert_eq!(
        ctx.listed_users(&ws).await,
        vec![("alice".to_owned(), Status::Online)]
    );
}

async fn status_decays_to_away_then_offline(ctx: &Ctx) {
    let ws = fresh_workspace();
    let started = Instant::now();
    ctx.heartbeat(&ws, "alice").await;

    let (status, at) = ctx
        .wait_for_status_change(&ws, "alice", Status::Online)
        .await;
    assert_eq!(status, Status::Away, "online decays to away first");
    // A little slack for the store's and the test's clocks being read at
    // slightly different moments.
    let slack = Duration::from_millis(20);
    assert!(
        at.duration_since(started) + slack >= ctx.thresholds.away_after,
        "away after {:?}, before away_after",
        at.duration_since(started)
    );

    let (status, at) = ctx.wait_for_status_change(&ws, "alice", Status::Away).await;
    assert_eq!(status, Status::Offline, "away decays to offline");
    assert!(
        at.duration_since(started) + slack >= ctx.thresholds.offline_after,
        "offline after {:?}, before offline_after",
        at.duration_since(started)
    );
}

async fn chosen_status_caps_effective_status(ctx: &Ctx) {
    let ws = fresh_workspace();
    ctx.heartbeat(&ws, "alice").await;

    let away = ctx.set_status(&ws, "alice", Status::Away).await;
    assert_eq!((away.status, away.chosen), (Status::Away, Status::Away));
    assert_eq!(ctx.get(&ws, "alice").await.status, Status::Away);
    let after_heartbeat = ctx.heartbeat(&ws, "alice").await;
    assert_eq!(
        (after_heartbeat.status, after_heartbeat.chosen),
        (Status::Away, Status::Away),
        "a heartbeat keeps the chosen status"
    );

    let offline = ctx.set_status(&ws, "alice", Status::Offline).await;
    assert_eq!(
        (offline.status, offline.chosen),
        (Status::Offline, Status::Offline)
    );
    ctx.heartbeat(&ws, "alice").await;
    assert_eq!(ctx.get(&ws, "alice").await.status, Status::Offline);
    assert_eq!(
        ctx.listed_users(&ws).await,
        vec![("alice".to_owned(), Status::Offline)],
        "a heartbeating user who chose offline is listed as offline"
    );

    let online = ctx.set_status(&ws, "alice", Status::Online).await;
    assert_eq!(
        (online.status, online.chosen),
        (Status::Online, Status::Online)
    );
    assert_eq!(ctx.get(&ws, "alice").await.status, Status::Online);
}

/// Choosing online or away is done by a user at the keyboard, so it counts
/// as activity; choosing offline does not.
async fn set_online_counts_as_heartbeat(ctx: &Ctx) {
    let ws = fresh_workspace();
    let online = ctx.set_status(&ws, "alice", Status::Online).await;
    assert_eq!(online.status, Status::Online);
    assert!(online.last_seen_ms.is_some());
    assert_eq!(
        ctx.listed_users(&ws).await,
        vec![("alice".to_owned(), Status::Online)]
    );

    let away = ctx.set_status(&ws, "bob", Status::Away).await;
    assert_eq!((away.status, away.chosen), (Status::Away, Status::Away));
    assert!(away.last_seen_ms.is_some());

    // Choosing offline without a heartbeat does not make a user seen.
    let offline = ctx.set_status(&ws, "carol", Status::Offline).await;
    assert_eq!(
        (offline.status, offline.chosen),
        (Status::Offline, Status::Offline)
    );
    assert_eq!(offline.last_seen_ms, None);
}

async fn chosen_status_is_forgotten_when_user_is_gone(ctx: &Ctx) {
    let ws = fresh_workspace();
    ctx.heartbeat(&ws, "alice").await;
    ctx.set_status(&ws, "alice", Status::Offline).await;
    tokio::time::sleep(ctx.thresholds.offline_after + Duration::from_millis(100)).await;

    assert_eq!(ctx.get(&ws, "alice").await, UserPresence::unknown("alice"));
    let back = ctx.heartbeat(&ws, "alice").await;
    assert_eq!((back.status, back.chosen), (Status::Online, Status::Online));
}

async fn list_is_per_workspace(ctx: &Ctx) {
    let (a, b) = (fresh_workspace(), fresh_workspace());
    ctx.heartbeat(&a, "bob").await;
    ctx.heartbeat(&a, "alice").await;
    ctx.heartbeat(&b, "carol").await;
    // The same user id in another workspace is another presence.
    ctx.set_status(&b, "alice", Status::Online).await;
    ctx.set_status(&b, "alice", Status::Offline).await;

    assert_eq!(
        ctx.listed_users(&a).await,
        vec![
            ("alice".to_owned(), Status::Online),
            ("bob".to_owned(), Status::Online)
        ],
        "list is ordered by user id and holds only this workspace"
    );
    assert_eq!(
        ctx.listed_users(&b).await,
        vec![
            ("alice".to_owned(), Status::Offline),
            ("carol".to_owned(), Status::Online)
        ]
    );
    assert_eq!(ctx.get(&a, "alice").await.status, Status::Online);
    assert_eq!(ctx.get(&b, "bob").await, UserPresence::unknown("bob"));
    assert!(ctx.listed_users(&fresh_workspace()).await.is_empty());
}

async fn decayed_users_leave_the_list(ctx: &Ctx) {
    let ws = fresh_workspace();
    ctx.heartbeat(&ws, "alice").await;
    let deadline = Instant::now() + ctx.patience();
    while !ctx.listed_users(&ws).await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "alice still listed {:?} after her last heartbeat",
            ctx.patience()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ctx.get(&ws, "alice").await.status, Status::Offline);
}

async fn subscribe_sees_changes_and_decay(ctx: &Ctx) {
    let (ws, other) = (fresh_workspace(), fresh_workspace());
    let mut changes = ctx.subscribe(&ws).await;
    let mut other_changes = ctx.subscribe(&other).await;

    ctx.heartbeat(&ws, "alice").await;
    let seen = ctx.next_change(&mut changes, "alice online").await;
    assert_eq!(seen, change(&ws, "alice", Status::Online));

    ctx.set_status(&ws, "alice", Status::Away).await;
    let seen = ctx.next_change(&mut changes, "alice away (chosen)").await;
    assert_eq!(seen, change(&ws, "alice", Status::Away));

    ctx.set_status(&ws, "alice", Status::Online).await;
    let seen = ctx.next_change(&mut changes, "alice online again").await;
    assert_eq!(seen, change(&ws, "alice", Status::Online));

    // Heartbeats stop: the subscriber sees the decay.
    let seen = ctx
        .next_change(&mut changes, "alice decaying to away")
        .await;
    assert_eq!(seen, change(&ws, "alice", Status::Away));
    let seen = ctx
        .next_change(&mut changes, "alice decaying to offline")
        .await;
    assert_eq!(seen, change(&ws, "alice", Status::Offline));

    let leaked = tokio::time::timeout(Duration::from_millis(200), other_changes.next()).await;
    assert!(
        leaked.is_err(),
        "a subscriber of another workspace saw {leaked:?}"
    );
}

async fn subscribe_reports_only_changes(ctx: &Ctx) {
    let ws = fresh_workspace();
    ctx.heartbeat(&ws, "alice").await;
    let mut changes = ctx.subscribe(&ws).await;

    // Already online when the subscription started: not a change.
    ctx.heartbeat(&ws, "alice").await;
    ctx.heartbeat(&ws, "bob").await;
    let seen = ctx.next_change(&mut changes, "bob online").await;
    assert_eq!(seen, change(&ws, "bob", Status::Online));
}

async fn invalid_ids_are_rejected(ctx: &Ctx) {
    let ws = fresh_workspace();
    let other = format!("{ws}:x");
    for (workspace, user) in [
        (other.as_str(), "alice"),
        (ws.as_str(), "a:b"),
        ("", "alice"),
        (ws.as_str(), ""),
    ] {
        assert!(
            matches!(
                ctx.store.heartbeat(workspace, user).await,
                Err(PresenceError::InvalidId { .. })
            ),
            "heartbeat({workspace:?}, {user:?}) must be rejected"
        );
    }
    assert!(matches!(
        ctx.store.list("").await,
        Err(PresenceError::InvalidId { .. })
    ));
    assert!(matches!(
        ctx.store.subscribe("a:b").await,
        Err(PresenceError::InvalidId { .. })
    ));
}

impl Ctx {
    /// Polls the counts until they are `want`, within the patience.
    async fn counts_become(&self, want: StatusCounts, what: &str) {
        let deadline = Instant::now() + self.patience();
        loop {
            let counts = ok(self.store.count_by_status().await, "count_by_status");
            if counts == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: counts {counts:?}, expected {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn counts_span_workspaces_and_follow_decay(ctx: &Ctx) {
    // Users of the earlier cases decay first.
    ctx.counts_become(StatusCounts::default(), "before").await;
    let (a, b) = (fresh_workspace(), fresh_workspace());
    ctx.heartbeat(&a, "u1").await;
    ctx.heartbeat(&b, "u2").await;
    ctx.set_status(&b, "u3", Status::Away).await;
    ctx.heartbeat(&b, "u4").await;
    ctx.set_status(&b, "u4", Status::Offline).await;
    let counts = ok(ctx.store.count_by_status().await, "count_by_status");
    assert_eq!(
        counts,
        StatusCounts {
            online: 2,
            away: 1,
            offline: 1
        },
        "right after the heartbeats"
    );
    ctx.counts_become(StatusCounts::default(), "after everyone decayed")
        .await;
}
