//! Bearer authentication against `Members/Authenticate`, its cache, and the
//! endpoints that need nothing but the member and presence.

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{
    AGENT_ID, AGENT_TOKEN, OTHER_ID, OTHER_TOKEN, OTHER_WORKSPACE, OWNER_ID, OWNER_TOKEN,
    WORKSPACE, dead_channel, get, harness, harness_with, json, send,
};
use telenet_gateway::{Config, Upstreams};
use telenet_presence::{MemoryPresence, SharedPresence, Thresholds};

#[tokio::test]
async fn missing_token_is_401_with_bearer_challenge() {
    let h = harness().await;
    for uri in [
        "/v1/me",
        "/v1/conversations",
        "/v1/members",
        "/v1/channels",
        "/v1/reports/daily-volume",
    ] {
        let reply = send(&h.app, get(uri, None)).await;
        let body = reply.problem(401);
        assert_eq!(body["code"], "unauthenticated");
        assert_eq!(reply.header("www-authenticate"), Some("Bearer"), "{uri}");
    }
    assert_eq!(h.members.calls(), 0, "no upstream call without a token");
}

#[tokio::test]
async fn non_bearer_scheme_is_401() {
    let h = harness().await;
    let request = Request::get("/v1/me")
        .header(header::AUTHORIZATION, "Basic dXNlcjpwYXNz")
        .body(Body::empty())
        .expect("request");
    let reply = send(&h.app, request).await;
    reply.problem(401);
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
}

#[tokio::test]
async fn unknown_or_malformed_token_is_401_invalid_token() {
    let h = harness().await;
    for token in ["tok_nobody", "tok\twith_tab"] {
        let reply = send(&h.app, get("/v1/me", Some(token))).await;
        reply.problem(401);
        let challenge = reply.header("www-authenticate").unwrap_or_default();
        assert!(challenge.starts_with("Bearer"), "{challenge}");
        assert!(challenge.contains("invalid_token"), "{challenge}");
    }
}

#[tokio::test]
async fn token_is_checked_before_the_body() {
    let h = harness().await;
    // A malformed body with no token is refused for the token, not the body.
    let reply = send(&h.app, json("PUT", "/v1/me/status", None, "{not json")).await;
    reply.problem(401);
}

#[tokio::test]
async fn me_returns_the_member_with_presence() {
    let h = harness().await;
    let reply = send(&h.app, get("/v1/me", Some(OWNER_TOKEN))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.json(),
        serde_json::json!({
            "user_id": OWNER_ID,
            "workspace_id": WORKSPACE,
            "name": "Olivia",
            "email": "olivia@example.com",
            "access_level": "owner",
            "created_at": "2023-11-14T22:13:20Z",
            "status": "offline",
        })
    );

    let reply = send(
        &h.app,
        Request::post("/v1/me/heartbeat")
            .header(header::AUTHORIZATION, format!("Bearer {OWNER_TOKEN}"))
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let presence = reply.json();
    assert_eq!(presence["user_id"], OWNER_ID);
    assert_eq!(presence["status"], "online");
    assert_eq!(presence["chosen"], "online");
    assert!(
        presence["last_seen_at"]
            .as_str()
            .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok())
    );

    let reply = send(
        &h.app,
        json(
            "PUT",
            "/v1/me/status",
            Some(OWNER_TOKEN),
            r#"{"status":"away"}"#,
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["status"], "away");
    assert_eq!(reply.json()["chosen"], "away");

    let reply = send(&h.app, get("/v1/me", Some(OWNER_TOKEN))).await;
    assert_eq!(reply.json()["status"], "away");

    // Presence is per member: the agent has not shown up.
    let reply = send(&h.app, get("/v1/me", Some(AGENT_TOKEN))).await;
    assert_eq!(reply.json()["access_level"], "agent");
    assert_eq!(reply.json()["status"], "offline");
}

#[tokio::test]
async fn tokens_are_cached_for_the_ttl() {
    let h = harness().await;
    for _ in 0..3 {
        assert_eq!(
            send(&h.app, get("/v1/me", Some(OWNER_TOKEN))).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(h.members.calls(), 1);
    for _ in 0..3 {
        send(&h.app, get("/v1/me", Some("tok_nobody")))
            .await
            .problem(401);
    }
    assert_eq!(h.members.calls(), 2, "unknown tokens are cached too");
}

#[tokio::test]
async fn zero_ttl_disables_the_cache() {
    let h = harness_with(Config {
        auth_cache_ttl_ms: 0,
        ..Config::default()
    })
    .await;
    for _ in 0..3 {
        assert_eq!(
            send(&h.app, get("/v1/me", Some(OWNER_TOKEN))).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(h.members.calls(), 3);
}

#[tokio::test]
async fn unreachable_members_service_is_503_not_401() {
    let presence: SharedPresence = Arc::new(MemoryPresence::new(Thresholds::default()));
    let app = telenet_gateway::router(
        Upstreams::single(dead_channel()),
        presence,
        Config::default(),
    );
    let reply = send(&app, get("/v1/me", Some(OWNER_TOKEN))).await;
    reply.problem(503);
    assert_eq!(reply.header("www-authenticate"), None);
}

#[tokio::test]
async fn only_owners_and_managers_create_channels() {
    let h = harness().await;
    let body = r#"{"kind":"custom","name":"Support","outbound_url":"https://example.com/out"}"#;
    let reply = send(
        &h.app,
        json("POST", "/v1/channels", Some(AGENT_TOKEN), body),
    )
    .await;
    let problem = reply.problem(403);
    assert_eq!(problem["code"], "permission_denied");

    // The owner passes the check and reaches the (unreachable) registry.
    let reply = send(
        &h.app,
        json("POST", "/v1/channels", Some(OWNER_TOKEN), body),
    )
    .await;
    reply.problem(503);
}

#[tokio::test]
async fn members_are_listed_with_presence_within_the_callers_workspace() {
    let h = harness().await;
    h.presence
        .heartbeat(WORKSPACE, OWNER_ID)
        .await
        .expect("heartbeat");
    // Same user id in another workspace must not leak into this one.
    h.presence
        .heartbeat(OTHER_WORKSPACE, AGENT_ID)
        .await
        .expect("heartbeat");

    let reply = send(&h.app, get("/v1/members", Some(AGENT_TOKEN))).await;
    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.json();
    let items = body["items"].as_array().expect("items");
    let summary: Vec<(&str, &str, &str)> = items
        .iter()
        .map(|m| {
            (
                m["user_id"].as_str().unwrap_or_default(),
                m["access_level"].as_str().unwrap_or_default(),
                m["status"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (AGENT_ID, "agent", "offline"),
            (OWNER_ID, "owner", "online")
        ]
    );

    let reply = send(&h.app, get("/v1/members", Some(OTHER_TOKEN))).await;
    let body = reply.json();
    let ids: Vec<&str> = body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|m| m["user_id"].as_str())
        .collect();
    assert_eq!(ids, vec![OTHER_ID]);
    assert_eq!(body["items"][0]["workspace_id"], OTHER_WORKSPACE);
}

#[tokio::test]
async fn request_id_is_forwarded_upstream() {
    let h = harness().await;
    let request = Request::get("/v1/members")
        .header(header::AUTHORIZATION, format!("Bearer {OWNER_TOKEN}"))
        .header("x-request-id", "req-members-1")
        .body(Body::empty())
        .expect("request");
    let reply = send(&h.app, request).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-request-id"), Some("req-members-1"));
    assert_eq!(
        h.members.request_ids(),
        vec!["req-members-1", "req-members-1"]
    );
}
