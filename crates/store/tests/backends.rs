//! The store's contract, run on PostgreSQL and on SQLite: migrations apply
//! (twice, idempotently), the outbox relays committed events in order and
//! drops rolled-back ones, and idempotency marks an event once per consumer.

use std::sync::Arc;

use telenet_bus::{Event, EventBus, SubscribeSpec};
use telenet_kit::metrics::Metrics;
use telenet_store::{Db, Migrations, idempotency, outbox, testing};
use tokio_util::sync::CancellationToken;

const NO_MIGRATIONS: Migrations = Migrations {
    postgres: &[],
    sqlite: &[],
};

async fn check_contract(db: Db) {
    db.migrate(&NO_MIGRATIONS).await.expect("migrate");
    db.migrate(&NO_MIGRATIONS).await.expect("migrate again");
    db.ping().await.expect("ping");

    // Idempotency: first mark wins, per consumer.
    let mut tx = db.begin().await.expect("begin");
    assert!(
        idempotency::mark_processed(&mut tx, "a", "e1")
            .await
            .expect("mark")
    );
    assert!(
        !idempotency::mark_processed(&mut tx, "a", "e1")
            .await
            .expect("mark")
    );
    assert!(
        idempotency::mark_processed(&mut tx, "b", "e1")
            .await
            .expect("mark")
    );
    tx.commit().await.expect("commit");

    // A rolled-back mark does not count.
    let mut tx = db.begin().await.expect("begin");
    assert!(
        idempotency::mark_processed(&mut tx, "a", "e2")
            .await
            .expect("mark")
    );
    tx.rollback().await.expect("rollback");
    let mut tx = db.begin().await.expect("begin");
    assert!(
        idempotency::mark_processed(&mut tx, "a", "e2")
            .await
            .expect("mark")
    );
    tx.commit().await.expect("commit");

    // A transaction begun once per event carries the mark; a second one is
    // not begun.
    let tx = idempotency::begin_once(&db, "a", "e3")
        .await
        .expect("begin")
        .expect("a new event");
    tx.commit().await.expect("commit");
    assert!(
        idempotency::begin_once(&db, "a", "e3")
            .await
            .expect("begin")
            .is_none()
    );

    // Outbox: committed events are relayed in order, rolled-back ones never.
    let bus = Arc::new(telenet_bus::memory::MemoryBus::new(Default::default()));
    let mut sub = bus
        .subscribe(SubscribeSpec::new("t", &["test.#"]))
        .await
        .expect("subscribe");
    let mut tx = db.begin().await.expect("begin");
    let first = Event::new("test.one", b"1".to_vec());
    let second = Event::new("test.two", b"2".to_vec());
    outbox::enqueue(&mut tx, &[first.clone(), second.clone()])
        .await
        .expect("enqueue");
    db.commit(tx).await.expect("commit");
    let mut tx = db.begin().await.expect("begin");
    outbox::enqueue(&mut tx, &[Event::new("test.lost", b"x".to_vec())])
        .await
        .expect("enqueue");
    tx.rollback().await.expect("rollback");
    assert_eq!(outbox::backlog(&db).await.expect("backlog"), 2);
    let (waiting, oldest) = outbox::backlog_and_oldest(&db).await.expect("backlog");
    assert_eq!(waiting, 2);
    assert!(
        oldest.is_some_and(|at| at <= telenet_store::now_micros()),
        "{oldest:?}"
    );

    let relay = outbox::Relay::new(db.clone(), bus.clone());
    assert_eq!(relay.relay_once().await.expect("relay"), 2);
    assert_eq!(outbox::backlog(&db).await.expect("backlog"), 0);
    assert_eq!(
        outbox::backlog_and_oldest(&db).await.expect("backlog"),
        (0, None)
    );
    for expected in [first, second] {
        let d = sub.next().await.expect("delivery");
        assert_eq!(d.event, expected);
        d.ack().await.expect("ack");
    }
    assert_eq!(relay.relay_once().await.expect("relay"), 0);

    // A running relay reports its backlog (counted before it publishes) and
    // what it relayed.
    let metrics = Metrics::new();
    let mut tx = db.begin().await.expect("begin");
    let third = Event::new("test.three", b"3".to_vec());
    outbox::enqueue(&mut tx, std::slice::from_ref(&third))
        .await
        .expect("enqueue");
    db.commit(tx).await.expect("commit");
    let token = CancellationToken::new();
    let running = tokio::spawn(
        outbox::Relay::new(db.clone(), bus.clone())
            .with_metrics(metrics.clone(), "store")
            .run(token.clone()),
    );
    let d = sub.next().await.expect("delivery");
    assert_eq!(d.event, third);
    d.ack().await.expect("ack");
    token.cancel();
    running.await.expect("relay stops");
    let text = metrics.encode().expect("metrics");
    for series in [
        r#"telenet_outbox_backlog_events{db="store"} 1"#,
        r#"telenet_outbox_relayed_events_total{db="store"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == series), "{series}\n{text}");
    }

    // Stopping, the relay publishes everything already committed — more
    // than one batch — before it returns.
    let mut tx = db.begin().await.expect("begin");
    let pending: Vec<Event> = (0..1_203)
        .map(|i| Event::new("test.flush", i.to_string().into_bytes()))
        .collect();
    outbox::enqueue(&mut tx, &pending).await.expect("enqueue");
    db.commit(tx).await.expect("commit");
    let stopped = CancellationToken::new();
    stopped.cancel();
    outbox::Relay::new(db.clone(), bus.clone())
        .run(stopped)
        .await;
    assert_eq!(outbox::backlog(&db).await.expect("backlog"), 0);
    for expected in &pending {
        let d = sub.next().await.expect("delivery");
        assert_eq!(&d.event, expected);
        d.ack().await.expect("ack");
    }

    // An event no consumer group binds would be dropped by the broker: the
    // relay keeps its row (and the rows after it) and publishes it once a
    // group binds it.
    let mut tx = db.begin().await.expect("begin");
    let unbound = Event::new("unbound.event", b"u".to_vec());
    outbox::enqueue(&mut tx, std::slice::from_ref(&unbound))
        .await
        .expect("enqueue");
    db.commit(tx).await.expect("commit");
    let relay = outbox::Relay::new(db.clone(), bus.clone());
    let refused = relay.relay_once().await;
    assert!(
        matches!(
            &refused,
            Err(telenet_store::StoreError::Bus(telenet_bus::BusError::Unroutable { routing_key }))
                if routing_key == "unbound.event"
        ),
        "{refused:?}"
    );
    assert_eq!(
        outbox::backlog(&db).await.expect("backlog"),
        1,
        "the row stays"
    );
    let late = SubscribeSpec::new("late", &["unbound.#"]);
    bus.declare(std::slice::from_ref(&late))
        .await
        .expect("declare");
    assert_eq!(relay.relay_once().await.expect("relay"), 1);
    assert_eq!(outbox::backlog(&db).await.expect("backlog"), 0);
    let mut late = bus.subscribe(late).await.expect("subscribe");
    let d = late.next().await.expect("delivery");
    assert_eq!(d.event, unbound);
    d.ack().await.expect("ack");
    db.close().await;
}

#[tokio::test]
async fn sqlite_backend() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::connect(&testing::sqlite_in(dir.path(), "store"), "store")
        .await
        .expect("connect sqlite");
    check_contract(db).await;
}

#[tokio::test]
async fn postgres_backend() {
    let url = testing::fresh_postgres().await;
    let db = Db::connect(&url, "store").await.expect("connect postgres");
    check_contract(db).await;
}

#[tokio::test]
async fn unknown_schemes_are_named() {
    let err = Db::connect("mysql://x", "s").await.expect_err("must fail");
    assert!(err.to_string().contains("unsupported scheme"), "{err}");
}
