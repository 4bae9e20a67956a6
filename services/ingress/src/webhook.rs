//! `POST /webhooks/{channel_id}`: verify, parse, de-duplicate, publish, and
//! only then acknowledge.
//!
//! Answers: 200 accepted (or duplicate), 400 malformed, 401 bad signature or
//! stale timestamp, 404 unknown channel, 413 too large, 503 when the broker or
//! the database cannot take the event (the provider retries later). In every
//! error case nothing is recorded.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;
use telenet_proto::events::v1::event_envelope::Payload;
use telenet_signing::Secret;
use telenet_store::sqlx;
use telenet_store::{events, now_micros};

use crate::Ingress;
use crate::channels::ChannelRegistry;
use crate::custom::{self, Parsed};

pub fn router(ingress: Ingress) -> Router {
    let limit = ingress.config.max_body_bytes;
    Router::new()
        .route("/webhooks/{channel_id}", post(receive))
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(limit))
        // The request's span heads the trace of everything the webhook
        // causes (the event carries it to the consumers).
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(|r: &http::Request<_>| {
                telenet_kit::telemetry::http_request_span(r)
            }),
        )
        .with_state(ingress)
}

/// A webhook answer: JSON with a `status` or an `error`.
fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn reject(status: StatusCode, message: impl Into<String>) -> Response {
    answer(status, json!({ "error": message.into() }))
}

async fn receive(
    State(ingress): State<Ingress>,
    Path(channel_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let registry = ChannelRegistry::new(ingress.clone());
    let channel = match registry.find(&channel_id).await {
        Ok(Some(c)) => c,
        Ok(None) => return reject(StatusCode::NOT_FOUND, "unknown channel"),
        Err(e) => {
            tracing::warn!(error = %e, "channel lookup failed");
            return reject(StatusCode::SERVICE_UNAVAILABLE, "temporarily unavailable");
        }
    };
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return reject(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body larger than {} bytes", ingress.config.max_body_bytes),
            );
        }
        Err(e) => return reject(e.status(), e.body_text()),
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let secret = match Secret::parse(&channel.secret) {
        Ok(s) => s,
        Err(_) => {
            tracing::error!(channel_id, "stored channel secret is invalid");
            return reject(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
        }
    };
    if let Err(e) = secret.verify(
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
        &body,
        telenet_signing::unix_now(),
    ) {
        return reject(StatusCode::UNAUTHORIZED, e.to_string());
    }
    let webhook_id = header("webhook-id").unwrap_or_default().to_owned();
    let parsed = match custom::parse(&body, &channel.channel.id, &webhook_id) {
        Ok(p) => p,
        Err(e) => return reject(StatusCode::BAD_REQUEST, e),
    };
    accept(
        &ingress,
        &channel.channel.workspace_id,
        &channel.channel.id,
        &webhook_id,
        parsed,
    )
    .await
}

/// Record the de-duplication keys and publish in one go: the keys are
/// committed only after the broker confirmed, so a failed publish leaves no
/// trace and the provider's retry is processed normally.
async fn accept(
    ingress: &Ingress,
    workspace_id: &str,
    channel_id: &str,
    webhook_id: &str,
    parsed: Parsed,
) -> Response {
    let unavailable = |what: &str, e: &dyn std::fmt::Display| {
        tracing::warn!(error = %e, channel_id, "{what}");
        reject(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily unavailable, retry later",
        )
    };
    let mut keys = vec![format!("webhook:{webhook_id}")];
    keys.extend(parsed.dedup_keys());
    let mut tx = match ingress.db.begin().await {
        Ok(tx) => tx,
        Err(e) => return unavailable("database unavailable", &e),
    };
    let now = now_micros();
    for key in &keys {
        let inserted = sqlx::query(
            "INSERT INTO webhook_keys (channel_id, key, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (channel_id, key) DO NOTHING",
        )
        .bind(channel_id)
        .bind(key)
        .bind(now)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(r) if r.rows_affected() == 0 => {
                let _ = tx.rollback().await;
                return answer(StatusCode::OK, json!({ "status": "duplicate" }));
            }
            Ok(_) => {}
            Err(e) => return unavailable("database unavailable", &e),
        }
    }
    let payload = match parsed {
        Parsed::Message(m) => Payload::InboundMessageReceived(m),
        Parsed::Status(s) => Payload::InboundStatusReceived(s),
    };
    let env = events::envelope(workspace_id, payload, None);
    if let Err(e) = ingress.bus.publish(&[events::to_bus(&env)]).await {
        let _ = tx.rollback().await;
        return unavailable("event bus unavailable", &e);
    }
    if let Err(e) = tx.commit().await {
        // The event is out; a provider retry would publish it again, which
        // consumers absorb (they de-duplicate on the message's external id).
        return unavailable("committing webhook keys failed after publish", &e);
    }
    answer(
        StatusCode::OK,
        json!({ "status": "accepted", "event_id": env.event_id }),
    )
}
