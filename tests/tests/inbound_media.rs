//! Inbound media end to end: a contact's message arrives by webhook with
//! attachment URLs on a provider (a real local HTTP server); the message
//! shows them pending, media fetches them into the blob store, and the
//! message shows each ready (blob id, size, type — downloadable through the
//! gateway) or failed with the reason: not found, too large. The custom
//! channel's files are fetched signed with the channel's secret, and a
//! voice note arrives with its duration.
//!
//! Run on embedded defaults and on real PostgreSQL + RabbitMQ + Redis.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{StatusCode, header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use telenet::{Config, ServiceName};
use telenet_tests::{eventually, send_webhook, world};
use tokio::sync::Semaphore;

const WAIT: Duration = Duration::from_secs(30);
const SERVICES: &[ServiceName] = &[
    ServiceName::Ingress,
    ServiceName::Contacts,
    ServiceName::Conversations,
    ServiceName::Media,
    ServiceName::Gateway,
];
/// The fetch size cap in these tests.
const MAX_BYTES: u64 = 64 * 1024;
const FIXTURE: &str = "source_ogg_opus_ptb.ogg";

/// The WhatsApp voice note of the repository's fixtures.
fn fixture() -> Vec<u8> {
    let path = format!("{}/fixtures/media/{FIXTURE}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

fn generated() -> Vec<u8> {
    (0..40_000u32).map(|i| (i * 13 % 251) as u8).collect()
}

/// What the provider saw of one fetch: the URL and the signature headers.
type Seen = Arc<std::sync::Mutex<Vec<(String, [Option<String>; 3])>>>;

/// The provider's media server. `/generated.bin` waits for the gate, so the
/// test can see the attachment pending before it is fetched; it records how
/// the request was signed.
async fn provider(voice: Vec<u8>, gate: Arc<Semaphore>, seen: Seen) -> String {
    let app = axum::Router::new()
        .route(
            "/voice.ogg",
            axum::routing::get(move || {
                let voice = voice.clone();
                async move { ([(header::CONTENT_TYPE, "audio/ogg")], voice) }
            }),
        )
        .route(
            "/generated.bin",
            axum::routing::get(
                move |uri: axum::http::Uri, headers: axum::http::HeaderMap| {
                    let gate = gate.clone();
                    let seen = seen.clone();
                    async move {
                        let h = |n: &str| {
                            headers
                                .get(n)
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned)
                        };
                        let url = format!("http://{}{uri}", h("host").unwrap_or_default());
                        seen.lock().expect("lock").push((
                            url,
                            [
                                h("webhook-id"),
                                h("webhook-timestamp"),
                                h("webhook-signature"),
                            ],
                        ));
                        let _open = gate.acquire().await;
                        generated()
                    }
                },
            ),
        )
        .route(
            "/missing.ogg",
            axum::routing::get(|| async { StatusCode::NOT_FOUND }),
        )
        .route(
            "/huge.ogg",
            axum::routing::get(|| async { vec![0u8; MAX_BYTES as usize * 2] }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind provider");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("gateway request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .expect("gateway request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

fn tuned(mut config: Config) -> Config {
    // The provider is on this machine, which production settings refuse.
    config.media.inbound.allow_private_networks = true;
    config.media.inbound.max_bytes = MAX_BYTES;
    config.media.inbound.attempts = 2;
    config
}

async fn inbound_media(config: Config) {
    let voice = fixture();
    let gate = Arc::new(Semaphore::new(0));
    let seen = Seen::default();
    let base = provider(voice.clone(), gate.clone(), seen.clone()).await;
    let (running, token) = world::start(tuned(config), SERVICES).await;
    let api = Api {
        http: reqwest::Client::new(),
        base: format!("http://{}", running.gateway_addr.expect("gateway")),
        token: running.seed.clone().expect("seeded").token,
    };
    let (status, channel) = api
        .post(
            "/v1/channels",
            json!({"kind": "custom", "name": "Shop", "outbound_url": "http://127.0.0.1:9/outbound"}),
        )
        .await;
    assert_eq!(status, 201, "{channel}");
    let hook = channel["webhook_url"].as_str().expect("webhook_url");
    let secret = channel["secret"].as_str().expect("secret");

    let attachments = vec![
        json!({"kind": "file", "url": format!("{base}/generated.bin"), "mime_type": "application/octet-stream"}),
        json!({"kind": "voice", "url": format!("{base}/missing.ogg"), "mime_type": "audio/ogg"}),
        json!({"kind": "voice", "url": format!("{base}/huge.ogg"), "mime_type": "audio/ogg"}),
        json!({"kind": "voice", "url": format!("{base}/voice.ogg"), "mime_type": "audio/ogg; codecs=opus"}),
    ];
    let body = json!({
        "type": "message.inbound",
        "message": {
            "external_id": "m-media-1",
            "sender": {"external_id": "+34600111222", "display_name": "Ana"},
            "text": "te mando el audio",
            "attachments": attachments,
        }
    });
    let sent = send_webhook(&api.http, hook, secret, "wh-media-1", &body).await;
    assert_eq!(sent.status(), 200);

    let conversation = eventually("the conversation", WAIT, || async {
        let (_, page) = api.get("/v1/conversations?status=open").await;
        page["items"][0]["id"].as_str().map(str::to_owned)
    })
    .await;
    let messages_path = format!("/v1/conversations/{conversation}/messages");
    let first_look = eventually("the message", WAIT, || async {
        let (_, page) = api.get(&messages_path).await;
        page["items"][0]["attachments"].as_array().cloned()
    })
    .await;
    // The provider still holds the generated file: not fetched yet.
    assert_eq!(first_look[0]["state"], "pending", "{first_look:?}");
    assert!(first_look[0]["blob_id"].is_null());
    gate.add_permits(100);

    let settled = eventually("every attachment settled", WAIT, || async {
        let (_, page) = api.get(&messages_path).await;
        let items = page["items"][0]["attachments"].as_array().cloned()?;
        items
            .iter()
            .all(|a| a["state"] != "pending")
            .then_some(items)
    })
    .await;

    let generated_hash = hex::encode(Sha256::digest(generated()));
    assert_eq!(settled[0]["state"], "ready", "{:?}", settled[0]);
    assert_eq!(settled[0]["blob_id"], generated_hash.as_str());
    assert_eq!(settled[0]["size_bytes"], generated().len());
    assert_eq!(settled[0]["mime_type"], "application/octet-stream");
    assert!(settled[0]["error"].is_null());
    // Fetched signed with the channel's secret, over the URL asked for.
    let channel_secret = telenet_signing::Secret::parse(secret).expect("whsec secret");
    let fetches = seen.lock().expect("lock").clone();
    assert!(!fetches.is_empty());
    for (url, [id, timestamp, signature]) in fetches {
        assert_eq!(url, format!("{base}/generated.bin"));
        channel_secret
            .verify(
                id.as_deref(),
                timestamp.as_deref(),
                signature.as_deref(),
                url.as_bytes(),
                telenet_signing::unix_now(),
            )
            .expect("a fetch signed with the channel's secret");
    }

    assert_eq!(settled[1]["state"], "failed", "{:?}", settled[1]);
    let not_found = settled[1]["error"].as_str().expect("reason");
    assert!(not_found.contains("404"), "{not_found}");
    assert!(settled[1]["blob_id"].is_null());

    assert_eq!(settled[2]["state"], "failed", "{:?}", settled[2]);
    let too_large = settled[2]["error"].as_str().expect("reason");
    assert!(too_large.contains("too large"), "{too_large}");

    // The stored bytes come back through the gateway, whole and by range.
    let download = |id: String, range: Option<&'static str>| {
        let mut req = api
            .http
            .get(format!("{}/v1/files/{id}", api.base))
            .bearer_auth(&api.token);
        if let Some(r) = range {
            req = req.header("range", r);
        }
        async move {
            let resp = req.send().await.expect("download");
            (resp.status().as_u16(), resp.bytes().await.expect("bytes"))
        }
    };
    let (status, bytes) = download(generated_hash.clone(), None).await;
    assert_eq!(status, 200);
    assert!(bytes[..] == generated()[..], "downloaded bytes differ");

    // The real voice note, last: stored whole, probed for its duration.
    {
        let expected = hex::encode(Sha256::digest(&voice));
        assert_eq!(settled[3]["state"], "ready", "{:?}", settled[3]);
        assert_eq!(settled[3]["blob_id"], expected.as_str());
        assert_eq!(settled[3]["size_bytes"], voice.len());
        assert_eq!(settled[3]["mime_type"], "audio/ogg; codecs=opus");
        assert_eq!(settled[3]["kind"], "voice");
        let duration = settled[3]["duration_ms"].as_u64().unwrap_or_default();
        assert!(duration.abs_diff(3_450) <= 60, "duration {duration}");
        let (status, head) = download(expected, Some("bytes=0-3")).await;
        assert_eq!(status, 206);
        assert_eq!(&head[..], b"OggS");
    }

    token.cancel();
    running.wait().await;
}

#[tokio::test]
async fn inbound_attachments_on_embedded_defaults() {
    let dir = tempfile::tempdir().expect("tempdir");
    inbound_media(world::embedded(dir.path())).await;
}

#[tokio::test]
async fn inbound_attachments_on_real_infrastructure() {
    let dir = tempfile::tempdir().expect("tempdir");
    inbound_media(world::real(dir.path()).await).await;
}
