//! Real messaging channels end to end, each against a local emulator of its
//! provider's API (tests/emulators; no test reaches the internet): the
//! channel is connected through the REST API with its settings and
//! `api_base_url` pointing at the emulator; the provider's webhook
//! (handshake where it has one, then a signed sample event) opens a
//! conversation; an agent replies with text and with a five-minute voice
//! note recorded in a browser (WebM/Opus, no duration in the file); the
//! emulator must have received the provider's own requests with the right
//! media type and a playable voice note of the right length; where the
//! provider reports statuses, its status webhooks move the reply to
//! delivered and read. Bad signatures and malformed bodies are refused and
//! store nothing.
//!
//! Providers: Telegram, WhatsApp (Cloud API and through 360dialog),
//! Messenger, Instagram, LINE and Viber. Where a provider only calls or
//! fetches https URLs, the suite sits behind a TLS proxy at a public URL
//! (`ingress.public_url`, the media download links' base) and the test
//! reaches the listener behind it directly.
//!
//! Run on embedded defaults and on real PostgreSQL + RabbitMQ + Redis.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use telenet::ServiceName;
use telenet_audio::probe::{self, ProbeOptions};
use telenet_channels::whatsapp::dialog360::SECRET_HEADER;
use telenet_emulators::line::LineApi;
use telenet_emulators::meta_messaging::MetaMessaging;
use telenet_emulators::telegram::TelegramApi;
use telenet_emulators::viber::ViberApi;
use telenet_emulators::whatsapp::{Dialog360, Graph};
use telenet_emulators::{Emulator, Recorded};
use telenet_tests::flow::Gateway;
use telenet_tests::{eventually, world};

const WAIT: Duration = Duration::from_secs(90);
const BOUNDARY: &str = "telenet-channels-e2e";
/// The voice note's length.
const NOTE_SECONDS: u64 = 300;

/// A five-minute voice note as Chrome's MediaRecorder writes it: WebM/Opus,
/// mono, written live (no duration, no cues), made with the ffmpeg the
/// test command installs.
fn browser_voice_note(dir: &std::path::Path) -> Vec<u8> {
    let out = dir.join("note.webm");
    let status = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!(
            "sine=frequency=220:sample_rate=48000:duration={NOTE_SECONDS}"
        ))
        .args([
            "-ac", "1", "-c:a", "libopus", "-b:a", "32k", "-live", "1", "-f", "webm",
        ])
        .arg(&out)
        .status()
        .unwrap_or_else(|e| panic!("ffmpeg (installed by scripts/services.sh ensure): {e}"));
    assert!(status.success(), "ffmpeg made no voice note");
    std::fs::read(&out).expect("the voice note")
}

/// `POST /v1/files` with one voice note; the file's id.
async fn upload_voice(gateway: &Gateway, bytes: &[u8]) -> String {
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"kind\"\r\n\r\nvoice\r\n\
             --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"note.webm\"\r\n\
             Content-Type: audio/webm; codecs=opus\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    let response = gateway
        .http
        .post(format!("{}/v1/files", gateway.base))
        .bearer_auth(&gateway.token)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
        .expect("upload");
    assert_eq!(response.status(), 201);
    let file: Value = response.json().await.expect("json");
    file["id"].as_str().expect("id").to_owned()
}

/// The only conversation of the workspace, once it is there.
async fn the_conversation(gateway: &Gateway) -> Value {
    eventually("the conversation", WAIT, || async {
        let (_, page) = gateway
            .call(reqwest::Method::GET, "/v1/conversations", None, &[])
            .await;
        page["items"].as_array().and_then(|a| a.first().cloned())
    })
    .await
}

/// The conversation's messages, oldest first.
async fn messages(gateway: &Gateway, conversation: &str) -> Vec<Value> {
    let (status, page) = gateway
        .call(
            reqwest::Method::GET,
            &format!("/v1/conversations/{conversation}/messages"),
            None,
            &[],
        )
        .await;
    assert_eq!(status, 200, "{page}");
    page["items"].as_array().cloned().unwrap_or_default()
}

/// Reply in `conversation` with `body`; the stored message.
async fn reply(gateway: &Gateway, conversation: &str, body: Value) -> Value {
    let (status, reply) = gateway
        .call(
            reqwest::Method::POST,
            &format!("/v1/conversations/{conversation}/messages"),
            Some(body),
            &[],
        )
        .await;
    assert_eq!(status, 201, "{reply}");
    reply["message"].clone()
}

/// A stored message's status, once it is `want`.
async fn status_becomes(gateway: &Gateway, conversation: &str, id: &str, want: &str) -> Value {
    eventually(&format!("message {id} {want}"), WAIT, || async {
        messages(gateway, conversation)
            .await
            .into_iter()
            .find(|m| m["id"] == id && m["status"] == want)
    })
    .await
}

/// The bytes of a voice note the provider was sent: its upload, or what
/// its link serves (fetched without credentials, as the provider would).
async fn voice_bytes(upload: Option<Vec<u8>>, url: Option<String>) -> Vec<u8> {
    if let Some(bytes) = upload {
        return bytes;
    }
    let url = url.expect("a voice note by upload or by link");
    let response = reqwest::get(&url).await.expect("fetch the link");
    assert_eq!(response.status(), 200, "{url}");
    response.bytes().await.expect("bytes").to_vec()
}

/// A voice note the contact's app plays as one: Ogg/Opus, mono, five
/// minutes long.
fn assert_playable_note(bytes: &[u8]) {
    assert_five_minutes_of(bytes, "ogg", "opus");
    let probed = probe::probe(bytes, &ProbeOptions::VOICE_NOTE.with_peaks(0)).expect("probe");
    assert_eq!(probed.channels, 1);
}

/// Five minutes of audio in `container` with `codec`, as the bytes
/// themselves say (not as a name or a header claims).
fn assert_five_minutes_of(bytes: &[u8], container: &str, codec: &str) {
    let probed = probe::probe(bytes, &ProbeOptions::VOICE_NOTE.with_peaks(0)).expect("probe");
    assert_eq!(
        (probed.container.name(), probed.codec.name()),
        (container, codec)
    );
    assert!(
        probed.duration_ms.abs_diff(NOTE_SECONDS * 1000) <= 200,
        "{} ms",
        probed.duration_ms
    );
}

