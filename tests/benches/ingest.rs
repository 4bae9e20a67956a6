//! End-to-end ingest benchmark: signed webhooks in, messages persisted in
//! conversations — on embedded defaults (SQLite, in-memory bus) and on real
//! PostgreSQL + RabbitMQ + Redis — and, in the same run, the ceilings of the
//! parts on this machine (RabbitMQ publishes with confirms through our own
//! bus, single-row and batched commits through our own `Db`), so that ingest
//! is read as a ratio of the slower part. That ratio is the figure we steer by.
//!
//! ```text
//! cargo bench -p telenet-tests --bench ingest            # both
//! cargo bench -p telenet-tests --bench ingest -- real    # only one of them
//! ```
//!
//! Environment: `TELENET_BENCH_MESSAGES` (webhooks per run, 20000),
//! `TELENET_BENCH_CLIENTS` (concurrent HTTP clients, 64),
//! `TELENET_BENCH_SENDERS` (distinct contacts, 1000), and the
//! `TELENET_TEST_*` URLs the end-to-end tests use. What each figure means is
//! in `docs/benchmarks.md`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use telenet::{Config, ServiceName};
use telenet_bus::rabbitmq::RabbitBus;
use telenet_bus::{Event, EventBus, SharedBus, SubscribeSpec};
use telenet_proto::common::v1::ChannelKind;
use telenet_proto::events::v1::event_envelope::Payload;
use telenet_proto::events::v1::{InboundMessageReceived, Sender};
use telenet_proto::ingress::v1::CreateChannelRequest;
use telenet_proto::ingress::v1::channels_client::ChannelsClient;
use telenet_signing::Secret;
use telenet_store::sqlx::{self, Row as _};
use telenet_store::{Db, events, testing};
use telenet_tests::{inbound_text, world};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// How often the persisted count is polled.
const POLL: Duration = Duration::from_millis(50);
/// No new persisted message for this long after sending ended: a stall.
const STALL: Duration = Duration::from_secs(30);
/// Tasks writing rows in the commit ceilings (as pgbench `-c 8` in perf.md).
const COMMIT_TASKS: usize = 8;
/// Rows per INSERT in the batched ceiling.
const BATCH_ROWS: usize = 100;
/// Publishing tasks and events per publish in the batched RabbitMQ ceilings.
const PUBLISH_TASKS: usize = 4;
const PUBLISH_BATCH: usize = 100;

struct Settings {
    messages: usize,
    clients: usize,
    senders: usize,
    embedded: bool,
    real: bool,
}

impl Settings {
    fn from_env() -> Self {
        let num = |name: &str, default: usize| match std::env::var(name) {
            Ok(v) => match v.trim().parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => panic!("{name}={v:?} is not a positive number"),
            },
            Err(_) => default,
        };
        // `cargo bench` passes `--bench`; other words select what to run.
        let words: Vec<String> = std::env::args()
            .skip(1)
            .filter(|a| !a.starts_with('-'))
            .collect();
        let wants = |w: &str| words.is_empty() || words.iter().any(|x| x == w);
        Self {
            messages: num("TELENET_BENCH_MESSAGES", 20_000),
            clients: num("TELENET_BENCH_CLIENTS", 64),
            senders: num("TELENET_BENCH_SENDERS", 1_000),
            embedded: wants("embedded"),
            real: wants("real"),
        }
    }
}

