//! The command line of `telenet` and of the per-service binaries.
//!
//! - `telenet dev` — every service in one process on embedded defaults
//!   (SQLite in `.telenet/`, in-memory bus and presence); prints a token.
//! - `telenet serve --service <name>…` — chosen services, for production.
//! - `telenet migrate` — apply database migrations, declare the event bus
//!   topology (every consumer group's queues) and exit.
//! - `telenet dead-letters list|redrive|discard` — the event bus's dead
//!   letters, by group, workspace and event id.
//! - `telenet healthcheck` — ask a running process's gRPC health service
//!   whether it is serving (the container image's `HEALTHCHECK`).
//! - `telenet secrets status|reseal|generate-key` — channel secrets at rest:
//!   how many each key seals, re-sealing under the current key now, a new key.
//! - `telenet-<service>` — one service, same flags as `telenet serve`.

use std::path::PathBuf;

use crate::{Config, ServiceName, Suite};
use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "telenet", version, about = "TELENET business messaging inbox")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every service in one process on embedded defaults.
    Dev(DevArgs),
    /// Run the chosen services (default: all).
    Serve(ServeArgs),
    /// Apply the database migrations of the chosen services (default: all),
    /// declare the event bus topology (every service's consumer groups) and exit.
    Migrate(ServeArgs),
    /// The event bus's dead letters (docs/operations.md): list them, send
    /// them back to their group's queue, or discard them.
    #[command(subcommand)]
    DeadLetters(DeadLettersCommand),
    /// Create a workspace with its first owner through the conversations
    /// service (`endpoints.conversations`) and print the owner's token.
    CreateWorkspace(CreateWorkspaceArgs),
    /// Ask a TELENET process's gRPC health service whether it is serving:
    /// exit 0 if SERVING, 1 otherwise (with the reason on stderr).
    Healthcheck(HealthcheckArgs),
    /// Channel secrets at rest (docs/security.md): how many stored secrets
    /// each key of `ingress.encryption` seals, re-sealing them under the
    /// current key now, a new key.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Probe and transcode media files with the media service's own code
    /// (no server needed): what an operator runs on a customer's failing
    /// voice note.
    #[command(subcommand)]
    Media(telenet_audio::cli::Command),
}

#[derive(Args)]
pub struct CreateWorkspaceArgs {
    #[command(flatten)]
    common: Common,
    /// Workspace name.
    #[arg(long)]
    name: String,
    /// The first owner's name.
    #[arg(long)]
    owner_name: String,
    /// The first owner's e-mail.
    #[arg(long)]
    owner_email: String,
}

#[derive(Subcommand)]
enum SecretsCommand {
    /// How many stored channel secrets each key seals, which are left to
    /// re-seal and which keys nothing uses any more; exit 1 when some are
    /// sealed under a key the keyring lacks.
    Status(SecretsArgs),
    /// Re-seal now every channel secret not under the current key (what
    /// ingress does in the background after a rotation), then print the
    /// status.
    Reseal(SecretsArgs),
    /// Print a new random key (the base64 of 32 bytes) for
    /// `ingress.encryption.keys`.
    GenerateKey,
}

#[derive(Subcommand)]
enum DeadLettersCommand {
    /// Print dead letters (one JSON object a line), leaving them in place.
    List(DeadLettersArgs),
    /// Send dead letters back to their group's queue as first deliveries
    /// (attempts start again); other groups do not get them again.
    Redrive(DeadLettersArgs),
    /// Delete dead letters.
    Discard(DeadLettersArgs),
}

#[derive(Args)]
pub struct DeadLettersArgs {
    #[command(flatten)]
    common: Common,
    /// A consumer group (repeat for several); default: every group.
    #[arg(long = "group")]
    groups: Vec<String>,
    /// Only this workspace's dead letters.
    #[arg(long)]
    workspace: Option<String>,
    /// The dead letter of this event id (repeat for several).
    #[arg(long = "id")]
    ids: Vec<String>,
    /// Every dead letter the other options select (redrive and discard
    /// need either `--id` or `--all`).
    #[arg(long, conflicts_with = "ids")]
    all: bool,
    /// Most dead letters to list or act on.
    #[arg(long, default_value_t = telenet_store::dead_letters::DEFAULT_LIMIT)]
    limit: usize,
}

