//! The custom channel through the provider conformance suite
//! (src/conformance.rs): its samples (tests/fixtures/custom), its
//! statuses, and a stand-in receiver that checks what a real one checks —
//! the Standard Webhooks signature with the channel's secret, the content
//! type, the `message.outbound` body.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, StatusCode};
use telenet_channels::conformance::{
    self, CHANNEL_ID, Expect, Fixture, HandshakeSample, Received, Sample, Understood,
};
use telenet_channels::custom::Custom;
use telenet_channels::{ChannelCredentials, InboundEvent, Provider};
use telenet_proto::common::v1::{
    Attachment, AttachmentKind, AttachmentState, ChannelKind, ChannelProvider,
};
use telenet_proto::dispatch::v1::DeliveryState;
use telenet_proto::events::v1::{InboundMessageReceived, InboundStatusReceived, Sender};
use telenet_signing::Secret;

struct CustomFixture;

fn secret_of(channel: &ChannelCredentials) -> Secret {
    Secret::parse(&channel.secret).unwrap_or_else(|e| panic!("the test channel's secret: {e}"))
}

/// Check the three Standard Webhooks headers over `signed` as a receiver
/// holding the channel's secret does.
fn verify(channel: &ChannelCredentials, headers: &HeaderMap, signed: &[u8]) -> Result<(), String> {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    secret_of(channel)
        .verify(
            h("webhook-id"),
            h("webhook-timestamp"),
            h("webhook-signature"),
            signed,
            telenet_signing::unix_now(),
        )
        .map_err(|e| e.to_string())
}

fn message(external_id: &str, webhook_id: &str) -> InboundMessageReceived {
    InboundMessageReceived {
        channel_id: CHANNEL_ID.into(),
        channel_kind: ChannelKind::Custom as i32,
        provider: ChannelProvider::Custom as i32,
        webhook_id: webhook_id.into(),
        external_id: external_id.into(),
        sender: Some(Sender {
            external_id: "+34600111222".into(),
            display_name: String::new(),
        }),
        ..Default::default()
    }
}

fn status(external_id: &str, state: DeliveryState, error: &str, webhook_id: &str) -> InboundEvent {
    InboundEvent::Status(InboundStatusReceived {
        channel_id: CHANNEL_ID.into(),
        message_external_id: external_id.into(),
        state: state as i32,
        error: error.into(),
        webhook_id: webhook_id.into(),
        ..Default::default()
    })
}

impl Fixture for CustomFixture {
    fn provider(&self) -> Arc<dyn Provider> {
        Arc::new(Custom)
    }

    fn channel(&self, api_base: &str) -> ChannelCredentials {
        ChannelCredentials {
            kind: ChannelKind::Custom,
            outbound_url: format!("{api_base}/in/shop"),
            secret: Secret::generate().expect("randomness").expose(),
            accepted_voice_types: vec!["audio/ogg; codecs=opus".into(), "audio/mpeg".into()],
            ..Default::default()
        }
    }

    fn sign(
        &self,
        channel: &ChannelCredentials,
        delivery_id: &str,
        body: &[u8],
        now: i64,
    ) -> HeaderMap {
        let signature = secret_of(channel).sign(delivery_id, now, body);
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        for (name, value) in [
            ("webhook-id", delivery_id.to_owned()),
            ("webhook-timestamp", now.to_string()),
            ("webhook-signature", signature),
        ] {
            headers.insert(name, HeaderValue::from_str(&value).expect("header value"));
        }
        headers
    }

