//! What agents and operators see of outbound requests to receivers, through
//! the REST gateway of a running suite: a channel pointing at an internal
//! address is refused when it is connected, and a reply that could not be
//! sent within `dispatch.pending_deadline` ends `failed` in its
//! conversation, with a reason, instead of staying `pending`.

use std::time::Duration;

use serde_json::json;
use telenet::ServiceName;
use telenet_tests::flow::Gateway;
use telenet_tests::{Receiver, eventually, inbound_text, send_webhook, world};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_pointing_at_internal_addresses_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = world::embedded(dir.path());
    // As `telenet serve` runs by default: public receivers only.
    config.ingress.private_receivers.clear();
    config.dispatch.private_receivers.clear();
    let (running, token) = world::start(config, &ServiceName::ALL).await;
    let gateway = Gateway::of(&running);
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:9/outbound",
        "http://[::1]/outbound",
        "http://10.0.0.8/outbound",
    ] {
        let (status, problem) = gateway
            .call(
                reqwest::Method::POST,
                "/v1/channels",
                Some(json!({"kind": "custom", "name": "Shop", "outbound_url": url})),
                &[],
            )
            .await;
        assert_eq!(status, 400, "{url}: {problem}");
        assert_eq!(problem["field"], "outbound_url", "{url}: {problem}");
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(
            detail.starts_with("outbound_url: ") && detail.contains("is not a public address"),
            "{url}: {detail}"
        );
    }
    let (_, page) = gateway
        .call(reqwest::Method::GET, "/v1/channels", None, &[])
        .await;
    assert_eq!(page["items"], json!([]), "nothing was connected");
    token.cancel();
    running.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_not_sent_within_the_deadline_ends_failed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = world::embedded(dir.path());
    config.dispatch.pending_deadline = Duration::from_secs(2);
    config.dispatch.sweep_interval = Duration::from_millis(100);
    // More attempts than the bus retries: the request is dead-lettered
    // while the message is still pending.
    config.dispatch.max_attempts = 100;
    let (running, token) = world::start(config, &ServiceName::ALL).await;
    let gateway = Gateway::of(&running);
    let receiver = Receiver::start().await;
    receiver.fail_next(&[503; 100]).await;

    let (status, channel) = gateway
        .call(
            reqwest::Method::POST,
            "/v1/channels",
            Some(json!({"kind": "custom", "name": "Shop", "outbound_url": receiver.url()})),
            &[],
        )
        .await;
    assert_eq!(status, 201, "{channel}");
    let secret = channel["secret"].as_str().expect("secret");
    receiver.set_secret(secret).await;
    let answer = send_webhook(
        &gateway.http,
        channel["webhook_url"].as_str().expect("webhook url"),
        secret,
        "wh-1",
        &inbound_text("in-1", "+34600111222", "Hola"),
    )
    .await;
    assert_eq!(answer.status(), 200);
    let conversation = eventually("the conversation", WAIT, || async {
        let (_, page) = gateway
            .call(reqwest::Method::GET, "/v1/conversations", None, &[])
            .await;
        page["items"].as_array().and_then(|a| a.first().cloned())
    })
    .await;
    let conversation_id = conversation["id"].as_str().expect("id").to_owned();
    let messages = format!("/v1/conversations/{conversation_id}/messages");
    let (status, sent) = gateway
        .call(
            reqwest::Method::POST,
            &messages,
            Some(json!({"text": "¡Hola!"})),
            &[],
        )
        .await;
    assert_eq!(status, 201, "{sent}");
    let reply_id = sent["message"]["id"].as_str().expect("id").to_owned();

    let failed = eventually("the reply to fail", WAIT, || async {
        let (_, page) = gateway
            .call(reqwest::Method::GET, &messages, None, &[])
            .await;
        page["items"]
            .as_array()?
            .iter()
            .find(|m| m["id"] == reply_id.as_str() && m["status"] == "failed")
            .cloned()
    })
    .await;
    assert_eq!(
        failed["error"], "not delivered within 2 seconds",
        "{failed}"
    );
    assert!(receiver.messages().await.is_empty());
    token.cancel();
    running.wait().await;
}
