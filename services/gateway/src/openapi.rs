//! The OpenAPI 3.1 document of the REST API, generated from the handlers'
//! `#[utoipa::path]` attributes and the DTO types, so it cannot drift from
//! the code; and `GET /openapi.json`, which serves it.
//!
//! Handlers list the error statuses specific to them with a description
//! only; every error response is then documented here, in one place, as a
//! problem document.

use std::sync::LazyLock;

use axum::body::Bytes;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::encoding::EncodingBuilder;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, ContentBuilder, Ref, RefOr, Required, Response, ResponseBuilder};

use crate::dto;
use crate::problem::{PROBLEM_JSON, Problem};
use crate::routes;

/// Name of the bearer security scheme in the document.
const BEARER: &str = "bearer";

/// Paths anyone may call without a token.
const PUBLIC_PATHS: [&str; 3] = [
    "/healthz",
    "/openapi.json",
    "/v1/downloads/{workspace_id}/{id}/{file_name}",
];

#[derive(OpenApi)]
#[openapi(
    info(
        title = "TELENET gateway API",
        description = "REST API of the TELENET inbox for agents. Authenticate with \
                       `Authorization: Bearer <token>`; every request acts within the token's \
                       workspace. Errors are `application/problem+json` (RFC 9457). An \
                       optional query parameter sent empty (`?page_size=`) counts as absent.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        routes::me::get_me,
        routes::me::set_status,
        routes::me::heartbeat,
        routes::me::list_members,
        routes::tokens::list_tokens,
        routes::tokens::create_token,
        routes::tokens::revoke_token,
        routes::channels::create_channel,
        routes::channels::list_channels,
        routes::channels::get_channel,
        routes::channels::update_channel,
        routes::channels::test_channel,
        routes::channels::list_channel_kinds,
        routes::conversations::list_conversations,
        routes::conversations::get_conversation,
        routes::conversations::list_messages,
        routes::conversations::send_message,
        routes::conversations::assign,
        routes::conversations::unassign,
        routes::conversations::close,
        routes::contacts::get_contact,
        routes::files::upload,
        routes::files::download,
        routes::files::download_link,
        routes::files::create_link,
        routes::files::audio,
        routes::reports::daily_volume,
        routes::dead_letters::list_dead_letters,
        routes::dead_letters::redrive_dead_letters,
        routes::dead_letters::discard_dead_letters,
        routes::meta::healthz,
        openapi_json,
    ),
    components(schemas(Problem, dto::PresenceStatus, dto::AccessLevel, dto::ChannelKind)),
    modifiers(&SecurityAndProblems),
    security(("bearer" = [])),
    tags(
        (name = "me", description = "The calling agent and their presence"),
        (name = "members", description = "The workspace's users"),
        (name = "tokens", description = "API tokens: listed, created (shown once), revoked"),
        (name = "channels", description = "Connected messaging channels"),
        (name = "conversations", description = "The shared inbox"),
        (name = "contacts", description = "People who write in"),
        (name = "files", description = "Voice notes, pictures and other files"),
        (name = "reports", description = "Aggregates computed from events"),
        (name = "operations", description = "The workspace's dead letters (managers and owners)"),
        (name = "meta", description = "About the gateway itself"),
    ),
)]
struct ApiDoc;

/// Errors any authenticated operation may give.
const AUTHENTICATED_ERRORS: [(&str, &str); 2] = [
    ("401", "missing, unknown or revoked bearer token"),
    (
        "429",
        "too many requests for the token or its workspace; `Retry-After` says in how many seconds to retry",
    ),
];

/// Errors any operation with path or query parameters may give: a value
/// the handler or axum's extractor refuses (the problem's `field` names it
/// when it is one of ours), or a query parameter the operation does not have.
const PARAMETER_ERRORS: [(&str, &str); 1] = [(
    "400",
    "a path or query value is invalid, or the query has a parameter the operation does not take",
)];

/// Errors any operation with a request body may give, besides its own.
const BODY_ERRORS: [(&str, &str); 3] = [
    ("400", "the body is malformed or a field is invalid"),
    ("413", "the body is larger than the gateway accepts"),
    (
        "415",
        "the body's `Content-Type` is not the one the operation takes",
    ),
];

