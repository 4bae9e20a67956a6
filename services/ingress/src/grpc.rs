//! The `telenet.ingress.v1.Channels` API over [`IngressService`]: requests
//! become domain values, channels become messages, errors become statuses.
//! The rules live in the domain, the service and the channels' providers.

use telenet_channels::ChannelCredentials;
use telenet_kit::error::to_status;
use telenet_proto::common::v1::{ChannelKind, PageInfo};
use telenet_proto::ingress::v1 as pb;
use telenet_proto::ingress::v1::channels_server::Channels;
use telenet_store::timestamp;
use tonic::{Request, Response, Status};

use crate::domain::{Channel, ChannelRef, NewChannel};
use crate::{Error, IngressService};

#[tonic::async_trait]
impl Channels for IngressService {
    async fn create_channel(
        &self,
        request: Request<pb::CreateChannelRequest>,
    ) -> Result<Response<pb::CreateChannelResponse>, Status> {
        let req = request.into_inner();
        let requested = ChannelCredentials {
            kind: ChannelKind::try_from(req.kind).unwrap_or(ChannelKind::Unspecified),
            outbound_url: req.outbound_url,
            secret: req.secret,
            accepted_voice_types: req.accepted_voice_types,
        };
        let new = NewChannel::new(&req.workspace_id, &req.name, requested, self.registry())
            .map_err(status)?;
        let channel = self.create_channel(new).await.map_err(status)?;
        Ok(Response::new(pb::CreateChannelResponse {
            channel: Some(self.channel_message(&channel)),
            secret: channel.credentials.secret,
        }))
    }

    async fn get_channel(
        &self,
        request: Request<pb::GetChannelRequest>,
    ) -> Result<Response<pb::Channel>, Status> {
        let channel = self.requested_channel(request.get_ref()).await?;
        Ok(Response::new(self.channel_message(&channel)))
    }

    async fn list_channels(
        &self,
        request: Request<pb::ListChannelsRequest>,
    ) -> Result<Response<pb::ListChannelsResponse>, Status> {
        let req = request.get_ref();
        let (channels, next) = self
            .list_channels(&req.workspace_id, &req.page.clone().unwrap_or_default())
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListChannelsResponse {
            channels: channels.iter().map(|c| self.channel_message(c)).collect(),
            page: Some(PageInfo {
                next_page_token: next,
            }),
        }))
    }

    async fn delete_channel(
        &self,
        request: Request<pb::DeleteChannelRequest>,
    ) -> Result<Response<pb::DeleteChannelResponse>, Status> {
        let req = request.get_ref();
        let channel = ChannelRef::new(&req.workspace_id, &req.channel_id).map_err(status)?;
        IngressService::delete_channel(self, &channel)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteChannelResponse {}))
    }

    async fn get_channel_credentials(
        &self,
        request: Request<pb::GetChannelRequest>,
    ) -> Result<Response<pb::ChannelCredentials>, Status> {
        let channel = self.requested_channel(request.get_ref()).await?;
        Ok(Response::new(pb::ChannelCredentials {
            channel: Some(self.channel_message(&channel)),
            secret: channel.credentials.secret,
        }))
    }
}

impl IngressService {
    async fn requested_channel(&self, req: &pb::GetChannelRequest) -> Result<Channel, Status> {
        let channel = ChannelRef::new(&req.workspace_id, &req.channel_id).map_err(status)?;
        self.channel(&channel).await.map_err(status)
    }

    /// The channel as the API shows it (its secret left out).
    fn channel_message(&self, channel: &Channel) -> pb::Channel {
        let c = &channel.credentials;
        pb::Channel {
            id: channel.id.clone(),
            workspace_id: channel.workspace_id.clone(),
            kind: c.kind as i32,
            name: channel.name.clone(),
            webhook_url: self.webhook_url(&channel.id),
            outbound_url: c.outbound_url.clone(),
            created_at: Some(timestamp(channel.created_at)),
            accepted_voice_types: c.accepted_voice_types.clone(),
        }
    }
}

fn status(error: Error) -> Status {
    to_status(&error)
}
