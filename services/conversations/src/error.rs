//! What can go wrong in the conversations service, one variant per refusal.
//!
//! Each variant's text is what a caller reads (gRPC status message, or the
//! reason a bus delivery is retried or dead-lettered), so it is lowercase
//! and carries no secrets. Conversion happens only at the boundaries:
//! [`telenet_kit::error::to_status`] in the gRPC adapters, and
//! `From<Error> for HandleError` for the consumers.

use telenet_kit::error::{ErrorCode, ServiceError};
use telenet_store::StoreError;
use telenet_store::consumer::HandleError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field is missing or malformed; the message names it.
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{field} must be 1 to {max} characters")]
    NameLength { field: &'static str, max: usize },
    #[error("email {0:?} is not an e-mail address")]
    NotAnEmail(String),
    #[error("access_level is required")]
    AccessLevelRequired,
    #[error("text or attachments are required")]
    EmptyReply,
    #[error("text is longer than {0} characters")]
    TextTooLong(usize),
    #[error("client_message_id is longer than {0} bytes")]
    ClientMessageIdTooLong(usize),
    #[error("closing_note.category is longer than {0} characters")]
    ClosingCategoryTooLong(usize),
    #[error("closing_note.summary is longer than {0} characters")]
    ClosingSummaryTooLong(usize),

    #[error("workspace not found")]
    WorkspaceNotFound,
    #[error("member not found")]
    MemberNotFound,
    #[error("conversation not found")]
    ConversationNotFound,
    #[error("message not found")]
    MessageNotFound,
    /// Media reported on a message this workspace does not have.
    #[error("message {0} not found")]
    UnknownMessage(String),
    #[error("message {message_id} has no attachment {index}")]
    NoSuchAttachment { message_id: String, index: u32 },
    #[error("author is not a member of the workspace")]
    AuthorNotMember,
    #[error("user is not a member of the workspace")]
    AssigneeNotMember,

    #[error("a member with email {0} already exists")]
    EmailTaken(String),
    #[error("invalid or revoked token")]
    Unauthenticated,
    #[error("token expired")]
    TokenExpired,
    #[error("token not found")]
    TokenNotFound,
    /// The caller is a member but their access level does not allow it.
    #[error("{0}")]
    NotAllowed(&'static str),

    #[error("conversation is closed; the contact's next message opens a new one")]
    ReplyToClosed,
    /// The channel's reply window closed (`closed_at` in microseconds).
    #[error(
        "the reply window closed at {}: {name} only accepts replies within {length} of the contact's last message",
        telenet_store::timestamp(*closed_at)
    )]
    ReplyWindowClosed {
        closed_at: i64,
        name: String,
        length: String,
    },
    #[error("a closed conversation cannot be assigned")]
    AssignClosed,
    #[error("conversation is already closed")]
    AlreadyClosed,

    /// The contacts service refused or failed to resolve a sender.
    #[error("contacts: {}", .0.message())]
    Contacts(tonic::Status),
    #[error("contacts returned no contact")]
    NoContact,
    /// Another message of the same contact opened the conversation first;
    /// retrying joins it.
    #[error("conversation opened concurrently")]
    OpenedConcurrently,
    /// The same provider message, delivered twice (under two event ids),
    /// was stored by the other delivery meanwhile; retrying finds it
    /// stored and changes nothing.
    #[error("message stored concurrently")]
    StoredConcurrently,
    /// A channel's status can overtake dispatch's record of the provider id.
    #[error("message of status not found (yet)")]
    StatusBeforeMessage,

    #[error("no randomness")]
    NoRandomness(#[source] getrandom::Error),
    /// Transient store failures (connections, locks) are worth retrying;
    /// the others are bugs or broken data ([`StoreError::code`]).
    #[error("conversations store {}", .0.verdict())]
    Store(#[from] StoreError),
}

impl ServiceError for Error {
    fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidArgument(_)
            | Error::NameLength { .. }
            | Error::NotAnEmail(_)
            | Error::AccessLevelRequired
            | Error::EmptyReply
            | Error::TextTooLong(_)
            | Error::ClientMessageIdTooLong(_)
            | Error::ClosingCategoryTooLong(_)
            | Error::ClosingSummaryTooLong(_) => ErrorCode::InvalidArgument,
            Error::WorkspaceNotFound
            | Error::MemberNotFound
            | Error::ConversationNotFound
            | Error::MessageNotFound
            | Error::UnknownMessage(_)
            | Error::NoSuchAttachment { .. }
            | Error::AuthorNotMember
            | Error::AssigneeNotMember
            | Error::TokenNotFound => ErrorCode::NotFound,
            Error::EmailTaken(_) => ErrorCode::AlreadyExists,
            Error::Unauthenticated | Error::TokenExpired => ErrorCode::Unauthenticated,
            Error::NotAllowed(_) => ErrorCode::PermissionDenied,
            Error::ReplyToClosed
            | Error::ReplyWindowClosed { .. }
            | Error::AssignClosed
            | Error::AlreadyClosed => ErrorCode::FailedPrecondition,
            // Contacts refusing the sender will refuse it again.
            Error::Contacts(status) if status.code() == tonic::Code::InvalidArgument => {
                ErrorCode::InvalidArgument
            }
            Error::Contacts(_)
            | Error::NoContact
            | Error::OpenedConcurrently
            | Error::StoredConcurrently
            | Error::StatusBeforeMessage => ErrorCode::Unavailable,
            Error::Store(e) => e.code(),
            Error::NoRandomness(_) => ErrorCode::Internal,
        }
    }
}