#[tokio::main]
async fn main() {
    install_log_counter();
    sqlx::any::install_default_drivers();
    let s = Settings::from_env();
    println!("TELENET end-to-end ingest benchmark");
    println!("{}", machine());
    println!(
        "settings: {} webhooks per run, {} concurrent HTTP clients, {} distinct senders",
        s.messages, s.clients, s.senders
    );
    let mut summary = Vec::new();

    if s.embedded {
        println!();
        println!("== embedded defaults: SQLite files, in-memory bus and presence ==");
        let dir = tempfile::tempdir().expect("tempdir");
        let ceiling_url = testing::sqlite_in(dir.path(), "ceiling");
        let (single, cpu) = with_cpu(commit_ceiling(&ceiling_url, s.messages, 1)).await;
        line(
            "SQLite single-row commits, 8 tasks, our Db",
            single,
            "rows/s",
            &cpu,
        );
        let (batched, cpu) =
            with_cpu(commit_ceiling(&ceiling_url, s.messages * 10, BATCH_ROWS)).await;
        line(
            "SQLite 100-row INSERTs, 8 tasks, our Db",
            batched,
            "rows/s",
            &cpu,
        );
        let run_dir = dir.path().join("suite");
        let r = ingest(world::embedded(&run_dir), &s).await;
        r.print();
        let ratio = r.persisted_per_s() / single;
        println!(
            "RATIO    persisted msgs/s / SQLite single-row ceiling = {:.0} / {:.0} = {:.3}",
            r.persisted_per_s(),
            single,
            ratio
        );
        summary.push(format!(
            "| embedded | {:.0} | {:.1} / {:.1} / {:.1} | {:.0} | {} | SQLite 1-row {:.0} (100-row {:.0}) | **{:.3}** |",
            r.accepted_per_s(),
            r.latency.p50,
            r.latency.p99,
            r.latency.max,
            r.persisted_per_s(),
            r.check_word(),
            single,
            batched,
            ratio
        ));
    }

    if s.real {
        println!();
        println!("== real infrastructure: PostgreSQL, RabbitMQ, Redis on this machine ==");
        if let Some(down) = infrastructure_down().await {
            println!("SKIPPED  {down} does not answer (scripts/services.sh ensure starts it)");
        } else {
            println!("{}", versions().await);
            let db_url = testing::fresh_postgres().await;
            let (single, cpu) = with_cpu(commit_ceiling(&db_url, s.messages, 1)).await;
            line(
                "PostgreSQL single-row commits, 8 tasks, our Db",
                single,
                "rows/s",
                &cpu,
            );
            let (batched, cpu) =
                with_cpu(commit_ceiling(&db_url, s.messages * 10, BATCH_ROWS)).await;
            line(
                "PostgreSQL 100-row INSERTs, 8 tasks, our Db",
                batched,
                "rows/s",
                &cpu,
            );
            drop_database(&db_url).await;
            let rabbit = rabbit_ceilings(&world::amqp_url(), s.messages).await;
            line(
                "RabbitMQ publish+confirm, 4 tasks x 100/publish",
                rabbit.publish_batched.0,
                "msgs/s",
                &rabbit.publish_batched.1,
            );
            line(
                "RabbitMQ publish+confirm, 64 tasks x 1/publish",
                rabbit.publish_single.0,
                "msgs/s",
                &rabbit.publish_single.1,
            );
            line(
                "RabbitMQ end to end: publish+confirm, consume+ack",
                rabbit.end_to_end.0,
                "msgs/s",
                &rabbit.end_to_end.1,
            );
            let run_dir = tempfile::tempdir().expect("tempdir");
            let config = world::real(run_dir.path()).await;
            let r = ingest(config, &s).await;
            r.print();
            let slower = rabbit.end_to_end.0.min(single);
            let which = if rabbit.end_to_end.0 < single {
                "RabbitMQ end to end"
            } else {
                "PostgreSQL single-row"
            };
            let ratio = r.persisted_per_s() / slower;
            println!(
                "RATIO    persisted msgs/s / min(RabbitMQ e2e, PostgreSQL single-row) = {:.0} / {:.0} ({which}) = {:.3}",
                r.persisted_per_s(),
                slower,
                ratio
            );
            summary.push(format!(
                "| real | {:.0} | {:.1} / {:.1} / {:.1} | {:.0} | {} | PG 1-row {:.0} (100-row {:.0}); RabbitMQ e2e {:.0} (publish 4x100 {:.0}, 64x1 {:.0}) | **{:.3}** |",
                r.accepted_per_s(),
                r.latency.p50,
                r.latency.p99,
                r.latency.max,
                r.persisted_per_s(),
                r.check_word(),
                single,
                batched,
                rabbit.end_to_end.0,
                rabbit.publish_batched.0,
                rabbit.publish_single.0,
                ratio
            ));
        }
    }

    println!();
    println!(
        "summary (accepted/s | webhook p50/p99/max ms | persisted/s | exact | ceilings /s | ratio):"
    );
    for row in &summary {
        println!("{row}");
    }
}

fn line(what: &str, value: f64, unit: &str, cpu: &CpuUse) {
    println!(
        "ceiling  {what:<52} {value:>9.0} {unit}  (cores: {})",
        cpu.short()
    );
}

/// Run `work` and report the CPU the machine spent meanwhile.
async fn with_cpu<T>(work: impl std::future::Future<Output = T>) -> (T, CpuUse) {
    let before = cpu_snapshot();
    let value = work.await;
    (value, cpu_snapshot().since(&before))
}

// ---------------------------------------------------------------------------
// The ingest run

/// What happened to one webhook.
#[derive(Debug)]
enum Outcome {
    Accepted,
    Duplicate,
    Refused(String),
}

struct Sent {
    index: usize,
    /// Unix microseconds when the request started (compared with the
    /// message row's `created_at`, same clock).
    started_us: i64,
    latency_us: u64,
    outcome: Outcome,
}

#[derive(Default, Clone, Copy)]
struct Percentiles {
    p50: f64,
    p99: f64,
    max: f64,
}

/// Percentiles in milliseconds of microsecond samples.
fn percentiles(mut us: Vec<u64>) -> Percentiles {
    if us.is_empty() {
        return Percentiles::default();
    }
    us.sort_unstable();
    let at = |q: f64| {
        let rank = ((q * us.len() as f64).ceil() as usize).clamp(1, us.len());
        us[rank - 1] as f64 / 1000.0
    };
    Percentiles {
        p50: at(0.50),
        p99: at(0.99),
        max: at(1.0),
    }
}

struct Ingest {
    sent: usize,
    accepted: usize,
    duplicates: usize,
    refused: BTreeMap<String, usize>,
    send_secs: f64,
    latency: Percentiles,
    /// Seconds from the first request until every accepted message was
    /// persisted; `None` when it stalled.
    persist_secs: Option<f64>,
    persisted_when_sending_ended: usize,
    persisted: usize,
    to_row: Percentiles,
    rows: usize,
    distinct: usize,
    lost: usize,
    unexpected: usize,
    conversations: usize,
    expected_conversations: usize,
    cpu: CpuUse,
    /// PostgreSQL work per message over the suite's life (real infrastructure).
    pg: Option<PgWork>,
    logs: Vec<String>,
}

/// What PostgreSQL did for the suite's database, per message.
struct PgWork {
    messages: usize,
    transactions: f64,
    rollbacks: f64,
    inserted: f64,
    updated: f64,
    deleted: f64,
}

impl Ingest {
    fn accepted_per_s(&self) -> f64 {
        self.accepted as f64 / self.send_secs
    }

    fn persisted_per_s(&self) -> f64 {
        match self.persist_secs {
            Some(t) => self.accepted as f64 / t,
            None => 0.0,
        }
    }

    fn exact(&self) -> bool {
        self.persist_secs.is_some()
            && self.accepted == self.sent
            && self.lost == 0
            && self.unexpected == 0
            && self.rows == self.distinct
            && self.conversations == self.expected_conversations
    }

