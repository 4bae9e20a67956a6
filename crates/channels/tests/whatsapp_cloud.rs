//! The WhatsApp Cloud API channel through the provider conformance suite
//! (src/conformance.rs), with the samples of tests/fixtures/whatsapp_cloud,
//! and against the Graph API emulator (telenet-emulators): sends, their
//! errors, and the two-step media download.

#[path = "whatsapp_common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, StatusCode};
use telenet_channels::conformance::{
    self, CHANNEL_ID, Fixture, HandshakeSample, Received, Sample, Understood,
};
use telenet_channels::whatsapp::WhatsAppCloud;
use telenet_channels::{
    ChannelCredentials, HandshakeAnswer, InboundEvent, Provider, SendOutcome, Webhook,
};
use telenet_emulators::Emulator;
use telenet_emulators::whatsapp::{self as emulated, Graph};
use telenet_proto::common::v1::{Attachment, AttachmentKind, ChannelKind, ChannelProvider};
use telenet_proto::dispatch::v1::DeliveryState;
use telenet_proto::events::v1::OutboundRequested;
use telenet_proto::ingress::v1::channel_config::Provider as Case;
use telenet_proto::ingress::v1::{ChannelConfig, WhatsAppCloudConfig};

const PHONE_NUMBER_ID: &str = "1122334455667";

fn random(prefix: &str) -> String {
    format!("{prefix}-{:016x}", fastrand::u64(..))
}

fn cloud_channel(api_base: &str, access_token: &str, app_secret: &str) -> ChannelCredentials {
    ChannelCredentials {
        channel_id: CHANNEL_ID.into(),
        kind: ChannelKind::Whatsapp,
        provider: ChannelProvider::WhatsappCloud,
        config: ChannelConfig {
            api_base_url: api_base.into(),
            provider: Some(Case::WhatsappCloud(WhatsAppCloudConfig {
                phone_number_id: PHONE_NUMBER_ID.into(),
                access_token: access_token.into(),
                app_secret: app_secret.into(),
                verify_token: "verify-me".into(),
                ..Default::default()
            })),
        },
        ..Default::default()
    }
}

fn settings(channel: &ChannelCredentials) -> WhatsAppCloudConfig {
    match &channel.config.provider {
        Some(Case::WhatsappCloud(c)) => c.clone(),
        other => panic!("not a Cloud API channel: {other:?}"),
    }
}

struct CloudFixture;

impl Fixture for CloudFixture {
    fn provider(&self) -> Arc<dyn Provider> {
        Arc::new(WhatsAppCloud)
    }

    fn channel(&self, api_base: &str) -> ChannelCredentials {
        cloud_channel(api_base, &random("EAAG"), &random("app-secret"))
    }

    fn unusable(&self, channel: &ChannelCredentials) -> ChannelCredentials {
        let mut config = settings(channel);
        config.app_secret.clear();
        config.access_token.clear();
        let mut broken = channel.clone();
        broken.config.provider = Some(Case::WhatsappCloud(config));
        broken
    }

    fn sign(&self, channel: &ChannelCredentials, _: &str, body: &[u8], _: i64) -> HeaderMap {
        let signature =
            telenet_channels::meta::signature_header(&settings(channel).app_secret, body);
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert(
            "x-hub-signature-256",
            HeaderValue::from_str(&signature).expect("header value"),
        );
        headers
    }

