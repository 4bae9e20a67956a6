//! The 360dialog WhatsApp channel through the provider conformance suite
//! (src/conformance.rs), with the Cloud API samples it forwards
//! (tests/fixtures/whatsapp_cloud), and against the 360dialog emulator
//! (telenet-emulators): webhook registration, sends, media downloads.

#[path = "whatsapp_common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, StatusCode};
use telenet_channels::conformance::{
    self, CHANNEL_ID, Fixture, HandshakeSample, Received, Sample, Understood,
};
use telenet_channels::whatsapp::dialog360::{SECRET_HEADER, WhatsApp360Dialog};
use telenet_channels::{
    ChannelCredentials, CredentialsError, InboundEvent, Provider, SendOutcome, Webhook,
};
use telenet_emulators::Emulator;
use telenet_emulators::whatsapp::{self as emulated, Dialog360};
use telenet_proto::common::v1::{ChannelKind, ChannelProvider};
use telenet_proto::dispatch::v1::DeliveryState;
use telenet_proto::events::v1::OutboundRequested;
use telenet_proto::ingress::v1::channel_config::Provider as Case;
use telenet_proto::ingress::v1::{ChannelConfig, WhatsApp360DialogConfig};

fn random(prefix: &str) -> String {
    format!("{prefix}{:016x}", fastrand::u64(..))
}

fn dialog_channel(api_base: &str, api_key: &str, secret: &str) -> ChannelCredentials {
    ChannelCredentials {
        channel_id: CHANNEL_ID.into(),
        kind: ChannelKind::Whatsapp,
        provider: ChannelProvider::Whatsapp360dialog,
        config: ChannelConfig {
            api_base_url: api_base.into(),
            provider: Some(Case::Whatsapp360dialog(WhatsApp360DialogConfig {
                api_key: api_key.into(),
                webhook_header_secret: secret.into(),
                ..Default::default()
            })),
        },
        ..Default::default()
    }
}

fn settings(channel: &ChannelCredentials) -> WhatsApp360DialogConfig {
    match &channel.config.provider {
        Some(Case::Whatsapp360dialog(c)) => c.clone(),
        other => panic!("not a 360dialog channel: {other:?}"),
    }
}

struct DialogFixture;

impl Fixture for DialogFixture {
    fn signs_body(&self) -> bool {
        false
    }

    fn provider(&self) -> Arc<dyn Provider> {
        Arc::new(WhatsApp360Dialog)
    }

    fn channel(&self, api_base: &str) -> ChannelCredentials {
        dialog_channel(api_base, &random("key"), &random("secret"))
    }

    fn unusable(&self, channel: &ChannelCredentials) -> ChannelCredentials {
        let mut config = settings(channel);
        config.api_key.clear();
        config.webhook_header_secret.clear();
        let mut broken = channel.clone();
        broken.config.provider = Some(Case::Whatsapp360dialog(config));
        broken
    }

