//! Contacts: the people who write in, found or created by their channel
//! identity (PRODUCT.md: "a contact never seen before is created, with its
//! channel identity").

use serde::{Deserialize, Serialize};
use sqlx::Row;
use telenet_proto::contacts::v1 as pb;
use telenet_proto::contacts::v1::contacts_server::{Contacts, ContactsServer};
use telenet_proto::events::v1::{ContactCreated, event_envelope::Payload};
use telenet_store::cursor::{Cursor, finish_page, page_size};
use telenet_store::sqlx;
use telenet_store::{Db, StoreError, events, now_micros, outbox, timestamp};
use tonic::{Request, Response, Status};

pub const MIGRATIONS: telenet_store::Migrations = telenet_store::migrations!("0100_contacts");

/// Contacts service settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("contact not found")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Store(e.into())
    }
}

impl Error {
    pub fn to_status(&self) -> Status {
        match self {
            Error::InvalidArgument(m) => Status::invalid_argument(m.clone()),
            Error::NotFound => Status::not_found(self.to_string()),
            Error::Store(e) if e.is_transient() => {
                tracing::warn!(error = %e, "contacts store unavailable");
                Status::unavailable("contacts store unavailable")
            }
            Error::Store(e) => {
                tracing::error!(error = %e, "contacts store failed");
                Status::internal("internal error")
            }
        }
    }
}

/// The contacts service.
#[derive(Clone)]
pub struct ContactsService {
    db: Db,
}

impl ContactsService {
    pub async fn new(db: Db, _config: Config) -> Result<Self, Error> {
        Ok(Self { db })
    }

    pub fn grpc(&self) -> ContactsServer<Self> {
        ContactsServer::new(self.clone())
    }

    /// Find the contact that owns this channel identity, or create it with
    /// the identity; emits `contact.created` for a new contact.
    pub async fn upsert_by_identity(
        &self,
        req: &pb::UpsertByIdentityRequest,
    ) -> Result<(pb::Contact, bool), Error> {
        require("workspace_id", &req.workspace_id)?;
        require("channel_id", &req.channel_id)?;
        require("external_id", &req.external_id)?;
        if let Some(id) = self.contact_of_identity(req).await? {
            return Ok((self.get(&req.workspace_id, &id).await?, false));
        }
        let now = now_micros();
        let id = uuid::Uuid::now_v7().to_string();
        let name = if req.display_name.trim().is_empty() {
            req.external_id.clone()
        } else {
            req.display_name.trim().to_owned()
        };
        let mut tx = self.db.begin().await?;
        sqlx::query(
            "INSERT INTO contacts (id, workspace_id, display_name, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4)",
        )
        .bind(&id)
        .bind(&req.workspace_id)
        .bind(&name)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let inserted = sqlx::query(
            "INSERT INTO identities (workspace_id, channel_id, external_id, contact_id, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (workspace_id, channel_id, external_id) DO NOTHING",
        )
        .bind(&req.workspace_id)
        .bind(&req.channel_id)
        .bind(&req.external_id)
        .bind(&id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            // Someone created it concurrently: theirs wins.
            tx.rollback().await?;
            let id = self
                .contact_of_identity(req)
                .await?
                .ok_or(Error::NotFound)?;
            return Ok((self.get(&req.workspace_id, &id).await?, false));
        }
        let env = events::envelope(
            &req.workspace_id,
            Payload::ContactCreated(ContactCreated {
                contact_id: id.clone(),
                channel_id: req.channel_id.clone(),
                display_name: name,
            }),
            None,
        );
        outbox::enqueue(&mut tx, &[events::to_bus(&env)]).await?;
        self.db.commit(tx).await?;
        Ok((self.get(&req.workspace_id, &id).await?, true))
    }

    async fn contact_of_identity(
        &self,
        req: &pb::UpsertByIdentityRequest,
    ) -> Result<Option<String>, Error> {
        let row = sqlx::query(
            "SELECT contact_id FROM identities \
             WHERE workspace_id = $1 AND channel_id = $2 AND external_id = $3",
        )
        .bind(&req.workspace_id)
        .bind(&req.channel_id)
        .bind(&req.external_id)
        .fetch_optional(self.db.pool())
        .await?;
        Ok(row.map(|r| r.try_get("contact_id")).transpose()?)
    }

