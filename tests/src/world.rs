//! Starting the suite for a test: on embedded defaults (SQLite in a temporary
//! directory, in-memory bus and presence), or on the real PostgreSQL,
//! RabbitMQ and Redis of this machine with unique database, queue and key
//! prefixes.

use std::time::Duration;

use telenet::{Config, Running, ServiceName, Suite};
use tokio_util::sync::CancellationToken;

/// Short retry delays so tests see retries and dead letters quickly.
pub fn test_retry() -> telenet_bus::RetryPolicy {
    telenet_bus::RetryPolicy {
        delays: vec![
            Duration::from_millis(100),
            Duration::from_millis(200),
            Duration::from_millis(300),
        ],
    }
}

/// Embedded defaults with ephemeral ports in `dir`; channels' receivers may
/// be on loopback, as in the dev server (tests run them on this machine).
pub fn embedded(dir: &std::path::Path) -> Config {
    let mut c = Config {
        data_dir: dir.to_owned(),
        grpc_listen: "127.0.0.1:0".into(),
        ..Config::default()
    }
    .allowing_loopback_receivers();
    c.ingress.listen = "127.0.0.1:0".into();
    c.gateway.listen = ([127, 0, 0, 1], 0).into();
    c.metrics_listen = "127.0.0.1:0".into();
    // The tests poll the REST API (every 25 ms, `eventually`) far faster
    // than any agent; the gateway's limits have tests of their own
    // (services/gateway/tests/rate_limits.rs). Webhooks stay limited as
    // configured by default.
    c.gateway.rate_limits.enabled = false;
    c
}

/// RabbitMQ URL of this machine (`TELENET_TEST_AMQP_URL` overrides).
pub fn amqp_url() -> String {
    std::env::var("TELENET_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// Redis URL of this machine (`TELENET_TEST_REDIS_URL` overrides).
pub fn redis_url() -> String {
    std::env::var("TELENET_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Real PostgreSQL (a fresh database), RabbitMQ and Redis with a unique prefix.
pub async fn real(dir: &std::path::Path) -> Config {
    let mut c = embedded(dir);
    c.database_url = telenet_store::testing::fresh_postgres().await;
    c.bus_url = amqp_url();
    let prefix = format!("t{}.", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    c.bus_prefix = prefix.clone();
    c.presence_url = redis_url();
    c.presence_prefix = prefix;
    c
}

/// Start `services` of `config`.
pub async fn start(config: Config, services: &[ServiceName]) -> (Running, CancellationToken) {
    let token = CancellationToken::new();
    let running = match Suite::new(config, services.iter().copied())
        .with_retry(test_retry())
        .start(token.clone())
        .await
    {
        Ok(r) => r,
        Err(e) => panic!("suite did not start: {e:#}"),
    };
    (running, token)
}
