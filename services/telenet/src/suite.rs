//! Starting the services of one process: their databases (migrated), the
//! bus, the gRPC server with every selected service, the webhook listener,
//! the gateway, the consumers and the outbox relays — and stopping them in
//! order on cancellation.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use telenet_bus::{MeteredBus, RetryPolicy, SharedBus};
use telenet_kit::grpc::{GrpcServer, Readiness};
use telenet_kit::metrics::Metrics;
use telenet_store::Db;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, ServiceName};

/// How often the depth of this process's consumer queues is read.
const QUEUE_POLL: Duration = Duration::from_secs(5);
/// How often agents are counted by presence status.
const PRESENCE_POLL: Duration = Duration::from_secs(15);

/// The seeded workspace of a dev server.
#[derive(Debug, Clone)]
pub struct Seed {
    pub workspace_id: String,
    pub user_id: String,
    pub token: String,
}

/// What to start.
pub struct Suite {
    config: Config,
    services: BTreeSet<ServiceName>,
    retry: RetryPolicy,
}

/// A started suite.
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub webhook_addr: Option<SocketAddr>,
    pub gateway_addr: Option<SocketAddr>,
    /// Where `GET /metrics` answers (`None` when `metrics_listen` is empty).
    pub metrics_addr: Option<SocketAddr>,
    pub seed: Option<Seed>,
    pub bus: SharedBus,
    token: CancellationToken,
    tasks: TaskTracker,
    _ephemeral: Option<Arc<tempfile::TempDir>>,
}

impl Running {
    /// Stop everything and wait until it stopped.
    pub async fn shutdown(self) {
        self.token.cancel();
        self.wait().await;
    }

    /// Wait until every task stopped (after the token is cancelled).
    pub async fn wait(self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

impl Suite {
    pub fn new(config: Config, services: impl IntoIterator<Item = ServiceName>) -> Self {
        Self {
            config,
            services: services.into_iter().collect(),
            retry: RetryPolicy::default(),
        }
    }

    /// Use other bus retry delays (tests use short ones).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Open and migrate the database of each selected service.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        for &service in &self.services {
            if service.has_database() {
                self.database(service).await?;
            }
        }
        Ok(())
    }

    async fn database(&self, service: ServiceName) -> anyhow::Result<Db> {
        let url = self.config.database_url_of(service);
        let db = Db::connect(&url, service.as_str())
            .await
            .with_context(|| format!("{} database", service.as_str()))?;
        let migrations = match service {
            ServiceName::Ingress => telenet_ingress::MIGRATIONS,
            ServiceName::Contacts => telenet_contacts::MIGRATIONS,
            ServiceName::Conversations => telenet_conversations::MIGRATIONS,
            ServiceName::Media => telenet_media::MIGRATIONS,
            ServiceName::Dispatch => telenet_dispatch::MIGRATIONS,
            ServiceName::Reporting => telenet_reporting::MIGRATIONS,
            _ => telenet_store::Migrations {
                postgres: &[],
                sqlite: &[],
            },
        };
        db.migrate(&migrations)
            .await
            .with_context(|| format!("migrating the {} database", service.as_str()))?;
        Ok(db)
    }

