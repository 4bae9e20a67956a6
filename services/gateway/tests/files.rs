//! `POST /v1/files` and `GET /v1/files/{id}` against the real media service
//! (SQLite, a blob directory) over gRPC: uploads streamed with per-kind
//! limits and the declared type held against the bytes, downloads whole or
//! by range, files kept per workspace; download links made by agents and
//! served without a token.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{OTHER_TOKEN, OWNER_TOKEN, Reply, get, send, spawn_members};
use sha2::{Digest, Sha256};
use telenet_gateway::{Config, UploadLimits, Upstreams};
use telenet_presence::{MemoryPresence, SharedPresence, Thresholds};

const BOUNDARY: &str = "telenet-test-boundary";
const VOICE_LIMIT: u64 = 200_000;
const FILE_LIMIT: u64 = 400_000;

struct World {
    app: axum::Router,
    blob_dir: PathBuf,
    _tmp: tempfile::TempDir,
}

const PUBLIC_URL: &str = "https://inbox.example";

async fn world() -> World {
    world_with(true).await
}

/// The world, with download links set up in media or not.
async fn world_with(links: bool) -> World {
    let tmp = tempfile::tempdir().expect("tempdir");
    let db = telenet_store::Db::connect(
        &telenet_store::testing::sqlite_in(tmp.path(), "media"),
        "media",
    )
    .await
    .expect("db");
    db.migrate(&telenet_media::MIGRATIONS)
        .await
        .expect("migrate");
    let blob_dir = tmp.path().join("blobs");
    let media = telenet_media::MediaService::new(
        db,
        telenet_media::Config {
            blob_dir: blob_dir.clone(),
            download_urls: if links {
                telenet_media::links::DownloadUrlConfig {
                    base_url: PUBLIC_URL.into(),
                    key: "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=".into(),
                    previous_keys: vec![],
                }
            } else {
                Default::default()
            },
            ..Default::default()
        },
    )
    .await
    .expect("media");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(media.grpc())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let media_channel = common::client(&format!("http://{addr}"));
    let upstreams = Upstreams {
        members: spawn_members(common::FakeMembers::standard()).await,
        media: media_channel.clone(),
        media_streams: media_channel,
        ..Upstreams::single(common::dead_channel())
    };
    let presence: SharedPresence = std::sync::Arc::new(MemoryPresence::new(Thresholds::default()));
    let config = Config {
        // Far below the files' limits: the JSON limit must not apply to them.
        max_body_bytes: 4096,
        max_upload_bytes: UploadLimits {
            voice: VOICE_LIMIT,
            image: VOICE_LIMIT,
            file: FILE_LIMIT,
        },
        ..Config::default()
    };
    World {
        app: telenet_gateway::router(upstreams, presence, config),
        blob_dir,
        _tmp: tmp,
    }
}

/// A `multipart/form-data` body: (name, part content type, bytes).
fn form(parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, content_type, bytes) in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        if *name == "file" {
            body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"f\"\r\n")
                    .as_bytes(),
            );
        } else {
            body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n").as_bytes(),
            );
        }
        if let Some(ct) = content_type {
            body.extend_from_slice(format!("Content-Type: {ct}\r\n").as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

fn post_form(token: Option<&str>, body: Vec<u8>) -> Request<Body> {
    let mut builder = Request::post("/v1/files").header(
        header::CONTENT_TYPE,
        format!("multipart/form-data; boundary={BOUNDARY}"),
    );
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    builder.body(Body::from(body)).expect("request")
}

async fn upload(w: &World, kind: &str, mime: &str, bytes: &[u8]) -> Reply {
    let body = form(&[("kind", None, kind.as_bytes()), ("file", Some(mime), bytes)]);
    send(&w.app, post_form(Some(OWNER_TOKEN), body)).await
}

fn ranged(uri: &str, token: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut builder = Request::get(uri).header(header::AUTHORIZATION, format!("Bearer {token}"));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Body::empty()).expect("request")
}

fn ogg(len: usize) -> Vec<u8> {
    let mut bytes = b"OggS".to_vec();
    bytes.extend((0..len - 4).map(|i| (i * 7 % 251) as u8));
    bytes
}

fn png() -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.extend([0u8; 100]);
    bytes
}

