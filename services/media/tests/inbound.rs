//! The inbound attachment fetcher against a real local HTTP server playing
//! the provider, on the in-memory bus with media's outbox relay: each
//! pending attachment of an inbound `message.created` ends as exactly one
//! `message.attachment_ready` (stored, right hash) or
//! `message.attachment_failed` (with the reason).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use telenet_bus::memory::MemoryBus;
use telenet_bus::{SharedBus, SubscribeSpec, Subscription};
use telenet_channels::directory::{ChannelCredentials, ChannelDirectory, DirectoryError};
use telenet_media::inbound::{FetchError, InboundConfig, InboundFetcher};
use telenet_media::{BlobId, ByteRange, Config, MIGRATIONS, MediaService};
use telenet_proto::common::v1::ChannelKind;
use telenet_proto::common::v1::{Attachment, AttachmentKind, AttachmentState};
use telenet_proto::conversations::v1::{Message, MessageDirection};
use telenet_proto::events::v1::{self as ev, event_envelope::Payload};
use telenet_store::{Db, events, outbox, testing};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

const MAX: u64 = 64 * 1024;

fn voice_note() -> Vec<u8> {
    let mut bytes = b"OggS".to_vec();
    bytes.extend((0..20_000u32).map(|i| (i % 241) as u8));
    bytes
}

/// WhatsApp's Ogg/Opus voice note of the repository's fixtures (3.45 s).
fn whatsapp_note() -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/media/source_ogg_opus_ptb.ogg"
    );
    std::fs::read(path).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

/// The secret of channel `ch-1` in these tests.
const CHANNEL_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A channel directory knowing one custom channel, `ch-1`.
struct OneChannel;

#[async_trait::async_trait]
impl ChannelDirectory for OneChannel {
    async fn credentials(
        &self,
        _: &str,
        channel_id: &str,
    ) -> Result<ChannelCredentials, DirectoryError> {
        if channel_id != "ch-1" {
            return Err(DirectoryError::NotFound);
        }
        Ok(ChannelCredentials {
            kind: ChannelKind::Custom,
            secret: CHANNEL_SECRET.to_owned(),
            ..ChannelCredentials::default()
        })
    }
}

/// A custom channel's file server: serves the note only to a request
/// signed with the channel's secret over the URL it asks for.
async fn signed_only(uri: axum::http::Uri, headers: axum::http::HeaderMap) -> Response {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let host = h("host").unwrap_or_default();
    let url = format!("http://{host}{uri}");
    let secret = telenet_signing::Secret::parse(CHANNEL_SECRET).expect("secret");
    let verified = secret.verify(
        h("webhook-id"),
        h("webhook-timestamp"),
        h("webhook-signature"),
        url.as_bytes(),
        telenet_signing::unix_now(),
    );
    match verified {
        Ok(()) => ([(header::CONTENT_TYPE, "audio/ogg")], whatsapp_note()).into_response(),
        Err(e) => (StatusCode::UNAUTHORIZED, e.to_string()).into_response(),
    }
}

