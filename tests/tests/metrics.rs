//! Prometheus metrics after real traffic: one webhook and one reply through
//! the whole suite (embedded defaults), then `GET /metrics` shows the RED
//! counters of the gRPC methods and HTTP routes used, the bus publishes and
//! consumes, the outbox relays, the queue depths, dispatch results and
//! presence counts.

use std::collections::BTreeMap;
use std::time::Duration;

use telenet::ServiceName;
use telenet_tests::{Receiver, eventually, flow, world};

/// `series{labels}` → value of one scrape.
fn parse(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

async fn scrape(url: &str) -> (String, BTreeMap<String, f64>) {
    let response = match reqwest::get(url).await {
        Ok(r) => r,
        Err(e) => panic!("scraping {url}: {e}"),
    };
    assert_eq!(response.status(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.unwrap_or_default();
    let samples = parse(&text);
    (text, samples)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_count_the_traffic_of_a_conversation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (running, token) = world::start(world::embedded(dir.path()), &ServiceName::ALL).await;
    let url = format!(
        "http://{}/metrics",
        running.metrics_addr.expect("metrics listener")
    );
    let receiver = Receiver::start().await;
    flow::webhook_then_reply(&running, &receiver, &[], &[]).await;

    // Each series must exist with at least this value. Consumers and the
    // relay settle just after what the test waited for: poll a little.
    let wanted: &[(&str, f64)] = &[
        // RED per gRPC method (the consumer's call to contacts, the reply).
        (
            r#"telenet_grpc_server_requests_total{grpc_service="telenet.contacts.v1.Contacts",grpc_method="UpsertByIdentity",grpc_code="OK"}"#,
            1.0,
        ),
        (
            r#"telenet_grpc_server_requests_total{grpc_service="telenet.conversations.v1.Conversations",grpc_method="SendMessage",grpc_code="OK"}"#,
            1.0,
        ),
        (
            r#"telenet_grpc_server_request_duration_seconds_count{grpc_service="telenet.conversations.v1.Conversations",grpc_method="SendMessage"}"#,
            1.0,
        ),
        // RED per HTTP route, by template.
        (
            r#"telenet_http_server_requests_total{listener="webhooks",route="/webhooks/{channel_id}",method="POST",status="200"}"#,
            1.0,
        ),
        (
            r#"telenet_http_server_requests_total{listener="gateway",route="/v1/conversations/{id}/messages",method="POST",status="201"}"#,
            1.0,
        ),
        (
            r#"telenet_http_server_request_duration_seconds_count{listener="gateway",route="/v1/channels",method="POST"}"#,
            1.0,
        ),
        // The bus: published by ingress and by the outbox, consumed and acked.
        (
            r#"telenet_bus_published_events_total{routing_key="inbound.message",outcome="ok"}"#,
            1.0,
        ),
        (
            r#"telenet_bus_published_events_total{routing_key="outbound.requested",outcome="ok"}"#,
            1.0,
        ),
        (
            r#"telenet_bus_consumed_events_total{group="conversations.inbound",routing_key="inbound.message",outcome="ack"}"#,
            1.0,
        ),
        (
            r#"telenet_bus_consumed_events_total{group="dispatch",routing_key="outbound.requested",outcome="ack"}"#,
            1.0,
        ),
        (
            r#"telenet_bus_consume_duration_seconds_count{group="dispatch",routing_key="outbound.requested"}"#,
            1.0,
        ),
        ("telenet_bus_publish_duration_seconds_count", 2.0),
        // The outbox of the services that wrote events.
        (
            r#"telenet_outbox_relayed_events_total{db="conversations"}"#,
            2.0,
        ),
        (r#"telenet_outbox_relayed_events_total{db="dispatch"}"#, 1.0),
        // Dispatch.
        (
            r#"telenet_dispatch_attempts_total{channel_kind="custom",outcome="sent"}"#,
            1.0,
        ),
        (
            r#"telenet_dispatch_send_duration_seconds_count{channel_kind="custom"}"#,
            1.0,
        ),
    ];
    // Gauges: present (their values depend on timing).
    let present = [
        r#"telenet_outbox_backlog_events{db="conversations"}"#,
        r#"telenet_outbox_oldest_event_age_seconds{db="dispatch"}"#,
        r#"telenet_bus_queue_ready_messages{group="conversations.inbound"}"#,
        r#"telenet_bus_queue_dead_letters{group="dispatch"}"#,
        r#"telenet_presence_users{status="online"}"#,
        r#"telenet_build_info{version="0.1.0"}"#,
    ];
    let (text, samples) = eventually(
        "every metric of the traffic",
        Duration::from_secs(20),
        || {
            let url = url.clone();
            async move {
                let (text, samples) = scrape(&url).await;
                let complete = wanted
                    .iter()
                    .all(|(series, min)| samples.get(*series).is_some_and(|v| v >= min))
                    && present.iter().all(|series| samples.contains_key(*series));
                complete.then_some((text, samples))
            }
        },
    )
    .await;

    // Health checks are not measured, and no raw ids reach a label.
    assert!(!text.contains("grpc.health"), "{text}");
    assert!(
        samples
            .keys()
            .filter(|s| s.starts_with("telenet_http_server_requests_total"))
            .all(|s| !s.contains("/webhooks/0") && !s.contains("/v1/conversations/0")),
        "{text}"
    );
    token.cancel();
    running.wait().await;
}
