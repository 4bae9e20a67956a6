//! The faults, one at a time, and what a phase of the run does with one:
//! let the load run, inject the fault at a random moment, wait until every
//! process is ready and every request succeeds again, then check that every
//! webhook accepted so far reached its conversation.

use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::Suite;
use crate::load::Kind;
use crate::services::NAMES;

/// How long Redis stays down.
const REDIS_DOWN: Duration = Duration::from_secs(8);

/// Tables every webhook's path writes (ingress's keys, the consumers'
/// processed events), locked before PostgreSQL restarts so that statements
/// are in flight when it goes down.
const BUSY_TABLES: [&str; 4] = [
    "ingress.webhook_keys",
    "conversations.processed_events",
    "reporting.processed_events",
    "dispatch.processed_events",
];

/// How long they are locked before the restart.
const BUSY_HOLD: Duration = Duration::from_millis(1500);

/// A fault the suite injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Nothing: the load alone, for comparison.
    Baseline,
    /// `rabbitmqctl stop`, then the node starts again.
    RabbitRestart,
    /// `pg_ctl restart -m fast`, with statements in flight (waiting on
    /// [`BUSY_TABLES`], locked meanwhile).
    PostgresRestart,
    /// Redis killed, started again after [`REDIS_DOWN`].
    RedisStop,
    /// SIGKILL of a service's process, which is started again.
    Kill(&'static str),
    /// The service's process dies at a crash point (armed through
    /// FAILPOINTS for one start), and is started again.
    Crash {
        service: &'static str,
        point: &'static str,
    },
}

impl Fault {
    /// Every fault, in the order a full run injects them.
    pub fn all() -> Vec<Fault> {
        let mut all = vec![
            Fault::Baseline,
            Fault::RabbitRestart,
            Fault::PostgresRestart,
            Fault::RedisStop,
        ];
        all.extend(NAMES.iter().map(|&name| Fault::Kill(name)));
        all.push(Fault::Crash {
            service: "ingress",
            point: "ingress-after-publish",
        });
        all.push(Fault::Crash {
            service: "dispatch",
            point: "dispatch-after-send",
        });
        all
    }

    /// The name `--only` takes.
    pub fn id(&self) -> String {
        match self {
            Fault::Baseline => "baseline".into(),
            Fault::RabbitRestart => "rabbitmq-restart".into(),
            Fault::PostgresRestart => "postgres-restart".into(),
            Fault::RedisStop => "redis-stop".into(),
            Fault::Kill(name) => format!("kill-{name}"),
            Fault::Crash { point, .. } => format!("crash-{point}"),
        }
    }

    /// The name in the table.
    pub fn title(&self) -> String {
        match self {
            Fault::Baseline => "none (baseline)".into(),
            Fault::RabbitRestart => "RabbitMQ restarted".into(),
            Fault::PostgresRestart => "PostgreSQL restarted (fast), statements in flight".into(),
            Fault::RedisStop => format!("Redis stopped {} s", REDIS_DOWN.as_secs()),
            Fault::Kill(name) => format!("SIGKILL {name}"),
            Fault::Crash { point, .. } => match *point {
                "ingress-after-publish" => "ingress dies between confirm and commit".into(),
                "dispatch-after-send" => "dispatch dies between 2xx and record".into(),
                other => format!("crash at {other}"),
            },
        }
    }
}

/// One phase of the run, in the run's seconds.
#[derive(Debug, Clone)]
pub struct Phase {
    pub fault: Fault,
    pub start: f64,
    /// When the fault struck (the process died, the server went down).
    pub injected: f64,
    /// When the fault was over on its side (server back, process restarted
    /// and ready).
    pub healed: f64,
    /// The end of the phase's window (the next phase's start).
    pub end: f64,
}

/// Run one phase: load, the fault at a random moment, recovery, checkpoint.
pub async fn run_phase(
    suite: &Suite,
    fault: Fault,
    rng: &mut fastrand::Rng,
) -> anyhow::Result<Phase> {
    let journal = &suite.journal;
    let start = journal.now();
    let lead = Duration::from_millis(2000 + rng.u64(..3000));
    tokio::time::sleep(lead).await;
    let mut injected = journal.now();
    match fault {
        Fault::Baseline => {}
        Fault::RabbitRestart => suite.rabbit.restart().await?,
        Fault::PostgresRestart => {
            suite
                .postgres
                .restart_fast_busy(&BUSY_TABLES, BUSY_HOLD)
                .await?
        }
        Fault::RedisStop => {
            suite.redis.stop();
            tokio::time::sleep(REDIS_DOWN).await;
            suite.redis.start_server().await?;
        }
        Fault::Kill(name) => suite.service(name)?.kill().await?,
        Fault::Crash { service, point } => {
            let service = suite.service(service)?;
            service
                .restart_with(vec![("FAILPOINTS".into(), format!("{point}=return"))])
                .await
                .with_context(|| format!("restarting {} with {point} armed", service.name()))?;
            let armed = service.exits().len();
            service
                .until_exits(armed, Duration::from_secs(90))
                .await
                .with_context(|| format!("{} never reached {point}", service.name()))?;
            let exits = service.exits();
            let Some(crash) = exits.last() else {
                bail!("{} has no recorded exit", service.name());
            };
            if !crash.status.contains("SIGABRT") {
                bail!(
                    "{} with {point} armed ended with {} instead of dying there",
                    service.name(),
                    crash.status
                );
            }
            injected = journal.at(crash.at);
        }
    }
    for service in &suite.services {
        service.until_ready(Duration::from_secs(120)).await?;
    }
    let healed = journal.now();
    until_requests_succeed(suite, Duration::from_secs(3), Duration::from_secs(120)).await?;
    let end = journal.now();
    Ok(Phase {
        fault,
        start,
        injected,
        healed,
        end,
    })
}

/// Wait until every request of the load in the last `quiet` succeeded (and
/// webhooks, replies and heartbeats were all among them).
async fn until_requests_succeed(
    suite: &Suite,
    quiet: Duration,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = suite.journal.now();
        let since = now - quiet.as_secs_f64();
        let (requests, _, _) = suite.journal.snapshot();
        let recent: Vec<_> = requests.iter().filter(|r| r.at >= since).collect();
        let all_ok = recent.iter().all(|r| r.ok);
        let every_kind = [Kind::Webhook, Kind::Reply, Kind::Heartbeat]
            .iter()
            .all(|k| recent.iter().any(|r| r.kind == *k));
        if all_ok && every_kind {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            let failing: Vec<_> = recent
                .iter()
                .filter(|r| !r.ok)
                .map(|r| format!("{:?}", r.kind))
                .collect();
            bail!("requests still failing after {within:?}: {failing:?}");
        }
    }
}
