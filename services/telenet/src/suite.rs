//! Running the selected services in one process: each service's database
//! opened and migrated, the shared bus, presence and metrics, the listeners
//! bound, then every service started through its crate's `start` function
//! and handed to one [`Runner`], which serves them and stops them in order
//! (ADR 11). This file knows no service's internals: it loops over
//! [`ServiceName::ALL`] and the one table in [`start_service`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use telenet_bus::{MeteredBus, RetryPolicy, SharedBus, SubscribeSpec};
use telenet_kit::grpc::{GrpcSecurity, GrpcServer};
use telenet_kit::grpc_auth::PlatformClients;
use telenet_kit::metrics::Metrics;
use telenet_kit::tls::{ClientCerts, Tls};
use telenet_runtime::{Call, Phase, Runner, ServiceContext, Started};
use telenet_store::{Db, Migrations};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ServiceName};
pub use crate::seed::Seed;

/// How often the depth of this process's consumer queues is read.
const QUEUE_POLL: Duration = Duration::from_secs(5);

/// What to start.
pub struct Suite {
    config: Config,
    services: BTreeSet<ServiceName>,
    retry: RetryPolicy,
}

/// A started suite.
pub struct Running {
    pub grpc_addr: SocketAddr,
    /// Where the health service alone answers in plaintext
    /// (`grpc_health_listen`), if anywhere.
    pub grpc_health_addr: Option<SocketAddr>,
    pub webhook_addr: Option<SocketAddr>,
    pub gateway_addr: Option<SocketAddr>,
    /// Where `GET /metrics` answers (`None` when `metrics_listen` is empty).
    pub metrics_addr: Option<SocketAddr>,
    pub seed: Option<Seed>,
    pub bus: SharedBus,
    token: CancellationToken,
    running: tokio::task::JoinHandle<telenet_runtime::Stopped>,
}

impl Running {
    /// Stop everything in order and wait until it stopped.
    pub async fn shutdown(self) {
        self.token.cancel();
        self.wait().await;
    }

    /// Wait until everything stopped (after the token is cancelled).
    pub async fn wait(self) {
        if let Err(e) = self.running.await {
            tracing::error!(error = %e, "the suite's runner ended abnormally");
        }
    }
}

/// The migrations of a service (none for a service without a database).
fn migrations_of(service: ServiceName) -> Option<Migrations> {
    match service {
        ServiceName::Ingress => Some(telenet_ingress::MIGRATIONS),
        ServiceName::Contacts => Some(telenet_contacts::MIGRATIONS),
        ServiceName::Conversations => Some(telenet_conversations::MIGRATIONS),
        ServiceName::Media => Some(telenet_media::MIGRATIONS),
        ServiceName::Dispatch => Some(telenet_dispatch::MIGRATIONS),
        ServiceName::Reporting => Some(telenet_reporting::MIGRATIONS),
        ServiceName::Gateway => None,
    }
}

/// The services a service declares it calls (its crate's `CALLS`): all its
/// context lets it reach.
fn calls_of(service: ServiceName) -> &'static [Call] {
    match service {
        ServiceName::Ingress => telenet_ingress::CALLS,
        ServiceName::Contacts => telenet_contacts::CALLS,
        ServiceName::Conversations => telenet_conversations::CALLS,
        ServiceName::Media => telenet_media::CALLS,
        ServiceName::Dispatch => telenet_dispatch::CALLS,
        ServiceName::Reporting => telenet_reporting::CALLS,
        ServiceName::Gateway => telenet_gateway::CALLS,
    }
}

/// The consumer groups a service subscribes with (its crate's
/// `consumer_groups`).
fn consumer_groups_of(service: ServiceName) -> Vec<SubscribeSpec> {
    match service {
        ServiceName::Ingress => telenet_ingress::consumer_groups(),
        ServiceName::Contacts => telenet_contacts::consumer_groups(),
        ServiceName::Conversations => telenet_conversations::consumer_groups(),
        ServiceName::Media => telenet_media::consumer_groups(),
        ServiceName::Dispatch => telenet_dispatch::consumer_groups(),
        ServiceName::Reporting => telenet_reporting::consumer_groups(),
        ServiceName::Gateway => telenet_gateway::consumer_groups(),
    }
}

