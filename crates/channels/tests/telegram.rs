//! The Telegram provider through the conformance suite (src/conformance.rs)
//! with its sample updates (tests/fixtures/telegram), and against the Bot
//! API emulator (telenet-emulators): webhook registration, checks, file
//! resolution, sends and the Bot API's errors.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, StatusCode};
use telenet_channels::conformance::{
    self, CHANNEL_ID, Expect, Fixture, Received, Sample, Understood,
};
use telenet_channels::telegram::{self, Telegram};
use telenet_channels::{
    ChannelCredentials, CredentialsError, InboundEvent, Provider, SendOutcome, Webhook,
    WebhookError,
};
use telenet_emulators::telegram::{
    BOT_TOKEN, BOT_USERNAME, DOWNLOAD_LIMIT, TelegramApi, check_send, read_call, sent_message,
    too_many_requests,
};
use telenet_emulators::{Emulator, Recorded, Reply};
use telenet_proto::common::v1::{
    Attachment, AttachmentKind, AttachmentState, ChannelKind, ChannelProvider, Location,
    MessageChange,
};
use telenet_proto::dispatch::v1::DeliveryState;
use telenet_proto::events::v1::{InboundMessageReceived, OutboundRequested, Sender};
use telenet_proto::ingress::v1::channel_config::Provider as Case;
use telenet_proto::ingress::v1::{ChannelConfig, TelegramConfig};

/// Where the conformance suite's webhook checks say the channel's API is
/// (`conformance::api_base`): inbound file references are made from it.
const SUITE_API: &str = "http://127.0.0.1:9";

fn channel(api_base: &str, secret_token: &str) -> ChannelCredentials {
    ChannelCredentials {
        channel_id: "ch-telegram".into(),
        kind: ChannelKind::Telegram,
        provider: ChannelProvider::Telegram,
        config: ChannelConfig {
            provider: Some(Case::Telegram(TelegramConfig {
                bot_token: BOT_TOKEN.into(),
                secret_token: secret_token.into(),
                ..Default::default()
            })),
            api_base_url: api_base.into(),
        },
        ..Default::default()
    }
}

