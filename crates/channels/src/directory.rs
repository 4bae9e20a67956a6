//! A channel's settings and secrets, asked of ingress. Ingress owns the
//! channel registry; dispatch (to send) and media (to fetch inbound files)
//! only ask it (never read its tables), through the small
//! [`ChannelDirectory`] trait, so tests can hand in a fixed directory, and
//! through [`CachedDirectory`], so a burst of work on one channel costs one
//! call.
//!
//! ```ignore
//! let directory = CachedDirectory::new(
//!     Arc::new(GrpcChannelDirectory::new(ctx.client("ingress")?)),
//!     Duration::from_secs(30),
//! );
//! let channel = directory.credentials(workspace_id, channel_id).await?;
//! let provider = registry.get(channel.kind);
//! ```

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use telenet_kit::cache::TtlCache;
use telenet_kit::grpc::GrpcChannel;
use telenet_proto::common::v1::{ChannelKind, ChannelProvider};
use telenet_proto::ingress::v1::channels_client::ChannelsClient;
use telenet_proto::ingress::v1::{ChannelConfig, GetChannelRequest};

/// A channel's kind, settings and secret: what verifying its webhooks,
/// sending on it and fetching its files need.
#[derive(Clone, PartialEq, Default)]
pub struct ChannelCredentials {
    /// The channel's id (empty before it is stored).
    pub channel_id: String,
    /// The channel's kind.
    pub kind: ChannelKind,
    /// The service it runs through: which [`Provider`](crate::Provider)
    /// serves it. Unspecified on custom channels stored before providers
    /// were recorded (read as [`ChannelProvider::Custom`]).
    pub provider: ChannelProvider,
    /// The provider's settings with their secrets (custom channels keep
    /// theirs in the fields below).
    pub config: ChannelConfig,
    /// Custom channels: where outbound messages are POSTed.
    pub outbound_url: String,
    /// The channel's secret (custom channels: the `whsec_…` signing secret).
    pub secret: String,
    /// Custom channels: MIME types the receiver accepts for voice notes,
    /// best first (empty: voice notes go as files, as recorded).
    pub accepted_voice_types: Vec<String>,
}

impl std::fmt::Debug for ChannelCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelCredentials")
            .field("channel_id", &self.channel_id)
            .field("kind", &self.kind)
            .field("provider", &self.provider)
            .field("config", &"***")
            .field("outbound_url", &self.outbound_url)
            .field("secret", &"***")
            .field("accepted_voice_types", &self.accepted_voice_types)
            .finish()
    }
}

/// Why the directory could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    /// The channel does not exist in the workspace (or was deleted): sending
    /// can never succeed.
    #[error("channel not found")]
    NotFound,
    /// The directory refused the question for good (e.g. a malformed id).
    #[error("channel directory rejected the lookup: {0}")]
    Rejected(String),
    /// The directory could not answer now; asking later may work.
    #[error("channel directory unavailable: {0}")]
    Unavailable(String),
}

/// Looks up a channel's credentials, scoped by workspace.
#[async_trait]
pub trait ChannelDirectory: Send + Sync + 'static {
    async fn credentials(
        &self,
        workspace_id: &str,
        channel_id: &str,
    ) -> Result<ChannelCredentials, DirectoryError>;
}

/// The directory served by ingress (`telenet.ingress.v1.Channels`). Timeouts
/// and retries of the calls belong to the client stack of the channel it is
/// given.
#[derive(Clone)]
pub struct GrpcChannelDirectory {
    client: ChannelsClient<GrpcChannel>,
}

impl std::fmt::Debug for GrpcChannelDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcChannelDirectory")
            .finish_non_exhaustive()
    }
}

impl GrpcChannelDirectory {
    /// Asks ingress over `channel` (`ServiceContext::client("ingress")`).
    pub fn new(channel: GrpcChannel) -> Self {
        Self {
            client: ChannelsClient::new(channel),
        }
    }
}

#[async_trait]
impl ChannelDirectory for GrpcChannelDirectory {
    async fn credentials(
        &self,
        workspace_id: &str,
        channel_id: &str,
    ) -> Result<ChannelCredentials, DirectoryError> {
        let mut client = self.client.clone();
        let request = GetChannelRequest {
            workspace_id: workspace_id.to_owned(),
            channel_id: channel_id.to_owned(),
        };
        let reply = client
            .get_channel_credentials(request)
            .await
            .map_err(|status| error_of(&status))?
            .into_inner();
        let provider = reply.provider();
        let channel = reply.channel.ok_or_else(|| {
            DirectoryError::Unavailable("credentials reply without a channel".into())
        })?;
        Ok(ChannelCredentials {
            kind: channel.kind(),
            channel_id: channel.id,
            provider,
            config: reply.config.unwrap_or_default(),
            outbound_url: channel.outbound_url,
            secret: reply.secret,
            accepted_voice_types: channel.accepted_voice_types,
        })
    }
}

