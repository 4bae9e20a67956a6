//! Database access shared by every service: a pool chosen by URL
//! (`postgres://…` or `sqlite://…`), embedded migrations per service and
//! backend, the transactional outbox and consumer idempotency.
//!
//! Queries are written once with `$1`-style parameters and portable SQL and run
//! through sqlx's `Any` driver on both backends. Ids are stored as TEXT
//! (UUIDs) and times as BIGINT microseconds since the Unix epoch, so the same
//! code reads both backends the same way.

use std::borrow::Cow;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::{Any, AnyPool, ConnectOptions, Executor};
use telenet_kit::error::ErrorCode;
use telenet_kit::infra_tls::{InfraTlsConfig, InfraTlsError};

pub mod consumer;
pub mod cursor;
pub mod dead_letters;
pub mod events;
pub mod idempotency;
pub mod outbox;
#[doc(hidden)]
pub mod testing;

pub use sqlx;

/// A transaction on the service's database.
pub type Tx<'a> = sqlx::Transaction<'a, Any>;

/// Which database engine a pool talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database url {url:?}: {reason}")]
    Config { url: String, reason: String },
    /// The `database_tls` files cannot be used.
    #[error("{0}")]
    Tls(#[from] InfraTlsError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("event bus: {0}")]
    Bus(#[from] telenet_bus::BusError),
}

impl StoreError {
    /// Whether retrying later may succeed: the database is unreachable,
    /// shutting down, starting up, read-only after a failover, out of
    /// resources, or the statement lost a serialization race or a deadlock.
    /// PostgreSQL's verdict is read from the error's SQLSTATE
    /// ([`is_transient_sqlstate`]); SQLite's from its busy and locked codes.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Database(e) => is_transient_sqlx(e),
            StoreError::Migrate(sqlx::migrate::MigrateError::Execute(e)) => is_transient_sqlx(e),
            StoreError::Bus(_) => true,
            _ => false,
        }
    }

    /// The code a service answers this failure with: UNAVAILABLE when a
    /// retry may succeed (so callers retry), INTERNAL otherwise (logged
    /// with its cause, answered opaquely).
    pub fn code(&self) -> ErrorCode {
        if self.is_transient() {
            ErrorCode::Unavailable
        } else {
            ErrorCode::Internal
        }
    }

    /// The word a service's message gives this failure after the store's
    /// name (`contacts store unavailable`): `unavailable` when a retry may
    /// succeed, `failed` otherwise. It goes with [`StoreError::code`].
    pub fn verdict(&self) -> &'static str {
        if self.is_transient() {
            "unavailable"
        } else {
            "failed"
        }
    }

    /// Whether this is a unique-constraint violation.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Database(d)) => {
                d.kind() == sqlx::error::ErrorKind::UniqueViolation
            }
            _ => false,
        }
    }
}

fn is_transient_sqlx(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(d) => {
            let code = d.code();
            match code.as_deref() {
                // A SQLSTATE has five characters (and may be all digits);
                // SQLite answers with its numeric result codes, at most
                // four digits: BUSY (5) and LOCKED (6) with their extended
                // variants pass.
                Some(c) if c.len() < 5 && c.bytes().all(|b| b.is_ascii_digit()) => {
                    matches!(c.parse::<u32>().map(|n| n & 0xff), Ok(5 | 6))
                }
                Some(c) => is_transient_sqlstate(c),
                None => {
                    let msg = d.message();
                    msg.contains("database is locked") || msg.contains("deadlock")
                }
            }
        }
        _ => false,
    }
}

/// Whether a PostgreSQL SQLSTATE names a condition that passes: the server
/// going away or not yet back (class 57P0: 57P01 admin shutdown, 57P02
/// crash shutdown, 57P03 cannot connect now), a broken connection (class
/// 08), a read-only transaction after a failover (25006), insufficient
/// resources (class 53: disk full, out of memory, too many connections), a
/// serialization failure or deadlock (40001, 40P01), a lock not available
/// (55P03) and a statement cancelled by a timeout or an administrator
/// (57014). Everything else (a constraint, a syntax error, a missing
/// table) will fail again the same way.
pub fn is_transient_sqlstate(code: &str) -> bool {
    code.starts_with("57P0")
        || code.starts_with("08")
        || code.starts_with("53")
        || matches!(code, "25006" | "40001" | "40P01" | "55P03" | "57014")
}

