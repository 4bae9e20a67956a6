//! The blob stores. One contract, run against both implementations — the
//! local directory and an S3 bucket on a real S3-compatible server (moto,
//! started by `scripts/s3-server.sh`) — then what is particular to each:
//! the on-disk layout and temporaries, the bucket layout, spooling and the
//! start-up check.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use object_store::{ObjectStore, ObjectStoreExt};
use sha2::{Digest, Sha256};
use telenet_media::blob::BlobError;
use telenet_media::blob::s3::{PART_SIZE, READ_WINDOW};
use telenet_media::{BlobId, BlobStore, ByteRange, LocalDirStore, S3Config, S3Store, StoredBlob};
use tokio::io::AsyncReadExt;

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
    out
}

async fn put(store: &dyn BlobStore, parts: &[&[u8]]) -> StoredBlob {
    let mut w = store.writer().await.expect("writer");
    for p in parts {
        w.write(p).await.expect("write");
    }
    w.commit().await.expect("commit")
}

async fn read(store: &dyn BlobStore, id: &BlobId, range: ByteRange) -> Vec<u8> {
    let mut r = store.reader(id, range).await.expect("reader");
    let mut out = Vec::new();
    r.bytes.read_to_end(&mut out).await.expect("read");
    assert_eq!(out.len() as u64, r.length);
    out
}

fn id_of(bytes: &[u8]) -> BlobId {
    BlobId::parse(&hex::encode(Sha256::digest(bytes))).expect("id")
}

/// Bytes that differ at every position of a short period, so a misplaced
/// range shows.
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(31).wrapping_add(seed) % 251) as u8)
        .collect()
}

// ---------------------------------------------------------------- contract

/// What every [`BlobStore`] must do, observed only through the trait.
async fn conformance(store: Arc<dyn BlobStore>) {
    stored_under_their_hash_once(&*store).await;
    ranges_are_read_and_clamped(&*store).await;
    an_unfinished_write_leaves_nothing(&*store).await;
    concurrent_identical_writes_agree(store.clone()).await;
    large_blobs_stream_in_and_out(&*store).await;
}

async fn stored_under_their_hash_once(store: &dyn BlobStore) {
    let data = b"hello, voice note".repeat(1000);
    let a = put(store, &[&data[..5000], &data[5000..]]).await;
    assert_eq!(a.id, id_of(&data));
    assert_eq!(a.size_bytes, data.len() as u64);
    assert!(a.newly_stored);
    assert_eq!(read(store, &a.id, ByteRange::ALL).await, data);

    // Same bytes, other chunking: same id, the stored blob kept.
    let b = put(store, &[&data]).await;
    assert_eq!(b.id, a.id);
    assert!(!b.newly_stored);
    assert_eq!(
        store.size_of(&a.id).await.expect("size"),
        Some(data.len() as u64)
    );

    // The empty blob is a blob too.
    let empty = put(store, &[]).await;
    assert_eq!(empty.id, id_of(b""));
    assert_eq!(empty.size_bytes, 0);
    assert_eq!(read(store, &empty.id, ByteRange::ALL).await, b"");
    assert_eq!(store.size_of(&empty.id).await.expect("size"), Some(0));
}

async fn ranges_are_read_and_clamped(store: &dyn BlobStore) {
    let data = pattern(10_000, 7);
    let id = put(store, &[&data]).await.id;
    let range = |offset, length| ByteRange { offset, length };

    assert_eq!(read(store, &id, ByteRange::ALL).await, data);
    assert_eq!(read(store, &id, range(10, Some(20))).await, &data[10..30]);
    assert_eq!(read(store, &id, range(9_990, None)).await, &data[9_990..]);
    assert_eq!(
        read(store, &id, range(9_990, Some(100))).await,
        &data[9_990..]
    );
    assert_eq!(read(store, &id, range(10_000, None)).await, b"");
    assert_eq!(read(store, &id, range(5, Some(0))).await, b"");
    let opened = store
        .reader(&id, range(100, Some(50)))
        .await
        .expect("reader");
    assert_eq!(
        (opened.size_bytes, opened.offset, opened.length),
        (10_000, 100, 50)
    );
    let err = store
        .reader(&id, range(10_001, None))
        .await
        .expect_err("past the end");
    assert!(
        matches!(
            err,
            BlobError::OutOfRange {
                offset: 10_001,
                size: 10_000
            }
        ),
        "{err}"
    );

    let missing = BlobId::parse(&"0".repeat(64)).expect("id");
    assert!(matches!(
        store.reader(&missing, ByteRange::ALL).await,
        Err(BlobError::NotFound(_))
    ));
    assert_eq!(store.size_of(&missing).await.expect("size"), None);
}

