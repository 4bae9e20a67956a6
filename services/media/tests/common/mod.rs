//! Shared by the media tests: an S3-compatible server (moto, started once per
//! test binary by `scripts/s3-server.sh serve`) with a fresh bucket per test.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use telenet_media::S3Config;

/// The URL of this test binary's S3 server, started on first use. The
/// server stops when the test binary exits. A server that cannot be started
/// fails the test: the S3 store is part of what is tested, not optional.
pub fn s3_endpoint() -> String {
    static ENDPOINT: OnceLock<Result<String, String>> = OnceLock::new();
    match ENDPOINT.get_or_init(start_s3_server) {
        Ok(url) => url.clone(),
        Err(e) => panic!("{e}"),
    }
}

fn start_s3_server() -> Result<String, String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/s3-server.sh");
    let mut child = Command::new("bash")
        .arg(&script)
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| "no stdout from the S3 server script".to_owned())?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| format!("reading the S3 server's URL: {e}"))?;
    let url = line.trim().to_owned();
    if !url.starts_with("http://") {
        let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
        return Err(format!(
            "the S3 test server did not start ({} serve exited: {status}; its output is above)",
            script.display()
        ));
    }
    // The script keeps running (and the server with it) until this process
    // exits; the child handle is not needed any more.
    drop(child);
    Ok(url)
}

/// A fresh bucket on the test server, and the store settings for it.
pub async fn s3_bucket() -> S3Config {
    let endpoint = s3_endpoint();
    let bucket = format!("t-{}", fastrand::u64(..));
    // moto creates buckets for any signature; a plain PUT is the S3 API's
    // CreateBucket.
    let created = reqwest::Client::new()
        .put(format!("{endpoint}/{bucket}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("create bucket {bucket}: {e}"));
    assert!(
        created.status().is_success(),
        "create bucket {bucket}: {}",
        created.status()
    );
    S3Config {
        endpoint,
        region: "us-east-1".into(),
        bucket,
        prefix: "telenet/blobs".into(),
        access_key_id: "test".into(),
        secret_access_key: "test".into(),
        path_style: true,
        ..S3Config::default()
    }
}