#[derive(Args)]
pub struct SecretsArgs {
    #[command(flatten)]
    common: Common,
}

#[derive(Args)]
pub struct HealthcheckArgs {
    /// gRPC address of the process to check; default: its plaintext health
    /// listener (`TELENET_GRPC_HEALTH_LISTEN`, on loopback) when it has one,
    /// else 127.0.0.1:50051.
    #[arg(long)]
    grpc: Option<String>,
    /// Health service name: empty for liveness, `telenet.<service>` for a
    /// service's readiness.
    #[arg(long, default_value = "")]
    service: String,
    /// Longest wait for the answer (e.g. `3s`, `500ms`).
    #[arg(long, default_value = "3s", value_parser = telenet_kit::config::duration::parse)]
    timeout: std::time::Duration,
}

/// Flags shared by every command; each overrides the configuration key named in its help.
#[derive(Args, Serialize, Default)]
pub struct Common {
    /// Optional TOML configuration file.
    #[arg(long, global = true)]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// `data_dir`: where SQLite databases, blobs and the dev token live.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// `database_url`: PostgreSQL URL instead of SQLite files.
    #[arg(long)]
    database_url: Option<String>,
    /// `bus_url`: `memory://`, `amqp://…` or `amqps://…`.
    #[arg(long)]
    bus_url: Option<String>,
    /// `presence_url`: `memory://`, `redis://…` or `rediss://…`.
    #[arg(long)]
    presence_url: Option<String>,
    /// `grpc_listen`: gRPC address of this process.
    #[arg(long)]
    grpc_listen: Option<String>,
    /// `metrics_listen`: address of `GET /metrics` (empty: none).
    #[arg(long)]
    metrics_listen: Option<String>,
    /// `ingress.listen`: webhook listener address.
    #[arg(long)]
    #[serde(rename = "ingress.listen")]
    webhook_listen: Option<String>,
    /// `ingress.public_url`: public base URL of the webhook listener.
    #[arg(long)]
    #[serde(rename = "ingress.public_url")]
    webhook_public_url: Option<String>,
    /// `gateway.listen`: REST gateway address.
    #[arg(long)]
    #[serde(rename = "gateway.listen")]
    gateway_listen: Option<String>,
    /// `log_format`: pretty or json.
    #[arg(long)]
    log_format: Option<String>,
}

#[derive(Args)]
pub struct DevArgs {
    #[command(flatten)]
    common: Common,
    /// Keep nothing: use a temporary data directory removed at exit.
    #[arg(long)]
    ephemeral: bool,
}

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    common: Common,
    /// A service to run (repeat for several); default all.
    #[arg(long = "service", value_enum)]
    services: Vec<ServiceName>,
}

/// `telenet …`
pub fn main() -> std::process::ExitCode {
    // In a build with the `failpoints` feature (the fault suite's), the
    // crash points named in the FAILPOINTS environment variable are armed,
    // e.g. `FAILPOINTS=ingress-after-publish=return`; other builds have none.
    #[cfg(feature = "failpoints")]
    let _crash_points = fail::FailScenario::setup();
    block_on(run(Cli::parse()))
}

/// A single service's binary: `telenet serve --service <service>` with the
/// remaining flags of the command line.
pub fn main_service(service: ServiceName) -> std::process::ExitCode {
    #[derive(Parser)]
    #[command(version, about = "One TELENET service (see `telenet serve --help`)")]
    struct One {
        #[command(flatten)]
        common: Common,
    }
    let one = One::parse();
    #[cfg(feature = "failpoints")]
    let _crash_points = fail::FailScenario::setup();
    block_on(run(Cli {
        command: Command::Serve(ServeArgs {
            common: one.common,
            services: vec![service],
        }),
    }))
}

