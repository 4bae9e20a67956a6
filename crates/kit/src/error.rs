//! The one error-code table shared by every service, mapped to both gRPC
//! codes and HTTP statuses.
//!
//! Each service keeps its own `thiserror` enum and says, per variant, which
//! [`ErrorCode`] it is by implementing [`ServiceError`]. Conversion to the
//! wire happens only at the boundary ([`to_status`] in gRPC handlers,
//! [`http_status_of`] in the gateway), so domain code never builds a
//! `tonic::Status` itself.
//!
//! ```
//! use telenet_kit::error::{ErrorCode, ServiceError, to_status};
//!
//! #[derive(Debug, thiserror::Error)]
//! enum ContactError {
//!     #[error("contact {0} not found")]
//!     NotFound(String),
//!     #[error("database unavailable")]
//!     Database(#[source] std::io::Error),
//! }
//!
//! impl ServiceError for ContactError {
//!     fn code(&self) -> ErrorCode {
//!         match self {
//!             ContactError::NotFound(_) => ErrorCode::NotFound,
//!             ContactError::Database(_) => ErrorCode::Internal,
//!         }
//!     }
//! }
//!
//! let status = to_status(&ContactError::NotFound("c_1".into()));
//! assert_eq!(status.code(), tonic::Code::NotFound);
//! assert_eq!(status.message(), "contact c_1 not found");
//! ```

use std::fmt;

use http::StatusCode;
use opentelemetry::trace::TraceContextExt;
use tonic::metadata::MetadataValue;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Metadata key carrying the [`ErrorCode`] name next to the gRPC code, so a
/// caller can tell codes apart that share a gRPC code (e.g. `PayloadTooLarge`
/// and `ResourceExhausted`) and the gateway answers 413 rather than 429.
pub const ERROR_CODE_METADATA: &str = "telenet-error-code";

/// Message returned instead of an internal error's own text, which may
/// contain SQL, hostnames or other details callers must not see.
pub const INTERNAL_MESSAGE: &str = "internal error";

/// What went wrong, in terms a caller can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request is malformed or a field is invalid; do not retry as is.
    InvalidArgument,
    /// The addressed entity does not exist (in this workspace).
    NotFound,
    /// The entity to create exists already.
    AlreadyExists,
    /// The caller is known but not allowed to do this.
    PermissionDenied,
    /// The caller could not be identified.
    Unauthenticated,
    /// The entity is in a state that does not allow this (e.g. closed).
    FailedPrecondition,
    /// A quota or rate limit was hit; retry later.
    ResourceExhausted,
    /// The payload (upload, message) is larger than allowed.
    PayloadTooLarge,
    /// A dependency is down or the service is overloaded; retry with backoff.
    Unavailable,
    /// The operation did not finish in time.
    DeadlineExceeded,
    /// A bug or an unexpected failure; details are logged, not returned.
    Internal,
}

/// Whether a RESOURCE_EXHAUSTED message is about size rather than rate.
fn says_too_large(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains("too large") || message.contains("too big")
}