fn stored_blobs(dir: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dir.join("sha256"), &mut out);
    out
}

/// The media service drops a cancelled upload's temporary when it notices
/// the cancellation; give it a moment.
async fn no_temporaries(dir: &Path) {
    for _ in 0..100 {
        let left = std::fs::read_dir(dir.join("tmp")).map_or(0, |d| d.count());
        if left == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("an unfinished upload left a temporary in {}", dir.display());
}

#[tokio::test]
async fn a_voice_note_goes_up_and_comes_back_whole_or_by_range() {
    let w = world().await;
    let data = ogg(150_000);
    let n = data.len();
    let reply = upload(&w, "voice", "audio/ogg; codecs=opus", &data).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    let body = reply.json();
    let id = hex::encode(Sha256::digest(&data));
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["size_bytes"], n);
    assert_eq!(body["mime_type"], "audio/ogg; codecs=opus");
    assert_eq!(
        reply.header("location").map(str::to_owned),
        Some(format!("/v1/files/{id}"))
    );
    // The same bytes again: the same file.
    let again = upload(&w, "voice", "audio/ogg", &data).await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.json()["id"], id.as_str());
    assert_eq!(stored_blobs(&w.blob_dir).len(), 1);

    let uri = format!("/v1/files/{id}");
    let whole = send(&w.app, get(&uri, Some(OWNER_TOKEN))).await;
    assert_eq!(whole.status, StatusCode::OK);
    assert!(whole.body == data, "downloaded bytes differ");
    assert_eq!(whole.header("content-type"), Some("audio/ogg; codecs=opus"));
    assert_eq!(whole.header("content-length"), Some(n.to_string().as_str()));
    assert_eq!(whole.header("accept-ranges"), Some("bytes"));
    assert_eq!(
        whole.header("etag").map(str::to_owned),
        Some(format!("\"{id}\""))
    );
    assert_eq!(whole.header("x-content-type-options"), Some("nosniff"));

    let range = |spec: &str| ranged(&uri, OWNER_TOKEN, &[("range", spec)]);
    let cases: Vec<(String, usize, usize)> = vec![
        ("bytes=10-19".into(), 10, 20),
        ("bytes=-100".into(), n - 100, n),
        (format!("bytes={}-", n - 5), n - 5, n),
        ("bytes=0-99999999".into(), 0, n),
        ("bytes=70000-70000".into(), 70_000, 70_001),
    ];
    for (spec, start, end) in cases {
        let part = send(&w.app, range(&spec)).await;
        assert_eq!(part.status, StatusCode::PARTIAL_CONTENT, "{spec}");
        assert!(part.body == data[start..end], "{spec}: wrong bytes");
        assert_eq!(
            part.header("content-range").map(str::to_owned),
            Some(format!("bytes {start}-{}/{n}", end - 1)),
            "{spec}"
        );
        assert_eq!(
            part.header("content-length").map(str::to_owned),
            Some((end - start).to_string())
        );
    }
    for spec in [
        format!("bytes={n}-"),
        format!("bytes={}-", n + 10),
        "bytes=-0".into(),
    ] {
        let refused = send(&w.app, range(&spec)).await;
        let problem = refused.problem(416);
        assert_eq!(problem["code"], "range_not_satisfiable", "{spec}");
        assert_eq!(
            refused.header("content-range").map(str::to_owned),
            Some(format!("bytes */{n}")),
            "{spec}"
        );
    }
    // Several ranges, or a range for another version: the whole file.
    let several = send(&w.app, range("bytes=0-1,5-9")).await;
    assert_eq!(several.status, StatusCode::OK);
    assert_eq!(several.body.len(), n);
    let stale = send(
        &w.app,
        ranged(
            &uri,
            OWNER_TOKEN,
            &[("range", "bytes=0-9"), ("if-range", "\"other\"")],
        ),
    )
    .await;
    assert_eq!(stale.status, StatusCode::OK);
    let current = send(
        &w.app,
        ranged(
            &uri,
            OWNER_TOKEN,
            &[("range", "bytes=0-9"), ("if-range", &format!("\"{id}\""))],
        ),
    )
    .await;
    assert_eq!(current.status, StatusCode::PARTIAL_CONTENT);
}

