//! Agent presence: whether a user of a workspace is online, away or offline.
//!
//! Clients send heartbeats while an agent has TELENET open; the *effective*
//! status is derived from the age of the last heartbeat (see
//! [`effective_status`]) and capped by the status the agent chose
//! ([`PresenceStore::set_status`]). Changes of effective status are streamed
//! to subscribers of the workspace, including the decay online → away →
//! offline when heartbeats stop.
//!
//! Two implementations share one contract (see `conformance`): Redis
//! (`redis://…`) for production and in-memory (`memory://`) for the dev server
//! and unit tests. Pick one with [`connect`].

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use telenet_kit::infra_tls::InfraTlsConfig;

pub mod memory;
pub mod redis_store;
mod watch;

#[doc(hidden)]
pub mod conformance;

pub use memory::MemoryPresence;
pub use redis_store::RedisPresence;

/// A user's activity status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Heartbeating recently and not asking to be left alone.
    Online,
    /// Idle for a while, or chose to appear away.
    Away,
    /// Gone, or chose to appear offline.
    Offline,
}

impl Status {
    /// The lowercase name used in JSON, Redis and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Online => "online",
            Status::Away => "away",
            Status::Offline => "offline",
        }
    }

    /// How available the status is: higher is more available.
    fn availability(self) -> u8 {
        match self {
            Status::Online => 2,
            Status::Away => 1,
            Status::Offline => 0,
        }
    }

    /// The less available of `self` and `cap`: a chosen status can lower the
    /// derived status but never raise it.
    pub fn capped_by(self, cap: Status) -> Status {
        if cap.availability() < self.availability() {
            cap
        } else {
            self
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing a [`Status`] from text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown presence status `{input}`: expected online, away or offline")]
pub struct ParseStatusError {
    /// The text that was not a status.
    pub input: String,
}

impl FromStr for Status {
    type Err = ParseStatusError;

    /// Parses `online`, `away` or `offline`, ignoring ASCII case and
    /// surrounding whitespace.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        [Status::Online, Status::Away, Status::Offline]
            .into_iter()
            .find(|status| status.as_str().eq_ignore_ascii_case(trimmed))
            .ok_or_else(|| ParseStatusError {
                input: s.to_owned(),
            })
    }
}

/// The presence of one user in one workspace, as of the moment it was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserPresence {
    /// The user.
    pub user_id: String,
    /// The effective status: derived from the last heartbeat, capped by
    /// `chosen`.
    pub status: Status,
    /// The status the user chose; `Online` when they chose nothing (no cap).
    pub chosen: Status,
    /// Time of the last heartbeat, in milliseconds since the Unix epoch;
    /// `None` when there was none within `offline_after`.
    pub last_seen_ms: Option<i64>,
}

impl UserPresence {
    /// A user the store knows nothing about: offline, no choice, never seen.
    pub fn unknown(user_id: &str) -> Self {
        Self {
            user_id: user_id.to_owned(),
            status: Status::Offline,
            chosen: Status::Online,
            last_seen_ms: None,
        }
    }
}

/// A change of a user's effective status, as published to the subscribers of
/// a workspace (JSON on the Redis channel).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceChange {
    /// The workspace of the user.
    pub workspace_id: String,
    /// The user whose status changed.
    pub user_id: String,
    /// The new effective status.
    pub status: Status,
}

/// How long after the last heartbeat a user becomes away, then offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Heartbeat age from which a user is away (default 60 s).
    pub away_after: Duration,
    /// Heartbeat age from which a user is offline (default 300 s). Also the
    /// lifetime of a user's stored presence (and chosen status) when no
    /// heartbeat refreshes it.
    pub offline_after: Duration,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            away_after: Duration::from_secs(60),
            offline_after: Duration::from_secs(300),
        }
    }
}

impl Thresholds {
    /// Checks that the thresholds make sense: both positive, whole
    /// milliseconds at least, and `away_after <= offline_after`.
    pub fn validate(&self) -> Result<(), PresenceError> {
        if self.away_after < Duration::from_millis(1) {
            return Err(PresenceError::InvalidThresholds(
                "away_after must be at least 1 ms".to_owned(),
            ));
        }
        if self.offline_after < self.away_after {
            return Err(PresenceError::InvalidThresholds(format!(
                "offline_after ({:?}) must not be shorter than away_after ({:?})",
                self.offline_after, self.away_after
            )));
        }
        Ok(())
    }