async fn an_unfinished_write_leaves_nothing(store: &dyn BlobStore) {
    let half = pattern(3_000, 99);
    let mut w = store.writer().await.expect("writer");
    w.write(&half).await.expect("write");
    assert_eq!(w.written(), 3_000);
    drop(w);
    assert_eq!(store.size_of(&id_of(&half)).await.expect("size"), None);
    assert!(matches!(
        store.reader(&id_of(&half), ByteRange::ALL).await,
        Err(BlobError::NotFound(_))
    ));
}

async fn concurrent_identical_writes_agree(store: Arc<dyn BlobStore>) {
    let data = pattern(200_000, 3);
    let writes = (0..4).map(|_| {
        let (store, data) = (store.clone(), data.clone());
        tokio::spawn(async move { put(&*store, &[&data[..1000], &data[1000..]]).await })
    });
    let results = futures::future::join_all(writes).await;
    for stored in results {
        let stored = stored.expect("join");
        assert_eq!(stored.id, id_of(&data));
        assert_eq!(stored.size_bytes, data.len() as u64);
    }
    assert_eq!(read(&*store, &id_of(&data), ByteRange::ALL).await, data);
}

/// Bigger than one S3 part and one read window: exercises the multipart
/// upload and ranges that cross windows.
async fn large_blobs_stream_in_and_out(store: &dyn BlobStore) {
    let len = PART_SIZE * 2 + 123_457;
    let data = pattern(len, 11);
    let mut w = store.writer().await.expect("writer");
    for chunk in data.chunks(256 * 1024) {
        w.write(chunk).await.expect("write");
    }
    let stored = w.commit().await.expect("commit");
    assert_eq!(stored.id, id_of(&data));
    assert_eq!(stored.size_bytes, len as u64);
    let whole = read(store, &stored.id, ByteRange::ALL).await;
    assert!(whole == data, "large blob read back differs");
    let window = READ_WINDOW;
    let across = ByteRange {
        offset: window - 10,
        length: Some(window + 20),
    };
    let start = (window - 10) as usize;
    assert!(
        read(store, &stored.id, across).await == data[start..start + window as usize + 20],
        "range across read windows differs"
    );
}

#[tokio::test]
async fn local_dir_store_conforms() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = LocalDirStore::new(tmp.path().join("blobs"))
        .await
        .expect("store");
    conformance(Arc::new(store.clone())).await;
    assert!(files_under(&store.tmp_dir()).is_empty(), "temporaries left");
}

#[tokio::test]
async fn s3_store_conforms() {
    let config = common::s3_bucket().await;
    let spool = tempfile::tempdir().expect("tempdir");
    let store = S3Store::new(&S3Config {
        spool_dir: spool.path().to_owned(),
        ..config
    })
    .await
    .expect("store");
    conformance(Arc::new(store)).await;
    assert!(files_under(spool.path()).is_empty(), "spool files left");
}

// ------------------------------------------------------ the local directory

#[tokio::test]
async fn local_blobs_are_files_under_their_hash() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = LocalDirStore::new(tmp.path().join("blobs"))
        .await
        .expect("store");
    let data = b"hello, voice note".repeat(1000);
    let a = put(&store, &[&data]).await;
    let expected = hex::encode(Sha256::digest(&data));
    let path = tmp
        .path()
        .join("blobs/sha256")
        .join(&expected[..2])
        .join(&expected[2..]);
    assert_eq!(store.path_of(&a.id), path);
    assert_eq!(std::fs::read(&path).expect("blob file"), data);
    put(&store, &[&data]).await;
    assert_eq!(files_under(&tmp.path().join("blobs/sha256")), vec![path]);
    assert!(files_under(&store.tmp_dir()).is_empty(), "temporaries left");
}