/// Numbers at the ends of their types, where the gateway computes with
/// them: a range whose length does not fit in a u64, a link that expired
/// at the start of i64 time. Each is an answer, never a panic.
#[tokio::test]
async fn numbers_at_the_ends_of_their_types_are_answered_not_panicked_on() {
    let w = world().await;
    let data = ogg(1_000);
    let id = upload(&w, "voice", "audio/ogg", &data).await.json()["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let uri = format!("/v1/files/{id}");
    let all = send(
        &w.app,
        ranged(
            &uri,
            OWNER_TOKEN,
            &[("range", "bytes=0-18446744073709551615")],
        ),
    )
    .await;
    assert_eq!(all.status, StatusCode::PARTIAL_CONTENT);
    assert!(all.body == data, "the whole file");
    assert_eq!(
        all.header("content-range").map(str::to_owned),
        Some(format!("bytes 0-{}/{}", data.len() - 1, data.len()))
    );

    for expires in ["-9223372036854775808", "9223372036854775807"] {
        let link = format!(
            "/v1/downloads/{}/{id}/note.ogg?expires={expires}&signature=abc",
            common::WORKSPACE
        );
        send(&w.app, anonymous(&link, &[])).await.problem(403);
    }
}

#[tokio::test]
async fn files_are_kept_per_workspace() {
    let w = world().await;
    let data = ogg(1_000);
    let id = upload(&w, "voice", "audio/ogg", &data).await.json()["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let uri = format!("/v1/files/{id}");
    let other = send(&w.app, get(&uri, Some(OTHER_TOKEN))).await;
    other.problem(404);
    let anonymous = send(&w.app, get(&uri, None)).await;
    anonymous.problem(401);
    let unknown = send(
        &w.app,
        get(&format!("/v1/files/{}", "0".repeat(64)), Some(OWNER_TOKEN)),
    )
    .await;
    unknown.problem(404);
    let bad = send(&w.app, get("/v1/files/not-a-hash", Some(OWNER_TOKEN))).await;
    assert_eq!(bad.problem(400)["field"], "id");
    let no_token = send(
        &w.app,
        post_form(None, form(&[("file", Some("text/plain"), b"x")])),
    )
    .await;
    no_token.problem(401);
}

#[tokio::test]
async fn the_declared_type_is_held_against_the_bytes() {
    let w = world().await;
    let webm = {
        let mut v = vec![0x1a, 0x45, 0xdf, 0xa3];
        v.extend([0x42u8; 500]);
        v
    };
    let refused: Vec<(&str, &str, Vec<u8>, &[&str])> = vec![
        // A picture sent as a voice note, named by both types.
        (
            "voice",
            "audio/ogg",
            png(),
            &["audio/ogg", "PNG (image/png)"],
        ),
        // A Chrome recording labelled as Ogg.
        ("voice", "audio/ogg", webm.clone(), &["audio/ogg", "WebM"]),
        ("voice", "image/png", png(), &["must be audio", "image/png"]),
        (
            "voice",
            "application/octet-stream",
            ogg(100),
            &["must be audio"],
        ),
        (
            "image",
            "image/jpeg",
            png(),
            &["image/jpeg", "PNG (image/png)"],
        ),
        ("image", "audio/ogg", ogg(100), &["jpeg, png", "audio/ogg"]),
        (
            "file",
            "application/pdf",
            ogg(100),
            &["application/pdf", "Ogg"],
        ),
        (
            "voice",
            "audio/ogg",
            Vec::new(),
            &["audio/ogg", "not a format"],
        ),
    ];
    for (kind, mime, bytes, words) in refused {
        let reply = upload(&w, kind, mime, &bytes).await;
        let problem = reply.problem(415);
        assert_eq!(problem["code"], "unsupported_media_type");
        let detail = problem["detail"].as_str().expect("detail").to_lowercase();
        for word in words {
            assert!(
                detail.contains(&word.to_lowercase()),
                "{kind} {mime}: {detail:?} lacks {word:?}"
            );
        }
    }
    assert!(
        stored_blobs(&w.blob_dir).is_empty(),
        "a refused file was stored"
    );

    let accepted: Vec<(&str, &str, Vec<u8>)> = vec![
        ("voice", "audio/webm;codecs=opus", webm),
        ("image", "image/png", png()),
        // A type the gateway knows no bytes of is taken as declared.
        ("file", "text/csv", b"a,b\n1,2\n".to_vec()),
        ("file", "application/octet-stream", png()),
    ];
    for (kind, mime, bytes) in accepted {
        let reply = upload(&w, kind, mime, &bytes).await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "{kind} {mime}: {:?}",
            reply.body
        );
    }
}

#[tokio::test]
async fn oversized_uploads_are_refused_and_leave_nothing() {
    let w = world().await;
    let reply = upload(&w, "voice", "audio/ogg", &ogg(VOICE_LIMIT as usize + 1)).await;
    let problem = reply.problem(413);
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("voice") && d.contains(&VOICE_LIMIT.to_string())),
        "{problem}"
    );
    // Beyond the endpoint's body limit altogether.
    let huge = upload(
        &w,
        "file",
        "text/plain",
        &vec![b'x'; FILE_LIMIT as usize + 100_000],
    )
    .await;
    huge.problem(413);
    no_temporaries(&w.blob_dir).await;
    assert!(
        stored_blobs(&w.blob_dir).is_empty(),
        "an oversized file was stored"
    );

    // The same size as a plain file is fine, although far above the JSON
    // endpoints' limit.
    let reply = upload(&w, "file", "audio/ogg", &ogg(VOICE_LIMIT as usize + 1)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
}