fn block_on(work: impl std::future::Future<Output = anyhow::Result<()>>) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if e.is::<Logged>() => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Stands for an error already written to the log: once logging is set up,
/// a fatal error goes there (as JSON when logs are JSON, so a log collector
/// reads it like any other line) and is not printed again.
#[derive(Debug)]
struct Logged;

impl std::fmt::Display for Logged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("error logged")
    }
}

impl std::error::Error for Logged {}

fn logged(error: anyhow::Error) -> anyhow::Error {
    tracing::error!(error = format!("{error:#}"), "telenet stopped");
    anyhow::Error::new(Logged)
}

/// `telenet healthcheck`: one gRPC health check, bounded by the timeout.
async fn healthcheck(args: HealthcheckArgs) -> anyhow::Result<()> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let client_config = telenet_kit::grpc::ClientConfig {
        connect_timeout: args.timeout,
        request_timeout: args.timeout,
        ..Default::default()
    };
    let grpc = match args.grpc {
        Some(grpc) => grpc,
        None => health_address(std::env::var("TELENET_GRPC_HEALTH_LISTEN").ok().as_deref()),
    };
    let channel = telenet_kit::grpc::channel(&grpc, &client_config)?;
    let mut client = HealthClient::new(channel);
    let request = client.check(HealthCheckRequest {
        service: args.service.clone(),
    });
    let what = if args.service.is_empty() {
        format!("{grpc} (liveness)")
    } else {
        format!("{grpc} service {:?}", args.service)
    };
    let answer = tokio::time::timeout(args.timeout, request)
        .await
        .map_err(|_| anyhow::anyhow!("{what}: no answer within {:?}", args.timeout))?
        .map_err(|s| anyhow::anyhow!("{what}: {}: {}", s.code(), s.message()))?;
    match answer.into_inner().status() {
        ServingStatus::Serving => Ok(()),
        other => anyhow::bail!("{what} is {}", other.as_str_name()),
    }
}

/// Where `telenet healthcheck` asks by default: the plaintext health
/// listener when the process has one (reached on loopback when it binds
/// every address), else the usual gRPC port.
fn health_address(health_listen: Option<&str>) -> String {
    let Some(listen) = health_listen.map(str::trim).filter(|l| !l.is_empty()) else {
        return "127.0.0.1:50051".to_owned();
    };
    match listen.parse::<std::net::SocketAddr>() {
        Ok(addr) if addr.ip().is_unspecified() => format!("127.0.0.1:{}", addr.port()),
        _ => listen.to_owned(),
    }
}