    /// Start every selected service; cancel `token` to stop them.
    pub async fn start(mut self, token: CancellationToken) -> anyhow::Result<Running> {
        let ephemeral = None;
        std::fs::create_dir_all(&self.config.data_dir).with_context(|| {
            format!("creating data directory {}", self.config.data_dir.display())
        })?;
        let tasks = TaskTracker::new();
        let grpc_listener = telenet_kit::shutdown::bind(&self.config.grpc_listen).await?;
        let grpc_addr = grpc_listener.local_addr()?;
        let local = format!("http://{grpc_addr}");
        // Services of this process are reached on this process's port.
        for &s in &self.services {
            let endpoint = match s {
                ServiceName::Ingress => &mut self.config.endpoints.ingress,
                ServiceName::Contacts => &mut self.config.endpoints.contacts,
                ServiceName::Conversations => &mut self.config.endpoints.conversations,
                ServiceName::Media => &mut self.config.endpoints.media,
                ServiceName::Dispatch => &mut self.config.endpoints.dispatch,
                ServiceName::Reporting => &mut self.config.endpoints.reporting,
                ServiceName::Gateway => continue,
            };
            *endpoint = local.clone();
        }
        let client =
            |endpoint: &str| telenet_kit::grpc::channel(endpoint, &self.config.grpc_client);

        // One registry for everything this process runs, served on its own
        // listener so scrapes never queue behind API traffic.
        let metrics = Metrics::new();
        let metrics_listener = if self.config.metrics_listen.trim().is_empty() {
            None
        } else {
            Some(telenet_kit::shutdown::bind(&self.config.metrics_listen).await?)
        };
        let metrics_addr = metrics_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;

        let bus = telenet_bus::connect(
            &self.config.bus_url,
            &self.config.bus_prefix,
            self.retry.clone(),
        )
        .await
        .context("event bus")?;
        // Every publisher and consumer of this process is measured through it.
        let metered = MeteredBus::new(bus, metrics.clone());
        tasks.spawn(metered.clone().watch_queues(QUEUE_POLL, token.clone()));
        let bus: SharedBus = metered;
        let readiness = Readiness::new();
        let mut server = GrpcServer::new(self.config.grpc_server.clone())
            .with_readiness(readiness.clone())
            .file_descriptor_sets(&[telenet_proto::FILE_DESCRIPTOR_SET])
            .with_metrics(metrics.clone());
        let mut webhook_listener = None;
        let mut seed = None;
        // Bound first, so services started before it know its address.
        let mut gateway_listener = if self.services.contains(&ServiceName::Gateway) {
            Some(telenet_kit::shutdown::bind(&self.config.gateway.listen.to_string()).await?)
        } else {
            None
        };
        let gateway_addr = gateway_listener
            .as_ref()
            .map(|l| l.local_addr())
            .transpose()?;

        for &service in &self.services.clone() {
            let db = if service.has_database() {
                Some(self.database(service).await?)
            } else {
                None
            };
            if let Some(db) = &db {
                let relay = telenet_store::outbox::Relay::new(db.clone(), bus.clone())
                    .with_metrics(metrics.clone(), service.as_str());
                tasks.spawn(relay.run(token.clone()));
                let (db2, bus2) = (db.clone(), bus.clone());
                let name = grpc_name(service);
                readiness.watch(
                    name,
                    move || {
                        let (db, bus) = (db2.clone(), bus2.clone());
                        async move {
                            db.ping().await.map_err(|e| e.to_string())?;
                            bus.ping().await.map_err(|e| e.to_string())
                        }
                    },
                    Duration::from_secs(2),
                    token.clone(),
                );
            }
            match (service, db) {
                (ServiceName::Ingress, Some(db)) => {
                    let listener = telenet_kit::shutdown::bind(&self.config.ingress.listen).await?;
                    let addr = listener.local_addr()?;
                    let mut ingress_config = self.config.ingress.clone();
                    // With an ephemeral port, the default public URL follows it.
                    if ingress_config.public_url == telenet_ingress::Config::default().public_url {
                        ingress_config.public_url = format!("http://{addr}");
                    }
                    let ingress =
                        telenet_ingress::Ingress::new(db, bus.clone(), ingress_config).await?;
                    server = server.add_service(ingress.grpc());
                    webhook_listener = Some(addr);
                    tasks.spawn(serve_http(
                        listener,
                        ingress.router().layer(metrics.http_layer("webhooks")),
                        token.clone(),
                        "webhooks",
                    ));
                    tasks.spawn(ingress.run(token.clone()));
                }
                (ServiceName::Contacts, Some(db)) => {
                    let contacts =
                        telenet_contacts::ContactsService::new(db, self.config.contacts.clone())
                            .await?;
                    server = server.add_service(contacts.grpc());
                }
                (ServiceName::Conversations, Some(db)) => {
                    let conversations = telenet_conversations::ConversationsService::new(
                        db,
                        bus.clone(),
                        client(&self.config.endpoints.contacts)?,
                        self.config.conversations.clone(),
                    )
                    .await?;
                    server = server
                        .add_service(conversations.grpc())
                        .add_service(conversations.members_grpc());
                    if self.config.seed {
                        seed = Some(seed_workspace(&self.config, conversations.members()).await?);
                    }
                    for handle in conversations.start(token.clone()).await? {
                        tasks.spawn(async move {
                            let _ = handle.await;
                        });
                    }
                }
                (ServiceName::Media, Some(db)) => {
                    let mut media_config = self.config.media.clone();
                    if media_config.blob_dir.is_relative() {
                        media_config.blob_dir = self.config.data_dir.join(
                            media_config
                                .blob_dir
                                .strip_prefix(".telenet")
                                .unwrap_or(&media_config.blob_dir),
                        );
                    }
                    // With the gateway in this process on a loopback address
                    // (the dev server), download links point at it, signed
                    // with a key kept in the data directory, unless configured.
                    if media_config.download_urls == Default::default()
                        && let Some(addr) = gateway_addr.filter(|a| a.ip().is_loopback())
                    {
                        media_config.download_urls.base_url = format!("http://{addr}");
                        media_config.download_urls.key = local_link_key(&self.config.data_dir)?;
                    }
                    let media = telenet_media::MediaService::new(db, media_config)
                        .await?
                        .with_metrics(metrics.clone());
                    server = server.add_service(media.grpc());
                    // Inbound attachments: subscribed before serving, so no
                    // message created meanwhile is missed.
                    // Custom channels' files are fetched signed with the
                    // channel's secret, asked of ingress.
                    let secrets = telenet_media::inbound::GrpcChannelSecrets::new(
                        telenet_proto::ingress::v1::channels_client::ChannelsClient::new(client(
                            &self.config.endpoints.ingress,
                        )?),
                    );
                    let fetcher =
                        telenet_media::inbound::InboundFetcher::new(media.clone(), bus.clone())?
                            .with_channel_secrets(Arc::new(secrets));
                    let handle = fetcher.start(token.clone()).await?;
                    tasks.spawn(async move {
                        let _ = handle.await;
                    });
                }
                (ServiceName::Dispatch, Some(db)) => {
                    let directory = Arc::new(telenet_dispatch::GrpcChannelDirectory::new(
                        telenet_proto::ingress::v1::channels_client::ChannelsClient::new(client(
                            &self.config.endpoints.ingress,
                        )?),
                    ));
                    let dispatch = telenet_dispatch::DispatchService::new(
                        db,
                        bus.clone(),
                        directory,
                        self.config.dispatch.clone(),
                    )
                    .await?
                    .with_metrics(metrics.clone())
                    // Voice notes in each channel's form and download links,
                    // made by media.
                    .with_media(Arc::new(
                        telenet_dispatch::GrpcMediaFiles::new(
                            telenet_proto::media::v1::media_client::MediaClient::new(client(
                                &self.config.endpoints.media,
                            )?),
                        ),
                    ));
                    server = server.add_service(dispatch.grpc());
                    // Declare the queue now so no request is missed before the consumer runs.
                    drop(bus.subscribe(telenet_dispatch::subscription()).await?);
                    tasks.spawn(log_failure("dispatch", dispatch.run(token.clone())));
                }
                (ServiceName::Reporting, Some(db)) => {
                    let reporting = telenet_reporting::ReportingService::new(
                        db,
                        bus.clone(),
                        self.config.reporting.clone(),
                    )
                    .await?;
                    server = server.add_service(reporting.grpc());
                    drop(bus.subscribe(telenet_reporting::subscription()).await?);
                    tasks.spawn(log_failure("reporting", reporting.run(token.clone())));
                }
                (ServiceName::Gateway, _) => {
                    let presence = telenet_presence::connect(
                        &self.config.presence_url,
                        &self.config.presence_prefix,
                        Default::default(),
                    )
                    .await
                    .context("presence store")?;
                    let e = &self.config.endpoints;
                    let upstreams = telenet_gateway::Upstreams {
                        conversations: client(&e.conversations)?,
                        members: client(&e.conversations)?,
                        ingress: client(&e.ingress)?,
                        contacts: client(&e.contacts)?,
                        reporting: client(&e.reporting)?,
                        media: client(&e.media)?,
                    };
                    tasks.spawn(telenet_gateway::watch_presence_counts(
                        presence.clone(),
                        metrics.clone(),
                        PRESENCE_POLL,
                        token.clone(),
                    ));
                    let router =
                        telenet_gateway::router(upstreams, presence, self.config.gateway.clone())
                            .layer(metrics.http_layer("gateway"));
                    let listener = gateway_listener
                        .take()
                        .context("the gateway's listener is bound once")?;
                    tasks.spawn(serve_http(listener, router, token.clone(), "gateway"));
                }
                (other, _) => {
                    tracing::warn!(
                        service = other.as_str(),
                        "service not available in this build yet"
                    );
                }
            }
        }

        if let Some(listener) = metrics_listener {
            tasks.spawn(log_failure(
                "metrics listener",
                telenet_kit::metrics::serve(listener, metrics.clone(), token.clone()),
            ));
        }
        tasks.spawn({
            let token = token.clone();
            async move {
                if let Err(e) = server.serve(grpc_listener, token.clone()).await {
                    tracing::error!(error = %e, "grpc server failed");
                    token.cancel();
                }
            }
        });
        Ok(Running {
            grpc_addr,
            webhook_addr: webhook_listener,
            gateway_addr,
            metrics_addr,
            seed,
            bus,
            token,
            tasks,
            _ephemeral: ephemeral,
        })
    }
}

