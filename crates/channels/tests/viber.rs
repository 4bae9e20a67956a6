//! Viber through the provider conformance suite (src/conformance.rs): the
//! documented callbacks (tests/fixtures/viber), signed with the bot's auth
//! token, and a stand-in API that checks `send_message` as Viber does (the
//! emulator's checks, tests/emulators/src/viber.rs). Then what the suite
//! cannot see: the SDK's signature vector, message tokens beyond 2^53,
//! `set_webhook` with Viber's signed callback answered by the provider,
//! Viber's statuses on send, and the account check.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use telenet_channels::conformance::{
    self, CHANNEL_ID, Expect, Fixture, HandshakeSample, Received, Sample, Understood,
};
use telenet_channels::viber::{self, Viber};
use telenet_channels::{
    ChannelCredentials, CredentialsError, InboundEvent, Provider, SendOutcome, Webhook,
};
use telenet_emulators::viber::{FIRST_TOKEN, ViberApi, check_send, status};
use telenet_emulators::{Emulator, Recorded};
use telenet_proto::common::v1::{
    Attachment, AttachmentKind, AttachmentState, ChannelKind, ChannelProvider, Location,
};
use telenet_proto::dispatch::v1::DeliveryState;
use telenet_proto::events::v1::{
    InboundMessageReceived, InboundStatusReceived, OutboundRequested, Sender,
};
use telenet_proto::ingress::v1::channel_config::Provider as Case;
use telenet_proto::ingress::v1::{ChannelConfig, ViberConfig};

const USER: &str = "01234567890A=";
const T: i64 = 1_457_764_197_627;

fn random(prefix: &str) -> String {
    let mut rng = fastrand::Rng::new();
    let tail: String = (0..32).map(|_| rng.alphanumeric()).collect();
    format!("{prefix}{tail}")
}

fn channel_with(api_base: &str, token: &str) -> ChannelCredentials {
    ChannelCredentials {
        channel_id: CHANNEL_ID.into(),
        kind: ChannelKind::Viber,
        provider: ChannelProvider::Viber,
        config: ChannelConfig {
            provider: Some(Case::Viber(ViberConfig {
                auth_token: token.into(),
                sender_name: "Conformance shop".into(),
                sender_avatar_url: String::new(),
            })),
            api_base_url: api_base.into(),
        },
        ..Default::default()
    }
}

fn token_of(channel: &ChannelCredentials) -> String {
    match &channel.config.provider {
        Some(Case::Viber(c)) => c.auth_token.clone(),
        _ => panic!("not a Viber channel"),
    }
}

fn at_ms<T: Default>(slot: &mut Option<T>, ms: i64, set: impl FnOnce(&mut T, i64, i32)) {
    let mut at = T::default();
    set(
        &mut at,
        ms / 1000,
        i32::try_from(ms % 1000).expect("ms") * 1_000_000,
    );
    *slot = Some(at);
}

/// A number as the JSON reader reads it (serde_json's fast float path may
/// differ from Rust's own parse in the last bit).
fn json_f64(text: &str) -> f64 {
    serde_json::from_str(text).expect("a number")
}

fn message(token: &str, name: &str) -> InboundMessageReceived {
    let mut m = InboundMessageReceived {
        channel_id: CHANNEL_ID.into(),
        channel_kind: ChannelKind::Viber as i32,
        provider: ChannelProvider::Viber as i32,
        webhook_id: token.into(),
        external_id: token.into(),
        sender: Some(Sender {
            external_id: USER.into(),
            display_name: name.into(),
        }),
        ..Default::default()
    };
    at_ms(&mut m.sent_at, T, |t, s, n| {
        t.seconds = s;
        t.nanos = n;
    });
    m
}