    fn check_word(&self) -> &'static str {
        if self.exact() { "yes" } else { "NO" }
    }

    fn print(&self) {
        println!(
            "ingest   {:<52} {:>9.0} /s  ({} of {} accepted in {:.2} s)",
            "webhooks accepted",
            self.accepted_per_s(),
            self.accepted,
            self.sent,
            self.send_secs
        );
        if self.duplicates > 0 || !self.refused.is_empty() {
            println!(
                "         NOT ACCEPTED: {} answered duplicate; refused: {:?}",
                self.duplicates, self.refused
            );
        }
        println!(
            "         {:<52} {:.1} / {:.1} / {:.1} ms",
            "webhook latency p50 / p99 / max", self.latency.p50, self.latency.p99, self.latency.max
        );
        match self.persist_secs {
            Some(t) => println!(
                "         {:<52} {:>9.0} /s  ({} in {:.2} s; {} persisted when sending ended)",
                "messages persisted in conversations",
                self.persisted_per_s(),
                self.accepted,
                t,
                self.persisted_when_sending_ended
            ),
            None => println!(
                "         STALLED: {} of {} accepted messages persisted; none more for {:?}",
                self.persisted, self.accepted, STALL
            ),
        }
        println!(
            "         {:<52} {:.1} / {:.1} / {:.1} ms",
            "webhook sent -> message row, p50 / p99 / max",
            self.to_row.p50,
            self.to_row.p99,
            self.to_row.max
        );
        println!(
            "         check: {} rows, {} distinct, lost {}, not accepted but stored {}, conversations {} of {} expected -> {}",
            self.rows,
            self.distinct,
            self.lost,
            self.unexpected,
            self.conversations,
            self.expected_conversations,
            if self.exact() { "exact" } else { "NOT EXACT" }
        );
        println!("         {}", self.cpu);
        println!(
            "         CPU per persisted message: {}",
            self.cpu.per_item(self.accepted)
        );
        if self.cpu.others() > 0.2 {
            println!(
                "         NOISE: other processes used {:.2} cores on average during this run",
                self.cpu.others()
            );
        }
        if let Some(pg) = &self.pg {
            println!(
                "         PostgreSQL per message ({} messages incl. warm-up, all services): {:.1} transactions ({:.2} rolled back), rows {:.1} inserted, {:.1} updated, {:.1} deleted",
                pg.messages, pg.transactions, pg.rollbacks, pg.inserted, pg.updated, pg.deleted
            );
        }
        if self.logs.is_empty() {
            println!("         logs: no warnings or errors");
        } else {
            println!("         logs (warnings and errors during the run):");
            for l in &self.logs {
                println!("           {l}");
            }
        }
    }
}