/// Where an answer's ids lead (OpenAPI links): (method and path of the
/// operation, its status, the link's name, the operation it leads to, that
/// operation's path parameter, and where in the answer its value is).
/// Clients and API testers follow them from a new file or a listed
/// conversation to what can be done with it.
const LINKS: [(&str, &str, &str, &str, &str, &str, &str); 11] = [
    (
        "post",
        "/v1/files",
        "201",
        "download",
        "download",
        "id",
        "$response.body#/id",
    ),
    (
        "post",
        "/v1/files",
        "201",
        "audio",
        "audio",
        "id",
        "$response.body#/id",
    ),
    (
        "post",
        "/v1/files",
        "201",
        "link",
        "create_link",
        "id",
        "$response.body#/id",
    ),
    (
        "get",
        "/v1/conversations",
        "200",
        "first",
        "get_conversation",
        "id",
        FIRST_CONVERSATION,
    ),
    (
        "get",
        "/v1/conversations",
        "200",
        "first_messages",
        "list_messages",
        "id",
        FIRST_CONVERSATION,
    ),
    (
        "get",
        "/v1/conversations",
        "200",
        "reply_to_first",
        "send_message",
        "id",
        FIRST_CONVERSATION,
    ),
    (
        "get",
        "/v1/conversations",
        "200",
        "assign_first",
        "assign",
        "id",
        FIRST_CONVERSATION,
    ),
    (
        "get",
        "/v1/conversations",
        "200",
        "unassign_first",
        "unassign",
        "id",
        FIRST_CONVERSATION,
    ),
    (
        "get",
        "/v1/conversations",
        "200",
        "close_first",
        "close",
        "id",
        FIRST_CONVERSATION,
    ),
    (
        "get",
        "/v1/conversations",
        "200",
        "first_contact",
        "get_contact",
        "id",
        "$response.body#/items/0/contact_id",
    ),
    (
        "get",
        "/v1/conversations/{id}",
        "200",
        "contact",
        "get_contact",
        "id",
        "$response.body#/contact_id",
    ),
];

/// The id of the first conversation of a page.
const FIRST_CONVERSATION: &str = "$response.body#/items/0/id";

/// Errors every operation may give.
const COMMON_ERRORS: [(&str, &str); 3] = [
    ("500", "internal error (details are logged, not returned)"),
    ("503", "a service the gateway depends on is unavailable"),
    (
        "504",
        "a service the gateway depends on did not answer in time",
    ),
];

/// Adds the bearer scheme; documents every error response as a problem
/// document, and adds the errors every operation may give, those of every
/// operation with parameters and those of every operation with a body (so
/// each handler lists only its specific ones).
struct SecurityAndProblems;

impl Modify for SecurityAndProblems {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("an API token of a workspace member"))
                    .build(),
            ),
        );

        add_links(openapi);
        set_upload_part_type(openapi);
        for (path, item) in openapi.paths.paths.iter_mut() {
            let public = PUBLIC_PATHS.contains(&path.as_str());
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                let authenticated: &[_] = if public { &[] } else { &AUTHENTICATED_ERRORS };
                let has_parameters = operation
                    .parameters
                    .iter()
                    .flatten()
                    .any(|p| matches!(p.parameter_in, ParameterIn::Path | ParameterIn::Query));
                let with_parameters: &[_] = if has_parameters {
                    &PARAMETER_ERRORS
                } else {
                    &[]
                };
                let with_body: &[_] = if operation.request_body.is_some() {
                    &BODY_ERRORS
                } else {
                    &[]
                };
                for parameter in operation.parameters.iter_mut().flatten() {
                    if parameter.parameter_in == ParameterIn::Query
                        && parameter.required == Required::False
                    {
                        allow_empty_value(parameter);
                    }
                }
                let responses = &mut operation.responses.responses;
                for (status, response) in responses.iter_mut() {
                    if let RefOr::T(response) = response
                        && is_error(status)
                    {
                        as_problem(response);
                    }
                }
                let errors = COMMON_ERRORS
                    .iter()
                    .chain(authenticated)
                    .chain(with_parameters)
                    .chain(with_body);
                for (status, description) in errors {
                    responses
                        .entry((*status).to_owned())
                        .or_insert_with(|| problem_response(description));
                }
            }
        }
    }
}

