//! Errors as `application/problem+json` (RFC 9457), for every failure the
//! gateway answers: its own validation, authentication, upstream gRPC statuses
//! and axum's own rejections (unknown route, wrong method, bad JSON, body too
//! large).
//!
//! Problems use the `about:blank` type, so `title` is the HTTP reason phrase;
//! the extension member `code` carries a stable snake_case name clients can
//! branch on (several codes share an HTTP status, e.g. 409), and `field`
//! names the offending query or body field of a validation error.
//!
//! Status and `code` come from the product's one error table
//! ([`telenet_kit::error::ErrorCode`]); only rejections of the HTTP request
//! itself (wrong method, wrong media type, a range outside the file) keep
//! the status HTTP defines for them.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use telenet_kit::error::{ErrorCode, INTERNAL_MESSAGE};
use utoipa::ToSchema;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The detail of a 503: the upstream's own text names hosts and ports.
pub(crate) const UNAVAILABLE_DETAIL: &str =
    "a service the gateway depends on is unavailable; retry later";

/// The detail of a 504.
pub(crate) const TIMEOUT_DETAIL: &str = "a service the gateway depends on did not answer in time";

/// An RFC 9457 problem document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// Problem type URI; always `about:blank` (the HTTP status says it all).
    #[serde(rename = "type")]
    #[schema(example = "about:blank")]
    pub type_uri: String,
    /// The HTTP reason phrase of `status`.
    #[schema(example = "Bad Request")]
    pub title: String,
    /// The HTTP status code.
    #[schema(example = 400)]
    pub status: u16,
    /// What went wrong, for humans (lowercase; never internal details).
    #[schema(example = "page_size must be between 1 and 200")]
    pub detail: String,
    /// Stable machine-readable error code, e.g. `invalid_argument`,
    /// `not_found`, `failed_precondition`.
    #[schema(example = "invalid_argument")]
    pub code: String,
    /// The query or body field that is invalid, for validation errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "page_size")]
    pub field: Option<String>,
}

impl Problem {
    /// A problem with `status`, a stable `code` and a human `detail` (cut
    /// at [`MAX_DETAIL_BYTES`]).
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        Self {
            type_uri: "about:blank".to_owned(),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: bounded(detail.into()),
            code: code.to_owned(),
            field: None,
        }
    }

    /// A problem for an error `code`: its status and name from the shared
    /// table.
    pub fn for_code(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self::new(code.http_status(), code.as_str(), detail)
    }

    /// 400 for an invalid `field`; `detail` should name the field too, since
    /// many clients only show `detail`.
    pub fn invalid_field(field: &str, detail: impl Into<String>) -> Self {
        Self {
            field: Some(field.to_owned()),
            ..Self::for_code(ErrorCode::InvalidArgument, detail)
        }
    }

    /// The HTTP status (500 if `status` was set to something out of range).
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The problem for a status an upstream TELENET service answered with.
    ///
    /// Client errors keep the upstream message (services write them for
    /// callers: lowercase, naming the field). Server-side failures are logged
    /// here and returned opaque, since a transport error's text names hosts
    /// and ports.
    pub fn from_grpc(status: &tonic::Status) -> Self {
        let message = status.message();
        let code = ErrorCode::from_status(status);
        match code {
            ErrorCode::Unavailable => {
                tracing::warn!(code = ?status.code(), message, "upstream unavailable");
                Self::for_code(code, UNAVAILABLE_DETAIL)
            }
            ErrorCode::DeadlineExceeded => {
                tracing::warn!(message, "upstream deadline exceeded");
                Self::for_code(code, TIMEOUT_DETAIL)
            }
            ErrorCode::Internal => {
                tracing::error!(code = ?status.code(), message, "upstream internal error");
                Self::for_code(code, INTERNAL_MESSAGE)
            }
            ErrorCode::FailedPrecondition if status.code() == tonic::Code::Aborted => {
                Self::new(code.http_status(), ABORTED, message)
            }
            _ => Self::for_code(code, message),
        }
    }

    /// The problem for a rejection axum (or a tower layer) produced with
    /// `status` and plain-text `text`: keeps the text as detail for client
    /// errors and hides it for server errors.
    pub fn from_rejection(status: StatusCode, text: &str) -> Self {
        if status.is_server_error() {
            tracing::error!(%status, text, "request rejected with a server error");
            return Self::new(status, ErrorCode::Internal.as_str(), INTERNAL_MESSAGE);
        }
        let detail = lowercase_first(text.trim());
        let detail = if detail.is_empty() {
            status
                .canonical_reason()
                .map(str::to_lowercase)
                .unwrap_or_default()
        } else {
            detail
        };
        Self::new(status, code_for_http(status), detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let body = serde_json::to_vec(&self).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = (status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response
    }
}

/// The longest `detail`, in bytes. Details quote what was wrong — an
/// unknown field's name, a value — and a client can make those as long as
/// its body; a person reads the start.
pub const MAX_DETAIL_BYTES: usize = 512;

/// `detail` cut at [`MAX_DETAIL_BYTES`] (on a character boundary, with `…`).
fn bounded(mut detail: String) -> String {
    if detail.len() <= MAX_DETAIL_BYTES {
        return detail;
    }
    let mut end = MAX_DETAIL_BYTES - '…'.len_utf8();
    while !detail.is_char_boundary(end) {
        end -= 1;
    }
    detail.truncate(end);
    detail.push('…');
    detail
}

/// The `code` of gRPC's ABORTED (a conflict between concurrent changes:
/// retrying the whole operation may succeed). The shared table answers it
/// as `FailedPrecondition` (409); clients keep seeing its own name, so they
/// can tell a conflict worth retrying from one that is not.
const ABORTED: &str = "aborted";

/// A code name for an HTTP error status that did not come from an error
/// code: the shared table's, or HTTP's own for rejections of the request
/// itself.
fn code_for_http(status: StatusCode) -> &'static str {
    match status {
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        // Well-formed but invalid content is an invalid argument like any
        // other (extractors answer it as 400).
        StatusCode::UNPROCESSABLE_ENTITY => ErrorCode::InvalidArgument.as_str(),
        status => match ErrorCode::from_http_status(status) {
            Some(code) => code.as_str(),
            None if status.is_server_error() => ErrorCode::Internal.as_str(),
            None => "error",
        },
    }
}

fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The answer when a handler panicked (`CatchPanicLayer`): a bug, so the
/// panic is logged and the client gets the opaque 500 problem.
pub(crate) fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("a panic without a message");
    tracing::error!(panic = message, "a request handler panicked");
    Problem::for_code(ErrorCode::Internal, INTERNAL_MESSAGE).into_response()
}

/// Fallback for paths no route matches.
pub async fn route_not_found(request: Request) -> Problem {
    Problem::for_code(
        ErrorCode::NotFound,
        format!("no route for {}", request.uri().path()),
    )
}

/// Fallback for known paths called with a method they do not have (axum adds
/// the `Allow` header).
pub async fn method_not_allowed(request: Request) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "method {} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
}

/// The largest non-problem error body kept as a problem's detail.
const MAX_PLAIN_DETAIL: usize = 1024;

/// Turns any error response that is not a problem yet into one.
///
/// Handlers and our extractors already answer with problems; this catches
/// what is produced outside them, such as the body-limit layer's 413 for a
/// declared `Content-Length` over the limit. Headers (e.g. `Allow`,
/// `WWW-Authenticate`) are kept.
pub async fn ensure_problem_json(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_problem(&response) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, MAX_PLAIN_DETAIL).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => String::new(),
    };
    let problem = Problem::from_rejection(status, &text);
    let body = serde_json::to_vec(&problem).unwrap_or_else(|_| b"{}".to_vec());
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    Response::from_parts(parts, Body::from(body))
}

fn is_problem(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with(PROBLEM_JSON))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_details_are_cut_on_a_character_boundary() {
        let short = "page_size must be between 1 and 200";
        assert_eq!(bounded(short.to_owned()), short);
        for filler in ["x", "é", "😀"] {
            let detail = bounded(format!("unknown field `{}`", filler.repeat(2000)));
            assert!(detail.len() <= MAX_DETAIL_BYTES, "{}", detail.len());
            assert!(detail.len() > MAX_DETAIL_BYTES - 8, "{}", detail.len());
            assert!(detail.starts_with("unknown field `"));
            assert!(detail.ends_with('…'));
        }
        let problem = Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "y".repeat(9000),
        );
        assert!(problem.detail.len() <= MAX_DETAIL_BYTES);
    }
}
