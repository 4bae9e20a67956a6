//! The OpenAPI 3.1 document of the REST API, generated from the handlers'
//! `#[utoipa::path]` attributes and the DTO types, so it cannot drift from
//! the code.

use std::sync::LazyLock;

use axum::body::Bytes;
use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};

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
                       workspace. Errors are `application/problem+json` (RFC 9457).",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        routes::me::get_me,
        routes::me::set_status,
        routes::me::heartbeat,
        routes::me::list_members,
        routes::channels::create_channel,
        routes::channels::list_channels,
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
        routes::meta::healthz,
        routes::meta::openapi_json,
    ),
    components(schemas(Problem, dto::PresenceStatus, dto::AccessLevel, dto::ChannelKind)),
    modifiers(&SecurityAndErrors),
    security(("bearer" = [])),
    tags(
        (name = "me", description = "The calling agent and their presence"),
        (name = "members", description = "The workspace's users"),
        (name = "channels", description = "Connected messaging channels"),
        (name = "conversations", description = "The shared inbox"),
        (name = "contacts", description = "People who write in"),
        (name = "files", description = "Voice notes, pictures and other files"),
        (name = "reports", description = "Aggregates computed from events"),
        (name = "meta", description = "About the gateway itself"),
    ),
)]
struct ApiDoc;

/// Adds the bearer scheme, and the error responses every operation may give
/// (so each handler lists only its specific ones).
struct SecurityAndErrors;

impl Modify for SecurityAndErrors {
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
                let responses = &mut operation.responses.responses;
                if !public {
                    responses
                        .entry("401".to_owned())
                        .or_insert_with(|| problem("missing, unknown or revoked bearer token"));
                }
                for (status, description) in [
                    ("500", "internal error (details are logged, not returned)"),
                    ("503", "a service the gateway depends on is unavailable"),
                    (
                        "504",
                        "a service the gateway depends on did not answer in time",
                    ),
                ] {
                    responses
                        .entry(status.to_owned())
                        .or_insert_with(|| problem(description));
                }
            }
        }
    }
}

fn problem(description: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                PROBLEM_JSON,
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build(),
    )
}

/// The OpenAPI document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as JSON, built once.
pub(crate) fn document_json() -> Bytes {
    static JSON: LazyLock<Bytes> = LazyLock::new(|| match document().to_json() {
        Ok(json) => Bytes::from(json),
        Err(error) => {
            tracing::error!(%error, "cannot serialize the openapi document");
            Bytes::from_static(b"{}")
        }
    });
    JSON.clone()
}