impl ErrorCode {
    /// Every code, for tables and tests.
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::InvalidArgument,
        ErrorCode::NotFound,
        ErrorCode::AlreadyExists,
        ErrorCode::PermissionDenied,
        ErrorCode::Unauthenticated,
        ErrorCode::FailedPrecondition,
        ErrorCode::ResourceExhausted,
        ErrorCode::PayloadTooLarge,
        ErrorCode::Unavailable,
        ErrorCode::DeadlineExceeded,
        ErrorCode::Internal,
    ];

    /// The gRPC code sent on the wire.
    pub fn grpc_code(self) -> tonic::Code {
        match self {
            ErrorCode::InvalidArgument => tonic::Code::InvalidArgument,
            ErrorCode::NotFound => tonic::Code::NotFound,
            ErrorCode::AlreadyExists => tonic::Code::AlreadyExists,
            ErrorCode::PermissionDenied => tonic::Code::PermissionDenied,
            ErrorCode::Unauthenticated => tonic::Code::Unauthenticated,
            ErrorCode::FailedPrecondition => tonic::Code::FailedPrecondition,
            // gRPC itself reports oversized messages as RESOURCE_EXHAUSTED.
            ErrorCode::ResourceExhausted | ErrorCode::PayloadTooLarge => {
                tonic::Code::ResourceExhausted
            }
            ErrorCode::Unavailable => tonic::Code::Unavailable,
            ErrorCode::DeadlineExceeded => tonic::Code::DeadlineExceeded,
            ErrorCode::Internal => tonic::Code::Internal,
        }
    }

    /// The HTTP status the gateway answers with.
    pub fn http_status(self) -> StatusCode {
        match self {
            ErrorCode::InvalidArgument => StatusCode::BAD_REQUEST,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::AlreadyExists => StatusCode::CONFLICT,
            ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
            ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
            // "Not in a state that allows this": a conflict with the
            // resource's current state, which REST clients know as 409.
            ErrorCode::FailedPrecondition => StatusCode::CONFLICT,
            ErrorCode::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The closest code for a gRPC code, for statuses that did not come from
    /// [`to_status`] (another library, the transport, a timeout).
    pub fn from_grpc(code: tonic::Code) -> ErrorCode {
        use tonic::Code;
        match code {
            Code::InvalidArgument | Code::OutOfRange => ErrorCode::InvalidArgument,
            Code::NotFound => ErrorCode::NotFound,
            Code::AlreadyExists => ErrorCode::AlreadyExists,
            Code::PermissionDenied => ErrorCode::PermissionDenied,
            Code::Unauthenticated => ErrorCode::Unauthenticated,
            Code::FailedPrecondition | Code::Aborted => ErrorCode::FailedPrecondition,
            Code::ResourceExhausted => ErrorCode::ResourceExhausted,
            // tonic reports client-side timeouts as CANCELLED.
            Code::Unavailable | Code::Cancelled => ErrorCode::Unavailable,
            Code::DeadlineExceeded => ErrorCode::DeadlineExceeded,
            Code::Ok | Code::Unknown | Code::Unimplemented | Code::Internal | Code::DataLoss => {
                ErrorCode::Internal
            }
        }
    }

    /// The code of a status: the [`ERROR_CODE_METADATA`] entry when a TELENET
    /// service set it, otherwise [`ErrorCode::from_grpc`].
    pub fn from_status(status: &tonic::Status) -> ErrorCode {
        let named = status
            .metadata()
            .get(ERROR_CODE_METADATA)
            .and_then(|value| value.to_str().ok())
            .and_then(ErrorCode::from_name);
        match named {
            Some(code) => code,
            // gRPC itself reports an oversized message as RESOURCE_EXHAUSTED
            // without our metadata: a message about size is not a rate limit
            // (a 413, and not worth retrying).
            None if status.code() == tonic::Code::ResourceExhausted
                && says_too_large(status.message()) =>
            {
                ErrorCode::PayloadTooLarge
            }
            None => ErrorCode::from_grpc(status.code()),
        }
    }

    /// Stable snake_case name, used in metadata and API error bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::NotFound => "not_found",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::FailedPrecondition => "failed_precondition",
            ErrorCode::ResourceExhausted => "resource_exhausted",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::DeadlineExceeded => "deadline_exceeded",
            ErrorCode::Internal => "internal",
        }
    }

    /// The code an HTTP error status stands for, for an error that did not
    /// come from a code (a framework's own rejection of a request): the
    /// inverse of [`ErrorCode::http_status`]. 409 answers both
    /// `AlreadyExists` and `FailedPrecondition`; it reads as the more
    /// general `FailedPrecondition`.
    pub fn from_http_status(status: StatusCode) -> Option<ErrorCode> {
        if status == StatusCode::CONFLICT {
            return Some(ErrorCode::FailedPrecondition);
        }
        ErrorCode::ALL
            .into_iter()
            .find(|code| code.http_status() == status)
    }

    /// The inverse of [`ErrorCode::as_str`].
    pub fn from_name(name: &str) -> Option<ErrorCode> {
        ErrorCode::ALL
            .into_iter()
            .find(|code| code.as_str() == name)
    }

    /// Whether a caller may retry the same request later with a chance of
    /// success.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorCode::Unavailable | ErrorCode::DeadlineExceeded | ErrorCode::ResourceExhausted
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A service's error type: says which [`ErrorCode`] each variant is.
///
/// Its `Display` text is returned to callers for every code but
/// [`ErrorCode::Internal`], so write it lowercase, without secrets, and put
/// the cause in `#[source]`.
pub trait ServiceError: std::error::Error {
    /// The code callers see.
    fn code(&self) -> ErrorCode;
}

/// Converts a service error into the `tonic::Status` to return.
///
/// Internal errors are logged here, with their whole source chain, and
/// returned with an opaque message carrying the trace id so a report can be
/// matched to the log line. Other errors return their own message.
pub fn to_status<E: ServiceError + ?Sized>(error: &E) -> tonic::Status {
    let code = error.code();
    let message = if code == ErrorCode::Internal {
        let trace_id = current_trace_id();
        tracing::error!(
            error = %error,
            chain = %SourceChain(error),
            trace_id = trace_id.as_deref().unwrap_or(""),
            "internal error"
        );
        match trace_id {
            Some(id) => format!("{INTERNAL_MESSAGE} (trace {id})"),
            None => INTERNAL_MESSAGE.to_owned(),
        }
    } else {
        tracing::debug!(error = %error, code = %code, "request failed");
        error.to_string()
    };
    let mut status = tonic::Status::new(code.grpc_code(), message);
    status.metadata_mut().insert(
        ERROR_CODE_METADATA,
        MetadataValue::from_static(code.as_str()),
    );
    status
}