fn config(channel: &ChannelCredentials) -> &TelegramConfig {
    telegram::settings(channel).unwrap_or_else(|| panic!("not a Telegram channel"))
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

fn reply_text(reply: &Reply) -> String {
    String::from_utf8_lossy(&reply.body).into_owned()
}

struct TelegramFixture;

/// A message of the samples: `chat:message_id`, sent by the chat.
fn message(update: i64, chat: i64, id: i64, name: &str, date: i64) -> InboundMessageReceived {
    let mut m = InboundMessageReceived {
        channel_id: CHANNEL_ID.into(),
        channel_kind: ChannelKind::Telegram as i32,
        provider: ChannelProvider::Telegram as i32,
        webhook_id: update.to_string(),
        external_id: format!("{chat}:{id}"),
        sender: Some(Sender {
            external_id: chat.to_string(),
            display_name: name.into(),
        }),
        ..Default::default()
    };
    m.sent_at.get_or_insert_with(Default::default).seconds = date;
    m
}

fn file(kind: AttachmentKind, file_id: &str, mime: &str, size: u64) -> Attachment {
    Attachment {
        kind: kind as i32,
        url: format!("{SUITE_API}/getFile?file_id={file_id}"),
        mime_type: mime.into(),
        size_bytes: size,
        state: AttachmentState::Pending as i32,
        ..Default::default()
    }
}

fn events(m: InboundMessageReceived) -> Expect {
    Expect::Events(vec![InboundEvent::Message(m)])
}

macro_rules! sample {
    ($name:literal, $expect:expr) => {
        Sample {
            name: $name,
            delivery_id: $name,
            body: include_bytes!(concat!("fixtures/telegram/", $name)).to_vec(),
            expect: $expect,
        }
    };
}

impl Fixture for TelegramFixture {
    fn reports_statuses(&self) -> bool {
        false
    }

    fn signs_body(&self) -> bool {
        false
    }

    fn provider(&self) -> Arc<dyn Provider> {
        Arc::new(Telegram)
    }

    fn channel(&self, api_base: &str) -> ChannelCredentials {
        let secret = telenet_channels::config::random_token(40).expect("randomness");
        channel(api_base, &secret)
    }

    fn unusable(&self, channel: &ChannelCredentials) -> ChannelCredentials {
        let mut unusable = channel.clone();
        unusable.config.provider = Some(Case::Telegram(TelegramConfig::default()));
        unusable
    }

    fn sign(&self, channel: &ChannelCredentials, _: &str, _: &[u8], _: i64) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert(
            "x-telegram-bot-api-secret-token",
            HeaderValue::from_str(&config(channel).secret_token).expect("a header value"),
        );
        headers
    }

    fn auth_headers(&self) -> &'static [&'static str] {
        &["x-telegram-bot-api-secret-token"]
    }

    fn timestamp_tolerance(&self) -> Option<Duration> {
        None
    }

    fn samples(&self) -> Vec<Sample> {
        let ana = |update, id, date| message(update, 1111111, id, "Ana Ruiz", date);
        let bo = |update, id, date| message(update, 2222222, id, "Bo", date);
        let with_file = |mut m: InboundMessageReceived, a: Attachment| {
            m.attachments.push(a);
            m
        };
        let text = InboundMessageReceived {
            text: "Hola, ¿tenéis la talla M? 👋".into(),
            ..ana(10000, 1365, 1699999990)
        };
        let photo = InboundMessageReceived {
            text: "This one, in blue".into(),
            ..with_file(
                ana(10001, 1366, 1699999991),
                file(
                    AttachmentKind::Image,
                    "AgACAgQAAxkBAAIBsmVbRk_large",
                    "image/jpeg",
                    85210,
                ),
            )
        };
        let voice = with_file(
            bo(10002, 1367, 1699999992),
            Attachment {
                duration_ms: 4000,
                ..file(
                    AttachmentKind::Voice,
                    "AwACAgIAAxkBAAIBs2VbRkVoice",
                    "audio/ogg",
                    9199,
                )
            },
        );
        let audio = with_file(
            bo(10003, 1368, 1699999993),
            Attachment {
                duration_ms: 183_000,
                file_name: "song.mp3".into(),
                ..file(
                    AttachmentKind::Audio,
                    "CQACAgIAAxkBAAIBtGVbRkAudio",
                    "audio/mpeg",
                    2938112,
                )
            },
        );
        let document = InboundMessageReceived {
            text: "my invoice".into(),
            ..with_file(
                bo(10004, 1369, 1699999994),
                Attachment {
                    file_name: "invoice 2023-11.pdf".into(),
                    ..file(
                        AttachmentKind::File,
                        "BQACAgIAAxkBAAIBtWVbRkDocument",
                        "application/pdf",
                        48213,
                    )
                },
            )
        };
        let video_note = with_file(
            bo(10005, 1370, 1699999995),
            Attachment {
                duration_ms: 7000,
                ..file(
                    AttachmentKind::Video,
                    "DQACAgIAAxkBAAIBtmVbRkVideoNote",
                    "video/mp4",
                    402331,
                )
            },
        );
        let video = with_file(
            bo(10006, 1371, 1699999996),
            Attachment {
                duration_ms: 12_000,
                file_name: "unboxing.mp4".into(),
                ..file(
                    AttachmentKind::Video,
                    "BAACAgIAAxkBAAIBt2VbRkVideo",
                    "video/mp4",
                    3145728,
                )
            },
        );
        let sticker = with_file(
            bo(10007, 1372, 1699999997),
            file(
                AttachmentKind::Sticker,
                "CAACAgIAAxkBAAIBuGVbRkSticker",
                "image/webp",
                21904,
            ),
        );
        let location = InboundMessageReceived {
            location: Some(Location {
                latitude: 40.416775,
                longitude: -3.70379,
                ..Default::default()
            }),
            ..bo(10008, 1373, 1699999998)
        };
        let venue = InboundMessageReceived {
            location: Some(Location {
                latitude: 40.4153,
                longitude: -3.6844,
                name: "Retiro Park".into(),
                address: "Plaza de la Independencia, 7, Madrid".into(),
            }),
            ..bo(10009, 1374, 1699999999)
        };
        let contact = InboundMessageReceived {
            unsupported_type: "contact".into(),
            ..bo(10010, 1375, 1700000000)
        };
        let poll = InboundMessageReceived {
            unsupported_type: "poll".into(),
            ..bo(10011, 1376, 1700000000)
        };
        let reply = InboundMessageReceived {
            text: "Thanks! When will it arrive?".into(),
            reply_to_external_id: "-1001234567890:87".into(),
            ..message(10012, -1001234567890, 88, "Dee", 1700000001)
        };
        let edited = InboundMessageReceived {
            text: "Hola, ¿tenéis la talla L?".into(),
            change: MessageChange::Edited as i32,
            ..ana(10013, 1365, 1699999990)
        };
        let nulls = InboundMessageReceived {
            text: "just text".into(),
            ..message(10014, 5555555, 1377, "Eve", 1700000003)
        };
        vec![
            sample!("text.json", events(text)),
            sample!("photo_caption.json", events(photo)),
            sample!("voice.json", events(voice)),
            sample!("audio.json", events(audio)),
            sample!("document.json", events(document)),
            sample!("video_note.json", events(video_note)),
            sample!("video.json", events(video)),
            sample!("sticker.json", events(sticker)),
            sample!("location.json", events(location)),
            sample!("venue.json", events(venue)),
            sample!("contact.json", events(contact)),
            sample!("poll.json", events(poll)),
            sample!("reply_in_group.json", events(reply)),
            sample!("edited_message.json", events(edited)),
            sample!("null_fields.json", events(nulls)),
            sample!("callback_query.json", Expect::Events(Vec::new())),
            sample!("my_chat_member.json", Expect::Events(Vec::new())),
            sample!("channel_post.json", Expect::Events(Vec::new())),
            sample!(
                "missing_message_id.json",
                Expect::Malformed("message.message_id")
            ),
        ]
    }

    fn statuses(&self) -> Vec<(&'static str, DeliveryState)> {
        // Telegram gives bots no delivery or read receipts.
        Vec::new()
    }

    fn check_send(
        &self,
        channel: &ChannelCredentials,
        request: &Received,
    ) -> Result<Understood, String> {
        let call = read_call(&config(channel).bot_token, &recorded(request))
            .map_err(|r| reply_text(&r))?;
        let sent = check_send(&call).map_err(|r| reply_text(&r))?;
        Ok(Understood {
            recipient: sent.chat_id,
            text: sent.text,
            attachment_urls: sent.file_url.into_iter().collect(),
            idempotency_key: None,
        })
    }

    fn names_issued(&self, issued: &str, external_id: &str) -> bool {
        // `accept_send` answers `ext-N` as message N of the chat.
        issued
            .strip_prefix("ext-")
            .is_some_and(|n| external_id.ends_with(&format!(":{n}")))
    }

    fn accept_send(&self, request: &Received, external_id: &str) -> (StatusCode, String) {
        let n = external_id
            .rsplit('-')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        let sent = read_call(BOT_TOKEN, &recorded(request))
            .ok()
            .and_then(|call| check_send(&call).ok())
            .unwrap_or_default();
        let body = serde_json::json!({ "ok": true, "result": sent_message(&sent, n) });
        (StatusCode::OK, body.to_string())
    }

    fn check_media_fetch(
        &self,
        _: &ChannelCredentials,
        _: &str,
        headers: &HeaderMap,
    ) -> Result<(), String> {
        // Telegram's file server is authorised by the token in the path
        // `media_fetch` resolves; no header is sent, and none may carry a
        // secret.
        if headers.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "unexpected headers {:?}",
                headers.keys().collect::<Vec<_>>()
            ))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_telegram_channel_conforms() {
    // Telegram signs no body (its secret token is a header, which the
    // suite alters instead) and gives bots no delivery statuses; both are
    // the fixture's to say.
    if let Err(report) = conformance::run_all(Arc::new(TelegramFixture)).await {
        panic!("{report}");
    }
}

