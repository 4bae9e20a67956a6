//! Rate limits shared by every replica of a service.
//!
//! A limit is a [`Quota`]: a steady rate per second and a burst, enforced
//! with the generic cell rate algorithm (GCRA). For each key the store keeps
//! one number, the *theoretical arrival time* (TAT): when the key's bucket
//! would be full again. A request at `now` is allowed when
//! `max(TAT, now) + interval - burst × interval <= now`, and then moves the
//! TAT on by one `interval` (`1 / rate`). A refused request changes nothing
//! and is told how long to wait. A key whose TAT has passed is the same as
//! a key never seen, so stored state lives only until its bucket is full
//! again.
//!
//! Two stores share one contract (see `conformance`): Redis (`redis://…`),
//! where every check is one Lua script run atomically on the server's clock
//! and keys carry a prefix and a TTL, so replicas share their counts; and
//! memory (`memory://`), a bounded map for the dev server and tests. Pick
//! one with [`connect`].
//!
//! Services check through a [`RateLimiter`], which counts what it refuses
//! (`telenet_rate_limited_total{scope}`) and *fails open*: when the store
//! does not answer, the request is allowed, the failure is counted
//! (`telenet_rate_limit_store_errors_total`) and logged at most once a
//! minute. A rate limit is a protection, not a dependency: Redis being away
//! never turns into errors for clients.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use telenet_kit::metrics::Metrics;

pub mod memory;
pub mod redis_store;

#[doc(hidden)]
pub mod conformance;

pub use memory::MemoryStore;
pub use redis_store::RedisStore;

/// A limit: `burst` requests at once, refilled at one request per
/// [`interval`](Quota::interval).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    interval: Duration,
    burst: u32,
}

impl Quota {
    /// `per_second` requests a second on average, `burst` at once. Both
    /// must be at least 1.
    pub fn per_second(per_second: u32, burst: u32) -> Result<Self, RateLimitError> {
        if per_second == 0 {
            return Err(RateLimitError::InvalidQuota(
                "the rate per second must be at least 1".to_owned(),
            ));
        }
        Self::with_interval(Duration::from_secs(1) / per_second, burst)
    }

    /// One request per `interval` on average, `burst` at once. `interval`
    /// must be at least 1 µs and at most a day, `burst` at least 1.
    pub fn with_interval(interval: Duration, burst: u32) -> Result<Self, RateLimitError> {
        if interval < Duration::from_micros(1) || interval > Duration::from_secs(86_400) {
            return Err(RateLimitError::InvalidQuota(format!(
                "the interval must be between 1µs and 1 day, not {interval:?}"
            )));
        }
        if burst == 0 {
            return Err(RateLimitError::InvalidQuota(
                "the burst must be at least 1".to_owned(),
            ));
        }
        Ok(Self { interval, burst })
    }

    /// The time one request takes to refill.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// How many requests are allowed at once.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// [`interval`](Self::interval) in whole microseconds (at least 1).
    pub(crate) fn interval_micros(&self) -> u64 {
        u64::try_from(self.interval.as_micros())
            .unwrap_or(u64::MAX)
            .max(1)
    }
}

/// One limit to check: the key it counts (e.g. `token:<hash>`) and its quota.
#[derive(Debug, Clone, Copy)]
pub struct Cell<'a> {
    /// What is counted. Keys of different scopes must differ (prefix them
    /// with the scope).
    pub key: &'a str,
    /// The limit.
    pub quota: Quota,
}

/// What a store decided about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Allowed, and counted against every cell.
    Allowed {
        /// How many more requests the tightest cell allows right now.
        remaining: u32,
    },
    /// Refused by at least one cell; nothing was counted.
    Limited {
        /// How long until the request would be allowed.
        retry_after: Duration,
        /// The index of the cell that refused with the longest wait.
        by: usize,
    },
}

