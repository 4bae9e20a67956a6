//! Voice notes on custom channels: the channel lists the types its receiver
//! accepts, dispatch asks the (real) media service for that form of the
//! recorded note and sends it; a channel that lists none gets the file as
//! recorded. The receiver checks signatures like a real channel would.
//! Every stored attachment goes out with a signed download link, which the
//! media service honours (the gateway's part is tested with the gateway).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use telenet_bus::memory::MemoryBus;
use telenet_bus::{RetryPolicy, SharedBus};
use telenet_channels::directory::{ChannelCredentials, ChannelDirectory, DirectoryError};
use telenet_dispatch::{Config, DispatchService, GrpcMediaFiles, MIGRATIONS};
use telenet_kit::metrics::Metrics;
use telenet_proto::common::v1::{Attachment, AttachmentKind, ChannelKind};
use telenet_proto::events::v1::{OutboundRequested, event_envelope::Payload};
use telenet_proto::media::v1::media_client::MediaClient;
use telenet_proto::media::v1::upload_request::Part;
use telenet_proto::media::v1::{DownloadGrant, DownloadRequest, UploadHeader, UploadRequest};
use telenet_signing::Secret;
use telenet_store::{Db, events, outbox, testing};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

const PUBLIC_URL: &str = "https://inbox.example";
const LINK_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// A media sample of the repository (tests/fixtures/media, with provenance).
fn fixture(name: &str) -> Vec<u8> {
    let dir = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/media"
    ));
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// A receiver for several channels: verifies the signature, keeps the body.
#[derive(Clone, Default)]
struct Receiver {
    secrets: Arc<Mutex<HashMap<String, Secret>>>,
    posts: Arc<Mutex<HashMap<String, Vec<serde_json::Value>>>>,
}

