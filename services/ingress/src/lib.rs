//! Ingress: the channel registry and the webhooks providers call.
//!
//! A webhook is verified, parsed into canonical events, de-duplicated and
//! published to the bus; it is answered 2xx only once the broker confirmed
//! the events, and nothing is recorded when any step fails. What differs
//! between providers (signatures, payloads, handshakes, which settings
//! connect a channel) is asked of the channel's provider in
//! `telenet_channels`; ingress itself knows no channel kind.
//!
//! The crate has the rooms of every service: [`domain`] (the rules, no
//! I/O), `store` (its SQL, the only place that speaks SQL), `grpc` (the
//! `telenet.ingress.v1.Channels` adapter), `webhook` (the HTTP adapter
//! providers call), `consumers` (bus handlers: none), [`Error`],
//! `metrics`, [`secrets`] (the keyring channel secrets are sealed with
//! at rest, and their re-sealing after a rotation) and [`start`], which
//! wires them for the process.

mod catalog;
mod consumers;
pub mod domain;
mod error;
mod grpc;
mod metrics;
pub mod secrets;
mod service;
mod start;
pub(crate) mod store;
mod webhook;

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

pub use error::Error;
pub use metrics::IngressMetrics;
pub use secrets::{EncryptionConfig, Secrets, SecretsStatus};
pub use service::{Accepted, Connected, IngressService};
pub use start::start;
pub use webhook::router;

use telenet_runtime::Call;

/// The service's name: its metrics label, readiness name and schema.
pub const NAME: &str = "ingress";

/// The services it calls: none (see `telenet_runtime::Call`); its context
/// refuses any, and the chart's NetworkPolicies let it call none
/// (`deploy/tools/callgraph.py`).
pub const CALLS: &[Call] = &[];

/// The consumer groups it subscribes with: the channel health view's
/// (`outbound.status`). (`telenet migrate` and every process at start
/// declare the groups of every service, ADR 14.)
pub fn consumer_groups() -> Vec<telenet_bus::SubscribeSpec> {
    vec![consumers::subscription()]
}

pub const MIGRATIONS: telenet_store::Migrations = telenet_store::migrations!(
    "0100_ingress",
    "0101_sealed_secrets",
    "0102_channel_providers"
);

/// Ingress settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the webhook listener binds.
    pub listen: String,
    /// The public base URL providers reach the webhook listener at; channel
    /// webhook URLs are `{public_url}/webhooks/{channel_id}`.
    pub public_url: String,
    /// Largest webhook body accepted, in bytes (larger: 413).
    pub max_body_bytes: usize,
    /// How long de-duplication keys are kept, in hours (providers redeliver for up to 7 days).
    pub dedup_retention_hours: u64,
    /// Non-public receivers a channel's `outbound_url` may name all the
    /// same (on-premise receivers): networks (`10.20.0.0/16`), addresses or
    /// host names, as `dispatch.private_receivers`, which it should equal.
    /// Empty: a channel whose `outbound_url` is a loopback, private,
    /// link-local or other internal address is refused. `telenet dev`
    /// allows loopback when this is empty.
    pub private_receivers: Vec<String>,
    /// How channel secrets are sealed at rest.
    pub encryption: secrets::EncryptionConfig,
    /// Webhooks per channel (429 past them, before the signature is
    /// checked).
    pub rate_limits: RateLimits,
}

/// `ingress.rate_limits.*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimits {
    /// Whether webhooks are limited at all.
    pub enabled: bool,
    /// Webhooks a second one channel may receive on average.
    pub per_channel_per_second: u32,
    /// Webhooks one channel may receive at once (after being quiet).
    pub per_channel_burst: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            enabled: true,
            per_channel_per_second: 100,
            per_channel_burst: 500,
        }
    }
}

impl RateLimits {
    /// The per-channel limit, or `None` when limits are off; an error
    /// naming the keys when they limit nothing sensible.
    pub fn limit(&self) -> Result<Option<telenet_ratelimit::Limit>, Error> {
        if !self.enabled {
            return Ok(None);
        }
        let quota = telenet_ratelimit::Quota::per_second(
            self.per_channel_per_second,
            self.per_channel_burst,
        )
        .map_err(|e| Error::Config {
            key: "rate_limits",
            reason: e.to_string(),
        })?;
        Ok(Some(telenet_ratelimit::Limit {
            scope: "channel",
            quota,
        }))
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8081".into(),
            public_url: "http://127.0.0.1:8081".into(),
            max_body_bytes: 1024 * 1024,
            dedup_retention_hours: 24 * 8,
            private_receivers: Vec::new(),
            encryption: Default::default(),
            rate_limits: RateLimits::default(),
        }
    }
}

impl Config {
    /// The settings for a webhook listener bound at `addr`: with the default
    /// public URL, which names the default port, the public URL follows the
    /// port actually bound (an ephemeral one in the dev server and tests).
    pub fn following_listener(mut self, addr: SocketAddr) -> Self {
        if self.public_url == Config::default().public_url {
            self.public_url = format!("http://{addr}");
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_public_url_follows_the_bound_listener() {
        let addr: SocketAddr = "127.0.0.1:40123".parse().expect("addr");
        assert_eq!(
            Config::default().following_listener(addr).public_url,
            "http://127.0.0.1:40123"
        );
        let configured = Config {
            public_url: "https://hooks.example".into(),
            ..Config::default()
        };
        assert_eq!(
            configured.following_listener(addr).public_url,
            "https://hooks.example"
        );
    }
}
