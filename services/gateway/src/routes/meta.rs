//! Unauthenticated endpoints about the gateway itself.

use axum::Json;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;

use crate::dto::Health;

/// Liveness: answers as long as the process serves HTTP. It deliberately
/// checks no dependency, so an upstream outage never gets the gateway
/// restarted.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "meta",
    security(()),
    responses((status = 200, description = "the gateway is up", body = Health)),
)]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
    })
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
        crate::openapi::document_json(),
    )
}