/// The HTTP status for a gRPC status received from a TELENET service.
pub fn http_status_of(status: &tonic::Status) -> StatusCode {
    ErrorCode::from_status(status).http_status()
}

fn current_trace_id() -> Option<String> {
    let context = tracing::Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// Displays an error's sources, outermost first, joined by `: `.
struct SourceChain<'a, E: ?Sized>(&'a E);

impl<E: std::error::Error + ?Sized> fmt::Display for SourceChain<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut source = self.0.source();
        let mut first = true;
        while let Some(error) = source {
            if !first {
                f.write_str(": ")?;
            }
            write!(f, "{error}")?;
            first = false;
            source = error.source();
        }
        Ok(())
    }
}

/// The one check every service applies to a required text field: blank
/// (empty or whitespace) is missing. The message names the field.
pub fn required(field: &str, value: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        Err(format!("{field} is required"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn grpcs_own_size_errors_are_payload_too_large_not_rate_limits() {
        let own = tonic::Status::resource_exhausted(
            "Error, decoded message length too large: found 5000000 bytes, the limit is: 4194304 bytes",
        );
        assert_eq!(ErrorCode::from_status(&own), ErrorCode::PayloadTooLarge);
        assert!(!crate::grpc::is_retryable(&own));
        let rate = tonic::Status::resource_exhausted("slow down");
        assert_eq!(ErrorCode::from_status(&rate), ErrorCode::ResourceExhausted);
        assert!(crate::grpc::is_retryable(&rate));
    }
    #[test]
    fn required_fields_name_themselves() {
        assert_eq!(super::required("name", "x"), Ok(()));
        assert_eq!(
            super::required("name", " \t"),
            Err("name is required".to_owned())
        );
    }

    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum TestError {
        #[error("conversation {0} is closed")]
        Closed(&'static str),
        #[error("upload too large")]
        TooLarge,
        #[error("database failed")]
        Database(#[source] std::io::Error),
    }

    impl ServiceError for TestError {
        fn code(&self) -> ErrorCode {
            match self {
                TestError::Closed(_) => ErrorCode::FailedPrecondition,
                TestError::TooLarge => ErrorCode::PayloadTooLarge,
                TestError::Database(_) => ErrorCode::Internal,
            }
        }
    }

    #[test]
    fn every_code_round_trips_through_its_name() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_name(code.as_str()), Some(code));
        }
        assert_eq!(ErrorCode::from_name("nope"), None);
    }

    #[test]
    fn every_code_but_payload_too_large_round_trips_through_grpc() {
        for code in ErrorCode::ALL {
            if code != ErrorCode::PayloadTooLarge {
                assert_eq!(ErrorCode::from_grpc(code.grpc_code()), code, "{code}");
            }
        }
    }

    #[test]
    fn every_code_but_already_exists_round_trips_through_http() {
        for code in ErrorCode::ALL {
            if code != ErrorCode::AlreadyExists {
                assert_eq!(ErrorCode::from_http_status(code.http_status()), Some(code));
            }
        }
        assert_eq!(
            ErrorCode::from_http_status(StatusCode::CONFLICT),
            Some(ErrorCode::FailedPrecondition)
        );
        assert_eq!(
            ErrorCode::from_http_status(StatusCode::METHOD_NOT_ALLOWED),
            None
        );
    }

    #[test]
    fn table_matches_conventions() {
        assert_eq!(ErrorCode::NotFound.http_status(), StatusCode::NOT_FOUND);
        assert_eq!(
            ErrorCode::Unauthenticated.http_status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            ErrorCode::PayloadTooLarge.http_status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(ErrorCode::Unavailable.grpc_code(), tonic::Code::Unavailable);
        assert_eq!(
            ErrorCode::from_grpc(tonic::Code::Unknown),
            ErrorCode::Internal
        );
        assert!(ErrorCode::Unavailable.is_transient());
        assert!(!ErrorCode::InvalidArgument.is_transient());
    }

    #[test]
    fn public_errors_keep_their_message() {
        let status = to_status(&TestError::Closed("c_1"));
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert_eq!(status.message(), "conversation c_1 is closed");
        assert_eq!(http_status_of(&status), StatusCode::CONFLICT);
    }

    #[test]
    fn internal_errors_are_opaque() {
        let error = TestError::Database(std::io::Error::other("password=hunter2 rejected"));
        let status = to_status(&error);
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(status.message().starts_with(INTERNAL_MESSAGE));
        assert!(!status.message().contains("hunter2"));
        assert_eq!(SourceChain(&error).to_string(), "password=hunter2 rejected");
    }

    #[test]
    fn metadata_disambiguates_shared_grpc_codes() {
        let status = to_status(&TestError::TooLarge);
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(http_status_of(&status), StatusCode::PAYLOAD_TOO_LARGE);
        let foreign = tonic::Status::resource_exhausted("slow down");
        assert_eq!(http_status_of(&foreign), StatusCode::TOO_MANY_REQUESTS);
    }
}
