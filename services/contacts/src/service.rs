//! The contacts service: each operation checks its input through the
//! domain, reads and writes through the store, and writes the events it
//! announces to the outbox in the same transaction.

use telenet_proto::contacts::v1::contacts_server::ContactsServer;
use telenet_proto::events::v1::{ContactCreated, event_envelope::Payload};
use telenet_store::{Db, StoreError, events, now_micros, outbox};

use crate::domain::{Contact, ContactRef, ContactsPage, IdentityKey, NewContact};
use crate::{Config, Error, store};

/// The contacts service and its `telenet.contacts.v1.Contacts` API.
/// Clones share everything.
#[derive(Clone)]
pub struct ContactsService {
    db: Db,
}

impl ContactsService {
    pub async fn new(db: Db, _config: Config) -> Result<Self, Error> {
        Ok(Self { db })
    }

    /// The gRPC service to mount.
    pub fn grpc(&self) -> ContactsServer<Self> {
        ContactsServer::new(self.clone())
    }

    /// Find the contact that owns this channel identity, or create it with
    /// the identity, named `display_name` (or after the identity); emits
    /// `contact.created` for a new contact. `true` when this call created it.
    pub async fn upsert_by_identity(
        &self,
        identity: &IdentityKey,
        display_name: &str,
    ) -> Result<(Contact, bool), Error> {
        if let Some(id) = store::contact_of_identity(&self.db, identity).await? {
            return Ok((self.existing(&identity.workspace_id, &id).await?, false));
        }
        let now = now_micros();
        let new = NewContact::for_identity(
            identity,
            display_name,
            uuid::Uuid::now_v7().to_string(),
            now,
        );
        let mut tx = self.db.begin().await?;
        store::insert_contact(&mut tx, &new).await?;
        if !store::claim_identity(&mut tx, identity, &new.id, now).await? {
            // Someone created it concurrently: theirs wins.
            tx.rollback().await.map_err(StoreError::from)?;
            let id = store::contact_of_identity(&self.db, identity)
                .await?
                .ok_or(Error::NotFound)?;
            return Ok((self.existing(&identity.workspace_id, &id).await?, false));
        }
        outbox::enqueue(&mut tx, &[contact_created(identity, &new)]).await?;
        self.db.commit(tx).await?;
        Ok((self.existing(&identity.workspace_id, &new.id).await?, true))
    }

    /// One contact with its identities, within its workspace.
    pub async fn get(&self, contact: &ContactRef) -> Result<Contact, Error> {
        self.existing(&contact.workspace_id, &contact.contact_id)
            .await
    }

    /// A page of the workspace's contacts, newest first, and the token of
    /// the next page (empty after the last).
    pub async fn list(&self, page: &ContactsPage) -> Result<(Vec<Contact>, String), Error> {
        Ok(store::list_contacts(&self.db, page).await?)
    }

    async fn existing(&self, workspace_id: &str, contact_id: &str) -> Result<Contact, Error> {
        store::contact(&self.db, workspace_id, contact_id)
            .await?
            .ok_or(Error::NotFound)
    }
}

/// `contact.created` for a contact created for `identity`.
fn contact_created(identity: &IdentityKey, contact: &NewContact) -> telenet_bus::Event {
    let env = events::envelope(
        &contact.workspace_id,
        Payload::ContactCreated(ContactCreated {
            contact_id: contact.id.clone(),
            channel_id: identity.channel_id.clone(),
            display_name: contact.display_name.clone(),
        }),
        None,
    );
    events::to_bus(&env)
}