// ------------------------------------------------- webhooks, one by one

fn webhook<'a>(headers: &'a HeaderMap, body: &'a [u8]) -> Webhook<'a> {
    Webhook {
        channel_id: "ch-telegram",
        method: &Method::POST,
        url: "https://inbox.test/webhooks/ch-telegram",
        query: "",
        headers,
        body,
        now: 1_700_000_000,
    }
}

#[test]
fn the_secret_token_header_authenticates_updates() {
    let ours = channel("", "s3cret-token_1");
    let body = include_bytes!("fixtures/telegram/text.json");
    let with = |value: &str| {
        let mut h = HeaderMap::new();
        h.insert(
            "x-telegram-bot-api-secret-token",
            HeaderValue::from_str(value).expect("value"),
        );
        h
    };
    assert_eq!(
        Telegram.verify(&ours, &webhook(&with("s3cret-token_1"), body)),
        Ok(())
    );
    for wrong in ["s3cret-token_2", "s3cret-token_", "s3cret-token_1x", ""] {
        assert!(
            matches!(
                Telegram.verify(&ours, &webhook(&with(wrong), body)),
                Err(WebhookError::BadSignature(_))
            ),
            "{wrong:?}"
        );
    }
    assert_eq!(
        Telegram.verify(&ours, &webhook(&HeaderMap::new(), body)),
        Err(WebhookError::MissingHeader(
            "X-Telegram-Bot-Api-Secret-Token"
        ))
    );
    assert!(matches!(
        Telegram.verify(&channel("", ""), &webhook(&with(""), body)),
        Err(WebhookError::Credentials(_))
    ));
    let inbound = Telegram
        .parse(&ours, &webhook(&with("s3cret-token_1"), body))
        .expect("parses");
    assert_eq!(inbound.delivery_id.as_deref(), Some("10000"));
}