async fn ingest(mut config: Config, s: &Settings) -> Ingest {
    // The bench sends every webhook to one channel as fast as it can: the
    // per-channel limit would measure itself, not ingest.
    config.ingress.rate_limits.enabled = false;
    config.gateway.rate_limits.enabled = false;
    OBSERVER_QUERIES.store(0, Ordering::SeqCst);
    let conversations_url = config.database_url_of(ServiceName::Conversations);
    let real = (!config.database_url.is_empty())
        .then(|| (config.database_url.clone(), config.bus_prefix.clone()));
    let (running, _token) = world::start(config, &ServiceName::ALL).await;
    let grpc = telenet_kit::grpc::channel(
        &format!("http://{}", running.grpc_addr),
        &Default::default(),
    )
    .expect("grpc channel");
    let workspace = running.seed.as_ref().expect("seeded").workspace_id.clone();
    let created = ChannelsClient::new(grpc)
        .create_channel(CreateChannelRequest {
            workspace_id: workspace.clone(),
            kind: ChannelKind::Custom as i32,
            name: "Bench".into(),
            outbound_url: "http://127.0.0.1:9/outbound".into(),
            secret: String::new(),
            accepted_voice_types: vec![],
        })
        .await
        .expect("create channel")
        .into_inner();
    let webhook_url: Arc<str> = created.channel.expect("channel").webhook_url.into();
    let secret = Arc::new(Secret::parse(&created.secret).expect("channel secret"));
    // The benchmark's own read-only view of the conversations tables.
    let observer = Db::connect(&conversations_url, "conversations")
        .await
        .expect("observer connection");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(s.clients)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client");
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();

    // Warm up (connections, caches, first conversation) outside the measurement.
    let warm = (s.messages / 50).clamp(20, 400);
    let warmed = send_all(
        &http,
        &webhook_url,
        &secret,
        &format!("{run}w"),
        warm,
        s.clients.min(warm),
        warm,
    )
    .await;
    let warm_ok = warmed
        .iter()
        .filter(|x| matches!(x.outcome, Outcome::Accepted))
        .count();
    let deadline = Instant::now() + Duration::from_secs(60);
    while persisted(&observer, &workspace).await < warm_ok && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
    let base = persisted(&observer, &workspace).await;
    reset_logs();

    // The measurement: senders and the persisted-count poller run together.
    let target = Arc::new(AtomicUsize::new(usize::MAX));
    let cpu_before = cpu_snapshot();
    let t0 = Instant::now();
    let poller = {
        let observer = observer.clone();
        let workspace = workspace.clone();
        let target = target.clone();
        tokio::spawn(async move {
            let mut last = 0usize;
            let mut last_change = Instant::now();
            loop {
                let now = persisted(&observer, &workspace).await.saturating_sub(base);
                if now != last {
                    last = now;
                    last_change = Instant::now();
                }
                let want = target.load(Ordering::SeqCst);
                if now >= want {
                    return (now, Some(t0.elapsed()));
                }
                if want != usize::MAX && last_change.elapsed() > STALL {
                    return (now, None);
                }
                tokio::time::sleep(POLL).await;
            }
        })
    };
    let sent = send_all(
        &http,
        &webhook_url,
        &secret,
        &run,
        s.messages,
        s.clients,
        s.senders,
    )
    .await;
    let send_secs = t0.elapsed().as_secs_f64();
    let persisted_when_sending_ended = persisted(&observer, &workspace).await.saturating_sub(base);
    let accepted: BTreeSet<usize> = sent
        .iter()
        .filter(|x| matches!(x.outcome, Outcome::Accepted))
        .map(|x| x.index)
        .collect();
    target.store(accepted.len(), Ordering::SeqCst);
    let (persisted_count, persist_time) = poller.await.expect("poller");
    let cpu = cpu_snapshot().since(&cpu_before);

    // Exactness: wait a moment for late duplicates, then look at the rows.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let prefix = format!("{run}-m");
    let rows = sqlx::query(
        "SELECT external_id, created_at FROM messages WHERE workspace_id = $1 AND external_id LIKE $2",
    )
    .bind(&workspace)
    .bind(format!("{prefix}%"))
    .fetch_all(observer.pool())
    .await
    .expect("read message rows");
    let mut created: HashMap<usize, i64> = HashMap::new();
    let mut row_count = 0;
    for row in &rows {
        let ext: String = row.try_get("external_id").expect("external_id");
        let at: i64 = row.try_get("created_at").expect("created_at");
        if let Some(i) = ext
            .strip_prefix(&prefix)
            .and_then(|n| n.parse::<usize>().ok())
        {
            row_count += 1;
            created.entry(i).or_insert(at);
        }
    }
    let stored: BTreeSet<usize> = created.keys().copied().collect();
    let conversations: i64 = sqlx::query(
        "SELECT COUNT(*) FROM conversations WHERE workspace_id = $1 AND contact_external_id LIKE $2",
    )
    .bind(&workspace)
    .bind(format!("{run}-c%"))
    .fetch_one(observer.pool())
    .await
    .expect("count conversations")
    .try_get(0)
    .expect("count");
    let to_row: Vec<u64> = sent
        .iter()
        .filter_map(|x| {
            let at = created.get(&x.index)?;
            Some(u64::try_from(at - x.started_us).unwrap_or(0))
        })
        .collect();
    let mut refused = BTreeMap::new();
    for x in &sent {
        if let Outcome::Refused(why) = &x.outcome {
            *refused.entry(why.clone()).or_insert(0) += 1;
        }
    }
    let mut result = Ingest {
        sent: sent.len(),
        accepted: accepted.len(),
        duplicates: sent
            .iter()
            .filter(|x| matches!(x.outcome, Outcome::Duplicate))
            .count(),
        refused,
        send_secs,
        latency: percentiles(sent.iter().map(|x| x.latency_us).collect()),
        persist_secs: persist_time.map(|d| d.as_secs_f64()),
        persisted_when_sending_ended,
        persisted: persisted_count,
        to_row: percentiles(to_row),
        rows: row_count,
        distinct: stored.len(),
        lost: accepted.difference(&stored).count(),
        unexpected: stored.difference(&accepted).count(),
        conversations: usize::try_from(conversations).unwrap_or(0),
        expected_conversations: s.senders.min(s.messages),
        cpu,
        pg: None,
        logs: take_logs(),
    };
    let messages_total = warm_ok + accepted.len();

    observer.close().await;
    if tokio::time::timeout(Duration::from_secs(30), running.shutdown())
        .await
        .is_err()
    {
        println!("WARNING  the suite did not shut down within 30 s");
    }
    if let Some((database_url, bus_prefix)) = real {
        delete_suite_queues(&bus_prefix).await;
        // Closed connections have flushed their statistics.
        tokio::time::sleep(Duration::from_millis(500)).await;
        result.pg = pg_work(&database_url, messages_total).await;
        drop_database(&database_url).await;
    }
    result
}

/// Queries the benchmark made itself on the suite's database (to subtract).
static OBSERVER_QUERIES: AtomicUsize = AtomicUsize::new(0);