/// One migration of a service, embedded at compile time.
#[derive(Debug, Clone, Copy)]
pub struct MigrationFile {
    /// Ordering number; versions below 100 are reserved for this crate.
    pub version: i64,
    pub description: &'static str,
    pub sql: &'static str,
}

/// A service's migrations for both backends.
#[derive(Debug, Clone, Copy)]
pub struct Migrations {
    pub postgres: &'static [MigrationFile],
    pub sqlite: &'static [MigrationFile],
}

/// Embed a service's migrations: `migrations!("0100_init")` includes
/// `migrations/postgres/0100_init.sql` and `migrations/sqlite/0100_init.sql`
/// relative to the calling crate; the number before `_` is the version.
#[macro_export]
macro_rules! migrations {
    ($($name:literal),+ $(,)?) => {
        $crate::Migrations {
            postgres: &[$($crate::MigrationFile {
                version: $crate::version_of($name),
                description: $name,
                sql: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres/", $name, ".sql")),
            }),+],
            sqlite: &[$($crate::MigrationFile {
                version: $crate::version_of($name),
                description: $name,
                sql: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite/", $name, ".sql")),
            }),+],
        }
    };
}

/// The leading number of a migration name (`"0100_init"` → 100).
pub const fn version_of(name: &str) -> i64 {
    let bytes = name.as_bytes();
    let mut i = 0;
    let mut v: i64 = 0;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        v = v * 10 + (bytes[i] - b'0') as i64;
        i += 1;
    }
    v
}

/// This crate's own tables (outbox, processed events).
const INFRA: Migrations = Migrations {
    postgres: &[MigrationFile {
        version: 1,
        description: "outbox",
        sql: include_str!("../migrations/postgres/0001_outbox.sql"),
    }],
    sqlite: &[MigrationFile {
        version: 1,
        description: "outbox",
        sql: include_str!("../migrations/sqlite/0001_outbox.sql"),
    }],
};