    fn sign(&self, channel: &ChannelCredentials, _: &str, _: &[u8], _: i64) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert(
            SECRET_HEADER,
            HeaderValue::from_str(&settings(channel).webhook_header_secret).expect("header"),
        );
        headers
    }

    fn auth_headers(&self) -> &'static [&'static str] {
        &[SECRET_HEADER]
    }

    fn timestamp_tolerance(&self) -> Option<Duration> {
        None
    }

    fn samples(&self) -> Vec<Sample> {
        common::samples(
            ChannelProvider::Whatsapp360dialog,
            &format!("{}/", common::SUITE_API_BASE),
        )
    }

    fn handshakes(&self, _: &ChannelCredentials) -> Vec<HandshakeSample> {
        // 360dialog makes no handshake: Meta's GET is not one here.
        vec![HandshakeSample {
            name: "a Meta-style GET",
            method: Method::GET,
            query: "hub.mode=subscribe&hub.verify_token=x&hub.challenge=1".into(),
            headers: HeaderMap::new(),
            body: Vec::new(),
            expect: None,
        }]
    }

    fn statuses(&self) -> Vec<(&'static str, DeliveryState)> {
        common::statuses()
    }

    fn check_send(
        &self,
        channel: &ChannelCredentials,
        request: &Received,
    ) -> Result<Understood, String> {
        if request.method != Method::POST || request.path != "/messages" {
            return Err(format!(
                "{} {} is not /messages",
                request.method, request.path
            ));
        }
        if request.header("d360-api-key") != Some(settings(channel).api_key.as_str()) {
            return Err("not the channel's D360-API-KEY".into());
        }
        common::understood(&request.headers, &request.body)
    }

    fn accept_send(&self, request: &Received, external_id: &str) -> (StatusCode, String) {
        let to = serde_json::from_slice::<serde_json::Value>(&request.body)
            .ok()
            .and_then(|b| b["to"].as_str().map(str::to_owned))
            .unwrap_or_default();
        (
            StatusCode::OK,
            serde_json::json!({
                "messaging_product": "whatsapp",
                "contacts": [{"input": to, "wa_id": to}],
                "messages": [{"id": external_id}]
            })
            .to_string(),
        )
    }

    fn check_media_fetch(
        &self,
        channel: &ChannelCredentials,
        url: &str,
        headers: &HeaderMap,
    ) -> Result<(), String> {
        let parsed = url::Url::parse(url).map_err(|e| e.to_string())?;
        let key = headers.get("d360-api-key").and_then(|v| v.to_str().ok());
        let ours = parsed.host_str() == Some("waba-v2.360dialog.io")
            || url.starts_with(&channel.config.api_base_url);
        match (ours, key) {
            (true, Some(k)) if k == settings(channel).api_key => Ok(()),
            (true, _) => Err("360dialog wants the number's key".into()),
            (false, None) => Ok(()),
            (false, Some(_)) => Err(format!("the key was offered to {:?}", parsed.host_str())),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_360dialog_channel_conforms() {
    if let Err(report) = conformance::run_all(Arc::new(DialogFixture)).await {
        panic!("{report}");
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

async fn dialog() -> (Emulator, ChannelCredentials) {
    let emulator = Emulator::start(Dialog360::new("d360-key").with_media(
        "5566",
        "image/jpeg",
        b"\xff\xd8jpeg",
    ))
    .await;
    let channel = dialog_channel(&emulator.base_url(), "d360-key", "hook-secret");
    (emulator, channel)
}

#[tokio::test]
async fn the_webhook_is_registered_with_the_secret_header() {
    let (emulator, channel) = dialog().await;
    let before = WhatsApp360Dialog.check(&client(), &channel).await;
    assert_eq!(
        before
            .iter()
            .map(|c| (c.name.as_str(), c.ok))
            .collect::<Vec<_>>(),
        [("credentials", true), ("webhook_registration", false)]
    );
    let registered = WhatsApp360Dialog
        .register_webhook(&client(), &channel, "https://inbox.example/webhooks/ch-1")
        .await;
    assert_eq!(registered, Ok(true));
    let posts: Vec<_> = emulator
        .received_at("/v1/configs/webhook")
        .into_iter()
        .filter(|r| r.method == Method::POST)
        .collect();
    let request = &posts[0];
    assert_eq!(request.header("d360-api-key"), Some("d360-key"));
    assert_eq!(
        request.json().expect("json"),
        serde_json::json!({
            "url": "https://inbox.example/webhooks/ch-1",
            "headers": {"x-telenet-webhook-secret": "hook-secret"}
        })
    );
    // 360dialog refuses a URL with a port: the refusal is named.
    let refused = WhatsApp360Dialog
        .register_webhook(
            &client(),
            &channel,
            "https://inbox.example:8443/webhooks/ch-1",
        )
        .await;
    assert!(
        matches!(refused, Err(CredentialsError::Invalid(_))),
        "{refused:?}"
    );
    let stranger = dialog_channel(&emulator.base_url(), "wrong", "hook-secret");
    let refused = WhatsApp360Dialog
        .register_webhook(&client(), &stranger, "https://inbox.example/webhooks/ch-1")
        .await;
    assert!(
        matches!(refused, Err(CredentialsError::Invalid(_))),
        "{refused:?}"
    );
}

#[tokio::test]
async fn messages_go_to_360dialog_with_the_key_and_errors_keep_their_meaning() {
    let (emulator, channel) = dialog().await;
    let message = OutboundRequested {
        message_id: "m1".into(),
        recipient_external_id: "34600111222".into(),
        text: "hola".into(),
        ..Default::default()
    };
    let http = client();
    let outcome = WhatsApp360Dialog.send(&http, &channel, &message).await;
    assert_eq!(
        outcome,
        SendOutcome::Sent {
            external_id: emulated::wamid(1)
        }
    );
    let sent = &emulator.received_at("/messages")[0];
    assert_eq!(sent.header("d360-api-key"), Some("d360-key"));
    assert_eq!(sent.json().expect("json")["text"]["body"], "hola");

    emulator.answer_next(emulated::outside_window());
    assert!(matches!(
        WhatsApp360Dialog.send(&http, &channel, &message).await,
        SendOutcome::Reject(reason) if reason.contains("131047")
    ));
    emulator.answer_next(emulated::throughput_exceeded(3));
    assert!(matches!(
        WhatsApp360Dialog.send(&http, &channel, &message).await,
        SendOutcome::Throttled { retry_after, .. } if retry_after == Duration::from_secs(3)
    ));
    let stranger = dialog_channel(&emulator.base_url(), "wrong", "hook-secret");
    assert!(matches!(
        WhatsApp360Dialog.send(&http, &stranger, &message).await,
        SendOutcome::Reject(_)
    ));
    // Nothing is sent without a key.
    let before = emulator.received().len();
    let keyless = dialog_channel(&emulator.base_url(), "", "hook-secret");
    assert!(matches!(
        WhatsApp360Dialog.send(&http, &keyless, &message).await,
        SendOutcome::Reject(_)
    ));
    assert_eq!(emulator.received().len(), before);
    // Nobody listening is passing trouble.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    assert!(matches!(
        WhatsApp360Dialog
            .send(&http, &dialog_channel(&base, "d360-key", "s"), &message)
            .await,
        SendOutcome::Retry(_)
    ));
}

#[tokio::test]
async fn media_is_fetched_through_360dialog_with_the_key() {
    let (emulator, channel) = dialog().await;
    let body = br#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"messages":[{"from":"34600","id":"wamid.I","type":"image","image":{"id":"5566","mime_type":"image/jpeg"}}]}}]}]}"#;
    let mut headers = HeaderMap::new();
    headers.insert(SECRET_HEADER, HeaderValue::from_static("hook-secret"));
    let webhook = Webhook {
        channel_id: CHANNEL_ID,
        method: &Method::POST,
        url: "https://inbox.test/webhooks/ch",
        query: "",
        headers: &headers,
        body,
        now: 0,
    };
    WhatsApp360Dialog
        .verify(&channel, &webhook)
        .expect("the secret header");
    let inbound = WhatsApp360Dialog.parse(&channel, &webhook).expect("parses");
    let [InboundEvent::Message(message)] = inbound.events.as_slice() else {
        panic!("{inbound:?}");
    };
    let reference = &message.attachments[0].url;
    assert_eq!(reference, &format!("{}/5566", emulator.base_url()));

    let fetch = WhatsApp360Dialog
        .media_fetch(&client(), &channel, reference)
        .await
        .expect("resolves");
    // Meta's lookaside URL, moved onto 360dialog.
    assert_eq!(
        fetch.url,
        format!(
            "{}/whatsapp_business/attachments/?mid=5566&ext=1&hash=x",
            emulator.base_url()
        )
    );
    let bytes = client()
        .get(&fetch.url)
        .headers(fetch.headers.clone())
        .send()
        .await
        .expect("download")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(&bytes[..], b"\xff\xd8jpeg");
    let lookup = &emulator.received()[0];
    assert_eq!(lookup.path, "/5566");
    assert_eq!(lookup.header("d360-api-key"), Some("d360-key"));
}

#[test]
fn a_wrong_or_missing_secret_header_is_refused() {
    let channel = dialog_channel("", "k", "hook-secret");
    let body = b"{}";
    let check = |value: Option<&'static str>| {
        let mut headers = HeaderMap::new();
        if let Some(v) = value {
            headers.insert(SECRET_HEADER, HeaderValue::from_static(v));
        }
        let webhook = Webhook {
            channel_id: CHANNEL_ID,
            method: &Method::POST,
            url: "https://inbox.test/webhooks/ch",
            query: "",
            headers: &headers,
            body,
            now: 0,
        };
        WhatsApp360Dialog.verify(&channel, &webhook)
    };
    assert_eq!(check(Some("hook-secret")), Ok(()));
    assert!(check(Some("hook-secret2")).is_err_and(|e| e.is_unauthenticated()));
    assert!(check(Some("")).is_err_and(|e| e.is_unauthenticated()));
    assert!(check(None).is_err_and(|e| e.is_unauthenticated()));
}