fn receipt(state: DeliveryState, error: &str) -> InboundEvent {
    let mut s = InboundStatusReceived {
        channel_id: CHANNEL_ID.into(),
        message_external_id: "4912661846655238145".into(),
        state: state as i32,
        error: error.into(),
        webhook_id: "4912661846655238145".into(),
        contact_external_id: USER.into(),
        ..Default::default()
    };
    at_ms(&mut s.occurred_at, T, |t, s, n| {
        t.seconds = s;
        t.nanos = n;
    });
    InboundEvent::Status(s)
}

fn media(kind: AttachmentKind, url: &str) -> Attachment {
    Attachment {
        kind: kind as i32,
        url: url.into(),
        state: AttachmentState::Pending as i32,
        ..Default::default()
    }
}

fn sample(name: &'static str, body: &[u8], expect: Expect) -> Sample {
    Sample {
        name,
        delivery_id: name,
        body: body.to_vec(),
        expect,
    }
}

fn one(m: InboundMessageReceived) -> Expect {
    Expect::Events(vec![InboundEvent::Message(m)])
}

fn recorded(request: &Received) -> Recorded {
    Recorded {
        method: request.method.clone(),
        path: request.path.clone(),
        query: request.query.clone(),
        headers: request.headers.clone(),
        body: request.body.clone().into(),
    }
}

struct ViberFixture;

impl Fixture for ViberFixture {
    fn provider(&self) -> Arc<dyn Provider> {
        Arc::new(Viber)
    }

    fn channel(&self, api_base: &str) -> ChannelCredentials {
        channel_with(api_base, &random("viber-"))
    }

    fn unusable(&self, channel: &ChannelCredentials) -> ChannelCredentials {
        channel_with(&channel.config.api_base_url, "")
    }

