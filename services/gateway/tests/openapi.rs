//! `GET /openapi.json` is an OpenAPI 3.1 document describing every endpoint.

mod common;

use axum::http::StatusCode;
use common::{get, offline_app, send};

const OPERATIONS: [(&str, &str); 32] = [
    ("/v1/me", "get"),
    ("/v1/me/status", "put"),
    ("/v1/me/heartbeat", "post"),
    ("/v1/members", "get"),
    ("/v1/tokens", "get"),
    ("/v1/tokens", "post"),
    ("/v1/tokens/{id}", "delete"),
    ("/v1/channels", "post"),
    ("/v1/channels", "get"),
    ("/v1/channels/{id}", "get"),
    ("/v1/channels/{id}", "patch"),
    ("/v1/channels/{id}/test", "post"),
    ("/v1/channel-kinds", "get"),
    ("/v1/conversations", "get"),
    ("/v1/conversations/{id}", "get"),
    ("/v1/conversations/{id}/messages", "get"),
    ("/v1/conversations/{id}/messages", "post"),
    ("/v1/conversations/{id}/assign", "post"),
    ("/v1/conversations/{id}/unassign", "post"),
    ("/v1/conversations/{id}/close", "post"),
    ("/v1/contacts/{id}", "get"),
    ("/v1/files", "post"),
    ("/v1/files/{id}", "get"),
    ("/v1/files/{id}/links", "post"),
    ("/v1/files/{id}/audio", "get"),
    ("/v1/downloads/{workspace_id}/{id}/{file_name}", "get"),
    ("/v1/reports/daily-volume", "get"),
    ("/v1/dead-letters", "get"),
    ("/v1/dead-letters/redrive", "post"),
    ("/v1/dead-letters/discard", "post"),
    ("/healthz", "get"),
    ("/openapi.json", "get"),
];

async fn document() -> serde_json::Value {
    let reply = send(&offline_app(), get("/openapi.json", None)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    reply.json()
}

#[tokio::test]
async fn document_is_openapi_3_1_with_every_operation() {
    let doc = document().await;
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().expect("paths object");
    for (path, method) in OPERATIONS {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "missing {method} {path}"
        );
    }
    let listed: usize = paths
        .values()
        .map(|p| p.as_object().map_or(0, |m| m.len()))
        .sum();
    assert_eq!(listed, OPERATIONS.len(), "unexpected extra operations");
}

#[tokio::test]
async fn document_declares_bearer_auth_except_for_public_paths() {
    let doc = document().await;
    let scheme = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
    assert_eq!(doc["security"], serde_json::json!([{"bearer": []}]));
    for public in [
        "/healthz",
        "/openapi.json",
        "/v1/downloads/{workspace_id}/{id}/{file_name}",
    ] {
        assert_eq!(
            doc["paths"][public]["get"]["security"],
            serde_json::json!([{}]),
            "{public}"
        );
        assert!(doc["paths"][public]["get"]["responses"]["401"].is_null());
    }
    assert!(doc["paths"]["/v1/me"]["get"]["responses"]["401"].is_object());
}

#[tokio::test]
async fn every_schema_reference_resolves() {
    let doc = document().await;
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for name in [
        "Problem",
        "MemberView",
        "ConversationView",
        "MessageView",
        "ChannelDetailsView",
        "DailyVolumeReport",
    ] {
        assert!(schemas.contains_key(name), "missing schema {name}");
    }
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(!refs.is_empty());
    for reference in refs {
        let name = reference
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected $ref {reference}"));
        assert!(schemas.contains_key(name), "dangling $ref {reference}");
    }
}

#[tokio::test]
async fn errors_are_documented_as_problem_json() {
    let doc = document().await;
    let not_found = &doc["paths"]["/v1/conversations/{id}"]["get"]["responses"]["404"];
    assert_eq!(
        not_found["content"]["application/problem+json"]["schema"]["$ref"],
        "#/components/schemas/Problem"
    );
    let created = &doc["paths"]["/v1/channels"]["post"]["responses"]["201"];
    assert!(created.is_object());
}

/// Each operation's documented statuses.
fn operations(doc: &serde_json::Value) -> Vec<(String, &serde_json::Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            out.push((format!("{} {path}", method.to_uppercase()), operation));
        }
    }
    out
}

