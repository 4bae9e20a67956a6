//! What can go wrong in reporting, and the code each failure answers with.
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
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The consumer could not subscribe.
    #[error(transparent)]
    Bus(#[from] BusError),
}

impl ServiceError for Error {
    fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidArgument(_) => ErrorCode::InvalidArgument,
            Error::Store(e) => e.code(),
            Error::Bus(_) => ErrorCode::Internal,
        }
    }
}
