//! Rate limits in Redis, shared by every replica.
//!
//! Layout, for prefix `p` and key `k`: `p` `ratelimit:k` — a string, the
//! key's TAT in microseconds on the Redis server's clock (`TIME`), with a
//! TTL of the time until its bucket is full again (after which it is the
//! same as absent). Every check is one Lua script (`EVALSHA`, loaded on
//! first use), so the read, the decision and the writes of all the cells
//! of a request are atomic and cost one round trip; the server's clock is
//! the only clock, so replicas need not agree on the time.
//!
//! The store connects on its first check, not when opened. A check that
//! fails or takes longer than [`IO_TIMEOUT`] is an error (the
//! [`RateLimiter`](crate::RateLimiter) then allows the request), and the
//! store then answers errors at once, without asking Redis, for
//! [`PAUSE_AFTER_FAILURE`], so an outage adds no latency to most requests.

use std::sync::Mutex;
use std::time::{Duration, Instant};
use telenet_kit::infra_tls::InfraTlsConfig;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use crate::{Cell, Decision, RateLimitError, RateLimitStore};

/// The longest a check (connecting included) may take.
pub const IO_TIMEOUT: Duration = Duration::from_millis(500);
/// How long checks fail at once after one failed.
pub const PAUSE_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// GCRA over every key of `KEYS`, with `ARGV` holding each key's interval
/// (µs) and burst in turn. Allowed only if every key allows; then every
/// key's TAT moves on. Returns `{allowed, wait µs, remaining, index (1-based)
/// of the key with the longest wait}`. The same arithmetic as
/// `crate::gcra`.
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local new_tats = {}
local wait = 0
local by = 0
local remaining = -1
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i - 1])
  local window = interval * tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  local new_tat = tat + interval
  local allowed_at = new_tat - window
  if allowed_at > now then
    if allowed_at - now > wait then
      wait = allowed_at - now
      by = i
    end
  else
    local left = math.floor((now + window - new_tat) / interval)
    if remaining < 0 or left < remaining then remaining = left end
  end
  new_tats[i] = new_tat
end
if by > 0 then
  return {0, wait, 0, by}
end
for i = 1, #KEYS do
  local ttl = math.ceil((new_tats[i] - now) / 1000)
  redis.call('SET', KEYS[i], string.format('%.0f', new_tats[i]), 'PX', ttl)
end
return {1, 0, remaining, 0}
";

/// Rate limits kept in Redis.
pub struct RedisStore {
    client: redis::Client,
    connection: OnceCell<ConnectionManager>,
    prefix: String,
    script: redis::Script,
    /// Until when checks fail at once, after a failure.
    paused_until: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// The store at `url` (`redis://[user:password@]host[:port][/db]`),
    /// every key under `prefix`. Does not connect yet.
    pub fn open(url: &str, prefix: &str) -> Result<Self, RateLimitError> {
        Self::open_with_tls(url, prefix, &InfraTlsConfig::default())
    }

    /// [`RedisStore::open`] for a `rediss://` URL with the files of `tls`
    /// (a private CA, then the only one trusted, and a client certificate),
    /// as the presence store connects to the same Redis.
    pub fn open_with_tls(
        url: &str,
        prefix: &str,
        tls: &InfraTlsConfig,
    ) -> Result<Self, RateLimitError> {
        let client = if tls.is_empty() {
            redis::Client::open(url)?
        } else {
            let loaded = tls
                .load("presence_tls")
                .map_err(|e| RateLimitError::InvalidTls(e.to_string()))?;
            let certificates = redis::TlsCertificates {
                client_tls: loaded.identity().map(|identity| redis::ClientTlsConfig {
                    client_cert: identity.cert_pem.clone(),
                    client_key: identity.key_pem.clone(),
                }),
                root_cert: loaded.ca_pem().map(<[u8]>::to_vec),
            };
            redis::Client::build_with_tls(url, certificates)?
        };
        Ok(Self {
            client,
            connection: OnceCell::new(),
            prefix: prefix.to_owned(),
            script: redis::Script::new(SCRIPT),
            paused_until: Mutex::new(None),
        })
    }

    /// The Redis key of `key`.
    pub fn redis_key(&self, key: &str) -> String {
        format!("{}ratelimit:{key}", self.prefix)
    }

    async fn connection(&self) -> Result<ConnectionManager, RateLimitError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(IO_TIMEOUT)
            .set_response_timeout(IO_TIMEOUT)
            .set_factor(2)
            .set_max_delay(1_000)
            .set_number_of_retries(1);
        let connection = self
            .connection
            .get_or_try_init(|| {
                ConnectionManager::new_with_config(self.client.clone(), config.clone())
            })
            .await?;
        Ok(connection.clone())
    }

    fn paused(&self) -> bool {
        let mut paused = self.lock_pause();
        match *paused {
            Some(until) if Instant::now() < until => true,
            Some(_) => {
                *paused = None;
                false
            }
            None => false,
        }
    }

    fn pause(&self) {
        *self.lock_pause() = Some(Instant::now() + PAUSE_AFTER_FAILURE);
    }

    fn lock_pause(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        match self.paused_until.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    async fn run_script(&self, cells: &[Cell<'_>]) -> Result<Decision, RateLimitError> {
        let mut connection = self.connection().await?;
        let mut invocation = self.script.prepare_invoke();
        for cell in cells {
            invocation.key(self.redis_key(cell.key));
        }
        for cell in cells {
            invocation
                .arg(cell.quota.interval_micros())
                .arg(cell.quota.burst());
        }
        let (allowed, wait, remaining, by): (i64, i64, i64, i64) =
            invocation.invoke_async(&mut connection).await?;
        if allowed == 1 {
            return Ok(Decision::Allowed {
                remaining: u32::try_from(remaining.max(0)).unwrap_or(u32::MAX),
            });
        }
        let by = usize::try_from(by - 1)
            .ok()
            .filter(|by| *by < cells.len())
            .ok_or_else(|| RateLimitError::Unexpected(format!("no refusing key {by}")))?;
        Ok(Decision::Limited {
            retry_after: Duration::from_micros(u64::try_from(wait.max(0)).unwrap_or(0)),
            by,
        })
    }
}

#[async_trait]
impl RateLimitStore for RedisStore {
    async fn check(&self, cells: &[Cell<'_>]) -> Result<Decision, RateLimitError> {
        if cells.is_empty() {
            return Ok(Decision::Allowed {
                remaining: u32::MAX,
            });
        }
        if self.paused() {
            return Err(RateLimitError::Unavailable(
                "a check failed within the last second".to_owned(),
            ));
        }
        let outcome = match tokio::time::timeout(IO_TIMEOUT, self.run_script(cells)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(RateLimitError::Unavailable(format!(
                "no answer within {IO_TIMEOUT:?}"
            ))),
        };
        if outcome.is_err() {
            self.pause();
        }
        outcome
    }

    async fn ping(&self) -> Result<(), RateLimitError> {
        let ping = async {
            let mut connection = self.connection().await?;
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await?;
            Ok::<(), RateLimitError>(())
        };
        tokio::time::timeout(IO_TIMEOUT, ping)
            .await
            .map_err(|_| RateLimitError::Unavailable(format!("no answer within {IO_TIMEOUT:?}")))?
    }
}