/// Only answers that can never change on retry are permanent; everything
/// else (ingress restarting, overloaded, timing out) is worth another try.
fn error_of(status: &tonic::Status) -> DirectoryError {
    use tonic::Code;
    match status.code() {
        Code::NotFound => DirectoryError::NotFound,
        Code::InvalidArgument
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::FailedPrecondition
        | Code::Unimplemented => {
            DirectoryError::Rejected(format!("{:?}: {}", status.code(), status.message()))
        }
        _ => DirectoryError::Unavailable(format!("{:?}: {}", status.code(), status.message())),
    }
}

/// Keeps successful lookups for `ttl`, so a burst of work on one channel
/// costs one call to ingress. Failures are never cached, and a caller that
/// saw the channel refuse (a rejected send, a refused fetch) drops the entry
/// ([`forget`](Self::forget)) so a rotated secret or a changed URL is picked
/// up on the next attempt.
pub struct CachedDirectory {
    inner: Arc<dyn ChannelDirectory>,
    entries: TtlCache<(String, String), ChannelCredentials>,
}

impl std::fmt::Debug for CachedDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedDirectory").finish_non_exhaustive()
    }
}

/// Most channels kept at once (least recently used out first).
const CAPACITY: usize = 4096;

impl CachedDirectory {
    /// Answers from `inner`, kept for `ttl` (zero: ask every time).
    pub fn new(inner: Arc<dyn ChannelDirectory>, ttl: Duration) -> Self {
        Self {
            inner,
            entries: TtlCache::new(ttl, CAPACITY),
        }
    }

    /// Drop what is kept about the channel.
    pub fn forget(&self, workspace_id: &str, channel_id: &str) {
        self.entries
            .remove(&(workspace_id.to_owned(), channel_id.to_owned()));
    }
}

#[async_trait]
impl ChannelDirectory for CachedDirectory {
    async fn credentials(
        &self,
        workspace_id: &str,
        channel_id: &str,
    ) -> Result<ChannelCredentials, DirectoryError> {
        let key = (workspace_id.to_owned(), channel_id.to_owned());
        if let Some(creds) = self.entries.get(&key) {
            return Ok(creds);
        }
        let creds = self.inner.credentials(workspace_id, channel_id).await?;
        self.entries.insert(key, creds.clone());
        Ok(creds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counting(AtomicUsize);

    #[async_trait]
    impl ChannelDirectory for Counting {
        async fn credentials(
            &self,
            _: &str,
            channel_id: &str,
        ) -> Result<ChannelCredentials, DirectoryError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            if channel_id == "missing" {
                return Err(DirectoryError::NotFound);
            }
            Ok(ChannelCredentials {
                kind: ChannelKind::Custom,
                outbound_url: format!("http://example.test/{channel_id}"),
                secret: "whsec_x".into(),
                ..Default::default()
            })
        }
    }

    #[tokio::test]
    async fn caches_successes_per_workspace_and_forgets_on_request() {
        let inner = Arc::new(Counting(AtomicUsize::new(0)));
        let cache = CachedDirectory::new(inner.clone(), Duration::from_secs(60));
        for _ in 0..3 {
            cache.credentials("ws", "ch").await.expect("found");
        }
        assert_eq!(inner.0.load(Ordering::SeqCst), 1);
        cache.credentials("other", "ch").await.expect("found");
        assert_eq!(inner.0.load(Ordering::SeqCst), 2);
        cache.forget("ws", "ch");
        cache.credentials("ws", "ch").await.expect("found");
        assert_eq!(inner.0.load(Ordering::SeqCst), 3);
        for _ in 0..2 {
            assert_eq!(
                cache.credentials("ws", "missing").await,
                Err(DirectoryError::NotFound)
            );
        }
        assert_eq!(inner.0.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn zero_ttl_disables_the_cache() {
        let inner = Arc::new(Counting(AtomicUsize::new(0)));
        let cache = CachedDirectory::new(inner.clone(), Duration::ZERO);
        cache.credentials("ws", "ch").await.expect("found");
        cache.credentials("ws", "ch").await.expect("found");
        assert_eq!(inner.0.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn only_final_answers_are_permanent() {
        assert_eq!(
            error_of(&tonic::Status::not_found("x")),
            DirectoryError::NotFound
        );
        assert!(matches!(
            error_of(&tonic::Status::invalid_argument("x")),
            DirectoryError::Rejected(_)
        ));
        assert!(matches!(
            error_of(&tonic::Status::unavailable("x")),
            DirectoryError::Unavailable(_)
        ));
        assert!(matches!(
            error_of(&tonic::Status::deadline_exceeded("x")),
            DirectoryError::Unavailable(_)
        ));
    }

    #[test]
    fn secrets_stay_out_of_logs() {
        use telenet_proto::ingress::v1::{TelegramConfig, channel_config};
        let creds = ChannelCredentials {
            secret: "whsec_very_secret".into(),
            config: ChannelConfig {
                provider: Some(channel_config::Provider::Telegram(TelegramConfig {
                    bot_token: "123:very_secret_token".into(),
                    ..Default::default()
                })),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(!format!("{creds:?}").contains("very_secret"));
    }
}