// ------------------------------------------------- against the Bot API

async fn bot_api(api: TelegramApi) -> (Emulator, ChannelCredentials) {
    let emulator = Emulator::start(api).await;
    let channel = channel(&emulator.base_url(), "s3cret-token_1");
    (emulator, channel)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

fn with_token(channel: &ChannelCredentials, token: &str) -> ChannelCredentials {
    let mut other = channel.clone();
    if let Some(Case::Telegram(c)) = &mut other.config.provider {
        c.bot_token = token.into();
    }
    other
}

const OTHER_TOKEN: &str = "987654321:ZZHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw9";

/// Whether `text` shows any part of a bot token.
fn shows_a_token(text: &str) -> bool {
    [BOT_TOKEN, OTHER_TOKEN]
        .iter()
        .any(|t| text.contains(t.split(':').nth(1).unwrap_or(t)))
}

#[tokio::test]
async fn set_webhook_registers_our_url_secret_token_and_update_types() {
    let (emulator, channel) = bot_api(TelegramApi::new(BOT_TOKEN)).await;
    let url = "https://inbox.example/webhooks/ch-telegram";
    assert_eq!(
        Telegram.register_webhook(&client(), &channel, url).await,
        Ok(true)
    );
    let calls = emulator.received_at("/setWebhook");
    assert_eq!(calls.len(), 1);
    let body = calls[0].json().expect("json");
    assert_eq!(body["url"], url);
    assert_eq!(body["secret_token"], "s3cret-token_1");
    assert_eq!(
        body["allowed_updates"],
        serde_json::json!(["message", "edited_message"])
    );
    assert_eq!(body["drop_pending_updates"], false);
}

#[tokio::test]
async fn set_webhook_refusals_name_why_without_the_token() {
    let (emulator, channel) = bot_api(TelegramApi::new(BOT_TOKEN)).await;
    let url = "https://inbox.example/webhooks/ch-telegram";
    let refused = Telegram
        .register_webhook(&client(), &with_token(&channel, OTHER_TOKEN), url)
        .await;
    assert_eq!(
        refused,
        Err(CredentialsError::Invalid(
            "Telegram refused the bot token: Unauthorized".into()
        ))
    );
    let Err(CredentialsError::Invalid(why)) = Telegram
        .register_webhook(
            &client(),
            &channel,
            "http://inbox.example/webhooks/ch-telegram",
        )
        .await
    else {
        panic!("an http URL is refused");
    };
    assert!(
        why.starts_with("Telegram refused the webhook: ") && why.contains("HTTPS url"),
        "{why}"
    );
    emulator.answer_next(Reply::json(
        StatusCode::BAD_GATEWAY,
        serde_json::json!({"ok": false, "error_code": 502, "description": "Bad Gateway"}),
    ));
    assert!(matches!(
        Telegram.register_webhook(&client(), &channel, url).await,
        Err(CredentialsError::Unavailable(_))
    ));
    let closed = closed_base().await;
    let Err(CredentialsError::Unavailable(why)) = Telegram
        .register_webhook(&client(), &self::channel(&closed, "s"), url)
        .await
    else {
        panic!("unreachable is unavailable");
    };
    assert!(!shows_a_token(&why), "{why}");
}

async fn closed_base() -> String {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    base
}

#[tokio::test]
async fn check_reads_the_bot_and_where_its_webhook_points() {
    let api = TelegramApi::new(BOT_TOKEN).with_webhook_error("Connection timed out");
    let (_emulator, channel) = bot_api(api).await;
    let url = "https://inbox.example/webhooks/ch-telegram";
    Telegram
        .register_webhook(&client(), &channel, url)
        .await
        .expect("registered");
    let checks = Telegram.check(&client(), &channel).await;
    let by_name = |name: &str| {
        checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no {name} check in {checks:?}"))
    };
    assert!(by_name("credentials").ok);
    assert!(
        by_name("credentials")
            .detail
            .contains(&format!("@{BOT_USERNAME}"))
    );
    assert!(by_name("webhook_registration").ok, "{checks:?}");
    let delivery = by_name("webhook_delivery");
    assert!(
        !delivery.ok && delivery.detail.contains("Connection timed out"),
        "{delivery:?}"
    );

    let refused = Telegram
        .check(&client(), &with_token(&channel, OTHER_TOKEN))
        .await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(!refused[0].ok);
    assert_eq!(
        refused[0].detail,
        "Telegram refused the bot token: Unauthorized"
    );
}

#[tokio::test]
async fn inbound_files_resolve_through_get_file_within_the_download_limit() {
    let api = TelegramApi::new(BOT_TOKEN)
        .with_file(
            "AwACAgIAAxkBAAIBs2VbRkVoice",
            "voice/file_7.oga",
            b"OggS voice".to_vec(),
        )
        .with_large_file("BIG", DOWNLOAD_LIMIT + 1);
    let (emulator, channel) = bot_api(api).await;
    let body = include_bytes!("fixtures/telegram/voice.json");
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-telegram-bot-api-secret-token",
        HeaderValue::from_static("s3cret-token_1"),
    );
    let inbound = Telegram
        .parse(&channel, &webhook(&headers, body))
        .expect("parses");
    let Some(InboundEvent::Message(m)) = inbound.events.first() else {
        panic!("{inbound:?}");
    };
    let reference = &m.attachments[0].url;
    assert!(!shows_a_token(reference), "{reference}");
    assert!(reference.starts_with(&emulator.base_url()), "{reference}");

    let fetch = Telegram
        .media_fetch(&client(), &channel, reference)
        .await
        .expect("resolves");
    assert_eq!(
        fetch.url,
        format!(
            "{}/file/bot{BOT_TOKEN}/voice/file_7.oga",
            emulator.base_url()
        )
    );
    assert!(fetch.headers.is_empty());
    let bytes = client()
        .get(&fetch.url)
        .send()
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(&bytes[..], b"OggS voice");

    let big = format!("{}/getFile?file_id=BIG", emulator.base_url());
    let Err(CredentialsError::Invalid(why)) = Telegram.media_fetch(&client(), &channel, &big).await
    else {
        panic!("a file over 20 MB is refused");
    };
    assert!(why.contains("20 MB"), "{why}");
    // Telegram states a size over the limit: refused before downloading.
    emulator.answer_next(Reply::ok(serde_json::json!({"ok": true, "result": {
        "file_id": "X", "file_path": "documents/x.bin", "file_size": DOWNLOAD_LIMIT + 1}})));
    assert!(matches!(
        Telegram.media_fetch(&client(), &channel, &format!("{}/getFile?file_id=X", emulator.base_url())).await,
        Err(CredentialsError::Invalid(why)) if why.contains("20 MB")
    ));
    let unknown = format!("{}/getFile?file_id=NOPE", emulator.base_url());
    assert!(matches!(
        Telegram.media_fetch(&client(), &channel, &unknown).await,
        Err(CredentialsError::Invalid(why)) if why.contains("invalid file_id")
    ));
    for foreign in [
        "https://evil.example/getFile?file_id=x",
        "https://api.telegram.org/getFile?file_id=x",
    ] {
        assert!(
            matches!(
                Telegram.media_fetch(&client(), &channel, foreign).await,
                Err(CredentialsError::Invalid(_))
            ),
            "{foreign}"
        );
    }
}

