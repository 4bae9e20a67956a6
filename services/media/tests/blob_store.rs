//! The local-directory blob store: layout, atomic deduplicating writes,
//! discarded unfinished writes, ranges, and id validation.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use telenet_media::blob::BlobError;
use telenet_media::{BlobId, BlobStore, ByteRange, LocalDirStore};
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

async fn put(store: &LocalDirStore, parts: &[&[u8]]) -> telenet_media::StoredBlob {
    let mut w = store.writer().await.expect("writer");
    for p in parts {
        w.write(p).await.expect("write");
    }
    w.commit().await.expect("commit")
}

async fn read(store: &LocalDirStore, id: &BlobId, range: ByteRange) -> Vec<u8> {
    let mut r = store.reader(id, range).await.expect("reader");
    let mut out = Vec::new();
    r.bytes.read_to_end(&mut out).await.expect("read");
    assert_eq!(out.len() as u64, r.length);
    out
}

#[tokio::test]
async fn blobs_are_stored_under_their_hash_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = LocalDirStore::new(tmp.path().join("blobs"))
        .await
        .expect("store");
    let data = b"hello, voice note".repeat(1000);

    let a = put(&store, &[&data[..5000], &data[5000..]]).await;
    let expected = hex::encode(Sha256::digest(&data));
    assert_eq!(a.id.as_str(), expected);
    assert_eq!(a.size_bytes, data.len() as u64);
    assert!(a.newly_stored);
    let path = tmp
        .path()
        .join("blobs/sha256")
        .join(&expected[..2])
        .join(&expected[2..]);
    assert_eq!(store.path_of(&a.id), path);
    assert_eq!(std::fs::read(&path).expect("blob file"), data);

    // Same bytes, other chunking: same id, existing file kept.
    let b = put(&store, &[&data]).await;
    assert_eq!(b.id, a.id);
    assert!(!b.newly_stored);
    assert_eq!(files_under(&tmp.path().join("blobs/sha256")), vec![path]);
    assert!(files_under(&store.tmp_dir()).is_empty(), "temporaries left");
    assert_eq!(
        store.size_of(&a.id).await.expect("size"),
        Some(data.len() as u64)
    );

    // The empty blob is a blob too.
    let empty = put(&store, &[]).await;
    assert_eq!(empty.id.as_str(), hex::encode(Sha256::digest(b"")));
    assert_eq!(read(&store, &empty.id, ByteRange::ALL).await, b"");
}

#[tokio::test]
async fn an_unfinished_write_leaves_nothing() {
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

#[tokio::test]
async fn ranges_are_read_and_clamped() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = LocalDirStore::new(tmp.path()).await.expect("store");
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let id = put(&store, &[&data]).await.id;
    let range = |offset, length| ByteRange { offset, length };

    assert_eq!(read(&store, &id, ByteRange::ALL).await, data);
    assert_eq!(read(&store, &id, range(10, Some(20))).await, &data[10..30]);
    assert_eq!(read(&store, &id, range(9_990, None)).await, &data[9_990..]);
    assert_eq!(
        read(&store, &id, range(9_990, Some(100))).await,
        &data[9_990..]
    );
    assert_eq!(read(&store, &id, range(10_000, None)).await, b"");
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
