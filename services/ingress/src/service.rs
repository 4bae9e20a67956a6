//! The ingress service: each operation checks its input through the domain
//! and the channel's provider, reads and writes through the store, and
//! publishes what webhooks bring.

use std::sync::Arc;
use std::time::Duration;

use telenet_bus::{BusError, SharedBus};
use telenet_channels::net::{AllowList, Egress};
use telenet_channels::{ChannelCredentials, CredentialsError, Inbound, Registry, WebhookSetup};
use telenet_proto::common::v1::PageRequest;
use telenet_proto::ingress::v1::ChannelStatus;
use telenet_proto::ingress::v1::channels_server::ChannelsServer;
use telenet_signing::sealing::Keyring;
use telenet_store::cursor::{Cursor, finish_page, page_size};
use telenet_store::{Db, events, now_micros};
use tokio_util::sync::CancellationToken;

use crate::domain::{self, Channel, ChannelRef, ChannelUpdate, NewChannel};
use crate::{Config, Error, store};

/// How often de-duplication keys past their retention are forgotten.
const FORGET_EVERY: Duration = Duration::from_secs(600);

/// The ingress service: the channel registry (`telenet.ingress.v1.Channels`)
/// and what its webhooks bring. Clones share everything.
#[derive(Clone)]
pub struct IngressService {
    db: Db,
    bus: SharedBus,
    registry: Registry,
    /// Where a channel's `outbound_url` may point.
    receivers: Egress,
    config: Arc<Config>,
    keyring: Arc<Keyring>,
    /// Calls to providers' APIs (registering webhooks, checking
    /// credentials), under the `receivers` policy.
    http: reqwest::Client,
}

/// A channel just connected, with what to enter on the provider's side.
#[derive(Debug, Clone)]
pub struct Connected {
    pub channel: Channel,
    pub setup: WebhookSetup,
    /// Whether TELENET registered the webhook itself.
    pub registered: bool,
}

/// How often a channel's health is written at most, per kind of news (µs).
const HEALTH_EVERY_MICROS: i64 = 60_000_000;

/// What became of a webhook's events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Published, as events with these ids.
    Published(Vec<String>),
    /// Every event (or the delivery itself) was accepted before.
    Duplicate,
    /// The webhook carried no event (a callback to acknowledge).
    Nothing,
}

impl IngressService {
    /// The service over its database and the bus, with the providers of
    /// `registry`, channel secrets sealed with `keyring`.
    pub fn new(
        db: Db,
        bus: SharedBus,
        config: Config,
        registry: Registry,
        keyring: Arc<Keyring>,
    ) -> Result<Self, Error> {
        domain::check_public_url(&config.public_url)?;
        let allow =
            AllowList::parse(&config.private_receivers).map_err(|reason| Error::Config {
                key: "private_receivers",
                reason,
            })?;
        let receivers = Egress::new(allow, "ingress.private_receivers");
        let http = receivers
            .apply(
                reqwest::Client::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .timeout(Duration::from_secs(15))
                    .redirect(reqwest::redirect::Policy::none())
                    .user_agent(concat!("telenet-ingress/", env!("CARGO_PKG_VERSION"))),
            )
            .build()
            .map_err(|e| Error::Internal(format!("http client: {e}")))?;
        Ok(Self {
            db,
            bus,
            registry,
            receivers,
            config: Arc::new(config),
            keyring,
            http,
        })
    }