/// `POST /v1/channels` with `settings`; the channel as answered.
async fn connect(gateway: &Gateway, settings: Value) -> Value {
    let (status, channel) = gateway
        .call(reqwest::Method::POST, "/v1/channels", Some(settings), &[])
        .await;
    assert_eq!(status, 201, "{channel}");
    channel
}

/// The channel `id` as `GET /v1/channels/{id}` reads it.
async fn channel_details(gateway: &Gateway, id: &str) -> Value {
    let (status, details) = gateway
        .call(
            reqwest::Method::GET,
            &format!("/v1/channels/{id}"),
            None,
            &[],
        )
        .await;
    assert_eq!(status, 200, "{details}");
    details
}

/// `POST` `body` to the webhook `url` with `headers`; the status answered.
async fn post_webhook(
    gateway: &Gateway,
    url: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> u16 {
    let mut request = gateway
        .http
        .post(url)
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    request
        .body(body.to_vec())
        .send()
        .await
        .expect("webhook")
        .status()
        .as_u16()
}

/// Meta's subscription handshake on `hook` with `token`: the status and
/// the body answered.
async fn meta_handshake(gateway: &Gateway, hook: &str, token: &str) -> (u16, String) {
    let response = gateway
        .http
        .get(hook)
        .query(&[
            ("hub.mode", "subscribe"),
            ("hub.verify_token", token),
            ("hub.challenge", "1158201444"),
        ])
        .send()
        .await
        .expect("handshake");
    (
        response.status().as_u16(),
        response.text().await.unwrap_or_default(),
    )
}

/// The workspace has no conversation (refused webhooks stored nothing).
async fn assert_nothing_stored(gateway: &Gateway) {
    let (_, page) = gateway
        .call(reqwest::Method::GET, "/v1/conversations", None, &[])
        .await;
    assert_eq!(page["items"], json!([]), "refused webhooks stored nothing");
}

/// Reply `text` in `conversation`; the reply's id and the reply once sent.
async fn reply_text(gateway: &Gateway, conversation: &str, text: &str) -> (String, Value) {
    let reply = reply(gateway, conversation, json!({ "text": text })).await;
    let id = reply["id"].as_str().expect("id").to_owned();
    let sent = status_becomes(gateway, conversation, &id, "sent").await;
    (id, sent)
}

/// Upload the browser voice `note` and reply with it in `conversation`;
/// the reply's id and the reply once sent.
async fn reply_voice(gateway: &Gateway, conversation: &str, note: &[u8]) -> (String, Value) {
    let file_id = upload_voice(gateway, note).await;
    let reply = reply(
        gateway,
        conversation,
        json!({"attachments": [{"file_id": file_id, "kind": "voice"}]}),
    )
    .await;
    let id = reply["id"].as_str().expect("id").to_owned();
    let sent = status_becomes(gateway, conversation, &id, "sent").await;
    (id, sent)
}

/// The calls the emulator received at `path`, once there are `count`.
async fn calls_at(emulator: &Emulator, path: &str, count: usize) -> Vec<Recorded> {
    eventually(&format!("{count} calls at {path}"), WAIT, || async {
        let calls = emulator.received_at(path);
        (calls.len() >= count).then_some(calls)
    })
    .await
}

/// Unix time now, in milliseconds.
fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A sample body of `provider`'s fixtures.
fn provider_fixture(provider: &str, name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/channels/tests/fixtures")
        .join(provider)
        .join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn channels_config(mut config: telenet::Config) -> telenet::Config {
    // The emulators listen on loopback.
    config.media.inbound.allow_private_networks = true;
    config
}

// ---------------------------------------------------------------- Telegram

const CHAT: i64 = 777_000_111;

fn telegram_update(update_id: i64, message_id: i64, text: &str) -> Value {
    json!({
        "update_id": update_id,
        "message": {
            "message_id": message_id,
            "from": {"id": CHAT, "is_bot": false, "first_name": "Ana", "last_name": "García", "language_code": "es"},
            "chat": {"id": CHAT, "first_name": "Ana", "last_name": "García", "type": "private"},
            "date": telenet_signing::unix_now(),
            "text": text
        }
    })
}

async fn telegram(config: telenet::Config) {
    let dir = tempfile::tempdir().expect("tempdir");
    let note = browser_voice_note(dir.path());
    let token = telenet_emulators::telegram::BOT_TOKEN;
    let api = Arc::new(TelegramApi::new(token));
    let emulator = Emulator::start(api.clone()).await;
    // Telegram calls HTTPS URLs only: the suite is behind a TLS proxy at
    // this public URL, which forwards to the webhook listener.
    let mut config = channels_config(config);
    config.ingress.public_url = "https://inbox.example.test".into();
    let (running, stop) = world::start(config, &ServiceName::ALL).await;
    let gateway = Gateway::of(&running);
    let listener = running.webhook_addr.expect("the webhook listener");

    // Connecting registers the webhook with a secret token of TELENET's.
    let (status, channel) = gateway
        .call(
            reqwest::Method::POST,
            "/v1/channels",
            Some(json!({
                "kind": "telegram",
                "name": "Support bot",
                "bot_token": token,
                "api_base_url": emulator.base_url(),
            })),
            &[],
        )
        .await;
    assert_eq!(status, 201, "{channel}");
    assert_eq!(channel["provider"], "telegram");
    assert_eq!(channel["status"], "active", "{channel}");
    assert_eq!(channel["webhook"]["registered_automatically"], true);
    assert!(
        !channel.to_string().contains(token),
        "the bot token came back: {channel}"
    );
    let id = channel["id"].as_str().expect("id");
    let public = channel["webhook_url"].as_str().expect("webhook url");
    assert_eq!(public, format!("https://inbox.example.test/webhooks/{id}"));
    assert_eq!(
        channel["webhook"]["header_value"],
        Value::Null,
        "a registered secret is never shown"
    );
    let (registered_url, secret) = api.webhook();
    assert_eq!(registered_url, public);
    assert!(secret.len() >= 16, "{secret:?}");
    let hook = format!("http://{listener}/webhooks/{id}");

    // A wrong secret is refused and stores nothing; the right one opens a
    // conversation; a redelivery is stored once.
    let update = telegram_update(900_001, 41, "Hola, ¿seguís abiertos?");
    let post = |secret: String, body: Value| {
        let http = gateway.http.clone();
        let hook = hook.clone();
        async move {
            http.post(&hook)
                .header("content-type", "application/json")
                .header("x-telegram-bot-api-secret-token", secret)
                .body(body.to_string())
                .send()
                .await
                .expect("webhook")
                .status()
                .as_u16()
        }
    };
    assert_eq!(post("not-the-secret".into(), update.clone()).await, 401);
    assert_eq!(post(secret.clone(), json!({"update_id": "x"})).await, 400);
    let (_, page) = gateway
        .call(reqwest::Method::GET, "/v1/conversations", None, &[])
        .await;
    assert_eq!(page["items"], json!([]), "refused webhooks stored nothing");
    assert_eq!(post(secret.clone(), update.clone()).await, 200);
    assert_eq!(post(secret.clone(), update).await, 200);
    let conversation = the_conversation(&gateway).await;
    assert_eq!(conversation["contact_external_id"], CHAT.to_string());
    let conversation = conversation["id"].as_str().expect("id").to_owned();
    let inbound = messages(&gateway, &conversation).await;
    assert_eq!(inbound.len(), 1, "stored once: {inbound:?}");
    assert_eq!(inbound[0]["text"], "Hola, ¿seguís abiertos?");

    // A text reply is a sendMessage to the chat.
    let text = reply(
        &gateway,
        &conversation,
        json!({"text": "¡Sí! Hasta las 20:00."}),
    )
    .await;
    let text_id = text["id"].as_str().expect("id").to_owned();
    let sent = status_becomes(&gateway, &conversation, &text_id, "sent").await;
    let calls = eventually("sendMessage", WAIT, || async {
        let calls = emulator.received_at("/sendMessage");
        (!calls.is_empty()).then_some(calls)
    })
    .await;
    let body: Value = serde_json::from_slice(&calls[0].body).expect("json");
    assert_eq!(
        body["chat_id"].to_string().trim_matches('"'),
        CHAT.to_string()
    );
    assert_eq!(body["text"], "¡Sí! Hasta las 20:00.");
    assert!(
        sent["external_id"]
            .as_str()
            .is_some_and(|id| id.starts_with(&format!("{CHAT}:"))),
        "{sent}"
    );

    // A five-minute browser voice note goes as a Telegram voice message.
    let file_id = upload_voice(&gateway, &note).await;
    let voice = reply(
        &gateway,
        &conversation,
        json!({"attachments": [{"file_id": file_id, "kind": "voice"}]}),
    )
    .await;
    let voice_id = voice["id"].as_str().expect("id").to_owned();
    status_becomes(&gateway, &conversation, &voice_id, "sent").await;
    let call = emulator
        .received_at("/sendVoice")
        .pop()
        .expect("a sendVoice call");
    let (upload, url) = telegram_voice(&call);
    assert_playable_note(&voice_bytes(upload, url).await);

    stop.cancel();
    running.wait().await;
}

/// The voice of a `sendVoice` call: its uploaded bytes, or its URL.
fn telegram_voice(call: &Recorded) -> (Option<Vec<u8>>, Option<String>) {
    let read = telenet_emulators::telegram::read_call(telenet_emulators::telegram::BOT_TOKEN, call)
        .unwrap_or_else(|_| panic!("an unreadable sendVoice"));
    if let Some(upload) = read.upload("voice") {
        return (Some(upload.bytes.clone()), None);
    }
    (None, read.text("voice"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_telegram_bot_connects_receives_and_replies_on_embedded_defaults() {
    let dir = tempfile::tempdir().expect("tempdir");
    telegram(world::embedded(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_telegram_bot_connects_receives_and_replies_on_real_infrastructure() {
    let dir = tempfile::tempdir().expect("tempdir");
    telegram(world::real(dir.path()).await).await;
}

// ------------------------------------------------------ WhatsApp Cloud API

const PHONE_NUMBER_ID: &str = "1122334455667";
const ACCESS_TOKEN: &str = "EAAtest-access-token";
const APP_SECRET: &str = "test-app-secret";

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/channels/tests/fixtures/whatsapp_cloud")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The sample message of the fixtures, sent now (the reply window counts
/// from it).
fn whatsapp_text() -> Vec<u8> {
    let mut body: Value =
        serde_json::from_slice(&fixture("split_message_text.json")).expect("json");
    body["entry"][0]["changes"][0]["value"]["messages"][0]["timestamp"] =
        json!(telenet_signing::unix_now().to_string());
    body.to_string().into_bytes()
}

/// The id of the voice note in the sample.
const VOICE_MEDIA_ID: &str = "1234567890987654321";

/// The sample voice note of the fixtures, sent now as a message of its own.
fn whatsapp_voice() -> Vec<u8> {
    let mut body: Value =
        serde_json::from_slice(&fixture("split_message_voice.json")).expect("json");
    let message = &mut body["entry"][0]["changes"][0]["value"]["messages"][0];
    message["id"] = json!("wamid.voice-1");
    message["timestamp"] = json!(telenet_signing::unix_now().to_string());
    body.to_string().into_bytes()
}

/// The sample status of the fixtures, about `wamid`.
fn whatsapp_status(wamid: &str, status: &str) -> Vec<u8> {
    let mut body: Value =
        serde_json::from_slice(&fixture("split_status_delivered.json")).expect("json");
    let value = &mut body["entry"][0]["changes"][0]["value"]["statuses"][0];
    value["id"] = json!(wamid);
    value["status"] = json!(status);
    value["timestamp"] = json!(telenet_signing::unix_now().to_string());
    body.to_string().into_bytes()
}

async fn whatsapp(config: telenet::Config) {
    let dir = tempfile::tempdir().expect("tempdir");
    let note = browser_voice_note(dir.path());
    let inbound_note = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/media/source_ogg_opus_ptb.ogg"),
    )
    .expect("the voice note fixture");
    let emulator = Emulator::start(Graph::new(ACCESS_TOKEN, PHONE_NUMBER_ID).with_media(
        VOICE_MEDIA_ID,
        "audio/ogg; codecs=opus",
        &inbound_note,
    ))
    .await;
    let (running, stop) = world::start(channels_config(config), &ServiceName::ALL).await;
    let gateway = Gateway::of(&running);

    let (status, channel) = gateway
        .call(
            reqwest::Method::POST,
            "/v1/channels",
            Some(json!({
                "kind": "whatsapp_cloud",
                "name": "WhatsApp +1 555",
                "phone_number_id": PHONE_NUMBER_ID,
                "access_token": ACCESS_TOKEN,
                "app_secret": APP_SECRET,
                "api_base_url": emulator.base_url(),
            })),
            &[],
        )
        .await;
    assert_eq!(status, 201, "{channel}");
    assert_eq!(channel["status"], "pending_verification", "{channel}");
    assert_eq!(channel["webhook"]["subscribe_events"], json!(["messages"]));
    for secret in [ACCESS_TOKEN, APP_SECRET] {
        assert!(!channel.to_string().contains(secret), "{channel}");
    }
    let id = channel["id"].as_str().expect("id").to_owned();
    let hook = channel["webhook_url"]
        .as_str()
        .expect("webhook url")
        .to_owned();
    let verify_token = channel["webhook"]["verify_token"]
        .as_str()
        .expect("a verify token to paste")
        .to_owned();

    // Meta's subscription handshake: the challenge for the right token,
    // 403 for another; the channel is then verified.
    let handshake = |token: String| {
        let http = gateway.http.clone();
        let hook = hook.clone();
        async move {
            let response = http
                .get(&hook)
                .query(&[
                    ("hub.mode", "subscribe"),
                    ("hub.verify_token", token.as_str()),
                    ("hub.challenge", "1158201444"),
                ])
                .send()
                .await
                .expect("handshake");
            (
                response.status().as_u16(),
                response.text().await.unwrap_or_default(),
            )
        }
    };
    assert_eq!(handshake("wrong".into()).await.0, 403);
    assert_eq!(
        handshake(verify_token).await,
        (200, "1158201444".to_owned())
    );
    let (_, details) = gateway
        .call(
            reqwest::Method::GET,
            &format!("/v1/channels/{id}"),
            None,
            &[],
        )
        .await;
    assert_eq!(details["status"], "active", "{details}");

    // Signed events: a bad signature is refused and stores nothing.
    let post = |body: Vec<u8>, signature: String| {
        let http = gateway.http.clone();
        let hook = hook.clone();
        async move {
            http.post(&hook)
                .header("content-type", "application/json")
                .header("x-hub-signature-256", signature)
                .body(body)
                .send()
                .await
                .expect("webhook")
                .status()
                .as_u16()
        }
    };
    let sign = |body: &[u8]| telenet_channels::meta::signature_header(APP_SECRET, body);
    let text = whatsapp_text();
    assert_eq!(post(text.clone(), sign(b"another body")).await, 401);
    assert_eq!(post(b"{not json".to_vec(), sign(b"{not json")).await, 400);
    assert_eq!(post(text.clone(), sign(&text)).await, 200);
    let conversation = the_conversation(&gateway).await;
    assert_eq!(conversation["contact_external_id"], "972987654321");
    let conversation = conversation["id"].as_str().expect("id").to_owned();
    let inbound = messages(&gateway, &conversation).await;
    assert_eq!(inbound.len(), 1, "{inbound:?}");
    assert_eq!(inbound[0]["text"], "Body Text");

    // A voice note the contact recorded: a media id, resolved with the
    // token into a short-lived URL, fetched with the token into the store.
    let voice_in = whatsapp_voice();
    assert_eq!(post(voice_in.clone(), sign(&voice_in)).await, 200);
    let note_in = eventually("the contact's voice note, stored", WAIT, || async {
        messages(&gateway, &conversation)
            .await
            .into_iter()
            .find(|m| {
                m["external_id"] == "wamid.voice-1" && m["attachments"][0]["state"] == "ready"
            })
    })
    .await;
    let attachment = &note_in["attachments"][0];
    assert_eq!(attachment["kind"], "voice", "{note_in}");
    assert_eq!(
        attachment["size_bytes"].as_u64(),
        Some(inbound_note.len() as u64)
    );
    let lookups = emulator.received_at(&format!("/{VOICE_MEDIA_ID}"));
    let bearer = format!("Bearer {ACCESS_TOKEN}");
    assert!(
        !lookups.is_empty()
            && lookups
                .iter()
                .all(|r| r.header("authorization") == Some(bearer.as_str())),
        "the media id is resolved with the token: {lookups:?}"
    );

    // A text reply, then the statuses Meta reports for it.
    let reply_text = reply(&gateway, &conversation, json!({"text": "Thanks, on it."})).await;
    let reply_id = reply_text["id"].as_str().expect("id").to_owned();
    let sent = status_becomes(&gateway, &conversation, &reply_id, "sent").await;
    let wamid = sent["external_id"].as_str().expect("the wamid").to_owned();
    let call = emulator
        .received_at(&format!("/{PHONE_NUMBER_ID}/messages"))
        .into_iter()
        .next()
        .expect("a send");
    let body: Value = serde_json::from_slice(&call.body).expect("json");
    assert_eq!(body["messaging_product"], "whatsapp");
    assert_eq!(body["to"], "972987654321");
    assert_eq!(
        (body["type"].as_str(), body["text"]["body"].as_str()),
        (Some("text"), Some("Thanks, on it."))
    );
    for state in ["delivered", "read"] {
        let status = whatsapp_status(&wamid, state);
        assert_eq!(post(status.clone(), sign(&status)).await, 200);
        status_becomes(&gateway, &conversation, &reply_id, state).await;
    }
    // A late "delivered" never undoes "read".
    let late = whatsapp_status(&wamid, "delivered");
    assert_eq!(post(late.clone(), sign(&late)).await, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    status_becomes(&gateway, &conversation, &reply_id, "read").await;

    // A five-minute browser voice note goes as a WhatsApp voice message:
    // Ogg/Opus with `voice: true`, by a link WhatsApp can fetch.
    let file_id = upload_voice(&gateway, &note).await;
    let voice = reply(
        &gateway,
        &conversation,
        json!({"attachments": [{"file_id": file_id, "kind": "voice"}]}),
    )
    .await;
    let voice_id = voice["id"].as_str().expect("id").to_owned();
    status_becomes(&gateway, &conversation, &voice_id, "sent").await;
    let call = emulator
        .received_at(&format!("/{PHONE_NUMBER_ID}/messages"))
        .pop()
        .expect("the voice note's send");
    let body: Value = serde_json::from_slice(&call.body).expect("json");
    assert_eq!(body["type"], "audio", "{body}");
    assert_eq!(body["audio"]["voice"], true, "{body}");
    let link = body["audio"]["link"].as_str().map(str::to_owned);
    let bytes = voice_bytes(None, link).await;
    assert_playable_note(&bytes);
    assert!(
        bytes.len() <= 512 * 1024,
        "{} bytes: over WhatsApp's 512 KB the note shows no play button",
        bytes.len()
    );

    stop.cancel();
    running.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whatsapp_number_connects_receives_replies_and_reports_statuses_on_embedded_defaults() {
    let dir = tempfile::tempdir().expect("tempdir");
    whatsapp(world::embedded(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whatsapp_number_connects_receives_replies_and_reports_statuses_on_real_infrastructure() {
    let dir = tempfile::tempdir().expect("tempdir");
    whatsapp(world::real(dir.path()).await).await;
}

// ------------------------------------------------- WhatsApp through 360dialog

const D360_API_KEY: &str = "d360-test-api-key";

async fn whatsapp_360dialog(config: telenet::Config) {
    let dir = tempfile::tempdir().expect("tempdir");
    let note = browser_voice_note(dir.path());
    let api = Arc::new(Dialog360::new(D360_API_KEY));
    let emulator = Emulator::start(api.clone()).await;
    // 360dialog registers https URLs without a port only: the suite is
    // behind a TLS proxy at this public URL.
    let mut config = channels_config(config);
    config.ingress.public_url = "https://inbox.example.test".into();
    let (running, stop) = world::start(config, &ServiceName::ALL).await;
    let gateway = Gateway::of(&running);
    let listener = running.webhook_addr.expect("the webhook listener");

    // Connecting registers the webhook with a secret header of TELENET's.
    let channel = connect(
        &gateway,
        json!({
            "kind": "whatsapp_360dialog",
            "name": "WhatsApp via 360dialog",
            "api_key": D360_API_KEY,
            "phone_number": "+15550001111",
            "api_base_url": emulator.base_url(),
        }),
    )
    .await;
    assert_eq!(channel["provider"], "whatsapp_360dialog", "{channel}");
    assert_eq!(channel["status"], "active", "{channel}");
    assert_eq!(channel["webhook"]["registered_automatically"], true);
    assert!(!channel.to_string().contains(D360_API_KEY), "{channel}");
    let id = channel["id"].as_str().expect("id").to_owned();
    let public = channel["webhook_url"].as_str().expect("webhook url");
    assert_eq!(public, format!("https://inbox.example.test/webhooks/{id}"));
    let registered = api
        .webhook
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
        .expect("a webhook registered at 360dialog");
    assert_eq!(registered["url"], public);
    let secret = registered["headers"][SECRET_HEADER]
        .as_str()
        .expect("the secret header registered")
        .to_owned();
    assert!(secret.len() >= 16, "{secret:?}");
    assert!(!channel.to_string().contains(&secret), "{channel}");
    let hook = format!("http://{listener}/webhooks/{id}");
    let with = |secret: &str| vec![(SECRET_HEADER, secret.to_owned())];

    // A wrong secret is refused and stores nothing, as is a malformed body.
    let text = whatsapp_text();
    assert_eq!(
        post_webhook(&gateway, &hook, &with("not-the-secret"), &text).await,
        401
    );
    assert_eq!(
        post_webhook(&gateway, &hook, &with(&secret), b"{not json").await,
        400
    );
    assert_nothing_stored(&gateway).await;
    assert_eq!(
        post_webhook(&gateway, &hook, &with(&secret), &text).await,
        200
    );
    let conversation = the_conversation(&gateway).await;
    assert_eq!(conversation["contact_external_id"], "972987654321");
    let conversation = conversation["id"].as_str().expect("id").to_owned();
    let inbound = messages(&gateway, &conversation).await;
    assert_eq!(inbound.len(), 1, "{inbound:?}");
    assert_eq!(inbound[0]["text"], "Body Text");

    // A text reply goes to 360dialog's /messages with its key, in the
    // Cloud API's form; WhatsApp's statuses come back the same way.
    let (reply_id, sent) = reply_text(&gateway, &conversation, "Thanks, on it.").await;
    let wamid = sent["external_id"].as_str().expect("the wamid").to_owned();
    let call = calls_at(&emulator, "/messages", 1).await.remove(0);
    assert_eq!(call.header("d360-api-key"), Some(D360_API_KEY));
    let body: Value = serde_json::from_slice(&call.body).expect("json");
    assert_eq!(body["messaging_product"], "whatsapp");
    assert_eq!(body["to"], "972987654321");
    assert_eq!(
        (body["type"].as_str(), body["text"]["body"].as_str()),
        (Some("text"), Some("Thanks, on it."))
    );
    for state in ["delivered", "read"] {
        let status = whatsapp_status(&wamid, state);
        assert_eq!(
            post_webhook(&gateway, &hook, &with(&secret), &status).await,
            200
        );
        status_becomes(&gateway, &conversation, &reply_id, state).await;
    }

    // The voice note goes as a WhatsApp voice message by link.
    reply_voice(&gateway, &conversation, &note).await;
    let call = calls_at(&emulator, "/messages", 2)
        .await
        .pop()
        .expect("a send");
    let body: Value = serde_json::from_slice(&call.body).expect("json");
    assert_eq!(body["type"], "audio", "{body}");
    assert_eq!(body["audio"]["voice"], true, "{body}");
    let link = body["audio"]["link"].as_str().map(str::to_owned);
    assert_playable_note(&voice_bytes(None, link).await);

    stop.cancel();
    running.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whatsapp_number_through_360dialog_connects_receives_replies_and_reports_statuses_on_embedded_defaults()
 {
    let dir = tempfile::tempdir().expect("tempdir");
    whatsapp_360dialog(world::embedded(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whatsapp_number_through_360dialog_connects_receives_replies_and_reports_statuses_on_real_infrastructure()
 {
    let dir = tempfile::tempdir().expect("tempdir");
    whatsapp_360dialog(world::real(dir.path()).await).await;
}

// -------------------------------------------------- Messenger and Instagram

const GRAPH_VERSION: &str = "v21.0";
const PAGE_ID: &str = "106000000000001";
const PAGE_TOKEN: &str = "EAAG-test-page-token";
const PSID: &str = "6945000000000001";
const INSTAGRAM_ACCOUNT_ID: &str = "17841400000000001";
const INSTAGRAM_PAGE_ID: &str = "106000000000002";
const INSTAGRAM_TOKEN: &str = "EAAG-test-instagram-token";
const IGSID: &str = "1272000000000001";

/// A Meta messaging product as the tests drive it.
struct MetaProduct {
    /// The channel kind connected.
    kind: &'static str,
    /// Its fixtures' directory.
    fixtures: &'static str,
    /// The channel's settings (without `api_base_url`).
    settings: Value,
    /// The token sends carry.
    token: &'static str,
    /// The Page whose Send API sends go to.
    page_id: &'static str,
    /// The contact writing in.
    contact: &'static str,
    /// The text of the sample message.
    text: &'static str,
}

fn messenger_product() -> MetaProduct {
    MetaProduct {
        kind: "messenger",
        fixtures: "messenger",
        settings: json!({
            "kind": "messenger",
            "name": "Shop page",
            "page_id": PAGE_ID,
            "page_access_token": PAGE_TOKEN,
            "app_secret": APP_SECRET,
        }),
        token: PAGE_TOKEN,
        page_id: PAGE_ID,
        contact: PSID,
        text: "Hola, ¿tenéis la talla M? 👋",
    }
}

fn instagram_product() -> MetaProduct {
    MetaProduct {
        kind: "instagram",
        fixtures: "instagram",
        settings: json!({
            "kind": "instagram",
            "name": "Shop on Instagram",
            "instagram_account_id": INSTAGRAM_ACCOUNT_ID,
            "page_id": INSTAGRAM_PAGE_ID,
            "access_token": INSTAGRAM_TOKEN,
            "app_secret": APP_SECRET,
        }),
        token: INSTAGRAM_TOKEN,
        page_id: INSTAGRAM_PAGE_ID,
        contact: IGSID,
        text: "Do you ship to Lisbon? 📦",
    }
}

/// `name` of the product's fixtures with its entry and event timed now.
fn meta_event(product: &MetaProduct, name: &str) -> Value {
    let mut body = provider_fixture(product.fixtures, name);
    let now = unix_now_ms();
    body["entry"][0]["time"] = json!(now);
    let event = &mut body["entry"][0]["messaging"][0];
    if event.get("timestamp").is_some() {
        event["timestamp"] = json!(now);
    }
    body
}

async fn meta_messaging(product: MetaProduct, config: telenet::Config) {
    let dir = tempfile::tempdir().expect("tempdir");
    let note = browser_voice_note(dir.path());
    let emulator = Emulator::start(MetaMessaging::page(
        GRAPH_VERSION,
        product.page_id,
        product.token,
    ))
    .await;
    let (running, stop) = world::start(channels_config(config), &ServiceName::ALL).await;
    let gateway = Gateway::of(&running);

    let mut settings = product.settings.clone();
    settings["api_base_url"] = json!(emulator.base_url());
    let channel = connect(&gateway, settings).await;
    assert_eq!(channel["provider"], product.kind, "{channel}");
    assert_eq!(channel["status"], "pending_verification", "{channel}");
    for secret in [product.token, APP_SECRET] {
        assert!(!channel.to_string().contains(secret), "{channel}");
    }
    let id = channel["id"].as_str().expect("id").to_owned();
    let hook = channel["webhook_url"]
        .as_str()
        .expect("webhook url")
        .to_owned();
    let verify_token = channel["webhook"]["verify_token"]
        .as_str()
        .expect("a verify token to paste")
        .to_owned();

    // Meta's subscription handshake verifies the channel.
    assert_eq!(meta_handshake(&gateway, &hook, "wrong").await.0, 403);
    assert_eq!(
        meta_handshake(&gateway, &hook, &verify_token).await,
        (200, "1158201444".to_owned())
    );
    assert_eq!(
        channel_details(&gateway, &id).await["status"],
        "active",
        "the handshake verified the channel"
    );

    // Signed events: a bad signature or a malformed body is refused and
    // stores nothing.
    let signed = |over: &[u8]| {
        vec![(
            "x-hub-signature-256",
            telenet_channels::meta::signature_header(APP_SECRET, over),
        )]
    };
    let text = meta_event(&product, "message_text.json")
        .to_string()
        .into_bytes();
    assert_eq!(
        post_webhook(&gateway, &hook, &signed(b"another body"), &text).await,
        401
    );
    assert_eq!(
        post_webhook(&gateway, &hook, &signed(b"{not json"), b"{not json").await,
        400
    );
    assert_nothing_stored(&gateway).await;
    assert_eq!(
        post_webhook(&gateway, &hook, &signed(&text), &text).await,
        200
    );
    let conversation = the_conversation(&gateway).await;
    assert_eq!(conversation["contact_external_id"], product.contact);
    let conversation = conversation["id"].as_str().expect("id").to_owned();
    let inbound = messages(&gateway, &conversation).await;
    assert_eq!(inbound.len(), 1, "{inbound:?}");
    assert_eq!(inbound[0]["text"], product.text);

    // A text reply is a Send API response to the contact.
    let send_path = format!("/{GRAPH_VERSION}/{}/messages", product.page_id);
    let (reply_id, sent) = reply_text(&gateway, &conversation, "¡Sí, la tenemos!").await;
    let mid = sent["external_id"].as_str().expect("the mid").to_owned();
    let call = calls_at(&emulator, &send_path, 1).await.remove(0);
    let body: Value = serde_json::from_slice(&call.body).expect("json");
    assert_eq!(body["recipient"]["id"], product.contact, "{body}");
    assert_eq!(body["messaging_type"], "RESPONSE", "{body}");
    assert_eq!(body["message"]["text"], "¡Sí, la tenemos!", "{body}");
    assert!(mid.starts_with("m_emulated_"), "{sent}");

    // Its statuses, in the product's own form.
    let mut statuses = Vec::new();
    if product.kind == "messenger" {
        // Messenger: `delivery` naming the mid, then `read` up to a
        // watermark (every message sent before it).
        let mut delivery = meta_event(&product, "delivery_watermark.json");
        delivery["entry"][0]["messaging"][0]["delivery"] =
            json!({"mids": [mid], "watermark": unix_now_ms()});
        statuses.push((delivery, "delivered"));
        let mut read = meta_event(&product, "read_watermark.json");
        read["entry"][0]["messaging"][0]["read"] = json!({"watermark": unix_now_ms() + 1000});
        statuses.push((read, "read"));
    } else {
        // Instagram reports reads only, naming the mid.
        let mut read = meta_event(&product, "read_mid.json");
        read["entry"][0]["messaging"][0]["read"] = json!({ "mid": mid });
        statuses.push((read, "read"));
    }
    for (status, state) in statuses {
        let status = status.to_string().into_bytes();
        assert_eq!(
            post_webhook(&gateway, &hook, &signed(&status), &status).await,
            200
        );
        status_becomes(&gateway, &conversation, &reply_id, state).await;
    }

    // The five-minute browser voice note goes as an audio attachment, an
    // M4A (AAC in MP4) by a link Meta fetches without credentials.
    reply_voice(&gateway, &conversation, &note).await;
    let call = calls_at(&emulator, &send_path, 2)
        .await
        .pop()
        .expect("a send");
    let body: Value = serde_json::from_slice(&call.body).expect("json");
    assert_eq!(body["message"]["attachment"]["type"], "audio", "{body}");
    let link = body["message"]["attachment"]["payload"]["url"]
        .as_str()
        .map(str::to_owned);
    assert_five_minutes_of(&voice_bytes(None, link).await, "mp4", "aac");

    stop.cancel();
    running.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_messenger_page_connects_receives_replies_and_reports_statuses_on_embedded_defaults() {
    let dir = tempfile::tempdir().expect("tempdir");
    meta_messaging(messenger_product(), world::embedded(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_messenger_page_connects_receives_replies_and_reports_statuses_on_real_infrastructure() {
    let dir = tempfile::tempdir().expect("tempdir");
    meta_messaging(messenger_product(), world::real(dir.path()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instagram_account_connects_receives_replies_and_reports_reads_on_embedded_defaults() {
    let dir = tempfile::tempdir().expect("tempdir");
    meta_messaging(instagram_product(), world::embedded(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instagram_account_connects_receives_replies_and_reports_reads_on_real_infrastructure() {
    let dir = tempfile::tempdir().expect("tempdir");
    meta_messaging(instagram_product(), world::real(dir.path()).await).await;
}

// -------------------------------------------------------------------- LINE

const LINE_CHANNEL_SECRET: &str = "line-test-channel-secret";
const LINE_ACCESS_TOKEN: &str = "line-test-channel-access-token";
const LINE_USER: &str = "U206d25c2ea6bd87c17655609a1c37cb8";
/// The public address of the gateway's download links: LINE fetches
/// https URLs only, so the suite's gateway is behind a TLS proxy here.
const FILES_PUBLIC_URL: &str = "https://files.example.test";

/// The first sample event of the fixtures (a text from a user), sent now.
fn line_text() -> Vec<u8> {
    let sample = provider_fixture("line", "webhook_events_sdk_v3.json");
    let mut event = sample["events"][0].clone();
    event["timestamp"] = json!(unix_now_ms());
    json!({"destination": "U123", "events": [event]})
        .to_string()
        .into_bytes()
}

async fn line(config: telenet::Config) {
    let dir = tempfile::tempdir().expect("tempdir");
    let note = browser_voice_note(dir.path());
    let emulator = Emulator::start(LineApi::new(LINE_ACCESS_TOKEN)).await;
    let mut config = channels_config(config);
    config.media.download_urls.base_url = FILES_PUBLIC_URL.into();
    config.media.download_urls.key =
        telenet_signing::links::LinkSigner::generate_key().expect("a link key");
    let (running, stop) = world::start(config, &ServiceName::ALL).await;
    let gateway = Gateway::of(&running);

    // LINE has no webhook registration: the URL is entered in the LINE
    // Developers console, whose "Verify" request verifies the channel.
    let channel = connect(
        &gateway,
        json!({
            "kind": "line",
            "name": "LINE official account",
            "line_channel_id": "1650000000",
            "channel_secret": LINE_CHANNEL_SECRET,
            "channel_access_token": LINE_ACCESS_TOKEN,
            "api_base_url": emulator.base_url(),
        }),
    )
    .await;
    assert_eq!(channel["provider"], "line", "{channel}");
    assert_eq!(channel["status"], "pending_verification", "{channel}");
    for secret in [LINE_CHANNEL_SECRET, LINE_ACCESS_TOKEN] {
        assert!(!channel.to_string().contains(secret), "{channel}");
    }
    let id = channel["id"].as_str().expect("id").to_owned();
    let hook = channel["webhook_url"]
        .as_str()
        .expect("webhook url")
        .to_owned();
    let signed = |over: &[u8]| {
        vec![(
            "x-line-signature",
            telenet_channels::line::signature(LINE_CHANNEL_SECRET, over),
        )]
    };

    // A bad signature or a malformed body is refused and stores nothing.
    let text = line_text();
    assert_eq!(
        post_webhook(&gateway, &hook, &signed(b"another body"), &text).await,
        401
    );
    assert_eq!(
        post_webhook(&gateway, &hook, &signed(b"{not json"), b"{not json").await,
        400
    );
    assert_nothing_stored(&gateway).await;

    // The console's "Verify": no events, answered 200; the channel is
    // then active.
    let verify = br#"{"destination":"U123","events":[]}"#;
    assert_eq!(
        post_webhook(&gateway, &hook, &signed(verify), verify).await,
        200
    );
    eventually("the channel verified", WAIT, || async {
        let details = channel_details(&gateway, &id).await;
        (details["status"] == "active").then_some(())
    })
    .await;
    assert_nothing_stored(&gateway).await;

    assert_eq!(
        post_webhook(&gateway, &hook, &signed(&text), &text).await,
        200
    );
    let conversation = the_conversation(&gateway).await;
    assert_eq!(conversation["contact_external_id"], LINE_USER);
    let conversation = conversation["id"].as_str().expect("id").to_owned();
    let inbound = messages(&gateway, &conversation).await;
    assert_eq!(inbound.len(), 1, "{inbound:?}");
    assert_eq!(inbound[0]["text"], "Hello, world");

    // A text reply is a push message to the user. LINE reports no
    // statuses: the reply stays sent.
    let push = "/v2/bot/message/push";
    reply_text(&gateway, &conversation, "Hello from the shop").await;
    let call = calls_at(&emulator, push, 1).await.remove(0);
    let body: Value = serde_json::from_slice(&call.body).expect("json");
    assert_eq!(body["to"], LINE_USER, "{body}");
    assert_eq!(
        body["messages"],
        json!([{"type": "text", "text": "Hello from the shop"}])
    );
    assert!(call.header("x-line-retry-key").is_some(), "a retry key");

    // The voice note goes as an audio message: an M4A at an https link
    // and its length in milliseconds.
    reply_voice(&gateway, &conversation, &note).await;
    let call = calls_at(&emulator, push, 2).await.pop().expect("a push");
    let body: Value = serde_json::from_slice(&call.body).expect("json");
    let audio = &body["messages"][0];
    assert_eq!(audio["type"], "audio", "{body}");
    let duration = audio["duration"].as_u64().expect("a duration");
    assert!(
        duration.abs_diff(NOTE_SECONDS * 1000) <= 200,
        "{duration} ms"
    );
    let url = audio["originalContentUrl"].as_str().expect("a link");
    // Fetched through the TLS proxy, which forwards to the gateway.
    let path = url
        .strip_prefix(FILES_PUBLIC_URL)
        .unwrap_or_else(|| panic!("{url} is not a download link"));
    let bytes = voice_bytes(None, Some(format!("{}{path}", gateway.base))).await;
    assert_five_minutes_of(&bytes, "mp4", "aac");

    stop.cancel();
    running.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_account_is_verified_receives_and_replies_on_embedded_defaults() {
    let dir = tempfile::tempdir().expect("tempdir");
    line(world::embedded(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_account_is_verified_receives_and_replies_on_real_infrastructure() {
    let dir = tempfile::tempdir().expect("tempdir");
    line(world::real(dir.path()).await).await;
}

// ------------------------------------------------------------------- Viber

const VIBER_TOKEN: &str = "445da6az1s345z78-dazcczb2542zv51a-e0vc5fva17480im9";
const VIBER_USER: &str = "01234567890A=";

/// A sample callback of the fixtures, timed now.
fn viber_callback(name: &str) -> Value {
    let mut body = provider_fixture("viber", name);
    body["timestamp"] = json!(unix_now_ms());
    body
}

async fn viber(config: telenet::Config) {
    let dir = tempfile::tempdir().expect("tempdir");
    let note = browser_voice_note(dir.path());
    let api = ViberApi::new(VIBER_TOKEN, |body| {
        telenet_channels::viber::signature(VIBER_TOKEN, body)
    });
    let emulator = Emulator::start(api.clone()).await;
    let (running, stop) = world::start(channels_config(config), &ServiceName::ALL).await;
    let gateway = Gateway::of(&running);

    // Connecting sets the webhook; Viber calls it back, signed, before
    // answering, and the channel is active.
    let channel = connect(
        &gateway,
        json!({
            "kind": "viber",
            "name": "Viber bot",
            "auth_token": VIBER_TOKEN,
            "sender_name": "Shop",
            "api_base_url": emulator.base_url(),
        }),
    )
    .await;
    assert_eq!(channel["provider"], "viber", "{channel}");
    assert_eq!(channel["status"], "active", "{channel}");
    assert_eq!(channel["webhook"]["registered_automatically"], true);
    assert!(!channel.to_string().contains(VIBER_TOKEN), "{channel}");
    let hook = channel["webhook_url"]
        .as_str()
        .expect("webhook url")
        .to_owned();
    assert_eq!(api.webhook().as_deref(), Some(hook.as_str()));
    let callbacks = api.callbacks();
    assert_eq!(callbacks.len(), 1, "{callbacks:?}");
    assert_eq!(callbacks[0].status, Some(200), "{callbacks:?}");
    let signed = |over: &[u8]| {
        vec![(
            "x-viber-content-signature",
            telenet_channels::viber::signature(VIBER_TOKEN, over),
        )]
    };

    // A bad signature or a malformed body is refused and stores nothing.
    let text = viber_callback("message_text.json").to_string().into_bytes();
    assert_eq!(
        post_webhook(&gateway, &hook, &signed(b"another body"), &text).await,
        401
    );
    assert_eq!(
        post_webhook(&gateway, &hook, &signed(b"{not json"), b"{not json").await,
        400
    );
    assert_nothing_stored(&gateway).await;
    assert_eq!(
        post_webhook(&gateway, &hook, &signed(&text), &text).await,
        200
    );
    let conversation = the_conversation(&gateway).await;
    assert_eq!(conversation["contact_external_id"], VIBER_USER);
    let conversation = conversation["id"].as_str().expect("id").to_owned();
    let inbound = messages(&gateway, &conversation).await;
    assert_eq!(inbound.len(), 1, "{inbound:?}");
    assert_eq!(inbound[0]["text"], "a message to the service");

    // A text reply is a send_message from the bot's sender; Viber's
    // `delivered` and `seen` callbacks about its token move it on.
    let send = "/pa/send_message";
    let (reply_id, sent) = reply_text(&gateway, &conversation, "Hi John, how can we help?").await;
    let call = calls_at(&emulator, send, 1).await.remove(0);
    let body: Value = serde_json::from_slice(&call.body).expect("json");
    assert_eq!(body["receiver"], VIBER_USER, "{body}");
    assert_eq!(body["sender"]["name"], "Shop", "{body}");
    assert_eq!(
        (body["type"].as_str(), body["text"].as_str()),
        (Some("text"), Some("Hi John, how can we help?"))
    );
    let token: u64 = sent["external_id"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("a message token: {sent}"));
    assert!(token > 1 << 53, "the token kept whole: {token}");
    for (name, state) in [("delivered.json", "delivered"), ("seen.json", "read")] {
        let mut status = viber_callback(name);
        status["message_token"] = json!(token);
        let status = status.to_string().into_bytes();
        assert_eq!(
            post_webhook(&gateway, &hook, &signed(&status), &status).await,
            200
        );
        status_becomes(&gateway, &conversation, &reply_id, state).await;
    }

    // Viber bots send no voice messages: the note goes as a `file`, an M4A
    // or MP3 whose size and name say so.
    reply_voice(&gateway, &conversation, &note).await;
    let call = calls_at(&emulator, send, 2).await.pop().expect("a send");
    let body: Value = serde_json::from_slice(&call.body).expect("json");
    assert_eq!(body["type"], "file", "{body}");
    let name = body["file_name"].as_str().expect("a file name").to_owned();
    let link = body["media"].as_str().map(str::to_owned);
    let bytes = voice_bytes(None, link).await;
    assert_eq!(body["size"], json!(bytes.len()), "{body}");
    if name.ends_with(".m4a") {
        assert_five_minutes_of(&bytes, "mp4", "aac");
    } else {
        assert!(name.ends_with(".mp3"), "{name}");
        assert_five_minutes_of(&bytes, "mp3", "mp3");
    }

    stop.cancel();
    running.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viber_bot_connects_receives_replies_and_reports_statuses_on_embedded_defaults() {
    let dir = tempfile::tempdir().expect("tempdir");
    viber(world::embedded(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viber_bot_connects_receives_replies_and_reports_statuses_on_real_infrastructure() {
    let dir = tempfile::tempdir().expect("tempdir");
    viber(world::real(dir.path()).await).await;
}