#[tokio::test]
async fn malformed_forms_are_bad_requests() {
    let w = world().await;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (form(&[("kind", None, b"voice")]), "file"),
        (
            form(&[("kind", None, b"gif"), ("file", Some("audio/ogg"), b"OggS")]),
            "kind",
        ),
        (
            form(&[("other", None, b"x"), ("file", Some("audio/ogg"), b"OggS")]),
            "form",
        ),
        (form(&[("file", None, b"OggS")]), "file"),
        // `kind` after the file would not have applied.
        (
            form(&[
                ("file", Some("audio/ogg"), b"OggS"),
                ("kind", None, b"image"),
            ]),
            "form",
        ),
    ];
    for (body, field) in cases {
        let reply = send(&w.app, post_form(Some(OWNER_TOKEN), body)).await;
        assert_eq!(reply.problem(400)["field"], field);
    }
    let not_a_form = send(
        &w.app,
        common::json("POST", "/v1/files", Some(OWNER_TOKEN), "{}"),
    )
    .await;
    assert!(not_a_form.status.is_client_error());
    assert_eq!(
        not_a_form.header("content-type"),
        Some("application/problem+json")
    );
}

/// `POST /v1/files/{id}/links` as `token`, with `body` (None: no body).
async fn make_link(w: &World, id: &str, token: Option<&str>, body: Option<&str>) -> Reply {
    let uri = format!("/v1/files/{id}/links");
    let request = match body {
        Some(body) => common::json("POST", &uri, token, body.to_owned()),
        None => {
            let mut builder = Request::post(&uri);
            if let Some(token) = token {
                builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
            }
            builder.body(Body::empty()).expect("request")
        }
    };
    send(&w.app, request).await
}

/// The path and query of a link, as the gateway is asked for it.
fn local(url: &str) -> String {
    url.strip_prefix(PUBLIC_URL)
        .unwrap_or_else(|| panic!("{url} is not on {PUBLIC_URL}"))
        .to_owned()
}

fn anonymous(uri: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut builder = Request::get(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Body::empty()).expect("request")
}

