//! The gRPC services `Conversations`, `Members` and the operations service
//! `DeadLetters`: requests become domain
//! commands and queries, answers become protobuf messages, errors become
//! statuses through kit's one table. Nothing else happens here.

use telenet_proto::common::v1 as common;
use telenet_proto::conversations::v1::conversations_server::ConversationsServer;
use telenet_proto::conversations::v1::members_server::MembersServer;
use telenet_proto::operations::v1::dead_letters_server::DeadLettersServer;
use tonic::Status;

use crate::domain::PageRequest;
use crate::error::Error;
use crate::inbox::Inbox;
use crate::members::Members;

mod conversations;
mod dead_letters;
mod members;

pub use conversations::ConversationsApi;
pub use dead_letters::DeadLettersApi;
pub use members::MembersApi;

/// The `DeadLetters` operations service over the process's bus.
pub fn dead_letters_server(bus: telenet_bus::SharedBus) -> DeadLettersServer<DeadLettersApi> {
    DeadLettersServer::new(DeadLettersApi::new(bus))
}

/// The `Conversations` service over the inbox.
pub fn conversations_server(inbox: Inbox) -> ConversationsServer<ConversationsApi> {
    ConversationsServer::new(ConversationsApi::new(inbox))
}

/// The `Members` service.
pub fn members_server(members: Members) -> MembersServer<MembersApi> {
    MembersServer::new(MembersApi::new(members))
}

fn status(error: Error) -> Status {
    telenet_kit::error::to_status(&error)
}

fn page_request(page: Option<common::PageRequest>) -> PageRequest {
    let page = page.unwrap_or_default();
    PageRequest {
        size: page.page_size,
        token: page.page_token,
    }
}

fn page_info(next: String) -> Option<common::PageInfo> {
    Some(common::PageInfo {
        next_page_token: next,
    })
}
