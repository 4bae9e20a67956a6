//! `Probe`, `GetBlobMetadata` and `ListProfiles` over gRPC: a real tonic server on
//! 127.0.0.1:0, files uploaded through `Upload`, the database on SQLite and
//! on PostgreSQL.

// The audio crate's generated test inputs, shared rather than copied.
#[path = "../../../crates/audio/tests/probe_support/mod.rs"]
mod probe_support;

use probe_support::wav_pcm16;
use telenet_media::{Config, MIGRATIONS, MediaService};
use telenet_proto::common::v1::ChannelKind;
use telenet_proto::media::v1::media_client::MediaClient;
use telenet_proto::media::v1::upload_request::Part;
use telenet_proto::media::v1::{
    DurationSource, GetBlobMetadataRequest, ListProfilesRequest, ProbeRequest, ProfileOutput,
    UploadHeader, UploadRequest, VoiceDelivery,
};
use telenet_store::{Db, testing};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::Code;
use tonic::transport::Channel;

struct Harness {
    client: MediaClient<Channel>,
    server: tokio::task::JoinHandle<()>,
    _tmp: tempfile::TempDir,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn start(postgres: bool) -> Harness {
    let tmp = tempfile::tempdir().expect("tempdir");
    let url = if postgres {
        testing::fresh_postgres().await
    } else {
        testing::sqlite_in(tmp.path(), "media")
    };
    let db = Db::connect(&url, "media").await.expect("connect");
    db.migrate(&MIGRATIONS).await.expect("migrate");
    let config = Config {
        blob_dir: tmp.path().join("blobs"),
        ..Config::default()
    };
    let service = MediaService::new(db, config).await.expect("service");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service.grpc())
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .expect("server");
    });
    let client = MediaClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    Harness {
        client,
        server,
        _tmp: tmp,
    }
}

impl Harness {
    async fn upload(&self, ws: &str, mime: &str, data: &[u8]) -> String {
        let mut messages = vec![UploadRequest {
            part: Some(Part::Header(UploadHeader {
                workspace_id: ws.into(),
                mime_type: mime.into(),
                size_bytes: data.len() as u64,
            })),
        }];
        messages.extend(data.chunks(64 * 1024).map(|c| UploadRequest {
            part: Some(Part::Chunk(c.to_vec())),
        }));
        self.client
            .clone()
            .upload(tokio_stream::iter(messages))
            .await
            .expect("upload")
            .into_inner()
            .id
    }

    async fn probe(
        &self,
        ws: &str,
        blob_id: &str,
        peaks: u32,
    ) -> Result<telenet_proto::media::v1::ProbeResult, tonic::Status> {
        self.client
            .clone()
            .probe(ProbeRequest {
                workspace_id: ws.into(),
                blob_id: blob_id.into(),
                waveform_peaks: peaks,
            })
            .await
            .map(|r| r.into_inner())
    }
}

/// The browser-style recording of the repository's fixtures (no Duration
/// element).
fn live_webm() -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/media/derived_webm_opus_live_no_duration.webm"
    );
    std::fs::read(path).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

#[tokio::test]
async fn probe_rpc_reports_the_stream_and_its_waveform() {
    for postgres in [false, true] {
        let h = start(postgres).await;
        let webm = live_webm();
        let id = h.upload("ws-1", "audio/webm", &webm).await;
        let r = h.probe("ws-1", &id, 32).await.expect("probe");
        assert_eq!(r.blob_id, id);
        assert_eq!(r.container, "webm");
        assert_eq!(r.mime_type, "audio/webm; codecs=opus");
        assert_eq!(r.duration_source, DurationSource::Demuxed as i32);
        assert!(r.duration_ms > 0);
        assert!(r.bit_rate_bps > 0);
        assert_eq!(r.audio.len(), 1);
        let a = &r.audio[0];
        assert_eq!(
            (a.codec.as_str(), a.sample_rate_hz, a.channels),
            ("opus", 48_000, 1)
        );
        assert_eq!(a.duration_ms, r.duration_ms);
        let w = r.waveform.expect("a waveform");
        assert_eq!(w.peaks.len(), 32);
        assert!(w.peaks.iter().all(|&p| p <= 255));
        assert_eq!(w.slice_ms, r.duration_ms.div_ceil(32));
        assert!(r.probed_at.is_some());
        // 0 peaks: no waveform.
        let r = h.probe("ws-1", &id, 0).await.expect("probe");
        assert!(r.waveform.is_none());
    }
}

