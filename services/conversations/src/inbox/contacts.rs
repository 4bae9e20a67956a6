//! The contacts service, which turns a sender's channel identity into a
//! contact (creating it on first contact).

use telenet_kit::grpc::GrpcChannel;
use telenet_proto::contacts::v1::UpsertByIdentityRequest;
use telenet_proto::contacts::v1::contacts_client::ContactsClient;

use crate::domain::InboundMessage;
use crate::error::Error;

/// A client of the contacts service.
#[derive(Clone)]
pub(crate) struct Contacts {
    client: ContactsClient<GrpcChannel>,
}

impl Contacts {
    pub(crate) fn new(channel: GrpcChannel) -> Self {
        Self {
            client: ContactsClient::new(channel),
        }
    }

    /// The sender's contact id, created on first contact.
    pub(crate) async fn resolve_sender(
        &self,
        workspace_id: &str,
        received: &InboundMessage,
    ) -> Result<String, Error> {
        let request = UpsertByIdentityRequest {
            workspace_id: workspace_id.to_owned(),
            channel_id: received.channel_id.clone(),
            external_id: received.sender_external_id.clone(),
            display_name: received.sender_display_name.clone(),
        };
        self.client
            .clone()
            .upsert_by_identity(request)
            .await
            .map_err(Error::Contacts)?
            .into_inner()
            .contact
            .map(|contact| contact.id)
            .ok_or(Error::NoContact)
    }
}
