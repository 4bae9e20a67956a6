//! Errors are problem+json (RFC 9457): the gRPC status table, and axum's own
//! rejections (unknown route, wrong method, bad JSON, body too large).

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::response::IntoResponse;
use common::{OWNER_TOKEN, get, harness, harness_with, json, offline_app, send};
use telenet_gateway::{Config, Problem};

#[test]
fn grpc_codes_map_to_http_statuses() {
    use tonic::Code;
    let table = [
        (Code::InvalidArgument, 400, "invalid_argument"),
        (Code::OutOfRange, 400, "invalid_argument"),
        (Code::Unauthenticated, 401, "unauthenticated"),
        (Code::PermissionDenied, 403, "permission_denied"),
        (Code::NotFound, 404, "not_found"),
        (Code::AlreadyExists, 409, "already_exists"),
        (Code::Aborted, 409, "aborted"),
        (Code::FailedPrecondition, 409, "failed_precondition"),
        (Code::ResourceExhausted, 429, "resource_exhausted"),
        (Code::Unavailable, 503, "unavailable"),
        (Code::Cancelled, 503, "unavailable"),
        (Code::DeadlineExceeded, 504, "deadline_exceeded"),
        (Code::Internal, 500, "internal"),
        (Code::Unknown, 500, "internal"),
        (Code::Unimplemented, 500, "internal"),
        (Code::DataLoss, 500, "internal"),
    ];
    for (code, http, name) in table {
        let problem = Problem::from_grpc(&tonic::Status::new(code, "conversation is closed"));
        assert_eq!(problem.status, http, "{code:?}");
        assert_eq!(problem.code, name, "{code:?}");
        assert_eq!(problem.type_uri, "about:blank");
        assert_eq!(
            Some(problem.title.as_str()),
            StatusCode::from_u16(http)
                .ok()
                .and_then(|s| s.canonical_reason())
        );
    }
}

#[test]
fn client_errors_keep_the_upstream_message() {
    let problem = Problem::from_grpc(&tonic::Status::not_found("conversation c-1 not found"));
    assert_eq!(problem.detail, "conversation c-1 not found");
    let problem = Problem::from_grpc(&tonic::Status::invalid_argument(
        "name must be 1 to 100 characters",
    ));
    assert_eq!(problem.detail, "name must be 1 to 100 characters");
}

#[test]
fn server_errors_are_opaque() {
    let secret = "pq: password authentication failed for user telenet at 10.0.0.7:5432";
    for code in [
        tonic::Code::Internal,
        tonic::Code::Unknown,
        tonic::Code::Unavailable,
        tonic::Code::DeadlineExceeded,
    ] {
        let problem = Problem::from_grpc(&tonic::Status::new(code, secret));
        assert!(
            !problem.detail.contains("10.0.0.7"),
            "{code:?} leaks: {}",
            problem.detail
        );
        assert!(
            !problem.detail.contains("password"),
            "{code:?} leaks: {}",
            problem.detail
        );
        assert!(!problem.detail.is_empty());
    }
    assert_eq!(
        Problem::from_grpc(&tonic::Status::internal(secret)).detail,
        "internal error"
    );
}

#[test]
fn resource_exhausted_about_size_is_413() {
    let problem = Problem::from_grpc(&tonic::Status::resource_exhausted(
        "message too large: 5242880 bytes, limit 4194304",
    ));
    assert_eq!(problem.status, 413);
    assert_eq!(problem.code, "payload_too_large");

    let mut status = tonic::Status::resource_exhausted("upload exceeds the limit");
    status.metadata_mut().insert(
        "telenet-error-code",
        "payload_too_large".parse().expect("ascii"),
    );
    assert_eq!(Problem::from_grpc(&status).status, 413);

    assert_eq!(
        Problem::from_grpc(&tonic::Status::resource_exhausted("slow down")).status,
        429
    );
}

#[tokio::test]
async fn problem_response_has_media_type_and_members() {
    let response = Problem::invalid_field(
        "page_size",
        "page_size must be an integer between 1 and 200",
    )
    .into_response();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .expect("body")
        .to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(
        body,
        serde_json::json!({
            "type": "about:blank",
            "title": "Bad Request",
            "status": 400,
            "detail": "page_size must be an integer between 1 and 200",
            "code": "invalid_argument",
            "field": "page_size",
        })
    );
}