/// A consumer's outcome: held and handled again while the database or the
/// contacts service is down, retried later when trying again may succeed,
/// dead-lettered otherwise. Store errors keep the store's own judgement and
/// text.
impl From<Error> for HandleError {
    fn from(e: Error) -> Self {
        match e {
            Error::Store(s) => s.into(),
            Error::Contacts(ref status)
                if matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
                ) =>
            {
                HandleError::Unavailable(e.to_string())
            }
            e if e.code().is_transient() => HandleError::Transient(e.to_string()),
            e => HandleError::Permanent(e.to_string()),
        }
    }
}

/// The one check for a required text field, named in the message.
pub(crate) fn require(field: &str, value: &str) -> Result<(), Error> {
    telenet_kit::error::required(field, value).map_err(Error::InvalidArgument)
}

#[cfg(test)]
mod tests {
    use super::*;
    use telenet_kit::error::to_status;

    /// What callers read: every refusal keeps its gRPC code and message.
    #[test]
    fn every_refusal_answers_with_its_code_and_message() {
        use tonic::Code;
        let cases = [
            (
                Error::InvalidArgument("workspace_id is required".into()),
                Code::InvalidArgument,
                "workspace_id is required",
            ),
            (
                Error::NameLength {
                    field: "owner_name",
                    max: 100,
                },
                Code::InvalidArgument,
                "owner_name must be 1 to 100 characters",
            ),
            (
                Error::NotAnEmail("olga".into()),
                Code::InvalidArgument,
                "email \"olga\" is not an e-mail address",
            ),
            (
                Error::AccessLevelRequired,
                Code::InvalidArgument,
                "access_level is required",
            ),
            (
                Error::EmptyReply,
                Code::InvalidArgument,
                "text or attachments are required",
            ),
            (
                Error::TextTooLong(16384),
                Code::InvalidArgument,
                "text is longer than 16384 characters",
            ),
            (
                Error::ClientMessageIdTooLong(200),
                Code::InvalidArgument,
                "client_message_id is longer than 200 bytes",
            ),
            (
                Error::ClosingCategoryTooLong(100),
                Code::InvalidArgument,
                "closing_note.category is longer than 100 characters",
            ),
            (
                Error::ClosingSummaryTooLong(10_000),
                Code::InvalidArgument,
                "closing_note.summary is longer than 10000 characters",
            ),
            (
                Error::WorkspaceNotFound,
                Code::NotFound,
                "workspace not found",
            ),
            (Error::MemberNotFound, Code::NotFound, "member not found"),
            (
                Error::ConversationNotFound,
                Code::NotFound,
                "conversation not found",
            ),
            (
                Error::AuthorNotMember,
                Code::NotFound,
                "author is not a member of the workspace",
            ),
            (
                Error::AssigneeNotMember,
                Code::NotFound,
                "user is not a member of the workspace",
            ),
            (
                Error::EmailTaken("ari@acme.test".into()),
                Code::AlreadyExists,
                "a member with email ari@acme.test already exists",
            ),
            (
                Error::Unauthenticated,
                Code::Unauthenticated,
                "invalid or revoked token",
            ),
            (Error::TokenExpired, Code::Unauthenticated, "token expired"),
            (Error::TokenNotFound, Code::NotFound, "token not found"),
            (
                Error::NotAllowed("agents may revoke only their own tokens"),
                Code::PermissionDenied,
                "agents may revoke only their own tokens",
            ),
            (
                Error::ReplyToClosed,
                Code::FailedPrecondition,
                "conversation is closed; the contact's next message opens a new one",
            ),
            (
                Error::AssignClosed,
                Code::FailedPrecondition,
                "a closed conversation cannot be assigned",
            ),
            (
                Error::AlreadyClosed,
                Code::FailedPrecondition,
                "conversation is already closed",
            ),
        ];
        for (error, code, message) in cases {
            let status = to_status(&error);
            assert_eq!(status.code(), code, "{error:?}");
            assert_eq!(status.message(), message, "{error:?}");
        }
    }

