//! The dispatch service: its parts, shared by the consumer that sends and
//! the API that answers what became of each message.

use std::sync::Arc;

use telenet_bus::SharedBus;
use telenet_channels::Registry;
use telenet_channels::directory::{CachedDirectory, ChannelDirectory};
use telenet_channels::net::Egress;
use telenet_kit::metrics::Metrics;
use telenet_proto::dispatch::v1 as pb;
use telenet_proto::dispatch::v1::dispatch_server::DispatchServer;
use telenet_ratelimit::{MemoryStore, RateLimiter};
use telenet_store::consumer::GroupSubscription;
use telenet_store::{Db, now_micros};
use tokio_util::sync::CancellationToken;

use crate::media::MediaFiles;
use crate::metrics::DispatchMetrics;
use crate::{Config, Error, consumers, domain, store};

/// Deliveries failed per transaction batch of a sweep.
const SWEEP_BATCH: i64 = 100;

/// The dispatch service: the `outbound.requested` consumer and the
/// `telenet.dispatch.v1.Dispatch` API. Clones share everything.
#[derive(Clone)]
pub struct DispatchService {
    pub(crate) inner: Arc<Inner>,
    pub(crate) metrics: DispatchMetrics,
    /// The media service, for voice notes in the channel's form and
    /// download links; `None` sends attachments as they are, unlinked.
    pub(crate) media: Option<Arc<dyn MediaFiles>>,
    /// Who sends on each kind of channel.
    pub(crate) providers: Registry,
    /// Where the providers' sending limits and channels' pauses are
    /// counted: shared by every replica when it is Redis.
    pub(crate) limiter: RateLimiter,
}

pub(crate) struct Inner {
    pub(crate) db: Db,
    pub(crate) bus: SharedBus,
    /// Where channels are and how they are reached, asked of ingress.
    pub(crate) directory: CachedDirectory,
    /// The client every send goes through: one attempt's time limits, no
    /// redirects, names resolved to addresses `egress` permits.
    pub(crate) http: reqwest::Client,
    /// Where sends may go: public addresses and `private_receivers`.
    pub(crate) egress: Egress,
    pub(crate) config: Config,
}

