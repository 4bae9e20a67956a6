//! Database failures that pass are told apart from those that do not, on a
//! real PostgreSQL: a connection terminated by the server (as on a fast
//! shutdown or restart) and a read-only database (as after a failover) are
//! transient, so consumers hold their events until the database is back
//! instead of dead-lettering them; a missing table is not.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sqlx::Executor;
use telenet_bus::memory::MemoryBus;
use telenet_bus::{Event, RetryPolicy, SharedBus, SubscribeSpec};
use telenet_store::consumer::{self, HandleError};
use telenet_store::{Db, StoreError, testing};
use tokio_util::sync::CancellationToken;

fn sqlstate(e: &StoreError) -> Option<String> {
    match e {
        StoreError::Database(d) => d
            .as_database_error()
            .and_then(|d| d.code())
            .map(|c| c.into_owned()),
        _ => None,
    }
}

async fn admin() -> sqlx::AnyConnection {
    use sqlx::ConnectOptions;
    sqlx::any::install_default_drivers();
    let opts: sqlx::any::AnyConnectOptions =
        testing::postgres_admin_url().parse().expect("admin url");
    opts.connect().await.expect("admin connection")
}

fn database_name(url: &str) -> String {
    let path = url.rsplit('/').next().expect("path");
    path.split('?').next().expect("name").to_owned()
}

