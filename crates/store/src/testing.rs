//! Helpers for tests that need a real database: a fresh PostgreSQL database
//! per test (so runs never collide) or a SQLite file in a temporary directory.

/// The server tests use; `TELENET_TEST_POSTGRES_URL` overrides (it must point
/// at a database the user may `CREATE DATABASE` from).
pub fn postgres_admin_url() -> String {
    std::env::var("TELENET_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Create an empty database with a unique name and return its URL. Panics
/// with a clear message when PostgreSQL is not reachable: integration tests
/// must fail, not skip, without their infrastructure.
pub async fn fresh_postgres() -> String {
    use sqlx::{ConnectOptions, Executor};
    sqlx::any::install_default_drivers();
    let admin = postgres_admin_url();
    let opts: sqlx::any::AnyConnectOptions = match admin.parse() {
        Ok(o) => o,
        Err(e) => panic!("TELENET_TEST_POSTGRES_URL {admin:?} is invalid: {e}"),
    };
    let mut conn = match opts.connect().await {
        Ok(c) => c,
        Err(e) => panic!(
            "PostgreSQL is not reachable at {admin} ({e}); start it (scripts/services.sh ensure)"
        ),
    };
    let name = format!("telenet_test_{}", uuid::Uuid::new_v4().simple());
    if let Err(e) = conn
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
    {
        panic!("cannot create test database {name}: {e}");
    }
    match admin.rfind('/') {
        Some(i) if admin[..i].contains("://") && i > admin.find("://").unwrap_or(0) + 2 => {
            let (base, rest) = admin.split_at(i);
            let query = rest.find('?').map(|q| &rest[q..]).unwrap_or("");
            format!("{base}/{name}{query}")
        }
        _ => format!("{admin}/{name}"),
    }
}

/// A SQLite URL for a file in `dir`.
pub fn sqlite_in(dir: &std::path::Path, name: &str) -> String {
    format!(
        "sqlite://{}?mode=rwc",
        dir.join(format!("{name}.db")).display()
    )
}

/// A store backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in a temporary directory.
    Sqlite,
    /// A fresh database on the test PostgreSQL server.
    Postgres,
}

impl Backend {
    /// A database URL for this backend: a fresh PostgreSQL database, or a
    /// SQLite file named `name` in `dir`.
    pub async fn url(self, dir: &std::path::Path, name: &str) -> String {
        match self {
            Backend::Sqlite => sqlite_in(dir, name),
            Backend::Postgres => fresh_postgres().await,
        }
    }
}

/// A migrated database of one service, for a test; its SQLite file lives
/// as long as this does.
pub struct TestDb {
    pub db: crate::Db,
    _dir: tempfile::TempDir,
}

impl Backend {
    /// The database of service `name` (its schema on PostgreSQL, its file
    /// on SQLite) on this backend, with `migrations` applied. Panics when
    /// the backend is unusable: a test must fail, not skip, without it.
    pub async fn database(self, name: &str, migrations: &crate::Migrations) -> TestDb {
        let dir = match tempfile::tempdir() {
            Ok(dir) => dir,
            Err(e) => panic!("cannot make a temporary directory: {e}"),
        };
        let url = self.url(dir.path(), name).await;
        let db = match crate::Db::connect(&url, name).await {
            Ok(db) => db,
            Err(e) => panic!("cannot open the {name} database on {self:?}: {e}"),
        };
        if let Err(e) = db.migrate(migrations).await {
            panic!("cannot migrate the {name} database on {self:?}: {e}");
        }
        TestDb { db, _dir: dir }
    }
}

/// Runs each named scenario `async fn name(backend: Backend)` once on
/// SQLite and once on PostgreSQL, as tests `sqlite::name` and
/// `postgres::name`.
///
/// ```ignore
/// use telenet_store::testing::Backend;
/// telenet_store::on_both_backends!(creates_a_contact, workspaces_are_isolated);
/// async fn creates_a_contact(backend: Backend) { /* … */ }
/// ```
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name($crate::testing::Backend::Sqlite).await;
            })+
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name($crate::testing::Backend::Postgres).await;
            })+
        }
    };
}
