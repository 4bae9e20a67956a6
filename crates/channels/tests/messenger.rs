//! Facebook Messenger through the provider conformance suite
//! (src/conformance.rs) and against the Send API emulator
//! (telenet-emulators `meta_messaging`): its sample webhooks
//! (tests/fixtures/messenger, written from Meta's documentation), its
//! statuses, the Send API's checks, and what the suite cannot express
//! (watermark statuses, the HUMAN_AGENT tag, Meta's error codes).

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, StatusCode};
use telenet_channels::conformance::{
    self, CHANNEL_ID, Expect, Fixture, HandshakeSample, Received, Sample, Understood,
};
use telenet_channels::messenger::Messenger;
use telenet_channels::meta::{DEFAULT_GRAPH_VERSION, signature_header};
use telenet_channels::{
    ChannelCredentials, HandshakeAnswer, InboundEvent, Provider, SendOutcome, Webhook,
};
use telenet_emulators::Emulator;
use telenet_emulators::meta_messaging::{self, MetaMessaging};
use telenet_proto::common::v1::{
    Attachment, AttachmentKind, AttachmentState, ChannelKind, ChannelProvider, Location,
    MessageChange, Reaction,
};
use telenet_proto::dispatch::v1::DeliveryState;
use telenet_proto::events::v1::{
    InboundMessageReceived, InboundStatusReceived, OutboundRequested, Sender,
};
use telenet_proto::ingress::v1::channel_config::Provider as Case;
use telenet_proto::ingress::v1::{ChannelConfig, MessengerConfig};

const PAGE_ID: &str = "106000000000001";
const CONTACT: &str = "6945000000000001";

/// Sets a `google.protobuf.Timestamp` field to a time in milliseconds.
macro_rules! at_ms {
    ($slot:expr, $ms:expr) => {{
        let ms: i64 = $ms;
        let t = $slot.get_or_insert_with(Default::default);
        t.seconds = ms / 1000;
        t.nanos = i32::try_from((ms % 1000) * 1_000_000).expect("nanos");
    }};
}

struct MessengerFixture;

fn settings(channel: &ChannelCredentials) -> MessengerConfig {
    match &channel.config.provider {
        Some(Case::Messenger(c)) => c.clone(),
        other => panic!("not a Messenger channel: {other:?}"),
    }
}

fn channel_with(api_base: &str, settings: MessengerConfig) -> ChannelCredentials {
    ChannelCredentials {
        channel_id: CHANNEL_ID.into(),
        kind: ChannelKind::Messenger,
        provider: ChannelProvider::Messenger,
        config: ChannelConfig {
            provider: Some(Case::Messenger(settings)),
            api_base_url: api_base.into(),
        },
        ..Default::default()
    }
}

fn random(len: usize) -> String {
    telenet_channels::config::random_token(len).expect("randomness")
}

fn message(mid: &str, sender: &str, ts: i64) -> InboundMessageReceived {
    let mut m = InboundMessageReceived {
        channel_id: CHANNEL_ID.into(),
        channel_kind: ChannelKind::Messenger as i32,
        provider: ChannelProvider::Messenger as i32,
        webhook_id: mid.into(),
        external_id: mid.into(),
        sender: Some(Sender {
            external_id: sender.into(),
            display_name: String::new(),
        }),
        ..Default::default()
    };
    at_ms!(m.sent_at, ts);
    m
}

fn attachment(kind: AttachmentKind, url: &str, file_name: &str) -> Attachment {
    Attachment {
        kind: kind as i32,
        url: url.into(),
        file_name: file_name.into(),
        state: AttachmentState::Pending as i32,
        ..Default::default()
    }
}

fn events(messages: Vec<InboundMessageReceived>) -> Expect {
    Expect::Events(messages.into_iter().map(InboundEvent::Message).collect())
}

impl Fixture for MessengerFixture {
    fn provider(&self) -> Arc<dyn Provider> {
        Arc::new(Messenger)
    }

    fn channel(&self, api_base: &str) -> ChannelCredentials {
        channel_with(
            api_base,
            MessengerConfig {
                page_id: PAGE_ID.into(),
                page_access_token: format!("EAA{}", random(40)),
                // Not the app of the echo sample (another tool of the Page).
                app_id: "2222000000000001".into(),
                app_secret: random(32),
                verify_token: random(24),
                ..Default::default()
            },
        )
    }

    fn unusable(&self, channel: &ChannelCredentials) -> ChannelCredentials {
        let mut s = settings(channel);
        s.app_secret.clear();
        s.page_access_token.clear();
        channel_with(&channel.config.api_base_url, s)
    }