fn load(common: &Common) -> anyhow::Result<Config> {
    Ok(telenet_kit::config::load(common.config.as_deref(), common)?)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Healthcheck(args) => healthcheck(args).await,
        Command::Media(command) => telenet_audio::cli::run(command),
        Command::Secrets(command) => secrets(command).await,
        Command::DeadLetters(command) => dead_letters(command).await,
        Command::Dev(args) => {
            let mut config = load(&args.common)?.allowing_loopback_receivers();
            let temp = if args.ephemeral {
                let dir = tempfile::tempdir().context("creating a temporary data directory")?;
                config.data_dir = dir.path().to_owned();
                Some(dir)
            } else {
                None
            };
            let _telemetry = telenet_kit::telemetry::init(
                "telenet-dev",
                config.log_format,
                "info,opentelemetry=warn",
            )?;
            let result = serve(config, ServiceName::ALL.to_vec(), true).await;
            drop(temp);
            result.map_err(logged)
        }
        Command::Serve(args) => {
            let mut config = load(&args.common)?;
            config.seed = false;
            let _telemetry = telenet_kit::telemetry::init(
                "telenet",
                config.log_format,
                "info,opentelemetry=warn",
            )?;
            let services = if args.services.is_empty() {
                ServiceName::ALL.to_vec()
            } else {
                args.services
            };
            serve(config, services, false).await.map_err(logged)
        }
        Command::CreateWorkspace(args) => {
            let config = load(&args.common)?;
            // CreateWorkspace is reserved to TELENET's services: run it
            // where a service's certificate is (`kubectl exec` into a pod).
            let tls = telenet_kit::tls::Tls::from_config(
                &config.grpc_tls,
                telenet_kit::tls::ClientCerts::Required,
            )?;
            let channel = telenet_kit::grpc::channel_with(
                &config.endpoints.conversations,
                &config.grpc_client,
                tls.as_ref(),
            )?;
            let created =
                telenet_proto::conversations::v1::members_client::MembersClient::new(channel)
                    .create_workspace(telenet_proto::conversations::v1::CreateWorkspaceRequest {
                        name: args.name,
                        owner_name: args.owner_name,
                        owner_email: args.owner_email,
                    })
                    .await
                    .map_err(|s| {
                        anyhow::anyhow!("creating the workspace: {}: {}", s.code(), s.message())
                    })?
                    .into_inner();
            println!(
                "workspace: {}",
                created.workspace.map(|w| w.id).unwrap_or_default()
            );
            println!(
                "owner: {}",
                created.owner.map(|o| o.user_id).unwrap_or_default()
            );
            println!("token: {}", created.token);
            Ok(())
        }
        Command::Migrate(args) => {
            let config = load(&args.common)?;
            let _telemetry = telenet_kit::telemetry::init(
                "telenet",
                config.log_format,
                "info,opentelemetry=warn",
            )?;
            let services = if args.services.is_empty() {
                ServiceName::ALL.to_vec()
            } else {
                args.services
            };
            Suite::new(config, services)
                .migrate()
                .await
                .map_err(logged)?;
            println!("migrations applied, event bus topology declared");
            Ok(())
        }
    }
}

/// `telenet dead-letters …`, on the bus of the configuration (`bus_url`,
/// `bus_prefix`), after declaring the topology (idempotent) so every group
/// is known.
async fn dead_letters(command: DeadLettersCommand) -> anyhow::Result<()> {
    use telenet_store::dead_letters::{self as dl, Action, Selection};
    let (args, action) = match command {
        DeadLettersCommand::List(args) => (args, None),
        DeadLettersCommand::Redrive(args) => (args, Some(Action::Redrive)),
        DeadLettersCommand::Discard(args) => (args, Some(Action::Discard)),
    };
    if action.is_some() && args.ids.is_empty() && !args.all {
        anyhow::bail!("name the dead letters with --id, or pass --all for every one selected");
    }
    let config = load(&args.common)?;
    if config.bus_url.starts_with("memory:") {
        anyhow::bail!(
            "bus_url is {}: an in-memory bus lives inside its server process; \
             its dead letters are reached through the gateway (GET /v1/dead-letters)",
            config.bus_url
        );
    }
    let _telemetry =
        telenet_kit::telemetry::init("telenet", config.log_format, "warn,opentelemetry=warn")?;
    let bus = Suite::new(config, ServiceName::ALL).bus().await?;
    crate::suite::declare_topology(&bus).await?;
    let selection = Selection {
        workspace_id: args.workspace.filter(|w| !w.trim().is_empty()),
        groups: args.groups,
        event_ids: args.ids,
    };
    let limit = args.limit.min(dl::MAX_LIMIT);
    let (found, verb) = match action {
        None => (dl::list(&bus, &selection, limit).await?, "listed"),
        Some(Action::Redrive) => (
            dl::act(&bus, &selection, Action::Redrive, limit).await?,
            "redriven",
        ),
        Some(Action::Discard) => (
            dl::act(&bus, &selection, Action::Discard, limit).await?,
            "discarded",
        ),
    };
    for dead in &found {
        let line = serde_json::json!({
            "group": dead.group,
            "event_id": dead.event_id,
            "routing_key": dead.routing_key,
            "workspace_id": dead.workspace_id,
            "attempts": dead.attempts,
            "reason": dead.reason,
            "headers": dead.headers,
        });
        println!("{line}");
    }
    eprintln!("{verb} {}", found.len());
    Ok(())
}