/// The links of [`LINKS`], on the answers they start from.
fn add_links(openapi: &mut utoipa::openapi::OpenApi) {
    for (method, path, status, name, operation_id, parameter, value) in LINKS {
        let operation = openapi
            .paths
            .paths
            .get_mut(path)
            .and_then(|item| match method {
                "get" => item.get.as_mut(),
                "post" => item.post.as_mut(),
                _ => None,
            });
        let response = operation.and_then(|op| op.responses.responses.get_mut(status));
        if let Some(RefOr::T(response)) = response {
            // utoipa 5 serializes `Link::operation_id` as `operation_id`,
            // not OpenAPI's `operationId`; the extensions are written as
            // they are.
            let mut spelled = Extensions::default();
            spelled.insert("operationId".to_owned(), operation_id.into());
            let link = LinkBuilder::new()
                .parameter(parameter, value)
                .extensions(Some(spelled))
                .build();
            response.links.insert(name.to_owned(), RefOr::T(link));
        } else {
            tracing::error!(path, status, "openapi link from an undocumented answer");
        }
    }
}

/// The file part of `POST /v1/files` must say its type (the declared type
/// the kind and the bytes are held against); the document says so with the
/// form's encoding, whose default for binary parts is
/// `application/octet-stream`.
fn set_upload_part_type(openapi: &mut utoipa::openapi::OpenApi) {
    let body = openapi
        .paths
        .paths
        .get_mut("/v1/files")
        .and_then(|item| item.post.as_mut())
        .and_then(|op| op.request_body.as_mut())
        .and_then(|body| body.content.get_mut("multipart/form-data"));
    if let Some(content) = body {
        content.encoding.insert(
            "file".to_owned(),
            EncodingBuilder::new()
                .content_type(Some("application/octet-stream"))
                .build(),
        );
    }
}

/// Says that the parameter may be sent empty (`?page_size=`), which the
/// gateway reads as absent (`routes::present`); utoipa has no field for
/// OpenAPI's `allowEmptyValue`, so it goes in with the extensions, which
/// are serialized as they are.
fn allow_empty_value(parameter: &mut Parameter) {
    parameter
        .extensions
        .get_or_insert_with(Default::default)
        .insert("allowEmptyValue".to_owned(), serde_json::Value::Bool(true));
}

/// Whether a response status (`"404"`, `"5XX"`, `"default"`) is an error.
fn is_error(status: &str) -> bool {
    status.starts_with('4') || status.starts_with('5')
}

/// Gives an error response the problem document as its body, unless the
/// handler documented another one.
fn as_problem(response: &mut Response) {
    if response.content.is_empty() {
        response
            .content
            .insert(PROBLEM_JSON.to_owned(), problem_content());
    }
}

/// An error response described by `description`, with a problem document.
fn problem_response(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(PROBLEM_JSON, problem_content())
            .build(),
    )
}

fn problem_content() -> Content {
    ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("Problem")))
        .build()
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    security(()),
    responses((status = 200, description = "the OpenAPI document", content_type = "application/json")),
)]
pub(crate) async fn openapi_json() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        document_json(),
    )
}

/// The OpenAPI document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as JSON, built once.
fn document_json() -> Bytes {
    static JSON: LazyLock<Bytes> = LazyLock::new(|| match document().to_json() {
        Ok(json) => Bytes::from(json),
        Err(error) => {
            tracing::error!(%error, "cannot serialize the openapi document");
            Bytes::from_static(b"{}")
        }
    });
    JSON.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_response_is_a_problem_document() {
        let doc = document();
        let mut errors = 0;
        for (path, item) in &doc.paths.paths {
            let operations = [&item.get, &item.put, &item.post, &item.delete, &item.patch];
            for operation in operations.into_iter().flatten() {
                for (status, response) in &operation.responses.responses {
                    let RefOr::T(response) = response else {
                        panic!("{path} {status}: a reference");
                    };
                    if is_error(status) {
                        errors += 1;
                        assert!(
                            response.content.contains_key(PROBLEM_JSON),
                            "{path} {status}"
                        );
                    }
                }
            }
        }
        // 500, 503 and 504 of every operation at least.
        assert!(errors >= 3 * 22, "{errors}");
    }
}
