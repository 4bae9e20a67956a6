//! Query, path and body values are validated before any upstream call, with
//! a 400 problem naming the field.

mod common;

use common::{OWNER_TOKEN, get, harness, json, send};

async fn expect_field(method: &str, uri: &str, body: Option<&str>, field: &str) {
    let h = harness().await;
    let request = match body {
        None => get(uri, Some(OWNER_TOKEN)),
        Some(body) => json(method, uri, Some(OWNER_TOKEN), body.to_owned()),
    };
    let reply = send(&h.app, request).await;
    let problem = reply.problem(400);
    assert_eq!(problem["code"], "invalid_argument", "{uri}");
    assert_eq!(problem["field"], field, "{method} {uri}: {problem}");
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(field),
        "{uri}: detail {detail:?} should name {field}"
    );
}

#[tokio::test]
async fn conversation_filters_are_validated() {
    expect_field("GET", "/v1/conversations?status=pending", None, "status").await;
    expect_field(
        "GET",
        "/v1/conversations?assignee=someone",
        None,
        "assignee",
    )
    .await;
    expect_field("GET", "/v1/conversations?contact_id=42", None, "contact_id").await;
    expect_field("GET", "/v1/conversations?page_size=0", None, "page_size").await;
    expect_field("GET", "/v1/conversations?page_size=201", None, "page_size").await;
    expect_field("GET", "/v1/conversations?page_size=ten", None, "page_size").await;
    expect_field(
        "GET",
        "/v1/conversations?page_token=a%20b",
        None,
        "page_token",
    )
    .await;
}

#[tokio::test]
async fn unknown_query_parameters_are_refused() {
    let h = harness().await;
    let reply = send(
        &h.app,
        get("/v1/conversations?stauts=open", Some(OWNER_TOKEN)),
    )
    .await;
    let problem = reply.problem(400);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("stauts"),
        "{problem}"
    );
}

#[tokio::test]
async fn valid_filters_reach_the_upstream() {
    let h = harness().await;
    let user = "0198a3c1-0000-7000-8000-0000000000ff";
    for query in [
        "",
        "?status=open&assignee=me",
        "?status=closed&assignee=unassigned&page_size=200",
        "?status=any&assignee=any",
        &format!("?assignee={user}&page_size=1&page_token=abc"),
    ] {
        let reply = send(
            &h.app,
            get(&format!("/v1/conversations{query}"), Some(OWNER_TOKEN)),
        )
        .await;
        // Validation passed: the (unreachable) conversations service was called.
        reply.problem(503);
    }
}

#[tokio::test]
async fn ids_in_paths_are_validated() {
    expect_field("GET", "/v1/conversations/not-a-uuid", None, "id").await;
    expect_field("GET", "/v1/conversations/not-a-uuid/messages", None, "id").await;
    expect_field("GET", "/v1/contacts/123", None, "id").await;
    expect_field("POST", "/v1/conversations/nope/unassign", Some(""), "id").await;
}

#[tokio::test]
async fn paging_of_other_lists_is_validated() {
    expect_field("GET", "/v1/channels?page_size=500", None, "page_size").await;
    let id = "0198a3c1-0000-7000-8000-0000000000cc";
    expect_field(
        "GET",
        &format!("/v1/conversations/{id}/messages?page_size=-1"),
        None,
        "page_size",
    )
    .await;
}