impl DispatchService {
    /// Dispatch over its database and the bus, finding channels through
    /// `directory` (kept for `directory_cache_ttl`).
    pub fn new(
        db: Db,
        bus: SharedBus,
        directory: Arc<dyn ChannelDirectory>,
        config: Config,
    ) -> Result<Self, Error> {
        config.validate()?;
        let egress = config.egress()?;
        let http = http_client(&config, &egress).map_err(|e| Error::Setup(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                bus,
                directory: CachedDirectory::new(directory, config.directory_cache_ttl),
                http,
                egress,
                config,
            }),
            metrics: DispatchMetrics::register(&Metrics::default()),
            media: None,
            providers: Registry::builtin(),
            limiter: RateLimiter::new(Arc::new(MemoryStore::default()), &Metrics::default()),
        })
    }

    /// Sends voice notes in the form each channel accepts and links stored
    /// attachments, through the media service behind `media`.
    pub fn with_media(mut self, media: Arc<dyn MediaFiles>) -> Self {
        self.media = Some(media);
        self
    }

    /// Counts the providers' sending limits and the channels' pauses with
    /// `limiter` (the process's: Redis, shared by every replica, or
    /// memory); by default a store of this dispatch's own, in memory.
    pub fn with_rate_limiter(mut self, limiter: RateLimiter) -> Self {
        self.limiter = limiter;
        self
    }

    /// Sends through `providers` instead of every provider of this build.
    pub fn with_providers(mut self, providers: Registry) -> Self {
        self.providers = providers;
        self
    }

    /// Records every attempt (by channel kind and outcome) and how long
    /// channels take to answer in `metrics`.
    pub fn with_metrics(mut self, metrics: &Metrics) -> Self {
        self.metrics = DispatchMetrics::register(metrics);
        self
    }

    /// The gRPC service to mount.
    pub fn grpc(&self) -> DispatchServer<Self> {
        DispatchServer::new(self.clone())
    }

    /// Consume `outbound.requested` until `token` is cancelled; in-flight
    /// attempts finish and are recorded before it returns. Publishing the
    /// resulting `outbound.status` events is the outbox relay's job.
    pub async fn run(self, token: CancellationToken) -> Result<(), Error> {
        let requests = self.subscribe().await?;
        self.consume(requests, token).await;
        Ok(())
    }

    /// Subscribe to `outbound.requested` now (the group's queue keeps every
    /// request from this moment on), to be consumed by
    /// [`DispatchService::consume`].
    pub async fn subscribe(&self) -> Result<GroupSubscription, Error> {
        Ok(consumers::subscribe(&self.inner.bus).await?)
    }

    /// Consume `requests` (from [`DispatchService::subscribe`]) until
    /// `token` is cancelled; in-flight attempts finish and are recorded
    /// before it returns.
    pub async fn consume(self, requests: GroupSubscription, token: CancellationToken) {
        consumers::run(self, requests, token).await;
    }

    /// Fail every delivery still pending past `pending_deadline` (with its
    /// `outbound.status` event); returns how many. Safe to run on several
    /// replicas at once: each delivery is failed once.
    pub async fn sweep_overdue(&self) -> Result<usize, Error> {
        let deadline = self.inner.config.pending_deadline;
        let reason = domain::overdue_reason(deadline);
        let mut total = 0;
        loop {
            let cutoff = now_micros().saturating_sub(domain::deadline_micros(deadline));
            let failed = store::expire(&self.inner.db, cutoff, &reason, SWEEP_BATCH).await?;
            total += failed;
            self.metrics.count_overdue_by(failed);
            if failed < SWEEP_BATCH as usize {
                return Ok(total);
            }
        }
    }

    /// Until `token` is cancelled: [`sweep_overdue`](Self::sweep_overdue)
    /// every `sweep_interval`.
    pub async fn run_sweeper(self, token: CancellationToken) {
        let every = self.inner.config.sweep_interval;
        loop {
            tokio::select! {
                _ = token.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
            }
            match self.sweep_overdue().await {
                Ok(0) => {}
                Ok(failed) => tracing::info!(
                    failed,
                    deadline = %telenet_kit::config::duration::format(self.inner.config.pending_deadline),
                    "outbound messages not sent within their deadline failed"
                ),
                Err(e) => tracing::warn!(error = %e, "sweeping overdue outbound messages failed"),
            }
        }
    }

    /// The delivery of a message, within the workspace.
    pub async fn get_delivery(
        &self,
        workspace_id: &str,
        message_id: &str,
    ) -> Result<pb::Delivery, Error> {
        require("workspace_id", workspace_id)?;
        require("message_id", message_id)?;
        store::get(&self.inner.db, workspace_id, message_id)
            .await?
            .ok_or(Error::NotFound)
    }

    /// The workspace's FAILED deliveries, most recently failed first;
    /// `limit` 0 means 50, at most 200.
    pub async fn list_dead_letters(
        &self,
        workspace_id: &str,
        limit: u32,
    ) -> Result<Vec<pb::Delivery>, Error> {
        require("workspace_id", workspace_id)?;
        let limit = telenet_store::cursor::page_size(limit);
        Ok(store::dead_letters(&self.inner.db, workspace_id, limit).await?)
    }
}

fn http_client(config: &Config, egress: &Egress) -> Result<reqwest::Client, reqwest::Error> {
    let builder = reqwest::Client::builder()
        .connect_timeout(config.http_connect_timeout)
        .timeout(config.http_timeout)
        // A redirect would turn the signed POST into something the receiver
        // did not ask for, possibly somewhere internal; a moved endpoint is a
        // configuration to fix. The 3xx is the answer, and it is final.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("telenet-dispatch/", env!("CARGO_PKG_VERSION")));
    egress.apply(builder).build()
}

fn require(field: &str, value: &str) -> Result<(), Error> {
    telenet_kit::error::required(field, value).map_err(Error::InvalidArgument)
}