/// The provider: files, errors and redirects.
async fn provider() -> String {
    let app = axum::Router::new()
        .route("/signed.ogg", axum::routing::get(signed_only))
        .route(
            "/whatsapp.ogg",
            axum::routing::get(|| async {
                ([(header::CONTENT_TYPE, "audio/ogg")], whatsapp_note())
            }),
        )
        .route(
            "/voice.ogg",
            axum::routing::get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/octet-stream")],
                    voice_note(),
                )
            }),
        )
        .route(
            "/missing",
            axum::routing::get(|| async { StatusCode::NOT_FOUND }),
        )
        .route(
            "/busy",
            axum::routing::get(|| async { StatusCode::SERVICE_UNAVAILABLE }),
        )
        .route(
            "/big-declared",
            axum::routing::get(|| async { vec![0u8; MAX as usize + 1] }),
        )
        .route(
            // No Content-Length: the cap is enforced while reading.
            "/big-streamed",
            axum::routing::get(|| async {
                let chunks = (0..20).map(|_| Ok::<_, std::io::Error>(vec![7u8; 8 * 1024]));
                Response::new(Body::from_stream(futures::stream::iter(chunks)))
            }),
        )
        .route(
            "/moved",
            axum::routing::get(|| async {
                (StatusCode::FOUND, [(header::LOCATION, "/voice.ogg")]).into_response()
            }),
        )
        .route(
            "/loop",
            axum::routing::get(|| async {
                (StatusCode::FOUND, [(header::LOCATION, "/loop")]).into_response()
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

struct World {
    media: MediaService,
    bus: SharedBus,
    token: CancellationToken,
    _tmp: tempfile::TempDir,
}

async fn world(inbound: InboundConfig) -> World {
    let tmp = tempfile::tempdir().expect("tempdir");
    let db = Db::connect(&testing::sqlite_in(tmp.path(), "media"), "media")
        .await
        .expect("db");
    db.migrate(&MIGRATIONS).await.expect("migrate");
    let media = MediaService::new(
        db.clone(),
        Config {
            blob_dir: tmp.path().join("blobs"),
            inbound,
            ..Config::default()
        },
    )
    .await
    .expect("media");
    let bus: SharedBus = Arc::new(MemoryBus::new(telenet_bus::RetryPolicy {
        delays: vec![Duration::from_millis(50); 3],
    }));
    let token = CancellationToken::new();
    tokio::spawn(outbox::Relay::new(db, bus.clone()).run(token.clone()));
    World {
        media,
        bus,
        token,
        _tmp: tmp,
    }
}

fn local_config() -> InboundConfig {
    InboundConfig {
        max_bytes: MAX,
        allow_private_networks: true,
        attempts: 2,
        timeout_ms: 5_000,
        ..InboundConfig::default()
    }
}

fn announced(url: &str) -> Attachment {
    Attachment {
        kind: AttachmentKind::Voice as i32,
        url: url.to_owned(),
        mime_type: "audio/ogg".into(),
        state: AttachmentState::Pending as i32,
        ..Default::default()
    }
}

fn created(
    id: &str,
    direction: MessageDirection,
    attachments: Vec<Attachment>,
) -> ev::EventEnvelope {
    events::envelope(
        "ws-1",
        Payload::MessageCreated(ev::MessageCreated {
            message: Some(Message {
                id: id.into(),
                workspace_id: "ws-1".into(),
                conversation_id: "conv-1".into(),
                direction: direction as i32,
                attachments,
                ..Default::default()
            }),
            channel_id: "ch-1".into(),
            contact_id: "contact-1".into(),
        }),
        None,
    )
}

/// A subscription to the attachment outcomes media announces.
async fn outcomes(bus: &SharedBus) -> Subscription {
    bus.subscribe(SubscribeSpec::new(
        "test.outcomes",
        &["message.attachment_ready", "message.attachment_failed"],
    ))
    .await
    .expect("subscribe")
}

/// The next attachment outcome: (message id, index, attachment).
async fn next_outcome(sub: &mut Subscription) -> (String, u32, Attachment, bool) {
    let delivery = tokio::time::timeout(Duration::from_secs(20), sub.next())
        .await
        .expect("an attachment event in time")
        .expect("subscription open");
    let env = events::from_bus(&delivery.event).expect("decodable");
    delivery.ack().await.expect("ack");
    assert_eq!(env.workspace_id, "ws-1");
    match env.payload {
        Some(Payload::MessageAttachmentReady(r)) => {
            assert_eq!(
                (r.conversation_id.as_str(), r.channel_id.as_str()),
                ("conv-1", "ch-1")
            );
            (
                r.message_id,
                r.index,
                r.attachment.expect("attachment"),
                true,
            )
        }
        Some(Payload::MessageAttachmentFailed(f)) => (
            f.message_id,
            f.index,
            f.attachment.expect("attachment"),
            false,
        ),
        other => panic!("unexpected event {other:?}"),
    }
}

#[tokio::test]
async fn pending_attachments_end_ready_or_failed_once() {
    let base = provider().await;
    let w = world(local_config()).await;
    let mut sub = outcomes(&w.bus).await;
    InboundFetcher::new(w.media.clone(), w.bus.clone())
        .expect("fetcher")
        .start(w.token.clone())
        .await
        .expect("start");

    let mut already_stored = announced(&format!("{base}/voice.ogg"));
    already_stored.state = AttachmentState::Ready as i32;
    already_stored.blob_id = "ab".repeat(32);
    let first = created(
        "m-1",
        MessageDirection::Inbound,
        vec![
            announced(&format!("{base}/voice.ogg")),
            announced(&format!("{base}/missing")),
            announced(&format!("{base}/big-declared")),
            announced(&format!("{base}/big-streamed")),
            already_stored,
            announced(&format!("{base}/moved")),
            announced(&format!("{base}/busy")),
            announced(&format!("{base}/loop")),
            announced("ftp://files.example/x.ogg"),
        ],
    );
    // Delivered twice (a redelivery), and an outbound message: neither adds
    // outcomes. The last message is a sentinel: its outcome comes last.
    let outbound = created(
        "m-out",
        MessageDirection::Outbound,
        vec![announced(&format!("{base}/voice.ogg"))],
    );
    let sentinel = created(
        "m-2",
        MessageDirection::Inbound,
        vec![announced(&format!("{base}/missing"))],
    );
    w.bus
        .publish(&[events::to_bus(&first), events::to_bus(&first)])
        .await
        .expect("publish");

    let mut outcomes = std::collections::BTreeMap::new();
    for _ in 0..8 {
        let (message, index, attachment, ready) = next_outcome(&mut sub).await;
        assert_eq!(message, "m-1");
        assert!(
            outcomes.insert(index, (attachment, ready)).is_none(),
            "index {index} announced twice"
        );
    }
    w.bus
        .publish(&[events::to_bus(&outbound), events::to_bus(&sentinel)])
        .await
        .expect("publish");
    let (message, index, _, ready) = next_outcome(&mut sub).await;
    assert_eq!((message.as_str(), index, ready), ("m-2", 0, false));

    let expected = hex::encode(Sha256::digest(voice_note()));
    for index in [0, 5] {
        let (a, ready) = &outcomes[&index];
        assert!(ready, "index {index}: {}", a.error);
        assert_eq!(a.state, AttachmentState::Ready as i32);
        assert_eq!(a.blob_id, expected);
        assert_eq!(a.size_bytes, voice_note().len() as u64);
        // The webhook's declared type wins over the CDN's octet-stream.
        assert_eq!(a.mime_type, "audio/ogg");
        assert!(a.error.is_empty());
    }
    let stored = w
        .media
        .blob("ws-1", &expected)
        .await
        .expect("recorded for the workspace");
    assert_eq!(stored.size_bytes, voice_note().len() as u64);
    let mut reader = w
        .media
        .blob_store()
        .reader(&BlobId::parse(&expected).expect("id"), ByteRange::ALL)
        .await
        .expect("reader");
    let mut bytes = Vec::new();
    reader.bytes.read_to_end(&mut bytes).await.expect("read");
    assert_eq!(bytes, voice_note());

    let failed = |index: u32| {
        let (a, ready) = &outcomes[&index];
        assert!(!ready, "index {index} was stored");
        assert_eq!(a.state, AttachmentState::Failed as i32);
        assert!(a.blob_id.is_empty());
        a.error.clone()
    };
    assert!(failed(1).contains("404"), "{}", failed(1));
    assert!(failed(2).contains("too large"), "{}", failed(2));
    assert!(failed(3).contains("too large"), "{}", failed(3));
    // Retried (attempts = 2), then reported.
    assert!(failed(6).contains("503"), "{}", failed(6));
    assert!(failed(7).contains("redirects"), "{}", failed(7));
    assert!(failed(8).contains("http or https"), "{}", failed(8));
    assert!(
        !outcomes.contains_key(&4),
        "a stored attachment was fetched"
    );
    w.token.cancel();
}

#[tokio::test]
async fn private_addresses_are_refused_unless_allowed() {
    let base = provider().await;
    let w = world(InboundConfig {
        allow_private_networks: false,
        ..local_config()
    })
    .await;
    let fetcher = InboundFetcher::new(w.media.clone(), w.bus.clone()).expect("fetcher");
    let port = base.rsplit(':').next().expect("port");
    for url in [
        format!("{base}/voice.ogg"),
        // A name is checked on every address it resolves to.
        format!("http://localhost:{port}/voice.ogg"),
    ] {
        let err = fetcher
            .fetch("ws-1", &announced(&url))
            .await
            .expect_err("private address");
        assert!(
            matches!(&err, FetchError::Permanent(r) if r.contains("not a public address")),
            "{url}: {err:?}"
        );
    }

    let open = world(local_config()).await;
    let fetcher = InboundFetcher::new(open.media.clone(), open.bus.clone()).expect("fetcher");
    let blob = fetcher
        .fetch("ws-1", &announced(&format!("{base}/voice.ogg")))
        .await
        .expect("allowed");
    assert_eq!(blob.size_bytes, voice_note().len() as u64);
}

#[tokio::test]
async fn unusable_settings_are_named() {
    let w = world(local_config()).await;
    let bad = Config {
        inbound: InboundConfig {
            attempts: 0,
            ..local_config()
        },
        ..Config::default()
    };
    let err = bad.validate().expect_err("attempts 0");
    assert!(err.to_string().contains("inbound.attempts"), "{err}");
    w.token.cancel();
}

#[tokio::test]
async fn inbound_voice_notes_come_with_duration_waveform_and_a_playable_form() {
    let base = provider().await;
    let w = world(local_config()).await;
    let mut sub = outcomes(&w.bus).await;
    let mut variants = w
        .bus
        .subscribe(SubscribeSpec::new(
            "test.variants",
            &["media.variant_ready"],
        ))
        .await
        .expect("subscribe");
    let metrics = telenet_kit::metrics::Metrics::new();
    InboundFetcher::new(w.media.clone().with_metrics(metrics.clone()), w.bus.clone())
        .expect("fetcher")
        .start(w.token.clone())
        .await
        .expect("start");
    let message = created(
        "m-voice",
        MessageDirection::Inbound,
        vec![announced(&format!("{base}/whatsapp.ogg"))],
    );
    w.bus
        .publish(&[events::to_bus(&message)])
        .await
        .expect("publish");
    let (_, _, attachment, ready) = next_outcome(&mut sub).await;
    assert!(ready, "{attachment:?}");
    assert!(
        attachment.duration_ms.abs_diff(3_450) <= 60,
        "the duration comes with the attachment: {attachment:?}"
    );

    // The waveform was kept: asking for it reads no bytes (the blob is
    // removed from the store to prove it).
    let probe = telenet_proto::media::v1::ProbeRequest {
        workspace_id: "ws-1".into(),
        blob_id: attachment.blob_id.clone(),
        waveform_peaks: telenet_audio::probe::DEFAULT_PEAKS as u32,
    };
    let id = BlobId::parse(&attachment.blob_id).expect("blob id");
    let path = telenet_media::LocalDirStore::new(&w._tmp.path().join("blobs"))
        .await
        .expect("store")
        .path_of(&id);
    // The browser-playable form is made on its own and announced.
    let delivery = tokio::time::timeout(Duration::from_secs(60), variants.next())
        .await
        .expect("the playable form in time")
        .expect("subscription open");
    let env = events::from_bus(&delivery.event).expect("decodable");
    delivery.ack().await.expect("ack");
    let Some(Payload::MediaVariantReady(made)) = env.payload else {
        panic!("{env:?}");
    };
    let variant = made.variant.expect("variant");
    assert_eq!(
        (variant.profile.as_str(), variant.source_blob_id.as_str()),
        (
            telenet_audio::profiles::WEB_PLAYBACK,
            attachment.blob_id.as_str()
        )
    );
    assert_eq!(variant.parts[0].mime_type, "audio/mp4");

    std::fs::remove_file(&path).expect("remove the stored note");
    let kept = w.media.probe_blob(&probe).await.expect("the kept probe");
    assert_eq!(kept.waveform.as_ref().map(|w| w.peaks.len()), Some(64));
    assert_eq!(kept.duration_ms, attachment.duration_ms);
    let text = metrics.encode().expect("metrics");
    for series in [
        r#"telenet_media_inbound_fetches_total{outcome="ready"} 1"#,
        r#"telenet_media_transcodes_total{profile="audio-web-playback",outcome="encoded"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == series), "{series}:\n{text}");
    }
    w.token.cancel();
}

#[tokio::test]
async fn custom_channels_files_are_fetched_signed_with_the_channels_secret() {
    let base = provider().await;
    let w = world(local_config()).await;
    let fetcher = InboundFetcher::new(w.media.clone(), w.bus.clone())
        .expect("fetcher")
        .with_channel_directory(Arc::new(OneChannel));
    let attachment = announced(&format!("{base}/signed.ogg?v=1"));
    let blob = fetcher
        .fetch_from("ws-1", "ch-1", &attachment)
        .await
        .expect("signed fetch accepted");
    assert_eq!(blob.size_bytes, whatsapp_note().len() as u64);
    // Unsigned (another kind of channel, or no directory): refused by
    // this server, and said so.
    for unsigned in [
        fetcher.fetch_from("ws-1", "ch-other", &attachment).await,
        fetcher.fetch("ws-1", &attachment).await,
    ] {
        match unsigned {
            Err(FetchError::Permanent(reason)) => assert!(reason.contains("401"), "{reason}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    w.token.cancel();
}
