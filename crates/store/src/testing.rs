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