    fn auth_headers(&self) -> &'static [&'static str] {
        &["x-hub-signature-256"]
    }

    fn timestamp_tolerance(&self) -> Option<Duration> {
        None
    }

    fn samples(&self) -> Vec<Sample> {
        common::samples(
            ChannelProvider::WhatsappCloud,
            &format!("{}/v21.0/", common::SUITE_API_BASE),
        )
    }

    fn handshakes(&self, channel: &ChannelCredentials) -> Vec<HandshakeSample> {
        let token = settings(channel).verify_token;
        let get = |name, query: String, expect| HandshakeSample {
            name,
            method: Method::GET,
            query,
            headers: HeaderMap::new(),
            body: Vec::new(),
            expect,
        };
        let answer = |status, body: &str| {
            Some(HandshakeAnswer {
                status,
                content_type: "text/plain; charset=utf-8",
                body: body.as_bytes().to_vec(),
            })
        };
        vec![
            get(
                "the channel's verify token",
                format!("hub.mode=subscribe&hub.verify_token={token}&hub.challenge=1158201444"),
                answer(StatusCode::OK, "1158201444"),
            ),
            get(
                "another verify token",
                "hub.mode=subscribe&hub.verify_token=guess&hub.challenge=1".into(),
                answer(StatusCode::FORBIDDEN, "verify token mismatch"),
            ),
            get("a GET without hub.mode", String::new(), None),
        ]
    }

    fn statuses(&self) -> Vec<(&'static str, DeliveryState)> {
        common::statuses()
    }

    fn check_send(
        &self,
        channel: &ChannelCredentials,
        request: &Received,
    ) -> Result<Understood, String> {
        let config = settings(channel);
        let path = format!("/v21.0/{}/messages", config.phone_number_id);
        if request.method != Method::POST || request.path != path {
            return Err(format!("{} {} is not {path}", request.method, request.path));
        }
        let expected = format!("Bearer {}", config.access_token);
        if request.header("authorization") != Some(expected.as_str()) {
            return Err("not the channel's bearer token".into());
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
        let meta = parsed
            .host_str()
            .is_some_and(|h| h == "lookaside.fbsbx.com" || h == "graph.facebook.com");
        let authorization = headers.get("authorization").and_then(|v| v.to_str().ok());
        if meta {
            let expected = format!("Bearer {}", settings(channel).access_token);
            if authorization != Some(expected.as_str()) {
                return Err("Meta's media host wants the channel's token".into());
            }
        } else if authorization.is_some() {
            // The token is Meta's business: another host never sees it.
            return Err(format!("the token was offered to {:?}", parsed.host_str()));
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whatsapp_cloud_channel_conforms() {
    if let Err(report) = conformance::run_all(Arc::new(CloudFixture)).await {
        panic!("{report}");
    }
}

#[test]
fn metas_own_signatures_of_the_samples_verify() {
    let index: serde_json::Value =
        serde_json::from_slice(include_bytes!("fixtures/whatsapp_cloud/split_index.json"))
            .expect("the index");
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/whatsapp_cloud");
    let cases = index["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 14);
    for case in cases {
        let file = case["file"].as_str().expect("file");
        let body = std::fs::read(dir.join(file)).expect("the sample");
        let secret = case["app_secret"].as_str().expect("secret");
        let channel = cloud_channel("", "tok", secret);
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-hub-signature-256",
            HeaderValue::from_str(case["x_hub_signature_256"].as_str().expect("sig"))
                .expect("header"),
        );
        let webhook = Webhook {
            channel_id: CHANNEL_ID,
            method: &Method::POST,
            url: "https://inbox.test/webhooks/ch",
            query: "",
            headers: &headers,
            body: &body,
            now: 0,
        };
        WhatsAppCloud
            .verify(&channel, &webhook)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let other = cloud_channel("", "tok", "another-secret");
        assert!(WhatsAppCloud.verify(&other, &webhook).is_err(), "{file}");
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

fn outbound(text: &str, attachments: Vec<Attachment>) -> OutboundRequested {
    OutboundRequested {
        message_id: "m1".into(),
        channel_id: CHANNEL_ID.into(),
        recipient_external_id: "34600111222".into(),
        text: text.into(),
        attachments,
        ..Default::default()
    }
}

async fn graph() -> (Emulator, ChannelCredentials) {
    let emulator = Emulator::start(Graph::new("EAAG-token", PHONE_NUMBER_ID).with_media(
        "9988",
        "audio/ogg; codecs=opus",
        b"OggS-voice",
    ))
    .await;
    let channel = cloud_channel(&emulator.base_url(), "EAAG-token", "app-secret");
    (emulator, channel)
}

#[tokio::test]
async fn a_long_text_goes_as_parts_and_the_last_parts_id_is_returned() {
    let (emulator, channel) = graph().await;
    let text = "una palabra ".repeat(800);
    let outcome = WhatsAppCloud
        .send(&client(), &channel, &outbound(&text, Vec::new()))
        .await;
    assert_eq!(
        outcome,
        SendOutcome::Sent {
            external_id: emulated::wamid(3)
        }
    );
    let sent = emulator.received_at("/messages");
    assert_eq!(sent.len(), 3);
    let parts: Vec<String> = sent
        .iter()
        .map(|r| {
            r.json().expect("json")["text"]["body"]
                .as_str()
                .expect("text")
                .to_owned()
        })
        .collect();
    assert!(parts.iter().all(|p| p.chars().count() <= 4096));
    assert_eq!(parts.join(" "), text.trim());
    assert!(
        sent.iter()
            .all(|r| r.path == "/v21.0/1122334455667/messages")
    );
}

#[tokio::test]
async fn a_voice_note_reply_is_voice_audio_quoting_the_message() {
    let (emulator, channel) = graph().await;
    let mut message = outbound(
        "",
        vec![Attachment {
            kind: AttachmentKind::Voice as i32,
            url: "https://files.test/v1/downloads/note.ogg".into(),
            mime_type: "audio/ogg; codecs=opus".into(),
            ..Default::default()
        }],
    );
    message.reply_to_external_id = "wamid.IN".into();
    let outcome = WhatsAppCloud.send(&client(), &channel, &message).await;
    assert!(matches!(outcome, SendOutcome::Sent { .. }), "{outcome:?}");
    let sent = emulator.received_at("/messages");
    let body = sent[0].json().expect("json");
    assert_eq!(
        body,
        serde_json::json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": "34600111222",
            "type": "audio",
            "audio": {"link": "https://files.test/v1/downloads/note.ogg", "voice": true},
            "context": {"message_id": "wamid.IN"}
        })
    );
    assert_eq!(telenet_emulators::bearer(&sent[0]), Some("EAAG-token"));
}

#[tokio::test]
async fn graph_errors_are_sorted_into_reject_retry_and_throttled() {
    let (emulator, channel) = graph().await;
    let text = outbound("hello", Vec::new());
    let http = client();
    let send = || WhatsAppCloud.send(&http, &channel, &text);

    emulator.answer_next(emulated::outside_window());
    let SendOutcome::Reject(reason) = send().await else {
        panic!("outside the window is final");
    };
    assert!(reason.contains("131047"), "{reason}");

    emulator.answer_next(emulated::throughput_exceeded(7));
    assert!(matches!(
        send().await,
        SendOutcome::Throttled { retry_after, .. } if retry_after == Duration::from_secs(7)
    ));

    emulator.answer_next(emulated::pair_rate_limit());
    assert!(matches!(
        send().await,
        SendOutcome::Throttled { retry_after, .. } if retry_after == Duration::from_secs(6)
    ));

    emulator.answer_next(emulated::graph_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        2,
        "Service temporarily unavailable",
    ));
    assert!(matches!(send().await, SendOutcome::Retry(_)));

    emulator.answer_next(telenet_emulators::Reply::bytes(
        StatusCode::BAD_GATEWAY,
        "text/html",
        b"<html>proxy password=hunter2</html>".to_vec(),
    ));
    let SendOutcome::Retry(reason) = send().await else {
        panic!("a 502 is passing trouble");
    };
    assert!(!reason.contains("hunter2"), "{reason}");

    emulator.answer_next(telenet_emulators::Reply::bytes(
        StatusCode::MOVED_PERMANENTLY,
        "text/plain",
        Vec::new(),
    ));
    assert!(matches!(send().await, SendOutcome::Reject(_)));

    emulator.answer_next(telenet_emulators::Reply::bytes(
        StatusCode::BAD_REQUEST,
        "text/plain",
        b"invalid recipient".to_vec(),
    ));
    let SendOutcome::Reject(reason) = send().await else {
        panic!("a 400 is final");
    };
    assert!(
        reason.contains("400") && !reason.contains("invalid"),
        "{reason}"
    );

    emulator.answer_next(telenet_emulators::Reply::bytes(
        StatusCode::REQUEST_TIMEOUT,
        "text/plain",
        Vec::new(),
    ));
    assert!(matches!(send().await, SendOutcome::Retry(_)));

    // The emulator's own refusal of a token it does not know.
    let stranger = cloud_channel(&emulator.base_url(), "EAAG-stolen", "app-secret");
    let SendOutcome::Reject(reason) = WhatsAppCloud.send(&client(), &stranger, &text).await else {
        panic!("a bad token is final");
    };
    assert!(reason.contains("190"), "{reason}");

    // Nothing is sent with unusable settings.
    let before = emulator.received().len();
    let blank = cloud_channel(&emulator.base_url(), "", "app-secret");
    assert!(matches!(
        WhatsAppCloud.send(&client(), &blank, &text).await,
        SendOutcome::Reject(_)
    ));
    assert_eq!(emulator.received().len(), before);
}

#[tokio::test]
async fn media_is_looked_up_then_downloaded_with_the_token() {
    let (emulator, channel) = graph().await;
    let body = br#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"messages":[{"from":"34600","id":"wamid.V","type":"audio","audio":{"id":"9988","mime_type":"audio/ogg; codecs=opus","voice":true}}]}}]}]}"#;
    let headers = HeaderMap::new();
    let webhook = Webhook {
        channel_id: CHANNEL_ID,
        method: &Method::POST,
        url: "https://inbox.test/webhooks/ch",
        query: "",
        headers: &headers,
        body,
        now: 0,
    };
    let inbound = WhatsAppCloud.parse(&channel, &webhook).expect("parses");
    let [InboundEvent::Message(message)] = inbound.events.as_slice() else {
        panic!("{inbound:?}");
    };
    let reference = &message.attachments[0].url;
    assert_eq!(reference, &format!("{}/v21.0/9988", emulator.base_url()));
    assert!(!reference.contains("EAAG"), "no token in the reference");

    let fetch = WhatsAppCloud
        .media_fetch(&client(), &channel, reference)
        .await
        .expect("resolves");
    assert_eq!(
        fetch.url,
        format!(
            "{}/whatsapp_business/attachments/?mid=9988&ext=1&hash=x",
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
    assert_eq!(&bytes[..], b"OggS-voice");
    let lookup = &emulator.received()[0];
    assert_eq!(lookup.path, "/v21.0/9988");
    assert_eq!(telenet_emulators::bearer(lookup), Some("EAAG-token"));

    // A reference elsewhere is never asked with the token.
    let foreign = WhatsAppCloud
        .media_fetch(&client(), &channel, "https://evil.example/v21.0/9988")
        .await;
    assert!(foreign.is_err());
    // An unknown media id is the API's refusal, named.
    let missing = WhatsAppCloud
        .media_fetch(
            &client(),
            &channel,
            &format!("{}/v21.0/404", emulator.base_url()),
        )
        .await
        .expect_err("unknown media");
    assert!(
        missing.to_string().contains("media lookup refused"),
        "{missing}"
    );
}

#[tokio::test]
async fn an_unreachable_graph_api_is_retried() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let channel = cloud_channel(&base, "EAAG-token", "app-secret");
    let outcome = WhatsAppCloud
        .send(&client(), &channel, &outbound("hi", Vec::new()))
        .await;
    assert!(matches!(outcome, SendOutcome::Retry(_)), "{outcome:?}");
}

#[tokio::test]
async fn the_check_reads_the_number_with_the_token() {
    let (emulator, channel) = graph().await;
    let checks = WhatsAppCloud.check(&client(), &channel).await;
    assert_eq!(checks.len(), 1);
    assert!(checks[0].ok, "{checks:?}");
    assert!(checks[0].detail.contains("+1 555-078-3881"), "{checks:?}");
    let asked = &emulator.received()[0];
    assert_eq!(asked.path, "/v21.0/1122334455667");
    assert_eq!(telenet_emulators::bearer(asked), Some("EAAG-token"));

    let stranger = cloud_channel(&emulator.base_url(), "EAAG-stolen", "app-secret");
    let checks = WhatsAppCloud.check(&client(), &stranger).await;
    assert!(!checks[0].ok);
    assert!(checks[0].detail.contains("190"), "{checks:?}");
    assert!(!checks[0].detail.contains("EAAG"), "{checks:?}");
}