/// Errors of a rate-limit store.
#[derive(Debug, thiserror::Error)]
pub enum RateLimitError {
    /// The URL's scheme names no store.
    #[error("unsupported rate limit url scheme `{scheme}`: expected redis:// or memory://")]
    UnsupportedScheme {
        /// The scheme found (before `://`), or the whole URL when it has none.
        scheme: String,
    },
    /// A quota that limits nothing sensible.
    #[error("invalid rate limit quota: {0}")]
    InvalidQuota(String),
    /// The store did not answer in time, or was skipped after failing.
    #[error("rate limit store unavailable: {0}")]
    Unavailable(String),
    /// TLS files that cannot be used (unreadable, or for a URL without TLS).
    #[error("rate limit store TLS: {0}")]
    InvalidTls(String),
    /// The store answered with an error.
    #[error("rate limit store error: {0}")]
    Backend(#[from] redis::RedisError),
    /// The store answered something the check does not understand.
    #[error("rate limit store answered unexpectedly: {0}")]
    Unexpected(String),
}

/// Where rate-limit state is kept.
#[async_trait]
pub trait RateLimitStore: Send + Sync + 'static {
    /// Counts one request against every cell if all of them allow it, and
    /// against none otherwise, atomically.
    async fn check(&self, cells: &[Cell<'_>]) -> Result<Decision, RateLimitError>;

    /// Checks that the store answers.
    async fn ping(&self) -> Result<(), RateLimitError>;
}

/// A rate-limit store shared across tasks.
pub type SharedStore = Arc<dyn RateLimitStore>;

/// Opens the store named by `url`: `redis://…` or `memory://`. Every Redis
/// key starts with `prefix`. Opening a Redis store does not connect: the
/// first check does (and a Redis that is away only makes checks fail
/// open), so a process starts without it.
pub fn connect(url: &str, prefix: &str) -> Result<SharedStore, RateLimitError> {
    connect_with_tls(
        url,
        prefix,
        &telenet_kit::infra_tls::InfraTlsConfig::default(),
    )
}

/// [`connect`] with the TLS files (`presence_tls`) a `rediss://` URL is
/// verified with; refused for any other scheme.
pub fn connect_with_tls(
    url: &str,
    prefix: &str,
    tls: &telenet_kit::infra_tls::InfraTlsConfig,
) -> Result<SharedStore, RateLimitError> {
    let scheme = url.split_once("://").map_or(url, |(scheme, _)| scheme);
    let scheme = scheme.to_ascii_lowercase();
    if !tls.is_empty() && scheme != "rediss" {
        return Err(RateLimitError::InvalidTls(format!(
            "TLS files are set but the rate limit store is {scheme}://; they are for rediss:// only"
        )));
    }
    match scheme.as_str() {
        "memory" => Ok(Arc::new(MemoryStore::default())),
        "redis" | "rediss" => Ok(Arc::new(RedisStore::open_with_tls(url, prefix, tls)?)),
        _ => Err(RateLimitError::UnsupportedScheme {
            scheme: scheme.to_owned(),
        }),
    }
}

/// One GCRA step for one key at `now` (µs on the store's clock), given
/// the key's stored TAT: the new TAT and what is left when allowed, or
/// how long to wait (µs). The Lua script in [`redis_store`] is the same
/// arithmetic.
pub(crate) fn gcra(now: u64, tat: Option<u64>, quota: &Quota) -> Step {
    let interval = quota.interval_micros();
    let window = interval.saturating_mul(u64::from(quota.burst));
    let tat = tat.unwrap_or(now).max(now);
    let new_tat = tat.saturating_add(interval);
    let allowed_at = new_tat.saturating_sub(window);
    if allowed_at > now {
        return Step::Refused {
            wait: allowed_at - now,
        };
    }
    let remaining = (now.saturating_add(window) - new_tat) / interval;
    Step::Allowed {
        new_tat,
        remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
    }
}

/// See [`gcra`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Allowed { new_tat: u64, remaining: u32 },
    Refused { wait: u64 },
}

/// A named limit a service applies: `scope` is its metrics label and the
/// first part of its keys (`token`, `workspace`, `channel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// What is limited.
    pub scope: &'static str,
    /// How much.
    pub quota: Quota,
}

/// What a [`RateLimiter`] says about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead (also when the store could not be asked).
    Allowed,
    /// Too many requests.
    Limited {
        /// The scope of the limit that refused.
        scope: &'static str,
        /// The burst of that limit (`RateLimit-Limit`).
        burst: u32,
        /// How long until the request would be allowed.
        retry_after: Duration,
    },
}

impl Verdict {
    /// Whether the request may go ahead.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Verdict::Allowed)
    }
}

/// Whole seconds to wait, rounded up, at least 1: the value of
/// `Retry-After` for a wait of `wait`.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// How often, at most, a failing store is reported in the logs.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Checks requests against a store, counting refusals and failing open.
/// Cheap to clone; clones share the store and the metrics.
#[derive(Clone)]
pub struct RateLimiter {
    store: SharedStore,
    metrics: RateLimitMetrics,
    last_warning: Arc<Mutex<Option<Instant>>>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter").finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// A limiter over `store`, counting into `metrics`.
    pub fn new(store: SharedStore, metrics: &Metrics) -> Self {
        Self {
            store,
            metrics: RateLimitMetrics::register(metrics),
            last_warning: Arc::default(),
        }
    }

