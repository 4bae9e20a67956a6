//! The reporting service: the event consumer and the reports read from
//! what it counted.

use telenet_bus::SharedBus;
use telenet_proto::reporting::v1::reports_server::ReportsServer;
use telenet_store::Db;
use telenet_store::consumer::GroupSubscription;
use tokio_util::sync::CancellationToken;

use crate::domain::{DayVolume, VolumeQuery};
use crate::{Config, Error, consumers, store};

/// The reporting service: the event consumer and the
/// `telenet.reporting.v1.Reports` API. Clones share everything.
#[derive(Clone)]
pub struct ReportingService {
    db: Db,
    bus: SharedBus,
    config: Config,
}

impl ReportingService {
    pub async fn new(db: Db, bus: SharedBus, config: Config) -> Result<Self, Error> {
        Ok(Self { db, bus, config })
    }

    /// The gRPC service to mount.
    pub fn grpc(&self) -> ReportsServer<Self> {
        ReportsServer::new(self.clone())
    }

    /// Subscribe to the counted events now (their queue keeps every event
    /// from this moment on), to be consumed by [`ReportingService::consume`].
    pub async fn subscribe(&self) -> Result<GroupSubscription, Error> {
        Ok(consumers::subscribe(&self.bus).await?)
    }

    /// Consume the counted events until `token` is cancelled; events being
    /// applied finish before it returns.
    pub async fn run(self, token: CancellationToken) -> Result<(), Error> {
        let events = self.subscribe().await?;
        self.consume(events, token).await;
        Ok(())
    }

    /// Consume `events` (from [`ReportingService::subscribe`]) until
    /// `token` is cancelled; events being applied finish before it returns.
    pub async fn consume(self, events: GroupSubscription, token: CancellationToken) {
        consumers::run(self.db, events, self.config.concurrency, token).await;
    }

    /// The workspace's rows of the query's days, by day then channel.
    pub async fn daily_volume(&self, query: &VolumeQuery) -> Result<Vec<DayVolume>, Error> {
        Ok(store::daily_volume(&self.db, query).await?)
    }
}
