//! RabbitMQ behaviour the in-memory bus has no counterpart for: losing and
//! regaining the broker.

mod common;

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use futures::FutureExt;

use telenet_bus::rabbitmq::RabbitBus;
use telenet_bus::{BusError, Event, EventBus, RetryPolicy, SubscribeSpec};

/// A port nothing listens on: connection attempts are refused at once.
const DEAD_URL: &str = "amqp://guest:guest@127.0.0.1:1/%2f";
/// Every operation is bounded by 5 s; allow some scheduling slack.
const BOUND: Duration = Duration::from_secs(6);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_fails_fast_while_the_broker_is_gone_and_recovers_after() {
    let bus = common::rabbit(RetryPolicy::default()).await;
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        AssertUnwindSafe(outage_and_recovery(&bus)).catch_unwind(),
    )
    .await;
    // Clean up even when the test failed, then report the failure.
    common::clean_up(&[bus]).await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("the outage test did not finish within 60 s"),
    }
}

async fn outage_and_recovery(bus: &RabbitBus) {
    let group = format!("reconnect-{}", uuid::Uuid::new_v4().simple());
    let mut sub = bus
        .subscribe(SubscribeSpec::new(&group, &["outage.#"]))
        .await
        .expect("subscribe");
    bus.publish(&[Event::new("outage.before", "1")])
        .await
        .expect("publish before the outage");
    let d = tokio::time::timeout(BOUND, sub.next())
        .await
        .expect("delivery before the outage")
        .expect("subscription open");
    d.ack().await.expect("ack");

    // The broker "goes away": the connection drops and cannot be re-made.
    bus.redirect_for_test(DEAD_URL).expect("redirect");
    bus.kill_connection_for_test().await;

    for attempt in 1..=3 {
        let started = Instant::now();
        let outcome = bus.publish(&[Event::new("outage.during", "2")]).await;
        let took = started.elapsed();
        assert!(
            matches!(outcome, Err(BusError::Unavailable(_))),
            "publish {attempt} during the outage: {outcome:?}"
        );
        assert!(took < BOUND, "publish {attempt} took {took:?}");
    }
    assert!(
        matches!(bus.ping().await, Err(BusError::Unavailable(_))),
        "ping during the outage"
    );

    // The broker is back: a later publish reconnects and succeeds.
    bus.redirect_for_test(&common::amqp_url())
        .expect("redirect");
    let after = Event::new("outage.after", "3");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match bus.publish(std::slice::from_ref(&after)).await {
            Ok(()) => break,
            Err(BusError::Unavailable(why)) if Instant::now() < deadline => {
                eprintln!("still unavailable: {why}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("publish after the outage: {err}"),
        }
    }
    bus.ping().await.expect("ping after the outage");

    // The subscription re-established its consumer and keeps feeding the
    // same receiver; what failed to publish during the outage never arrives.
    let d = tokio::time::timeout(Duration::from_secs(15), sub.next())
        .await
        .expect("delivery after the outage")
        .expect("subscription open");
    assert_eq!(d.event, after);
    d.ack().await.expect("ack after the outage");
}

#[tokio::test]
async fn connect_to_an_unreachable_broker_is_unavailable_promptly() {
    let started = Instant::now();
    let outcome = RabbitBus::connect(DEAD_URL, "unused.", RetryPolicy::default()).await;
    assert!(
        matches!(outcome, Err(BusError::Unavailable(_))),
        "{:?}",
        outcome.err()
    );
    assert!(started.elapsed() < BOUND);
}

/// TLS files that would be ignored (a plaintext URL) or cannot be read are
/// refused before anything connects, naming what to fix. (TLS itself is
/// tested against a broker with a TLS listener in tests/tests/infra_tls.rs
/// of the workspace's end-to-end tests.)
#[tokio::test]
async fn bus_tls_that_cannot_apply_is_a_config_error() {
    let ca = telenet_kit::infra_tls::InfraTlsConfig::trusting("/nonexistent/ca.crt");
    for (url, expected) in [
        ("amqp://guest:guest@127.0.0.1/%2f", "use amqps://"),
        (
            "amqps://guest:guest@127.0.0.1/%2f",
            "bus_tls.ca_file: cannot read /nonexistent/ca.crt",
        ),
    ] {
        let outcome = RabbitBus::connect_with_tls(url, "x.", RetryPolicy::default(), &ca).await;
        match outcome {
            Err(BusError::Config(message)) => assert!(message.contains(expected), "{message}"),
            other => panic!("{url}: expected a config error, got {:?}", other.err()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_connection_is_repaired_on_the_next_call() {
    let bus = common::rabbit(RetryPolicy::default()).await;
    bus.declare(&[SubscribeSpec::new("repaired", &["killed.#"])])
        .await
        .expect("declare");
    bus.kill_connection_for_test().await;
    let outcome = bus.publish(&[Event::new("killed.event", "x")]).await;
    common::clean_up(&[bus]).await;
    outcome.expect("publish right after a drop reconnects");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_retry_delay_is_a_config_error_naming_the_queue() {
    let prefix = common::unique_prefix();
    let group = "policy";
    let url = common::amqp_url();
    let short = RetryPolicy {
        delays: vec![Duration::from_millis(100)],
    };
    let long = RetryPolicy {
        delays: vec![Duration::from_millis(200)],
    };
    let first = RabbitBus::connect(&url, &prefix, short)
        .await
        .expect("connect");
    let second = RabbitBus::connect(&url, &prefix, long)
        .await
        .expect("connect");
    let kept = first.subscribe(SubscribeSpec::new(group, &["p.#"])).await;
    let changed = second.subscribe(SubscribeSpec::new(group, &["p.#"])).await;
    drop(kept);
    second.close().await;
    common::clean_up(&[std::sync::Arc::new(first)]).await;
    match changed {
        Err(BusError::Config(message)) => {
            assert!(
                message.contains(&format!("{prefix}{group}.retry.1")),
                "{message}"
            )
        }
        other => panic!("expected a config error, got {:?}", other.err()),
    }
}
