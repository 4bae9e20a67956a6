//! Dispatch started as the process starts it (`start` with a service
//! context), on both backends: a request published as soon as it is up is
//! consumed, its result is published as `outbound.status` by the runner's
//! outbox relay, answered over gRPC and counted in the process's metrics.
//! Its clients of ingress and media reach the process's gRPC port, where
//! only dispatch answers here: the channel lookup is refused for good.
//! The sweeper runs too: a delivery left pending past its deadline fails.

use std::time::Duration;

use telenet_bus::SubscribeSpec;
use telenet_dispatch::{CALLS, Config, MIGRATIONS, NAME, start};
use telenet_proto::dispatch::v1::dispatch_client::DispatchClient;
use telenet_proto::dispatch::v1::{DeliveryState, GetDeliveryRequest};
use telenet_proto::events::v1::{OutboundRequested, event_envelope::Payload};
use telenet_runtime::testing::{TestService, TestSetup};
use telenet_store::events;
use telenet_store::testing::Backend;

telenet_store::on_both_backends!(
    a_started_dispatch_consumes_records_and_answers,
    a_started_dispatch_fails_deliveries_pending_past_their_deadline,
);

async fn a_started_dispatch_consumes_records_and_answers(backend: Backend) {
    let setup = TestSetup::new(NAME, Config::default())
        .calls(CALLS)
        .database(backend, MIGRATIONS);
    let service = TestService::start(setup, start).await;
    let mut statuses = service
        .bus
        .subscribe(SubscribeSpec::new("observer", &["outbound.status"]))
        .await
        .expect("observe");

    let requested = events::envelope(
        "ws1",
        Payload::OutboundRequested(OutboundRequested {
            message_id: "m-1".into(),
            conversation_id: "conv-1".into(),
            channel_id: "ch-1".into(),
            recipient_external_id: "+4915550001".into(),
            text: "hello".into(),
            attachments: Vec::new(),
            ..Default::default()
        }),
        None,
    );
    service
        .bus
        .publish(&[events::to_bus(&requested)])
        .await
        .expect("publish");

    let delivery = tokio::time::timeout(Duration::from_secs(15), statuses.next())
        .await
        .expect("a status in time")
        .expect("bus open");
    let env = events::from_bus(&delivery.event).expect("envelope");
    delivery.ack().await.expect("ack");
    let Some(Payload::OutboundStatusChanged(status)) = env.payload else {
        panic!("not a status: {env:?}");
    };
    assert_eq!(env.workspace_id, "ws1");
    assert_eq!(
        (status.message_id.as_str(), status.state()),
        ("m-1", DeliveryState::Failed)
    );
    assert!(
        status
            .error
            .contains("channel directory rejected the lookup"),
        "{}",
        status.error
    );

    let answered = DispatchClient::new(service.channel())
        .get_delivery(GetDeliveryRequest {
            workspace_id: "ws1".into(),
            message_id: "m-1".into(),
        })
        .await
        .expect("get delivery")
        .into_inner();
    assert_eq!(
        (answered.state(), answered.attempts),
        (DeliveryState::Failed, 1)
    );

    let metrics = service.metrics.encode().expect("metrics");
    assert!(
        metrics.contains(
            r#"telenet_dispatch_attempts_total{channel_kind="unknown",outcome="failed"} 1"#
        ),
        "{metrics}"
    );
    service.stop().await;
}

async fn a_started_dispatch_fails_deliveries_pending_past_their_deadline(backend: Backend) {
    let config = Config {
        pending_deadline: Duration::from_secs(60),
        sweep_interval: Duration::from_millis(100),
        ..Config::default()
    };
    let setup = TestSetup::new(NAME, config)
        .calls(CALLS)
        .database(backend, MIGRATIONS);
    let service = TestService::start(setup, start).await;
    let mut statuses = service
        .bus
        .subscribe(SubscribeSpec::new("observer", &["outbound.status"]))
        .await
        .expect("observe");
    // A delivery attempted twice an hour ago whose request was lost since
    // (dead-lettered), and one requested just now.
    let db = service.db.as_ref().expect("database");
    let now = telenet_store::now_micros();
    for (message_id, requested_at) in [("m-stuck", now - 3_600_000_000), ("m-fresh", now)] {
        telenet_store::sqlx::query(
            "INSERT INTO deliveries (workspace_id, message_id, channel_id, state, attempts, \
             created_at, updated_at, requested_at) VALUES ('ws1', $1, 'ch-1', 'pending', 2, $2, $2, $2)",
        )
        .bind(message_id)
        .bind(requested_at)
        .execute(db.pool())
        .await
        .expect("insert");
    }

    let delivery = tokio::time::timeout(Duration::from_secs(15), statuses.next())
        .await
        .expect("a status in time")
        .expect("bus open");
    let env = events::from_bus(&delivery.event).expect("envelope");
    delivery.ack().await.expect("ack");
    let Some(Payload::OutboundStatusChanged(status)) = env.payload else {
        panic!("not a status: {env:?}");
    };
    assert_eq!(
        (
            env.workspace_id.as_str(),
            status.message_id.as_str(),
            status.state(),
            status.error.as_str(),
            status.attempts
        ),
        (
            "ws1",
            "m-stuck",
            DeliveryState::Failed,
            "not delivered within 1 minute",
            2
        )
    );
    let client = DispatchClient::new(service.channel());
    for (message_id, state) in [
        ("m-stuck", DeliveryState::Failed),
        ("m-fresh", DeliveryState::Pending),
    ] {
        let answered = client
            .clone()
            .get_delivery(GetDeliveryRequest {
                workspace_id: "ws1".into(),
                message_id: message_id.into(),
            })
            .await
            .expect("get delivery")
            .into_inner();
        assert_eq!(answered.state(), state, "{message_id}");
    }
    service.stop().await;
}
