//! Variants through the gRPC API: Transcode / GetVariant / ListVariants on a
//! real tonic server, the database on SQLite and on PostgreSQL. Cached by
//! (content hash, profile), computed once however many ask at once (in one
//! process and across two replicas sharing the database and the store), run
//! on a bounded pool, visible only to workspaces that can see the source,
//! and announced (`media.variant_ready` / `media.variant_failed`) through
//! the outbox when made.

use std::path::PathBuf;
use std::sync::Arc;

use prost::Message;
use telenet_audio::probe::{self, ProbeOptions};
use telenet_media::{Config, LocalDirStore, MIGRATIONS, MediaService, TranscodeConfig};
use telenet_proto::events::v1::{EventEnvelope, event_envelope::Payload};
use telenet_proto::media::v1::media_client::MediaClient;
use telenet_proto::media::v1::upload_request::Part;
use telenet_proto::media::v1::{
    DownloadRequest, GetVariantRequest, ListVariantsRequest, TranscodeRequest, UploadHeader,
    UploadRequest, Variant, VariantState,
};
use telenet_store::Db;
use telenet_store::sqlx::{self, Row};
use telenet_store::testing::Backend;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::Code;
use tonic::transport::Channel;

/// A media fixture of the repository (`tests/fixtures/media`).
fn fixture(name: &str) -> Vec<u8> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/media");
    std::fs::read(PathBuf::from(dir).join(name))
        .unwrap_or_else(|e| panic!("fixture {dir}/{name}: {e}"))
}

struct Server {
    client: MediaClient<Channel>,
    service: MediaService,
    metrics: telenet_kit::metrics::Metrics,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Harness {
    db_url: String,
    blob_dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Harness {
    async fn new(backend: Backend) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let db_url = backend.url(tmp.path(), "media").await;
        let db = Db::connect(&db_url, "media").await.expect("connect");
        db.migrate(&MIGRATIONS).await.expect("migrate");
        Harness {
            db_url,
            blob_dir: tmp.path().join("blobs"),
            _tmp: tmp,
        }
    }

    /// A replica of the service: its own process state (pool, single
    /// flight), the shared database and blob directory.
    async fn server(&self, workers: usize) -> Server {
        let db = Db::connect(&self.db_url, "media").await.expect("connect");
        let config = Config {
            blob_dir: self.blob_dir.clone(),
            transcode: TranscodeConfig {
                workers,
                ..TranscodeConfig::default()
            },
            ..Config::default()
        };
        let store = LocalDirStore::new(&self.blob_dir).await.expect("store");
        let metrics = telenet_kit::metrics::Metrics::new();
        let service = MediaService::with_store(db, config, Arc::new(store))
            .expect("service")
            .with_metrics(metrics.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let grpc = service.grpc();
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(grpc)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
                .expect("server");
        });
        let client = MediaClient::connect(format!("http://{addr}"))
            .await
            .expect("client");
        Server {
            client,
            service,
            metrics,
            task,
        }
    }
}

