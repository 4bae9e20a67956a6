//! The Media gRPC API end to end: a real tonic server on 127.0.0.1:0, a real
//! client, a blob directory in a tempdir, and the database on SQLite and on
//! PostgreSQL (every scenario runs on both).

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use telenet_media::{Config, MIGRATIONS, MediaService};
use telenet_proto::media::v1::media_client::MediaClient;
use telenet_proto::media::v1::upload_request::Part;
use telenet_proto::media::v1::{
    Blob, CreateDownloadUrlRequest, DownloadGrant, DownloadRequest, UploadHeader, UploadRequest,
};
use telenet_signing::links::{Link, LinkSigner};
use telenet_store::Db;
use telenet_store::sqlx::{self, Row};
use telenet_store::testing::Backend;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Channel;
use tonic::{Code, Status};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;
/// The repository's media fixtures.
const SAMPLE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/media");

struct Harness {
    client: MediaClient<Channel>,
    db: Db,
    blob_dir: PathBuf,
    server: tokio::task::JoinHandle<()>,
    _tmp: tempfile::TempDir,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn start(backend: Backend, config: impl FnOnce(&mut Config)) -> Harness {
    let tmp = tempfile::tempdir().expect("tempdir");
    let url = backend.url(tmp.path(), "media").await;
    let db = Db::connect(&url, "media").await.expect("connect");
    db.migrate(&MIGRATIONS).await.expect("migrate");
    let blob_dir = tmp.path().join("blobs");
    let mut cfg = Config {
        blob_dir: blob_dir.clone(),
        ..Config::default()
    };
    config(&mut cfg);
    let service = MediaService::new(db.clone(), cfg).await.expect("service");

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
        .expect("connect client");
    Harness {
        client,
        db,
        blob_dir,
        server,
        _tmp: tmp,
    }
}

fn header(ws: &str, mime: &str, size: usize) -> UploadRequest {
    UploadRequest {
        part: Some(Part::Header(UploadHeader {
            workspace_id: ws.into(),
            mime_type: mime.into(),
            size_bytes: size as u64,
        })),
    }
}

fn chunk(bytes: &[u8]) -> UploadRequest {
    UploadRequest {
        part: Some(Part::Chunk(bytes.to_vec())),
    }
}

fn chunked(
    ws: &str,
    mime: &str,
    declared: usize,
    data: &[u8],
    chunk_size: usize,
) -> Vec<UploadRequest> {
    std::iter::once(header(ws, mime, declared))
        .chain(data.chunks(chunk_size).map(chunk))
        .collect()
}

impl Harness {
    async fn send(&self, messages: Vec<UploadRequest>) -> Result<Blob, Status> {
        self.client
            .clone()
            .upload(tokio_stream::iter(messages))
            .await
            .map(|r| r.into_inner())
    }

    async fn upload(&self, ws: &str, mime: &str, data: &[u8]) -> Blob {
        self.send(chunked(ws, mime, data.len(), data, 100_000))
            .await
            .expect("upload")
    }

    /// The blob of the first message and the chunks after it.
    async fn fetch(
        &self,
        ws: &str,
        id: &str,
        offset: u64,
        length: u64,
    ) -> Result<(Blob, Vec<Vec<u8>>), Status> {
        self.fetch_with(DownloadRequest {
            workspace_id: ws.into(),
            blob_id: id.into(),
            offset,
            length,
            grant: None,
        })
        .await
    }

    /// `fetch` of any download request.
    async fn fetch_with(&self, request: DownloadRequest) -> Result<(Blob, Vec<Vec<u8>>), Status> {
        let mut stream = self.client.clone().download(request).await?.into_inner();
        let first = stream.next().await.expect("first message")?;
        assert!(
            first.chunk.is_empty(),
            "the first message carries only the blob"
        );
        let blob = first.blob.expect("blob in the first message");
        let mut chunks = Vec::new();
        while let Some(message) = stream.next().await {
            let message = message?;
            assert!(
                message.blob.is_none(),
                "only the first message carries the blob"
            );
            chunks.push(message.chunk);
        }
        Ok((blob, chunks))
    }