    fn sign(&self, channel: &ChannelCredentials, _: &str, body: &[u8], _: i64) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert(
            "x-viber-content-signature",
            HeaderValue::from_str(&viber::signature(&token_of(channel), body)).expect("hex"),
        );
        headers
    }

    fn auth_headers(&self) -> &'static [&'static str] {
        &["x-viber-content-signature"]
    }

    fn timestamp_tolerance(&self) -> Option<Duration> {
        // Viber signs no timestamp.
        None
    }

    fn samples(&self) -> Vec<Sample> {
        const DL: &str = "https://dl-media.viber.com/1/share/2";
        vec![
            sample(
                "message_text.json",
                include_bytes!("fixtures/viber/message_text.json"),
                one(InboundMessageReceived {
                    text: "a message to the service".into(),
                    ..message("4912661846655238145", "John McClane")
                }),
            ),
            sample(
                "message_picture.json",
                include_bytes!("fixtures/viber/message_picture.json"),
                one(InboundMessageReceived {
                    text: "Photo description".into(),
                    attachments: vec![Attachment {
                        file_name: "photo.jpg".into(),
                        size_bytes: 48512,
                        ..media(
                            AttachmentKind::Image,
                            &format!(
                                "{DL}/long/vibes/icon/image/0x0/95e0/5688fdffdf6b2feb7b6a8e2e7d41de89d97e63fa9aff50bfc8b3d5cd3f3c95e0.jpg"
                            ),
                        )
                    }],
                    ..message("4912661846655238146", "John McClane")
                }),
            ),
            sample(
                "message_video.json",
                include_bytes!("fixtures/viber/message_video.json"),
                one(InboundMessageReceived {
                    attachments: vec![Attachment {
                        size_bytes: 10000,
                        duration_ms: 10_000,
                        ..media(AttachmentKind::Video, &format!("{DL}/video/sample.mp4"))
                    }],
                    ..message("4912661846655238147", "John McClane")
                }),
            ),
            sample(
                "message_file.json",
                include_bytes!("fixtures/viber/message_file.json"),
                one(InboundMessageReceived {
                    attachments: vec![Attachment {
                        size_bytes: 10000,
                        file_name: "invoice.pdf".into(),
                        ..media(AttachmentKind::File, &format!("{DL}/file/invoice.pdf"))
                    }],
                    ..message("4912661846655238148", "John McClane")
                }),
            ),
            sample(
                "message_sticker.json",
                include_bytes!("fixtures/viber/message_sticker.json"),
                one(InboundMessageReceived {
                    attachments: vec![media(
                        AttachmentKind::Sticker,
                        "https://viber-stickers.example.com/stickers/46105.png",
                    )],
                    ..message("4912661846655238149", "John McClane")
                }),
            ),
            sample(
                "message_location.json",
                include_bytes!("fixtures/viber/message_location.json"),
                one(InboundMessageReceived {
                    location: Some(Location {
                        latitude: json_f64("50.76891"),
                        longitude: json_f64("6.11499"),
                        ..Default::default()
                    }),
                    ..message("4912661846655238150", "John McClane")
                }),
            ),
            sample(
                "message_contact.json",
                include_bytes!("fixtures/viber/message_contact.json"),
                one(InboundMessageReceived {
                    unsupported_type: "contact".into(),
                    text: "Itamar +972511123123".into(),
                    ..message("4912661846655238151", "John McClane")
                }),
            ),
            sample(
                "message_url.json",
                include_bytes!("fixtures/viber/message_url.json"),
                one(InboundMessageReceived {
                    text: "http://www.website.com/go_here".into(),
                    ..message("4912661846655238152", "John McClane")
                }),
            ),
            sample(
                "delivered.json",
                include_bytes!("fixtures/viber/delivered.json"),
                Expect::Events(vec![receipt(DeliveryState::Delivered, "")]),
            ),
            sample(
                "seen.json",
                include_bytes!("fixtures/viber/seen.json"),
                Expect::Events(vec![receipt(DeliveryState::Read, "")]),
            ),
            sample(
                "failed.json",
                include_bytes!("fixtures/viber/failed.json"),
                Expect::Events(vec![receipt(DeliveryState::Failed, "failure description")]),
            ),
            sample(
                "webhook_sdk_vector.json",
                include_bytes!("fixtures/viber/webhook_sdk_vector.json"),
                Expect::Events(Vec::new()),
            ),
            sample(
                "subscribed.json",
                include_bytes!("fixtures/viber/subscribed.json"),
                Expect::Events(Vec::new()),
            ),
            sample(
                "unsubscribed.json",
                include_bytes!("fixtures/viber/unsubscribed.json"),
                Expect::Events(Vec::new()),
            ),
            sample(
                "conversation_started.json",
                include_bytes!("fixtures/viber/conversation_started.json"),
                Expect::Events(Vec::new()),
            ),
            sample(
                "message_without_token.json",
                include_bytes!("fixtures/viber/message_without_token.json"),
                Expect::Malformed("message_token"),
            ),
        ]
    }

    fn handshakes(&self, _: &ChannelCredentials) -> Vec<HandshakeSample> {
        // The `webhook` callback is signed like any other: no handshake.
        vec![HandshakeSample {
            name: "a GET",
            method: Method::GET,
            query: String::new(),
            headers: HeaderMap::new(),
            body: Vec::new(),
            expect: None,
        }]
    }

    fn statuses(&self) -> Vec<(&'static str, DeliveryState)> {
        vec![
            ("delivered", DeliveryState::Delivered),
            ("seen", DeliveryState::Read),
            ("failed", DeliveryState::Failed),
        ]
    }

    fn check_send(
        &self,
        channel: &ChannelCredentials,
        request: &Received,
    ) -> Result<Understood, String> {
        let sent = check_send(&token_of(channel), &recorded(request))
            .map_err(|(code, why)| format!("status {code}: {why}"))?;
        Ok(Understood {
            recipient: sent.receiver,
            text: sent.text,
            attachment_urls: sent.media.into_iter().collect(),
            // Viber de-duplicates nothing.
            idempotency_key: None,
        })
    }

    fn accept_send(&self, _: &Received, external_id: &str) -> (StatusCode, String) {
        (
            StatusCode::OK,
            serde_json::json!({ "status": 0, "status_message": "ok", "message_token": external_id })
                .to_string(),
        )
    }

    fn check_media_fetch(
        &self,
        _: &ChannelCredentials,
        _: &str,
        headers: &HeaderMap,
    ) -> Result<(), String> {
        // Viber's media URLs are public: nothing to authenticate, and the
        // auth token must never go to them.
        headers
            .is_empty()
            .then_some(())
            .ok_or_else(|| format!("credentials sent to a public URL: {headers:?}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_viber_channel_conforms() {
    if let Err(report) = conformance::run_all(Arc::new(ViberFixture)).await {
        panic!("{report}");
    }
}

#[tokio::test]
async fn viber_trouble_is_retried_throttling_waits_and_refusals_are_final() {
    let emulator = Emulator::start(emulator_api("tok")).await;
    let channel = channel_with(&emulator.base_url(), "tok");
    let unusable = channel_with(&emulator.base_url(), "");
    let message = outbound("m-trouble", "hello", Vec::new());
    passing_trouble_is_retried_throttled_or_final(&Viber, &emulator, &channel, &unusable, &message)
        .await;
}

static POST: Method = Method::POST;

fn webhook<'a>(headers: &'a HeaderMap, body: &'a [u8]) -> Webhook<'a> {
    Webhook {
        channel_id: CHANNEL_ID,
        method: &POST,
        url: conformance::WEBHOOK_URL,
        query: "",
        headers,
        body,
        now: conformance::NOW,
    }
}

#[test]
fn the_sdks_signature_vector_verifies_and_its_callback_gives_no_events() {
    let body = include_bytes!("fixtures/viber/webhook_sdk_vector.json");
    let token = "44dafb7e0f40021e-61a47a1e6778d187-f2c5a676a07050b3";
    let signature = "d21b343448c8aee33b8e93768ef6ceb64a6ba6163099973a2b8bd028fea510ef";
    assert_eq!(viber::signature(token, body), signature);
    let channel = channel_with("", token);
    let mut headers = HeaderMap::new();
    headers.insert("x-viber-content-signature", signature.parse().expect("hex"));
    assert_eq!(Viber.verify(&channel, &webhook(&headers, body)), Ok(()));
    headers.insert(
        "x-viber-content-signature",
        signature.to_uppercase().parse().expect("hex"),
    );
    assert_eq!(
        Viber.verify(&channel, &webhook(&headers, body)),
        Ok(()),
        "hex in capitals"
    );
    let inbound = Viber
        .parse(&channel, &webhook(&headers, body))
        .expect("parses");
    assert!(inbound.events.is_empty());
}

#[test]
fn a_message_token_beyond_two_to_the_53_keeps_every_digit() {
    let body = br#"{"event":"seen","timestamp":1457764197627,"message_token":9007199254740993,"user_id":"u"}"#;
    let channel = channel_with("", "t");
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-viber-content-signature",
        viber::signature("t", body).parse().expect("hex"),
    );
    let inbound = Viber
        .parse(&channel, &webhook(&headers, body))
        .expect("parses");
    let [InboundEvent::Status(seen)] = inbound.events.as_slice() else {
        panic!("{inbound:?}");
    };
    // 2^53 + 1: a double would read 9007199254740992.
    assert_eq!(seen.message_external_id, "9007199254740993");
    assert_eq!(seen.state, DeliveryState::Read as i32);
}

fn outbound(id: &str, text: &str, attachments: Vec<Attachment>) -> OutboundRequested {
    OutboundRequested {
        message_id: id.into(),
        recipient_external_id: USER.into(),
        text: text.into(),
        attachments,
        ..Default::default()
    }
}

fn emulator_api(token: &str) -> ViberApi {
    let key = token.to_owned();
    ViberApi::new(token, move |body: &[u8]| viber::signature(&key, body))
}

#[tokio::test]
async fn sends_keep_vibers_big_tokens_and_voice_notes_go_as_files() {
    let emulator = Emulator::start(emulator_api("tok")).await;
    let channel = channel_with(&emulator.base_url(), "tok");
    let voice = Attachment {
        kind: AttachmentKind::Voice as i32,
        url: "https://files.test/v1/downloads/ws/blob-2/note".into(),
        mime_type: "audio/mp4".into(),
        size_bytes: 9199,
        duration_ms: 3452,
        ..Default::default()
    };
    let outcome = Viber
        .send(
            &reqwest::Client::new(),
            &channel,
            &outbound("m1", "hi", vec![voice]),
        )
        .await;
    assert_eq!(
        outcome,
        SendOutcome::Sent {
            external_id: (FIRST_TOKEN + 1).to_string()
        },
        "the last part's token, exactly"
    );
    let sent: Vec<_> = emulator
        .received_at("/pa/send_message")
        .iter()
        .map(|r| check_send("tok", r).expect("a message Viber takes"))
        .collect();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].kind, "text");
    assert_eq!(sent[1].kind, "file");
    assert_eq!(sent[1].body["file_name"], "voice-note.m4a");
    assert_eq!(sent[1].body["size"], 9199);
    assert_eq!(sent[1].body["sender"]["name"], "Conformance shop");
}

