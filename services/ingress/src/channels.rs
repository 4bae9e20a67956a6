//! The channel registry: connect, list, get and delete channels.

use sqlx::Row;
use telenet_proto::common::v1::{ChannelKind, PageInfo};
use telenet_proto::ingress::v1 as pb;
use telenet_proto::ingress::v1::channels_server::Channels;
use telenet_signing::Secret;
use telenet_store::cursor::{Cursor, finish_page, page_size};
use telenet_store::sqlx;
use telenet_store::{micros_of, now_micros, timestamp};
use tonic::{Request, Response, Status};

use crate::{Error, Ingress};

/// A channel as stored, with its secret.
#[derive(Debug, Clone)]
pub struct StoredChannel {
    pub channel: pb::Channel,
    pub secret: String,
}

#[derive(Clone)]
pub struct ChannelRegistry {
    ingress: Ingress,
}

const COLUMNS: &str =
    "id, workspace_id, kind, name, outbound_url, secret, accepted_voice_types, created_at";

impl ChannelRegistry {
    pub fn new(ingress: Ingress) -> Self {
        Self { ingress }
    }

    /// Connect a channel. Only custom channels can be created so far.
    pub async fn create(&self, req: &pb::CreateChannelRequest) -> Result<StoredChannel, Error> {
        require("workspace_id", &req.workspace_id)?;
        let kind = ChannelKind::try_from(req.kind).unwrap_or(ChannelKind::Unspecified);
        if kind != ChannelKind::Custom {
            return Err(Error::InvalidArgument(format!(
                "kind {:?} is not supported yet: only custom channels can be created",
                kind.as_str_name()
            )));
        }
        let name = req.name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(Error::InvalidArgument(
                "name must be 1 to 100 characters".into(),
            ));
        }
        let outbound = url::Url::parse(&req.outbound_url).map_err(|e| {
            Error::InvalidArgument(format!("outbound_url is not an absolute URL: {e}"))
        })?;
        if !matches!(outbound.scheme(), "http" | "https") || outbound.host().is_none() {
            return Err(Error::InvalidArgument(
                "outbound_url must be an http or https URL with a host".into(),
            ));
        }
        let secret = if req.secret.is_empty() {
            Secret::generate()
                .map_err(|e| Error::Internal(format!("no randomness for a secret: {e}")))?
        } else {
            Secret::parse(&req.secret)
                .map_err(|e| Error::InvalidArgument(format!("secret: {e}")))?
        };
        for t in &req.accepted_voice_types {
            if !t.contains('/') {
                return Err(Error::InvalidArgument(format!(
                    "accepted_voice_types: {t:?} is not a MIME type"
                )));
            }
        }
        let id = uuid::Uuid::now_v7().to_string();
        let now = now_micros();
        let voice =
            serde_json::to_string(&req.accepted_voice_types).unwrap_or_else(|_| "[]".into());
        sqlx::query(
            "INSERT INTO channels (id, workspace_id, kind, name, outbound_url, secret, accepted_voice_types, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&id)
        .bind(&req.workspace_id)
        .bind(i64::from(kind as i32))
        .bind(name)
        .bind(outbound.as_str())
        .bind(secret.expose())
        .bind(voice)
        .bind(now)
        .execute(self.ingress.db.pool())
        .await?;
        self.get(&req.workspace_id, &id).await
    }