    fn auth_headers(&self) -> &'static [&'static str] {
        &["webhook-id", "webhook-timestamp", "webhook-signature"]
    }

    fn timestamp_tolerance(&self) -> Option<Duration> {
        Some(Duration::from_secs(telenet_signing::TOLERANCE_SECS as u64))
    }

    fn samples(&self) -> Vec<Sample> {
        let text = InboundMessageReceived {
            text: "Hola, ¿tenéis la talla M? 👋".into(),
            sender: Some(Sender {
                external_id: "+34600111222".into(),
                display_name: "Ana".into(),
            }),
            ..message("msg-1001", "wh-text")
        };
        let voice = InboundMessageReceived {
            attachments: vec![
                Attachment {
                    kind: AttachmentKind::Voice as i32,
                    url: "https://files.shop.example/in/voice-1002.ogg".into(),
                    mime_type: "audio/ogg; codecs=opus".into(),
                    size_bytes: 9199,
                    state: AttachmentState::Pending as i32,
                    ..Default::default()
                },
                Attachment {
                    kind: AttachmentKind::Image as i32,
                    url: "https://files.shop.example/in/receipt.png".into(),
                    mime_type: "image/png".into(),
                    state: AttachmentState::Pending as i32,
                    ..Default::default()
                },
            ],
            ..message("msg-1002", "wh-voice")
        };
        vec![
            Sample {
                name: "inbound_text.json",
                delivery_id: "wh-text",
                body: include_bytes!("fixtures/custom/inbound_text.json").to_vec(),
                expect: Expect::Events(vec![InboundEvent::Message(text)]),
            },
            Sample {
                name: "inbound_voice_note.json",
                delivery_id: "wh-voice",
                body: include_bytes!("fixtures/custom/inbound_voice_note.json").to_vec(),
                expect: Expect::Events(vec![InboundEvent::Message(voice)]),
            },
            Sample {
                name: "status_delivered.json",
                delivery_id: "wh-delivered",
                body: include_bytes!("fixtures/custom/status_delivered.json").to_vec(),
                expect: Expect::Events(vec![status(
                    "out-77",
                    DeliveryState::Delivered,
                    "",
                    "wh-delivered",
                )]),
            },
            Sample {
                name: "status_failed.json",
                delivery_id: "wh-failed",
                body: include_bytes!("fixtures/custom/status_failed.json").to_vec(),
                expect: Expect::Events(vec![status(
                    "out-78",
                    DeliveryState::Failed,
                    "recipient blocked the shop",
                    "wh-failed",
                )]),
            },
            Sample {
                name: "inbound_unknown_field.json",
                delivery_id: "wh-unknown-field",
                body: include_bytes!("fixtures/custom/inbound_unknown_field.json").to_vec(),
                expect: Expect::Events(vec![InboundEvent::Message(InboundMessageReceived {
                    text: "hi".into(),
                    ..message("msg-1003", "wh-unknown-field")
                })]),
            },
            Sample {
                name: "status_null_error.json",
                delivery_id: "wh-null-error",
                body: include_bytes!("fixtures/custom/status_null_error.json").to_vec(),
                expect: Expect::Events(vec![status(
                    "out-79",
                    DeliveryState::Delivered,
                    "",
                    "wh-null-error",
                )]),
            },
            Sample {
                name: "unknown_type.json",
                delivery_id: "wh-unknown-type",
                body: include_bytes!("fixtures/custom/unknown_type.json").to_vec(),
                expect: Expect::Events(Vec::new()),
            },
            Sample {
                name: "status_unknown_state.json",
                delivery_id: "wh-unknown-state",
                body: include_bytes!("fixtures/custom/status_unknown_state.json").to_vec(),
                expect: Expect::Malformed("status.state"),
            },
        ]
    }

    fn handshakes(&self, _: &ChannelCredentials) -> Vec<HandshakeSample> {
        // The custom channel has no handshake: a GET is not one either.
        vec![HandshakeSample {
            name: "a GET with a challenge",
            method: http::Method::GET,
            query: "hub.mode=subscribe&hub.challenge=42".into(),
            headers: HeaderMap::new(),
            body: Vec::new(),
            expect: None,
        }]
    }

    fn statuses(&self) -> Vec<(&'static str, DeliveryState)> {
        vec![
            ("sent", DeliveryState::Sent),
            ("delivered", DeliveryState::Delivered),
            ("read", DeliveryState::Read),
            ("failed", DeliveryState::Failed),
        ]
    }

    fn check_send(
        &self,
        channel: &ChannelCredentials,
        request: &Received,
    ) -> Result<Understood, String> {
        if request.method != http::Method::POST || request.path != "/in/shop" {
            return Err(format!(
                "{} {} is not the outbound URL",
                request.method, request.path
            ));
        }
        if request.header("content-type") != Some("application/json") {
            return Err(format!("content-type {:?}", request.header("content-type")));
        }
        verify(channel, &request.headers, &request.body)?;
        let body: serde_json::Value =
            serde_json::from_slice(&request.body).map_err(|e| format!("not json: {e}"))?;
        if body["type"] != "message.outbound" {
            return Err(format!("type {}", body["type"]));
        }
        let message = &body["message"];
        if message["id"].as_str() != request.header("webhook-id") {
            return Err("message.id is not the webhook-id".into());
        }
        let attachments = message["attachments"]
            .as_array()
            .ok_or("message.attachments is not a list")?;
        let mut urls = Vec::new();
        for a in attachments {
            let kind = a["kind"].as_str().unwrap_or_default();
            if !["image", "audio", "voice", "video", "file", "sticker"].contains(&kind) {
                return Err(format!("attachment kind {kind:?}"));
            }
            urls.push(a["url"].as_str().unwrap_or_default().to_owned());
        }
        Ok(Understood {
            recipient: message["recipient"]["external_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            text: message["text"].as_str().unwrap_or_default().to_owned(),
            attachment_urls: urls,
            idempotency_key: request.header("webhook-id").map(str::to_owned),
        })
    }

    fn accept_send(&self, _: &Received, external_id: &str) -> (StatusCode, String) {
        (
            StatusCode::OK,
            serde_json::json!({ "external_id": external_id }).to_string(),
        )
    }

    fn check_media_fetch(
        &self,
        channel: &ChannelCredentials,
        url: &str,
        headers: &HeaderMap,
    ) -> Result<(), String> {
        verify(channel, headers, url.as_bytes())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_custom_channel_conforms() {
    if let Err(report) = conformance::run_all(Arc::new(CustomFixture)).await {
        panic!("{report}");
    }
}