/// PostgreSQL's counters for the suite's database, per message.
async fn pg_work(url: &str, messages: usize) -> Option<PgWork> {
    use sqlx::ConnectOptions as _;
    let opts: sqlx::any::AnyConnectOptions = url.parse().ok()?;
    let mut conn = opts.connect().await.ok()?;
    let row = sqlx::query(
        "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted \
         FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(&mut conn)
    .await
    .ok()?;
    let get = |i: usize| row.try_get::<i64, _>(i).ok().map(|v| v as f64);
    let own = OBSERVER_QUERIES.swap(0, Ordering::SeqCst) as f64;
    let per = |v: f64| v / messages.max(1) as f64;
    Some(PgWork {
        messages,
        transactions: per(get(0)? - own),
        rollbacks: per(get(1)?),
        inserted: per(get(2)?),
        updated: per(get(3)?),
        deleted: per(get(4)?),
    })
}

/// Sum of `message_count` over the workspace's conversations: kept in the
/// same transaction as the message row, and cheap to read (one row per
/// conversation rather than per message).
async fn persisted(observer: &Db, workspace: &str) -> usize {
    OBSERVER_QUERIES.fetch_add(1, Ordering::Relaxed);
    let n: i64 = sqlx::query(
        "SELECT CAST(COALESCE(SUM(message_count), 0) AS BIGINT) FROM conversations WHERE workspace_id = $1",
    )
    .bind(workspace)
    .fetch_one(observer.pool())
    .await
    .expect("count persisted messages")
    .try_get(0)
    .expect("count");
    usize::try_from(n).unwrap_or(0)
}

/// Send `count` signed webhooks from `clients` concurrent tasks; message `i`
/// comes from sender `i % senders`, so conversations are opened and continued.
async fn send_all(
    http: &reqwest::Client,
    url: &Arc<str>,
    secret: &Arc<Secret>,
    run: &str,
    count: usize,
    clients: usize,
    senders: usize,
) -> Vec<Sent> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (http, url, secret, next) = (http.clone(), url.clone(), secret.clone(), next.clone());
        let run = run.to_owned();
        workers.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return out;
                }
                let sender = format!("{run}-c{:05}", i % senders);
                let body = inbound_text(
                    &format!("{run}-m{i}"),
                    &sender,
                    &format!(
                        "Hola, soy {sender}. ¿Dónde está mi pedido {i}? Gracias por la ayuda 📦"
                    ),
                )
                .to_string();
                let webhook_id = format!("{run}-w{i}");
                let started_us = telenet_store::now_micros();
                let started = Instant::now();
                let timestamp = telenet_signing::unix_now();
                let signature = secret.sign(&webhook_id, timestamp, body.as_bytes());
                let response = http
                    .post(&*url)
                    .header("content-type", "application/json")
                    .header("webhook-id", &webhook_id)
                    .header("webhook-timestamp", timestamp.to_string())
                    .header("webhook-signature", signature)
                    .body(body)
                    .send()
                    .await;
                let outcome = match response {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let text = r.text().await.unwrap_or_default();
                        match (status, text.contains("\"accepted\"")) {
                            (200, true) => Outcome::Accepted,
                            (200, false) if text.contains("\"duplicate\"") => Outcome::Duplicate,
                            _ => Outcome::Refused(format!("HTTP {status}: {text}")),
                        }
                    }
                    Err(e) => Outcome::Refused(format!("request failed: {e}")),
                };
                out.push(Sent {
                    index: i,
                    started_us,
                    latency_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                    outcome,
                });
            }
        }));
    }
    let mut all = Vec::with_capacity(count);
    for w in workers {
        all.extend(w.await.expect("sender task"));
    }
    all
}

// ---------------------------------------------------------------------------
// Ceilings: commits

/// The `messages` row of the conversations service (same columns and
/// indexes; no foreign key to a conversations table).
fn message_table(name: &str, blob: &str) -> Vec<String> {
    vec![
        format!("DROP TABLE IF EXISTS {name}"),
        format!(
            "CREATE TABLE {name} (
                id TEXT PRIMARY KEY, workspace_id TEXT NOT NULL, conversation_id TEXT NOT NULL,
                channel_id TEXT NOT NULL, direction BIGINT NOT NULL,
                author_user_id TEXT NOT NULL DEFAULT '', text TEXT NOT NULL, attachments {blob} NOT NULL,
                status BIGINT NOT NULL, external_id TEXT NOT NULL DEFAULT '',
                error TEXT NOT NULL DEFAULT '', client_message_id TEXT NOT NULL DEFAULT '',
                created_at BIGINT NOT NULL, status_changed_at BIGINT NOT NULL)"
        ),
        format!("CREATE INDEX {name}_by_conversation ON {name} (conversation_id, created_at, id)"),
        format!(
            "CREATE UNIQUE INDEX {name}_external ON {name} (channel_id, direction, external_id) WHERE external_id <> ''"
        ),
    ]
}

/// Rows per second written by `COMMIT_TASKS` tasks through our `Db`, `batch`
/// rows per INSERT, each INSERT its own transaction (autocommit).
async fn commit_ceiling(url: &str, rows: usize, batch: usize) -> f64 {
    let db = Db::connect(url, "ceiling").await.expect("ceiling database");
    let blob = match db.backend() {
        telenet_store::Backend::Postgres => "BYTEA",
        telenet_store::Backend::Sqlite => "BLOB",
    };
    let table = format!("ceiling_{batch}");
    for statement in message_table(&table, blob) {
        sqlx::query(&statement)
            .execute(db.pool())
            .await
            .expect("ceiling table");
    }
    const COLUMNS: usize = 11;
    let mut sql = format!(
        "INSERT INTO {table} (id, workspace_id, conversation_id, channel_id, direction, text, \
         attachments, status, external_id, created_at, status_changed_at) VALUES "
    );
    for r in 0..batch {
        if r > 0 {
            sql.push(',');
        }
        sql.push('(');
        for c in 0..COLUMNS {
            if c > 0 {
                sql.push(',');
            }
            let _ = write!(sql, "${}", r * COLUMNS + c + 1);
        }
        sql.push(')');
    }
    let sql: Arc<str> = sql.into();
    let workspace = uuid::Uuid::now_v7().to_string();
    let channel = uuid::Uuid::now_v7().to_string();
    let conversations: Arc<Vec<String>> = Arc::new(
        (0..1000)
            .map(|_| uuid::Uuid::now_v7().to_string())
            .collect(),
    );
    let statements = rows.div_ceil(batch);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..COMMIT_TASKS {
        let (db, sql, next, conversations) =
            (db.clone(), sql.clone(), next.clone(), conversations.clone());
        let (workspace, channel) = (workspace.clone(), channel.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= statements {
                    return;
                }
                let mut q = sqlx::query(&sql);
                for r in 0..batch {
                    let i = k * batch + r;
                    let now = telenet_store::now_micros();
                    q = q
                        .bind(uuid::Uuid::now_v7().to_string())
                        .bind(workspace.clone())
                        .bind(conversations[i % conversations.len()].clone())
                        .bind(channel.clone())
                        .bind(1_i64)
                        .bind(format!(
                            "Hola, soy +3460000{:04}. ¿Dónde está mi pedido {i}? Gracias por la ayuda 📦",
                            i % 1000
                        ))
                        .bind(Vec::<u8>::new())
                        .bind(1_i64)
                        .bind(format!("ext-{i}"))
                        .bind(now)
                        .bind(now);
                }
                q.execute(db.pool()).await.expect("ceiling insert");
            }
        }));
    }
    for t in tasks {
        t.await.expect("ceiling task");
    }
    let secs = started.elapsed().as_secs_f64();
    let _ = sqlx::query(&format!("DROP TABLE {table}"))
        .execute(db.pool())
        .await;
    db.close().await;
    (statements * batch) as f64 / secs
}

