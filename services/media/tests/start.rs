//! Media as the process runs it (`telenet_media::start` under the runtime's
//! runner): its gRPC API answers, the inbound consumer was subscribed before
//! `start` returned, and a machine without FFmpeg or SoX still runs it,
//! refusing only the profiles that need the missing program, by name.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use telenet_bus::{SharedBus, SubscribeSpec};
use telenet_kit::grpc::GrpcChannel;
use telenet_media::{
    CALLS, Config, LocalDirStore, MIGRATIONS, MediaService, NAME, TranscodeConfig,
};
use telenet_proto::common::v1::{Attachment, AttachmentKind, AttachmentState, ChannelKind};
use telenet_proto::conversations::v1::{Message, MessageDirection};
use telenet_proto::events::v1::{self as ev, event_envelope::Payload};
use telenet_proto::media::v1::media_client::MediaClient;
use telenet_proto::media::v1::upload_request::Part;
use telenet_proto::media::v1::{
    ListProfilesRequest, TranscodeRequest, UploadHeader, UploadRequest, VariantState,
};
use telenet_runtime::testing::{TestService, TestSetup};
use telenet_store::testing::Backend;
use telenet_store::{Db, events};
use tonic::Code;

fn fixture(name: &str) -> Vec<u8> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/media");
    std::fs::read(PathBuf::from(dir).join(name))
        .unwrap_or_else(|e| panic!("fixture {dir}/{name}: {e}"))
}

async fn started(config: Config) -> TestService {
    TestService::start(
        TestSetup::new(NAME, config)
            .calls(CALLS)
            .database(Backend::Sqlite, MIGRATIONS),
        telenet_media::start,
    )
    .await
}

async fn upload(client: &mut MediaClient<GrpcChannel>, mime: &str, bytes: &[u8]) -> String {
    let mut messages = vec![UploadRequest {
        part: Some(Part::Header(UploadHeader {
            workspace_id: "ws-1".into(),
            mime_type: mime.into(),
            size_bytes: bytes.len() as u64,
        })),
    }];
    messages.extend(bytes.chunks(64 * 1024).map(|c| UploadRequest {
        part: Some(Part::Chunk(c.to_vec())),
    }));
    client
        .upload(tokio_stream::iter(messages))
        .await
        .expect("upload")
        .into_inner()
        .id
}

fn transcode(blob_id: &str, profile: &str) -> TranscodeRequest {
    TranscodeRequest {
        workspace_id: "ws-1".into(),
        blob_id: blob_id.into(),
        profile: profile.into(),
        wait_ms: 30_000,
    }
}

/// Programs at paths that do not exist: what a machine without them sees.
fn without_programs() -> Config {
    Config {
        transcode: TranscodeConfig {
            ffmpeg: "/nonexistent/telenet-test/ffmpeg".into(),
            sox: "/nonexistent/telenet-test/sox".into(),
            ..TranscodeConfig::default()
        },
        ..Config::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_ffmpeg_and_sox_only_their_profiles_are_refused_by_name() {
    let service = started(without_programs()).await;
    let mut client = MediaClient::new(service.channel());
    let blob = upload(
        &mut client,
        "audio/ogg",
        &fixture("source_ogg_opus_ptb.ogg"),
    )
    .await;

    for (profile, program) in [
        ("voice-amr", "sox"),
        ("audio-m4a-aac", "ffmpeg"),
        ("video-still-mp4", "ffmpeg"),
    ] {
        let refused = client
            .transcode(transcode(&blob, profile))
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), Code::FailedPrecondition, "{profile}");
        assert!(
            refused.message().contains(profile)
                && refused
                    .message()
                    .contains(&format!("/nonexistent/telenet-test/{program}")),
            "{profile}: {}",
            refused.message()
        );
    }

    // What is made in process still works: the remux and LAME.
    for profile in ["voice-ogg-opus", "audio-mp3"] {
        let made = client
            .transcode(transcode(&blob, profile))
            .await
            .expect("made without external programs")
            .into_inner();
        assert_eq!(
            made.state,
            VariantState::Ready as i32,
            "{profile}: {made:?}"
        );
    }

    // The web playback form is still taken (MP4/AAC and MP3 inputs need no
    // FFmpeg); this Ogg/Opus input fails naming the program.
    let playable = client
        .transcode(transcode(&blob, "audio-web-playback"))
        .await
        .expect("taken")
        .into_inner();
    assert_eq!(playable.state, VariantState::Failed as i32, "{playable:?}");
    assert!(
        playable.error.contains("/nonexistent/telenet-test/ffmpeg"),
        "{}",
        playable.error
    );
    service.stop().await;
}

