//! Ingress: the channel registry and the webhooks providers call.
//!
//! A webhook is verified, parsed into a canonical event, de-duplicated and
//! published to the bus; it is answered 2xx only once the broker confirmed
//! the event, and nothing is recorded when any step fails.

use serde::{Deserialize, Serialize};
use telenet_bus::SharedBus;
use telenet_store::{Db, StoreError};
use tonic::Status;

pub mod channels;
pub mod custom;
pub mod webhook;

pub const MIGRATIONS: telenet_store::Migrations = telenet_store::migrations!("0100_ingress");

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
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8081".into(),
            public_url: "http://127.0.0.1:8081".into(),
            max_body_bytes: 1024 * 1024,
            dedup_retention_hours: 24 * 8,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("channel not found")]
    NotFound,
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<telenet_store::sqlx::Error> for Error {
    fn from(e: telenet_store::sqlx::Error) -> Self {
        Error::Store(e.into())
    }
}

impl Error {
    pub fn to_status(&self) -> Status {
        match self {
            Error::InvalidArgument(m) => Status::invalid_argument(m.clone()),
            Error::NotFound => Status::not_found(self.to_string()),
            Error::Internal(m) => {
                tracing::error!(error = %m, "ingress failed");
                Status::internal("internal error")
            }
            Error::Store(e) if e.is_transient() => {
                tracing::warn!(error = %e, "ingress store unavailable");
                Status::unavailable("ingress store unavailable")
            }
            Error::Store(e) => {
                tracing::error!(error = %e, "ingress store failed");
                Status::internal("internal error")
            }
        }
    }
}

/// The ingress service: channel registry (gRPC) and webhooks (HTTP).
#[derive(Clone)]
pub struct Ingress {
    pub(crate) db: Db,
    pub(crate) bus: SharedBus,
    pub(crate) config: std::sync::Arc<Config>,
}

impl Ingress {
    pub async fn new(db: Db, bus: SharedBus, config: Config) -> Result<Self, Error> {
        if url::Url::parse(&config.public_url).is_err() {
            return Err(Error::InvalidArgument(format!(
                "ingress.public_url {:?} is not an absolute URL",
                config.public_url
            )));
        }
        Ok(Self {
            db,
            bus,
            config: std::sync::Arc::new(config),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The gRPC channel registry.
    pub fn grpc(
        &self,
    ) -> telenet_proto::ingress::v1::channels_server::ChannelsServer<channels::ChannelRegistry>
    {
        telenet_proto::ingress::v1::channels_server::ChannelsServer::new(
            channels::ChannelRegistry::new(self.clone()),
        )
    }

    /// The webhook HTTP router (`POST /webhooks/{channel_id}`).
    pub fn router(&self) -> axum::Router {
        webhook::router(self.clone())
    }

    /// Background work until cancelled: forget de-duplication keys older than
    /// the retention.
    pub async fn run(self, token: tokio_util::sync::CancellationToken) {
        let retention = self.config.dedup_retention_hours as i64 * 3_600_000_000;
        loop {
            tokio::select! {
                _ = token.cancelled() => break,
                _ = tokio::time::sleep(std::time::Duration::from_secs(600)) => {}
            }
            let cutoff = telenet_store::now_micros() - retention;
            if let Err(e) =
                telenet_store::sqlx::query("DELETE FROM webhook_keys WHERE created_at < $1")
                    .bind(cutoff)
                    .execute(self.db.pool())
                    .await
            {
                tracing::warn!(error = %e, "pruning webhook keys failed");
            }
        }
    }
}