async fn receive(
    State(r): State<Receiver>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let verified = r.secrets.lock().expect("lock").get(&name).map(|s| {
        s.verify(
            h("webhook-id"),
            h("webhook-timestamp"),
            h("webhook-signature"),
            &body,
            telenet_signing::unix_now(),
        )
    });
    if !matches!(verified, Some(Ok(_))) {
        return (StatusCode::UNAUTHORIZED, "bad signature".into());
    }
    let Ok(json) = serde_json::from_slice(&body) else {
        return (StatusCode::BAD_REQUEST, "not json".into());
    };
    r.posts
        .lock()
        .expect("lock")
        .entry(name)
        .or_default()
        .push(json);
    (StatusCode::OK, r#"{"external_id":"x-1"}"#.into())
}

#[derive(Default)]
struct Directory(Mutex<HashMap<String, ChannelCredentials>>);

#[async_trait]
impl ChannelDirectory for Directory {
    async fn credentials(
        &self,
        _: &str,
        channel: &str,
    ) -> Result<ChannelCredentials, DirectoryError> {
        self.0
            .lock()
            .expect("lock")
            .get(channel)
            .cloned()
            .ok_or(DirectoryError::NotFound)
    }
}

struct Harness {
    bus: SharedBus,
    media: MediaClient<tonic::transport::Channel>,
    receiver: Receiver,
    base: String,
    directory: Arc<Directory>,
    token: CancellationToken,
    _tmp: tempfile::TempDir,
}

impl Harness {
    /// Everything running; attempts wait up to `variant_wait` for a variant.
    async fn start(variant_wait: Duration) -> Self {
        Self::start_with(variant_wait, true).await
    }

    /// As `start`, with or without download links set up in media.
    async fn start_with(variant_wait: Duration, links: bool) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let token = CancellationToken::new();

        // The media service, for real, on SQLite.
        let media_db = Db::connect(&testing::sqlite_in(tmp.path(), "media"), "media")
            .await
            .expect("media db");
        media_db
            .migrate(&telenet_media::MIGRATIONS)
            .await
            .expect("migrate media");
        let media = telenet_media::MediaService::new(
            media_db,
            telenet_media::Config {
                blob_dir: tmp.path().join("blobs"),
                download_urls: if links {
                    telenet_media::links::DownloadUrlConfig {
                        base_url: PUBLIC_URL.into(),
                        key: LINK_KEY.into(),
                        previous_keys: vec![],
                    }
                } else {
                    Default::default()
                },
                ..telenet_media::Config::default()
            },
        )
        .await
        .expect("media");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let grpc = media.grpc();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(grpc)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
                .expect("media serves");
        });
        let media_client = MediaClient::connect(format!("http://{addr}"))
            .await
            .expect("media client");

        // The receiver.
        let receiver = Receiver::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let app = axum::Router::new()
            .route("/in/{name}", axum::routing::post(receive))
            .with_state(receiver.clone());
        let shutdown = token.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
                .expect("receiver serves");
        });

        // Dispatch with the media service.
        let db = Db::connect(&testing::sqlite_in(tmp.path(), "dispatch"), "dispatch")
            .await
            .expect("dispatch db");
        db.migrate(&MIGRATIONS).await.expect("migrate dispatch");
        let bus: SharedBus = Arc::new(MemoryBus::new(RetryPolicy {
            delays: vec![Duration::from_millis(50); 20],
        }));
        let directory = Arc::new(Directory::default());
        let config = Config {
            voice_variant_wait: variant_wait,
            // The receiver runs on this machine.
            private_receivers: vec!["127.0.0.1".into()],
            ..Config::default()
        };
        // Dispatch's client of media goes through the client stack, as in
        // the process.
        let to_media = telenet_kit::grpc::client(
            &format!("http://{addr}"),
            &Default::default(),
            &Metrics::new(),
            "dispatch",
        )
        .expect("media channel");
        let svc = DispatchService::new(db.clone(), bus.clone(), directory.clone(), config)
            .expect("dispatch")
            .with_media(Arc::new(GrpcMediaFiles::new(to_media)));
        let requests = svc.subscribe().await.expect("subscribe");
        tokio::spawn(outbox::Relay::new(db, bus.clone()).run(token.clone()));
        tokio::spawn(svc.consume(requests, token.clone()));
        Harness {
            bus,
            media: media_client,
            receiver,
            base,
            directory,
            token,
            _tmp: tmp,
        }
    }

    fn channel(&self, name: &str, accepted: &[&str]) {
        let secret = Secret::generate().expect("secret");
        self.directory.0.lock().expect("lock").insert(
            name.into(),
            ChannelCredentials {
                kind: ChannelKind::Custom,
                outbound_url: format!("{}/in/{name}", self.base),
                secret: secret.expose(),
                accepted_voice_types: accepted.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
        );
        self.receiver
            .secrets
            .lock()
            .expect("lock")
            .insert(name.into(), secret);
    }

    async fn upload(&self, ws: &str, mime: &str, bytes: &[u8]) -> String {
        let messages = vec![
            UploadRequest {
                part: Some(Part::Header(UploadHeader {
                    workspace_id: ws.into(),
                    mime_type: mime.into(),
                    size_bytes: bytes.len() as u64,
                })),
            },
            UploadRequest {
                part: Some(Part::Chunk(bytes.to_vec())),
            },
        ];
        self.media
            .clone()
            .upload(tokio_stream::iter(messages))
            .await
            .expect("upload")
            .into_inner()
            .id
    }

    async fn send_voice(
        &self,
        ws: &str,
        message_id: &str,
        channel: &str,
        blob_id: &str,
        mime: &str,
        size: u64,
    ) {
        let env = events::envelope(
            ws,
            Payload::OutboundRequested(OutboundRequested {
                message_id: message_id.into(),
                conversation_id: "conv-1".into(),
                channel_id: channel.into(),
                recipient_external_id: "+4915550001".into(),
                text: String::new(),
                attachments: vec![Attachment {
                    kind: AttachmentKind::Voice as i32,
                    mime_type: mime.into(),
                    size_bytes: size,
                    blob_id: blob_id.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            None,
        );
        self.bus
            .publish(&[events::to_bus(&env)])
            .await
            .expect("publish");
    }

    /// The first post the channel received, within 30 s.
    async fn post(&self, channel: &str) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(post) = self
                .receiver
                .posts
                .lock()
                .expect("lock")
                .get(channel)
                .and_then(|p| p.first().cloned())
            {
                return post;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{channel} got nothing"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn download(&self, ws: &str, blob_id: &str) -> Vec<u8> {
        let mut stream = self
            .media
            .clone()
            .download(DownloadRequest {
                workspace_id: ws.into(),
                blob_id: blob_id.into(),
                offset: 0,
                length: 0,
                grant: None,
            })
            .await
            .expect("download")
            .into_inner();
        let mut out = Vec::new();
        while let Some(m) = stream.next().await {
            out.extend(m.expect("chunk").chunk);
        }
        out
    }

    /// What a link gives: the media service's answer to the download the
    /// gateway makes of it (`/v1/downloads/{ws}/{blob}/{name}?expires&signature`).
    async fn fetch_link(&self, url: &str) -> Result<Vec<u8>, tonic::Status> {
        let url = reqwest::Url::parse(url).expect("a URL");
        let segments: Vec<String> = url
            .path_segments()
            .expect("a path")
            .map(|s| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8()
                    .expect("utf-8")
                    .into_owned()
            })
            .collect();
        let [v1, downloads, ws, blob, name] = &segments[..] else {
            panic!("unexpected link path {segments:?}");
        };
        assert_eq!((v1.as_str(), downloads.as_str()), ("v1", "downloads"));
        let query: HashMap<String, String> = url.query_pairs().into_owned().collect();
        let mut stream = self
            .media
            .clone()
            .download(DownloadRequest {
                workspace_id: ws.clone(),
                blob_id: blob.clone(),
                offset: 0,
                length: 0,
                grant: Some(DownloadGrant {
                    file_name: name.clone(),
                    expires_at: query["expires"].parse().expect("expires"),
                    signature: query["signature"].clone(),
                }),
            })
            .await?
            .into_inner();
        let mut out = Vec::new();
        while let Some(m) = stream.next().await {
            out.extend(m?.chunk);
        }
        Ok(out)
    }
}

/// The attachment's link is on the public address, for its blob, in its
/// workspace, and expires in about `dispatch.download_link_ttl` (24 h).
fn assert_linked(a: &serde_json::Value, ws: &str) {
    let url = a["url"].as_str().unwrap_or_default();
    let blob = a["blob_id"].as_str().expect("blob_id");
    let prefix = format!("{PUBLIC_URL}/v1/downloads/{ws}/{blob}/");
    assert!(url.starts_with(&prefix), "{url} is not under {prefix}");
    let url = reqwest::Url::parse(url).expect("a URL");
    let expires: i64 = url
        .query_pairs()
        .find(|(k, _)| k == "expires")
        .and_then(|(_, v)| v.parse().ok())
        .expect("expires");
    let left = expires - telenet_signing::unix_now();
    assert!((86_000..=86_400).contains(&left), "expires in {left} s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voice_notes_go_out_in_the_form_each_channel_accepts() {
    let h = Harness::start(Duration::from_secs(10)).await;
    let webm = fixture("derived_webm_opus_live_no_duration.webm");
    let mime = "audio/webm; codecs=opus";
    let blob = h.upload("ws1", mime, &webm).await;

    // Ogg/Opus (a WhatsApp-like receiver): the media service's variant.
    h.channel("ogg", &["audio/ogg; codecs=opus", "audio/mpeg"]);
    h.send_voice("ws1", "m-ogg", "ogg", &blob, mime, webm.len() as u64)
        .await;
    let post = h.post("ogg").await;
    let a = &post["message"]["attachments"][0];
    assert_eq!(a["kind"], "voice", "{post}");
    assert_eq!(a["mime_type"], "audio/ogg; codecs=opus");
    let part = a["blob_id"].as_str().expect("blob_id");
    assert_ne!(part, blob, "a variant, not the recording");
    assert_linked(a, "ws1");
    assert!(
        a["url"].as_str().is_some_and(|u| u.contains(".ogg?")),
        "a part's link is named with its own extension: {a}"
    );
    assert!(
        a["duration_ms"]
            .as_u64()
            .is_some_and(|d| d.abs_diff(3452) <= 30),
        "{a}"
    );
    let bytes = h
        .fetch_link(a["url"].as_str().expect("url"))
        .await
        .expect("the link works");
    assert_eq!(bytes, h.download("ws1", part).await);
    assert_eq!(a["size_bytes"].as_u64(), Some(bytes.len() as u64));
    assert!(bytes.starts_with(b"OggS"), "the receiver gets Ogg");

    // M4A (an Instagram-like receiver).
    h.channel("m4a", &["audio/mp4"]);
    h.send_voice("ws1", "m-m4a", "m4a", &blob, mime, webm.len() as u64)
        .await;
    let post = h.post("m4a").await;
    let a = &post["message"]["attachments"][0];
    assert_eq!(
        (a["kind"].as_str(), a["mime_type"].as_str()),
        (Some("voice"), Some("audio/mp4"))
    );
    let bytes = h
        .download("ws1", a["blob_id"].as_str().expect("blob_id"))
        .await;
    assert_eq!(bytes.get(4..8), Some(&b"ftyp"[..]), "the receiver gets MP4");

    // A receiver that takes WebM gets the recording itself.
    h.channel("webm", &["audio/webm"]);
    h.send_voice("ws1", "m-webm", "webm", &blob, mime, webm.len() as u64)
        .await;
    let a = &h.post("webm").await["message"]["attachments"][0];
    assert_eq!(a["kind"], "voice");
    assert_eq!(a["blob_id"], blob.as_str());
    assert_linked(a, "ws1");

    // One that lists nothing gets the file as recorded.
    h.channel("plain", &[]);
    h.send_voice("ws1", "m-plain", "plain", &blob, mime, webm.len() as u64)
        .await;
    let a = &h.post("plain").await["message"]["attachments"][0];
    assert_eq!(a["kind"], "file");
    assert_eq!(a["mime_type"], mime);
    assert_eq!(a["blob_id"], blob.as_str());
    assert_eq!(a["size_bytes"].as_u64(), Some(webm.len() as u64));
    assert_linked(a, "ws1");

    // A recording the media service cannot read goes as a file too.
    let junk = h
        .upload("ws1", "audio/webm", b"\x1a\x45\xdf\xa3 not really webm")
        .await;
    h.channel("junk", &["audio/ogg"]);
    h.send_voice("ws1", "m-junk", "junk", &junk, "audio/webm", 27)
        .await;
    let a = &h.post("junk").await["message"]["attachments"][0];
    assert_eq!(a["kind"], "file");
    assert_eq!(a["blob_id"], junk.as_str());
    h.token.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_variant_still_being_made_is_waited_for_through_retries() {
    // Attempts do not wait at all: the first finds the variant pending and
    // goes back to the bus; a later one finds it made and sends it.
    let h = Harness::start(Duration::ZERO).await;
    let ogg = fixture("source_ogg_opus_ptb.ogg");
    let blob = h.upload("ws1", "audio/ogg", &ogg).await;
    h.channel("mp3", &["audio/mpeg"]);
    h.send_voice("ws1", "m-mp3", "mp3", &blob, "audio/ogg", ogg.len() as u64)
        .await;
    let a = &h.post("mp3").await["message"]["attachments"][0];
    assert_eq!(
        (a["kind"].as_str(), a["mime_type"].as_str()),
        (Some("voice"), Some("audio/mpeg"))
    );
    assert_ne!(
        a["blob_id"],
        blob.as_str(),
        "the MP3 variant, not the recording"
    );
    h.token.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stored_attachment_is_linked_and_links_are_bound_to_their_file() {
    let h = Harness::start(Duration::from_secs(10)).await;
    let png = png_pixel();
    let blob = h.upload("ws1", "image/png", &png).await;
    h.channel("pics", &[]);
    let env = events::envelope(
        "ws1",
        Payload::OutboundRequested(OutboundRequested {
            message_id: "m-pic".into(),
            conversation_id: "conv-1".into(),
            channel_id: "pics".into(),
            recipient_external_id: "+4915550001".into(),
            text: "see attached".into(),
            attachments: vec![
                Attachment {
                    kind: AttachmentKind::Image as i32,
                    mime_type: "image/png".into(),
                    size_bytes: png.len() as u64,
                    blob_id: blob.clone(),
                    file_name: "floor plan.png".into(),
                    ..Default::default()
                },
                // Not stored with us: passed on untouched.
                Attachment {
                    kind: AttachmentKind::File as i32,
                    url: "https://elsewhere.example/doc.pdf".into(),
                    mime_type: "application/pdf".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }),
        None,
    );
    h.bus
        .publish(&[events::to_bus(&env)])
        .await
        .expect("publish");
    let post = h.post("pics").await;
    let a = &post["message"]["attachments"][0];
    assert_linked(a, "ws1");
    let url = a["url"].as_str().expect("url");
    assert!(
        url.contains("/floor%20plan.png?"),
        "named by the file: {url}"
    );
    assert_eq!(h.fetch_link(url).await.expect("the link works"), png);
    assert_eq!(
        post["message"]["attachments"][1]["url"],
        "https://elsewhere.example/doc.pdf"
    );

    // A link is bound to its workspace, file, name and expiry.
    let tampered = [
        url.replace("/ws1/", "/ws2/"),
        url.replace("floor%20plan.png", "other.png"),
        url.replacen("expires=", "expires=9", 1),
    ];
    for bad in tampered {
        let status = h.fetch_link(&bad).await.expect_err(&bad);
        assert_eq!(
            status.code(),
            tonic::Code::PermissionDenied,
            "{bad}: {status:?}"
        );
    }
    h.token.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_download_links_set_up_attachments_go_out_unlinked() {
    let h = Harness::start_with(Duration::from_secs(10), false).await;
    let webm = fixture("derived_webm_opus_live_no_duration.webm");
    let mime = "audio/webm; codecs=opus";
    let blob = h.upload("ws1", mime, &webm).await;
    h.channel("webm", &["audio/webm"]);
    h.send_voice("ws1", "m-webm", "webm", &blob, mime, webm.len() as u64)
        .await;
    let a = &h.post("webm").await["message"]["attachments"][0];
    assert_eq!(a["blob_id"], blob.as_str());
    assert!(
        a.get("url").is_none_or(|u| u.as_str() == Some("")),
        "no link without a key: {a}"
    );
    h.token.cancel();
}

/// A 1×1 PNG.
fn png_pixel() -> Vec<u8> {
    const PIXEL: &[u8] = &[
        0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44,
        0x52, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f,
        0x15, 0xc4, 0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8,
        0xcf, 0xc0, 0xf0, 0x1f, 0x00, 0x05, 0x00, 0x01, 0xff, 0x89, 0x99, 0x3d, 0x1d, 0x00, 0x00,
        0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
    ];
    PIXEL.to_vec()
}