/// The bus topology: every consumer group of every service, with its
/// bindings. `telenet migrate` declares it, and so does every process
/// before it starts its services, whichever it runs (ADR 14), so that no
/// event is ever published before the queues that keep it exist.
pub fn topology() -> Vec<SubscribeSpec> {
    ServiceName::ALL
        .into_iter()
        .flat_map(consumer_groups_of)
        .collect()
}

/// Where a service's HTTP side listens, for services that have one.
fn http_listen_of(config: &Config, service: ServiceName) -> Option<String> {
    match service {
        ServiceName::Ingress => Some(config.ingress.listen.clone()),
        ServiceName::Gateway => Some(config.gateway.listen.to_string()),
        _ => None,
    }
}

/// Start one service with its own settings: the one place that names each
/// service's `start`.
async fn start_service(
    service: ServiceName,
    ctx: ServiceContext<()>,
    config: &Config,
) -> anyhow::Result<Started> {
    fn with<C>(ctx: ServiceContext<()>, config: &C) -> ServiceContext<C>
    where
        C: Clone,
    {
        ctx.map_config(|()| config.clone())
    }
    match service {
        ServiceName::Ingress => telenet_ingress::start(with(ctx, &config.ingress)).await,
        ServiceName::Contacts => telenet_contacts::start(with(ctx, &config.contacts)).await,
        ServiceName::Conversations => {
            telenet_conversations::start(with(ctx, &config.conversations)).await
        }
        ServiceName::Media => telenet_media::start(with(ctx, &config.media)).await,
        ServiceName::Dispatch => telenet_dispatch::start(with(ctx, &config.dispatch)).await,
        ServiceName::Reporting => telenet_reporting::start(with(ctx, &config.reporting)).await,
        ServiceName::Gateway => telenet_gateway::start(with(ctx, &config.gateway)).await,
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

    /// Open and migrate the database of each selected service, then declare
    /// the bus topology ([`topology`]) on `bus_url` under `bus_prefix`.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        for &service in &self.services {
            self.database(service).await?;
        }
        let bus = self.bus().await?;
        declare_topology(&bus).await
    }

    /// The bus of the configuration, with this suite's retry delays (the
    /// retry queues are declared with them).
    pub async fn bus(&self) -> anyhow::Result<SharedBus> {
        telenet_bus::connect_with_tls(
            &self.config.bus_url,
            &self.config.bus_prefix,
            self.retry.clone(),
            &self.config.bus_tls,
        )
        .await
        .context("event bus")
    }

    async fn database(&self, service: ServiceName) -> anyhow::Result<Option<Db>> {
        let Some(migrations) = migrations_of(service) else {
            return Ok(None);
        };
        let url = self.config.database_url_of(service);
        let db = Db::connect_with_tls(&url, service.as_str(), &self.config.database_tls)
            .await
            .with_context(|| format!("{} database", service.as_str()))?;
        db.migrate(&migrations)
            .await
            .with_context(|| format!("migrating the {} database", service.as_str()))?;
        Ok(Some(db))
    }

    /// Start every selected service; cancel `token` to stop them.
    pub async fn start(mut self, token: CancellationToken) -> anyhow::Result<Running> {
        std::fs::create_dir_all(&self.config.data_dir).with_context(|| {
            format!("creating data directory {}", self.config.data_dir.display())
        })?;
        let grpc_listener = telenet_kit::shutdown::bind(&self.config.grpc_listen).await?;
        let grpc_addr = grpc_listener.local_addr()?;
        let own_grpc = reachable(grpc_addr);
        self.point_endpoints_here(own_grpc);
        let health_listener = if self.config.grpc_health_listen.trim().is_empty() {
            None
        } else {
            Some(telenet_kit::shutdown::bind(&self.config.grpc_health_listen).await?)
        };
        let grpc_health_addr = health_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;
        let (security, tls, clients) = self.grpc_security()?;

        // Every HTTP listener is bound before any service starts, so each
        // knows the others' addresses (links that point at the gateway).
        let mut listeners = BTreeMap::new();
        for &service in &self.services {
            if let Some(listen) = http_listen_of(&self.config, service) {
                listeners.insert(service, telenet_kit::shutdown::bind(&listen).await?);
            }
        }
        let http_addrs: BTreeMap<&'static str, SocketAddr> = listeners
            .iter()
            .map(|(service, l)| Ok((service.as_str(), l.local_addr()?)))
            .collect::<std::io::Result<_>>()?;
        let webhook_addr = http_addrs.get(ServiceName::Ingress.as_str()).copied();
        let gateway_addr = http_addrs.get(ServiceName::Gateway.as_str()).copied();

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

        let bus = self.bus().await?;
        // Every publisher and consumer of this process is measured through it.
        let metered = MeteredBus::new(bus, metrics.clone());
        let bus: SharedBus = metered.clone();
        // Before any service publishes: whatever this process runs, the
        // queues of every group exist (and their dead letters are measured).
        declare_topology(&bus).await?;
        let presence = telenet_presence::connect_with_tls(
            &self.config.presence_url,
            &self.config.presence_prefix,
            Default::default(),
            &self.config.presence_tls,
        )
        .await
        .context("presence store")?;
        let (rate_limit_url, rate_limit_prefix, rate_limit_tls) = self.config.rate_limit_store();
        let rate_limits =
            telenet_ratelimit::connect_with_tls(rate_limit_url, rate_limit_prefix, rate_limit_tls)
                .context("rate limit store")?;

        let mut server = GrpcServer::new(self.config.grpc_server.clone())
            .file_descriptor_sets(&[telenet_proto::FILE_DESCRIPTOR_SET])
            .with_metrics(metrics.clone())
            .with_security(security);
        if let Some(listener) = health_listener {
            server = server.with_health_listener(listener);
        }
        let mut runner = Runner::new(server, metrics.clone(), bus.clone(), token.clone())
            .with_http_config(self.config.http.clone());
        runner.add(
            "process",
            None,
            reload_tasks(
                process_tasks(
                    metered,
                    metrics.clone(),
                    metrics_listener,
                    self.config.http.clone(),
                ),
                tls.clone(),
                clients,
            ),
        );

        let endpoints = self.config.endpoints.clone();
        let endpoints: telenet_runtime::Endpoints = Arc::new(move |name| endpoints.of(name));
        let addrs = Arc::new(http_addrs);
        for &service in &self.services {
            let db = self.database(service).await?;
            let mut ctx = ServiceContext::new(service.as_str(), (), bus.clone(), metrics.clone())
                .with_data_dir(&self.config.data_dir)
                .with_presence(presence.clone())
                .with_rate_limits(rate_limits.clone())
                .with_calls(calls_of(service))
                .with_endpoints(endpoints.clone(), self.config.grpc_client.clone())
                .with_tls(tls.clone())
                .with_http_addrs({
                    let addrs = addrs.clone();
                    Arc::new(move |name| addrs.get(name).copied())
                });
            if let Some(db) = &db {
                ctx = ctx.with_db(db.clone());
            }
            if let Some(listener) = listeners.remove(&service) {
                ctx = ctx.with_listener(listener);
            }
            let started = start_service(service, ctx, &self.config)
                .await
                .with_context(|| format!("starting {}", service.as_str()))?;
            runner.add(service.as_str(), db, started);
        }
        let running = tokio::spawn(runner.run(grpc_listener));

        let seed = if self.config.seed && self.services.contains(&ServiceName::Conversations) {
            Some(crate::seed::seed_workspace(&self.config, own_grpc, &metrics, tls.as_ref()).await?)
        } else {
            None
        };
        Ok(Running {
            grpc_addr,
            grpc_health_addr,
            webhook_addr,
            gateway_addr,
            metrics_addr,
            seed,
            bus,
            token,
            running,
        })
    }

    /// How the gRPC server authenticates and authorises its callers
    /// (docs/security.md), the certificates its clients present, and the
    /// platform clients it accepts.
    fn grpc_security(
        &self,
    ) -> anyhow::Result<(GrpcSecurity, Option<Tls>, Option<PlatformClients>)> {
        let clients = PlatformClients::from_config(&self.config.grpc_auth)?;
        // Platform clients present no certificate; services always do.
        let client_certs = if clients.is_some() {
            ClientCerts::Optional
        } else {
            ClientCerts::Required
        };
        let tls = Tls::from_config(&self.config.grpc_tls, client_certs)?;
        let security = match &tls {
            Some(tls) => GrpcSecurity::tls(tls.clone(), ServiceName::ALL.map(ServiceName::as_str)),
            None => GrpcSecurity::plaintext(),
        }
        .with_platform_clients(clients.clone())
        .internal_only(telenet_proto::access::INTERNAL_ONLY)
        .open_to_platform_clients(telenet_proto::access::OPEN_TO_PLATFORM_CLIENTS);
        Ok((security, tls, clients))
    }

    /// Services of this process are reached on this process's port.
    fn point_endpoints_here(&mut self, grpc_addr: SocketAddr) {
        let local = format!("http://{grpc_addr}");
        for &service in &self.services {
            if let Some(endpoint) = self.config.endpoints.of_mut(service.as_str()) {
                *endpoint = local.clone();
            }
        }
    }
}