fn outbound(text: &str, attachments: Vec<Attachment>) -> OutboundRequested {
    OutboundRequested {
        message_id: "m-1".into(),
        channel_id: "ch-telegram".into(),
        recipient_external_id: "1111111".into(),
        text: text.into(),
        attachments,
        ..Default::default()
    }
}

/// What the Bot API understood of every call since the last `clear`.
fn sends(emulator: &Emulator) -> Vec<telenet_emulators::telegram::Sent> {
    let sent = emulator
        .received()
        .iter()
        .filter(|r| !r.path.starts_with("/media/"))
        .map(|r| {
            let call = read_call(BOT_TOKEN, r).unwrap_or_else(|e| panic!("{}", reply_text(&e)));
            check_send(&call).unwrap_or_else(|e| panic!("{}", reply_text(&e)))
        })
        .collect();
    emulator.clear();
    sent
}

#[tokio::test]
async fn texts_and_files_reach_the_bot_api_and_are_named_by_chat_and_message() {
    let (emulator, channel) = bot_api(TelegramApi::new(BOT_TOKEN)).await;
    let outcome = Telegram
        .send(&client(), &channel, &outbound("hello 👋", Vec::new()))
        .await;
    assert_eq!(
        outcome,
        SendOutcome::Sent {
            external_id: "1111111:1".into()
        }
    );
    let sent = sends(&emulator);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (
            sent[0].method.as_str(),
            sent[0].chat_id.as_str(),
            sent[0].text.as_str()
        ),
        ("sendMessage", "1111111", "hello 👋")
    );

    let files = vec![
        Attachment {
            kind: AttachmentKind::Image as i32,
            url: "https://files.test/v1/downloads/ws/blob-1/cat.png".into(),
            mime_type: "image/png".into(),
            size_bytes: 2048,
            ..Default::default()
        },
        Attachment {
            kind: AttachmentKind::Voice as i32,
            url: "https://files.test/v1/downloads/ws/blob-2/note.ogg".into(),
            mime_type: "audio/ogg; codecs=opus".into(),
            size_bytes: 9199,
            duration_ms: 3452,
            ..Default::default()
        },
    ];
    let outcome = Telegram
        .send(
            &client(),
            &channel,
            &outbound("see attached", files.clone()),
        )
        .await;
    assert_eq!(
        outcome,
        SendOutcome::Sent {
            external_id: "1111111:3".into()
        }
    );
    let sent = sends(&emulator);
    assert!(sent.iter().all(|s| s.chat_id == "1111111"), "{sent:?}");
    let seen: Vec<_> = sent
        .iter()
        .map(|s| {
            (
                s.method.as_str(),
                s.text.as_str(),
                s.file_url.clone(),
                s.duration,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (
                "sendPhoto",
                "see attached",
                Some(files[0].url.clone()),
                None
            ),
            ("sendVoice", "", Some(files[1].url.clone()), Some(4)),
        ]
    );
}