#[tokio::test]
async fn local_writes_go_to_a_temporary_removed_when_dropped() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = LocalDirStore::new(tmp.path()).await.expect("store");
    let mut w = store.writer().await.expect("writer");
    w.write(b"half a file").await.expect("write");
    assert_eq!(
        files_under(&store.tmp_dir()).len(),
        1,
        "writes go to a temporary"
    );
    drop(w);
    assert!(files_under(&store.tmp_dir()).is_empty());
    assert!(files_under(&tmp.path().join("sha256")).is_empty());
}

#[test]
fn only_lowercase_sha256_hex_is_an_id() {
    assert!(BlobId::parse(&"ab".repeat(32)).is_ok());
    for bad in [
        String::new(),
        "ab".repeat(31),
        "ab".repeat(33),
        "AB".repeat(32),
        format!("../{}", "a".repeat(61)),
        format!("{}/", "a".repeat(63)),
        "g".repeat(64),
    ] {
        assert!(BlobId::parse(&bad).is_err(), "{bad:?} accepted");
    }
}

#[tokio::test]
async fn stale_temporaries_are_removed_on_open() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = LocalDirStore::new(tmp.path()).await.expect("store");
    let stale = store.tmp_dir().join("upload-old.part");
    let fresh = store.tmp_dir().join("upload-new.part");
    std::fs::write(&stale, b"x").expect("write");
    std::fs::write(&fresh, b"y").expect("write");
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .expect("open")
        .set_modified(SystemTime::now() - Duration::from_secs(3 * 24 * 3600))
        .expect("set mtime");

    let _reopened = LocalDirStore::new(tmp.path()).await.expect("store");
    assert!(!stale.exists(), "stale temporary kept");
    assert!(fresh.exists(), "a write in progress was removed");
}

// ----------------------------------------------------------- the S3 bucket

/// The bucket as any S3 client sees it.
fn raw_bucket(config: &S3Config) -> object_store::aws::AmazonS3 {
    object_store::aws::AmazonS3Builder::new()
        .with_endpoint(&config.endpoint)
        .with_bucket_name(&config.bucket)
        .with_region(&config.region)
        .with_access_key_id(&config.access_key_id)
        .with_secret_access_key(&config.secret_access_key)
        .with_allow_http(true)
        .build()
        .expect("raw client")
}

#[tokio::test]
async fn s3_blobs_are_objects_under_prefix_and_hash() {
    let config = common::s3_bucket().await;
    let spool = tempfile::tempdir().expect("tempdir");
    let store = S3Store::new(&S3Config {
        spool_dir: spool.path().to_owned(),
        ..config.clone()
    })
    .await
    .expect("store");
    let data = b"an s3 voice note".repeat(100);
    let stored = put(&store, &[&data]).await;
    let hash = hex::encode(Sha256::digest(&data));
    let key = format!("telenet/blobs/sha256/{}/{}", &hash[..2], &hash[2..]);
    assert_eq!(store.key_of(&stored.id), key);

    let raw = raw_bucket(&config);
    let object = raw
        .get(&object_store::path::Path::from(key.as_str()))
        .await
        .expect("object under the documented key")
        .bytes()
        .await
        .expect("object bytes");
    assert_eq!(&object[..], &data[..]);

    // While a write is in progress its bytes are only in the spool; dropped,
    // they are gone and nothing reached the bucket.
    let mut w = store.writer().await.expect("writer");
    w.write(b"never committed").await.expect("write");
    assert_eq!(files_under(spool.path()).len(), 1, "writes are spooled");
    drop(w);
    assert!(files_under(spool.path()).is_empty(), "spool kept");
    let mut listing = raw.list(None);
    let mut keys = Vec::new();
    while let Some(meta) = futures::StreamExt::next(&mut listing).await {
        keys.push(meta.expect("list").location.to_string());
    }
    assert_eq!(keys, vec![key], "only the committed blob is in the bucket");
}

