//! Errors of the media service, and which [`ErrorCode`] each one is.

use telenet_audio::probe::ProbeError;
use telenet_kit::error::{ErrorCode, ServiceError};
use telenet_store::StoreError;
use tonic::Status;

use crate::blob::BlobError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is missing or malformed; the message names it.
    #[error("{0}")]
    InvalidArgument(String),
    /// The workspace has no such blob (whether or not the bytes exist).
    #[error("blob not found")]
    NotFound,
    /// A byte range starts past the end of the blob.
    #[error("{0}")]
    OutOfRange(String),
    /// An upload is larger than allowed; the message names the limit.
    #[error("{0}")]
    ResourceExhausted(String),
    /// A download link that is not valid for what it asks (expired,
    /// tampered with, for another file).
    #[error("{0}")]
    PermissionDenied(String),
    /// The request is valid but the service is not set up to answer it
    /// (no download links, a profile whose program is missing).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A setting is unusable; `key` is its name in the service's config.
    #[error("config key `{key}`: {reason}")]
    Config { key: &'static str, reason: String },
    /// The client's upload stream failed (cancelled, reset, undecodable).
    #[error("upload stream failed: {}", .0.message())]
    Stream(Status),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// A file that is not acceptable audio, or over a limit.
    #[error(transparent)]
    Probe(#[from] ProbeError),
    /// The stored bytes disagree with the recorded size.
    #[error("blob {blob_id} is {stored} bytes in the store but {recorded} bytes were recorded")]
    Corrupt {
        blob_id: String,
        recorded: u64,
        stored: u64,
    },
    /// Reading bytes of a blob already opened failed.
    #[error("reading blob {blob_id}: {source}")]
    Read {
        blob_id: String,
        #[source]
        source: std::io::Error,
    },
}

impl From<telenet_store::sqlx::Error> for Error {
    fn from(e: telenet_store::sqlx::Error) -> Self {
        Error::Store(e.into())
    }
}

impl ServiceError for Error {
    fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidArgument(_) | Error::OutOfRange(_) => ErrorCode::InvalidArgument,
            Error::Blob(BlobError::OutOfRange { .. }) => ErrorCode::InvalidArgument,
            Error::NotFound => ErrorCode::NotFound,
            Error::ResourceExhausted(_) => ErrorCode::ResourceExhausted,
            Error::PermissionDenied(_) => ErrorCode::PermissionDenied,
            Error::FailedPrecondition(_) => ErrorCode::FailedPrecondition,
            Error::Stream(status) => ErrorCode::from_grpc(status.code()),
            // A file that is acceptable audio but over a limit may still be
            // acceptable elsewhere (as a plain attachment); a read failure
            // is ours.
            Error::Probe(ProbeError::Read(_)) => ErrorCode::Internal,
            Error::Probe(e) if e.is_over_limit() => ErrorCode::FailedPrecondition,
            Error::Probe(_) => ErrorCode::InvalidArgument,
            Error::Store(e) => e.code(),
            // A blob NotFound here means metadata without bytes: the client
            // asked for something that should exist, so it is our fault.
            Error::Config { .. } | Error::Blob(_) | Error::Corrupt { .. } | Error::Read { .. } => {
                ErrorCode::Internal
            }
        }
    }
}

impl Error {
    /// The status sent to the client, through kit's one code table
    /// (internal failures logged there and answered opaquely). gRPC keeps
    /// two codes that table folds into others, and clients tell them
    /// apart: OUT_OF_RANGE (the gateway answers 416 for a range past the
    /// end) and the code of the client's own failed stream.
    pub fn to_status(&self) -> Status {
        let status = telenet_kit::error::to_status(self);
        let code = match self {
            Error::OutOfRange(_) | Error::Blob(BlobError::OutOfRange { .. }) => {
                tonic::Code::OutOfRange
            }
            Error::Stream(stream) => stream.code(),
            _ => return status,
        };
        Status::with_metadata(code, status.message(), status.metadata().clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_errors_are_the_callers_unless_over_a_limit_or_ours() {
        let code = |e: ProbeError| Error::Probe(e).to_status().code();
        assert_eq!(
            code(ProbeError::NotAudio {
                what: "a PNG image".into()
            }),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            code(ProbeError::TooLong {
                duration_ms: 301_000,
                max_ms: 300_000
            }),
            tonic::Code::FailedPrecondition
        );
        assert_eq!(
            code(ProbeError::TooLarge { limit: 1 }),
            tonic::Code::FailedPrecondition
        );
        assert_eq!(
            code(ProbeError::Read(std::io::Error::other("disk"))),
            tonic::Code::Internal
        );
    }

    #[test]
    fn ranges_past_the_end_and_failed_streams_keep_their_grpc_codes() {
        let past = Error::OutOfRange("offset 9 is beyond the end".into()).to_status();
        assert_eq!(past.code(), tonic::Code::OutOfRange);
        assert_eq!(past.message(), "offset 9 is beyond the end");
        let stream = Error::Stream(Status::cancelled("gone")).to_status();
        assert_eq!(stream.code(), tonic::Code::Cancelled);
        assert_eq!(stream.message(), "upload stream failed: gone");
    }
}
