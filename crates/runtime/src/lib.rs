//! How a TELENET service is started and stopped.
//!
//! Every service crate exposes one function of the same shape:
//!
//! ```ignore
//! pub async fn start(ctx: ServiceContext<Config>) -> anyhow::Result<Started>
//! ```
//!
//! The [`ServiceContext`] carries what the process owns and shares: the
//! service's database (migrated), the bus, the metrics registry, gRPC
//! clients to the other services it declares it calls ([`Call`]), the data
//! directory and any listener the process bound for the service. The service builds its parts and hands
//! back a [`Started`]: its gRPC services, its HTTP routers, its background
//! tasks (each in a [`Phase`]) and optional readiness checks. The process
//! that runs it (the `telenet` binary, a test) serves and spawns them, and
//! stops them in order ([`Phase`]), so no service starts or stops anything
//! on its own.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use futures::future::BoxFuture;
use telenet_bus::SharedBus;
use telenet_kit::grpc::{ClientConfig, GrpcChannel, GrpcServer};
use telenet_kit::metrics::Metrics;
use telenet_kit::tls::Tls;
use telenet_presence::SharedPresence;
use telenet_ratelimit::{RateLimiter, SharedStore};
use telenet_store::Db;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

mod calls;
mod runner;
pub mod testing;

pub use calls::{Call, CallKind};
pub use runner::{Runner, Stopped};

/// The endpoints of the other services, by service name (`ingress`,
/// `contacts`, `conversations`, `media`, `dispatch`, `reporting`).
pub type Endpoints = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The addresses of the HTTP listeners this process bound, by service name
/// (`ingress`, `gateway`).
pub type HttpAddrs = Arc<dyn Fn(&str) -> Option<SocketAddr> + Send + Sync>;

/// What the process gives a service to start with.
pub struct ServiceContext<C> {
    /// The service's name (`ingress`, `conversations`, …): its metrics
    /// label, its readiness name (`telenet.<name>`), its database schema.
    pub name: &'static str,
    /// The service's own settings.
    pub config: C,
    /// Its database, opened and migrated (`None` for services without one).
    pub db: Option<Db>,
    /// The event bus of the process.
    pub bus: SharedBus,
    /// The process's metrics registry; services register their own metrics
    /// in it ([`Metrics::register`]).
    pub metrics: Metrics,
    /// Where the process keeps files (the dev server's data directory).
    pub data_dir: PathBuf,
    /// A listener the process bound for this service's HTTP side (ingress's
    /// webhooks, the gateway), bound before any service started so others
    /// can know its address.
    pub listener: Option<TcpListener>,
    /// Agent presence, when the process has a presence store.
    pub presence: Option<SharedPresence>,
    /// Where rate limits are counted: the process's store (Redis, shared
    /// by the replicas), or one in memory of its own by default.
    pub rate_limits: SharedStore,
    endpoints: Endpoints,
    http_addrs: HttpAddrs,
    client_config: ClientConfig,
    calls: &'static [Call],
    tls: Option<Tls>,
}

impl<C> ServiceContext<C> {
    /// A context for `name` with `config`, the shared `bus` and `metrics`.
    pub fn new(name: &'static str, config: C, bus: SharedBus, metrics: Metrics) -> Self {
        Self {
            name,
            config,
            db: None,
            bus,
            metrics,
            data_dir: PathBuf::from(".telenet"),
            listener: None,
            presence: None,
            rate_limits: Arc::new(telenet_ratelimit::MemoryStore::default()),
            endpoints: Arc::new(|_| None),
            http_addrs: Arc::new(|_| None),
            client_config: ClientConfig::default(),
            calls: &[],
            tls: None,
        }
    }

    /// With the service's declaration of the services it calls (its crate's
    /// `CALLS`): [`client`](Self::client) and [`http_addr_of`](Self::http_addr_of)
    /// refuse any other. Without it the service may call none.
    pub fn with_calls(mut self, calls: &'static [Call]) -> Self {
        self.calls = calls;
        self
    }