    #[test]
    fn store_failures_are_unavailable_when_transient_and_opaque_otherwise() {
        let transient = Error::from(StoreError::Database(sqlx_pool_timed_out()));
        let status = to_status(&transient);
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(status.message(), "conversations store unavailable");

        let broken = Error::from(StoreError::Database(
            telenet_store::sqlx::Error::RowNotFound,
        ));
        let status = to_status(&broken);
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(status.message().starts_with("internal error"));
    }

    #[test]
    fn consumers_retry_what_may_succeed_later_and_dead_letter_the_rest() {
        let transient = |e: Error| matches!(HandleError::from(e), HandleError::Transient(_));
        let unavailable = |e: Error| matches!(HandleError::from(e), HandleError::Unavailable(_));
        assert!(unavailable(Error::Contacts(tonic::Status::unavailable(
            "down"
        ))));
        assert!(unavailable(Error::Contacts(
            tonic::Status::deadline_exceeded("slow")
        )));
        assert!(!transient(Error::Contacts(
            tonic::Status::invalid_argument("bad")
        )));
        assert!(transient(Error::NoContact));
        assert!(transient(Error::OpenedConcurrently));
        assert!(transient(Error::StoredConcurrently));
        assert!(transient(Error::StatusBeforeMessage));
        assert!(unavailable(Error::from(StoreError::Database(
            sqlx_pool_timed_out()
        ))));
        assert!(!transient(Error::UnknownMessage("m".into())));
        assert!(!transient(Error::ConversationNotFound));
        assert_eq!(
            HandleError::from(Error::Contacts(tonic::Status::invalid_argument("bad id")))
                .to_string(),
            "permanent: contacts: bad id"
        );
        assert_eq!(
            HandleError::from(Error::NoSuchAttachment {
                message_id: "m1".into(),
                index: 7
            })
            .to_string(),
            "permanent: message m1 has no attachment 7"
        );
    }

    fn sqlx_pool_timed_out() -> telenet_store::sqlx::Error {
        telenet_store::sqlx::Error::PoolTimedOut
    }
}