    async fn download(&self, ws: &str, id: &str, offset: u64, length: u64) -> Vec<u8> {
        let (_, chunks) = self.fetch(ws, id, offset, length).await.expect("download");
        chunks.concat()
    }

    async fn rows(&self) -> Vec<(String, String, i64, String)> {
        sqlx::query("SELECT workspace_id, blob_id, size_bytes, mime_type FROM blobs ORDER BY workspace_id, blob_id")
            .fetch_all(self.db.pool())
            .await
            .expect("rows")
            .iter()
            .map(|r| {
                (
                    r.get("workspace_id"),
                    r.get("blob_id"),
                    r.get("size_bytes"),
                    r.get("mime_type"),
                )
            })
            .collect()
    }

    fn stored_files(&self) -> Vec<PathBuf> {
        files_under(&self.blob_dir.join("sha256"))
    }

    fn temporaries(&self) -> Vec<PathBuf> {
        files_under(&self.blob_dir.join("tmp"))
    }

    /// Nothing stored, nothing recorded, nothing half-written.
    async fn assert_empty(&self) {
        assert_eq!(self.rows().await, vec![], "rows recorded");
        assert_eq!(self.stored_files(), Vec::<PathBuf>::new(), "blobs stored");
        assert_eq!(
            self.temporaries(),
            Vec::<PathBuf>::new(),
            "temporaries left"
        );
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect()
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[track_caller]
fn assert_status(result: Result<impl std::fmt::Debug, Status>, code: Code, needle: &str) {
    match result {
        Ok(v) => panic!("expected {code:?}, got {v:?}"),
        Err(s) => {
            assert_eq!(s.code(), code, "status {s:?}");
            assert!(
                s.message().contains(needle),
                "message {:?} lacks {needle:?}",
                s.message()
            );
        }
    }
}

async fn round_trip(backend: Backend) {
    let h = start(backend, |_| {}).await;
    let data = pseudo_random(MIB + 300 * KIB + 7, 1);
    let blob = h.upload("wsA", "application/octet-stream", &data).await;
    assert_eq!(blob.id, sha256_hex(&data));
    assert_eq!(blob.workspace_id, "wsA");
    assert_eq!(blob.size_bytes, data.len() as u64);
    assert_eq!(blob.mime_type, "application/octet-stream");

    let (meta, chunks) = h.fetch("wsA", &blob.id, 0, 0).await.expect("download");
    assert_eq!(meta, blob);
    assert_eq!(chunks.len(), 6, "1.3 MiB in 256 KiB chunks");
    assert!(chunks.iter().all(|c| c.len() <= 256 * KIB));
    assert!(
        chunks[..5].iter().all(|c| c.len() == 256 * KIB),
        "chunks are filled"
    );
    assert_eq!(chunks.concat(), data);

    let on_disk = h
        .blob_dir
        .join("sha256")
        .join(&blob.id[..2])
        .join(&blob.id[2..]);
    assert_eq!(h.stored_files(), vec![on_disk]);
    assert!(h.temporaries().is_empty());
    assert_eq!(
        h.rows().await,
        vec![(
            "wsA".into(),
            blob.id.clone(),
            data.len() as i64,
            "application/octet-stream".into()
        )]
    );

    // A real voice note.
    let sample = Path::new(SAMPLE_DIR).join("source_ogg_opus_ptb.ogg");
    let ogg =
        std::fs::read(&sample).unwrap_or_else(|e| panic!("fixture {}: {e}", sample.display()));
    let blob = h
        .send(chunked(
            "wsA",
            "audio/ogg; codecs=opus",
            ogg.len(),
            &ogg,
            64 * KIB,
        ))
        .await
        .expect("upload sample");
    assert_eq!(blob.id, sha256_hex(&ogg));
    assert_eq!(blob.mime_type, "audio/ogg; codecs=opus");
    assert_eq!(h.download("wsA", &blob.id, 0, 0).await, ogg);
}

async fn identical_content_is_stored_once(backend: Backend) {
    let h = start(backend, |_| {}).await;
    let data = pseudo_random(300 * KIB, 2);
    let first = h.upload("wsA", "audio/ogg", &data).await;
    // Same bytes, other chunking, other declared type: the first record stands.
    let again = h
        .send(chunked("wsA", "video/mp4", 0, &data, 7 * KIB))
        .await
        .expect("upload again");
    assert_eq!(again, first);
    // Another workspace uploading the same bytes gets its own record.
    let theirs = h.upload("wsB", "audio/mpeg", &data).await;
    assert_eq!(theirs.id, first.id);
    assert_eq!(theirs.workspace_id, "wsB");
    assert_eq!(theirs.mime_type, "audio/mpeg");

    assert_eq!(h.stored_files().len(), 1, "bytes stored once");
    assert!(h.temporaries().is_empty());
    let rows = h.rows().await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].0, "wsA");
    assert_eq!(rows[0].3, "audio/ogg");
    assert_eq!(rows[1].0, "wsB");
    assert_eq!(h.download("wsB", &first.id, 0, 0).await, data);
}

async fn ranged_download(backend: Backend) {
    let h = start(backend, |c| c.chunk_size = 100 * KIB).await;
    let data = pseudo_random(MIB, 3);
    let size = data.len() as u64;
    let id = h.upload("wsA", "application/octet-stream", &data).await.id;

    assert_eq!(h.download("wsA", &id, 0, 10).await, &data[..10]);
    // Across several chunk boundaries.
    let (_, chunks) = h.fetch("wsA", &id, 1_000, 300_000).await.expect("download");
    assert_eq!(chunks.concat(), &data[1_000..301_000]);
    assert_eq!(chunks.len(), 3);
    assert!(chunks.iter().all(|c| c.len() <= 100 * KIB));
    // Tail, and a length running past the end.
    assert_eq!(
        h.download("wsA", &id, size - 5, 0).await,
        &data[data.len() - 5..]
    );
    assert_eq!(
        h.download("wsA", &id, size - 5, 1_000).await,
        &data[data.len() - 5..]
    );
    // At the end: the blob and no bytes.
    let (blob, chunks) = h.fetch("wsA", &id, size, 0).await.expect("download");
    assert_eq!(blob.size_bytes, size);
    assert!(chunks.is_empty());
    // Past the end.
    assert_status(
        h.fetch("wsA", &id, size + 1, 0).await,
        Code::OutOfRange,
        "offset",
    );
}

async fn size_limit(backend: Backend) {
    let h = start(backend, |c| c.max_upload_bytes = MIB as u64).await;
    let data = pseudo_random(MIB + 1, 4);

    // Undeclared size: refused once the bytes pass the limit.
    assert_status(
        h.send(chunked(
            "wsA",
            "application/octet-stream",
            0,
            &data,
            100_000,
        ))
        .await,
        Code::ResourceExhausted,
        "max_upload_bytes (1048576 bytes)",
    );
    // Declared too big: refused from the header.
    assert_status(
        h.send(vec![header("wsA", "application/octet-stream", MIB + 1)])
            .await,
        Code::ResourceExhausted,
        "max_upload_bytes",
    );
    // A message bigger than an upload chunk may be is refused by the server.
    let huge = pseudo_random(2 * MIB, 5);
    let result = h
        .send(vec![
            header("wsA", "application/octet-stream", 0),
            chunk(&huge),
        ])
        .await;
    assert_status(result, Code::OutOfRange, "too large");
    h.assert_empty().await;

    // Exactly the limit is fine.
    let blob = h
        .upload("wsA", "application/octet-stream", &data[..MIB])
        .await;
    assert_eq!(blob.size_bytes, MIB as u64);
}

async fn declared_size_must_match(backend: Backend) {
    let h = start(backend, |_| {}).await;
    let data = pseudo_random(1_000, 6);
    assert_status(
        h.send(chunked("wsA", "text/plain", 1_000, &data[..999], 300))
            .await,
        Code::InvalidArgument,
        "size_bytes",
    );
    assert_status(
        h.send(chunked("wsA", "text/plain", 999, &data, 300)).await,
        Code::InvalidArgument,
        "size_bytes",
    );
    h.assert_empty().await;
}

async fn header_comes_first_and_is_checked(backend: Backend) {
    let h = start(backend, |_| {}).await;
    assert_status(
        h.send(vec![chunk(b"no header")]).await,
        Code::InvalidArgument,
        "header",
    );
    assert_status(h.send(vec![]).await, Code::InvalidArgument, "header");
    assert_status(
        h.send(vec![
            header("wsA", "text/plain", 0),
            chunk(b"x"),
            header("wsA", "text/plain", 0),
        ])
        .await,
        Code::InvalidArgument,
        "header",
    );
    assert_status(
        h.send(vec![
            header("wsA", "text/plain", 0),
            UploadRequest { part: None },
        ])
        .await,
        Code::InvalidArgument,
        "neither",
    );
    for bad in [
        "",
        "audio",
        "audio/",
        "../../etc/passwd",
        "audio/ogg\r\nX: y",
    ] {
        assert_status(
            h.send(chunked("wsA", bad, 0, b"data", 4)).await,
            Code::InvalidArgument,
            "mime_type",
        );
    }
    assert_status(
        h.send(chunked(" ", "text/plain", 0, b"data", 4)).await,
        Code::InvalidArgument,
        "workspace_id",
    );
    h.assert_empty().await;
}

async fn other_workspaces_blobs_are_not_found(backend: Backend) {
    let h = start(backend, |_| {}).await;
    let data = pseudo_random(10_000, 7);
    let blob = h.upload("wsA", "image/png", &data).await;
    // The bytes exist, but wsB never uploaded them.
    assert_status(
        h.fetch("wsB", &blob.id, 0, 0).await,
        Code::NotFound,
        "blob not found",
    );
    // Indistinguishable from a blob that exists nowhere.
    let nowhere = sha256_hex(b"never uploaded");
    assert_status(
        h.fetch("wsA", &nowhere, 0, 0).await,
        Code::NotFound,
        "blob not found",
    );
    assert_status(
        h.fetch("", &blob.id, 0, 0).await,
        Code::InvalidArgument,
        "workspace_id",
    );
}

async fn bad_blob_ids_are_invalid(backend: Backend) {
    let h = start(backend, |_| {}).await;
    let blob = h.upload("wsA", "text/plain", b"hello").await;
    for bad in [
        String::new(),
        blob.id.to_uppercase(),
        blob.id[..63].to_owned(),
        format!("{}0", blob.id),
        "../../../../etc/passwd".to_owned(),
        format!("../{}", &blob.id[3..]),
    ] {
        assert_status(
            h.fetch("wsA", &bad, 0, 0).await,
            Code::InvalidArgument,
            "blob_id",
        );
    }
}

async fn damaged_store_is_an_internal_error(backend: Backend) {
    let h = start(backend, |_| {}).await;
    let blob = h.upload("wsA", "text/plain", b"hello, world").await;
    let path = h.stored_files().pop().expect("stored file");
    // Truncated bytes are never served as if they were the blob.
    std::fs::write(&path, b"hello").expect("truncate");
    assert_status(
        h.fetch("wsA", &blob.id, 0, 0).await,
        Code::Internal,
        "internal error",
    );
    // Recorded but gone: our fault, not the client's.
    std::fs::remove_file(&path).expect("remove");
    assert_status(
        h.fetch("wsA", &blob.id, 0, 0).await,
        Code::Internal,
        "internal error",
    );
}

async fn aborted_upload_leaves_nothing(backend: Backend) {
    let h = start(backend, |_| {}).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut client = h.client.clone();
    let call = tokio::spawn(async move {
        client
            .upload(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    tx.send(header("wsA", "application/octet-stream", 0))
        .await
        .expect("send");
    let data = pseudo_random(64 * KIB, 8);
    for _ in 0..4 {
        tx.send(chunk(&data)).await.expect("send");
    }
    // Wait until the server is writing, then abandon the call mid-stream.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while h.temporaries().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "upload never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    call.abort();
    let _ = call.await;
    drop(tx);

    while !h.temporaries().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "temporary left after abort"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    h.assert_empty().await;
}

const LINK_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const OLD_LINK_KEY: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";

fn with_links(cfg: &mut Config) {
    cfg.download_urls.base_url = "https://inbox.example/base".into();
    cfg.download_urls.key = LINK_KEY.into();
    cfg.download_urls.previous_keys = vec![OLD_LINK_KEY.into()];
}

impl Harness {
    async fn link(
        &self,
        ws: &str,
        id: &str,
        ttl_seconds: u32,
        file_name: &str,
    ) -> Result<(String, i64), Status> {
        let reply = self
            .client
            .clone()
            .create_download_url(CreateDownloadUrlRequest {
                workspace_id: ws.into(),
                blob_id: id.into(),
                ttl_seconds,
                file_name: file_name.into(),
            })
            .await?
            .into_inner();
        let expires = reply.expires_at.expect("expires_at").seconds;
        Ok((reply.url, expires))
    }

    /// Download with a grant, as the gateway does for a link.
    async fn fetch_granted(
        &self,
        ws: &str,
        id: &str,
        grant: DownloadGrant,
    ) -> Result<Vec<u8>, Status> {
        let request = DownloadRequest {
            workspace_id: ws.into(),
            blob_id: id.into(),
            offset: 0,
            length: 0,
            grant: Some(grant),
        };
        Ok(self.fetch_with(request).await?.1.concat())
    }
}

/// The grant a link's URL carries.
fn grant_of(url: &str) -> DownloadGrant {
    let url = url::Url::parse(url).expect("a URL");
    let name = url
        .path_segments()
        .and_then(|mut s| s.next_back())
        .expect("name");
    let query = |key: &str| {
        url.query_pairs()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    DownloadGrant {
        file_name: percent_encoding::percent_decode_str(name)
            .decode_utf8()
            .expect("utf-8")
            .into_owned(),
        expires_at: query("expires").parse().expect("expires"),
        signature: query("signature"),
    }
}

async fn download_links(backend: Backend) {
    let h = start(backend, with_links).await;
    let data = pseudo_random(5_000, 11);
    let blob = h.upload("wsA", "audio/ogg; codecs=opus", &data).await;

    // Default: an hour, named by the id and the type's extension.
    let now = telenet_signing::unix_now();
    let (url, expires) = h.link("wsA", &blob.id, 0, "").await.expect("link");
    assert!((now + 3_599..=now + 3_601).contains(&expires), "{expires}");
    let name = format!("{}.ogg", &blob.id[..16]);
    assert!(
        url.starts_with(&format!(
            "https://inbox.example/base/v1/downloads/wsA/{}/{name}?expires={expires}&signature=",
            blob.id
        )),
        "{url}"
    );
    assert_eq!(
        h.fetch_granted("wsA", &blob.id, grant_of(&url))
            .await
            .expect("granted"),
        data
    );

    // A chosen lifetime and name (percent-encoded in the URL).
    let (url, expires) = h
        .link("wsA", &blob.id, 60, "Sprachnachricht vom 3.ogg")
        .await
        .expect("link");
    assert!((now + 59..=now + 61).contains(&expires));
    assert!(url.contains("/Sprachnachricht%20vom%203.ogg?"), "{url}");
    let grant = grant_of(&url);
    assert_eq!(grant.file_name, "Sprachnachricht vom 3.ogg");
    assert_eq!(
        h.fetch_granted("wsA", &blob.id, grant.clone())
            .await
            .expect("granted"),
        data
    );

    // The grant is bound to its workspace, file, name and expiry.
    let other = h.upload("wsA", "text/plain", b"another file").await;
    let denied = [
        ("wsB", blob.id.as_str(), grant.clone()),
        ("wsA", other.id.as_str(), grant.clone()),
        (
            "wsA",
            blob.id.as_str(),
            DownloadGrant {
                file_name: "x.ogg".into(),
                ..grant.clone()
            },
        ),
        (
            "wsA",
            blob.id.as_str(),
            DownloadGrant {
                expires_at: grant.expires_at + 86_400,
                ..grant.clone()
            },
        ),
        (
            "wsA",
            blob.id.as_str(),
            DownloadGrant {
                signature: String::new(),
                ..grant.clone()
            },
        ),
    ];
    for (ws, id, g) in denied {
        assert_status(
            h.fetch_granted(ws, id, g).await,
            Code::PermissionDenied,
            "signature",
        );
    }

    // Expired: refused even though the signature is right.
    let signer = LinkSigner::new::<&str>(LINK_KEY, &[]).expect("key");
    let past = Link {
        workspace_id: "wsA",
        blob_id: &blob.id,
        file_name: "old.ogg",
        expires_at: now - 1,
    };
    let expired = DownloadGrant {
        file_name: "old.ogg".into(),
        expires_at: now - 1,
        signature: signer.sign(&past),
    };
    assert_status(
        h.fetch_granted("wsA", &blob.id, expired).await,
        Code::PermissionDenied,
        "expired",
    );

    // Links signed with a retired key keep working until they expire.
    let retired = LinkSigner::new::<&str>(OLD_LINK_KEY, &[]).expect("key");
    let future = Link {
        expires_at: now + 600,
        ..past
    };
    let before_rotation = DownloadGrant {
        file_name: "old.ogg".into(),
        expires_at: now + 600,
        signature: retired.sign(&future),
    };
    assert_eq!(
        h.fetch_granted("wsA", &blob.id, before_rotation)
            .await
            .expect("granted"),
        data
    );

    // Only the workspace's own files get links; requests are checked.
    assert_status(
        h.link("wsB", &blob.id, 0, "").await,
        Code::NotFound,
        "blob not found",
    );
    for ttl in [1, 59, 604_801] {
        assert_status(
            h.link("wsA", &blob.id, ttl, "").await,
            Code::InvalidArgument,
            "ttl_seconds",
        );
    }
    for name in ["a/b.ogg", "..", " x.ogg", "new\nline"] {
        assert_status(
            h.link("wsA", &blob.id, 0, name).await,
            Code::InvalidArgument,
            "file_name",
        );
    }
    assert_status(
        h.link("", &blob.id, 0, "").await,
        Code::InvalidArgument,
        "workspace_id",
    );
}

async fn download_links_need_setting_up(backend: Backend) {
    let h = start(backend, |_| {}).await;
    let blob = h.upload("wsA", "text/plain", b"hello").await;
    assert_status(
        h.link("wsA", &blob.id, 0, "").await,
        Code::FailedPrecondition,
        "media.download_urls",
    );
    // Nor is any grant honoured.
    let grant = DownloadGrant {
        file_name: "x.txt".into(),
        expires_at: telenet_signing::unix_now() + 60,
        signature: "AAAA".into(),
    };
    assert_status(
        h.fetch_granted("wsA", &blob.id, grant).await,
        Code::PermissionDenied,
        "not accepted",
    );
}

telenet_store::on_both_backends!(
    round_trip,
    identical_content_is_stored_once,
    ranged_download,
    size_limit,
    declared_size_must_match,
    header_comes_first_and_is_checked,
    other_workspaces_blobs_are_not_found,
    bad_blob_ids_are_invalid,
    damaged_store_is_an_internal_error,
    aborted_upload_leaves_nothing,
    download_links,
    download_links_need_setting_up,
);