// ---------------------------------------------------------------------------
// Ceilings: RabbitMQ

struct RabbitCeilings {
    publish_batched: (f64, CpuUse),
    publish_single: (f64, CpuUse),
    end_to_end: (f64, CpuUse),
}

/// An event the size of what ingress publishes for one inbound message.
fn sample_event(routing_key: &str) -> Event {
    let env = events::envelope(
        &uuid::Uuid::now_v7().to_string(),
        Payload::InboundMessageReceived(InboundMessageReceived {
            channel_id: uuid::Uuid::now_v7().to_string(),
            channel_kind: ChannelKind::Custom as i32,
            webhook_id: "0123456789-w12345".into(),
            external_id: "0123456789-m12345".into(),
            sender: Some(Sender {
                external_id: "0123456789-c00123".into(),
                display_name: "Ana".into(),
            }),
            text:
                "Hola, soy 0123456789-c00123. ¿Dónde está mi pedido 12345? Gracias por la ayuda 📦"
                    .into(),
            attachments: vec![],
            sent_at: None,
            ..Default::default()
        }),
        None,
    );
    let mut event = events::to_bus(&env);
    event.routing_key = routing_key.to_owned();
    event
}

/// Publish `count` copies of `template` (fresh ids) from `tasks` tasks,
/// `batch` events per publish call (each call waits for its confirms).
async fn publish_many(
    bus: &Arc<RabbitBus>,
    template: &Event,
    count: usize,
    tasks: usize,
    batch: usize,
) {
    let next = Arc::new(AtomicUsize::new(0));
    let calls = count.div_ceil(batch);
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (bus, next, template) = (bus.clone(), next.clone(), template.clone());
        handles.push(tokio::spawn(async move {
            loop {
                if next.fetch_add(1, Ordering::Relaxed) >= calls {
                    return;
                }
                let events: Vec<Event> = (0..batch)
                    .map(|_| {
                        let mut e = template.clone();
                        e.id = uuid::Uuid::now_v7().to_string();
                        e
                    })
                    .collect();
                bus.publish(&events).await.expect("ceiling publish");
            }
        }));
    }
    for h in handles {
        h.await.expect("publisher task");
    }
}

