//! axum extractors whose rejections are problem+json ([`ApiError`]) instead
//! of axum's plain text.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body (requires `Content-Type: application/json`).
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let json_content = is_json_request(&request);
        let bytes = read_body(request, state).await?;
        if !json_content {
            return Err(not_json());
        }
        parse_object(&bytes).map(ApiJson)
    }
}

/// An optional JSON body: an empty body is `None`, anything else must be
/// JSON. For commands whose body is all optional fields, so a client may send
/// nothing at all.
#[derive(Debug)]
pub struct OptionalJson<T>(pub Option<T>);

impl<S, T> FromRequest<S> for OptionalJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let json_content = is_json_request(&request);
        let bytes = read_body(request, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(None));
        }
        if !json_content {
            return Err(not_json());
        }
        parse_object(&bytes).map(|value| OptionalJson(Some(value)))
    }
}

fn is_json_request(request: &Request) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(is_json_media_type)
}

fn not_json() -> ApiError {
    ApiError::Rejected {
        status: axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
        detail: "expected request with `Content-Type: application/json`".to_owned(),
    }
}

/// The body's bytes (the body-limit layer's 413 when there are too many).
async fn read_body<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(request, state)
        .await
        .map_err(|rejection| ApiError::Rejected {
            status: rejection.status(),
            detail: rejection.body_text(),
        })
}

/// A request body: a JSON object. serde's derived structs also read an
/// array of their fields in order (`[null, null]`); the API's bodies are
/// objects (so the document says), and anything else is refused here. (Nested
/// objects are held to the same by `dto::object`.)
fn parse_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(ApiError::Rejected {
            status: axum::http::StatusCode::BAD_REQUEST,
            detail: "the body must be a JSON object".to_owned(),
        });
    }
    match Json::<T>::from_bytes(bytes) {
        Ok(Json(value)) => Ok(value),
        Err(rejection) => Err(ApiError::Rejected {
            status: body_status(rejection.status()),
            detail: rejection.body_text(),
        }),
    }
}

/// axum answers 422 for well-formed JSON of the wrong shape; this API
/// answers 400 for every invalid value, whatever the layer that noticed.
fn body_status(status: axum::http::StatusCode) -> axum::http::StatusCode {
    if status == axum::http::StatusCode::UNPROCESSABLE_ENTITY {
        axum::http::StatusCode::BAD_REQUEST
    } else {
        status
    }
}

fn is_json_media_type(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
        || essence
            .rsplit_once('+')
            .is_some_and(|(_, suffix)| suffix.eq_ignore_ascii_case("json"))
}

/// A query string.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(ApiError::Rejected {
                status: rejection.status(),
                detail: rejection.body_text(),
            }),
        }
    }
}

/// Path parameters.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(ApiError::Rejected {
                status: rejection.status(),
                detail: rejection.body_text(),
            }),
        }
    }
}