/// The health-service name a service's readiness is reported under.
pub fn grpc_name(service: ServiceName) -> String {
    format!("telenet.{}", service.as_str())
}

/// Run a service's background work, logging how it ended.
async fn log_failure<E: std::fmt::Display>(
    what: &'static str,
    work: impl std::future::Future<Output = Result<(), E>>,
) {
    if let Err(e) = work.await {
        tracing::error!(error = %e, what, "background work stopped");
    }
}

/// Serve an axum router until cancelled, finishing in-flight requests.
async fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    token: CancellationToken,
    what: &'static str,
) {
    let result = axum::serve(listener, router)
        .with_graceful_shutdown(async move { token.cancelled().await })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, what, "http server failed");
    }
}

/// On first start, create a workspace with an owner and remember the
/// owner's token in the data directory (readable by the owner only), so
/// every later start can print it again.
async fn seed_workspace(
    config: &Config,
    members: &telenet_conversations::MembersService,
) -> anyhow::Result<Seed> {
    let path = config.data_dir.join("dev-seed.json");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
        let field = |k: &str| {
            v.get(k)
                .and_then(|x| x.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        let seed = Seed {
            workspace_id: field("workspace_id"),
            user_id: field("user_id"),
            token: field("token"),
        };
        // Still valid (the database may have been reset)?
        if members.authenticate(&seed.token).await.is_ok() {
            return Ok(seed);
        }
    }
    let created = members
        .create_workspace(&telenet_proto::conversations::v1::CreateWorkspaceRequest {
            name: "My workspace".into(),
            owner_name: "Owner".into(),
            owner_email: "owner@example.com".into(),
        })
        .await
        .map_err(|e| anyhow::anyhow!("seeding the dev workspace: {e}"))?;
    let seed = Seed {
        workspace_id: created.workspace.map(|w| w.id).unwrap_or_default(),
        user_id: created.owner.map(|o| o.user_id).unwrap_or_default(),
        token: created.token,
    };
    let body = serde_json::json!({
        "workspace_id": seed.workspace_id,
        "user_id": seed.user_id,
        "token": seed.token,
    });
    write_private(&path, body.to_string().as_bytes())?;
    Ok(seed)
}

/// The download-link key of a single-process installation: read from
/// `download-link.key` in the data directory, made (random, readable by
/// the owner only) on first start, so links survive restarts.
fn local_link_key(data_dir: &std::path::Path) -> anyhow::Result<String> {
    let path = data_dir.join("download-link.key");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let key = text.trim().to_owned();
        if telenet_signing::links::LinkSigner::new::<&str>(&key, &[]).is_ok() {
            return Ok(key);
        }
        tracing::warn!(path = %path.display(), "unusable download-link key; making a new one");
    }
    let key = telenet_signing::links::LinkSigner::generate_key()
        .map_err(|e| anyhow::anyhow!("generating a download-link key: {e}"))?;
    write_private(&path, key.as_bytes())?;
    Ok(key)
}

fn write_private(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(bytes)?;
    Ok(())
}