#[tokio::test]
async fn vibers_statuses_decide_between_reject_throttle_and_retry() {
    let emulator = Emulator::start(emulator_api("tok")).await;
    let channel = channel_with(&emulator.base_url(), "tok");
    let http = reqwest::Client::new();
    let text = outbound("m", "hi", Vec::new());
    emulator.answer_next(status(6, "receiverNotSubscribed"));
    let outcome = Viber.send(&http, &channel, &text).await;
    assert!(
        matches!(&outcome, SendOutcome::Reject(r) if r.contains("receiverNotSubscribed")),
        "{outcome:?}"
    );
    emulator.answer_next(status(5, "receiverNotRegistered"));
    assert!(matches!(
        Viber.send(&http, &channel, &text).await,
        SendOutcome::Reject(_)
    ));
    emulator.answer_next(status(12, "tooManyRequests"));
    assert!(matches!(
        Viber.send(&http, &channel, &text).await,
        SendOutcome::Throttled { .. }
    ));
    emulator.answer_next(status(17, "generalError"));
    assert!(matches!(
        Viber.send(&http, &channel, &text).await,
        SendOutcome::Retry(_)
    ));
    let wrong = channel_with(&emulator.base_url(), "other");
    assert!(matches!(
        Viber.send(&http, &wrong, &text).await,
        SendOutcome::Reject(r) if r.contains("invalidAuthToken")
    ));
}

