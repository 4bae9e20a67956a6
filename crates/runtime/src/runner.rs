//! Running started services in one process and stopping them in phases.

use std::collections::BTreeMap;
use std::time::Duration;

use telenet_bus::SharedBus;
use telenet_kit::grpc::{GrpcServer, Readiness};
use telenet_kit::http::HttpServerConfig;
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
    /// The read timeouts of every HTTP side.
    http_config: HttpServerConfig,
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
            http_config: HttpServerConfig::default(),
            tasks: BTreeMap::new(),
            root,
        }
    }

    /// With other read timeouts for the HTTP sides (`http.*`).
    pub fn with_http_config(mut self, config: HttpServerConfig) -> Self {
        self.http_config = config;
        self
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
            http_config,
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
            let config = http_config.clone();
            serving.spawn(async move {
                let result = telenet_kit::http::serve(side.listener, router, config, accept).await;
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
            tracing::info!(phase = phase.as_str(), "stopping phase");
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Records "<name> told" when a task's token is cancelled and
    /// "<name> done" when it finished its (slow) last work.
    fn recording(
        log: &Arc<Mutex<Vec<String>>>,
        name: &'static str,
    ) -> impl FnOnce(CancellationToken) -> futures::future::BoxFuture<'static, anyhow::Result<()>>
    + Send
    + 'static {
        let log = log.clone();
        move |token| {
            Box::pin(async move {
                token.cancelled().await;
                log.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(format!("{name} told"));
                tokio::time::sleep(Duration::from_millis(30)).await;
                log.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(format!("{name} done"));
                Ok(())
            })
        }
    }

    #[tokio::test]
    async fn phases_stop_in_order_each_finishing_before_the_next_is_told() {
        let bus = telenet_bus::connect("memory://", "runner-test.", Default::default())
            .await
            .expect("bus");
        let metrics = Metrics::new();
        let root = CancellationToken::new();
        let server = GrpcServer::new(Default::default());
        let mut runner = Runner::new(server, metrics, bus, root.clone());
        let log = Arc::new(Mutex::new(Vec::new()));
        // Added out of order: the phase decides, not the order of adding.
        let started = Started::new()
            .task("t.flush", Phase::Flush, recording(&log, "flush"))
            .task("t.work", Phase::Work, recording(&log, "work"))
            .task("t.consume", Phase::Consume, recording(&log, "consume"));
        runner.add("t", None, started);
        let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let running = tokio::spawn(runner.run(grpc));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            log.lock().unwrap_or_else(|e| e.into_inner()).is_empty(),
            "nothing stops before the root token"
        );
        root.cancel();
        tokio::time::timeout(Duration::from_secs(5), running)
            .await
            .expect("stops")
            .expect("runner");
        let log = log.lock().unwrap_or_else(|e| e.into_inner()).clone();
        assert_eq!(
            log,
            [
                "consume told",
                "consume done",
                "work told",
                "work done",
                "flush told",
                "flush done"
            ]
        );
    }

    #[tokio::test]
    async fn a_failing_task_stops_the_process() {
        let bus = telenet_bus::connect("memory://", "runner-test2.", Default::default())
            .await
            .expect("bus");
        let root = CancellationToken::new();
        let mut runner = Runner::new(
            GrpcServer::new(Default::default()),
            Metrics::new(),
            bus,
            root.clone(),
        );
        runner.add(
            "t",
            None,
            Started::new().task("t.broken", Phase::Work, |_token| async {
                anyhow::bail!("lost the database for good")
            }),
        );
        let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        tokio::time::timeout(Duration::from_secs(5), runner.run(grpc))
            .await
            .expect("the process stops by itself");
        assert!(root.is_cancelled());
    }
}