async fn rabbit_ceilings(url: &str, count: usize) -> RabbitCeilings {
    let prefix = format!("bench{}.", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let bus = Arc::new(
        RabbitBus::connect(url, &prefix, world::test_retry())
            .await
            .expect("RabbitMQ"),
    );
    // Publish only: the group's queue is declared (so messages are routed and
    // stored) but nobody takes from it.
    let parked = bus
        .subscribe(SubscribeSpec::new("ceiling.publish", &["ceiling.publish"]))
        .await
        .expect("declare the publish queue");
    let template = sample_event("ceiling.publish");
    let cpu = cpu_snapshot();
    let started = Instant::now();
    publish_many(&bus, &template, count, PUBLISH_TASKS, PUBLISH_BATCH).await;
    let publish_batched = (
        count as f64 / started.elapsed().as_secs_f64(),
        cpu_snapshot().since(&cpu),
    );
    let singles = count / 2;
    let cpu = cpu_snapshot();
    let started = Instant::now();
    publish_many(&bus, &template, singles, 64, 1).await;
    let publish_single = (
        singles as f64 / started.elapsed().as_secs_f64(),
        cpu_snapshot().since(&cpu),
    );
    drop(parked);

    // End to end: our consumer loop (prefetch 64, 16 handlers, ack after the
    // handler) as the conversations service runs it, with a no-op handler.
    let received = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(tokio::sync::Notify::new());
    let stop = CancellationToken::new();
    let shared: SharedBus = bus.clone();
    let consumer = {
        let (received, done) = (received.clone(), done.clone());
        telenet_store::consumer::spawn(
            shared,
            SubscribeSpec::new("ceiling.e2e", &["ceiling.e2e"]),
            16,
            stop.clone(),
            move |_incoming| {
                let (received, done) = (received.clone(), done.clone());
                async move {
                    if received.fetch_add(1, Ordering::SeqCst) + 1 == count {
                        done.notify_one();
                    }
                    Ok(())
                }
            },
        )
        .await
        .expect("ceiling consumer")
    };
    let template = sample_event("ceiling.e2e");
    let cpu = cpu_snapshot();
    let started = Instant::now();
    let waited = done.notified();
    publish_many(&bus, &template, count, PUBLISH_TASKS, PUBLISH_BATCH).await;
    let end_to_end = match tokio::time::timeout(Duration::from_secs(120), waited).await {
        Ok(()) => (
            count as f64 / started.elapsed().as_secs_f64(),
            cpu_snapshot().since(&cpu),
        ),
        Err(_) => {
            println!(
                "WARNING  RabbitMQ end-to-end ceiling: only {} of {count} consumed within 120 s",
                received.load(Ordering::SeqCst)
            );
            (0.0, cpu_snapshot().since(&cpu))
        }
    };
    stop.cancel();
    let _ = consumer.await;
    if let Err(e) = bus.close_and_delete_declared().await {
        println!("WARNING  could not delete the ceiling queues: {e}");
    }
    RabbitCeilings {
        publish_batched,
        publish_single,
        end_to_end,
    }
}

// ---------------------------------------------------------------------------
// Cleaning up after a run on real infrastructure

/// Delete the queues and exchange the suite declared under `prefix`: a bus
/// with the same prefix declares the same groups (same retry policy, so the
/// same arguments) and deletes what it declared.
async fn delete_suite_queues(prefix: &str) {
    let bus = match RabbitBus::connect(&world::amqp_url(), prefix, world::test_retry()).await {
        Ok(b) => b,
        Err(e) => {
            println!("WARNING  cannot clean up queues {prefix}*: {e}");
            return;
        }
    };
    for group in [
        "conversations.inbound",
        "conversations.status",
        "dispatch",
        "reporting",
    ] {
        match bus.subscribe(SubscribeSpec::new(group, &[])).await {
            Ok(sub) => drop(sub),
            Err(e) => println!("WARNING  cannot clean up queue {prefix}{group}: {e}"),
        }
    }
    if let Err(e) = bus.close_and_delete_declared().await {
        println!("WARNING  cannot clean up queues {prefix}*: {e}");
    }
}

async fn drop_database(url: &str) {
    use sqlx::{ConnectOptions as _, Executor as _};
    let name = url
        .rsplit('/')
        .next()
        .and_then(|tail| tail.split('?').next())
        .unwrap_or_default()
        .to_owned();
    if !name.starts_with("telenet_test_") {
        return;
    }
    let admin = testing::postgres_admin_url();
    let opts: sqlx::any::AnyConnectOptions = admin.parse().expect("admin url");
    match opts.connect().await {
        Ok(mut conn) => {
            if let Err(e) = conn
                .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                .await
            {
                println!("WARNING  cannot drop database {name}: {e}");
            }
        }
        Err(e) => println!("WARNING  cannot drop database {name}: {e}"),
    }
}

// ---------------------------------------------------------------------------
// The machine

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let mem_kib: u64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    format!(
        "machine: {cpus} CPUs ({model}), {:.1} GiB RAM, Linux {}, load average at start {}",
        mem_kib as f64 / 1024.0 / 1024.0,
        read("/proc/sys/kernel/osrelease").trim(),
        read("/proc/loadavg")
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// The first of PostgreSQL, RabbitMQ and Redis that does not accept a TCP
/// connection on its test address.
async fn infrastructure_down() -> Option<&'static str> {
    let host_port = |url: &str, default: &str| -> String {
        let after = url.split("://").nth(1).unwrap_or(url);
        let after = after.rsplit('@').next().unwrap_or(after);
        let hp = after.split(['/', '?']).next().unwrap_or(after);
        if hp.contains(':') {
            hp.to_owned()
        } else {
            format!("{hp}:{default}")
        }
    };
    for (name, addr) in [
        (
            "PostgreSQL",
            host_port(&testing::postgres_admin_url(), "5432"),
        ),
        ("RabbitMQ", host_port(&world::amqp_url(), "5672")),
        ("Redis", host_port(&world::redis_url(), "6379")),
    ] {
        let ok = tokio::time::timeout(
            Duration::from_secs(3),
            tokio::net::TcpStream::connect(&addr),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        if !ok {
            return Some(name);
        }
    }
    None
}

/// Server versions, as the servers report them.
async fn versions() -> String {
    let pg = async {
        use sqlx::ConnectOptions as _;
        let opts: sqlx::any::AnyConnectOptions = testing::postgres_admin_url().parse().ok()?;
        let mut conn = opts.connect().await.ok()?;
        let row = sqlx::query("SHOW server_version")
            .fetch_one(&mut conn)
            .await
            .ok()?;
        row.try_get::<String, _>(0).ok()
    };
    let rabbit = async {
        // The broker's Connection.Start carries its version in the server
        // properties; read it and hang up.
        let addr = {
            let url = world::amqp_url();
            let after = url.split("://").nth(1).unwrap_or_default().to_owned();
            let after = after.rsplit('@').next().unwrap_or_default().to_owned();
            let hp = after
                .split(['/', '?'])
                .next()
                .unwrap_or_default()
                .to_owned();
            if hp.contains(':') {
                hp
            } else {
                format!("{hp}:5672")
            }
        };
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(b"AMQP\x00\x00\x09\x01").await.ok()?;
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        let buf = &buf[..n];
        let key = b"\x07versionS";
        let at = buf.windows(key.len()).position(|w| w == key)? + key.len();
        let len = u32::from_be_bytes(buf.get(at..at + 4)?.try_into().ok()?) as usize;
        String::from_utf8(buf.get(at + 4..at + 4 + len)?.to_vec()).ok()
    };
    let redis = async {
        let url = world::redis_url();
        let after = url.split("://").nth(1).unwrap_or_default().to_owned();
        let hp = after
            .split(['/', '?'])
            .next()
            .unwrap_or_default()
            .to_owned();
        let mut s = tokio::net::TcpStream::connect(hp).await.ok()?;
        s.write_all(b"INFO server\r\n").await.ok()?;
        let mut buf = vec![0u8; 8192];
        let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        String::from_utf8_lossy(&buf[..n]).lines().find_map(|l| {
            l.strip_prefix("redis_version:")
                .map(|v| v.trim().to_owned())
        })
    };
    let (pg, rabbit, redis) = tokio::join!(pg, rabbit, redis);
    let or = |v: Option<String>| v.unwrap_or_else(|| "?".into());
    format!(
        "servers: PostgreSQL {}, RabbitMQ {}, Redis {}",
        or(pg),
        or(rabbit),
        or(redis)
    )
}

/// CPU time of the machine and of the processes that matter here, from /proc.
struct CpuSnapshot {
    at: Instant,
    busy: u64,
    iowait: u64,
    groups: BTreeMap<&'static str, u64>,
}

/// Where CPU went during a run, in cores (1.0 = one core busy all along).
struct CpuUse {
    secs: f64,
    busy: f64,
    iowait: f64,
    groups: BTreeMap<&'static str, f64>,
}

impl CpuUse {
    /// Cores used by processes other than this one and the servers.
    fn others(&self) -> f64 {
        (self.busy - self.groups.values().sum::<f64>()).max(0.0)
    }

    fn group(&self, name: &str) -> f64 {
        self.groups.get(name).copied().unwrap_or(0.0)
    }

    /// Cores of this process, the servers and everything else.
    fn short(&self) -> String {
        format!(
            "this process {:.2}, postgres {:.2}, rabbitmq {:.2}, other processes {:.2}",
            self.group(SELF),
            self.group("postgres"),
            self.group("rabbitmq"),
            self.others()
        )
    }

    /// CPU milliseconds per item of `count` items.
    fn per_item(&self, count: usize) -> String {
        let ms = |cores: f64| cores * self.secs * 1000.0 / count.max(1) as f64;
        format!(
            "this process {:.2} ms, postgres {:.2} ms, rabbitmq {:.2} ms, whole machine {:.2} ms (of which other processes {:.2} ms)",
            ms(self.group(SELF)),
            ms(self.group("postgres")),
            ms(self.group("rabbitmq")),
            ms(self.busy),
            ms(self.others())
        )
    }
}

/// The group of this process in CPU accounting.
const SELF: &str = "this process (clients + suite)";

impl std::fmt::Display for CpuUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CPU in cores over {:.1} s: machine busy {:.2}",
            self.secs, self.busy
        )?;
        for (name, cores) in &self.groups {
            write!(f, ", {name} {cores:.2}")?;
        }
        write!(
            f,
            ", other processes {:.2}; iowait {:.2}",
            self.others(),
            self.iowait
        )
    }
}