#[tokio::test]
async fn metadata_describes_a_file_its_probe_and_its_variants() {
    for postgres in [false, true] {
        let h = start(postgres).await;
        let webm = live_webm();
        // Declared loosely: the detected type is what the bytes are.
        let id = h.upload("ws-1", "audio/webm", &webm).await;
        let metadata = |ws: &str, id: &str| {
            let mut client = h.client.clone();
            let request = GetBlobMetadataRequest {
                workspace_id: ws.into(),
                blob_id: id.into(),
            };
            async move {
                client
                    .get_blob_metadata(request)
                    .await
                    .map(|r| r.into_inner())
            }
        };
        let m = metadata("ws-1", &id).await.expect("metadata");
        let blob = m.blob.expect("blob");
        assert_eq!(
            (blob.id.as_str(), blob.size_bytes),
            (id.as_str(), webm.len() as u64)
        );
        assert_eq!(m.detected_mime_type, "audio/webm; codecs=opus");
        assert_eq!(
            m.kind,
            telenet_proto::common::v1::AttachmentKind::Audio as i32
        );
        assert!(m.created_at.is_some());
        let probe = m.probe.expect("probed on first ask");
        assert_eq!(probe.waveform.map(|w| w.peaks.len()), Some(64));
        assert!(m.variants.is_empty());
        // The same answer as Probe's (kept, not recomputed).
        let again = h.probe("ws-1", &id, 64).await.expect("probe");
        assert_eq!(again.probed_at, probe.probed_at);

        // Not audio: described without a probe.
        let pdf = h
            .upload("ws-1", "application/pdf", b"%PDF-1.7 not much")
            .await;
        let m = metadata("ws-1", &pdf).await.expect("metadata");
        assert!(m.probe.is_none() && m.detected_mime_type.is_empty());
        assert_eq!(
            m.kind,
            telenet_proto::common::v1::AttachmentKind::File as i32
        );
        // Declared audio but unreadable: still described.
        let junk = h
            .upload("ws-1", "audio/ogg", b"OggS and nothing else")
            .await;
        let m = metadata("ws-1", &junk).await.expect("metadata of junk");
        assert!(m.probe.is_none());
        // Another workspace's file does not exist for it.
        let err = metadata("ws-2", &id).await.expect_err("other workspace");
        assert_eq!(err.code(), Code::NotFound);
    }
}

#[tokio::test]
async fn probe_rpc_errors_carry_their_codes() {
    let h = start(false).await;
    let png = h
        .upload("ws-1", "audio/ogg", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR")
        .await;
    let e = h.probe("ws-1", &png, 64).await.expect_err("png");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(e.message(), "a PNG image, not audio");

    let long = h
        .upload(
            "ws-1",
            "audio/wav",
            &wav_pcm16(8_000, 1, &vec![0; 8_000 * 302]),
        )
        .await;
    let e = h.probe("ws-1", &long, 64).await.expect_err("too long");
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("302.000 s long"), "{}", e.message());

    let webm = live_webm();
    let cut = h
        .upload("ws-1", "audio/webm", &webm[..webm.len() - 7])
        .await;
    let e = h.probe("ws-1", &cut, 64).await.expect_err("truncated");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().starts_with("truncated webm file"),
        "{}",
        e.message()
    );

    // Another workspace's blob, a malformed id, an out-of-range peak count.
    let ok = h.upload("ws-1", "audio/webm", &webm).await;
    let e = h.probe("ws-2", &ok, 64).await.expect_err("other workspace");
    assert_eq!(e.code(), Code::NotFound);
    let e = h.probe("ws-1", "nope", 64).await.expect_err("bad id");
    assert_eq!(e.code(), Code::InvalidArgument);
    for peaks in [1, 15, 1001] {
        let e = h.probe("ws-1", &ok, peaks).await.expect_err("peaks");
        assert_eq!(e.code(), Code::InvalidArgument, "{peaks}");
    }
}

#[tokio::test]
async fn list_profiles_gives_profiles_and_policies() {
    let h = start(false).await;
    let all = h
        .client
        .clone()
        .list_profiles(ListProfilesRequest::default())
        .await
        .expect("list")
        .into_inner();
    let voice = all
        .profiles
        .iter()
        .find(|p| p.name == "voice-ogg-opus")
        .expect("voice-ogg-opus");
    assert_eq!(voice.output, ProfileOutput::Voice as i32);
    assert_eq!(voice.mime_type, "audio/ogg; codecs=opus");
    assert_eq!(voice.target_max_bytes, 512_000);
    assert!(
        voice
            .remux_from
            .iter()
            .any(|m| m == "audio/webm; codecs=opus")
    );
    assert_eq!(all.policies.len(), 12, "every channel kind");

    let wechat = h
        .client
        .clone()
        .list_profiles(ListProfilesRequest {
            channel_kind: ChannelKind::Wechat as i32,
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(wechat.policies.len(), 1);
    let p = &wechat.policies[0];
    assert_eq!(p.voice_delivery, VoiceDelivery::VoiceNote as i32);
    assert_eq!(p.voice_profiles, ["voice-amr", "voice-mp3-parts"]);
    let amr = wechat
        .profiles
        .iter()
        .find(|p| p.name == "voice-amr")
        .expect("voice-amr");
    assert_eq!(amr.max_part_duration_ms, 60_000);

    let e = h
        .client
        .clone()
        .list_profiles(ListProfilesRequest { channel_kind: 99 })
        .await
        .expect_err("unknown kind");
    assert_eq!(e.code(), Code::InvalidArgument);
}
