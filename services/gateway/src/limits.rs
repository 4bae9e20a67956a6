//! Rate limits per token and per workspace on every authenticated route
//! (`gateway.rate_limits`), checked right after the token is authenticated
//! (see `auth`) and before the handler runs. A request over either limit
//! gets a 429 problem with `Retry-After`; the counts live in the process's
//! rate-limit store (Redis: shared by every gateway replica), and a store
//! that does not answer lets requests through (`telenet_ratelimit`).

use serde::{Deserialize, Serialize};
use telenet_ratelimit::{Limit, Quota, RateLimiter, Verdict};

use crate::error::ApiError;

/// `gateway.rate_limits.*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimits {
    /// Whether requests are limited at all.
    pub enabled: bool,
    /// Requests a second one token may make on average.
    pub per_token_per_second: u32,
    /// Requests one token may make at once (after being idle).
    pub per_token_burst: u32,
    /// Requests a second all the tokens of one workspace may make on
    /// average.
    pub per_workspace_per_second: u32,
    /// Requests all the tokens of one workspace may make at once.
    pub per_workspace_burst: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            enabled: true,
            per_token_per_second: 10,
            per_token_burst: 50,
            per_workspace_per_second: 100,
            per_workspace_burst: 300,
        }
    }
}

impl RateLimits {
    /// The two limits, or `None` when limits are off; an error naming the
    /// key that limits nothing sensible.
    pub(crate) fn limits(&self) -> anyhow::Result<Option<(Limit, Limit)>> {
        if !self.enabled {
            return Ok(None);
        }
        let quota = |rate, burst, keys: &str| {
            Quota::per_second(rate, burst)
                .map_err(|e| anyhow::anyhow!("config keys gateway.rate_limits.{keys}: {e}"))
        };
        let token = Limit {
            scope: "token",
            quota: quota(
                self.per_token_per_second,
                self.per_token_burst,
                "per_token_per_second and per_token_burst",
            )?,
        };
        let workspace = Limit {
            scope: "workspace",
            quota: quota(
                self.per_workspace_per_second,
                self.per_workspace_burst,
                "per_workspace_per_second and per_workspace_burst",
            )?,
        };
        Ok(Some((token, workspace)))
    }
}

/// The limits the gateway applies and where it counts them.
#[derive(Debug, Clone)]
pub(crate) struct GatewayLimits {
    limiter: RateLimiter,
    token: Limit,
    workspace: Limit,
}

impl GatewayLimits {
    /// The configured limits over `limiter`; `None` when they are off.
    pub(crate) fn new(config: &RateLimits, limiter: RateLimiter) -> anyhow::Result<Option<Self>> {
        Ok(config.limits()?.map(|(token, workspace)| Self {
            limiter,
            token,
            workspace,
        }))
    }

    /// Counts one request of the token with hash `token_key` in
    /// `workspace_id`; an error when either limit is used up.
    pub(crate) async fn check(&self, token_key: &str, workspace_id: &str) -> Result<(), ApiError> {
        let verdict = self
            .limiter
            .check(&[(self.token, token_key), (self.workspace, workspace_id)])
            .await;
        match verdict {
            Verdict::Allowed => Ok(()),
            Verdict::Limited {
                scope,
                burst,
                retry_after,
            } => Err(ApiError::RateLimited {
                scope,
                burst,
                retry_after: telenet_ratelimit::retry_after_secs(retry_after),
            }),
        }
    }
}
