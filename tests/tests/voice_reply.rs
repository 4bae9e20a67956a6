//! An agent replies with a voice note recorded in Chrome (WebM/Opus, no
//! duration in the file) on a channel whose receiver takes Ogg/Opus voice
//! notes: the file goes up through the gateway, the reply names it, and the
//! receiver gets a voice note in its form with a link it can fetch without
//! credentials — checked by probing the bytes it fetched, not by trusting
//! the encoder. Bad attachments are refused and send nothing.
//!
//! Run on embedded defaults and on real PostgreSQL + RabbitMQ + Redis.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use telenet::ServiceName;
use telenet_audio::probe::{self, ProbeOptions};
use telenet_tests::flow::Gateway;
use telenet_tests::{Receiver, eventually, inbound_text, send_webhook, world};

const WAIT: Duration = Duration::from_secs(60);
const BOUNDARY: &str = "telenet-voice-reply";

fn fixture(name: &str) -> Vec<u8> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/media");
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// `POST /v1/files` with one file of `kind`; the file's id.
async fn upload(gateway: &Gateway, kind: &str, mime: &str, bytes: &[u8]) -> String {
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"kind\"\r\n\r\n{kind}\r\n\
             --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"note\"\r\n\
             Content-Type: {mime}\r\n\r\n"
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

async fn voice_reply(config: telenet::Config) {
    let receiver = Receiver::start().await;
    let (running, token) = world::start(config, &ServiceName::ALL).await;
    let gateway = Gateway::of(&running);
    let (status, channel) = gateway
        .call(
            reqwest::Method::POST,
            "/v1/channels",
            Some(json!({
                "kind": "custom",
                "name": "Shop",
                "outbound_url": receiver.url(),
                "accepted_voice_types": ["audio/ogg; codecs=opus", "audio/mpeg"],
            })),
            &[],
        )
        .await;
    assert_eq!(status, 201, "{channel}");
    let secret = channel["secret"].as_str().expect("secret");
    receiver.set_secret(secret).await;
    let hook = channel["webhook_url"].as_str().expect("webhook_url");
    let sent = send_webhook(
        &gateway.http,
        hook,
        secret,
        "wh-voice-1",
        &inbound_text("in-1", "+34600111222", "¿Me mandas un audio?"),
    )
    .await;
    assert_eq!(sent.status(), 200);
    let conversation = eventually("the conversation", WAIT, || async {
        let (_, page) = gateway
            .call(reqwest::Method::GET, "/v1/conversations", None, &[])
            .await;
        page["items"][0]["id"].as_str().map(str::to_owned)
    })
    .await;
    let messages = format!("/v1/conversations/{conversation}/messages");

    let webm = fixture("derived_webm_opus_live_no_duration.webm");
    let file_id = upload(&gateway, "voice", "audio/webm; codecs=opus", &webm).await;

    // Refused, and nothing sent: a file of nobody, a picture as a voice
    // note, too many files, a blank reply.
    let picture = upload(
        &gateway,
        "image",
        "image/png",
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89",
    )
    .await;
    let refusals = [
        (json!([{"file_id": "0".repeat(64), "kind": "voice"}]), 404),
        (json!([{"file_id": picture, "kind": "voice"}]), 400),
        (json!([{"file_id": "not-an-id"}]), 400),
        (json!(vec![json!({"file_id": picture}); 11]), 400),
        (json!([]), 400),
    ];
    for (attachments, expected) in refusals {
        let (status, problem) = gateway
            .call(
                reqwest::Method::POST,
                &messages,
                Some(json!({"text": "", "attachments": attachments})),
                &[],
            )
            .await;
        assert_eq!(status, expected, "{attachments}: {problem}");
    }

    // The voice note, without text.
    let (status, reply) = gateway
        .call(
            reqwest::Method::POST,
            &messages,
            Some(json!({"attachments": [{"file_id": file_id, "kind": "voice"}]})),
            &[],
        )
        .await;
    assert_eq!(status, 201, "{reply}");
    let stored = &reply["message"]["attachments"][0];
    assert_eq!(stored["kind"], "voice");
    assert_eq!(stored["blob_id"], file_id.as_str());
    assert!(
        stored["duration_ms"]
            .as_u64()
            .is_some_and(|d| d.abs_diff(3_452) <= 30),
        "the duration counted from the stream: {stored}"
    );

    let received = eventually("the voice note at the receiver", WAIT, || async {
        receiver.messages().await.first().cloned()
    })
    .await;
    let sent = &received.body["message"]["attachments"][0];
    assert_eq!(sent["kind"], "voice", "{}", received.body);
    assert_eq!(sent["mime_type"], "audio/ogg; codecs=opus");
    let url = sent["url"].as_str().expect("a link");
    // Fetched as the receiver would: no token.
    let response = reqwest::get(url).await.expect("fetch the link");
    assert_eq!(response.status(), 200, "{url}");
    let bytes = response.bytes().await.expect("bytes");
    assert_eq!(sent["size_bytes"].as_u64(), Some(bytes.len() as u64));
    let probed = probe::probe(&bytes, &ProbeOptions::VOICE_NOTE.with_peaks(0)).expect("probe");
    assert_eq!(probed.container.name(), "ogg");
    assert_eq!((probed.codec.name(), probed.channels), ("opus", 1));
    assert!(
        probed.duration_ms.abs_diff(3_452) <= 30,
        "{}",
        probed.duration_ms
    );
    assert_eq!(
        receiver.messages().await.len(),
        1,
        "the refusals sent nothing"
    );

    token.cancel();
    running.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_voice_note_reaches_the_channel_in_its_form_on_embedded_defaults() {
    let dir = tempfile::tempdir().expect("tempdir");
    voice_reply(world::embedded(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_voice_note_reaches_the_channel_in_its_form_on_real_infrastructure() {
    let dir = tempfile::tempdir().expect("tempdir");
    voice_reply(world::real(dir.path()).await).await;
}
