//! Conversations: the inbox. Inbound messages open or continue a contact's
//! conversation; agents reply, assign, unassign and close with a closing note
//! (PRODUCT.md, the messages module). Members and tokens live here too.

use serde::{Deserialize, Serialize};
use telenet_bus::SharedBus;
use telenet_proto::contacts::v1::contacts_client::ContactsClient;
use telenet_store::{Db, StoreError};
use tonic::Status;
use tonic::transport::Channel;

pub mod consumers;
pub mod inbox;
pub mod members;
mod rows;

pub use inbox::Inbox;
pub use members::MembersService;

pub const MIGRATIONS: telenet_store::Migrations = telenet_store::migrations!("0100_conversations");

/// Conversations service settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Events handled at once by each consumer.
    pub consumer_concurrency: usize,
    /// Longest reply text, in characters.
    pub max_text_chars: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            consumer_concurrency: 16,
            max_text_chars: 4096 * 4,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("invalid or revoked token")]
    Unauthenticated,
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<telenet_store::sqlx::Error> for Error {
    fn from(e: telenet_store::sqlx::Error) -> Self {
        Error::Store(e.into())
    }
}

impl Error {
    pub fn to_status(&self) -> Status {
        match self {
            Error::InvalidArgument(m) => Status::invalid_argument(m.clone()),
            Error::NotFound(m) => Status::not_found(m.clone()),
            Error::FailedPrecondition(m) => Status::failed_precondition(m.clone()),
            Error::AlreadyExists(m) => Status::already_exists(m.clone()),
            Error::Unauthenticated => Status::unauthenticated(self.to_string()),
            Error::Unavailable(m) => Status::unavailable(m.clone()),
            Error::Store(e) if e.is_transient() => {
                tracing::warn!(error = %e, "conversations store unavailable");
                Status::unavailable("conversations store unavailable")
            }
            Error::Internal(m) => {
                tracing::error!(error = %m, "conversations failed");
                Status::internal("internal error")
            }
            Error::Store(e) => {
                tracing::error!(error = %e, "conversations store failed");
                Status::internal("internal error")
            }
        }
    }
}

pub(crate) fn require(field: &str, value: &str) -> Result<(), Error> {
    telenet_kit::error::required(field, value).map_err(Error::InvalidArgument)
}

/// The conversations service: inbox (gRPC `Conversations`), members (gRPC
/// `Members`) and the consumers of inbound and delivery events.
#[derive(Clone)]
pub struct ConversationsService {
    inbox: Inbox,
    members: MembersService,
    bus: SharedBus,
    config: Config,
}

impl ConversationsService {
    /// `contacts` is a channel to the contacts service.
    pub async fn new(
        db: Db,
        bus: SharedBus,
        contacts: Channel,
        config: Config,
    ) -> Result<Self, Error> {
        Ok(Self {
            inbox: Inbox::new(db.clone(), ContactsClient::new(contacts), config.clone()),
            members: MembersService::new(db),
            bus,
            config,
        })
    }

    pub fn inbox(&self) -> &Inbox {
        &self.inbox
    }

    pub fn members(&self) -> &MembersService {
        &self.members
    }

    pub fn grpc(
        &self,
    ) -> telenet_proto::conversations::v1::conversations_server::ConversationsServer<Inbox> {
        telenet_proto::conversations::v1::conversations_server::ConversationsServer::new(
            self.inbox.clone(),
        )
    }

    pub fn members_grpc(
        &self,
    ) -> telenet_proto::conversations::v1::members_server::MembersServer<MembersService> {
        telenet_proto::conversations::v1::members_server::MembersServer::new(self.members.clone())
    }

    /// Subscribe the consumers (their queues keep events from now on), then
    /// consume in spawned tasks until cancelled.
    pub async fn start(
        &self,
        token: tokio_util::sync::CancellationToken,
    ) -> Result<Vec<tokio::task::JoinHandle<()>>, telenet_bus::BusError> {
        consumers::start(
            self.inbox.clone(),
            self.bus.clone(),
            self.config.consumer_concurrency,
            token,
        )
        .await
    }
}