#[tokio::test]
async fn unknown_route_is_404_problem() {
    let app = offline_app();
    let reply = send(&app, get("/v1/nope", None)).await;
    let body = reply.problem(404);
    assert_eq!(body["code"], "not_found");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("/v1/nope")
    );

    // Unknown routes are 404 whether or not a token is given.
    let reply = send(&app, get("/v2/conversations", Some("whatever"))).await;
    reply.problem(404);
}

#[tokio::test]
async fn wrong_method_is_405_problem_with_allow() {
    let app = offline_app();
    let request = Request::delete("/v1/me")
        .body(Body::empty())
        .expect("request");
    let reply = send(&app, request).await;
    let body = reply.problem(405);
    assert_eq!(body["code"], "method_not_allowed");
    let allow = reply.header("allow").unwrap_or_default();
    assert!(allow.contains("GET"), "allow: {allow}");
}

#[tokio::test]
async fn malformed_json_is_400_problem() {
    let h = harness().await;
    let reply = send(
        &h.app,
        json("PUT", "/v1/me/status", Some(OWNER_TOKEN), "{\"status\": "),
    )
    .await;
    let body = reply.problem(400);
    assert_eq!(body["code"], "invalid_argument");

    // Well-formed JSON of the wrong shape is 400 too, naming the field.
    let reply = send(
        &h.app,
        json(
            "PUT",
            "/v1/me/status",
            Some(OWNER_TOKEN),
            "{\"status\": \"busy\"}",
        ),
    )
    .await;
    let body = reply.problem(400);
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("status"),
        "{body}"
    );

    let reply = send(
        &h.app,
        json(
            "PUT",
            "/v1/me/status",
            Some(OWNER_TOKEN),
            "{\"state\": \"away\"}",
        ),
    )
    .await;
    reply.problem(400);
}

#[tokio::test]
async fn json_body_without_json_content_type_is_415_problem() {
    let h = harness().await;
    let request = Request::put("/v1/me/status")
        .header(header::AUTHORIZATION, format!("Bearer {OWNER_TOKEN}"))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from("{\"status\":\"away\"}"))
        .expect("request");
    let reply = send(&h.app, request).await;
    reply.problem(415);
}

#[tokio::test]
async fn declared_oversized_body_is_413_problem() {
    let cfg = Config {
        max_body_bytes: 64,
        ..Config::default()
    };
    let h = harness_with(cfg).await;
    let big = format!("{{\"status\":\"away\",\"pad\":\"{}\"}}", "x".repeat(200));
    let request = Request::put("/v1/me/status")
        .header(header::AUTHORIZATION, format!("Bearer {OWNER_TOKEN}"))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, big.len())
        .body(Body::from(big))
        .expect("request");
    let reply = send(&h.app, request).await;
    let body = reply.problem(413);
    assert_eq!(body["code"], "payload_too_large");
}

#[tokio::test]
async fn streamed_oversized_body_is_413_problem() {
    let cfg = Config {
        max_body_bytes: 64,
        ..Config::default()
    };
    let h = harness_with(cfg).await;
    // No Content-Length: the limit trips while the body is read.
    let big = format!("{{\"status\":\"away\",\"pad\":\"{}\"}}", "x".repeat(200));
    let reply = send(&h.app, json("PUT", "/v1/me/status", Some(OWNER_TOKEN), big)).await;
    let body = reply.problem(413);
    assert_eq!(body["code"], "payload_too_large");
}

#[tokio::test]
async fn request_ids_are_set_and_propagated() {
    let app = offline_app();
    let reply = send(&app, get("/healthz", None)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let generated = reply.header("x-request-id").unwrap_or_default();
    assert!(
        uuid::Uuid::try_parse(generated).is_ok(),
        "x-request-id: {generated:?}"
    );

    let request = Request::get("/v1/nope")
        .header("x-request-id", "req-42")
        .body(Body::empty())
        .expect("request");
    let reply = send(&app, request).await;
    reply.problem(404);
    assert_eq!(reply.header("x-request-id"), Some("req-42"));
}

#[tokio::test]
async fn healthz_needs_no_token_and_no_upstream() {
    let app = offline_app();
    let reply = send(&app, get("/healthz", None)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json(), serde_json::json!({"status": "ok"}));
}

#[tokio::test]
async fn unreachable_upstream_is_503_problem() {
    let h = harness().await;
    // Authentication succeeds; the conversations service is unreachable.
    let reply = send(
        &h.app,
        get("/v1/conversations?status=open", Some(OWNER_TOKEN)),
    )
    .await;
    let body = reply.problem(503);
    assert_eq!(body["code"], "unavailable");
    assert!(
        !body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("127.0.0.1"),
        "{body}"
    );
}
