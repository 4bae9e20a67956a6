//! Runs the presence conformance suite against every implementation: in-memory
//! and a real Redis (`redis://127.0.0.1:6379`, or `TELENET_TEST_REDIS_URL`).
//! An unreachable Redis fails the test: it is never skipped.

use futures::FutureExt;
use telenet_presence::conformance::{run_all, test_thresholds};
use telenet_presence::connect;

const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_meets_the_contract() {
    let store = match connect("memory://", "", test_thresholds()).await {
        Ok(store) => store,
        Err(error) => panic!("cannot open the in-memory presence store: {error}"),
    };
    run_all(store, test_thresholds()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_meets_the_contract() {
    let url =
        std::env::var("TELENET_TEST_REDIS_URL").unwrap_or_else(|_| DEFAULT_REDIS_URL.to_owned());
    let prefix = format!("telenet-test-{}:", uuid::Uuid::new_v4().simple());
    let store = match connect(&url, &prefix, test_thresholds()).await {
        Ok(store) => store,
        Err(error) => panic!(
            "Redis is required for this test and is not reachable at {url} ({error}); \
             start it (scripts/services.sh ensure) or set TELENET_TEST_REDIS_URL"
        ),
    };

    // Clean up even when a case panics, then report the panic.
    let outcome = std::panic::AssertUnwindSafe(run_all(store, test_thresholds()))
        .catch_unwind()
        .await;
    let leftover = delete_keys(&url, &prefix).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    match leftover {
        Ok(deleted) => eprintln!("deleted {deleted} leftover keys under {prefix}"),
        Err(error) => panic!("cannot delete the test keys under {prefix}: {error}"),
    }
}

/// Deletes every key under `prefix`; returns how many there were.
async fn delete_keys(url: &str, prefix: &str) -> redis::RedisResult<usize> {
    let client = redis::Client::open(url)?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    let mut cursor: u64 = 0;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut connection)
            .await?;
        if !keys.is_empty() {
            let _: usize = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut connection)
                .await?;
            deleted += keys.len();
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}