async fn upload(
    client: &mut MediaClient<Channel>,
    workspace: &str,
    mime: &str,
    bytes: &[u8],
) -> String {
    let mut messages = vec![UploadRequest {
        part: Some(Part::Header(UploadHeader {
            workspace_id: workspace.into(),
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

async fn download(
    client: &mut MediaClient<Channel>,
    workspace: &str,
    blob_id: &str,
) -> Result<Vec<u8>, tonic::Status> {
    let mut stream = client
        .download(DownloadRequest {
            workspace_id: workspace.into(),
            blob_id: blob_id.into(),
            offset: 0,
            length: 0,
            grant: None,
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(message) = stream.next().await {
        out.extend(message?.chunk);
    }
    Ok(out)
}

fn transcode_req(workspace: &str, blob_id: &str, profile: &str, wait_ms: u32) -> TranscodeRequest {
    TranscodeRequest {
        workspace_id: workspace.into(),
        blob_id: blob_id.into(),
        profile: profile.into(),
        wait_ms,
    }
}

fn state(v: &Variant) -> VariantState {
    VariantState::try_from(v.state).unwrap_or(VariantState::Unspecified)
}

impl Harness {
    /// The events waiting in the outbox (no relay runs here), oldest first.
    async fn outbox(&self) -> Vec<(String, EventEnvelope)> {
        let db = Db::connect(&self.db_url, "media").await.expect("connect");
        sqlx::query("SELECT routing_key, payload FROM outbox ORDER BY created_at, event_id")
            .fetch_all(db.pool())
            .await
            .expect("outbox")
            .iter()
            .map(|r| {
                let key: String = r.try_get("routing_key").expect("routing_key");
                let payload: Vec<u8> = r.try_get("payload").expect("payload");
                (
                    key,
                    EventEnvelope::decode(&payload[..]).expect("an envelope"),
                )
            })
            .collect()
    }
}

async fn transcode_download_and_cache(backend: Backend) {
    let h = Harness::new(backend).await;
    let mut s = h.server(2).await;
    let ogg = fixture("source_ogg_opus_ptb.ogg");
    let blob = upload(&mut s.client, "ws-a", "audio/ogg", &ogg).await;

    // Not asked for yet.
    let err = s
        .client
        .get_variant(GetVariantRequest {
            workspace_id: "ws-a".into(),
            blob_id: blob.clone(),
            profile: "audio-m4a-aac".into(),
        })
        .await
        .expect_err("never asked for");
    assert_eq!(err.code(), Code::NotFound, "{backend:?}");

    // Asked for with a wait: READY with one M4A part that probes right.
    let v = s
        .client
        .transcode(transcode_req("ws-a", &blob, "audio-m4a-aac", 30_000))
        .await
        .expect("transcode")
        .into_inner();
    assert_eq!(state(&v), VariantState::Ready, "{backend:?}: {v:?}");
    assert!(!v.remuxed);
    assert_eq!(v.parts.len(), 1);
    assert!(v.finished_at.is_some() && v.created_at.is_some());
    let part = &v.parts[0];
    assert_eq!(part.mime_type, "audio/mp4");
    assert!(
        part.duration_ms.abs_diff(3450) <= 60,
        "{}",
        part.duration_ms
    );
    let bytes = download(&mut s.client, "ws-a", &part.blob_id)
        .await
        .expect("download part");
    assert_eq!(bytes.len() as u64, part.size_bytes);
    let p = probe::probe(&bytes, &ProbeOptions::VOICE_NOTE.with_peaks(0)).expect("probe part");
    assert_eq!((p.codec.name(), p.channels), ("aac", 1));

    // Again: the same variant, from the cache.
    let again = s
        .client
        .transcode(transcode_req("ws-a", &blob, "audio-m4a-aac", 0))
        .await
        .expect("again")
        .into_inner();
    assert_eq!(state(&again), VariantState::Ready);
    assert_eq!(again.parts, v.parts);
    assert_eq!(
        s.service.transcodes_started(),
        1,
        "{backend:?}: cached, not encoded again"
    );

    // The remux profile: the Ogg is remuxed, not re-encoded.
    let remux = s
        .client
        .transcode(transcode_req("ws-a", &blob, "voice-ogg-opus", 30_000))
        .await
        .expect("voice")
        .into_inner();
    assert_eq!(state(&remux), VariantState::Ready);
    assert!(remux.remuxed, "a small Opus note is remuxed");

    // Another workspace with the same bytes gets the cached variant, and
    // can read its part; a workspace without the source cannot.
    let blob_b = upload(&mut s.client, "ws-b", "audio/ogg", &ogg).await;
    assert_eq!(blob_b, blob, "content addressed");
    let vb = s
        .client
        .transcode(transcode_req("ws-b", &blob, "audio-m4a-aac", 0))
        .await
        .expect("ws-b")
        .into_inner();
    assert_eq!(state(&vb), VariantState::Ready);
    assert_eq!(vb.workspace_id, "ws-b");
    assert_eq!(vb.parts, v.parts);
    assert_eq!(
        s.service.transcodes_started(),
        2,
        "only the voice variant was new"
    );
    download(&mut s.client, "ws-b", &part.blob_id)
        .await
        .expect("ws-b reads the part");
    for (code, req) in [
        (
            Code::NotFound,
            transcode_req("ws-c", &blob, "audio-m4a-aac", 0),
        ),
        (
            Code::InvalidArgument,
            transcode_req("ws-a", &blob, "opus-telepathy", 0),
        ),
        (
            Code::InvalidArgument,
            transcode_req("ws-a", &blob, "audio-m4a-aac", 60_000),
        ),
        (
            Code::InvalidArgument,
            transcode_req("ws-a", "not-a-hash", "audio-m4a-aac", 0),
        ),
    ] {
        let err = s.client.transcode(req.clone()).await.expect_err("refused");
        assert_eq!(err.code(), code, "{req:?}: {err:?}");
    }
    let err = s
        .client
        .transcode(transcode_req("ws-a", &blob, "opus-telepathy", 0))
        .await
        .expect_err("unknown");
    assert!(
        err.message().contains("voice-ogg-opus"),
        "lists the profiles: {}",
        err.message()
    );
    let err = download(&mut s.client, "ws-c", &part.blob_id)
        .await
        .expect_err("ws-c");
    assert_eq!(err.code(), Code::NotFound);

    let list = s
        .client
        .list_variants(ListVariantsRequest {
            workspace_id: "ws-a".into(),
            blob_id: blob.clone(),
        })
        .await
        .expect("list")
        .into_inner()
        .variants;
    let names: Vec<&str> = list.iter().map(|v| v.profile.as_str()).collect();
    assert_eq!(names, ["audio-m4a-aac", "voice-ogg-opus"]);

    // Measured: one job per variant made, by how it was made; none left.
    let text = s.metrics.encode().expect("metrics");
    for (series, value) in [
        (
            r#"telenet_media_transcodes_total{profile="audio-m4a-aac",outcome="encoded"}"#,
            "1",
        ),
        (
            r#"telenet_media_transcodes_total{profile="voice-ogg-opus",outcome="remuxed"}"#,
            "1",
        ),
        (
            r#"telenet_media_transcode_duration_seconds_count{profile="audio-m4a-aac"}"#,
            "1",
        ),
        (r#"telenet_media_transcode_jobs{state="running"}"#, "0"),
        (r#"telenet_media_transcode_jobs{state="waiting"}"#, "0"),
    ] {
        assert!(
            text.lines().any(|l| l == format!("{series} {value}")),
            "{series} {value}:\n{text}"
        );
    }

    // Each variant made was announced once, to the workspace that asked,
    // with its parts; cache hits announce nothing.
    let events = h.outbox().await;
    let keys: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        ["media.variant_ready", "media.variant_ready"],
        "{backend:?}"
    );
    let (_, first) = &events[0];
    assert_eq!(first.workspace_id, "ws-a");
    let Some(Payload::MediaVariantReady(ready)) = &first.payload else {
        panic!("{first:?}");
    };
    let announced = ready.variant.as_ref().expect("variant");
    assert_eq!(announced.profile, "audio-m4a-aac");
    assert_eq!(announced.parts, v.parts);
    assert_eq!(state(announced), VariantState::Ready);
    assert!(announced.created_at.is_some() && announced.finished_at.is_some());
}

async fn bad_input_fails_once(backend: Backend) {
    let h = Harness::new(backend).await;
    let mut s = h.server(2).await;
    let blob = upload(
        &mut s.client,
        "ws-a",
        "audio/ogg",
        b"OggS but not really an Ogg file",
    )
    .await;
    let v = s
        .client
        .transcode(transcode_req("ws-a", &blob, "audio-mp3", 30_000))
        .await
        .expect("transcode")
        .into_inner();
    assert_eq!(state(&v), VariantState::Failed, "{backend:?}: {v:?}");
    assert!(v.error.to_lowercase().contains("ogg"), "{}", v.error);
    assert!(v.parts.is_empty());
    // A failure of the input is remembered: asking again does not redo it.
    let again = s
        .client
        .transcode(transcode_req("ws-a", &blob, "audio-mp3", 30_000))
        .await
        .expect("again")
        .into_inner();
    assert_eq!(state(&again), VariantState::Failed);
    assert_eq!(again.error, v.error);
    assert_eq!(s.service.transcodes_started(), 1);
    let events = h.outbox().await;
    assert_eq!(events.len(), 1, "{backend:?}: {events:?}");
    let (key, env) = &events[0];
    assert_eq!(
        (key.as_str(), env.workspace_id.as_str()),
        ("media.variant_failed", "ws-a")
    );
    let Some(Payload::MediaVariantFailed(failed)) = &env.payload else {
        panic!("{env:?}");
    };
    let announced = failed.variant.as_ref().expect("variant");
    assert_eq!(
        (announced.profile.as_str(), announced.error.as_str()),
        ("audio-mp3", v.error.as_str())
    );
}

async fn concurrent_requests_encode_once(backend: Backend) {
    let h = Harness::new(backend).await;
    // Two replicas on one database and store.
    let a = h.server(2).await;
    let b = h.server(2).await;
    let webm = fixture("derived_webm_opus_live_no_duration.webm");
    let mut client = a.client.clone();
    let blob = upload(&mut client, "ws-a", "audio/webm", &webm).await;

    let mut tasks = Vec::new();
    for i in 0..8 {
        let mut client = if i % 2 == 0 {
            a.client.clone()
        } else {
            b.client.clone()
        };
        let req = transcode_req("ws-a", &blob, "audio-mp3", 30_000);
        tasks.push(tokio::spawn(async move { client.transcode(req).await }));
    }
    let mut parts = Vec::new();
    for task in tasks {
        let v = task.await.expect("join").expect("transcode").into_inner();
        assert_eq!(state(&v), VariantState::Ready, "{backend:?}: {v:?}");
        parts.push(v.parts);
    }
    assert!(
        parts.windows(2).all(|w| w[0] == w[1]),
        "one variant for all"
    );
    let total = a.service.transcodes_started() + b.service.transcodes_started();
    assert_eq!(total, 1, "{backend:?}: 8 concurrent requests, one encode");
}

async fn pool_is_bounded(backend: Backend) {
    let h = Harness::new(backend).await;
    let s = h.server(2).await;
    let mut client = s.client.clone();
    let ogg = fixture("source_ogg_opus_ptb.ogg");
    let blob = upload(&mut client, "ws-a", "audio/ogg", &ogg).await;
    let profiles = [
        "audio-m4a-aac",
        "audio-mp3",
        "voice-amr",
        "voice-mp3-parts",
        "video-still-mp4",
    ];
    let mut tasks = Vec::new();
    for profile in profiles {
        let mut client = s.client.clone();
        let req = transcode_req("ws-a", &blob, profile, 30_000);
        tasks.push(tokio::spawn(async move { client.transcode(req).await }));
    }
    for task in tasks {
        let v = task.await.expect("join").expect("transcode").into_inner();
        assert_eq!(state(&v), VariantState::Ready, "{v:?}");
    }
    assert_eq!(s.service.transcodes_started(), profiles.len() as u64);
    let peak = s.service.transcodes_peak_running();
    assert!(peak <= 2, "{backend:?}: {peak} ran at once with 2 workers");
    assert_eq!(s.service.transcode_workers(), 2);
}

telenet_store::on_both_backends!(
    transcode_download_and_cache,
    bad_input_fails_once,
    concurrent_requests_encode_once,
    pool_is_bounded,
);