    /// The services this service declared it calls.
    pub fn calls(&self) -> &'static [Call] {
        self.calls
    }

    /// With the service's database.
    pub fn with_db(mut self, db: Db) -> Self {
        self.db = Some(db);
        self
    }

    /// With the data directory.
    pub fn with_data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = dir.into();
        self
    }

    /// With a listener bound for the service's HTTP side.
    pub fn with_listener(mut self, listener: TcpListener) -> Self {
        self.listener = Some(listener);
        self
    }

    /// With the presence store.
    pub fn with_presence(mut self, presence: SharedPresence) -> Self {
        self.presence = Some(presence);
        self
    }

    /// With the process's rate-limit store.
    pub fn with_rate_limits(mut self, store: SharedStore) -> Self {
        self.rate_limits = store;
        self
    }

    /// A limiter over the rate-limit store, counting into the process's
    /// metrics.
    pub fn rate_limiter(&self) -> RateLimiter {
        RateLimiter::new(self.rate_limits.clone(), &self.metrics)
    }

    /// With the addresses of the HTTP listeners the process bound.
    pub fn with_http_addrs(mut self, addrs: HttpAddrs) -> Self {
        self.http_addrs = addrs;
        self
    }

    /// The presence store; an error naming the service when there is none.
    pub fn presence(&self) -> anyhow::Result<SharedPresence> {
        self.presence
            .clone()
            .ok_or_else(|| anyhow::anyhow!("the {} service needs a presence store", self.name))
    }

    /// The address of `service`'s HTTP listener when this process runs it
    /// (e.g. the gateway, for links that point at it); `None` when it runs
    /// elsewhere. An error when this service does not declare calling it
    /// over HTTP or linking to it ([`Call::http`], [`Call::link`]).
    pub fn http_addr_of(&self, service: &str) -> anyhow::Result<Option<SocketAddr>> {
        calls::check(
            self.name,
            self.calls,
            service,
            &[CallKind::Http, CallKind::Link],
        )?;
        Ok((self.http_addrs)(service))
    }

    /// With the other services' endpoints and the client settings used to
    /// reach them.
    pub fn with_endpoints(mut self, endpoints: Endpoints, client: ClientConfig) -> Self {
        self.endpoints = endpoints;
        self.client_config = client;
        self
    }

    /// With the process's certificates: every gRPC client of the service
    /// then speaks mutual TLS, presenting the service's certificate.
    pub fn with_tls(mut self, tls: Option<Tls>) -> Self {
        self.tls = tls;
        self
    }

    /// The database; an error naming the service when it has none.
    pub fn db(&self) -> anyhow::Result<Db> {
        self.db
            .clone()
            .ok_or_else(|| anyhow::anyhow!("the {} service needs a database", self.name))
    }

    /// A gRPC client channel to another service, through kit's client stack
    /// (trace propagation, timeout, retry of idempotent calls, metrics). An
    /// error when this service does not declare calling it ([`Call::grpc`]).
    pub fn client(&self, service: &str) -> anyhow::Result<GrpcChannel> {
        self.client_with_timeout(service, self.client_config.request_timeout)
    }

    /// [`client`](Self::client) with its own timeout per call (e.g. the
    /// gateway's bound on what an agent waits for); zero for none (calls the
    /// service bounds itself, such as streamed uploads).
    pub fn client_with_timeout(
        &self,
        service: &str,
        timeout: std::time::Duration,
    ) -> anyhow::Result<GrpcChannel> {
        calls::check(self.name, self.calls, service, &[CallKind::Grpc])?;
        let endpoint = (self.endpoints)(service).ok_or_else(|| {
            anyhow::anyhow!(
                "{} needs the {service} service, whose endpoint is not set",
                self.name
            )
        })?;
        let config = ClientConfig {
            request_timeout: timeout,
            ..self.client_config.clone()
        };
        telenet_kit::grpc::client_with(
            &endpoint,
            &config,
            &self.metrics,
            self.name,
            self.tls.as_ref(),
        )
        .map_err(|e| anyhow::anyhow!("{} → {service}: {e}", self.name))
    }

    /// The address of the listener bound for this service, if any.
    pub fn listener_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The same context with other settings (for a service that derives
    /// its final settings from the process's).
    pub fn map_config<D>(self, f: impl FnOnce(C) -> D) -> ServiceContext<D> {
        ServiceContext {
            name: self.name,
            config: f(self.config),
            db: self.db,
            bus: self.bus,
            metrics: self.metrics,
            data_dir: self.data_dir,
            listener: self.listener,
            presence: self.presence,
            rate_limits: self.rate_limits,
            endpoints: self.endpoints,
            http_addrs: self.http_addrs,
            client_config: self.client_config,
            calls: self.calls,
            tls: self.tls,
        }
    }
}

