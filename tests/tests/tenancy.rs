//! The tenancy matrix of the REST API, generated from the gateway's own
//! OpenAPI document so that a new route cannot be left out: two workspaces,
//! A and B, each with a channel, a contact, a conversation with messages and
//! a file. Every operation of the document is called with A's token on B's
//! objects and must answer 404 (never 403, which would confirm the object
//! exists, and never B's data); the same call with B's token on B's objects
//! must not answer 404, which proves the call reached the object (the
//! matrix cannot pass by sending requests that fail for another reason).
//! Operations on no object (lists, reports, `me`) called with A's token
//! must not carry any of B's ids. Signed download links of B's files do not
//! open with A's workspace in the path.
//!
//! Each path parameter is filled from the collection it follows
//! (`/v1/conversations/{id}` → B's conversation); a parameter or a request
//! body the test does not know fails the test, naming the operation, so a
//! new route gets its row here when it is added.

use std::collections::BTreeMap;

use reqwest::Method;
use serde_json::{Value, json};
use telenet::ServiceName;
use telenet_tests::flow::Gateway;
use telenet_tests::tenancy::{Body, Objects, call, multipart_file, two_workspaces};
use telenet_tests::{Receiver, world};

/// The object of `b` a path parameter names, by the collection it follows.
fn fill(template: &str, b: &Objects) -> Result<String, String> {
    let segments: Vec<&str> = template.split('/').collect();
    let mut out = Vec::with_capacity(segments.len());
    for (i, segment) in segments.iter().enumerate() {
        if !(segment.starts_with('{') && segment.ends_with('}')) {
            out.push((*segment).to_owned());
            continue;
        }
        let collection = if i > 0 { segments[i - 1] } else { "" };
        let value = match (collection, *segment) {
            ("conversations", "{id}") => &b.conversation_id,
            ("contacts", "{id}") => &b.contact_id,
            ("channels", "{id}") => &b.channel_id,
            ("files", "{id}") => &b.file_id,
            ("messages", "{id}") => &b.message_id,
            ("members", "{id}") => &b.user_id,
            ("tokens", "{id}") => &b.token_id,
            (collection, parameter) => {
                return Err(format!(
                    "no object of workspace B for {parameter} after /{collection}/ in {template}: add it to fill()"
                ));
            }
        };
        out.push(value.clone());
    }
    Ok(out.join("/"))
}

/// The query string of an operation: every documented query parameter
/// that names an object (`channel_id`, …) names B's; the others take the
/// document's example.
fn query_of(operation: &Value, b: &Objects) -> Result<String, String> {
    let mut pairs = Vec::new();
    for parameter in operation["parameters"].as_array().into_iter().flatten() {
        if parameter["in"] != "query" {
            continue;
        }
        let name = parameter["name"].as_str().unwrap_or_default();
        let value = match name {
            "channel_id" => b.channel_id.clone(),
            "contact_id" => b.contact_id.clone(),
            "conversation_id" => b.conversation_id.clone(),
            "assignee_user_id" | "user_id" => b.user_id.clone(),
            name if name.ends_with("_id") => {
                return Err(format!("query parameter {name}: add it to query_of()"));
            }
            _ => match parameter["example"]
                .as_str()
                .or_else(|| parameter["schema"]["example"].as_str())
            {
                Some(example) => example.to_owned(),
                None => continue,
            },
        };
        pairs.push(format!("{name}={value}"));
    }
    Ok(if pairs.is_empty() {
        String::new()
    } else {
        format!("?{}", pairs.join("&"))
    })
}

/// A valid body for the operations that take one, so the call reaches the
/// object rather than failing validation.
fn body_of(method: &Method, template: &str, b: &Objects) -> Result<Option<Body>, String> {
    Ok(Some(match (method.as_str(), template) {
        ("POST", "/v1/conversations/{id}/messages") => Body::Json(json!({"text": "hi"})),
        ("POST", "/v1/conversations/{id}/assign") => Body::Json(json!({"user_id": b.user_id})),
        ("POST", "/v1/conversations/{id}/close") => {
            Body::Json(json!({"closing_note": {"summary": "done"}}))
        }
        ("PATCH", "/v1/channels/{id}") => Body::Json(json!({"name": "Shop, renamed"})),
        ("POST", "/v1/files/{id}/links")
        | ("POST", "/v1/conversations/{id}/unassign")
        | ("POST", "/v1/channels/{id}/test")
        | ("DELETE", "/v1/tokens/{id}") => {
            return Ok(None);
        }
        (m, t) => return Err(format!("no request body for {m} {t}: add it to body_of()")),
    }))
}

/// Operations that create in the caller's own workspace (nothing of B's
/// can be named): checked as lists are, by what they answer.
/// `None`: an operation the test does not know.
fn creates_in_own_workspace(method: &Method, template: &str) -> Option<Option<Body>> {
    Some(match (method.as_str(), template) {
        ("GET", _) | ("POST", "/v1/me/heartbeat") => None,
        ("POST", "/v1/channels") => Some(Body::Json(json!({
            "kind": "custom", "name": "A's", "outbound_url": "https://receiver.example/in"
        }))),
        ("POST", "/v1/files") => Some(Body::Multipart(multipart_file("A, again"))),
        ("PUT", "/v1/me/status") => Some(Body::Json(json!({"status": "online"}))),
        ("POST", "/v1/tokens") => Some(Body::Json(json!({"label": "A's"}))),
        // Every dead letter of the caller's own workspace (there are none).
        ("POST", "/v1/dead-letters/redrive" | "/v1/dead-letters/discard") => {
            Some(Body::Json(json!({"all": true})))
        }
        _ => return None,
    })
}