#[tokio::test]
async fn long_texts_are_split_and_the_last_part_names_the_message() {
    let (emulator, channel) = bot_api(TelegramApi::new(BOT_TOKEN)).await;
    let text = format!("{}end", "ab👋 ".repeat(1500));
    let mut message = outbound(&text, Vec::new());
    message.reply_to_external_id = "1111111:17".into();
    let outcome = Telegram.send(&client(), &channel, &message).await;
    let sent = sends(&emulator);
    assert!(sent.len() >= 2, "{} part(s)", sent.len());
    assert_eq!(
        outcome,
        SendOutcome::Sent {
            external_id: format!("1111111:{}", sent.len())
        }
    );
    for part in &sent {
        assert!(part.text.encode_utf16().count() <= 4096);
    }
    let rejoined = sent
        .iter()
        .map(|s| s.text.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let want = text.split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(rejoined, want);
    let quotes: Vec<_> = sent.iter().map(|s| s.reply_to).collect();
    assert_eq!(quotes[0], Some(17), "the first part quotes");
    assert!(quotes[1..].iter().all(Option::is_none), "{quotes:?}");
}

#[tokio::test]
async fn voice_notes_over_1_mb_are_downloaded_and_uploaded_as_ogg_multipart() {
    let (emulator, channel) = bot_api(TelegramApi::new(BOT_TOKEN)).await;
    let mut ogg = b"OggS\x00\x02".to_vec();
    ogg.resize(1_200_000, 7);
    emulator.serve_file("/media/note.ogg", "audio/ogg", ogg.clone());
    let voice = Attachment {
        kind: AttachmentKind::Voice as i32,
        url: format!("{}/media/note.ogg", emulator.base_url()),
        mime_type: "audio/ogg; codecs=opus".into(),
        size_bytes: ogg.len() as u64,
        duration_ms: 61_200,
        ..Default::default()
    };
    let mut message = outbound("", vec![voice]);
    message.reply_to_external_id = "1111111:5".into();
    let outcome = Telegram.send(&client(), &channel, &message).await;
    assert_eq!(
        outcome,
        SendOutcome::Sent {
            external_id: "1111111:1".into()
        }
    );
    let uploads = emulator.received_at("/sendVoice");
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].content_type(), "multipart/form-data");
    let sent = sends(&emulator);
    assert_eq!(sent.len(), 1);
    let upload = sent[0].upload.clone().expect("an upload");
    assert_eq!(
        (upload.name.as_str(), upload.file_name.as_str()),
        ("voice", "voice.ogg")
    );
    assert_eq!(upload.content_type, "audio/ogg");
    assert_eq!(upload.bytes, ogg);
    assert_eq!(sent[0].duration, Some(62));
    assert_eq!(sent[0].reply_to, Some(5));

    // A file that cannot be downloaded is not sent.
    let missing = Attachment {
        url: format!("{}/media/gone.ogg", emulator.base_url()),
        size_bytes: 0,
        ..message.attachments[0].clone()
    };
    let outcome = Telegram
        .send(&client(), &channel, &outbound("", vec![missing]))
        .await;
    assert!(
        matches!(outcome, SendOutcome::Reject(ref why) if why.contains("HTTP 404")),
        "{outcome:?}"
    );
    // Nor one over the 50 MB upload limit, which is not even downloaded.
    emulator.clear();
    let huge = Attachment {
        size_bytes: 50 * 1024 * 1024 + 1,
        ..message.attachments[0].clone()
    };
    let outcome = Telegram
        .send(&client(), &channel, &outbound("", vec![huge]))
        .await;
    assert!(
        matches!(outcome, SendOutcome::Reject(ref why) if why.contains("upload limit of 50 MB")),
        "{outcome:?}"
    );
    assert!(emulator.received().is_empty());
}

