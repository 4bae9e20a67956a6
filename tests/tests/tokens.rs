//! API tokens end to end: revocation takes effect at once on every gateway
//! replica (two gateways on one RabbitMQ and one database, each caching
//! tokens for an hour, so only the `member.token_revoked` broadcast can
//! make the second refuse the token), expiry, last use, and who may list
//! and revoke whose tokens.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use telenet::{Running, ServiceName};
use telenet_proto::conversations::v1::members_client::MembersClient;
use telenet_proto::conversations::v1::{AccessLevel, CreateMemberRequest, CreateTokenRequest};
use telenet_tests::{eventually, world};
use tokio_util::sync::CancellationToken;

/// Long enough that a test passing within it proves the event, not the TTL.
const HOUR_MS: u64 = 3_600_000;

async fn call(
    base: &str,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn base(running: &Running) -> String {
    format!("http://{}", running.gateway_addr.expect("gateway"))
}

/// Conversations and a gateway on real PostgreSQL and RabbitMQ, and a
/// second gateway (its own process as far as the bus knows) on the same.
async fn two_gateways(dir: &std::path::Path) -> (Running, Running, CancellationToken) {
    let mut config = world::real(dir).await;
    config.gateway.auth_cache_ttl_ms = HOUR_MS;
    let (first, stop) = world::start(
        config.clone(),
        &[ServiceName::Conversations, ServiceName::Gateway],
    )
    .await;
    let here = format!("http://{}", first.grpc_addr);
    let mut second = config;
    second.seed = false;
    for service in [
        "ingress",
        "contacts",
        "conversations",
        "media",
        "dispatch",
        "reporting",
    ] {
        if let Some(endpoint) = second.endpoints.of_mut(service) {
            endpoint.clone_from(&here);
        }
    }
    let (second, _) = {
        let running = telenet::Suite::new(second, [ServiceName::Gateway])
            .with_retry(world::test_retry())
            .start(stop.clone())
            .await
            .expect("second gateway");
        (running, ())
    };
    (first, second, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_refused_at_once_by_every_gateway() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (first, second, stop) = two_gateways(dir.path()).await;
    let owner = first.seed.clone().expect("seed").token;
    let (one, two) = (base(&first), base(&second));

    let (status, created) = call(
        &one,
        &owner,
        Method::POST,
        "/v1/tokens",
        Some(json!({"label": "ci"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let token = created["token"].as_str().expect("token").to_owned();
    let id = created["api_token"]["id"].as_str().expect("id").to_owned();
    assert!(token.starts_with(created["api_token"]["prefix"].as_str().expect("prefix")));

    // Both gateways authenticate it, and so remember it for an hour.
    for gateway in [&one, &two] {
        let (status, me) = call(gateway, &token, Method::GET, "/v1/me", None).await;
        assert_eq!(status, 200, "{gateway}: {me}");
    }

    let (status, revoked) = call(
        &one,
        &owner,
        Method::DELETE,
        &format!("/v1/tokens/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{revoked}");
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    // Idempotent: the same token, revoked when it first was.
    let (status, again) = call(
        &one,
        &owner,
        Method::DELETE,
        &format!("/v1/tokens/{id}"),
        None,
    )
    .await;
    assert_eq!(
        (status, &again["revoked_at"]),
        (200, &revoked["revoked_at"])
    );

    for gateway in [&two, &one] {
        eventually(
            "the revoked token refused",
            Duration::from_secs(20),
            || async {
                let (status, _) = call(gateway, &token, Method::GET, "/v1/me", None).await;
                (status == 401).then_some(())
            },
        )
        .await;
    }

    // Listed without its value, revoked, with its last use at a minute.
    let (status, page) = call(
        &two,
        &owner,
        Method::GET,
        "/v1/tokens?include_revoked=true",
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert!(
        !page.to_string().contains(&token),
        "a token value was listed"
    );
    let listed = page["items"]
        .as_array()
        .and_then(|items| items.iter().find(|t| t["id"] == id.as_str()))
        .cloned()
        .expect("the revoked token is listed");
    let last_used = listed["last_used_at"].as_str().expect("last used");
    let last_used = chrono::DateTime::parse_from_rfc3339(last_used).expect("time");
    assert_eq!(chrono::Timelike::second(&last_used), 0, "minute precision");
    let (_, valid_only) = call(&two, &owner, Method::GET, "/v1/tokens", None).await;
    assert!(
        !valid_only.to_string().contains(&id),
        "revoked tokens are listed only on request"
    );

    stop.cancel();
    second.wait().await;
    first.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_refused_though_the_cache_is_long() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (first, second, stop) = two_gateways(dir.path()).await;
    let owner = first.seed.clone().expect("seed").token;
    let one = base(&first);

    for bad in [
        json!({"expires_at": "2001-01-01T00:00:00Z"}),
        json!({"expires_at": (chrono::Utc::now() + chrono::Duration::days(400)).to_rfc3339()}),
        json!({"label": "x".repeat(101)}),
    ] {
        let (status, problem) =
            call(&one, &owner, Method::POST, "/v1/tokens", Some(bad.clone())).await;
        assert_eq!(status, 400, "{bad}: {problem}");
    }

    let expires = chrono::Utc::now() + chrono::Duration::seconds(3);
    let (status, created) = call(
        &one,
        &owner,
        Method::POST,
        "/v1/tokens",
        Some(json!({"label": "short", "expires_at": expires.to_rfc3339()})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert!(created["api_token"]["expires_at"].is_string(), "{created}");
    let token = created["token"].as_str().expect("token").to_owned();
    let (status, _) = call(&one, &token, Method::GET, "/v1/me", None).await;
    assert_eq!(status, 200, "valid before its expiry (and now cached)");
    let left = (expires - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(left + Duration::from_millis(200)).await;
    let (status, problem) = call(&one, &token, Method::GET, "/v1/me", None).await;
    assert_eq!(status, 401, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("expired")),
        "{problem}"
    );

    stop.cancel();
    second.wait().await;
    first.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_manage_only_their_own_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (first, second, stop) = two_gateways(dir.path()).await;
    let seed = first.seed.clone().expect("seed");
    let one = base(&first);
    let mut members = MembersClient::connect(format!("http://{}", first.grpc_addr))
        .await
        .expect("grpc");
    let agent = members
        .create_member(CreateMemberRequest {
            workspace_id: seed.workspace_id.clone(),
            name: "Ari".into(),
            email: "ari@example.test".into(),
            access_level: AccessLevel::Agent.into(),
        })
        .await
        .expect("agent")
        .into_inner();
    let agent_token = members
        .create_token(CreateTokenRequest {
            workspace_id: seed.workspace_id.clone(),
            user_id: agent.user_id.clone(),
            label: "agent".into(),
            expires_at: None,
        })
        .await
        .expect("agent token")
        .into_inner();
    let agent_token_id = agent_token.api_token.expect("listed").id;

    // The agent sees their own token only; asking for the owner's is refused.
    let (status, page) = call(&one, &agent_token.token, Method::GET, "/v1/tokens", None).await;
    assert_eq!(status, 200, "{page}");
    let users: Vec<&str> = page["items"]
        .as_array()
        .map(|items| items.iter().filter_map(|t| t["user_id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(users, [agent.user_id.as_str()]);
    let (status, _) = call(
        &one,
        &agent_token.token,
        Method::GET,
        &format!("/v1/tokens?user_id={}", seed.user_id),
        None,
    )
    .await;
    assert_eq!(status, 403);

    // The owner sees both, and the agent may not revoke the owner's.
    let (_, all) = call(&one, &seed.token, Method::GET, "/v1/tokens", None).await;
    let owner_token_id = all["items"]
        .as_array()
        .and_then(|items| items.iter().find(|t| t["user_id"] == seed.user_id.as_str()))
        .and_then(|t| t["id"].as_str())
        .expect("the owner's token")
        .to_owned();
    assert!(all.to_string().contains(&agent_token_id));
    let (status, _) = call(
        &one,
        &agent_token.token,
        Method::DELETE,
        &format!("/v1/tokens/{owner_token_id}"),
        None,
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = call(&one, &seed.token, Method::GET, "/v1/me", None).await;
    assert_eq!(status, 200, "the owner's token still works");
    // An id the workspace does not have.
    let (status, _) = call(
        &one,
        &seed.token,
        Method::DELETE,
        &format!("/v1/tokens/{}", uuid::Uuid::now_v7()),
        None,
    )
    .await;
    assert_eq!(status, 404);
    // The agent revokes their own.
    let (status, _) = call(
        &one,
        &agent_token.token,
        Method::DELETE,
        &format!("/v1/tokens/{agent_token_id}"),
        None,
    )
    .await;
    assert_eq!(status, 200);

    stop.cancel();
    second.wait().await;
    first.wait().await;
}
