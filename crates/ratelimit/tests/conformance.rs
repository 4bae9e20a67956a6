//! Runs the rate-limit conformance suite against every store: in memory
//! and a real Redis (`redis://127.0.0.1:6379`, or `TELENET_TEST_REDIS_URL`),
//! where two stores on one prefix stand for two replicas. An unreachable
//! Redis fails the test: it is never skipped. Then what only Redis does:
//! keys expire once their bucket is full again, and a Redis that is away
//! lets requests through (counted, never an error).

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use telenet_kit::metrics::Metrics;
use telenet_ratelimit::conformance::run_all;
use telenet_ratelimit::{
    Cell, Limit, MemoryStore, Quota, RateLimitStore, RateLimiter, RedisStore, SharedStore, Verdict,
    connect,
};

const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

fn redis_url() -> String {
    std::env::var("TELENET_TEST_REDIS_URL").unwrap_or_else(|_| DEFAULT_REDIS_URL.to_owned())
}

fn fresh_prefix() -> String {
    format!("telenet-test-{}:", uuid::Uuid::new_v4().simple())
}

/// A Redis store on `prefix`, connected (its first check would otherwise
/// pay for the connection).
async fn redis_store(url: &str, prefix: &str) -> SharedStore {
    let store = match RedisStore::open(url, prefix) {
        Ok(store) => store,
        Err(error) => panic!("cannot open the Redis store at {url}: {error}"),
    };
    if let Err(error) = store.ping().await {
        panic!(
            "Redis is required for this test and is not reachable at {url} ({error}); \
             start it (scripts/services.sh ensure) or set TELENET_TEST_REDIS_URL"
        );
    }
    Arc::new(store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_meets_the_contract() {
    let store = connect("memory://", "").unwrap_or_else(|e| panic!("{e}"));
    run_all(store.clone(), store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_meets_the_contract() {
    let url = redis_url();
    let prefix = fresh_prefix();
    let store = redis_store(&url, &prefix).await;
    let replica = redis_store(&url, &prefix).await;
    let outcome = std::panic::AssertUnwindSafe(run_all(store, replica))
        .catch_unwind()
        .await;
    let leftover = delete_keys(&url, &prefix).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    if let Err(error) = leftover {
        panic!("cannot delete the test keys under {prefix}: {error}");
    }
}

#[tokio::test]
async fn redis_keys_carry_the_prefix_and_expire_when_the_bucket_is_full_again() {
    let url = redis_url();
    let prefix = fresh_prefix();
    let store = redis_store(&url, &prefix).await;
    let quota = Quota::per_second(1, 3).unwrap_or_else(|e| panic!("{e}"));
    store
        .check(&[Cell {
            key: "token:abc",
            quota,
        }])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let client = redis::Client::open(url.as_str()).unwrap_or_else(|e| panic!("{e}"));
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{prefix}ratelimit:token:abc"))
        .query_async(&mut connection)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // One request taken: full again one interval later.
    assert!(ttl > 0 && ttl <= 1_000, "ttl {ttl} ms");
    delete_keys(&url, &prefix)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn an_unreachable_redis_lets_requests_through_and_is_counted() {
    // A port nothing listens on.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        listener
            .local_addr()
            .unwrap_or_else(|e| panic!("{e}"))
            .port()
    };
    let store = connect(&format!("redis://127.0.0.1:{port}"), "p:")
        .unwrap_or_else(|e| panic!("opening does not connect: {e}"));
    let metrics = Metrics::new();
    let limiter = RateLimiter::new(store.clone(), &metrics);
    let limit = Limit {
        scope: "token",
        quota: Quota::per_second(1, 1).unwrap_or_else(|e| panic!("{e}")),
    };
    for _ in 0..5 {
        assert_eq!(limiter.check(&[(limit, "t")]).await, Verdict::Allowed);
    }
    assert!(store.ping().await.is_err(), "the store is away");
    let text = metrics.encode().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        text.lines()
            .any(|l| l == "telenet_rate_limit_store_errors_total 5"),
        "{text}"
    );
}

#[tokio::test]
async fn refusals_are_counted_by_scope() {
    let metrics = Metrics::new();
    let limiter = RateLimiter::new(Arc::new(MemoryStore::default()), &metrics);
    let token = Limit {
        scope: "token",
        quota: Quota::per_second(1, 1).unwrap_or_else(|e| panic!("{e}")),
    };
    let workspace = Limit {
        scope: "workspace",
        quota: Quota::per_second(1, 2).unwrap_or_else(|e| panic!("{e}")),
    };
    assert!(
        limiter
            .check(&[(token, "a"), (workspace, "w")])
            .await
            .is_allowed()
    );
    match limiter.check(&[(token, "a"), (workspace, "w")]).await {
        Verdict::Limited {
            scope,
            burst,
            retry_after,
        } => {
            assert_eq!((scope, burst), ("token", 1));
            assert!(retry_after <= Duration::from_secs(1), "{retry_after:?}");
        }
        Verdict::Allowed => panic!("the token's burst is used up"),
    }
    // Another token of the same workspace: the workspace's second request.
    assert!(
        limiter
            .check(&[(token, "b"), (workspace, "w")])
            .await
            .is_allowed()
    );
    match limiter.check(&[(token, "c"), (workspace, "w")]).await {
        Verdict::Limited { scope, .. } => assert_eq!(scope, "workspace"),
        Verdict::Allowed => panic!("the workspace's burst is used up"),
    }
    let text = metrics.encode().unwrap_or_else(|e| panic!("{e}"));
    for line in [
        r#"telenet_rate_limited_total{scope="token"} 1"#,
        r#"telenet_rate_limited_total{scope="workspace"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "{line}:\n{text}");
    }
}

/// Deletes every key under `prefix`.
async fn delete_keys(url: &str, prefix: &str) -> redis::RedisResult<()> {
    let client = redis::Client::open(url)?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut connection)
        .await?;
    if !keys.is_empty() {
        let _: usize = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut connection)
            .await?;
    }
    Ok(())
}
