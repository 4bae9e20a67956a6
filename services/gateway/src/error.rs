//! The gateway's error type; converted to problem+json only at the boundary
//! (its `IntoResponse`).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use telenet_kit::error::{ErrorCode, INTERNAL_MESSAGE};
use telenet_presence::PresenceError;

use crate::problem::{Problem, TIMEOUT_DETAIL};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No `Authorization: Bearer …` header (or not a bearer one).
    #[error("missing bearer token")]
    MissingToken,
    /// A bearer token that is malformed, unknown or revoked.
    #[error("invalid bearer token")]
    InvalidToken,
    /// A bearer token past its expiry.
    #[error("bearer token expired")]
    ExpiredToken,
    /// The member may not do this (access level).
    #[error("{0}")]
    Forbidden(String),
    /// A query, path or body value is invalid.
    #[error("{message}")]
    InvalidField {
        /// The field as the client spells it.
        field: &'static str,
        /// What is wrong, naming the field.
        message: String,
    },
    /// A request axum could not turn into the handler's arguments.
    #[error("{detail}")]
    Rejected {
        /// The status axum chose (400, 413, 415, …).
        status: StatusCode,
        /// axum's explanation.
        detail: String,
    },
    /// An upstream service answered with an error status.
    #[error("upstream error: {}", .0.message())]
    Upstream(Box<tonic::Status>),
    /// An upstream service did not answer within the configured timeout.
    #[error("upstream call timed out")]
    UpstreamTimeout,
    /// An upstream answer lacked a field it always sets.
    #[error("upstream response lacks {0}")]
    Incomplete(&'static str),
    /// The presence store failed.
    #[error(transparent)]
    Presence(#[from] PresenceError),
    /// The token or its workspace made too many requests.
    #[error("too many requests for this {scope}; retry in {retry_after} s")]
    RateLimited {
        /// `token` or `workspace`.
        scope: &'static str,
        /// The limit's burst.
        burst: u32,
        /// Whole seconds until a request would be allowed (rounded up).
        retry_after: u64,
    },
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        // The client stack's own timeout: the upstream did not answer.
        if telenet_kit::grpc::is_client_timeout(&status) {
            return ApiError::UpstreamTimeout;
        }
        ApiError::Upstream(Box::new(status))
    }
}

impl ApiError {
    /// A 400 naming `field`.
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        ApiError::InvalidField {
            field,
            message: message.into(),
        }
    }

    /// The problem document for this error: its status and `code` from
    /// the shared error table, except for a rejection of the HTTP request
    /// itself, which keeps the status axum chose.
    pub fn problem(&self) -> Problem {
        match self {
            ApiError::MissingToken | ApiError::InvalidToken | ApiError::ExpiredToken => {
                Problem::for_code(ErrorCode::Unauthenticated, self.to_string())
            }
            ApiError::Forbidden(detail) => {
                Problem::for_code(ErrorCode::PermissionDenied, detail.clone())
            }
            ApiError::InvalidField { field, message } => {
                Problem::invalid_field(field, message.clone())
            }
            ApiError::Rejected { status, detail } => Problem::from_rejection(*status, detail),
            ApiError::Upstream(status) => Problem::from_grpc(status),
            ApiError::UpstreamTimeout => {
                tracing::warn!("upstream call timed out");
                Problem::for_code(ErrorCode::DeadlineExceeded, TIMEOUT_DETAIL)
            }
            ApiError::Incomplete(_) => {
                tracing::error!(error = %self, "incomplete upstream response");
                Problem::for_code(ErrorCode::Internal, INTERNAL_MESSAGE)
            }
            ApiError::Presence(error) => presence_problem(error),
            ApiError::RateLimited { .. } => {
                Problem::for_code(ErrorCode::ResourceExhausted, self.to_string())
            }
        }
    }
}

fn presence_problem(error: &PresenceError) -> Problem {
    match error {
        PresenceError::Timeout(_) | PresenceError::Backend(_) => {
            tracing::warn!(%error, "presence store unavailable");
            Problem::for_code(
                ErrorCode::Unavailable,
                "presence is unavailable; retry later",
            )
        }
        // Ids come from the members service, so a rejected one is our bug.
        _ => {
            tracing::error!(%error, "presence store failed");
            Problem::for_code(ErrorCode::Internal, INTERNAL_MESSAGE)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.problem().into_response();
        // RFC 6750 §3: a 401 names the scheme, and says why a presented token
        // was refused.
        let challenge = match self {
            ApiError::MissingToken => Some("Bearer"),
            ApiError::InvalidToken => Some("Bearer error=\"invalid_token\""),
            ApiError::ExpiredToken => {
                Some("Bearer error=\"invalid_token\", error_description=\"the token expired\"")
            }
            ApiError::Upstream(ref status)
                if ErrorCode::from_status(status) == ErrorCode::Unauthenticated =>
            {
                Some("Bearer")
            }
            _ => None,
        };
        if let Some(challenge) = challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        if let ApiError::RateLimited {
            burst, retry_after, ..
        } = self
        {
            let headers = response.headers_mut();
            headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            headers.insert("ratelimit-limit", HeaderValue::from(burst));
            headers.insert("ratelimit-remaining", HeaderValue::from(0_u32));
            headers.insert("ratelimit-reset", HeaderValue::from(retry_after));
        }
        response
    }
}
