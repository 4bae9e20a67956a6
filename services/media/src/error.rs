//! Errors of the media service and their gRPC status.

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
    /// The request is valid but the service is not set up to answer it.
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
    Probe(#[from] crate::probe::ProbeError),
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

impl Error {
    /// The status sent to the client. Internal failures are logged here, with
    /// their detail, and answered opaquely.
    pub fn to_status(&self) -> Status {
        match self {
            Error::InvalidArgument(m) => Status::invalid_argument(m.clone()),
            Error::NotFound => Status::not_found(self.to_string()),
            Error::OutOfRange(m) => Status::out_of_range(m.clone()),
            Error::ResourceExhausted(m) => Status::resource_exhausted(m.clone()),
            Error::PermissionDenied(m) => Status::permission_denied(m.clone()),
            Error::FailedPrecondition(m) => Status::failed_precondition(m.clone()),
            Error::Stream(s) => Status::new(s.code(), self.to_string()),
            Error::Probe(e) => e.to_status(),
            Error::Blob(BlobError::OutOfRange { .. }) => Status::out_of_range(self.to_string()),
            Error::Store(e) if e.is_transient() => {
                tracing::warn!(error = %e, "media store unavailable");
                Status::unavailable("media store unavailable")
            }
            Error::Config { .. }
            | Error::Store(_)
            | Error::Blob(_)
            | Error::Corrupt { .. }
            | Error::Read { .. } => {
                // A blob NotFound here means metadata without bytes: the
                // client asked for something that should exist, so it is our
                // fault, not theirs.
                tracing::error!(error = %self, "media request failed");
                Status::internal("internal error")
            }
        }
    }
}
