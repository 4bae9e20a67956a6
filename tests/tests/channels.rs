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
//! Run on embedded defaults and on real PostgreSQL + RabbitMQ + Redis.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use telenet::ServiceName;
use telenet_audio::probe::{self, ProbeOptions};
use telenet_emulators::telegram::TelegramApi;
use telenet_emulators::whatsapp::Graph;
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
    let probed = probe::probe(bytes, &ProbeOptions::VOICE_NOTE.with_peaks(0)).expect("probe");
    assert_eq!(probed.container.name(), "ogg");
    assert_eq!((probed.codec.name(), probed.channels), ("opus", 1));
    assert!(
        probed.duration_ms.abs_diff(NOTE_SECONDS * 1000) <= 200,
        "{} ms",
        probed.duration_ms
    );
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
            .find(|m| m["external_id"] == "wamid.voice-1" && m["attachments"][0]["state"] == "ready")
    })
    .await;
    let attachment = &note_in["attachments"][0];
    assert_eq!(attachment["kind"], "voice", "{note_in}");
    assert_eq!(attachment["size_bytes"].as_u64(), Some(inbound_note.len() as u64));
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