    fn sign(&self, channel: &ChannelCredentials, _: &str, body: &[u8], _: i64) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        let signature = signature_header(&settings(channel).app_secret, body);
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
        let text = InboundMessageReceived {
            text: "Hola, ¿tenéis la talla M? 👋".into(),
            ..message(
                "m_AG5Hz2Uq7tuwNEhXfYYKj8mJEM_QPpz5jdCK48PnKAjSdjfipqxqMvK8ma6AC8fplwlqLP_5cgXIbu7I3rBN0P",
                CONTACT,
                1_700_000_000_321,
            )
        };
        let files = InboundMessageReceived {
            attachments: vec![
                attachment(
                    AttachmentKind::Image,
                    "https://scontent.xx.fbcdn.net/v/t1.15752-9/receipt.jpg?_nc_cat=1&oh=abc",
                    "",
                ),
                attachment(
                    AttachmentKind::Voice,
                    "https://cdn.fbsbx.com/v/t59.3654-21/audioclip-1700000001000-3452.mp4?_nc_cat=1&oh=def",
                    "",
                ),
                attachment(
                    AttachmentKind::File,
                    "https://cdn.fbsbx.com/v/t59.2708-21/invoice_2024.pdf?_nc_cat=1",
                    "invoice_2024.pdf",
                ),
                attachment(
                    AttachmentKind::Sticker,
                    "https://scontent.xx.fbcdn.net/v/t39.1997-6/sticker.png",
                    "",
                ),
            ],
            ..message("m_attachments_0001", CONTACT, 1_700_000_001_321)
        };
        let echo = InboundMessageReceived {
            text: "We have size M in stock.".into(),
            echo: true,
            ..message("m_echo_0001", CONTACT, 1_700_000_002_321)
        };
        let reply = InboundMessageReceived {
            text: "Then I'll pick it up here".into(),
            reply_to_external_id: "m_echo_0001".into(),
            ..message("m_reply_0001", CONTACT, 1_700_000_003_321)
        };
        let location = InboundMessageReceived {
            location: Some(Location {
                latitude: 40.4168,
                longitude: -3.7038,
                name: "Pinned Location".into(),
                address: String::new(),
            }),
            ..message("m_location_0001", CONTACT, 1_700_000_003_400)
        };
        let reaction_id = format!("reaction:m_echo_0001:{CONTACT}:1700000004321");
        let reaction = InboundMessageReceived {
            reaction: Some(Reaction {
                message_external_id: "m_echo_0001".into(),
                emoji: "❤".into(),
            }),
            ..message(&reaction_id, CONTACT, 1_700_000_004_321)
        };
        let edit = InboundMessageReceived {
            text: "Then I'll pick it up tomorrow".into(),
            change: MessageChange::Edited as i32,
            webhook_id: "m_reply_0001:edit:1".into(),
            ..message("m_reply_0001", CONTACT, 1_700_000_004_400)
        };
        let first = InboundMessageReceived {
            text: "first".into(),
            ..message("m_batch_0001", "6945000000000002", 1_700_000_005_200)
        };
        let second = InboundMessageReceived {
            text: "second".into(),
            ..message("m_batch_0002", "6945000000000003", 1_700_000_005_300)
        };
        vec![
            Sample {
                name: "message_text.json",
                delivery_id: "d-text",
                body: include_bytes!("fixtures/messenger/message_text.json").to_vec(),
                expect: events(vec![text]),
            },
            Sample {
                name: "message_attachments.json",
                delivery_id: "d-files",
                body: include_bytes!("fixtures/messenger/message_attachments.json").to_vec(),
                expect: events(vec![files]),
            },
            Sample {
                name: "message_echo.json",
                delivery_id: "d-echo",
                body: include_bytes!("fixtures/messenger/message_echo.json").to_vec(),
                expect: events(vec![echo]),
            },
            Sample {
                name: "message_reply_location.json",
                delivery_id: "d-reply",
                body: include_bytes!("fixtures/messenger/message_reply_location.json").to_vec(),
                expect: events(vec![reply, location]),
            },
            Sample {
                name: "reaction_edit.json",
                delivery_id: "d-reaction",
                body: include_bytes!("fixtures/messenger/reaction_edit.json").to_vec(),
                expect: events(vec![reaction, edit]),
            },
            Sample {
                name: "batched_with_postback.json",
                delivery_id: "d-batch",
                body: include_bytes!("fixtures/messenger/batched_with_postback.json").to_vec(),
                expect: events(vec![first, second]),
            },
            Sample {
                name: "message_without_mid.json",
                delivery_id: "d-no-mid",
                body: include_bytes!("fixtures/messenger/message_without_mid.json").to_vec(),
                expect: Expect::Malformed("entry[0].messaging[0].message.mid"),
            },
        ]
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
                "hub.mode=subscribe&hub.verify_token=guess&hub.challenge=1158201444".into(),
                answer(StatusCode::FORBIDDEN, "verify token mismatch"),
            ),
            get("a GET without hub.mode", String::new(), None),
            HandshakeSample {
                name: "a POST with hub parameters",
                method: Method::POST,
                query: format!("hub.mode=subscribe&hub.verify_token={token}&hub.challenge=1"),
                headers: HeaderMap::new(),
                body: b"{}".to_vec(),
                expect: None,
            },
        ]
    }

    fn statuses(&self) -> Vec<(&'static str, DeliveryState)> {
        vec![
            ("delivery", DeliveryState::Delivered),
            ("read", DeliveryState::Read),
        ]
    }

    fn check_send(
        &self,
        channel: &ChannelCredentials,
        request: &Received,
    ) -> Result<Understood, String> {
        let s = settings(channel);
        let content_type = request.header("content-type").unwrap_or_default();
        let understood = meta_messaging::check_send(
            &request.method,
            &request.path,
            request.header("authorization"),
            content_type,
            &request.body,
            &s.page_access_token,
            &format!("/{DEFAULT_GRAPH_VERSION}/{}/messages", s.page_id),
        )
        .map_err(|e| format!("Graph error {}: {}", e.code, e.message))?;
        if understood.messaging_type != "RESPONSE" {
            return Err(format!("messaging_type {}", understood.messaging_type));
        }
        Ok(Understood {
            recipient: understood.recipient,
            text: understood.text.unwrap_or_default(),
            attachment_urls: understood
                .attachment
                .into_iter()
                .map(|(_, url)| url)
                .collect(),
            idempotency_key: None,
        })
    }

    fn accept_send(&self, request: &Received, external_id: &str) -> (StatusCode, String) {
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap_or_default();
        (
            StatusCode::OK,
            serde_json::json!({
                "recipient_id": body["recipient"]["id"],
                "message_id": external_id,
            })
            .to_string(),
        )
    }

    fn check_media_fetch(
        &self,
        _: &ChannelCredentials,
        _: &str,
        headers: &HeaderMap,
    ) -> Result<(), String> {
        // Meta's CDN URLs are signed in themselves: no credentials, and
        // none of ours should be sent there.
        if headers.is_empty() {
            Ok(())
        } else {
            Err(format!("credentials sent to the CDN: {headers:?}"))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messenger_conforms() {
    if let Err(report) = conformance::run_all(Arc::new(MessengerFixture)).await {
        panic!("{report}");
    }
}

fn parse(body: &[u8]) -> Vec<InboundEvent> {
    let fixture = MessengerFixture;
    let channel = fixture.channel("");
    let headers = fixture.sign(&channel, "", body, 0);
    let webhook = Webhook {
        channel_id: CHANNEL_ID,
        method: &Method::POST,
        url: conformance::WEBHOOK_URL,
        query: "",
        headers: &headers,
        body,
        now: conformance::NOW,
    };
    Messenger.verify(&channel, &webhook).expect("authentic");
    Messenger.parse(&channel, &webhook).expect("parses").events
}

fn status(
    mid: &str,
    state: DeliveryState,
    webhook_id: &str,
    at: i64,
    watermark: bool,
) -> InboundEvent {
    let mut s = InboundStatusReceived {
        channel_id: CHANNEL_ID.into(),
        message_external_id: mid.into(),
        state: state as i32,
        webhook_id: webhook_id.into(),
        contact_external_id: CONTACT.into(),
        ..Default::default()
    };
    at_ms!(s.occurred_at, at);
    if watermark {
        at_ms!(s.watermark, at);
    }
    InboundEvent::Status(s)
}

#[test]
fn a_delivery_names_each_message_and_everything_up_to_its_watermark() {
    let events = parse(include_bytes!("fixtures/messenger/delivery_watermark.json"));
    let wm = 1_700_000_006_000;
    assert_eq!(
        events,
        [
            status(
                "m_out_0001",
                DeliveryState::Delivered,
                "delivery:m_out_0001",
                wm,
                false
            ),
            status(
                "m_out_0002",
                DeliveryState::Delivered,
                "delivery:m_out_0002",
                wm,
                false
            ),
            status(
                "",
                DeliveryState::Delivered,
                &format!("delivery:{CONTACT}:{wm}"),
                wm,
                true
            ),
        ]
    );
}

#[test]
fn a_read_marks_everything_up_to_its_watermark_read() {
    let events = parse(include_bytes!("fixtures/messenger/read_watermark.json"));
    let wm = 1_700_000_007_000;
    assert_eq!(
        events,
        [status(
            "",
            DeliveryState::Read,
            &format!("read:{CONTACT}:{wm}"),
            wm,
            true
        )]
    );
}

#[test]
fn an_instagram_body_is_not_a_messenger_one() {
    let fixture = MessengerFixture;
    let channel = fixture.channel("");
    let body = include_bytes!("fixtures/instagram/message_text.json");
    let headers = fixture.sign(&channel, "", body, 0);
    let webhook = Webhook {
        channel_id: CHANNEL_ID,
        method: &Method::POST,
        url: conformance::WEBHOOK_URL,
        query: "",
        headers: &headers,
        body,
        now: conformance::NOW,
    };
    let e = Messenger
        .parse(&channel, &webhook)
        .expect_err("another product");
    assert!(e.to_string().starts_with("object: "), "{e}");
}

// ------------------------------------------------------- against the emulator

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

fn outbound(recipient: &str, text: &str, last_message_secs_ago: Option<i64>) -> OutboundRequested {
    let mut m = OutboundRequested {
        message_id: "msg-1".into(),
        channel_id: CHANNEL_ID.into(),
        recipient_external_id: recipient.into(),
        text: text.into(),
        ..Default::default()
    };
    if let Some(ago) = last_message_secs_ago {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let t = m
            .contact_last_message_at
            .get_or_insert_with(Default::default);
        t.seconds = i64::try_from(now).expect("secs") - ago;
    }
    m
}

async fn page(
    tagged: bool,
    api: impl FnOnce(&str) -> MetaMessaging,
) -> (Emulator, ChannelCredentials) {
    let mut channel = MessengerFixture.channel("");
    let mut s = settings(&channel);
    s.use_human_agent_tag = tagged;
    let emulator = Emulator::start(api(&s.page_access_token)).await;
    channel = channel_with(&emulator.base_url(), s);
    (emulator, channel)
}

const HOUR: i64 = 3600;

#[tokio::test]
async fn after_the_window_a_human_agent_reply_is_tagged_when_the_channel_says() {
    let (emulator, channel) = page(true, |token| {
        MetaMessaging::page(DEFAULT_GRAPH_VERSION, PAGE_ID, token)
            .with_recipient_outside_window("LATE")
    })
    .await;
    let outcome = Messenger
        .send(
            &client(),
            &channel,
            &outbound("LATE", "sorry for the wait", Some(30 * HOUR)),
        )
        .await;
    assert_eq!(
        outcome,
        SendOutcome::Sent {
            external_id: "m_emulated_1".into()
        }
    );
    let body = emulator.received()[0].json().expect("json");
    assert_eq!(
        (body["messaging_type"].as_str(), body["tag"].as_str()),
        (Some("MESSAGE_TAG"), Some("HUMAN_AGENT"))
    );
    // Within the window: a plain response.
    let outcome = Messenger
        .send(&client(), &channel, &outbound("SOON", "hi", Some(2 * HOUR)))
        .await;
    assert!(matches!(outcome, SendOutcome::Sent { .. }), "{outcome:?}");
    let body = emulator.received()[1].json().expect("json");
    assert_eq!(body["messaging_type"], "RESPONSE");
    assert!(body.get("tag").is_none());
}

#[tokio::test]
async fn without_the_tag_a_reply_after_the_window_is_rejected_with_metas_reason() {
    let (_emulator, channel) = page(false, |token| {
        MetaMessaging::page(DEFAULT_GRAPH_VERSION, PAGE_ID, token)
            .with_recipient_outside_window("LATE")
    })
    .await;
    let outcome = Messenger
        .send(
            &client(),
            &channel,
            &outbound("LATE", "hello?", Some(30 * HOUR)),
        )
        .await;
    let SendOutcome::Reject(reason) = outcome else {
        panic!("outside the window is permanent: {outcome:?}");
    };
    assert!(
        reason.contains("10/2018278") && reason.contains("outside of allowed window"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_throttled_page_is_paused_for_its_retry_after() {
    let (emulator, channel) = page(false, |token| {
        MetaMessaging::page(DEFAULT_GRAPH_VERSION, PAGE_ID, token)
    })
    .await;
    emulator.answer_next(meta_messaging::throttled(30));
    let outcome = Messenger
        .send(&client(), &channel, &outbound("U", "hi", None))
        .await;
    match outcome {
        SendOutcome::Throttled {
            reason,
            retry_after,
        } => {
            assert_eq!(retry_after, Duration::from_secs(30));
            assert!(reason.contains("613"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn long_text_goes_in_parts_at_word_boundaries_and_the_last_id_is_kept() {
    let (emulator, channel) = page(false, |token| {
        MetaMessaging::page(DEFAULT_GRAPH_VERSION, PAGE_ID, token)
    })
    .await;
    let text = "palabra ".repeat(400); // 3200 characters
    let outcome = Messenger
        .send(&client(), &channel, &outbound("U", text.trim_end(), None))
        .await;
    assert_eq!(
        outcome,
        SendOutcome::Sent {
            external_id: "m_emulated_2".into()
        }
    );
    let parts: Vec<String> = emulator
        .received()
        .iter()
        .map(|r| {
            r.json().expect("json")["message"]["text"]
                .as_str()
                .expect("text")
                .to_owned()
        })
        .collect();
    assert_eq!(parts.len(), 2);
    assert!(
        parts
            .iter()
            .all(|p| p.chars().count() <= 2000 && p.ends_with("palabra"))
    );
    assert_eq!(parts.join(" "), text.trim_end());
}

#[tokio::test]
async fn a_refused_token_is_permanent_and_named_by_its_code() {
    let (_emulator, channel) = page(false, |_| {
        MetaMessaging::page(DEFAULT_GRAPH_VERSION, PAGE_ID, "another-token")
    })
    .await;
    let outcome = Messenger
        .send(&client(), &channel, &outbound("U", "hi", None))
        .await;
    let SendOutcome::Reject(reason) = outcome else {
        panic!("{outcome:?}");
    };
    assert!(reason.starts_with("Graph API error 190"), "{reason}");
}

/// What the suite's case on passing trouble checks after its 429 (which
/// stops it, see [`only_the_known_429_divergence`]), checked here.
#[tokio::test]
async fn passing_trouble_is_retried_and_refusals_are_final_by_status_alone() {
    let (emulator, channel) = page(false, |token| {
        MetaMessaging::page(DEFAULT_GRAPH_VERSION, PAGE_ID, token)
    })
    .await;
    for (status, body, retry) in [
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "down for maintenance",
            true,
        ),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "<pre>password=hunter2</pre>",
            true,
        ),
        (StatusCode::REQUEST_TIMEOUT, "", true),
        (StatusCode::BAD_REQUEST, "invalid recipient", false),
        (StatusCode::MOVED_PERMANENTLY, "", false),
    ] {
        emulator.answer_next(telenet_emulators::Reply::bytes(
            status,
            "text/html",
            body.into(),
        ));
        let outcome = Messenger
            .send(&client(), &channel, &outbound("U", "hi", None))
            .await;
        match (&outcome, retry) {
            (SendOutcome::Retry(reason), true) | (SendOutcome::Reject(reason), false) => {
                assert!(reason.contains(status.as_str()), "{status}: {reason}");
                assert!(
                    !reason.contains("hunter2") && !reason.contains("maintenance"),
                    "{reason}"
                );
            }
            _ => panic!("{status}: {outcome:?}"),
        }
    }
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let gone = channel_with(&base, settings(&channel));
    let outcome = Messenger
        .send(&client(), &gone, &outbound("U", "hi", None))
        .await;
    assert!(
        matches!(outcome, SendOutcome::Retry(_)),
        "unreachable: {outcome:?}"
    );
    let unusable = MessengerFixture.unusable(&channel);
    let outcome = Messenger
        .send(&client(), &unusable, &outbound("U", "hi", None))
        .await;
    assert!(
        matches!(outcome, SendOutcome::Reject(_)),
        "unusable: {outcome:?}"
    );
}

#[tokio::test]
async fn checking_reads_the_page_with_its_token() {
    let (_emulator, channel) = page(false, |token| {
        MetaMessaging::page(DEFAULT_GRAPH_VERSION, PAGE_ID, token).with_profile(
            &format!("/{DEFAULT_GRAPH_VERSION}/{PAGE_ID}"),
            serde_json::json!({"id": PAGE_ID, "name": "Tienda Ana"}),
        )
    })
    .await;
    let checks = Messenger.check(&client(), &channel).await;
    assert_eq!(checks.len(), 1);
    assert!(checks[0].ok, "{checks:?}");
    assert_eq!(checks[0].detail, "Tienda Ana");
    let mut s = settings(&channel);
    s.page_access_token = "revoked".into();
    let revoked = channel_with(&channel.config.api_base_url, s);
    let checks = Messenger.check(&client(), &revoked).await;
    assert!(!checks[0].ok);
    assert!(
        checks[0].detail.starts_with("Graph API error 190"),
        "{checks:?}"
    );
}