    /// `away_after` in whole milliseconds.
    pub fn away_after_ms(&self) -> i64 {
        duration_ms(self.away_after)
    }

    /// `offline_after` in whole milliseconds.
    pub fn offline_after_ms(&self) -> i64 {
        duration_ms(self.offline_after)
    }

    /// How often a subscription re-evaluates its workspace to notice decay:
    /// a quarter of the shortest status window, between 10 ms and 1 s. With
    /// the defaults that is one cheap listing per second per subscriber.
    pub fn sweep_interval(&self) -> Duration {
        let away_window = self.offline_after.saturating_sub(self.away_after);
        let window = if away_window.is_zero() {
            self.away_after
        } else {
            self.away_after.min(away_window)
        };
        (window / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
    }
}

/// The effective status of a user at `now_ms`: heartbeat age below
/// `away_after` is online, below `offline_after` away, else offline (also when
/// there was no heartbeat); then capped by the `chosen` status.
///
/// A heartbeat from the future (clock skew between instances) counts as fresh.
pub fn effective_status(
    last_seen_ms: Option<i64>,
    chosen: Status,
    now_ms: i64,
    thresholds: &Thresholds,
) -> Status {
    let derived = match last_seen_ms {
        None => Status::Offline,
        Some(seen) => {
            let age = now_ms.saturating_sub(seen).max(0);
            if age < thresholds.away_after_ms() {
                Status::Online
            } else if age < thresholds.offline_after_ms() {
                Status::Away
            } else {
                Status::Offline
            }
        }
    };
    derived.capped_by(chosen)
}

/// Errors of the presence store.
#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    /// The URL's scheme names no implementation.
    #[error(
        "unsupported presence url scheme `{scheme}`: expected redis://, rediss:// or memory://"
    )]
    UnsupportedScheme {
        /// The scheme found (before `://`), or the whole URL when it has none.
        scheme: String,
    },
    /// The `presence_tls` files cannot be used, or not with this URL.
    #[error("{0}")]
    InvalidTls(String),
    /// The thresholds are inconsistent.
    #[error("invalid presence thresholds: {0}")]
    InvalidThresholds(String),
    /// A workspace or user id cannot be stored safely.
    #[error("invalid {what} `{id}`: {reason}")]
    InvalidId {
        /// `workspace id` or `user id`.
        what: &'static str,
        /// The rejected id.
        id: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The backend did not answer in time.
    #[error("presence backend timed out while {0}")]
    Timeout(&'static str),
    /// The backend failed or is unreachable.
    #[error("presence backend error: {0}")]
    Backend(#[from] redis::RedisError),
    /// A change could not be encoded for publishing.
    #[error("cannot encode presence change: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Where agent presence is kept. All operations are scoped by workspace: no
/// call for workspace A reads or changes anything of workspace B.
#[async_trait]
pub trait PresenceStore: Send + Sync + 'static {
    /// Records that the user is active now and returns their presence.
    /// Also refreshes the lifetime of their chosen status.
    async fn heartbeat(
        &self,
        workspace_id: &str,
        user_id: &str,
    ) -> Result<UserPresence, PresenceError>;

    /// Sets the status the user chose; choosing online or away also counts as activity (a heartbeat).
    /// The choice lasts while the user is around (until `offline_after`
    /// without heartbeats).
    async fn set_status(
        &self,
        workspace_id: &str,
        user_id: &str,
        chosen: Status,
    ) -> Result<UserPresence, PresenceError>;

    /// The user's presence now; a user the store does not know is offline.
    async fn get(&self, workspace_id: &str, user_id: &str) -> Result<UserPresence, PresenceError>;

    /// The users of the workspace with a heartbeat within `offline_after`,
    /// ordered by user id.
    async fn list(&self, workspace_id: &str) -> Result<Vec<UserPresence>, PresenceError>;

    /// Changes of effective status in the workspace from now on, including
    /// decay when heartbeats stop (noticed within
    /// [`Thresholds::sweep_interval`]). Subscribe first, then [`list`] for a
    /// snapshot, to miss nothing. Statuses are re-read before they are emitted,
    /// so a quick succession of changes may be reported as only the latest.
    /// The stream ends if the backend connection behind it is lost; subscribe
    /// again then.
    ///
    /// [`list`]: PresenceStore::list
    async fn subscribe(
        &self,
        workspace_id: &str,
    ) -> Result<BoxStream<'static, PresenceChange>, PresenceError>;

    /// Checks that the backend answers (for readiness probes).
    async fn ping(&self) -> Result<(), PresenceError>;

    /// The users of every workspace with a heartbeat within `offline_after`
    /// (those [`list`](PresenceStore::list) shows), counted by effective
    /// status. For metrics: it reads the whole store.
    async fn count_by_status(&self) -> Result<StatusCounts, PresenceError>;
}

/// Users by effective status, see [`PresenceStore::count_by_status`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusCounts {
    pub online: u64,
    pub away: u64,
    /// Active users who chose to appear offline.
    pub offline: u64,
}

impl StatusCounts {
    /// Counts one more user with `status`.
    pub fn add(&mut self, status: Status) {
        match status {
            Status::Online => self.online += 1,
            Status::Away => self.away += 1,
            Status::Offline => self.offline += 1,
        }
    }
}

/// A presence store shared across tasks.
pub type SharedPresence = Arc<dyn PresenceStore>;

/// Opens the presence store named by `url`: `redis://…`, `rediss://…`
/// (TLS, verified against the system's CAs) or `memory://`.
/// Every Redis key and channel starts with `prefix`, so that tests and
/// instances sharing one Redis never collide.
pub async fn connect(
    url: &str,
    prefix: &str,
    thresholds: Thresholds,
) -> Result<SharedPresence, PresenceError> {
    connect_with_tls(url, prefix, thresholds, &InfraTlsConfig::default()).await
}

/// [`connect`] with the private CA and client certificate of `tls`
/// (`presence_tls`) for a `rediss://` Redis; TLS files with any other URL
/// are refused.
pub async fn connect_with_tls(
    url: &str,
    prefix: &str,
    thresholds: Thresholds,
    tls: &InfraTlsConfig,
) -> Result<SharedPresence, PresenceError> {
    thresholds.validate()?;
    let scheme = url.split_once("://").map_or(url, |(scheme, _)| scheme);
    let scheme = scheme.to_ascii_lowercase();
    if !tls.is_empty() && scheme != "rediss" {
        return Err(PresenceError::InvalidTls(format!(
            "presence_tls is set but the presence URL is {scheme}://; it is for rediss:// only"
        )));
    }
    match scheme.as_str() {
        "memory" => Ok(Arc::new(MemoryPresence::new(thresholds))),
        "redis" | "rediss" => Ok(Arc::new(
            RedisPresence::connect_with_tls(url, prefix, thresholds, tls).await?,
        )),
        _ => Err(PresenceError::UnsupportedScheme {
            scheme: scheme.to_owned(),
        }),
    }
}

/// The longest id accepted, in bytes.
const MAX_ID_LEN: usize = 256;

/// The name of the per-workspace set of users in Redis; a user id may not be
/// this, or its key would collide with the set's.
const RESERVED_USER_ID: &str = "users";

/// Checks a workspace id and a user id before they become part of a key.
/// `:` separates key parts, so an id containing it could reach into another
/// workspace's keys.
pub(crate) fn validate_ids(workspace_id: &str, user_id: &str) -> Result<(), PresenceError> {
    validate_id("workspace id", workspace_id)?;
    validate_id("user id", user_id)?;
    if user_id == RESERVED_USER_ID {
        return Err(PresenceError::InvalidId {
            what: "user id",
            id: user_id.to_owned(),
            reason: "`users` is reserved",
        });
    }
    Ok(())
}

/// Checks a workspace id (see [`validate_ids`]).
pub(crate) fn validate_workspace_id(workspace_id: &str) -> Result<(), PresenceError> {
    validate_id("workspace id", workspace_id)
}

fn validate_id(what: &'static str, id: &str) -> Result<(), PresenceError> {
    let reason = if id.is_empty() {
        Some("must not be empty")
    } else if id.len() > MAX_ID_LEN {
        Some("must be at most 256 bytes")
    } else if id.contains(':') {
        Some("must not contain `:`")
    } else if id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("must not contain whitespace or control characters")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(PresenceError::InvalidId {
            what,
            id: id.chars().take(MAX_ID_LEN).collect(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Milliseconds since the Unix epoch, by this process's clock.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, duration_ms)
}

fn duration_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thresholds() -> Thresholds {
        Thresholds {
            away_after: Duration::from_millis(100),
            offline_after: Duration::from_millis(300),
        }
    }

    #[test]
    fn status_round_trips_through_text_and_json() {
        for status in [Status::Online, Status::Away, Status::Offline] {
            assert_eq!(status.to_string().parse::<Status>(), Ok(status));
            let json = serde_json::to_string(&status).unwrap_or_default();
            assert_eq!(json, format!("\"{status}\""));
        }
        assert_eq!(" AWAY ".parse::<Status>(), Ok(Status::Away));
    }

    #[test]
    fn unknown_status_text_is_a_clear_error() {
        let err = "busy".parse::<Status>().err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("unknown presence status `busy`: expected online, away or offline")
        );
    }

    #[test]
    fn status_decays_with_heartbeat_age() {
        let t = thresholds();
        let now = 10_000;
        let at = |age: i64| effective_status(Some(now - age), Status::Online, now, &t);
        assert_eq!(at(0), Status::Online);
        assert_eq!(at(99), Status::Online);
        assert_eq!(at(100), Status::Away);
        assert_eq!(at(299), Status::Away);
        assert_eq!(at(300), Status::Offline);
        assert_eq!(
            at(-5_000),
            Status::Online,
            "future heartbeat counts as fresh"
        );
        assert_eq!(
            effective_status(None, Status::Online, now, &t),
            Status::Offline
        );
    }

    #[test]
    fn chosen_status_caps_but_never_raises() {
        let t = thresholds();
        let now = 10_000;
        let fresh = Some(now);
        let idle = Some(now - 150);
        assert_eq!(effective_status(fresh, Status::Away, now, &t), Status::Away);
        assert_eq!(
            effective_status(fresh, Status::Offline, now, &t),
            Status::Offline
        );
        assert_eq!(
            effective_status(idle, Status::Online, now, &t),
            Status::Away
        );
        assert_eq!(
            effective_status(idle, Status::Offline, now, &t),
            Status::Offline
        );
        assert_eq!(
            effective_status(None, Status::Away, now, &t),
            Status::Offline
        );
    }

    #[test]
    fn thresholds_are_validated() {
        assert!(Thresholds::default().validate().is_ok());
        let inverted = Thresholds {
            away_after: Duration::from_secs(10),
            offline_after: Duration::from_secs(5),
        };
        assert!(matches!(
            inverted.validate(),
            Err(PresenceError::InvalidThresholds(_))
        ));
        let zero = Thresholds {
            away_after: Duration::ZERO,
            offline_after: Duration::from_secs(5),
        };
        assert!(zero.validate().is_err());
    }

    #[test]
    fn sweep_interval_is_fine_for_short_and_bounded_for_long_thresholds() {
        assert_eq!(thresholds().sweep_interval(), Duration::from_millis(25));
        assert_eq!(
            Thresholds::default().sweep_interval(),
            Duration::from_secs(1)
        );
    }

    #[tokio::test]
    async fn connect_names_an_unsupported_scheme() {
        let err = connect("amqp://localhost", "", Thresholds::default())
            .await
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                "unsupported presence url scheme `amqp`: expected redis://, rediss:// or memory://"
            )
        );
        assert!(
            connect("memory://", "", Thresholds::default())
                .await
                .is_ok()
        );
    }

    #[test]
    fn ids_that_could_reach_other_keys_are_rejected() {
        assert!(validate_ids("ws-1", "user-1").is_ok());
        assert!(validate_ids("ws:1", "user").is_err());
        assert!(validate_ids("ws", "a:b").is_err());
        assert!(validate_ids("", "user").is_err());
        assert!(validate_ids("ws", "").is_err());
        assert!(validate_ids("ws", "users").is_err());
        assert!(validate_ids("ws", "a b").is_err());
        assert!(validate_ids("ws", &"x".repeat(257)).is_err());
    }
}
