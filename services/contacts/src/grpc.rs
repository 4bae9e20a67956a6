//! The `telenet.contacts.v1.Contacts` API over [`ContactsService`]: requests
//! become domain values, contacts become messages, errors become statuses.
//! The rules live in the domain and the service.

use telenet_proto::common::v1::PageInfo;
use telenet_proto::contacts::v1 as pb;
use telenet_proto::contacts::v1::contacts_server::Contacts;
use telenet_store::timestamp;
use tonic::{Request, Response, Status};

use crate::domain::{Contact, ContactRef, ContactsPage, Identity, IdentityKey};
use crate::{ContactsService, Error};

#[tonic::async_trait]
impl Contacts for ContactsService {
    async fn upsert_by_identity(
        &self,
        request: Request<pb::UpsertByIdentityRequest>,
    ) -> Result<Response<pb::UpsertByIdentityResponse>, Status> {
        let req = request.get_ref();
        let identity = IdentityKey::new(&req.workspace_id, &req.channel_id, &req.external_id)
            .map_err(status)?;
        let (contact, created) =
            ContactsService::upsert_by_identity(self, &identity, &req.display_name)
                .await
                .map_err(status)?;
        Ok(Response::new(pb::UpsertByIdentityResponse {
            contact: Some(contact_message(contact)),
            created,
        }))
    }

    async fn get_contact(
        &self,
        request: Request<pb::GetContactRequest>,
    ) -> Result<Response<pb::Contact>, Status> {
        let req = request.get_ref();
        let contact = ContactRef::new(&req.workspace_id, &req.contact_id).map_err(status)?;
        let contact = self.get(&contact).await.map_err(status)?;
        Ok(Response::new(contact_message(contact)))
    }

    async fn list_contacts(
        &self,
        request: Request<pb::ListContactsRequest>,
    ) -> Result<Response<pb::ListContactsResponse>, Status> {
        let req = request.get_ref();
        let asked = req.page.clone().unwrap_or_default();
        let page = ContactsPage::new(&req.workspace_id, asked.page_size, &asked.page_token)
            .map_err(status)?;
        let (contacts, next_page_token) = self.list(&page).await.map_err(status)?;
        Ok(Response::new(pb::ListContactsResponse {
            contacts: contacts.into_iter().map(contact_message).collect(),
            page: Some(PageInfo { next_page_token }),
        }))
    }
}

/// The status a failed call answers with. A store outage is also worth a
/// warning: the caller only learns "unavailable", the log says why.
fn status(error: Error) -> Status {
    if let Error::Store(cause) = &error
        && cause.is_transient()
    {
        tracing::warn!(error = %cause, "contacts store unavailable");
    }
    telenet_kit::error::to_status(&error)
}

fn contact_message(contact: Contact) -> pb::Contact {
    pb::Contact {
        id: contact.id,
        workspace_id: contact.workspace_id,
        display_name: contact.display_name,
        identities: contact
            .identities
            .into_iter()
            .map(identity_message)
            .collect(),
        created_at: Some(timestamp(contact.created_at)),
        updated_at: Some(timestamp(contact.updated_at)),
    }
}

fn identity_message(identity: Identity) -> pb::Identity {
    pb::Identity {
        channel_id: identity.channel_id,
        external_id: identity.external_id,
        created_at: Some(timestamp(identity.created_at)),
    }
}