#[tokio::test]
async fn download_links_serve_a_file_without_a_token_until_they_expire() {
    let w = world().await;
    let data = ogg(20_000);
    let id = upload(&w, "voice", "audio/ogg; codecs=opus", &data)
        .await
        .json()["id"]
        .as_str()
        .expect("id")
        .to_owned();

    // An hour by default, named by the id and the type.
    let made = make_link(&w, &id, Some(OWNER_TOKEN), None).await;
    assert_eq!(made.status, StatusCode::CREATED, "{:?}", made.body);
    let link = made.json();
    let url = link["url"].as_str().expect("url");
    let prefix = format!(
        "{PUBLIC_URL}/v1/downloads/{}/{id}/{}.ogg?expires=",
        common::WORKSPACE,
        &id[..16]
    );
    assert!(url.starts_with(&prefix), "{url}");
    let expires_at =
        chrono::DateTime::parse_from_rfc3339(link["expires_at"].as_str().expect("expires_at"))
            .expect("RFC 3339");
    let left = expires_at.timestamp() - telenet_signing::unix_now();
    assert!((3_590..=3_600).contains(&left), "{left}");

    let whole = send(&w.app, anonymous(&local(url), &[])).await;
    assert_eq!(whole.status, StatusCode::OK, "{:?}", whole.body);
    assert!(whole.body == data, "downloaded bytes differ");
    assert_eq!(whole.header("content-type"), Some("audio/ogg; codecs=opus"));
    assert_eq!(
        whole.header("content-disposition").map(str::to_owned),
        Some(format!(
            "inline; filename=\"{0}.ogg\"; filename*=UTF-8''{0}.ogg",
            &id[..16]
        ))
    );
    let cache = whole.header("cache-control").unwrap_or_default().to_owned();
    let max_age: i64 = cache
        .strip_prefix("private, max-age=")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("cache-control {cache}"));
    assert!((3_590..=3_600).contains(&max_age), "{cache}");
    assert_eq!(whole.header("x-content-type-options"), Some("nosniff"));

    let part = send(
        &w.app,
        anonymous(&local(url), &[("range", "bytes=100-199")]),
    )
    .await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert!(part.body == data[100..200], "wrong range");

    // A chosen name and lifetime; names are percent-encoded both ways.
    let made = make_link(
        &w,
        &id,
        Some(OWNER_TOKEN),
        Some(r#"{"ttl_seconds": 120, "file_name": "Grüße vom Büro.ogg"}"#),
    )
    .await;
    assert_eq!(made.status, StatusCode::CREATED, "{:?}", made.body);
    let url = made.json()["url"].as_str().expect("url").to_owned();
    assert!(
        url.contains("/Gr%C3%BC%C3%9Fe%20vom%20B%C3%BCro.ogg?"),
        "{url}"
    );
    let named = send(&w.app, anonymous(&local(&url), &[])).await;
    assert_eq!(named.status, StatusCode::OK, "{:?}", named.body);
    assert_eq!(
        named.header("content-disposition"),
        Some(
            "inline; filename=\"Gr__e vom B_ro.ogg\"; filename*=UTF-8''Gr%C3%BC%C3%9Fe%20vom%20B%C3%BCro.ogg"
        )
    );

    // Changing any part of the link breaks it.
    let path = local(&url);
    let tampered = [
        path.replace("Gr%C3%BC%C3%9Fe", "Hallo"),
        path.replace(common::WORKSPACE, common::OTHER_WORKSPACE),
        path.replacen("expires=", "expires=1", 1),
        path.replacen("signature=", "signature=A", 1),
    ];
    for uri in tampered {
        let refused = send(&w.app, anonymous(&uri, &[])).await;
        assert_eq!(refused.problem(403)["code"], "permission_denied", "{uri}");
    }
    // Malformed links are bad requests.
    let no_query = path.split('?').next().expect("path").to_owned();
    assert_eq!(
        send(&w.app, anonymous(&no_query, &[])).await.problem(400)["field"],
        "expires"
    );
    let bad_ws = path.replace(common::WORKSPACE, "not-a-uuid");
    assert_eq!(
        send(&w.app, anonymous(&bad_ws, &[])).await.problem(400)["field"],
        "workspace_id"
    );
}

