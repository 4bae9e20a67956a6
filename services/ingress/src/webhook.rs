//! `/webhooks/{channel_id}`: find the channel, let its provider answer a
//! handshake or verify and parse the webhook, de-duplicate, publish, and
//! only then acknowledge.
//!
//! Answers: 200 accepted (`event_id`, or `event_ids` when a webhook carried
//! several events), duplicate, or acknowledged (a callback without events);
//! 400 malformed, 401 bad signature or stale timestamp, 404 unknown channel,
//! 405 a method the channel's provider does not call with, 413 too large,
//! 429 when the channel received more webhooks than `ingress.rate_limits`
//! allow (with `Retry-After`; checked once the channel is found, before its
//! signature is checked or anything is written), 503 when the broker or the
//! database cannot take the events, or the broker has no queue bound for
//! them (the topology not declared: an event nobody would receive is not
//! accepted), as `application/problem+json` with `Retry-After` (the provider
//! retries later). In every error case nothing is recorded. Handshakes (a
//! provider checking the URL) are answered as their provider says.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use telenet_channels::{HandshakeAnswer, Webhook, WebhookError};

use telenet_ratelimit::{Limit, RateLimiter, Verdict};

use crate::domain::{self, Channel};
use crate::store::HealthNews;
use crate::{Accepted, IngressService};

/// What the webhook handler works with.
#[derive(Clone)]
struct Webhooks {
    ingress: IngressService,
    /// The per-channel limit and where it is counted, when on.
    limit: Option<(Limit, RateLimiter)>,
}

/// The webhook router: `POST /webhooks/{channel_id}` (events), `GET` on the
/// same path (providers' handshakes) and `GET /healthz`; webhooks counted
/// per channel by `limiter` against `ingress.rate_limits`. An error when
/// those limits are invalid.
pub fn router(ingress: IngressService, limiter: RateLimiter) -> Result<Router, crate::Error> {
    let limit = ingress
        .config()
        .rate_limits
        .limit()?
        .map(|limit| (limit, limiter));
    let max_body_bytes = ingress.config().max_body_bytes;
    Ok(Router::new()
        .route("/webhooks/{channel_id}", post(receive).get(receive))
        .route("/healthz", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        // The request's span heads the trace of everything the webhook
        // causes (the event carries it to the consumers).
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(|r: &http::Request<_>| {
                telenet_kit::telemetry::http_request_span(r)
            }),
        )
        .with_state(Webhooks { ingress, limit }))
}

/// A webhook answer: JSON with a `status` or an `error`.
fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn reject(status: StatusCode, message: impl Into<String>) -> Response {
    answer(status, json!({ "error": message.into() }))
}

/// Seconds a provider is asked to wait before retrying a webhook answered 503.
const RETRY_AFTER_SECS: u32 = 5;

/// 503: nothing was recorded and the provider should retry. A problem
/// document (RFC 9457) that also carries the `error` of every other answer.
fn unavailable(detail: &str) -> Response {
    let body = json!({
        "type": "about:blank",
        "title": "Service Unavailable",
        "status": 503,
        "detail": detail,
        "error": detail,
    });
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [
            (header::CONTENT_TYPE, "application/problem+json".to_owned()),
            (header::RETRY_AFTER, RETRY_AFTER_SECS.to_string()),
        ],
        body.to_string(),
    )
        .into_response()
}

async fn receive(
    State(Webhooks { ingress, limit }): State<Webhooks>,
    Path(channel_id): Path<String>,
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let channel = match ingress.find_channel(&channel_id).await {
        Ok(Some(c)) => c,
        Ok(None) => return reject(StatusCode::NOT_FOUND, "unknown channel"),
        Err(e) => {
            tracing::warn!(error = %e, "channel lookup failed");
            return unavailable("temporarily unavailable");
        }
    };
    if let Some((limit, limiter)) = &limit
        && let Verdict::Limited { retry_after, .. } =
            limiter.check(&[(*limit, channel.id.as_str())]).await
    {
        return too_many(retry_after);
    }
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return reject(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body larger than {} bytes", ingress.config().max_body_bytes),
            );
        }
        Err(e) => return reject(e.status(), e.body_text()),
    };
    let Some(provider) = ingress.registry().for_channel(&channel.credentials) else {
        // A channel of a kind this build has no provider for: nobody here
        // can read its webhooks.
        return reject(StatusCode::NOT_FOUND, "unknown channel");
    };
    let url = ingress.webhook_url(&channel.id);
    let webhook = Webhook {
        channel_id: &channel.id,
        method: &method,
        url: &url,
        query: query.as_deref().unwrap_or_default(),
        headers: &headers,
        body: &body,
        now: telenet_signing::unix_now(),
    };
    if let Some(handshake) = provider.handshake(&channel.credentials, &webhook) {
        if handshake.status.is_success() {
            // The provider reached us with the channel's token: the URL is
            // entered right.
            ingress
                .record_webhook_health(&channel, HealthNews::Webhook)
                .await;
        } else {
            ingress
                .record_webhook_health(&channel, HealthNews::Rejected("handshake refused"))
                .await;
        }
        return handshake_answer(handshake);
    }
    if method != Method::POST {
        // What the router answers for a method it has no route for.
        return (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, "POST")]).into_response();
    }
    let inbound = provider
        .verify(&channel.credentials, &webhook)
        .and_then(|()| provider.parse(&channel.credentials, &webhook));
    match inbound {
        Ok(inbound) => match ingress.accept(&channel, inbound).await {
            Ok(accepted) => {
                ingress
                    .record_webhook_health(&channel, HealthNews::Webhook)
                    .await;
                acknowledge(accepted)
            }
            Err(_) => unavailable("temporarily unavailable, retry later"),
        },
        Err(e) => {
            let reason = e.to_string();
            ingress
                .record_webhook_health(&channel, HealthNews::Rejected(&reason))
                .await;
            refuse(&channel, &e)
        }
    }
}

/// The provider refused the webhook: say why, except when the fault is in
/// our own settings for the channel.
fn refuse(channel: &Channel, error: &WebhookError) -> Response {
    let status = domain::refusal_status(error);
    if status.is_server_error() {
        tracing::error!(channel_id = %channel.id, error = %error, "the channel's stored credentials cannot check its webhooks");
        return reject(status, "internal error");
    }
    reject(status, error.to_string())
}

/// 429: the channel is over its limit; providers retry after
/// `Retry-After` seconds.
fn too_many(retry_after: std::time::Duration) -> Response {
    let seconds = telenet_ratelimit::retry_after_secs(retry_after);
    let mut response = reject(
        StatusCode::TOO_MANY_REQUESTS,
        format!("too many webhooks for this channel; retry in {seconds} s"),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
    response
}

fn acknowledge(accepted: Accepted) -> Response {
    let body = match accepted {
        Accepted::Duplicate => json!({ "status": "duplicate" }),
        Accepted::Nothing => json!({ "status": "acknowledged" }),
        Accepted::Published(ids) => match <[String; 1]>::try_from(ids) {
            Ok([event_id]) => json!({ "status": "accepted", "event_id": event_id }),
            Err(ids) => json!({ "status": "accepted", "event_ids": ids }),
        },
    };
    answer(StatusCode::OK, body)
}

fn handshake_answer(handshake: HandshakeAnswer) -> Response {
    (
        handshake.status,
        [(header::CONTENT_TYPE, handshake.content_type)],
        handshake.body,
    )
        .into_response()
}