#[tokio::test]
async fn bot_api_errors_are_rejections_retries_or_throttling() {
    let api = TelegramApi::new(BOT_TOKEN)
        .blocked_by("42")
        .without_chat("43");
    let (emulator, channel) = bot_api(api).await;
    let to = |chat: &str| OutboundRequested {
        recipient_external_id: chat.into(),
        ..outbound("hello", Vec::new())
    };
    assert_eq!(
        Telegram.send(&client(), &channel, &to("42")).await,
        SendOutcome::Reject("Telegram error 403: Forbidden: bot was blocked by the user".into())
    );
    assert_eq!(
        Telegram.send(&client(), &channel, &to("43")).await,
        SendOutcome::Reject("Telegram error 400: Bad Request: chat not found".into())
    );
    emulator.answer_next(too_many_requests(7));
    assert_eq!(
        Telegram.send(&client(), &channel, &to("1")).await,
        SendOutcome::Throttled {
            reason: "Telegram error 429: Too Many Requests: retry after 7".into(),
            retry_after: Duration::from_secs(7),
        }
    );
    emulator.answer_next(Reply::json(
        StatusCode::INTERNAL_SERVER_ERROR,
        serde_json::json!({"ok": false, "error_code": 500, "description": "Internal Server Error"}),
    ));
    assert!(matches!(
        Telegram.send(&client(), &channel, &to("1")).await,
        SendOutcome::Retry(_)
    ));
    let SendOutcome::Reject(why) = Telegram
        .send(&client(), &with_token(&channel, OTHER_TOKEN), &to("1"))
        .await
    else {
        panic!("another bot's token is refused");
    };
    assert_eq!(why, "Telegram refused the bot token: Unauthorized");
    assert!(matches!(
        Telegram
            .send(&client(), &with_token(&channel, "not-a-token"), &to("1"))
            .await,
        SendOutcome::Reject(_)
    ));
    assert!(matches!(
        Telegram.send(&client(), &channel, &outbound("", Vec::new())).await,
        SendOutcome::Reject(why) if why.contains("nothing to send")
    ));
}

