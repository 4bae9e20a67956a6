//! Starting one service in a test the way the process starts it: its
//! database on the chosen backend (migrated), an in-memory bus (or one
//! given), its gRPC services on an ephemeral port, its tasks running, and
//! an ordered stop when the test drops or stops it.

use std::future::Future;
use std::net::SocketAddr;

use telenet_bus::SharedBus;
use telenet_kit::grpc::{GrpcChannel, GrpcServer};
use telenet_kit::metrics::Metrics;
use telenet_store::testing::Backend;
use telenet_store::{Db, Migrations};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{Call, Runner, ServiceContext, Started};

/// A service running in a test.
pub struct TestService {
    /// Where its gRPC services answer.
    pub grpc_addr: SocketAddr,
    /// Where its HTTP side listens, when it was given a listener.
    pub http_addr: Option<SocketAddr>,
    /// The bus it publishes to and consumes from.
    pub bus: SharedBus,
    /// Its database.
    pub db: Option<Db>,
    /// Its metrics.
    pub metrics: Metrics,
    token: CancellationToken,
    running: Option<tokio::task::JoinHandle<crate::Stopped>>,
    _dir: tempfile::TempDir,
}

/// How to start a service in a test; see [`TestService::start`].
pub struct TestSetup<C> {
    name: &'static str,
    config: C,
    backend: Option<Backend>,
    migrations: Option<Migrations>,
    bus: Option<SharedBus>,
    listener: bool,
    calls: &'static [Call],
    database_url: Option<String>,
    data_dir: Option<std::path::PathBuf>,
    rate_limits: Option<telenet_ratelimit::SharedStore>,
}

impl<C> TestSetup<C> {
    /// Service `name` with `config`, no database.
    pub fn new(name: &'static str, config: C) -> Self {
        Self {
            name,
            config,
            backend: None,
            migrations: None,
            bus: None,
            listener: false,
            calls: &[],
            database_url: None,
            data_dir: None,
            rate_limits: None,
        }
    }

    /// With the services it declares it calls (its crate's `CALLS`), all of
    /// them reached at the test's own gRPC port; without it, it may call
    /// none, as in the process.
    pub fn calls(mut self, calls: &'static [Call]) -> Self {
        self.calls = calls;
        self
    }

    /// With a fresh database on `backend`, migrated with `migrations`.
    pub fn database(mut self, backend: Backend, migrations: Migrations) -> Self {
        self.backend = Some(backend);
        self.migrations = Some(migrations);
        self
    }

    /// On this bus instead of a new in-memory one.
    pub fn bus(mut self, bus: SharedBus) -> Self {
        self.bus = Some(bus);
        self
    }

    /// With a loopback listener for the service's HTTP side.
    pub fn listener(mut self) -> Self {
        self.listener = true;
        self
    }

    /// On the database at `url` (migrated with the migrations given to
    /// [`database`](Self::database)) instead of a fresh one: a restart of
    /// the service on what an earlier start left.
    pub fn database_url(mut self, url: impl Into<String>) -> Self {
        self.database_url = Some(url.into());
        self
    }

    /// With `dir` as its data directory instead of a new temporary one
    /// (kept across restarts; the caller removes it).
    pub fn data_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }
}

impl<C> TestSetup<C> {
    /// Counting rate limits in `store` instead of a new in-memory one.
    pub fn rate_limits(mut self, store: telenet_ratelimit::SharedStore) -> Self {
        self.rate_limits = Some(store);
        self
    }
}

impl TestService {
    /// Start a service with `start` (its crate's `start` function), panicking
    /// with a clear message when anything it needs is missing.
    pub async fn start<C, F, Fut>(setup: TestSetup<C>, start: F) -> Self
    where
        F: FnOnce(ServiceContext<C>) -> Fut,
        Fut: Future<Output = anyhow::Result<Started>>,
    {
        Self::try_start(setup, start)
            .await
            .unwrap_or_else(|e| panic!("starting the service under test: {e:#}"))
    }

    /// [`start`](Self::start), returning the error.
    pub async fn try_start<C, F, Fut>(setup: TestSetup<C>, start: F) -> anyhow::Result<Self>
    where
        F: FnOnce(ServiceContext<C>) -> Fut,
        Fut: Future<Output = anyhow::Result<Started>>,
    {
        let dir = tempfile::tempdir()?;
        let metrics = Metrics::new();
        let bus = match setup.bus {
            Some(bus) => bus,
            None => {
                let prefix = format!("test-{}.", fastrand::u64(..));
                telenet_bus::connect("memory://", &prefix, Default::default()).await?
            }
        };
        let db = match (setup.backend, setup.migrations) {
            (Some(backend), Some(migrations)) => {
                let url = match setup.database_url {
                    Some(url) => url,
                    None => backend.url(dir.path(), setup.name).await,
                };
                let db = Db::connect(&url, setup.name).await?;
                db.migrate(&migrations).await?;
                Some(db)
            }
            _ => None,
        };
        let grpc = TcpListener::bind("127.0.0.1:0").await?;
        let grpc_addr = grpc.local_addr()?;
        let own = format!("http://{grpc_addr}");
        let data_dir = setup.data_dir.unwrap_or_else(|| dir.path().to_owned());
        let mut ctx = ServiceContext::new(setup.name, setup.config, bus.clone(), metrics.clone())
            .with_data_dir(data_dir)
            .with_calls(setup.calls)
            .with_endpoints(
                std::sync::Arc::new(move |_| Some(own.clone())),
                Default::default(),
            );
        if let Some(db) = &db {
            ctx = ctx.with_db(db.clone());
        }
        if let Some(store) = setup.rate_limits {
            ctx = ctx.with_rate_limits(store);
        }
        let mut http_addr = None;
        if setup.listener {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            http_addr = Some(listener.local_addr()?);
            ctx = ctx.with_listener(listener);
        }
        let started = start(ctx).await?;
        let token = CancellationToken::new();
        let server = GrpcServer::new(Default::default())
            .file_descriptor_sets(&[])
            .with_metrics(metrics.clone());
        let mut runner = Runner::new(server, metrics.clone(), bus.clone(), token.clone());
        runner.add(setup.name, db.clone(), started);
        let running = tokio::spawn(runner.run(grpc));
        Ok(Self {
            grpc_addr,
            http_addr,
            bus,
            db,
            metrics,
            token,
            running: Some(running),
            _dir: dir,
        })
    }

    /// A client channel to the service's gRPC port.
    pub fn channel(&self) -> GrpcChannel {
        telenet_kit::grpc::client(
            &format!("http://{}", self.grpc_addr),
            &Default::default(),
            &self.metrics,
            "test",
        )
        .unwrap_or_else(|e| panic!("client channel to the service under test: {e}"))
    }

    /// Stop it in order and wait until it stopped.
    pub async fn stop(mut self) {
        self.token.cancel();
        if let Some(running) = self.running.take() {
            let _ = running.await;
        }
    }
}

impl Drop for TestService {
    fn drop(&mut self) {
        self.token.cancel();
    }
}
