//! Running started services in one process and stopping them in phases.

use std::collections::BTreeMap;
use std::time::Duration;

use telenet_bus::SharedBus;
use telenet_kit::grpc::{GrpcServer, Readiness};
use telenet_kit::metrics::Metrics;
use telenet_store::Db;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{Phase, ReadinessCheck, Started};

/// How often readiness checks run.
const READINESS_EVERY: Duration = Duration::from_secs(2);

/// Serves the started services of one process and stops them in order.
pub struct Runner {
    server: GrpcServer,
    readiness: Readiness,
    metrics: Metrics,
    bus: SharedBus,
    dbs: Vec<Db>,
    http: Vec<crate::HttpSide>,
    tasks: BTreeMap<Phase, Vec<crate::Task>>,
    /// Cancelled when the process should stop; watched by readiness.
    root: CancellationToken,
}

/// A running process, until [`Stopped`].
pub struct Stopped;

impl Runner {
    /// A runner for a process with `server` as its gRPC server.
    pub fn new(
        server: GrpcServer,
        metrics: Metrics,
        bus: SharedBus,
        root: CancellationToken,
    ) -> Self {
        let readiness = server.readiness();
        Self {
            server,
            readiness,
            metrics,
            bus,
            dbs: Vec::new(),
            http: Vec::new(),
            tasks: BTreeMap::new(),
            root,
        }
    }

    /// Add a started service: `name` is its readiness name's suffix, `db`
    /// its database (its outbox relay is added here, in [`Phase::Flush`]).
    pub fn add(&mut self, name: &'static str, db: Option<Db>, started: Started) {
        let Started {
            grpc,
            http,
            tasks,
            readiness,
        } = started;
        let mut server = std::mem::replace(&mut self.server, GrpcServer::new(Default::default()));
        for mount in grpc {
            server = mount.mount(server);
        }
        self.server = server;
        self.http.extend(http);
        for task in tasks {
            self.tasks.entry(task.phase).or_default().push(task);
        }
        let mut checks: Vec<ReadinessCheck> = readiness;
        if let Some(db) = &db {
            let relay = telenet_store::outbox::Relay::new(db.clone(), self.bus.clone())
                .with_metrics(self.metrics.clone(), name);
            self.tasks
                .entry(Phase::Flush)
                .or_default()
                .push(crate::Task {
                    name: format!("{name}.outbox-relay"),
                    phase: Phase::Flush,
                    run: Box::new(move |token| {
                        Box::pin(async move {
                            relay.run(token).await;
                            Ok(())
                        })
                    }),
                });
            let (db2, bus2) = (db.clone(), self.bus.clone());
            checks.push(ReadinessCheck(std::sync::Arc::new(move || {
                let (db, bus) = (db2.clone(), bus2.clone());
                Box::pin(async move {
                    db.ping().await.map_err(|e| e.to_string())?;
                    bus.ping().await.map_err(|e| e.to_string())
                })
            })));
            self.dbs.push(db.clone());
        }
        if !checks.is_empty() {
            self.readiness.watch(
                format!("telenet.{name}"),
                move || {
                    let checks = checks.clone();
                    async move {
                        for check in &checks {
                            (check.0)().await?;
                        }
                        Ok::<(), String>(())
                    }
                },
                READINESS_EVERY,
                self.root.clone(),
            );
        }
    }

    /// Serve everything on `grpc` (and each service's HTTP listeners) and
    /// spawn every task; returns once the root token is cancelled and every
    /// phase has stopped in order.
    pub async fn run(self, grpc: TcpListener) -> Stopped {
        let Runner {
            server,
            readiness: _,
            metrics,
            bus: _,
            dbs,
            http,
            tasks,
            root,
        } = self;
        // Stop accepting first.
        let accept = CancellationToken::new();
        let serving = TaskTracker::new();
        serving.spawn({
            let accept = accept.clone();
            let root = root.clone();
            async move {
                if let Err(e) = server.serve(grpc, accept).await {
                    tracing::error!(error = %e, "grpc server failed");
                    root.cancel();
                }
            }
        });
        for side in http {
            let accept = accept.clone();
            let router = side.router.layer(metrics.http_layer(side.name));
            let name = side.name;
            serving.spawn(async move {
                let result = axum::serve(side.listener, router)
                    .with_graceful_shutdown(async move { accept.cancelled().await })
                    .await;
                if let Err(e) = result {
                    tracing::error!(error = %e, what = name, "http server failed");
                }
            });
        }
        let mut phases = Vec::new();
        for phase in Phase::ORDER {
            phases.push((phase, CancellationToken::new(), TaskTracker::new()));
        }
        let mut tasks = tasks;
        for (phase, token, tracker) in &phases {
            for task in tasks.remove(phase).unwrap_or_default() {
                let name = task.name.clone();
                let run = task.run(token.clone());
                let root = root.clone();
                tracker.spawn(async move {
                    if let Err(e) = run.await {
                        tracing::error!(error = %e, task = %name, "background task failed; stopping");
                        root.cancel();
                    }
                });
            }
        }

        root.cancelled().await;
        tracing::info!("stopping: no new requests");
        accept.cancel();
        serving.close();
        serving.wait().await;
        for (phase, token, tracker) in phases {
            tracing::debug!(phase = phase.as_str(), "stopping phase");
            token.cancel();
            tracker.close();
            tracker.wait().await;
        }
        for db in dbs {
            db.close().await;
        }
        tracing::info!("stopped");
        Stopped
    }
}
