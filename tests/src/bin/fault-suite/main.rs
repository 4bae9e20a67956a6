//! The fault suite (`scripts/fault-suite.sh`, docs/reliability.md).
//!
//! Every service runs as its own `telenet serve --service <name>` process,
//! on a PostgreSQL, a RabbitMQ and a Redis that the suite starts for itself
//! in a temporary directory on free ports. Contacts write in through signed
//! webhooks of a custom channel at a steady rate, an agent replies through
//! the REST gateway to a local receiver, and meanwhile, one at a time,
//! RabbitMQ and PostgreSQL are restarted, Redis is stopped for a while, each
//! service process is SIGKILLed at a random moment, and ingress and dispatch
//! die at crash points in the two windows random kills rarely hit (between
//! the broker's confirm and the commit; between the channel's 2xx and the
//! record of it).
//!
//! After each fault it checks that every webhook that got a 2xx is in a
//! conversation; at the end, that each is there exactly once and in order
//! per contact, and that every reply reached the receiver at most once per
//! attempt dispatch recorded and ended sent or failed. It prints a table
//! and exits 1 when anything was lost, duplicated, reordered, sent too
//! often or left unsettled.

mod faults;
mod load;
mod observe;
mod report;
mod services;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use tokio_util::sync::CancellationToken;

use crate::faults::{Fault, Phase};
use crate::load::{Api, Channel, Journal, Receiver};
use crate::services::{NAMES, Service};
use telenet_tests::infra::{self, Postgres, Rabbit, Redis, free_port};

/// Locks a mutex; a panic elsewhere does not make the data unusable here.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Parser, Debug)]
#[command(
    name = "fault-suite",
    about = "TELENET under faults: nothing accepted is lost, duplicated or reordered"
)]
struct Args {
    /// The `telenet` binary the services run as, built with the
    /// `failpoints` feature (for the crash points).
    #[arg(long, env = "TELENET_BIN")]
    telenet: PathBuf,
    /// Run only these faults (repeat; names as `--list` prints them); the
    /// baseline always runs first.
    #[arg(long = "only")]
    only: Vec<String>,
    /// List the faults and exit.
    #[arg(long)]
    list: bool,
    /// Seed of the random moments, to repeat a run (printed at the start).
    #[arg(long)]
    seed: Option<u64>,
    /// Contacts writing in at the same time.
    #[arg(long, default_value_t = 8)]
    contacts: usize,
    /// Pause between two messages of one contact (±20 %).
    #[arg(long, default_value = "800ms", value_parser = telenet_kit::config::duration::parse)]
    webhook_every: Duration,
    /// Pause between two replies of the agent.
    #[arg(long, default_value = "400ms", value_parser = telenet_kit::config::duration::parse)]
    reply_every: Duration,
    /// Also write the table (Markdown) to this file.
    #[arg(long)]
    table: Option<PathBuf>,
    /// Where the run's temporary directory is made (default: the system's).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the run's directory (logs, data) even when the run passes; it
    /// is always kept when it fails.
    #[arg(long)]
    keep: bool,
}

/// What the phases act on.
pub struct Suite {
    pub journal: Arc<Journal>,
    pub postgres: Postgres,
    pub rabbit: Rabbit,
    pub redis: Redis,
    pub services: Vec<Service>,
}

