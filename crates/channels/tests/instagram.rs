//! Instagram messaging through the provider conformance suite
//! (src/conformance.rs) and against the Send API emulator
//! (telenet-emulators `meta_messaging`): its sample webhooks
//! (tests/fixtures/instagram, written from Meta's documentation), both
//! logins' send paths, and the byte-counted text limit.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, StatusCode};
use telenet_channels::conformance::{
    self, CHANNEL_ID, Expect, Fixture, HandshakeSample, Received, Sample, Understood,
};
use telenet_channels::instagram::Instagram;
use telenet_channels::meta::{DEFAULT_GRAPH_VERSION, signature_header};
use telenet_channels::{ChannelCredentials, HandshakeAnswer, InboundEvent, Provider, SendOutcome};
use telenet_emulators::Emulator;
use telenet_emulators::meta_messaging::{self, MetaMessaging};
use telenet_proto::common::v1::{
    Attachment, AttachmentKind, AttachmentState, ChannelKind, ChannelProvider, MessageChange,
    Reaction,
};
use telenet_proto::dispatch::v1::DeliveryState;
use telenet_proto::events::v1::{
    InboundMessageReceived, InboundStatusReceived, OutboundRequested, Sender,
};
use telenet_proto::ingress::v1::channel_config::Provider as Case;
use telenet_proto::ingress::v1::{ChannelConfig, InstagramConfig, InstagramLogin};

const ACCOUNT_ID: &str = "17841400000000001";
const PAGE_ID: &str = "106000000000001";
const CONTACT: &str = "1272000000000001";

/// Sets a `google.protobuf.Timestamp` field to a time in milliseconds.
macro_rules! at_ms {
    ($slot:expr, $ms:expr) => {{
        let ms: i64 = $ms;
        let t = $slot.get_or_insert_with(Default::default);
        t.seconds = ms / 1000;
        t.nanos = i32::try_from((ms % 1000) * 1_000_000).expect("nanos");
    }};
}

struct InstagramFixture;

fn settings(channel: &ChannelCredentials) -> InstagramConfig {
    match &channel.config.provider {
        Some(Case::Instagram(c)) => c.clone(),
        other => panic!("not an Instagram channel: {other:?}"),
    }
}

fn channel_with(api_base: &str, settings: InstagramConfig) -> ChannelCredentials {
    ChannelCredentials {
        channel_id: CHANNEL_ID.into(),
        kind: ChannelKind::Instagram,
        provider: ChannelProvider::Instagram,
        config: ChannelConfig {
            provider: Some(Case::Instagram(settings)),
            api_base_url: api_base.into(),
        },
        ..Default::default()
    }
}

fn random(len: usize) -> String {
    telenet_channels::config::random_token(len).expect("randomness")
}

fn message(mid: &str, ts: i64) -> InboundMessageReceived {
    let mut m = InboundMessageReceived {
        channel_id: CHANNEL_ID.into(),
        channel_kind: ChannelKind::Instagram as i32,
        provider: ChannelProvider::Instagram as i32,
        webhook_id: mid.into(),
        external_id: mid.into(),
        sender: Some(Sender {
            external_id: CONTACT.into(),
            display_name: String::new(),
        }),
        ..Default::default()
    };
    at_ms!(m.sent_at, ts);
    m
}

fn attachment(kind: AttachmentKind, url: &str) -> Attachment {
    Attachment {
        kind: kind as i32,
        url: url.into(),
        state: AttachmentState::Pending as i32,
        ..Default::default()
    }
}

fn events(messages: Vec<InboundMessageReceived>) -> Expect {
    Expect::Events(messages.into_iter().map(InboundEvent::Message).collect())
}

impl Fixture for InstagramFixture {
    fn provider(&self) -> Arc<dyn Provider> {
        Arc::new(Instagram)
    }

    fn channel(&self, api_base: &str) -> ChannelCredentials {
        channel_with(
            api_base,
            InstagramConfig {
                login: InstagramLogin::Facebook as i32,
                instagram_account_id: ACCOUNT_ID.into(),
                page_id: PAGE_ID.into(),
                access_token: format!("EAA{}", random(40)),
                app_secret: random(32),
                verify_token: random(24),
                ..Default::default()
            },
        )
    }