/// `telenet secrets …`, on the ingress database and keyring of the
/// configuration (the dev server's local key when no keys are set).
async fn secrets(command: SecretsCommand) -> anyhow::Result<()> {
    use telenet_ingress::secrets;
    let (args, reseal) = match command {
        SecretsCommand::GenerateKey => {
            let key = telenet_signing::sealing::generate_key()
                .map_err(|e| anyhow::anyhow!("no randomness for a key: {e}"))?;
            println!("{key}");
            return Ok(());
        }
        SecretsCommand::Status(args) => (args, false),
        SecretsCommand::Reseal(args) => (args, true),
    };
    let config = load(&args.common)?;
    let encryption = &config.ingress.encryption;
    let keyring = if reseal {
        secrets::keyring(encryption, &config.data_dir)
    } else {
        secrets::existing_keyring(encryption, &config.data_dir)
    }
    .context("the keyring of ingress.encryption")?;
    let url = config.database_url_of(ServiceName::Ingress);
    let db = telenet_store::Db::connect_with_tls(
        &url,
        ServiceName::Ingress.as_str(),
        &config.database_tls,
    )
    .await
    .context("ingress database")?;
    let secrets = telenet_ingress::Secrets::new(
        db.clone(),
        std::sync::Arc::new(keyring),
        encryption.reseal_batch,
    );
    if reseal {
        db.migrate(&telenet_ingress::MIGRATIONS)
            .await
            .context("migrating the ingress database")?;
        let done = secrets.reseal(&CancellationToken::new()).await?;
        println!(
            "re-sealed {}, changed meanwhile {}, unreadable {}",
            done.resealed, done.skipped, done.unreadable
        );
    }
    let status = secrets
        .status()
        .await
        .context("reading the ingress database (is it migrated? `telenet migrate`)")?;
    print!("{status}");
    db.close().await;
    if status.missing() > 0 {
        anyhow::bail!(
            "{} channel secrets are sealed under keys not in ingress.encryption.keys",
            status.missing()
        );
    }
    Ok(())
}

async fn serve(config: Config, services: Vec<ServiceName>, dev: bool) -> anyhow::Result<()> {
    config.check_grpc_transport(dev)?;
    let token = CancellationToken::new();
    telenet_kit::shutdown::on_signal(token.clone());
    let data_dir = config.data_dir.clone();
    let running = Suite::new(config, services).start(token.clone()).await?;
    if dev {
        println!("TELENET dev server");
        println!("data: {}", data_dir.display());
        println!("grpc: {}", running.grpc_addr);
        if let Some(a) = running.webhook_addr {
            println!("webhooks: http://{a}/webhooks/{{channel_id}}");
        }
        if let Some(a) = running.gateway_addr {
            println!("gateway: http://{a}");
        }
        if let Some(a) = running.metrics_addr {
            println!("metrics: http://{a}/metrics");
        }
        if let Some(seed) = &running.seed {
            println!("workspace: {}", seed.workspace_id);
            println!("token: {}", seed.token);
        }
    }
    token.cancelled().await;
    tracing::info!("shutting down");
    running.wait().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn healthcheck_asks_the_health_listener_when_there_is_one() {
        assert_eq!(super::health_address(None), "127.0.0.1:50051");
        assert_eq!(super::health_address(Some("")), "127.0.0.1:50051");
        assert_eq!(
            super::health_address(Some("0.0.0.0:50052")),
            "127.0.0.1:50052"
        );
        assert_eq!(
            super::health_address(Some("127.0.0.1:7000")),
            "127.0.0.1:7000"
        );
    }
}