#[tokio::test]
async fn links_are_made_only_for_the_workspaces_own_files_and_checked() {
    let w = world().await;
    let id = upload(&w, "voice", "audio/ogg", &ogg(1_000)).await.json()["id"]
        .as_str()
        .expect("id")
        .to_owned();
    make_link(&w, &id, Some(OTHER_TOKEN), None)
        .await
        .problem(404);
    make_link(&w, &id, None, None).await.problem(401);
    for body in [
        r#"{"ttl_seconds": 10}"#,
        r#"{"ttl_seconds": 604801}"#,
        r#"{"file_name": "a/b.ogg"}"#,
        r#"{"file_name": ".."}"#,
    ] {
        make_link(&w, &id, Some(OWNER_TOKEN), Some(body))
            .await
            .problem(400);
    }
    make_link(&w, &id, Some(OWNER_TOKEN), Some(r#"{"ttl": 60}"#))
        .await
        .problem(400);
    make_link(&w, "not-a-hash", Some(OWNER_TOKEN), None)
        .await
        .problem(400);

    // An installation without download links says so.
    let bare = world_with(false).await;
    let id = upload(&bare, "voice", "audio/ogg", &ogg(1_000))
        .await
        .json()["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let refused = make_link(&bare, &id, Some(OWNER_TOKEN), None).await;
    let problem = refused.problem(409);
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("download_urls")),
        "{problem}"
    );
}

/// WhatsApp's Ogg/Opus voice note of the repository's fixtures (3.45 s).
fn whatsapp_note() -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/media/source_ogg_opus_ptb.ogg"
    );
    std::fs::read(path).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

#[tokio::test]
async fn the_player_gets_duration_waveform_and_a_form_every_browser_plays() {
    let w = world().await;
    let note = whatsapp_note();
    let id = upload(&w, "voice", "audio/ogg; codecs=opus", &note)
        .await
        .json()["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let uri = format!("/v1/files/{id}/audio");

    // Asked until the playable form is made (the first ask starts it).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let view = loop {
        let reply = send(&w.app, get(&uri, Some(OWNER_TOKEN))).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        let view = reply.json();
        assert_eq!(view["id"], id.as_str());
        assert_eq!(
            (view["container"].as_str(), view["codec"].as_str()),
            (Some("ogg"), Some("opus"))
        );
        assert!(
            view["duration_ms"]
                .as_u64()
                .is_some_and(|d| d.abs_diff(3_450) <= 60),
            "{view}"
        );
        let peaks = view["peaks"].as_array().expect("peaks");
        assert_eq!(peaks.len(), 64);
        assert!(peaks.iter().all(|p| p.as_u64().is_some_and(|p| p <= 255)));
        assert!(peaks.iter().any(|p| p.as_u64() > Some(0)), "not silence");
        match view["playable"]["state"].as_str() {
            Some("ready") => break view,
            Some("pending") => {}
            other => panic!("playable {other:?}: {view}"),
        }
        assert!(tokio::time::Instant::now() < deadline, "never made");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(view["playable"]["mime_type"], "audio/mp4");
    let playable = view["playable"]["file_id"].as_str().expect("file_id");
    let bytes = send(
        &w.app,
        get(&format!("/v1/files/{playable}"), Some(OWNER_TOKEN)),
    )
    .await;
    assert_eq!(bytes.status, StatusCode::OK);
    assert_eq!(
        bytes.body.get(4..8),
        Some(&b"ftyp"[..]),
        "an MP4 for Safari"
    );
    // An <audio src> sends no token: the player gets a link that needs none.
    let url = view["playable"]["url"]
        .as_str()
        .expect("a link for the player");
    let linked = send(&w.app, anonymous(&local(url), &[])).await;
    assert_eq!(linked.status, StatusCode::OK);
    assert!(
        linked.body == bytes.body,
        "the link serves the playable file"
    );

    // More slices on request; limits and other workspaces are refused.
    let finer = send(&w.app, get(&format!("{uri}?peaks=200"), Some(OWNER_TOKEN))).await;
    assert_eq!(finer.json()["peaks"].as_array().map(Vec::len), Some(200));
    let bad = send(&w.app, get(&format!("{uri}?peaks=8"), Some(OWNER_TOKEN))).await;
    assert_eq!(bad.problem(400)["field"], "peaks");
    send(&w.app, get(&uri, Some(OTHER_TOKEN)))
        .await
        .problem(404);
    let picture = upload(&w, "image", "image/png", &png()).await.json()["id"]
        .as_str()
        .expect("id")
        .to_owned();
    send(
        &w.app,
        get(&format!("/v1/files/{picture}/audio"), Some(OWNER_TOKEN)),
    )
    .await
    .problem(400);
}