/// Declares every consumer group of every service on `bus`.
pub async fn declare_topology(bus: &SharedBus) -> anyhow::Result<()> {
    let groups = topology();
    bus.declare(&groups)
        .await
        .context("declaring the event bus topology (exchange, queues, bindings)")?;
    tracing::info!(groups = groups.len(), "event bus topology declared");
    Ok(())
}

/// What the process itself runs beside its services: the queue-depth
/// poller and the `/metrics` listener (stopped last, so the final figures
/// can still be scraped while the services drain).
fn process_tasks(
    bus: Arc<MeteredBus>,
    metrics: Metrics,
    listener: Option<TcpListener>,
    http: telenet_kit::http::HttpServerConfig,
) -> Started {
    let started = Started::new().task(
        "process.queue-depth",
        Phase::Work,
        move |token| async move {
            bus.watch_queues(QUEUE_POLL, token).await;
            Ok(())
        },
    );
    match listener {
        Some(listener) => started.task("process.metrics", Phase::Flush, move |token| async move {
            telenet_kit::metrics::serve(listener, metrics, http, token)
                .await
                .context("metrics listener")
        }),
        None => started,
    }
}

/// Where this process reaches its own gRPC server bound at `bound`: on
/// loopback when it binds every address (its certificate then names
/// 127.0.0.1 or ::1).
fn reachable(bound: SocketAddr) -> SocketAddr {
    let mut addr = bound;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

/// `started` with the tasks that re-read the certificates and the platform
/// clients file when they change (stopped last, with the relays).
fn reload_tasks(started: Started, tls: Option<Tls>, clients: Option<PlatformClients>) -> Started {
    let started = match tls {
        Some(tls) => started.task(
            "process.tls-reload",
            Phase::Flush,
            move |token| async move {
                tls.watch(token).await;
                Ok(())
            },
        ),
        None => started,
    };
    match clients {
        Some(clients) => started.task(
            "process.platform-clients-reload",
            Phase::Flush,
            move |token| async move {
                clients.watch(token).await;
                Ok(())
            },
        ),
        None => started,
    }
}

/// The health-service name a service's readiness is reported under.
pub fn grpc_name(service: ServiceName) -> String {
    format!("telenet.{}", service.as_str())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use telenet_runtime::CallKind;

    use super::*;

    /// Each service started as the process starts it, with contexts that
    /// record what it asks for: the endpoint of every service it makes a
    /// gRPC client of, the HTTP address of every service it calls over HTTP
    /// or links to. It asks for exactly what its `CALLS` declare — the graph
    /// the chart's NetworkPolicies are generated from: an undeclared call
    /// stops its start (the context refuses it), a declared one it no
    /// longer makes is a policy opened for nothing.
    #[tokio::test]
    async fn every_service_reaches_exactly_the_services_it_declares() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let config = Config {
            data_dir: dir.path().to_owned(),
            seed: false,
            ..Config::default()
        };
        let bus = telenet_bus::connect("memory://", "calls.", Default::default())
            .await
            .expect("bus");
        let presence = telenet_presence::connect("memory://", "calls.", Default::default())
            .await
            .expect("presence");
        let loopback = SocketAddr::from(([127, 0, 0, 1], 8080));
        for service in ServiceName::ALL {
            let name = service.as_str();
            let grpc = Arc::new(Mutex::new(BTreeSet::new()));
            let http = Arc::new(Mutex::new(BTreeSet::new()));
            let suite = Suite::new(config.clone(), [service]);
            let db = suite.database(service).await.expect("database");
            let mut ctx = ServiceContext::new(name, (), bus.clone(), Metrics::new())
                .with_data_dir(dir.path())
                .with_presence(presence.clone())
                .with_calls(calls_of(service))
                .with_endpoints(
                    {
                        let grpc = grpc.clone();
                        Arc::new(move |other: &str| {
                            grpc.lock().expect("lock").insert(other.to_owned());
                            Some("http://127.0.0.1:9".to_owned())
                        })
                    },
                    Default::default(),
                )
                .with_http_addrs({
                    let http = http.clone();
                    Arc::new(move |other: &str| {
                        http.lock().expect("lock").insert(other.to_owned());
                        Some(loopback)
                    })
                });
            if let Some(db) = db {
                ctx = ctx.with_db(db);
            }
            if http_listen_of(&config, service).is_some() {
                ctx = ctx.with_listener(TcpListener::bind("127.0.0.1:0").await.expect("bind"));
            }
            if let Err(e) = start_service(service, ctx, &config).await {
                panic!("{name} does not start with the calls it declares: {e:#}");
            }

            let declared = |kinds: &[CallKind]| -> BTreeSet<String> {
                calls_of(service)
                    .iter()
                    .filter(|c| kinds.contains(&c.kind))
                    .map(|c| c.service.to_owned())
                    .collect()
            };
            assert_eq!(
                *grpc.lock().expect("lock"),
                declared(&[CallKind::Grpc]),
                "the gRPC clients {name} makes and declares"
            );
            assert_eq!(
                *http.lock().expect("lock"),
                declared(&[CallKind::Http, CallKind::Link]),
                "the HTTP addresses {name} asks for and declares"
            );
        }
    }

    /// Every routing key an event is published under is bound by some
    /// consumer group of the topology: with mandatory publishing an
    /// unbound key would make every publish of it fail (ADR 14).
    #[test]
    fn every_published_routing_key_is_bound_by_some_group() {
        let groups = topology();
        for key in telenet_proto::events::v1::ROUTING_KEYS {
            assert!(
                groups.iter().any(|g| g
                    .bindings
                    .iter()
                    .any(|pattern| telenet_bus::routing::matches(pattern, key))),
                "{key} is bound by no consumer group: its events would be unroutable"
            );
        }
    }

    /// One queue per group: two services may not share a group name.
    #[test]
    fn consumer_group_names_are_unique() {
        let mut seen = BTreeSet::new();
        for spec in topology() {
            assert!(
                seen.insert(spec.group.clone()),
                "group {} twice",
                spec.group
            );
        }
    }

    /// The chart's call graph (`charts/telenet/files/calls.yaml`, from which
    /// its NetworkPolicies are rendered) is what the services declare: a
    /// declaration changed without `deploy/tools/callgraph.py --write`
    /// fails here as well as in the deploy checks.
    #[test]
    fn the_charts_call_graph_is_the_declared_one() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../charts/telenet/files/calls.yaml"
        );
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // `service:` lines, each followed by `  grpc: [a, b]` and `  http: […]`.
        let mut in_chart = BTreeSet::new();
        let mut service = None;
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        {
            if let Some(name) = line.strip_suffix(':').filter(|_| !line.starts_with(' ')) {
                service = Some(name.to_owned());
                continue;
            }
            let (kind, list) = line.trim().split_once(": ").expect("`kind: [services]`");
            let list = list.trim_start_matches('[').trim_end_matches(']');
            for callee in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let caller = service.clone().expect("a service before its calls");
                in_chart.insert((caller, kind.to_owned(), callee.to_owned()));
            }
        }
        let declared: BTreeSet<_> = ServiceName::ALL
            .into_iter()
            .flat_map(|s| calls_of(s).iter().map(move |c| (s, c)))
            .filter(|(_, c)| c.kind != CallKind::Link)
            .map(|(s, c)| {
                (
                    s.as_str().to_owned(),
                    c.kind.as_str().to_owned(),
                    c.service.to_owned(),
                )
            })
            .collect();
        assert_eq!(
            in_chart, declared,
            "{path} is stale: run python3 deploy/tools/callgraph.py --write"
        );
    }
}