/// A webhook endpoint that does what ingress does with a callback: verify,
/// parse, answer 200 (401 when the signature fails, 400 when malformed).
async fn webhook_endpoint(
    channel: ChannelCredentials,
) -> (String, Arc<Mutex<Vec<(StatusCode, usize)>>>) {
    let seen: Arc<Mutex<Vec<(StatusCode, usize)>>> = Arc::default();
    let record = seen.clone();
    let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
        let channel = channel.clone();
        let record = record.clone();
        async move {
            let hook = webhook(&headers, &body);
            let answer = match Viber.verify(&channel, &hook) {
                Err(_) => (StatusCode::UNAUTHORIZED, 0),
                Ok(()) => match Viber.parse(&channel, &hook) {
                    Ok(inbound) => (StatusCode::OK, inbound.events.len()),
                    Err(_) => (StatusCode::BAD_REQUEST, 0),
                },
            };
            record.lock().expect("lock").push(answer);
            answer.0
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://{}/webhooks/{CHANNEL_ID}",
        listener.local_addr().expect("addr")
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_the_webhook_passes_vibers_signed_callback() {
    let api = emulator_api("tok");
    let emulator = Emulator::start(api.clone()).await;
    let channel = channel_with(&emulator.base_url(), "tok");
    let (url, seen) = webhook_endpoint(channel.clone()).await;
    let http = reqwest::Client::new();
    assert_eq!(
        Viber.register_webhook(&http, &channel, &url).await,
        Ok(true)
    );
    assert_eq!(*seen.lock().expect("lock"), [(StatusCode::OK, 0)]);
    assert_eq!(api.webhook(), Some(url.clone()));
    let request = &emulator.received_at("/pa/set_webhook")[0];
    let body = request.json().expect("json");
    assert_eq!(body["url"], url.as_str());
    assert_eq!(body["send_name"], true);
    assert_eq!(body["send_photo"], false);
    assert_eq!(body["event_types"].as_array().map(Vec::len), Some(6));

    // A bot whose callbacks our endpoint cannot verify: Viber refuses.
    let (other_url, _) = webhook_endpoint(channel_with("", "another-token")).await;
    let refused = Viber.register_webhook(&http, &channel, &other_url).await;
    assert!(
        matches!(&refused, Err(CredentialsError::Invalid(why)) if why.contains("invalidUrl")),
        "{refused:?}"
    );
    // A wrong token.
    let wrong = channel_with(&emulator.base_url(), "nope");
    assert!(matches!(
        Viber.register_webhook(&http, &wrong, &url).await,
        Err(CredentialsError::Invalid(why)) if why.contains("invalidAuthToken")
    ));
}

#[tokio::test]
async fn the_account_info_checks_the_token() {
    let emulator = Emulator::start(emulator_api("tok")).await;
    let http = reqwest::Client::new();
    let good = Viber
        .check(&http, &channel_with(&emulator.base_url(), "tok"))
        .await;
    assert!(
        good[0].ok && good[0].detail.contains("Example shop"),
        "{good:?}"
    );
    let bad = Viber
        .check(&http, &channel_with(&emulator.base_url(), "nope"))
        .await;
    assert!(
        !bad[0].ok && bad[0].detail.contains("invalidAuthToken"),
        "{bad:?}"
    );
}

/// The suite's `passing_trouble_is_retried_and_refusals_are_final` wants a
/// 429 to be `Retry`, while the provider contract (and `Answer::refusal`)
/// make it `Throttled`: that case stops at its 429. What it checks after
/// that is checked here, against the emulator, with the 429 as Throttled.
async fn passing_trouble_is_retried_throttled_or_final(
    provider: &dyn Provider,
    emulator: &Emulator,
    channel: &ChannelCredentials,
    unusable: &ChannelCredentials,
    message: &OutboundRequested,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    for (status, body, want) in [
        (503, "down for maintenance", "retry"),
        (
            500,
            "<html><pre>boom at db.connect(password=hunter2)</pre></html>",
            "retry",
        ),
        (408, "", "retry"),
        (429, "slow down", "throttled"),
        (400, "invalid recipient", "reject"),
        (301, "", "reject"),
    ] {
        let code = StatusCode::from_u16(status).expect("status");
        emulator.answer_next(telenet_emulators::Reply::bytes(
            code,
            "text/html",
            body.into(),
        ));
        let outcome = provider.send(&http, channel, message).await;
        let (kind, reason) = match &outcome {
            SendOutcome::Retry(r) => ("retry", r),
            SendOutcome::Throttled { reason, .. } => ("throttled", reason),
            SendOutcome::Reject(r) => ("reject", r),
            SendOutcome::Sent { .. } => panic!("{status}: sent"),
        };
        assert_eq!(kind, want, "{status}: {outcome:?}");
        assert!(reason.contains(&status.to_string()), "{status}: {reason}");
        for word in body.split(|c: char| !c.is_alphanumeric()) {
            assert!(
                word.len() < 4 || !reason.contains(word),
                "{status} copies {word:?}: {reason}"
            );
        }
    }
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let mut gone = channel.clone();
    gone.config.api_base_url = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let outcome = provider.send(&http, &gone, message).await;
    assert!(
        matches!(outcome, SendOutcome::Retry(_)),
        "unreachable: {outcome:?}"
    );
    let outcome = provider.send(&http, unusable, message).await;
    assert!(
        matches!(outcome, SendOutcome::Reject(_)),
        "unusable: {outcome:?}"
    );
}
