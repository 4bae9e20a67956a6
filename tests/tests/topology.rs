//! A first install on a fresh broker namespace (ADR 14): `telenet migrate`
//! declares every consumer group's queue, so an event published before any
//! consumer ever subscribed waits in its queue instead of vanishing; and a
//! process running only ingress declares the same at start, so a webhook it
//! acknowledges is in the consumers' queue although they never ran.

use std::time::Duration;

use telenet::{ServiceName, Suite};
use telenet_bus::{BusError, Event, QueueDepth};
use telenet_proto::common::v1::ChannelKind;
use telenet_proto::ingress::v1::CreateChannelRequest;
use telenet_proto::ingress::v1::channels_client::ChannelsClient;
use telenet_tests::{eventually, inbound_text, send_webhook, world};

/// Conversations' group for inbound messages (`telenet_conversations`'s
/// consumer groups; never subscribed in this test).
const INBOUND_GROUP: &str = "conversations.inbound";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_wait_in_declared_queues_before_any_consumer_subscribed() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = world::real(dir.path()).await;

    // A prefix nothing ever used: an event would reach no queue.
    let suite = Suite::new(config.clone(), ServiceName::ALL).with_retry(world::test_retry());
    let bus = suite.bus().await.expect("bus");
    let refused = bus
        .publish(&[Event::new("inbound.message", Vec::new())])
        .await;
    assert!(
        matches!(refused, Err(BusError::Unroutable { .. })),
        "before migrate: {refused:?}"
    );
    // `telenet migrate`.
    suite.migrate().await.expect("migrate");
    let bus = suite.bus().await.expect("bus");
    assert!(
        telenet::suite::topology()
            .iter()
            .any(|spec| spec.group == INBOUND_GROUP),
        "{INBOUND_GROUP} is a group of the topology"
    );
    // Every routing key is routable now; before migrate none was.
    for key in telenet_proto::events::v1::ROUTING_KEYS {
        bus.publish(&[Event::new(*key, Vec::new())])
            .await
            .unwrap_or_else(|e| panic!("{key} after migrate: {e}"));
    }
    let depth = |bus: telenet_bus::SharedBus| async move {
        bus.queue_depth(INBOUND_GROUP).await.expect("queue depth")
    };
    eventually(
        "the event published after migrate waits",
        Duration::from_secs(10),
        || {
            let bus = bus.clone();
            async move { (depth(bus).await.ready == 1).then_some(()) }
        },
    )
    .await;

    // Only ingress runs; nobody consumes inbound messages.
    let (running, token) = world::start(config, &[ServiceName::Ingress]).await;
    let grpc = telenet_kit::grpc::channel(
        &format!("http://{}", running.grpc_addr),
        &Default::default(),
    )
    .expect("channel");
    let created = ChannelsClient::new(grpc)
        .create_channel(CreateChannelRequest {
            workspace_id: "ws-topology".into(),
            kind: ChannelKind::Custom as i32,
            name: "Shop".into(),
            outbound_url: "http://127.0.0.1:9/outbound".into(),
            secret: String::new(),
            accepted_voice_types: vec![],
        })
        .await
        .expect("create channel")
        .into_inner();
    let channel = created.channel.expect("channel");
    let http = reqwest::Client::new();
    let answer = send_webhook(
        &http,
        &channel.webhook_url,
        &created.secret,
        "wh-first-install",
        &inbound_text("m-first", "+15550001", "hello?"),
    )
    .await;
    assert_eq!(answer.status().as_u16(), 200);
    eventually(
        "the webhook's event waits for its consumer",
        Duration::from_secs(10),
        || {
            let bus = bus.clone();
            async move {
                (depth(bus).await
                    == QueueDepth {
                        ready: 2,
                        dead_letters: 0,
                    })
                .then_some(())
            }
        },
    )
    .await;
    token.cancel();
    running.wait().await;
}