#[tokio::test]
async fn bodies_are_validated() {
    let id = "0198a3c1-0000-7000-8000-0000000000cc";
    expect_field(
        "POST",
        &format!("/v1/conversations/{id}/messages"),
        Some(r#"{"text":"   "}"#),
        "text",
    )
    .await;
    expect_field(
        "POST",
        &format!("/v1/conversations/{id}/messages"),
        Some(r#"{"text":"hi","client_message_id":"has space"}"#),
        "client_message_id",
    )
    .await;
    expect_field(
        "POST",
        &format!("/v1/conversations/{id}/assign"),
        Some(r#"{"user_id":"bob"}"#),
        "user_id",
    )
    .await;
    expect_field(
        "POST",
        "/v1/channels",
        Some(r#"{"kind":"custom","name":"  ","outbound_url":"https://x.test"}"#),
        "name",
    )
    .await;
    expect_field(
        "POST",
        "/v1/channels",
        Some(r#"{"kind":"custom","name":"Support"}"#),
        "outbound_url",
    )
    .await;
}

#[tokio::test]
async fn missing_or_mistyped_body_fields_are_400() {
    let h = harness().await;
    let id = "0198a3c1-0000-7000-8000-0000000000cc";
    let cases = [
        (format!("/v1/conversations/{id}/messages"), r#"{}"#, "text"),
        (
            format!("/v1/conversations/{id}/messages"),
            r#"{"text":5}"#,
            "text",
        ),
        (
            format!("/v1/conversations/{id}/assign"),
            r#"{"user":"x"}"#,
            "user",
        ),
        (
            "/v1/channels".to_owned(),
            r#"{"kind":"fax","name":"x","outbound_url":"https://x.test"}"#,
            "fax",
        ),
    ];
    for (uri, body, mention) in cases {
        let reply = send(&h.app, json("POST", &uri, Some(OWNER_TOKEN), body)).await;
        let problem = reply.problem(400);
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(mention), "{uri} {body}: {detail}");
    }
}

#[tokio::test]
async fn close_accepts_an_empty_body_and_validates_a_given_one() {
    let h = harness().await;
    let id = "0198a3c1-0000-7000-8000-0000000000cc";
    let uri = format!("/v1/conversations/{id}/close");
    // Empty body: valid, reaches the (unreachable) service.
    send(&h.app, json("POST", &uri, Some(OWNER_TOKEN), ""))
        .await
        .problem(503);
    send(
        &h.app,
        json(
            "POST",
            &uri,
            Some(OWNER_TOKEN),
            r#"{"closing_note":{"category":"billing","summary":"refunded"}}"#,
        ),
    )
    .await
    .problem(503);
    send(
        &h.app,
        json(
            "POST",
            &uri,
            Some(OWNER_TOKEN),
            r#"{"closing_note":{"categori":"x"}}"#,
        ),
    )
    .await
    .problem(400);
}

#[tokio::test]
async fn link_lifetimes_outside_the_limits_are_refused_even_zero() {
    let file = "ab".repeat(32);
    let uri = format!("/v1/files/{file}/links");
    for ttl in ["0", "59", "604801"] {
        expect_field(
            "POST",
            &uri,
            Some(&format!(r#"{{"ttl_seconds":{ttl}}}"#)),
            "ttl_seconds",
        )
        .await;
    }
    let h = harness().await;
    for body in [
        r#"{"ttl_seconds":60}"#,
        r#"{"ttl_seconds":604800}"#,
        "{}",
        "",
    ] {
        // Valid: reaches the (unreachable) media service.
        send(&h.app, json("POST", &uri, Some(OWNER_TOKEN), body))
            .await
            .problem(503);
    }
}

/// An empty query value is an absent one, for every optional parameter.
#[tokio::test]
async fn empty_query_values_count_as_absent() {
    let h = harness().await;
    let file = "ab".repeat(32);
    let conversation = "0198a3c1-0000-7000-8000-0000000000cc";
    for uri in [
        "/v1/conversations?status=&assignee=&contact_id=&page_size=&page_token=".to_owned(),
        "/v1/channels?page_size=&page_token=".to_owned(),
        format!("/v1/conversations/{conversation}/messages?page_size="),
        format!("/v1/files/{file}/audio?peaks="),
        "/v1/reports/daily-volume?from=2025-01-01&to=2025-01-02&channel_id=".to_owned(),
    ] {
        // Valid: reaches the (unreachable) upstream.
        send(&h.app, get(&uri, Some(OWNER_TOKEN)))
            .await
            .problem(503);
    }
    for peaks in ["15", "1001", "many", "-1"] {
        expect_field(
            "GET",
            &format!("/v1/files/{file}/audio?peaks={peaks}"),
            None,
            "peaks",
        )
        .await;
    }
}

/// serde's structs also read an array of their fields; the API's bodies
/// and the objects in them are objects, and nothing else is read as one.
#[tokio::test]
async fn bodies_and_the_objects_in_them_must_be_objects() {
    let h = harness().await;
    let conversation = "0198a3c1-0000-7000-8000-0000000000cc";
    let file = "ab".repeat(32);
    let close = format!("/v1/conversations/{conversation}/close");
    let reply = format!("/v1/conversations/{conversation}/messages");
    let link = format!("/v1/files/{file}/links");
    for (uri, body) in [
        (close.as_str(), "[null]".to_owned()),
        (
            close.as_str(),
            r#"{"closing_note":[null, null]}"#.to_owned(),
        ),
        (close.as_str(), r#"{"closing_note":"billing"}"#.to_owned()),
        (reply.as_str(), r#"["hi", [], null]"#.to_owned()),
        (
            reply.as_str(),
            format!(r#"{{"text":"hi","attachments":[["{file}", null, null]]}}"#),
        ),
        (link.as_str(), "[null, null]".to_owned()),
        (link.as_str(), "3600".to_owned()),
        (
            "/v1/channels",
            r#"["custom", "x", "https://x.test"]"#.to_owned(),
        ),
    ] {
        let problem = send(&h.app, json("POST", uri, Some(OWNER_TOKEN), body.clone()))
            .await
            .problem(400);
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("object"), "{uri} {body}: {detail}");
    }
    // `null` for an absent optional object is fine.
    send(
        &h.app,
        json(
            "POST",
            &close,
            Some(OWNER_TOKEN),
            r#"{"closing_note":null}"#,
        ),
    )
    .await
    .problem(503);
}

/// A problem's detail quotes what was wrong, but not at any length.
#[tokio::test]
async fn details_quoting_the_request_are_kept_short() {
    let h = harness().await;
    let long = "x".repeat(5000);
    let query = send(
        &h.app,
        get(&format!("/v1/channels?{long}=1"), Some(OWNER_TOKEN)),
    )
    .await;
    let body = send(
        &h.app,
        json(
            "PUT",
            "/v1/me/status",
            Some(OWNER_TOKEN),
            format!(r#"{{"status":"away","{long}":1}}"#),
        ),
    )
    .await;
    for reply in [query, body] {
        let problem = reply.problem(400);
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(detail.len() <= 512, "{} bytes", detail.len());
        assert!(detail.contains("xxxx"), "{detail}");
    }
}

#[tokio::test]
async fn report_dates_are_validated() {
    let base = "/v1/reports/daily-volume";
    expect_field("GET", &format!("{base}?to=2025-01-31"), None, "from").await;
    expect_field("GET", &format!("{base}?from=2025-01-01"), None, "to").await;
    expect_field(
        "GET",
        &format!("{base}?from=2025-13-01&to=2025-12-31"),
        None,
        "from",
    )
    .await;
    expect_field(
        "GET",
        &format!("{base}?from=01/02/2025&to=2025-12-31"),
        None,
        "from",
    )
    .await;
    expect_field(
        "GET",
        &format!("{base}?from=2025-02-01&to=2025-01-31"),
        None,
        "to",
    )
    .await;
    expect_field(
        "GET",
        &format!("{base}?from=2024-01-01&to=2025-01-01"),
        None,
        "to",
    )
    .await;
    expect_field(
        "GET",
        &format!("{base}?from=2025-01-01&to=2025-01-31&channel_id=web"),
        None,
        "channel_id",
    )
    .await;

    let h = harness().await;
    let reply = send(
        &h.app,
        get(
            &format!("{base}?from=2024-01-01&to=2024-12-31"),
            Some(OWNER_TOKEN),
        ),
    )
    .await;
    reply.problem(503);
}

#[tokio::test]
async fn presence_status_must_be_known() {
    let h = harness().await;
    for body in [r#"{"status":"busy"}"#, r#"{"status":"ONLINE"}"#, r#"{}"#] {
        let reply = send(
            &h.app,
            json("PUT", "/v1/me/status", Some(OWNER_TOKEN), body),
        )
        .await;
        let problem = reply.problem(400);
        assert!(
            problem["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("status"),
            "{body}: {problem}"
        );
    }
}