async fn matrix(config: telenet::Config) {
    let receiver = Receiver::start().await;
    let (running, token) = world::start(config, &ServiceName::ALL).await;
    let gateway = Gateway::of(&running);
    let (a, b) = two_workspaces(&running, &receiver).await;

    let (status, document) = call(&gateway, &a.token, Method::GET, "/openapi.json", None).await;
    assert_eq!(status, 200);
    let document: Value = serde_json::from_str(&document).expect("openapi");
    let paths = document["paths"].as_object().expect("paths");
    let mut rows: BTreeMap<String, String> = BTreeMap::new();
    let mut failures = Vec::new();
    // Mutating calls last, so they do not change what the others read.
    let mut operations: Vec<(Method, String)> = paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .into_iter()
                .flat_map(|o| o.keys())
                .filter_map(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok())
                .map(move |m| (m, path.clone()))
        })
        .collect();
    operations.sort_by_key(|(m, p)| (*m != Method::GET, p.ends_with("/close"), p.clone()));
    assert!(
        operations.len() >= 15,
        "the document lists {} operations",
        operations.len()
    );

    for (method, template) in operations {
        let name = format!("{method} {template}");
        if matches!(template.as_str(), "/healthz" | "/openapi.json") {
            rows.insert(name, "public".into());
            continue;
        }
        if template.starts_with("/v1/downloads/") {
            // A capability link: B's link with A's workspace in the path,
            // with A's token, does not open.
            let swapped = b
                .download_path
                .replacen(&b.workspace_id, &a.workspace_id, 1);
            let (status, text) = call(&gateway, &a.token, method.clone(), &swapped, None).await;
            if !(status == 404 || status == 403) || b.ids().iter().any(|id| text.contains(id)) {
                failures.push(format!(
                    "{name}: B's link under A's workspace answered {status}: {text}"
                ));
            }
            let (status, _) =
                call(&gateway, &b.token, method.clone(), &b.download_path, None).await;
            if status != 200 {
                failures.push(format!("{name}: B's own link answered {status}"));
            }
            rows.insert(name, "signed link bound to its workspace".into());
            continue;
        }
        let query = match query_of(&paths[&template][method.as_str().to_ascii_lowercase()], &b) {
            Ok(q) => q,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        if !template.contains('{') {
            // No object named in the path (a filter may name one of B's in
            // the query): whatever it answers, A's answer holds nothing of B.
            let template = format!("{template}{query}");
            let Some(body) = creates_in_own_workspace(&method, &template) else {
                failures.push(format!(
                    "{name}: no body for a call on no object: add it to creates_in_own_workspace()"
                ));
                continue;
            };
            let (status, text) =
                call(&gateway, &a.token, method.clone(), &template, body.as_ref()).await;
            if status >= 500 {
                failures.push(format!("{name}: answered {status}: {text}"));
            }
            // An id A put in the query may be echoed; no other may appear.
            if let Some(id) = b
                .ids()
                .into_iter()
                .find(|id| text.contains(id) && !query.contains(id))
            {
                failures.push(format!("{name}: A's answer carries B's id {id}: {text}"));
            }
            rows.insert(name, format!("A sees only A ({status})"));
            continue;
        }
        let path = match fill(&template, &b) {
            Ok(p) => format!("{p}{query}"),
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        let body = if method == Method::GET {
            None
        } else {
            match body_of(&method, &template, &b) {
                Ok(body) => body,
                Err(e) => {
                    failures.push(format!("{name}: {e}"));
                    continue;
                }
            }
        };
        let (status, text) = call(&gateway, &a.token, method.clone(), &path, body.as_ref()).await;
        if status != 404 {
            failures.push(format!(
                "{name}: A on B's object answered {status} (want 404): {text}"
            ));
        }
        if let Some(id) = b
            .ids()
            .into_iter()
            .find(|id| text.contains(id) && !path.contains(id))
        {
            failures.push(format!("{name}: the refusal carries B's id {id}: {text}"));
        }
        let (control, text) = call(&gateway, &b.token, method.clone(), &path, body.as_ref()).await;
        if control == 404 || control >= 500 {
            failures.push(format!("{name}: B on its own object answered {control}, so the matrix proves nothing: {text}"));
        }
        rows.insert(name, format!("A→B {status}, B→B {control}"));
    }
    for (operation, outcome) in &rows {
        println!("{operation:<55} {outcome}");
    }
    assert!(
        failures.is_empty(),
        "tenancy failures:\n{}",
        failures.join("\n")
    );
    token.cancel();
    running.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rest_operation_keeps_workspaces_apart_embedded() {
    let dir = tempfile::tempdir().expect("tempdir");
    matrix(world::embedded(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rest_operation_keeps_workspaces_apart_on_postgres() {
    let dir = tempfile::tempdir().expect("tempdir");
    matrix(world::real(dir.path()).await).await;
}