#[tokio::test]
async fn operations_document_the_refusals_of_their_parameters_and_bodies() {
    let doc = document().await;
    let mut with_parameters = 0;
    let mut with_body = 0;
    for (label, operation) in operations(&doc) {
        let responses = &operation["responses"];
        let takes_values = operation["parameters"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["in"] == "path" || p["in"] == "query"));
        if takes_values {
            with_parameters += 1;
            assert!(responses["400"].is_object(), "{label}: no 400");
        }
        if operation["requestBody"].is_object() {
            with_body += 1;
            for status in ["400", "413", "415"] {
                assert_eq!(
                    responses[status]["content"]["application/problem+json"]["schema"]["$ref"],
                    "#/components/schemas/Problem",
                    "{label}: no {status} problem"
                );
            }
        }
    }
    assert!(with_parameters >= 14, "{with_parameters}");
    assert!(with_body >= 7, "{with_body}");
}

#[tokio::test]
async fn ids_in_paths_are_declared_as_what_the_gateway_accepts() {
    let doc = document().await;
    let mut checked = 0;
    for (label, operation) in operations(&doc) {
        for parameter in operation["parameters"].as_array().into_iter().flatten() {
            if parameter["in"] != "path" || parameter["name"] == "file_name" {
                continue;
            }
            checked += 1;
            let schema = &parameter["schema"];
            let file_id = label.contains("/files/")
                || (label.contains("/downloads/") && parameter["name"] == "id");
            if file_id {
                assert_eq!(
                    schema["pattern"], "^[0-9a-fA-F]{64}$",
                    "{label}: {parameter}"
                );
            } else {
                assert_eq!(schema["format"], "uuid", "{label}: {parameter}");
            }
        }
    }
    assert_eq!(checked, 16);
}

/// Every link leads to an operation of the document, naming its parameters.
#[tokio::test]
async fn links_lead_to_operations_and_their_parameters() {
    let doc = document().await;
    let by_id: std::collections::HashMap<String, &serde_json::Value> = operations(&doc)
        .into_iter()
        .filter_map(|(_, op)| Some((op["operationId"].as_str()?.to_owned(), op)))
        .collect();
    let mut links = 0;
    for (label, operation) in operations(&doc) {
        for (status, response) in operation["responses"].as_object().expect("responses") {
            for (name, link) in response["links"].as_object().into_iter().flatten() {
                links += 1;
                let target = link["operationId"].as_str().unwrap_or_default();
                let target = by_id
                    .get(target)
                    .unwrap_or_else(|| panic!("{label} {status} {name}: no operation {link}"));
                for parameter in link["parameters"].as_object().expect("parameters").keys() {
                    let declared = target["parameters"]
                        .as_array()
                        .is_some_and(|ps| ps.iter().any(|p| p["name"] == parameter.as_str()));
                    assert!(declared, "{label} {status} {name}: {parameter}");
                }
            }
        }
    }
    assert_eq!(links, 11);
    let upload =
        &doc["paths"]["/v1/files"]["post"]["requestBody"]["content"]["multipart/form-data"];
    assert_eq!(
        upload["encoding"]["file"]["contentType"],
        "application/octet-stream"
    );
}

/// The gateway reads an empty query value (`?page_size=`) as an absent
/// one; the document says so of every optional query parameter, and of no
/// required one.
#[tokio::test]
async fn optional_query_parameters_may_be_sent_empty() {
    let doc = document().await;
    let mut optional = 0;
    for (label, operation) in operations(&doc) {
        for parameter in operation["parameters"].as_array().into_iter().flatten() {
            if parameter["in"] != "query" {
                continue;
            }
            let required = parameter["required"] == true;
            if !required {
                optional += 1;
            }
            assert_eq!(
                parameter["allowEmptyValue"] == true,
                !required,
                "{label}: {parameter}"
            );
        }
    }
    assert!(optional >= 10, "{optional}");
}

fn collect_refs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                if key == "$ref" {
                    if let Some(r) = value.as_str() {
                        out.push(r.to_owned());
                    }
                } else {
                    collect_refs(value, out);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}
