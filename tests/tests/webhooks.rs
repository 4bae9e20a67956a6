//! Webhooks of the custom channel against the running suite: accepted ones
//! become conversations; bad input is refused with the right status and
//! changes nothing; duplicates are absorbed; a broker outage answers 503,
//! stores nothing, and the provider's retry later succeeds.

use std::time::Duration;

use serde_json::json;
use telenet::ServiceName;
use telenet_proto::common::v1::ChannelKind;
use telenet_proto::conversations::v1::conversations_client::ConversationsClient;
use telenet_proto::conversations::v1::{ListConversationsRequest, ListMessagesRequest};
use telenet_proto::ingress::v1::CreateChannelRequest;
use telenet_proto::ingress::v1::channels_client::ChannelsClient;
use telenet_tests::world;
use telenet_tests::{eventually, inbound_text, send_raw, send_webhook};

const SERVICES: &[ServiceName] = &[
    ServiceName::Ingress,
    ServiceName::Contacts,
    ServiceName::Conversations,
];

struct Setup {
    workspace: String,
    webhook_url: String,
    secret: String,
    conversations: ConversationsClient<tonic::transport::Channel>,
}

async fn setup(running: &telenet::Running) -> Setup {
    let grpc = telenet_kit::grpc::channel(
        &format!("http://{}", running.grpc_addr),
        &Default::default(),
    )
    .expect("channel");
    let workspace = running.seed.as_ref().expect("seeded").workspace_id.clone();
    let created = ChannelsClient::new(grpc.clone())
        .create_channel(CreateChannelRequest {
            workspace_id: workspace.clone(),
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
    assert!(created.secret.starts_with("whsec_"));
    Setup {
        workspace,
        webhook_url: channel.webhook_url,
        secret: created.secret,
        conversations: ConversationsClient::new(grpc),
    }
}

async fn message_texts(s: &Setup) -> Vec<String> {
    let mut client = s.conversations.clone();
    let convs = client
        .list_conversations(ListConversationsRequest {
            workspace_id: s.workspace.clone(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .conversations;
    let mut texts = Vec::new();
    for c in convs {
        let msgs = client
            .list_messages(ListMessagesRequest {
                workspace_id: s.workspace.clone(),
                conversation_id: c.id,
                page: None,
            })
            .await
            .expect("messages")
            .into_inner()
            .messages;
        texts.extend(msgs.into_iter().map(|m| m.text));
    }
    texts.sort();
    texts
}

#[tokio::test]
async fn bad_input_is_refused_and_duplicates_absorbed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (running, token) = world::start(world::embedded(dir.path()), SERVICES).await;
    let s = setup(&running).await;
    let http = reqwest::Client::new();

    let ok = send_webhook(
        &http,
        &s.webhook_url,
        &s.secret,
        "wh-1",
        &inbound_text("m-1", "+34600", "hola"),
    )
    .await;
    assert_eq!(ok.status(), 200);
    let body: serde_json::Value = ok.json().await.expect("json");
    assert_eq!(body["status"], "accepted");

    // Wrong secret.
    let other = telenet_signing::Secret::generate().expect("rng").expose();
    let r = send_webhook(
        &http,
        &s.webhook_url,
        &other,
        "wh-2",
        &inbound_text("m-2", "+34600", "x"),
    )
    .await;
    assert_eq!(r.status(), 401);
    // Tampered body: signed one thing, sent another.
    let signed = telenet_signing::Secret::parse(&s.secret)
        .expect("secret")
        .sign("wh-3", telenet_signing::unix_now(), b"{}");
    let r = http
        .post(&s.webhook_url)
        .header("webhook-id", "wh-3")
        .header("webhook-timestamp", telenet_signing::unix_now().to_string())
        .header("webhook-signature", signed)
        .body(inbound_text("m-3", "+34600", "x").to_string())
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
    // Stale timestamp (10 minutes old), correctly signed.
    let r = send_raw(
        &http,
        &s.webhook_url,
        &s.secret,
        "wh-4",
        telenet_signing::unix_now() - 600,
        inbound_text("m-4", "+34600", "x").to_string().as_bytes(),
    )
    .await;
    assert_eq!(r.status(), 401);
    assert!(r.text().await.expect("text").contains("tolerance"));
    // Missing headers.
    let r = http
        .post(&s.webhook_url)
        .body("{}")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
    // Malformed JSON and a well-formed but invalid message.
    let r = send_raw(
        &http,
        &s.webhook_url,
        &s.secret,
        "wh-5",
        telenet_signing::unix_now(),
        b"{\"type\":",
    )
    .await;
    assert_eq!(r.status(), 400);
    let r = send_webhook(&http, &s.webhook_url, &s.secret, "wh-6", &json!({"type":"message.inbound","message":{"external_id":"m-6","sender":{"external_id":""},"text":"x"}})).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.expect("text").contains("sender.external_id"));
    // Unknown channel.
    let unknown = s
        .webhook_url
        .rsplit_once('/')
        .map(|(base, _)| format!("{base}/{}", uuid::Uuid::now_v7()))
        .expect("url");
    let r = send_webhook(
        &http,
        &unknown,
        &s.secret,
        "wh-7",
        &inbound_text("m-7", "+34600", "x"),
    )
    .await;
    assert_eq!(r.status(), 404);
    // Too large (limit 1 MiB).
    let big = "x".repeat(1024 * 1024 + 10);
    let r = send_webhook(
        &http,
        &s.webhook_url,
        &s.secret,
        "wh-8",
        &inbound_text("m-8", "+34600", &big),
    )
    .await;
    assert_eq!(r.status(), 413);
    // Duplicate delivery: same webhook id; and the same message under a new webhook id.
    let r = send_webhook(
        &http,
        &s.webhook_url,
        &s.secret,
        "wh-1",
        &inbound_text("m-1", "+34600", "hola"),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.expect("json")["status"],
        "duplicate"
    );
    let r = send_webhook(
        &http,
        &s.webhook_url,
        &s.secret,
        "wh-9",
        &inbound_text("m-1", "+34600", "hola"),
    )
    .await;
    assert_eq!(
        r.json::<serde_json::Value>().await.expect("json")["status"],
        "duplicate"
    );

    // The one good message, and nothing else, reached the inbox. A refused
    // webhook id is not burnt: the same id with a good body is accepted.
    let texts = eventually(
        "the message in the inbox",
        Duration::from_secs(10),
        || async {
            let t = message_texts(&s).await;
            (!t.is_empty()).then_some(t)
        },
    )
    .await;
    assert_eq!(texts, vec!["hola".to_owned()]);
    let r = send_webhook(
        &http,
        &s.webhook_url,
        &s.secret,
        "wh-5",
        &inbound_text("m-5", "+34600", "again"),
    )
    .await;
    assert_eq!(
        r.json::<serde_json::Value>().await.expect("json")["status"],
        "accepted"
    );
    eventually("the second message", Duration::from_secs(10), || async {
        (message_texts(&s).await.len() == 2).then_some(())
    })
    .await;
    token.cancel();
    running.wait().await;
}

#[tokio::test]
async fn broker_down_means_503_and_nothing_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target: std::net::SocketAddr = "127.0.0.1:5672".parse().expect("addr");
    let proxy = telenet_tests::Proxy::start(target).await;
    let mut config = world::embedded(dir.path());
    config.bus_url = format!("amqp://guest:guest@{}/%2f", proxy.addr);
    config.bus_prefix = format!("t{}.", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let (running, token) = world::start(config, SERVICES).await;
    let s = setup(&running).await;
    let http = reqwest::Client::new();

    proxy.cut();
    let r = send_webhook(
        &http,
        &s.webhook_url,
        &s.secret,
        "wh-down",
        &inbound_text("m-down", "+34600", "are you there?"),
    )
    .await;
    assert_eq!(r.status(), 503);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(message_texts(&s).await.is_empty());

    // The provider retries the same delivery once the broker is back.
    proxy.restore();
    let accepted = eventually(
        "the retried webhook to be accepted",
        Duration::from_secs(30),
        || {
            let (http, s) = (http.clone(), &s);
            async move {
                let r = send_webhook(
                    &http,
                    &s.webhook_url,
                    &s.secret,
                    "wh-down",
                    &inbound_text("m-down", "+34600", "are you there?"),
                )
                .await;
                if r.status() == 200 {
                    Some(r.json::<serde_json::Value>().await.expect("json"))
                } else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    None
                }
            }
        },
    )
    .await;
    assert_eq!(accepted["status"], "accepted");
    let texts = eventually(
        "the message in the inbox",
        Duration::from_secs(20),
        || async {
            let t = message_texts(&s).await;
            (!t.is_empty()).then_some(t)
        },
    )
    .await;
    assert_eq!(texts, vec!["are you there?".to_owned()]);
    token.cancel();
    running.wait().await;
}