/// When a background task is told to stop, in the order of shutdown.
///
/// On shutdown the runner stops accepting (HTTP and gRPC listeners finish
/// the requests in flight), then cancels [`Phase::Consume`] tasks and waits
/// for them (they finish the deliveries they hold and ack after commit),
/// then [`Phase::Work`] tasks (sending, transcoding, fetching: what was
/// taken is finished or left to be taken again), then [`Phase::Flush`]
/// tasks (outbox relays publish what was committed), then closes the
/// database pools and the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// Bus consumers: stop taking deliveries, finish the ones held.
    Consume,
    /// Other in-flight work: background jobs, pollers, sweepers.
    Work,
    /// Publishing what was committed (outbox relays): last, so nothing a
    /// consumer or handler committed stays unpublished.
    Flush,
}

impl Phase {
    /// Every phase, in the order they stop.
    pub const ORDER: [Phase; 3] = [Phase::Consume, Phase::Work, Phase::Flush];

    /// Its name in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Consume => "consume",
            Phase::Work => "work",
            Phase::Flush => "flush",
        }
    }
}

type TaskFn = Box<dyn FnOnce(CancellationToken) -> BoxFuture<'static, anyhow::Result<()>> + Send>;

/// A background task: started with the token of its phase, it returns once
/// that token is cancelled and its work is finished.
pub struct Task {
    /// For logs: `<service>.<what>`.
    pub name: String,
    /// When it is told to stop.
    pub phase: Phase,
    run: TaskFn,
}

impl Task {
    /// Start it with the token of its phase.
    pub fn run(self, token: CancellationToken) -> BoxFuture<'static, anyhow::Result<()>> {
        (self.run)(token)
    }
}

/// An HTTP side of a service: a router to serve on a listener.
pub struct HttpSide {
    /// For logs and metrics (`webhooks`, `gateway`).
    pub name: &'static str,
    /// Where it listens.
    pub listener: TcpListener,
    /// What it serves.
    pub router: axum::Router,
}

type CheckFn =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// A readiness check: the service is ready while every check passes.
#[derive(Clone)]
pub struct ReadinessCheck(pub(crate) CheckFn);

type MountFn = Box<dyn FnOnce(GrpcServer) -> GrpcServer + Send>;

/// A gRPC service to mount on the process's server.
pub struct GrpcMount(MountFn);

impl GrpcMount {
    /// Mount it on `server`.
    pub fn mount(self, server: GrpcServer) -> GrpcServer {
        (self.0)(server)
    }
}

/// What a started service hands back to the process that runs it.
#[derive(Default)]
pub struct Started {
    /// Its gRPC services, served on the process's gRPC port.
    pub grpc: Vec<GrpcMount>,
    /// Its HTTP sides.
    pub http: Vec<HttpSide>,
    /// Its background tasks.
    pub tasks: Vec<Task>,
    /// Extra readiness checks, besides its database and the bus.
    pub readiness: Vec<ReadinessCheck>,
}

impl Started {
    /// Nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a gRPC service.
    pub fn grpc<S>(mut self, service: S) -> Self
    where
        S: tonic::server::NamedService
            + tower::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
                Error = std::convert::Infallible,
            > + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.grpc.push(GrpcMount(Box::new(move |server| {
            server.add_service(service)
        })));
        self
    }

    /// Add an HTTP side.
    pub fn http(mut self, name: &'static str, listener: TcpListener, router: axum::Router) -> Self {
        self.http.push(HttpSide {
            name,
            listener,
            router,
        });
        self
    }

    /// Add a background task. `name` is `<service>.<what>`.
    pub fn task<F, Fut>(mut self, name: impl Into<String>, phase: Phase, run: F) -> Self
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.tasks.push(Task {
            name: name.into(),
            phase,
            run: Box::new(move |token| Box::pin(run(token))),
        });
        self
    }

    /// Add a readiness check.
    pub fn ready_when<F, Fut>(mut self, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.readiness
            .push(ReadinessCheck(Arc::new(move || Box::pin(check()))));
        self
    }
}