    /// One contact with its identities, within the workspace.
    pub async fn get(&self, workspace_id: &str, contact_id: &str) -> Result<pb::Contact, Error> {
        require("workspace_id", workspace_id)?;
        require("contact_id", contact_id)?;
        let row = sqlx::query(
            "SELECT id, workspace_id, display_name, created_at, updated_at FROM contacts \
             WHERE workspace_id = $1 AND id = $2",
        )
        .bind(workspace_id)
        .bind(contact_id)
        .fetch_optional(self.db.pool())
        .await?
        .ok_or(Error::NotFound)?;
        let mut contact = contact_of(&row)?;
        let identities = sqlx::query(
            "SELECT channel_id, external_id, created_at FROM identities \
             WHERE workspace_id = $1 AND contact_id = $2 ORDER BY created_at",
        )
        .bind(workspace_id)
        .bind(contact_id)
        .fetch_all(self.db.pool())
        .await?;
        for r in identities {
            contact.identities.push(pb::Identity {
                channel_id: r.try_get("channel_id")?,
                external_id: r.try_get("external_id")?,
                created_at: Some(timestamp(r.try_get("created_at")?)),
            });
        }
        Ok(contact)
    }

    /// A page of the workspace's contacts, newest first.
    pub async fn list(
        &self,
        req: &pb::ListContactsRequest,
    ) -> Result<(Vec<pb::Contact>, String), Error> {
        require("workspace_id", &req.workspace_id)?;
        let page = req.page.clone().unwrap_or_default();
        let size = page_size(page.page_size);
        let after = Cursor::decode(&page.page_token).map_err(Error::InvalidArgument)?;
        let (key, id) = after.map_or((i64::MAX, String::new()), |c| (c.key, c.id));
        let rows = sqlx::query(
            "SELECT id, workspace_id, display_name, created_at, updated_at FROM contacts \
             WHERE workspace_id = $1 AND (created_at < $2 OR (created_at = $2 AND id < $3)) \
             ORDER BY created_at DESC, id DESC LIMIT $4",
        )
        .bind(&req.workspace_id)
        .bind(key)
        .bind(if id.is_empty() {
            "\u{10FFFF}".to_owned()
        } else {
            id
        })
        .bind(size + 1)
        .fetch_all(self.db.pool())
        .await?;
        let mut contacts = rows.iter().map(contact_of).collect::<Result<Vec<_>, _>>()?;
        let next = finish_page(&mut contacts, size, |c| Cursor {
            key: c.created_at.as_ref().map_or(0, telenet_store::micros_of),
            id: c.id.clone(),
        });
        Ok((contacts, next))
    }
}

fn contact_of(row: &sqlx::any::AnyRow) -> Result<pb::Contact, sqlx::Error> {
    Ok(pb::Contact {
        id: row.try_get("id")?,
        workspace_id: row.try_get("workspace_id")?,
        display_name: row.try_get("display_name")?,
        identities: Vec::new(),
        created_at: Some(timestamp(row.try_get("created_at")?)),
        updated_at: Some(timestamp(row.try_get("updated_at")?)),
    })
}

fn require(field: &str, value: &str) -> Result<(), Error> {
    telenet_kit::error::required(field, value).map_err(Error::InvalidArgument)
}

#[tonic::async_trait]
impl Contacts for ContactsService {
    async fn upsert_by_identity(
        &self,
        request: Request<pb::UpsertByIdentityRequest>,
    ) -> Result<Response<pb::UpsertByIdentityResponse>, Status> {
        let (contact, created) = ContactsService::upsert_by_identity(self, request.get_ref())
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(pb::UpsertByIdentityResponse {
            contact: Some(contact),
            created,
        }))
    }

    async fn get_contact(
        &self,
        request: Request<pb::GetContactRequest>,
    ) -> Result<Response<pb::Contact>, Status> {
        let r = request.get_ref();
        self.get(&r.workspace_id, &r.contact_id)
            .await
            .map(Response::new)
            .map_err(|e| e.to_status())
    }

    async fn list_contacts(
        &self,
        request: Request<pb::ListContactsRequest>,
    ) -> Result<Response<pb::ListContactsResponse>, Status> {
        let (contacts, next) = self
            .list(request.get_ref())
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(pb::ListContactsResponse {
            contacts,
            page: Some(telenet_proto::common::v1::PageInfo {
                next_page_token: next,
            }),
        }))
    }
}