    /// A channel of the workspace (deleted channels are not found).
    pub async fn get(&self, workspace_id: &str, channel_id: &str) -> Result<StoredChannel, Error> {
        require("workspace_id", workspace_id)?;
        require("channel_id", channel_id)?;
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM channels WHERE workspace_id = $1 AND id = $2 AND deleted_at IS NULL"
        ))
        .bind(workspace_id)
        .bind(channel_id)
        .fetch_optional(self.ingress.db.pool())
        .await?
        .ok_or(Error::NotFound)?;
        self.stored(&row)
    }

    /// A channel by id alone, for webhooks (the URL names the channel).
    pub async fn find(&self, channel_id: &str) -> Result<Option<StoredChannel>, Error> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM channels WHERE id = $1 AND deleted_at IS NULL"
        ))
        .bind(channel_id)
        .fetch_optional(self.ingress.db.pool())
        .await?;
        row.map(|r| self.stored(&r)).transpose()
    }

    pub async fn list(
        &self,
        req: &pb::ListChannelsRequest,
    ) -> Result<(Vec<pb::Channel>, String), Error> {
        require("workspace_id", &req.workspace_id)?;
        let page = req.page.clone().unwrap_or_default();
        let size = page_size(page.page_size);
        let after = Cursor::decode(&page.page_token).map_err(Error::InvalidArgument)?;
        let (key, id) = after.map_or((i64::MAX, "\u{10FFFF}".to_owned()), |c| (c.key, c.id));
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM channels WHERE workspace_id = $1 AND deleted_at IS NULL \
             AND (created_at < $2 OR (created_at = $2 AND id < $3)) \
             ORDER BY created_at DESC, id DESC LIMIT $4"
        ))
        .bind(&req.workspace_id)
        .bind(key)
        .bind(id)
        .bind(size + 1)
        .fetch_all(self.ingress.db.pool())
        .await?;
        let mut channels = rows
            .iter()
            .map(|r| self.stored(r).map(|s| s.channel))
            .collect::<Result<Vec<_>, _>>()?;
        let next = finish_page(&mut channels, size, |last| Cursor {
            key: last.created_at.as_ref().map_or(0, micros_of),
            id: last.id.clone(),
        });
        Ok((channels, next))
    }

    pub async fn delete(&self, workspace_id: &str, channel_id: &str) -> Result<(), Error> {
        require("workspace_id", workspace_id)?;
        require("channel_id", channel_id)?;
        let done = sqlx::query(
            "UPDATE channels SET deleted_at = $1 WHERE workspace_id = $2 AND id = $3 AND deleted_at IS NULL",
        )
        .bind(now_micros())
        .bind(workspace_id)
        .bind(channel_id)
        .execute(self.ingress.db.pool())
        .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound);
        }
        Ok(())
    }

    fn stored(&self, row: &sqlx::any::AnyRow) -> Result<StoredChannel, Error> {
        let id: String = row.try_get("id")?;
        let voice: String = row.try_get("accepted_voice_types")?;
        let kind: i64 = row.try_get("kind")?;
        let base = self.ingress.config.public_url.trim_end_matches('/');
        Ok(StoredChannel {
            channel: pb::Channel {
                webhook_url: format!("{base}/webhooks/{id}"),
                id,
                workspace_id: row.try_get("workspace_id")?,
                kind: i32::try_from(kind).unwrap_or(0),
                name: row.try_get("name")?,
                outbound_url: row.try_get("outbound_url")?,
                created_at: Some(timestamp(row.try_get("created_at")?)),
                accepted_voice_types: serde_json::from_str(&voice).unwrap_or_default(),
            },
            secret: row.try_get("secret")?,
        })
    }
}

fn require(field: &str, value: &str) -> Result<(), Error> {
    telenet_kit::error::required(field, value).map_err(Error::InvalidArgument)
}

#[tonic::async_trait]
impl Channels for ChannelRegistry {
    async fn create_channel(
        &self,
        request: Request<pb::CreateChannelRequest>,
    ) -> Result<Response<pb::CreateChannelResponse>, Status> {
        let stored = self
            .create(request.get_ref())
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(pb::CreateChannelResponse {
            channel: Some(stored.channel),
            secret: stored.secret,
        }))
    }

    async fn get_channel(
        &self,
        request: Request<pb::GetChannelRequest>,
    ) -> Result<Response<pb::Channel>, Status> {
        let r = request.get_ref();
        let stored = self
            .get(&r.workspace_id, &r.channel_id)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(stored.channel))
    }

    async fn list_channels(
        &self,
        request: Request<pb::ListChannelsRequest>,
    ) -> Result<Response<pb::ListChannelsResponse>, Status> {
        let (channels, next) = self
            .list(request.get_ref())
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(pb::ListChannelsResponse {
            channels,
            page: Some(PageInfo {
                next_page_token: next,
            }),
        }))
    }

    async fn delete_channel(
        &self,
        request: Request<pb::DeleteChannelRequest>,
    ) -> Result<Response<pb::DeleteChannelResponse>, Status> {
        let r = request.get_ref();
        self.delete(&r.workspace_id, &r.channel_id)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(pb::DeleteChannelResponse {}))
    }

    async fn get_channel_credentials(
        &self,
        request: Request<pb::GetChannelRequest>,
    ) -> Result<Response<pb::ChannelCredentials>, Status> {
        let r = request.get_ref();
        let stored = self
            .get(&r.workspace_id, &r.channel_id)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(pb::ChannelCredentials {
            channel: Some(stored.channel),
            secret: stored.secret,
        }))
    }
}