/// Linux reports CPU times in clock ticks of 1/100 s (USER_HZ).
const TICKS_PER_SEC: f64 = 100.0;

fn cpu_snapshot() -> CpuSnapshot {
    let stat = read("/proc/stat");
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let f = |i: usize| fields.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    let busy = f(0) + f(1) + f(2) + f(5) + f(6) + f(7);
    let me = std::process::id().to_string();
    let mut groups: BTreeMap<&'static str, u64> = BTreeMap::new();
    for name in [SELF, "postgres", "rabbitmq", "redis"] {
        groups.insert(name, 0);
    }
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let pid = entry.file_name().to_string_lossy().into_owned();
            if !pid.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let text = read(&format!("/proc/{pid}/stat"));
            let (Some(open), Some(close)) = (text.find('('), text.rfind(')')) else {
                continue;
            };
            let comm = &text[open + 1..close];
            let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
            // After the command: state is field 3, utime 14 and stime 15.
            let ticks = rest
                .get(11)
                .and_then(|x| x.parse::<u64>().ok())
                .unwrap_or(0)
                + rest
                    .get(12)
                    .and_then(|x| x.parse::<u64>().ok())
                    .unwrap_or(0);
            let group = if pid == me {
                SELF
            } else if comm.starts_with("postgres") {
                "postgres"
            } else if comm == "beam.smp" || comm == "erl_child_setup" || comm == "epmd" {
                "rabbitmq"
            } else if comm.starts_with("redis-server") {
                "redis"
            } else {
                continue;
            };
            *groups.entry(group).or_insert(0) += ticks;
        }
    }
    CpuSnapshot {
        at: Instant::now(),
        busy,
        iowait: f(4),
        groups,
    }
}

impl CpuSnapshot {
    fn since(&self, before: &CpuSnapshot) -> CpuUse {
        let secs = self.at.duration_since(before.at).as_secs_f64().max(1e-9);
        let cores = |t: u64| t as f64 / TICKS_PER_SEC / secs;
        CpuUse {
            secs,
            busy: cores(self.busy.saturating_sub(before.busy)),
            iowait: cores(self.iowait.saturating_sub(before.iowait)),
            groups: self
                .groups
                .iter()
                .map(|(k, v)| {
                    (
                        *k,
                        cores(v.saturating_sub(before.groups.get(k).copied().unwrap_or(0))),
                    )
                })
                .collect(),
        }
    }
}

// ---------------------------------------------------------------------------
// Warnings and errors the suite logs during a run, counted by message.

#[derive(Default)]
struct LogCounts {
    /// (level, target, message) -> (count, first full line)
    seen: BTreeMap<(String, String, String), (u64, String)>,
}

fn log_counts() -> &'static Mutex<LogCounts> {
    static COUNTS: OnceLock<Mutex<LogCounts>> = OnceLock::new();
    COUNTS.get_or_init(Default::default)
}

fn reset_logs() {
    log_counts()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .seen
        .clear();
}

fn take_logs() -> Vec<String> {
    let seen = std::mem::take(
        &mut log_counts()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .seen,
    );
    seen.into_iter()
        .map(|((level, target, message), (count, first))| {
            format!("{count} x {level} {target}: {message} — first: {first}")
        })
        .collect()
}

struct CountLayer;

#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl tracing::field::Visit for Fields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            let _ = write!(self.rest, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CountLayer {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let key = (
            meta.level().to_string(),
            meta.target().to_owned(),
            fields.message.clone(),
        );
        let mut counts = log_counts()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = counts
            .seen
            .entry(key)
            .or_insert_with(|| (0, format!("{}{}", fields.message, fields.rest)));
        entry.0 += 1;
    }
}

fn install_log_counter() {
    let _ = tracing_subscriber::registry()
        .with(CountLayer.with_filter(tracing_subscriber::filter::LevelFilter::WARN))
        .try_init();
}
