//! What can go wrong in dispatch, and the code each failure answers with.
//! Conversion to a gRPC status happens only in the adapter
//! (`telenet_kit::error::to_status`).

use telenet_bus::BusError;
use telenet_kit::error::{ErrorCode, ServiceError};
use telenet_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is missing or malformed; the message names it.
    #[error("{0}")]
    InvalidArgument(String),
    /// The workspace has no delivery for the message.
    #[error("delivery not found")]
    NotFound,
    /// The HTTP client channels are reached with cannot be built.
    #[error("cannot set up the http client: {0}")]
    Setup(String),
    /// A setting is unusable; `key` is its name in the service's config.
    #[error("config key `{key}`: {reason}")]
    Config { key: &'static str, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bus(#[from] BusError),
}

impl ServiceError for Error {
    fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidArgument(_) => ErrorCode::InvalidArgument,
            Error::NotFound => ErrorCode::NotFound,
            Error::Store(e) => e.code(),
            Error::Bus(_) | Error::Setup(_) | Error::Config { .. } => ErrorCode::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use telenet_kit::error::to_status;

    #[test]
    fn errors_answer_with_their_code() {
        let status = to_status(&Error::NotFound);
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert_eq!(status.message(), "delivery not found");
        let status = to_status(&Error::InvalidArgument("message_id is required".into()));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let down = Error::from(StoreError::from(telenet_store::sqlx::Error::PoolTimedOut));
        assert_eq!(to_status(&down).code(), tonic::Code::Unavailable);
        let broken = Error::from(StoreError::from(telenet_store::sqlx::Error::RowNotFound));
        let status = to_status(&broken);
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(status.message().starts_with("internal error"));
    }
}