impl Suite {
    pub fn service(&self, name: &str) -> anyhow::Result<&Service> {
        self.services
            .iter()
            .find(|s| s.name() == name)
            .with_context(|| format!("no service {name}"))
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if args.list {
        for fault in Fault::all() {
            println!("{:32} {}", fault.id(), fault.title());
        }
        return ExitCode::SUCCESS;
    }
    // On SIGINT or SIGTERM the run is dropped: every server and process it
    // started is stopped on the way out.
    let outcome = tokio::select! {
        outcome = run(args) => outcome,
        signal = interrupted() => Err(anyhow::anyhow!("stopped by {signal}")),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("fault-suite: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

fn chosen(only: &[String]) -> anyhow::Result<Vec<Fault>> {
    let all = Fault::all();
    if only.is_empty() {
        return Ok(all);
    }
    for name in only {
        if !all.iter().any(|f| f.id() == *name) {
            bail!("no fault {name:?} (see --list)");
        }
    }
    Ok(all
        .into_iter()
        .filter(|f| *f == Fault::Baseline || only.contains(&f.id()))
        .collect())
}

/// The processes' shared configuration (each adds `--service` and its
/// gRPC address).
fn config(
    root: &Path,
    suite: (&Postgres, &Rabbit, &Redis),
    grpc: &[(&str, u16)],
    webhook_port: u16,
    gateway_port: u16,
) -> String {
    let (postgres, rabbit, redis) = suite;
    let endpoint = |name: &str| {
        grpc.iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, port)| *port)
    };
    let mut toml = format!(
        r#"data_dir = "{data}"
database_url = "{database}"
bus_url = "{bus}"
presence_url = "{presence}"
metrics_listen = ""
seed = false

[endpoints]
"#,
        data = root.join("data").display(),
        database = postgres.url(),
        bus = rabbit.url(),
        presence = redis.url(),
    );
    for name in NAMES.iter().filter(|n| **n != "gateway") {
        toml.push_str(&format!(
            "{name} = \"http://127.0.0.1:{}\"\n",
            endpoint(name)
        ));
    }
    toml.push_str(&format!(
        r#"
# The suite's receiver listens on loopback: allowed as an on-premise one.
[ingress]
listen = "127.0.0.1:{webhook_port}"
public_url = "http://127.0.0.1:{webhook_port}"
private_receivers = ["127.0.0.1"]

[gateway]
listen = "127.0.0.1:{gateway_port}"

# Short attempt limits, so that the lease of a delivery whose process died
# mid-attempt (2 + 2 + 1 + 30 s) runs out within the bus's first retries.
[dispatch]
private_receivers = ["127.0.0.1"]
http_timeout = "2s"
directory_timeout = "2s"
voice_variant_wait = "1s"
"#
    ));
    toml
}

/// `telenet create-workspace`: the workspace's id and its owner's token.
async fn create_workspace(telenet: &Path, config: &Path) -> anyhow::Result<(String, String)> {
    let mut command = Command::new(telenet);
    command
        .arg("create-workspace")
        .arg("--config")
        .arg(config)
        .args(["--name", "Fault suite", "--owner-name", "Olga"])
        .args(["--owner-email", "olga@faults.example"]);
    let out = infra::run(command, "telenet create-workspace").await?;
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .map(str::to_owned)
            .with_context(|| format!("create-workspace printed no {name}: {out}"))
    };
    Ok((field("workspace")?, field("token")?))
}

/// Connect the custom channel that delivers to `receiver`.
async fn create_channel(api: &Api, receiver: &Receiver) -> anyhow::Result<Channel> {
    let body =
        serde_json::json!({"kind": "custom", "name": "Faults", "outbound_url": receiver.url()});
    let (status, channel) = api
        .call(reqwest::Method::POST, "/v1/channels", Some(body))
        .await
        .map_err(anyhow::Error::msg)?;
    if status != 201 {
        bail!("creating the channel: {status} {channel}");
    }
    let (Some(secret), Some(webhook_url)) =
        (channel["secret"].as_str(), channel["webhook_url"].as_str())
    else {
        bail!("channel without secret or webhook URL: {channel}");
    };
    receiver.set_secret(secret);
    Ok(Channel {
        webhook_url: webhook_url.to_owned(),
        secret: secret.to_owned(),
    })
}

/// Wait until every webhook accepted before `upto` is in a conversation
/// (or `within` passes), except those already `given_up` on; the ones
/// still missing, which join `given_up`.
async fn until_all_arrived(
    api: &Api,
    journal: &Journal,
    upto: f64,
    within: Duration,
    given_up: &mut std::collections::HashSet<String>,
) -> anyhow::Result<Vec<String>> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let conversations = observe::conversations_retrying(api, journal, within).await?;
        let present: std::collections::HashSet<&str> = conversations
            .iter()
            .flat_map(|c| c.messages.iter())
            .filter(|m| m.inbound)
            .map(|m| m.external_id.as_str())
            .collect();
        let (_, webhooks, _) = journal.snapshot();
        let missing: Vec<String> = webhooks
            .iter()
            .filter(|w| w.at < upto && !present.contains(w.external_id.as_str()))
            .filter(|w| !given_up.contains(&w.external_id))
            .map(|w| w.external_id.clone())
            .collect();
        if missing.is_empty() || tokio::time::Instant::now() > deadline {
            given_up.extend(missing.iter().cloned());
            return Ok(missing);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Wait until every stored reply is sent or failed (or `within` passes).
async fn until_replies_settled(
    api: &Api,
    journal: &Journal,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let conversations = observe::conversations_retrying(api, journal, within).await?;
        let settled: std::collections::HashSet<&str> = conversations
            .iter()
            .flat_map(|c| c.messages.iter())
            .filter(|m| !m.inbound && matches!(m.status.as_str(), "sent" | "failed"))
            .map(|m| m.id.as_str())
            .collect();
        let (_, _, replies) = journal.snapshot();
        let open = replies
            .iter()
            .filter(|r| !settled.contains(r.message_id.as_str()))
            .count();
        if open == 0 || tokio::time::Instant::now() > deadline {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let faults = chosen(&args.only)?;
    let seed = args.seed.unwrap_or_else(|| fastrand::u64(..));
    let mut rng = fastrand::Rng::with_seed(seed);
    let telenet = std::fs::canonicalize(&args.telenet)
        .with_context(|| format!("the telenet binary {}", args.telenet.display()))?;
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("telenet-faults-")
        .tempdir_in(&parent)?;
    let root = dir.path().to_owned();
    {
        use std::os::unix::fs::PermissionsExt as _;
        // PostgreSQL runs as its own user when we are root.
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))?;
    }
    println!("fault-suite: seed {seed}; run directory {}", root.display());
    let started = std::time::Instant::now();

    let (postgres, rabbit, redis) = tokio::try_join!(
        Postgres::start(&root),
        Rabbit::start(&root),
        Redis::start(&root)
    )?;
    println!(
        "fault-suite: PostgreSQL on {}, RabbitMQ on {}, Redis on {} ({:.1} s)",
        postgres.port,
        rabbit.port,
        redis.port,
        started.elapsed().as_secs_f64()
    );
    let grpc: Vec<(&str, u16)> = NAMES
        .iter()
        .map(|n| Ok((*n, free_port()?)))
        .collect::<anyhow::Result<_>>()?;
    let webhook_port = free_port()?;
    let gateway_port = free_port()?;
    let config_path = root.join("telenet.toml");
    std::fs::write(
        &config_path,
        config(
            &root,
            (&postgres, &rabbit, &redis),
            &grpc,
            webhook_port,
            gateway_port,
        ),
    )?;
    let logs = root.join("logs");
    std::fs::create_dir_all(&logs)?;

    let mut migrate = Command::new(&telenet);
    migrate.arg("migrate").arg("--config").arg(&config_path);
    infra::run(migrate, "telenet migrate").await?;

    let supervisors = CancellationToken::new();
    let _stop_supervisors = supervisors.clone().drop_guard();
    let services: Vec<Service> = grpc
        .iter()
        .map(|(name, port)| {
            Service::supervise(
                name,
                *port,
                &telenet,
                &config_path,
                &logs,
                supervisors.clone(),
            )
        })
        .collect();
    for service in &services {
        service.until_ready(Duration::from_secs(120)).await?;
    }
    println!(
        "fault-suite: {} services ready ({:.1} s); logs in {}",
        services.len(),
        started.elapsed().as_secs_f64(),
        logs.display()
    );

    let journal = Arc::new(Journal::new());
    let suite = Suite {
        journal: journal.clone(),
        postgres,
        rabbit,
        redis,
        services,
    };
    let (_workspace, token) = create_workspace(&telenet, &config_path).await?;
    let api = Api::new(format!("http://127.0.0.1:{gateway_port}"), token)?;
    let receiver = Receiver::start(journal.clone()).await?;
    let channel = create_channel(&api, &receiver).await?;

    let load = CancellationToken::new();
    let mut drivers = tokio::task::JoinSet::new();
    for contact in 1..=args.contacts {
        drivers.spawn(load::contact(
            journal.clone(),
            api.http.clone(),
            channel.clone(),
            contact,
            args.webhook_every,
            load.clone(),
        ));
    }
    drivers.spawn(load::agent(
        journal.clone(),
        api.clone(),
        args.reply_every,
        load.clone(),
    ));
    drivers.spawn(load::heartbeats(journal.clone(), api.clone(), load.clone()));

    let mut phases: Vec<Phase> = Vec::new();
    let mut given_up = std::collections::HashSet::new();
    for fault in faults {
        let phase = faults::run_phase(&suite, fault, &mut rng)
            .await
            .with_context(|| format!("phase {}", fault.title()))?;
        let missing = until_all_arrived(
            &api,
            &journal,
            phase.end,
            Duration::from_secs(60),
            &mut given_up,
        )
        .await?;
        println!(
            "fault-suite: {:42} struck at {:6.1} s, healed after {:4.1} s, checked at {:6.1} s: {}",
            fault.title(),
            phase.injected,
            phase.healed - phase.injected,
            journal.now(),
            if missing.is_empty() {
                "every accepted webhook is in a conversation".to_owned()
            } else {
                format!("{} accepted webhooks in no conversation", missing.len())
            }
        );
        phases.push(phase);
    }
    load.cancel();
    while drivers.join_next().await.is_some() {}
    let stopped = journal.now();
    // Each phase's window runs to the next one's start.
    let ends: Vec<f64> = phases
        .iter()
        .skip(1)
        .map(|p| p.start)
        .chain([stopped])
        .collect();
    for (phase, end) in phases.iter_mut().zip(ends) {
        phase.end = end;
    }

    until_all_arrived(
        &api,
        &journal,
        f64::INFINITY,
        Duration::from_secs(60),
        &mut given_up,
    )
    .await?;
    // Long enough for a delivery whose process died mid-attempt: its lease
    // (35 s with the settings above) runs out, then the bus's next retry.
    until_replies_settled(&api, &journal, Duration::from_secs(90)).await?;
    let conversations =
        observe::conversations_retrying(&api, &journal, Duration::from_secs(60)).await?;
    let deliveries = observe::deliveries(&suite.postgres.url()).await?;
    let posts = receiver.posts();
    let (requests, webhooks, replies) = journal.snapshot();
    let observed = report::Observed {
        requests: &requests,
        webhooks: &webhooks,
        replies: &replies,
        conversations: &conversations,
        posts: &posts,
        deliveries: &deliveries,
    };
    let (rows, mut findings) = report::evaluate(&phases, &observed);
    let notes = report::notes(&phases, &observed);
    for refusal in receiver.refused() {
        findings.push(format!("the receiver refused a request: {refusal}"));
    }
    // Nothing is given up on: a dead letter is an event never applied.
    let dead_letters = suite.rabbit.dead_letters().await.unwrap_or_default();
    findings.extend(observe::dead_letters(&suite.rabbit.url(), &dead_letters).await);
    // Reporting counts every conversation and message once.
    let held = observe::held(&conversations);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let reported = loop {
        let reported = observe::reported(&api).await;
        if reported.as_ref().is_ok_and(|r| *r == held) || tokio::time::Instant::now() > deadline {
            break reported;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    match reported {
        Ok(r) if r == held => {}
        Ok((opened, inbound, outbound)) => findings.push(format!(
            "reporting counted {opened} conversations, {inbound} messages in and {outbound} out; \
             the conversations hold {}, {} and {}",
            held.0, held.1, held.2
        )),
        Err(e) => findings.push(format!("reporting cannot be read: {e}")),
    }
    let table = report::table(&rows);
    println!();
    println!("{table}");
    for service in &suite.services {
        let crashes: Vec<String> = service
            .exits()
            .iter()
            .filter(|e| !e.killed)
            .map(|e| format!("{} at {:.1} s", e.status, journal.at(e.at)))
            .collect();
        if !crashes.is_empty() {
            println!(
                "{} ended on its own: {}",
                service.name(),
                crashes.join(", ")
            );
        }
    }
    for note in &notes {
        println!("{note}");
    }
    let passed = findings.is_empty() && rows.iter().all(|r| !r.failed());
    if !findings.is_empty() {
        println!("\nfindings ({}):", findings.len());
        for f in findings.iter().take(60) {
            println!("  {f}");
        }
        if findings.len() > 60 {
            println!("  … and {} more", findings.len() - 60);
        }
    }
    if let Some(path) = &args.table {
        std::fs::write(path, &table).with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "\nfault-suite: {} in {:.0} s (seed {seed})",
        if passed { "PASSED" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );

    supervisors.cancel();
    for service in &suite.services {
        service.kill_now();
    }
    drop(suite);
    if !passed || args.keep {
        let kept = dir.keep();
        println!("fault-suite: kept {}", kept.display());
    }
    Ok(passed)
}