    fn unusable(&self, channel: &ChannelCredentials) -> ChannelCredentials {
        let mut s = settings(channel);
        s.app_secret.clear();
        s.access_token.clear();
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
            text: "Do you ship to Lisbon? 📦".into(),
            ..message(
                "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjE3ODQxNDAwMDAwMDAwMDAxOjM0MDI4MjM2Njg0MTcxMDMwMDk0OTEyODE",
                1_700_000_000_321,
            )
        };
        let voice = InboundMessageReceived {
            attachments: vec![
                attachment(
                    AttachmentKind::Voice,
                    "https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id=1800000000000001&signature=abc",
                ),
                attachment(
                    AttachmentKind::Image,
                    "https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id=1800000000000002&signature=def",
                ),
            ],
            reply_to_external_id: "aWdf_out_0001".into(),
            ..message("aWdf_voice_0001", 1_700_000_001_321)
        };
        let story = InboundMessageReceived {
            unsupported_type: "story_mention".into(),
            text: "https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id=1800000000000003&signature=ghi".into(),
            ..message("aWdf_story_0001", 1_700_000_002_321)
        };
        let share = InboundMessageReceived {
            unsupported_type: "share".into(),
            text: "https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id=1800000000000004&signature=jkl".into(),
            ..message("aWdf_share_0001", 1_700_000_002_400)
        };
        let unsent = InboundMessageReceived {
            change: MessageChange::Unsent as i32,
            webhook_id: "aWdf_voice_0001:unsent".into(),
            ..message("aWdf_voice_0001", 1_700_000_003_321)
        };
        let unreact_id = format!("reaction:aWdf_out_0001:{CONTACT}:1700000003400");
        let unreact = InboundMessageReceived {
            reaction: Some(Reaction {
                message_external_id: "aWdf_out_0001".into(),
                emoji: String::new(),
            }),
            ..message(&unreact_id, 1_700_000_003_400)
        };
        let echo = InboundMessageReceived {
            text: "Yes, we ship to Portugal.".into(),
            echo: true,
            ..message("aWdf_echo_0001", 1_700_000_003_450)
        };
        let mut read = InboundStatusReceived {
            channel_id: CHANNEL_ID.into(),
            message_external_id: "aWdf_out_0001".into(),
            state: DeliveryState::Read as i32,
            webhook_id: "read:aWdf_out_0001".into(),
            contact_external_id: CONTACT.into(),
            ..Default::default()
        };
        at_ms!(read.occurred_at, 1_700_000_004_321);
        vec![
            Sample {
                name: "message_text.json",
                delivery_id: "d-text",
                body: include_bytes!("fixtures/instagram/message_text.json").to_vec(),
                expect: events(vec![text]),
            },
            Sample {
                name: "message_voice_image_reply.json",
                delivery_id: "d-voice",
                body: include_bytes!("fixtures/instagram/message_voice_image_reply.json").to_vec(),
                expect: events(vec![voice]),
            },
            Sample {
                name: "story_mention_share.json",
                delivery_id: "d-story",
                body: include_bytes!("fixtures/instagram/story_mention_share.json").to_vec(),
                expect: events(vec![story, share]),
            },
            Sample {
                name: "unsend_reaction_echo.json",
                delivery_id: "d-unsend",
                body: include_bytes!("fixtures/instagram/unsend_reaction_echo.json").to_vec(),
                expect: events(vec![unsent, unreact, echo]),
            },
            Sample {
                name: "read_mid.json",
                delivery_id: "d-read",
                body: include_bytes!("fixtures/instagram/read_mid.json").to_vec(),
                expect: Expect::Events(vec![InboundEvent::Status(read)]),
            },
            Sample {
                name: "page_object.json",
                delivery_id: "d-page",
                body: include_bytes!("fixtures/instagram/page_object.json").to_vec(),
                expect: Expect::Malformed("object"),
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
        vec![
            get(
                "the channel's verify token",
                format!("hub.mode=subscribe&hub.verify_token={token}&hub.challenge=987654"),
                Some(HandshakeAnswer {
                    status: StatusCode::OK,
                    content_type: "text/plain; charset=utf-8",
                    body: b"987654".to_vec(),
                }),
            ),
            get(
                "another verify token",
                "hub.mode=subscribe&hub.verify_token=guess&hub.challenge=1".into(),
                Some(HandshakeAnswer {
                    status: StatusCode::FORBIDDEN,
                    content_type: "text/plain; charset=utf-8",
                    body: b"verify token mismatch".to_vec(),
                }),
            ),
            get("a GET without hub.mode", String::new(), None),
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
        let understood = meta_messaging::check_send(
            &request.method,
            &request.path,
            request.header("authorization"),
            request.header("content-type").unwrap_or_default(),
            &request.body,
            &s.access_token,
            &format!("/{DEFAULT_GRAPH_VERSION}/{}/messages", s.page_id),
        )
        .map_err(|e| format!("Graph error {}: {}", e.code, e.message))?;
        if let Some(text) = understood.text.as_ref().filter(|t| t.len() > 1000) {
            return Err(format!("a text of {} bytes", text.len()));
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
        if headers.is_empty() {
            Ok(())
        } else {
            Err(format!("credentials sent to the CDN: {headers:?}"))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instagram_conforms() {
    if let Err(report) = conformance::run_all(Arc::new(InstagramFixture)).await {
        panic!("{report}");
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

fn outbound(text: &str, attachments: Vec<Attachment>) -> OutboundRequested {
    OutboundRequested {
        message_id: "msg-1".into(),
        channel_id: CHANNEL_ID.into(),
        recipient_external_id: CONTACT.into(),
        text: text.into(),
        attachments,
        ..Default::default()
    }
}

#[tokio::test]
async fn an_instagram_login_sends_to_me_with_its_own_token() {
    let mut s = settings(&InstagramFixture.channel(""));
    s.set_login(InstagramLogin::Instagram);
    s.page_id.clear();
    let emulator = Emulator::start(MetaMessaging::instagram_login(
        DEFAULT_GRAPH_VERSION,
        &s.access_token,
    ))
    .await;
    let channel = channel_with(&emulator.base_url(), s);
    let voice = Attachment {
        kind: AttachmentKind::Voice as i32,
        url: "https://files.test/v1/downloads/ws/blob/note.m4a".into(),
        mime_type: "audio/mp4".into(),
        ..Default::default()
    };
    let outcome = Instagram
        .send(&client(), &channel, &outbound("listen", vec![voice]))
        .await;
    assert_eq!(
        outcome,
        SendOutcome::Sent {
            external_id: "m_emulated_2".into()
        }
    );
    let received = emulator.received();
    assert!(
        received.iter().all(|r| r.path == "/v21.0/me/messages"),
        "{received:?}"
    );
    let voice = received[1].json().expect("json");
    assert_eq!(voice["message"]["attachment"]["type"], "audio");
    assert_eq!(
        voice["message"]["attachment"]["payload"]["url"],
        "https://files.test/v1/downloads/ws/blob/note.m4a"
    );
}

#[tokio::test]
async fn text_is_split_within_a_thousand_bytes() {
    let s = settings(&InstagramFixture.channel(""));
    let emulator = Emulator::start(MetaMessaging::page(
        DEFAULT_GRAPH_VERSION,
        PAGE_ID,
        &s.access_token,
    ))
    .await;
    let channel = channel_with(&emulator.base_url(), s);
    // 899 characters, 1499 bytes: two messages, though under 1000
    // characters.
    let text = "ñá ".repeat(300);
    let outcome = Instagram
        .send(&client(), &channel, &outbound(text.trim_end(), Vec::new()))
        .await;
    assert!(matches!(outcome, SendOutcome::Sent { .. }), "{outcome:?}");
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
    assert_eq!(parts.len(), 2, "{parts:?}");
    assert!(parts.iter().all(|p| p.len() <= 1000));
    assert_eq!(parts.join(" "), text.trim_end());
}

#[tokio::test]
async fn checking_reads_the_account_by_its_login() {
    let s = settings(&InstagramFixture.channel(""));
    let emulator = Emulator::start(
        MetaMessaging::page(DEFAULT_GRAPH_VERSION, PAGE_ID, &s.access_token).with_profile(
            &format!("/{DEFAULT_GRAPH_VERSION}/{ACCOUNT_ID}"),
            serde_json::json!({"id": ACCOUNT_ID, "username": "tienda.ana"}),
        ),
    )
    .await;
    let channel = channel_with(&emulator.base_url(), s.clone());
    let checks = Instagram.check(&client(), &channel).await;
    assert!(checks[0].ok, "{checks:?}");
    assert_eq!(checks[0].detail, "tienda.ana");
    let mut ig = s;
    ig.set_login(InstagramLogin::Instagram);
    let emulator = Emulator::start(
        MetaMessaging::instagram_login(DEFAULT_GRAPH_VERSION, &ig.access_token).with_profile(
            &format!("/{DEFAULT_GRAPH_VERSION}/me"),
            serde_json::json!({"user_id": ACCOUNT_ID, "username": "tienda.ana"}),
        ),
    )
    .await;
    let channel = channel_with(&emulator.base_url(), ig);
    let checks = Instagram.check(&client(), &channel).await;
    assert!(checks[0].ok, "{checks:?}");
    assert_eq!(emulator.received()[0].query, "fields=user_id,username");
}
