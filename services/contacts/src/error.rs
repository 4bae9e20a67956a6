//! What can go wrong in contacts, and the code each failure answers with.
//! Conversion to a gRPC status happens only in the adapter
//! (`telenet_kit::error::to_status`).

use telenet_kit::error::{ErrorCode, ServiceError};
use telenet_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is missing or malformed; the message names it.
    #[error("{0}")]
    InvalidArgument(String),
    /// The workspace has no such contact (whether or not another one does).
    #[error("contact not found")]
    NotFound,
    /// The database is unreachable or busy; the same call may succeed later.
    #[error("contacts store unavailable")]
    StoreUnavailable(#[source] StoreError),
    /// The database failed otherwise; logged with its cause, answered opaquely.
    #[error("contacts store failed")]
    Store(#[source] StoreError),
}

impl From<StoreError> for Error {
    /// Transient failures are told apart where the cause is at hand, so
    /// callers get UNAVAILABLE (and retry) rather than INTERNAL.
    fn from(error: StoreError) -> Self {
        if error.is_transient() {
            Error::StoreUnavailable(error)
        } else {
            Error::Store(error)
        }
    }
}

impl ServiceError for Error {
    fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidArgument(_) => ErrorCode::InvalidArgument,
            Error::NotFound => ErrorCode::NotFound,
            Error::StoreUnavailable(_) => ErrorCode::Unavailable,
            Error::Store(_) => ErrorCode::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use telenet_kit::error::to_status;

    #[test]
    fn store_failures_answer_by_whether_a_retry_may_help() {
        let down = Error::from(StoreError::from(telenet_store::sqlx::Error::PoolTimedOut));
        let status = to_status(&down);
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(status.message(), "contacts store unavailable");

        let broken = Error::from(StoreError::from(telenet_store::sqlx::Error::RowNotFound));
        let status = to_status(&broken);
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(status.message().starts_with("internal error"));
    }

    #[test]
    fn caller_errors_keep_their_message() {
        let status = to_status(&Error::NotFound);
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert_eq!(status.message(), "contact not found");
        let status = to_status(&Error::InvalidArgument("channel_id is required".into()));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(status.message(), "channel_id is required");
    }
}
