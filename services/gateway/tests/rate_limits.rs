//! Rate limits per token and per workspace, over HTTP on a real listener,
//! counted in memory and in Redis (`redis://127.0.0.1:6379`, or
//! `TELENET_TEST_REDIS_URL`; an unreachable Redis fails the test).

mod common;

use std::sync::Arc;

use common::{AGENT_TOKEN, FakeMembers, OTHER_TOKEN, OWNER_TOKEN, dead_channel, spawn_members};
use telenet_gateway::{Config, RateLimits, Upstreams};
use telenet_kit::metrics::Metrics;
use telenet_presence::{MemoryPresence, SharedPresence, Thresholds};
use telenet_ratelimit::{RateLimiter, SharedStore};
use tokio_util::sync::CancellationToken;

/// The gateway served on a loopback port with `limits` counted in `store`.
struct Served {
    base: String,
    metrics: Metrics,
    http: reqwest::Client,
    stop: CancellationToken,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn serve(limits: RateLimits, store: SharedStore) -> Served {
    let channel = spawn_members(FakeMembers::standard()).await;
    let upstreams = Upstreams {
        members: channel,
        ..Upstreams::single(dead_channel())
    };
    let presence: SharedPresence = Arc::new(MemoryPresence::new(Thresholds::default()));
    let metrics = Metrics::new();
    let config = Config {
        rate_limits: limits,
        ..Config::default()
    };
    let app = telenet_gateway::router_with_limiter(
        upstreams,
        presence,
        config,
        RateLimiter::new(store, &metrics),
    )
    .expect("valid limits");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let stop = CancellationToken::new();
    tokio::spawn(telenet_kit::http::serve(
        listener,
        app,
        Default::default(),
        stop.clone(),
    ));
    Served {
        base,
        metrics,
        http: reqwest::Client::new(),
        stop,
    }
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: serde_json::Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Served {
    async fn me(&self, token: Option<&str>) -> Answer {
        let mut request = self.http.get(format!("{}/v1/me", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        Answer {
            status,
            headers,
            body,
        }
    }

    fn metrics(&self) -> String {
        self.metrics.encode().expect("metrics")
    }
}

fn limits() -> RateLimits {
    RateLimits {
        enabled: true,
        per_token_per_second: 1,
        per_token_burst: 3,
        per_workspace_per_second: 1,
        per_workspace_burst: 5,
    }
}

fn memory() -> SharedStore {
    telenet_ratelimit::connect("memory://", "").expect("memory store")
}

async fn redis() -> SharedStore {
    let url = std::env::var("TELENET_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let prefix = format!("telenet-test-{}:", uuid::Uuid::new_v4().simple());
    let store = telenet_ratelimit::connect(&url, &prefix).expect("redis store");
    if let Err(error) = store.ping().await {
        panic!(
            "Redis is required for this test and is not reachable at {url} ({error}); \
             start it (scripts/services.sh ensure) or set TELENET_TEST_REDIS_URL"
        );
    }
    store
}

#[tokio::test]
async fn tokens_and_workspaces_are_limited_in_memory() {
    tokens_and_workspaces_are_limited(memory()).await;
}

#[tokio::test]
async fn tokens_and_workspaces_are_limited_in_redis() {
    tokens_and_workspaces_are_limited(redis().await).await;
}

async fn tokens_and_workspaces_are_limited(store: SharedStore) {
    let served = serve(limits(), store).await;

    // The token's burst, then 429 with the wait and the limit.
    for i in 0..3 {
        let ok = served.me(Some(OWNER_TOKEN)).await;
        assert_eq!(ok.status, 200, "request {i}: {:?}", ok.body);
    }
    let over = served.me(Some(OWNER_TOKEN)).await;
    assert_eq!(over.status, 429, "{:?}", over.body);
    assert_eq!(
        over.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(over.header("retry-after"), Some("1"));
    assert_eq!(over.header("ratelimit-limit"), Some("3"));
    assert_eq!(over.header("ratelimit-remaining"), Some("0"));
    assert_eq!(over.body["status"], 429);
    assert_eq!(over.body["code"], "resource_exhausted");
    assert!(
        over.body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("token")),
        "{:?}",
        over.body
    );

    // Another token of the same workspace has its own burst, until the
    // workspace's (5) is used up.
    for i in 0..2 {
        let ok = served.me(Some(AGENT_TOKEN)).await;
        assert_eq!(ok.status, 200, "request {i}: {:?}", ok.body);
    }
    let over = served.me(Some(AGENT_TOKEN)).await;
    assert_eq!(over.status, 429, "{:?}", over.body);
    assert_eq!(over.header("ratelimit-limit"), Some("5"));
    assert!(
        over.body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("workspace")),
        "{:?}",
        over.body
    );

    // Another workspace is not affected.
    let other = served.me(Some(OTHER_TOKEN)).await;
    assert_eq!(other.status, 200, "{:?}", other.body);

    // Requests without a valid token are refused for the token, not counted.
    assert_eq!(served.me(None).await.status, 401);
    assert_eq!(served.me(Some("tok_nobody")).await.status, 401);

    let text = served.metrics();
    for line in [
        r#"telenet_rate_limited_total{scope="token"} 1"#,
        r#"telenet_rate_limited_total{scope="workspace"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "{line}:\n{text}");
    }

    // Once the wait is over, the token is served again.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let again = served.me(Some(OWNER_TOKEN)).await;
    assert_eq!(again.status, 200, "{:?}", again.body);
}

#[tokio::test]
async fn without_limits_nothing_is_refused() {
    let served = serve(
        RateLimits {
            enabled: false,
            ..limits()
        },
        memory(),
    )
    .await;
    for i in 0..10 {
        let ok = served.me(Some(OWNER_TOKEN)).await;
        assert_eq!(ok.status, 200, "request {i}: {:?}", ok.body);
    }
}

#[tokio::test]
async fn limits_that_limit_nothing_sensible_are_refused_naming_the_keys() {
    let presence: SharedPresence = Arc::new(MemoryPresence::new(Thresholds::default()));
    let config = Config {
        rate_limits: RateLimits {
            per_token_burst: 0,
            ..limits()
        },
        ..Config::default()
    };
    let error = telenet_gateway::router_with_limiter(
        Upstreams::single(dead_channel()),
        presence,
        config,
        RateLimiter::new(memory(), &Metrics::new()),
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(
        error.contains("gateway.rate_limits.per_token_per_second and per_token_burst"),
        "{error}"
    );
}