/// Log lines, as the process would print them.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

#[tokio::test]
async fn one_warning_at_start_names_each_unavailable_profile_and_why() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let db = Db::connect(&Backend::Sqlite.url(tmp.path(), "media").await, "media")
        .await
        .expect("db");
    db.migrate(&MIGRATIONS).await.expect("migrate");
    let store = LocalDirStore::new(tmp.path().join("blobs"))
        .await
        .expect("store");
    let log = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(log.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        MediaService::with_store(db, without_programs(), Arc::new(store)).expect("service")
    });
    let text = String::from_utf8_lossy(&log.0.lock().expect("log buffer")).into_owned();
    let warnings: Vec<&str> = text.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "{text}");
    for expected in [
        "media profiles unavailable",
        "voice-amr needs sox, /nonexistent/telenet-test/sox does not exist",
        "audio-m4a-aac needs ffmpeg, /nonexistent/telenet-test/ffmpeg does not exist",
        "video-still-mp4 needs ffmpeg",
    ] {
        assert!(warnings[0].contains(expected), "no {expected:?} in {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_media_serves_and_fetches_what_was_announced_before_it_ran() {
    let note = fixture("source_ogg_opus_ptb.ogg");
    let provider = provider(note.clone()).await;
    let mut config = Config::default();
    config.inbound.allow_private_networks = true;
    let service = started(config).await;

    let profiles = MediaClient::new(service.channel())
        .list_profiles(ListProfilesRequest {
            channel_kind: ChannelKind::Whatsapp as i32,
        })
        .await
        .expect("list profiles")
        .into_inner();
    assert_eq!(profiles.policies.len(), 1);

    let mut outcomes = service
        .bus
        .subscribe(SubscribeSpec::new(
            "test.outcomes",
            &["message.attachment_ready", "message.attachment_failed"],
        ))
        .await
        .expect("subscribe");
    publish_inbound(&service.bus, &format!("{provider}/note.ogg")).await;
    let delivery = tokio::time::timeout(Duration::from_secs(20), outcomes.next())
        .await
        .expect("an outcome in time")
        .expect("subscription open");
    let env = events::from_bus(&delivery.event).expect("decodable");
    delivery.ack().await.expect("ack");
    let Some(Payload::MessageAttachmentReady(ready)) = env.payload else {
        panic!("{env:?}");
    };
    let attachment = ready.attachment.expect("attachment");
    assert_eq!(attachment.size_bytes, note.len() as u64);
    service.stop().await;
}

/// A provider serving `note` at any path.
async fn provider(note: Vec<u8>) -> String {
    let app = axum::Router::new().fallback(move || {
        let note = note.clone();
        async move { note }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// `message.created` for an inbound message with one voice note at `url`.
async fn publish_inbound(bus: &SharedBus, url: &str) {
    let envelope = events::envelope(
        "ws-1",
        Payload::MessageCreated(ev::MessageCreated {
            message: Some(Message {
                id: "msg-1".into(),
                workspace_id: "ws-1".into(),
                conversation_id: "conv-1".into(),
                direction: MessageDirection::Inbound as i32,
                attachments: vec![Attachment {
                    kind: AttachmentKind::Voice as i32,
                    url: url.to_owned(),
                    mime_type: "audio/ogg".into(),
                    state: AttachmentState::Pending as i32,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            channel_id: String::new(),
            contact_id: "contact-1".into(),
        }),
        None,
    );
    bus.publish(&[events::to_bus(&envelope)])
        .await
        .expect("publish");
}