#[derive(Debug)]
struct Embedded(Vec<MigrationFile>);

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(self) -> BoxFuture<'s, Result<Vec<Migration>, sqlx::error::BoxDynError>> {
        Box::pin(async move {
            Ok(self
                .0
                .into_iter()
                .map(|m| {
                    Migration::new(
                        m.version,
                        Cow::Borrowed(m.description),
                        MigrationType::Simple,
                        Cow::Borrowed(m.sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// A service's database.
#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
    outbox_wakeup: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("backend", &self.backend)
            .finish()
    }
}

impl Db {
    /// Connect to `url`. For PostgreSQL every service keeps its tables in its
    /// own schema (`schema`), created when missing, so services can share one
    /// database without seeing each other's tables. For SQLite the file is
    /// created when missing.
    pub async fn connect(url: &str, schema: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let config_err = |reason: String| StoreError::Config {
            url: redact(url),
            reason,
        };
        if !schema.chars().all(|c| c.is_ascii_lowercase() || c == '_') || schema.is_empty() {
            return Err(config_err(format!("invalid schema name {schema:?}")));
        }
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(config_err(
                "unsupported scheme: expected postgres://… or sqlite://…".into(),
            ));
        };
        let opts = AnyConnectOptions::from_str(url)
            .map_err(|e| config_err(e.to_string()))?
            .log_statements(tracing::log::LevelFilter::Trace)
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(1));

        let pool = match backend {
            Backend::Postgres => {
                // Create the schema on a plain connection first, then make
                // every pooled connection use it.
                let mut conn = opts.connect().await?;
                conn.execute(format!("CREATE SCHEMA IF NOT EXISTS {schema}").as_str())
                    .await?;
                drop(conn);
                let set_path = format!("SET search_path TO {schema}");
                AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(10))
                    .after_connect(move |conn, _| {
                        let set_path = set_path.clone();
                        Box::pin(async move {
                            conn.execute(set_path.as_str()).await?;
                            Ok(())
                        })
                    })
                    .connect_with(opts)
                    .await?
            }
            Backend::Sqlite => {
                // One connection: SQLite has one writer at a time, and a single
                // connection avoids lock-upgrade failures between transactions.
                AnyPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(30))
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            conn.execute(
                                "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; \
                                 PRAGMA busy_timeout=5000; PRAGMA foreign_keys=ON;",
                            )
                            .await?;
                            Ok(())
                        })
                    })
                    .connect_with(opts)
                    .await?
            }
        };
        Ok(Self {
            pool,
            backend,
            outbox_wakeup: Arc::new(tokio::sync::Notify::new()),
        })
    }

    /// [`Db::connect`] with the private CA and client certificate of `tls`
    /// (`database_tls`) added to a PostgreSQL URL; see [`url_with_tls`].
    pub async fn connect_with_tls(
        url: &str,
        schema: &str,
        tls: &InfraTlsConfig,
    ) -> Result<Self, StoreError> {
        Self::connect(&url_with_tls(url, tls)?, schema).await
    }

    /// Apply this crate's tables and the service's migrations, in version order.
    pub async fn migrate(&self, migrations: &Migrations) -> Result<(), StoreError> {
        let (infra, own) = match self.backend {
            Backend::Postgres => (INFRA.postgres, migrations.postgres),
            Backend::Sqlite => (INFRA.sqlite, migrations.sqlite),
        };
        let mut all: Vec<MigrationFile> = infra.iter().chain(own.iter()).copied().collect();
        all.sort_by_key(|m| m.version);
        let migrator = Migrator::new(Embedded(all)).await?;
        migrator.run(&self.pool).await?;
        Ok(())
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Start a transaction.
    pub async fn begin(&self) -> Result<Tx<'static>, StoreError> {
        Ok(self.pool.begin().await?)
    }

    /// Commit a transaction that wrote to the outbox and wake the relay.
    pub async fn commit(&self, tx: Tx<'_>) -> Result<(), StoreError> {
        tx.commit().await?;
        self.outbox_wakeup.notify_one();
        Ok(())
    }

    pub(crate) fn outbox_wakeup(&self) -> Arc<tokio::sync::Notify> {
        self.outbox_wakeup.clone()
    }

    /// Whether the database answers (readiness).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The PostgreSQL URL `url` with the files of `tls` as its parameters:
/// `sslrootcert` (`ca_file`), `sslcert` and `sslkey` (`cert_file`,
/// `key_file`), and `sslmode=verify-full` unless the URL names a mode
/// itself. The files are read and checked first, so a wrong one is
/// reported under its key. Nothing set: `url` as it is.
///
/// Refused, rather than quietly weakened: a SQLite URL with TLS files; a
/// parameter given both in the URL and in `database_tls`; TLS files with a
/// mode that may connect without TLS (`disable`, `allow`, `prefer`), or a
/// CA with one that does not check the server's certificate (`require`).
pub fn url_with_tls(url: &str, tls: &InfraTlsConfig) -> Result<String, StoreError> {
    if tls.is_empty() {
        return Ok(url.to_owned());
    }
    let config_err = |reason: String| StoreError::Config {
        url: redact(url),
        reason,
    };
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(config_err(
            "database_tls is for PostgreSQL (postgres://…); this URL is not one".into(),
        ));
    }
    tls.load("database_tls")?;
    let mut parsed = url::Url::parse(url).map_err(|e| config_err(e.to_string()))?;
    let given = |names: &[&str]| {
        parsed
            .query_pairs()
            .find(|(name, _)| names.contains(&name.as_ref()))
            .map(|(_, value)| value.into_owned())
    };
    let mode = given(&["sslmode", "ssl-mode"]).map(|m| m.to_ascii_lowercase());
    match mode.as_deref() {
        None | Some("verify-full" | "verify-ca") => {}
        Some("require") if tls.ca_file.as_os_str().is_empty() => {}
        Some(other) => {
            return Err(config_err(format!(
                "sslmode={other} with database_tls {}; use sslmode=verify-full (or leave it out)",
                if other == "require" {
                    "does not check the server's certificate against database_tls.ca_file"
                } else {
                    "may connect without TLS"
                }
            )));
        }
    }
    let files = [
        (
            "ca_file",
            &tls.ca_file,
            &["sslrootcert", "ssl-root-cert", "ssl-ca"][..],
        ),
        ("cert_file", &tls.cert_file, &["sslcert", "ssl-cert"][..]),
        ("key_file", &tls.key_file, &["sslkey", "ssl-key"][..]),
    ];
    let mut added = Vec::new();
    for (field, path, names) in files {
        if path.as_os_str().is_empty() {
            continue;
        }
        if given(names).is_some() {
            return Err(config_err(format!(
                "both database_tls.{field} and the URL's {} are set; keep one",
                names[0]
            )));
        }
        let Some(path) = path.to_str() else {
            return Err(config_err(format!(
                "database_tls.{field}: the path {} is not UTF-8",
                path.display()
            )));
        };
        added.push((names[0], path.to_owned()));
    }
    {
        let mut query = parsed.query_pairs_mut();
        if mode.is_none() {
            query.append_pair("sslmode", "verify-full");
        }
        for (name, path) in &added {
            query.append_pair(name, path);
        }
    }
    Ok(parsed.into())
}