/// `pg_terminate_backend` is what a fast shutdown does to every session:
/// the query in flight fails with SQLSTATE 57P01 ("terminating connection
/// due to administrator command").
#[tokio::test]
async fn a_connection_terminated_by_the_server_is_transient() {
    let url = testing::fresh_postgres().await;
    let db = Db::connect(&url, "transient_test").await.expect("connect");
    let marker = format!("telenet-terminate-{}", uuid::Uuid::new_v4().simple());
    let query = format!("SELECT pg_sleep(30) /* {marker} */");
    let running = {
        let db = db.clone();
        tokio::spawn(async move {
            db.pool()
                .execute(query.as_str())
                .await
                .map_err(StoreError::from)
        })
    };
    let mut admin = admin().await;
    let terminate = format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE query LIKE '%{marker}%' AND pid <> pg_backend_pid()"
    );
    let mut terminated = false;
    for _ in 0..100 {
        let rows = sqlx::query(&terminate)
            .fetch_all(&mut admin)
            .await
            .expect("terminate");
        if !rows.is_empty() {
            terminated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(terminated, "the sleeping query never showed up");
    let err = running
        .await
        .expect("join")
        .expect_err("the query was terminated");
    assert_eq!(sqlstate(&err).as_deref(), Some("57P01"), "{err}");
    assert!(err.is_transient(), "57P01 must be transient: {err}");
    assert!(matches!(
        HandleError::from(err),
        HandleError::Unavailable(_)
    ));
    // The pool recovers on its own once the server answers again.
    db.ping().await.expect("ping after the termination");
}

/// A standby promoted late, or a primary demoted, answers writes with
/// SQLSTATE 25006.
#[tokio::test]
async fn a_read_only_database_is_transient() {
    let url = testing::fresh_postgres().await;
    let name = database_name(&url);
    let mut admin = admin().await;
    admin
        .execute(format!("ALTER DATABASE {name} SET default_transaction_read_only = on").as_str())
        .await
        .expect("make read-only");
    // New sessions start read-only.
    let mut conn = {
        use sqlx::ConnectOptions;
        let opts: sqlx::any::AnyConnectOptions = url.parse().expect("url");
        opts.connect().await.expect("connect")
    };
    let err = conn
        .execute("CREATE TABLE t (x INT)")
        .await
        .map_err(StoreError::from)
        .expect_err("writes are refused");
    assert_eq!(sqlstate(&err).as_deref(), Some("25006"), "{err}");
    assert!(err.is_transient(), "25006 must be transient: {err}");
}

#[tokio::test]
async fn a_missing_table_is_permanent() {
    let url = testing::fresh_postgres().await;
    let db = Db::connect(&url, "transient_test").await.expect("connect");
    let err = db
        .pool()
        .execute("SELECT * FROM no_such_table")
        .await
        .map_err(StoreError::from)
        .expect_err("no such table");
    assert_eq!(sqlstate(&err).as_deref(), Some("42P01"), "{err}");
    assert!(!err.is_transient());
    assert!(matches!(HandleError::from(err), HandleError::Permanent(_)));
    db.close().await;
}

#[test]
fn sqlstates_are_classified_by_class() {
    use telenet_store::is_transient_sqlstate as transient;
    for code in [
        "57P01", "57P02", "57P03", "08000", "08003", "08006", "08001", "25006", "53100", "53200",
        "53300", "40001", "40P01", "55P03", "57014",
    ] {
        assert!(transient(code), "{code} passes");
    }
    for code in [
        "23505", "23503", "42P01", "42601", "22001", "25P02", "XX000",
    ] {
        assert!(!transient(code), "{code} does not pass");
    }
}

/// A handler that meets an unavailable database holds its delivery and
/// handles it again until the database is back: the event is applied once,
/// never dead-lettered, and other groups' events are not held up.
#[tokio::test]
async fn a_consumer_holds_its_event_while_the_database_is_unavailable() {
    // Retries through the bus would dead-letter after the first delay.
    let bus: SharedBus = Arc::new(MemoryBus::new(RetryPolicy {
        delays: vec![Duration::from_millis(10)],
    }));
    let subscription = consumer::subscribe(&bus, SubscribeSpec::new("held", &["inbound.#"]))
        .await
        .expect("subscribe");
    let calls = Arc::new(AtomicU32::new(0));
    let applied = Arc::new(tokio::sync::Notify::new());
    let token = CancellationToken::new();
    let task = {
        let calls = calls.clone();
        let applied = applied.clone();
        tokio::spawn(consumer::run_on(
            subscription,
            4,
            token.clone(),
            move |incoming| {
                let calls = calls.clone();
                let applied = applied.clone();
                async move {
                    assert_eq!(
                        incoming.attempt, 1,
                        "held in place, not retried through the bus"
                    );
                    // Down for the first four tries (about 3 s of pauses).
                    if calls.fetch_add(1, Ordering::SeqCst) < 4 {
                        return Err(StoreError::Database(sqlx::Error::PoolTimedOut).into());
                    }
                    applied.notify_one();
                    Ok::<(), HandleError>(())
                }
            },
        ))
    };
    bus.publish(&[Event::new("inbound.message", "x")])
        .await
        .expect("publish");
    tokio::time::timeout(Duration::from_secs(20), applied.notified())
        .await
        .expect("the event is applied once the database is back");
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    token.cancel();
    task.await.expect("consumer stops");
    let dead = bus.drain_dead_letters("held", 10).await.expect("drain");
    assert!(dead.is_empty(), "nothing dead-lettered: {dead:?}");
}

/// A consumer stopping while it holds an event returns the event to the
/// queue rather than settling it.
#[tokio::test]
async fn a_held_event_goes_back_to_the_queue_on_stop() {
    let bus: SharedBus = Arc::new(MemoryBus::new(RetryPolicy::default()));
    let spec = SubscribeSpec::new("held-stop", &["inbound.#"]);
    let subscription = consumer::subscribe(&bus, spec).await.expect("subscribe");
    let token = CancellationToken::new();
    let tried = Arc::new(tokio::sync::Notify::new());
    let task = {
        let tried = tried.clone();
        tokio::spawn(consumer::run_on(
            subscription,
            1,
            token.clone(),
            move |_| {
                let tried = tried.clone();
                async move {
                    tried.notify_one();
                    Err::<(), _>(HandleError::Unavailable("database down".into()))
                }
            },
        ))
    };
    bus.publish(&[Event::new("inbound.message", "y")])
        .await
        .expect("publish");
    tried.notified().await;
    token.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops promptly while holding")
        .expect("join");
    // The next consumer of the group gets it.
    let again = consumer::subscribe(&bus, SubscribeSpec::new("held-stop", &["inbound.#"]))
        .await
        .expect("subscribe again");
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let token = CancellationToken::new();
    let task = tokio::spawn(consumer::run_on(again, 1, token.clone(), move |incoming| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(incoming.event.payload.clone()).await;
            Ok::<(), HandleError>(())
        }
    }));
    let payload = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("redelivered")
        .expect("payload");
    assert_eq!(&payload[..], b"y");
    token.cancel();
    task.await.expect("join");
    let dead = bus
        .drain_dead_letters("held-stop", 10)
        .await
        .expect("drain");
    assert!(dead.is_empty());
}