#[tokio::test]
async fn the_bot_token_never_appears_in_reasons() {
    let (emulator, channel) = bot_api(TelegramApi::new(BOT_TOKEN)).await;
    let closed = self::channel(&closed_base().await, "s");
    let message = outbound("hello", Vec::new());
    let mut reasons = Vec::new();
    for outcome in [
        Telegram.send(&client(), &closed, &message).await,
        Telegram
            .send(&client(), &with_token(&channel, OTHER_TOKEN), &message)
            .await,
    ] {
        match outcome {
            SendOutcome::Retry(r) | SendOutcome::Reject(r) => reasons.push(r),
            SendOutcome::Throttled { reason, .. } => reasons.push(reason),
            SendOutcome::Sent { .. } => panic!("sent"),
        }
    }
    let reference = format!("{}/getFile?file_id=NOPE", emulator.base_url());
    for e in [
        Telegram
            .media_fetch(&client(), &channel, &reference)
            .await
            .err(),
        Telegram
            .media_fetch(
                &client(),
                &closed,
                &reference.replace(&emulator.base_url(), &closed.config.api_base_url),
            )
            .await
            .err(),
        Telegram
            .register_webhook(&client(), &closed, "https://inbox.example/webhooks/x")
            .await
            .err(),
    ] {
        reasons.push(e.expect("an error").to_string());
    }
    reasons.extend(
        Telegram
            .check(&client(), &closed)
            .await
            .into_iter()
            .map(|c| c.detail),
    );
    assert!(reasons.len() >= 6);
    for reason in &reasons {
        assert!(!reason.is_empty());
        assert!(!shows_a_token(reason), "{reason}");
    }
}