/// Microseconds since the Unix epoch, the time unit of every stored timestamp.
pub fn now_micros() -> i64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The URL without its password, for error messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// A stored time (microseconds) as a protobuf timestamp.
pub fn timestamp(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    }
}

/// A protobuf timestamp as stored microseconds.
pub fn micros_of(ts: &prost_types::Timestamp) -> i64 {
    ts.seconds
        .saturating_mul(1_000_000)
        .saturating_add(i64::from(ts.nanos) / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_come_from_the_name() {
        assert_eq!(version_of("0100_init"), 100);
        assert_eq!(version_of("7_x"), 7);
        assert_eq!(version_of("x"), 0);
    }

    /// A CA certificate file for the TLS URL tests.
    fn ca_file(dir: &std::path::Path) -> std::path::PathBuf {
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("ca");
        let path = dir.join("ca dir").join("ca.crt");
        std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
        std::fs::write(&path, cert.pem()).expect("write");
        path
    }

    #[test]
    fn tls_files_become_url_parameters_with_a_verifying_mode() {
        let dir = tempfile::tempdir().expect("dir");
        let ca = ca_file(dir.path());
        let tls = InfraTlsConfig::trusting(&ca);
        let url = url_with_tls("postgres://u:p@db.example:5432/telenet", &tls).expect("url");
        let parsed = url::Url::parse(&url).expect("parses");
        let pairs: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
        assert_eq!(
            pairs,
            [
                ("sslmode".to_owned(), "verify-full".to_owned()),
                ("sslrootcert".to_owned(), ca.display().to_string()),
            ]
        );
        // A verifying mode of the URL's own is kept.
        let url = url_with_tls("postgres://db.example/t?sslmode=verify-ca", &tls).expect("url");
        assert!(
            url.contains("sslmode=verify-ca") && !url.contains("verify-full"),
            "{url}"
        );
        // Nothing set: the URL as it is.
        let plain = "postgres://db.example/t?sslmode=disable";
        assert_eq!(
            url_with_tls(plain, &InfraTlsConfig::default()).expect("url"),
            plain
        );
    }

    #[test]
    fn tls_files_that_would_be_weakened_or_ignored_are_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let tls = InfraTlsConfig::trusting(ca_file(dir.path()));
        for (url, expected) in [
            (
                "postgres://db/t?sslmode=require",
                "does not check the server's certificate",
            ),
            ("postgres://db/t?sslmode=prefer", "may connect without TLS"),
            ("postgres://db/t?sslmode=disable", "may connect without TLS"),
            (
                "postgres://db/t?sslrootcert=/x.crt",
                "both database_tls.ca_file and the URL's sslrootcert",
            ),
            ("sqlite://x.db", "database_tls is for PostgreSQL"),
        ] {
            let error = url_with_tls(url, &tls).expect_err(url).to_string();
            assert!(error.contains(expected), "{url}: {error}");
        }
        let missing = InfraTlsConfig::trusting(dir.path().join("nope.crt"));
        let error = url_with_tls("postgres://db/t", &missing).expect_err("missing file");
        assert!(
            error
                .to_string()
                .starts_with("database_tls.ca_file: cannot read"),
            "{error}"
        );
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("sqlite://x.db"), "sqlite://x.db");
    }
}
