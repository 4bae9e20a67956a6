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
    /// The database failed: unavailable when the same call may succeed
    /// later (callers retry), otherwise logged with its cause and answered
    /// opaquely ([`StoreError::code`]).
    #[error("contacts store {}", .0.verdict())]
    Store(#[from] StoreError),
}

impl ServiceError for Error {
    fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidArgument(_) => ErrorCode::InvalidArgument,
            Error::NotFound => ErrorCode::NotFound,
            Error::Store(e) => e.code(),
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
