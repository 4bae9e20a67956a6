//! What can go wrong in ingress, and the code each failure answers with.
//! Conversion to a gRPC status happens only in the adapter
//! (`telenet_kit::error::to_status`); webhooks answer with their own HTTP
//! statuses (see the `webhook` module).

use telenet_bus::BusError;
use telenet_kit::error::{ErrorCode, ServiceError};
use telenet_signing::sealing::SealError;
use telenet_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is missing or malformed; the message names it.
    #[error("{0}")]
    InvalidArgument(String),
    /// The workspace has no such channel (or it was deleted).
    #[error("channel not found")]
    NotFound,
    /// The request cannot be done in the channel's state; the message says why.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A setting of the service is unusable; `key` is its name.
    #[error("ingress.{key}: {reason}")]
    Config { key: &'static str, reason: String },
    /// Something the service needs failed (e.g. no randomness for a secret);
    /// logged, answered opaquely.
    #[error("{0}")]
    Internal(String),
    /// The database failed: unavailable when the same call may succeed
    /// later (callers retry), otherwise logged with its cause and answered
    /// opaquely ([`StoreError::code`]).
    #[error("ingress store {}", .0.verdict())]
    Store(#[from] StoreError),
    /// The broker did not confirm a publish.
    #[error("event bus unavailable")]
    Bus(#[source] BusError),
    /// A stored channel secret cannot be sealed or opened: unavailable when
    /// it is sealed under a key this process does not hold (another replica
    /// may, or the keyring is being fixed), otherwise logged and answered
    /// opaquely. The message never carries the secret.
    #[error("channel secret: {0}")]
    Secret(#[from] SealError),
}

impl From<telenet_store::sqlx::Error> for Error {
    fn from(error: telenet_store::sqlx::Error) -> Self {
        StoreError::from(error).into()
    }
}

impl From<BusError> for Error {
    fn from(error: BusError) -> Self {
        Error::Bus(error)
    }
}

impl ServiceError for Error {
    fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidArgument(_) => ErrorCode::InvalidArgument,
            Error::NotFound => ErrorCode::NotFound,
            Error::FailedPrecondition(_) => ErrorCode::FailedPrecondition,
            Error::Store(e) => e.code(),
            Error::Bus(_) | Error::Secret(SealError::UnknownKey(_)) => ErrorCode::Unavailable,
            Error::Secret(_) => ErrorCode::Internal,
            Error::Config { .. } | Error::Internal(_) => ErrorCode::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use telenet_kit::error::to_status;

    #[test]
    fn store_failures_answer_by_whether_a_retry_may_help() {
        let down = Error::from(telenet_store::sqlx::Error::PoolTimedOut);
        let status = to_status(&down);
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(status.message(), "ingress store unavailable");

        let broken = Error::from(telenet_store::sqlx::Error::RowNotFound);
        let status = to_status(&broken);
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(status.message().starts_with("internal error"));
    }

    #[test]
    fn secrets_under_a_missing_key_are_unavailable_others_internal() {
        let missing = to_status(&Error::Secret(SealError::UnknownKey("k1".into())));
        assert_eq!(missing.code(), tonic::Code::Unavailable);
        assert_eq!(
            missing.message(),
            "channel secret: sealed under key \"k1\", which is not in the keyring"
        );
        let altered = to_status(&Error::Secret(SealError::Unopened));
        assert_eq!(altered.code(), tonic::Code::Internal);
    }

    #[test]
    fn caller_errors_keep_their_message() {
        let status = to_status(&Error::NotFound);
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert_eq!(status.message(), "channel not found");
        let status = to_status(&Error::InvalidArgument(
            "name must be 1 to 100 characters".into(),
        ));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(status.message(), "name must be 1 to 100 characters");
        let status = to_status(&Error::Internal("no randomness for a secret".into()));
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(!status.message().contains("randomness"));
    }
}
