//! Unauthenticated endpoints about the gateway itself.

use axum::Json;

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