    /// Counts one request against each `(limit, id)`, keyed
    /// `<scope>:<id>`, if all allow it. When the store fails, the request
    /// is allowed.
    pub async fn check(&self, limits: &[(Limit, &str)]) -> Verdict {
        if limits.is_empty() {
            return Verdict::Allowed;
        }
        let keys: Vec<String> = limits
            .iter()
            .map(|(limit, id)| format!("{}:{id}", limit.scope))
            .collect();
        let cells: Vec<Cell<'_>> = limits
            .iter()
            .zip(&keys)
            .map(|((limit, _), key)| Cell {
                key,
                quota: limit.quota,
            })
            .collect();
        match self.store.check(&cells).await {
            Ok(Decision::Allowed { .. }) => Verdict::Allowed,
            Ok(Decision::Limited { retry_after, by }) => {
                let Some((limit, _)) = limits.get(by) else {
                    return Verdict::Allowed;
                };
                self.metrics.limited(limit.scope);
                Verdict::Limited {
                    scope: limit.scope,
                    burst: limit.quota.burst(),
                    retry_after,
                }
            }
            Err(error) => {
                self.metrics.store_errors.inc();
                if self.should_warn() {
                    tracing::warn!(%error, "rate limits are not enforced: the store failed; allowing requests");
                }
                Verdict::Allowed
            }
        }
    }

    /// The store behind this limiter.
    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    fn should_warn(&self) -> bool {
        let mut last = match self.last_warning.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < WARN_EVERY) {
            return false;
        }
        *last = Some(now);
        true
    }
}

/// The `scope` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScopeLabels {
    scope: &'static str,
}

/// `telenet_rate_limited_total{scope}` and
/// `telenet_rate_limit_store_errors_total`.
#[derive(Clone, Debug)]
struct RateLimitMetrics {
    limited: Family<ScopeLabels, Counter>,
    store_errors: Counter,
}

impl RateLimitMetrics {
    fn register(metrics: &Metrics) -> Self {
        Self {
            limited: metrics.register(
                "rate_limited",
                "Requests refused with 429 by a rate limit, by the limit's scope",
                Family::default,
            ),
            store_errors: metrics.register(
                "rate_limit_store_errors",
                "Rate-limit checks the store could not answer; those requests were allowed",
                Counter::default,
            ),
        }
    }

    fn limited(&self, scope: &'static str) {
        self.limited.get_or_create(&ScopeLabels { scope }).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(per_second: u32, burst: u32) -> Quota {
        Quota::per_second(per_second, burst).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn quotas_that_limit_nothing_sensible_are_refused() {
        assert!(Quota::per_second(0, 1).is_err());
        assert!(Quota::per_second(1, 0).is_err());
        assert!(Quota::with_interval(Duration::ZERO, 1).is_err());
        assert!(Quota::with_interval(Duration::from_secs(86_401), 1).is_err());
        assert_eq!(quota(4, 2).interval(), Duration::from_millis(250));
    }

    #[test]
    fn gcra_allows_the_burst_then_asks_to_wait_one_interval() {
        let q = quota(1, 3);
        let now = 1_000_000_000;
        let mut tat = None;
        for expected in [2, 1, 0] {
            match gcra(now, tat, &q) {
                Step::Allowed { new_tat, remaining } => {
                    assert_eq!(remaining, expected);
                    tat = Some(new_tat);
                }
                Step::Refused { .. } => panic!("refused within the burst"),
            }
        }
        assert_eq!(gcra(now, tat, &q), Step::Refused { wait: 1_000_000 });
        // Half a second later, half the wait.
        assert_eq!(
            gcra(now + 500_000, tat, &q),
            Step::Refused { wait: 500_000 }
        );
        // A full interval later, one more.
        assert!(matches!(
            gcra(now + 1_000_000, tat, &q),
            Step::Allowed { remaining: 0, .. }
        ));
        // Long idle: the whole burst again.
        assert!(matches!(
            gcra(now + 10_000_000, tat, &q),
            Step::Allowed { remaining: 2, .. }
        ));
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2001)), 3);
    }

    #[test]
    fn unknown_schemes_are_refused() {
        let error = connect("mysql://x", "").err().map(|e| e.to_string());
        assert_eq!(
            error.as_deref(),
            Some("unsupported rate limit url scheme `mysql`: expected redis:// or memory://")
        );
    }
}