#[tokio::test]
async fn s3_store_refuses_a_missing_bucket_or_bad_settings_at_start() {
    let config = common::s3_bucket().await;
    let missing = S3Config {
        bucket: "no-such-bucket-here".into(),
        ..config.clone()
    };
    let err = S3Store::new(&missing).await.expect_err("missing bucket");
    let text = err.to_string();
    assert!(text.contains("no-such-bucket-here"), "{text}");

    for (bad, key) in [
        (
            S3Config {
                bucket: String::new(),
                ..config.clone()
            },
            "s3.bucket",
        ),
        (
            S3Config {
                endpoint: "ftp://x".into(),
                ..config.clone()
            },
            "s3.endpoint",
        ),
        (
            S3Config {
                prefix: "a/../b".into(),
                ..config.clone()
            },
            "s3.prefix",
        ),
        (
            S3Config {
                secret_access_key: String::new(),
                ..config.clone()
            },
            "s3.access_key_id",
        ),
    ] {
        let err = S3Store::new(&bad).await.expect_err("bad settings");
        assert!(err.to_string().contains(key), "{err} does not name {key}");
    }
    // The secret never shows in debug output.
    assert!(!format!("{config:?}").contains("secret_access_key: \"test\""));
}

#[tokio::test]
async fn the_media_service_uses_the_configured_s3_store() {
    use telenet_media::{BlobStoreKind, Config, MIGRATIONS, MediaService};
    use telenet_proto::media::v1::{DownloadRequest, UploadHeader};

    let s3 = common::s3_bucket().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let db = telenet_store::Db::connect(
        &telenet_store::testing::sqlite_in(tmp.path(), "media"),
        "media",
    )
    .await
    .expect("db");
    db.migrate(&MIGRATIONS).await.expect("migrate");
    let blob_dir = tmp.path().join("unused-blobs");
    let media = MediaService::new(
        db,
        Config {
            blob_dir: blob_dir.clone(),
            blob_store: BlobStoreKind::S3,
            s3: s3.clone(),
            ..Config::default()
        },
    )
    .await
    .expect("media on s3");
    let data = pattern(300_000, 5);
    let chunks = futures::stream::iter(
        data.chunks(64 * 1024)
            .map(|c| Ok(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let blob = media
        .upload(
            &UploadHeader {
                workspace_id: "ws-1".into(),
                mime_type: "audio/ogg".into(),
                size_bytes: data.len() as u64,
            },
            chunks,
        )
        .await
        .expect("upload");
    assert_eq!(blob.id, id_of(&data).to_string());

    // The bytes are in the bucket, not in a local directory.
    assert!(files_under(&blob_dir).is_empty());
    let key = format!("telenet/blobs/sha256/{}/{}", &blob.id[..2], &blob.id[2..]);
    let head = raw_bucket(&s3)
        .head(&object_store::path::Path::from(key.as_str()))
        .await
        .expect("object in the bucket");
    assert_eq!(head.size, data.len() as u64);

    let download = media
        .download(&DownloadRequest {
            workspace_id: "ws-1".into(),
            blob_id: blob.id.clone(),
            offset: 1_000,
            length: 50_000,
            grant: None,
        })
        .await
        .expect("download");
    let got: Vec<u8> = futures::StreamExt::collect::<Vec<_>>(download.chunks)
        .await
        .into_iter()
        .flat_map(|c| c.expect("chunk"))
        .collect();
    assert!(got == data[1_000..51_000], "ranged download differs");

    // A bucket that is not there stops the service from starting, named.
    let err = MediaService::new(
        telenet_store::Db::connect(
            &telenet_store::testing::sqlite_in(tmp.path(), "other"),
            "media",
        )
        .await
        .expect("db"),
        Config {
            blob_store: BlobStoreKind::S3,
            s3: S3Config {
                bucket: "missing-bucket".into(),
                ..s3
            },
            ..Config::default()
        },
    )
    .await
    .expect_err("missing bucket");
    assert!(err.to_string().contains("missing-bucket"), "{err}");
}