    /// The gRPC service to mount.
    pub fn grpc(&self) -> ChannelsServer<Self> {
        ChannelsServer::new(self.clone())
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The providers channels are served by.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Where providers send the channel's webhooks.
    pub fn webhook_url(&self, channel_id: &str) -> String {
        domain::webhook_url(&self.config.public_url, channel_id)
    }

    /// Connect a channel: its provider checks and completes its settings
    /// (generating its secret when none is given).
    pub async fn create_channel(&self, new: NewChannel) -> Result<Channel, Error> {
        Ok(self.connect_channel(new).await?.channel)
    }

    /// Connect a channel of any provider: the provider checks and completes
    /// its settings (generating what TELENET generates), the channel is
    /// stored, and, where the provider lets TELENET register its webhook
    /// (Telegram, Viber, 360dialog), it is registered: the channel is
    /// ACTIVE when that worked, ERROR with the provider's reason when not;
    /// channels whose webhook is entered by hand wait in
    /// PENDING_VERIFICATION for the provider's handshake or first webhook.
    pub async fn connect_channel(&self, new: NewChannel) -> Result<Connected, Error> {
        let provider = self
            .registry
            .for_channel(&new.requested)
            .ok_or_else(|| Error::InvalidArgument("kind is not supported".into()))?;
        telenet_channels::config::check_api_base_url(&new.requested.config.api_base_url)
            .map_err(credentials_error)?;
        let id = uuid::Uuid::now_v7().to_string();
        let requested = ChannelCredentials {
            channel_id: id.clone(),
            ..new.requested
        };
        let credentials = provider.connect(requested).map_err(credentials_error)?;
        self.check_outbound_url(&credentials.outbound_url)?;
        let registers = !matches!(
            provider.provider(),
            telenet_proto::common::v1::ChannelProvider::Custom
        );
        let now = now_micros();
        let mut channel = Channel {
            id: id.clone(),
            workspace_id: new.workspace_id,
            name: new.name,
            created_at: now,
            updated_at: now,
            status: if registers {
                ChannelStatus::PendingVerification
            } else {
                ChannelStatus::Active
            },
            status_detail: String::new(),
            health: domain::Health::default(),
            credentials: ChannelCredentials {
                channel_id: id,
                ..credentials
            },
        };
        store::insert_channel(&self.db, &self.keyring, &channel).await?;
        let mut registered = false;
        if registers {
            let url = self.webhook_url(&channel.id);
            let (status, detail) = match provider
                .register_webhook(&self.http, &channel.credentials, &url)
                .await
            {
                Ok(true) => {
                    registered = true;
                    (ChannelStatus::Active, String::new())
                }
                Ok(false) => (
                    ChannelStatus::PendingVerification,
                    "waiting for the provider's first webhook: enter the webhook URL in its console"
                        .to_owned(),
                ),
                Err(CredentialsError::Invalid(reason)) => (ChannelStatus::Error, reason),
                Err(CredentialsError::Unavailable(reason)) => (
                    ChannelStatus::Error,
                    format!("the webhook could not be registered ({reason}); TestChannel tries again"),
                ),
            };
            store::set_status(&self.db, &channel.id, status, &detail, now_micros()).await?;
            channel.status = status;
            channel.status_detail = detail;
        }
        let setup = provider.webhook_setup(&channel.credentials);
        Ok(Connected {
            channel,
            setup,
            registered,
        })
    }

    /// Change a channel's name and settings: secrets left empty keep their
    /// stored values, the provider checks the result, and a webhook the
    /// provider lets TELENET register is registered again.
    pub async fn update_channel(
        &self,
        channel: &ChannelRef,
        update: ChannelUpdate,
    ) -> Result<Channel, Error> {
        let mut current = self.channel(channel).await?;
        let provider = self
            .registry
            .for_channel(&current.credentials)
            .ok_or_else(|| {
                Error::FailedPrecondition("the channel's provider is not supported".into())
            })?;
        if let Some(name) = update.name {
            current.name = domain::checked_name(&name)?;
        }
        let mut requested = current.credentials.clone();
        if let Some(url) = update.outbound_url {
            requested.outbound_url = url;
        }
        if let Some(types) = update.accepted_voice_types {
            requested.accepted_voice_types = types;
        }
        let config_changed = update.config.is_some();
        if let Some(config) = update.config {
            let config =
                telenet_channels::config::keep_secrets(config, &current.credentials.config)
                    .map_err(credentials_error)?;
            telenet_channels::config::check_api_base_url(&config.api_base_url)
                .map_err(credentials_error)?;
            requested.config = config;
        }
        let credentials = provider.connect(requested).map_err(credentials_error)?;
        self.check_outbound_url(&credentials.outbound_url)?;
        current.credentials = credentials;
        current.updated_at = now_micros();
        if config_changed {
            let url = self.webhook_url(&current.id);
            match provider
                .register_webhook(&self.http, &current.credentials, &url)
                .await
            {
                Ok(true) => {
                    current.status = ChannelStatus::Active;
                    current.status_detail.clear();
                }
                Ok(false) => {}
                Err(CredentialsError::Invalid(reason)) => {
                    current.status = ChannelStatus::Error;
                    current.status_detail = reason;
                }
                Err(CredentialsError::Unavailable(reason)) => {
                    current.status = ChannelStatus::Error;
                    current.status_detail = format!(
                        "the webhook could not be registered ({reason}); TestChannel tries again"
                    );
                }
            }
        }
        if !store::update_channel(&self.db, &self.keyring, &current).await? {
            return Err(Error::NotFound);
        }
        self.channel(channel).await
    }

    /// Check a channel with its provider now (credentials, webhook
    /// registration) and record the status that follows.
    pub async fn test_channel(
        &self,
        channel: &ChannelRef,
    ) -> Result<(Vec<telenet_channels::Check>, ChannelStatus), Error> {
        let current = self.channel(channel).await?;
        let provider = self
            .registry
            .for_channel(&current.credentials)
            .ok_or_else(|| {
                Error::FailedPrecondition("the channel's provider is not supported".into())
            })?;
        let mut checks = provider.check(&self.http, &current.credentials).await;
        let url = self.webhook_url(&current.id);
        match provider
            .register_webhook(&self.http, &current.credentials, &url)
            .await
        {
            Ok(true) => checks.push(telenet_channels::Check {
                name: "webhook_registration".into(),
                ok: true,
                detail: format!("registered {url}"),
            }),
            Ok(false) => {}
            Err(e) => checks.push(telenet_channels::Check {
                name: "webhook_registration".into(),
                ok: false,
                detail: e.to_string(),
            }),
        }
        let failed: Vec<String> = checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect();
        let status = if !failed.is_empty() {
            ChannelStatus::Error
        } else if current.status == ChannelStatus::PendingVerification
            && current.health.last_webhook_at.is_none()
            && !checks.iter().any(|c| c.name == "webhook_registration")
        {
            ChannelStatus::PendingVerification
        } else {
            ChannelStatus::Active
        };
        let detail = failed.join("; ");
        let detail = if status == ChannelStatus::PendingVerification && detail.is_empty() {
            current.status_detail.clone()
        } else {
            detail
        };
        store::set_status(&self.db, &current.id, status, &detail, now_micros()).await?;
        Ok((checks, status))
    }

    /// Record news of a channel's health (at most once a minute per kind).
    pub(crate) async fn record_health(&self, channel_id: &str, news: store::HealthNews<'_>) {
        if let Err(e) = store::record_health(
            &self.db,
            channel_id,
            news,
            now_micros(),
            HEALTH_EVERY_MICROS,
        )
        .await
        {
            tracing::debug!(error = %e, channel_id, "channel health not recorded");
        }
    }

    /// [`record_health`](Self::record_health) of a webhook of `channel`, as
    /// it was read for the webhook: nothing is written when that row
    /// already holds the same news from the last minute (a busy channel
    /// costs no write per webhook).
    pub(crate) async fn record_webhook_health(
        &self,
        channel: &Channel,
        news: store::HealthNews<'_>,
    ) {
        let since = now_micros() - HEALTH_EVERY_MICROS;
        let h = &channel.health;
        let known = match news {
            store::HealthNews::Webhook => {
                channel.status != ChannelStatus::PendingVerification
                    && h.last_webhook_at.is_some_and(|at| at >= since)
            }
            store::HealthNews::Rejected(reason) => {
                h.last_rejection == reason
                    && h.last_rejected_webhook_at.is_some_and(|at| at >= since)
            }
            store::HealthNews::Sent(_) => false,
        };
        if !known {
            self.record_health(&channel.id, news).await;
        }
    }

    /// A channel's `outbound_url` (when it has one) must be http(s) and, when
    /// its host is written as an address, a public one or one
    /// `private_receivers` allows (names are checked by dispatch when it
    /// resolves them, since what they resolve to can change).
    pub fn check_outbound_url(&self, outbound_url: &str) -> Result<(), Error> {
        if outbound_url.is_empty() {
            return Ok(());
        }
        self.receivers
            .check(outbound_url)
            .map(drop)
            .map_err(|why| Error::InvalidArgument(format!("outbound_url: {why}")))
    }

    /// A channel of the workspace (deleted channels are not found).
    pub async fn channel(&self, channel: &ChannelRef) -> Result<Channel, Error> {
        store::channel(
            &self.db,
            &self.keyring,
            &channel.workspace_id,
            &channel.channel_id,
        )
        .await?
        .ok_or(Error::NotFound)
    }

    /// A channel by id alone, for its webhooks (the URL names it).
    pub async fn find_channel(&self, channel_id: &str) -> Result<Option<Channel>, Error> {
        store::channel_by_id(&self.db, &self.keyring, channel_id).await
    }

    /// A page of the workspace's channels, newest first, and the token of
    /// the next page (empty after the last).
    pub async fn list_channels(
        &self,
        workspace_id: &str,
        page: &PageRequest,
    ) -> Result<(Vec<Channel>, String), Error> {
        telenet_kit::error::required("workspace_id", workspace_id)
            .map_err(Error::InvalidArgument)?;
        let size = page_size(page.page_size);
        let after = Cursor::decode(&page.page_token).map_err(Error::InvalidArgument)?;
        let mut channels =
            store::list_channels(&self.db, &self.keyring, workspace_id, after, size + 1).await?;
        let next = finish_page(&mut channels, size, |last| Cursor {
            key: last.created_at,
            id: last.id.clone(),
        });
        Ok((channels, next))
    }

    /// Disconnect a channel: its webhooks are refused from now on.
    pub async fn delete_channel(&self, channel: &ChannelRef) -> Result<(), Error> {
        let deleted = store::delete_channel(
            &self.db,
            &channel.workspace_id,
            &channel.channel_id,
            now_micros(),
        )
        .await?;
        if deleted {
            Ok(())
        } else {
            Err(Error::NotFound)
        }
    }

    /// Publish what a verified webhook of `channel` brought, once: its
    /// de-duplication keys are committed only after the broker confirmed
    /// the events, so a failed publish leaves no trace and the provider's
    /// retry is processed normally. Events seen before are left out.
    pub async fn accept(&self, channel: &Channel, inbound: Inbound) -> Result<Accepted, Error> {
        if inbound.events.is_empty() {
            return Ok(Accepted::Nothing);
        }
        let channel_id = channel.id.as_str();
        let warn = |what: &str, e: &dyn std::fmt::Display| {
            tracing::warn!(error = %e, channel_id, "{what}");
        };
        let mut tx = self
            .db
            .begin()
            .await
            .inspect_err(|e| warn("database unavailable", e))?;
        let now = now_micros();
        let recorded = async {
            if let Some(id) = &inbound.delivery_id
                && !store::record_key(&mut tx, channel_id, &domain::delivery_key(id), now).await?
            {
                return Ok(Vec::new());
            }
            let mut fresh = Vec::new();
            for event in inbound.events {
                if store::record_key(&mut tx, channel_id, &domain::event_key(&event), now).await? {
                    fresh.push(event);
                }
            }
            Ok::<_, Error>(fresh)
        }
        .await;
        let fresh = recorded.inspect_err(|e| warn("database unavailable", e))?;
        if fresh.is_empty() {
            let _ = tx.rollback().await;
            return Ok(Accepted::Duplicate);
        }
        let envelopes: Vec<_> = fresh
            .into_iter()
            .map(|event| events::envelope(&channel.workspace_id, event.into_payload(), None))
            .collect();
        let bus_events: Vec<_> = envelopes.iter().map(events::to_bus).collect();
        if let Err(e) = self.bus.publish(&bus_events).await {
            let _ = tx.rollback().await;
            if matches!(e, BusError::Unroutable { .. }) {
                // Not the broker's fault: nothing binds the event (the
                // topology is not declared under this prefix or vhost).
                tracing::error!(error = %e, channel_id, "webhook refused: its event would reach no queue");
            } else {
                warn("event bus unavailable", &e);
            }
            return Err(e.into());
        }
        // The events are out; should the commit fail (or the process die
        // here: the fault suite's crash point), a provider retry would
        // publish them again, which consumers absorb (they de-duplicate on
        // the message's external id).
        #[cfg(feature = "failpoints")]
        fail::fail_point!("ingress-after-publish", |_| std::process::abort());
        tx.commit()
            .await
            .map_err(Error::from)
            .inspect_err(|e| warn("committing webhook keys failed after publish", e))?;
        Ok(Accepted::Published(
            envelopes.into_iter().map(|env| env.event_id).collect(),
        ))
    }

    /// Until `token` is cancelled: forget de-duplication keys older than the
    /// retention, every ten minutes.
    pub async fn forget_old_webhook_keys(&self, token: CancellationToken) {
        let retention = domain::key_retention_micros(self.config.dedup_retention_hours);
        loop {
            tokio::select! {
                _ = token.cancelled() => break,
                _ = tokio::time::sleep(FORGET_EVERY) => {}
            }
            let cutoff = now_micros().saturating_sub(retention);
            if let Err(e) = store::forget_keys_before(&self.db, cutoff).await {
                tracing::warn!(error = %e, "pruning webhook keys failed");
            }
        }
    }
}

/// A provider's refusal of settings as the API says it.
fn credentials_error(e: CredentialsError) -> Error {
    match e {
        CredentialsError::Invalid(reason) => Error::InvalidArgument(reason),
        CredentialsError::Unavailable(reason) => Error::Internal(reason),
    }
}
