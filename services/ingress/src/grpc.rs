//! The `telenet.ingress.v1.Channels` API over [`IngressService`]: requests
//! become domain values, channels become messages, errors become statuses.
//! The rules live in the domain, the service and the channels' providers.

use telenet_channels::ChannelCredentials;
use telenet_kit::error::to_status;
use telenet_proto::common::v1::{ChannelKind, PageInfo};
use telenet_proto::ingress::v1 as pb;
use telenet_proto::ingress::v1::ChannelStatus;
use telenet_proto::ingress::v1::channels_server::Channels;
use telenet_store::timestamp;
use tonic::{Request, Response, Status};

use crate::domain::{Channel, ChannelRef, ChannelUpdate, NewChannel};
use crate::{Connected, Error, IngressService};

#[tonic::async_trait]
impl Channels for IngressService {
    async fn create_channel(
        &self,
        request: Request<pb::CreateChannelRequest>,
    ) -> Result<Response<pb::CreateChannelResponse>, Status> {
        let req = request.into_inner();
        let kind = ChannelKind::try_from(req.kind).unwrap_or(ChannelKind::Unspecified);
        if !matches!(kind, ChannelKind::Custom | ChannelKind::Unspecified) {
            return Err(Status::invalid_argument(format!(
                "kind: CreateChannel connects custom channels only; connect a {} channel with ConnectChannel and its provider settings",
                telenet_channels::kind_name(kind)
            )));
        }
        let requested = ChannelCredentials {
            kind,
            outbound_url: req.outbound_url,
            secret: req.secret,
            accepted_voice_types: req.accepted_voice_types,
            ..Default::default()
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
            provider: channel.credentials.provider as i32,
            config: Some(channel.credentials.config.clone()),
            secret: channel.credentials.secret,
        }))
    }

    async fn list_channel_kinds(
        &self,
        _: Request<pb::ListChannelKindsRequest>,
    ) -> Result<Response<pb::ListChannelKindsResponse>, Status> {
        Ok(Response::new(pb::ListChannelKindsResponse {
            kinds: crate::catalog::kinds(self.registry()),
        }))
    }

    async fn connect_channel(
        &self,
        request: Request<pb::ConnectChannelRequest>,
    ) -> Result<Response<pb::ConnectChannelResponse>, Status> {
        let req = request.into_inner();
        let new = NewChannel::from_config(
            &req.workspace_id,
            &req.name,
            req.config.unwrap_or_default(),
            self.registry(),
        )
        .map_err(status)?;
        let connected = self.connect_channel(new).await.map_err(status)?;
        let secret = connected.channel.credentials.secret.clone();
        let mut details = self.details_message(&connected.channel, Some(&connected));
        if let Some(webhook) = details.webhook.as_mut()
            && let Some((_, value)) = &connected.setup.header
            && !connected.registered
        {
            // The header's value is shown on connect only, and only when it
            // is to be entered by hand.
            webhook.header_value.clone_from(value);
        }
        Ok(Response::new(pb::ConnectChannelResponse {
            channel: Some(details),
            secret,
        }))
    }

    async fn get_channel_details(
        &self,
        request: Request<pb::GetChannelRequest>,
    ) -> Result<Response<pb::ChannelDetails>, Status> {
        let channel = self.requested_channel(request.get_ref()).await?;
        Ok(Response::new(self.details_message(&channel, None)))
    }

    async fn update_channel(
        &self,
        request: Request<pb::UpdateChannelRequest>,
    ) -> Result<Response<pb::ChannelDetails>, Status> {
        let req = request.into_inner();
        let channel = ChannelRef::new(&req.workspace_id, &req.channel_id).map_err(status)?;
        let update = ChannelUpdate {
            name: req.name,
            outbound_url: req.outbound_url,
            accepted_voice_types: req.accepted_voice_types.map(|t| t.mime_types),
            config: req.config,
        };
        let updated = IngressService::update_channel(self, &channel, update)
            .await
            .map_err(status)?;
        Ok(Response::new(self.details_message(&updated, None)))
    }

    async fn test_channel(
        &self,
        request: Request<pb::TestChannelRequest>,
    ) -> Result<Response<pb::TestChannelResponse>, Status> {
        let req = request.get_ref();
        let channel = ChannelRef::new(&req.workspace_id, &req.channel_id).map_err(status)?;
        let (checks, state) = IngressService::test_channel(self, &channel)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::TestChannelResponse {
            ok: checks.iter().all(|c| c.ok),
            checks: checks
                .into_iter()
                .map(|c| pb::ChannelCheck {
                    name: c.name,
                    ok: c.ok,
                    detail: c.detail,
                })
                .collect(),
            status: state as i32,
        }))
    }

    async fn get_channel_config(
        &self,
        request: Request<pb::GetChannelRequest>,
    ) -> Result<Response<pb::ChannelConfigWithSecrets>, Status> {
        let channel = self.requested_channel(request.get_ref()).await?;
        Ok(Response::new(pb::ChannelConfigWithSecrets {
            channel: Some(self.channel_message(&channel)),
            provider: channel.credentials.provider as i32,
            config: Some(channel.credentials.config.clone()),
            secret: channel.credentials.secret,
        }))
    }
}

impl IngressService {
    async fn requested_channel(&self, req: &pb::GetChannelRequest) -> Result<Channel, Status> {
        let channel = ChannelRef::new(&req.workspace_id, &req.channel_id).map_err(status)?;
        self.channel(&channel).await.map_err(status)
    }

    /// The channel with its provider, settings (secrets blanked), status,
    /// health and webhook setup.
    fn details_message(
        &self,
        channel: &Channel,
        connected: Option<&Connected>,
    ) -> pb::ChannelDetails {
        let c = &channel.credentials;
        let (config, secrets_set) = telenet_channels::config::redacted(&c.config);
        let setup = match connected {
            Some(connected) => connected.setup.clone(),
            None => self
                .registry()
                .for_channel(c)
                .map(|p| p.webhook_setup(c))
                .unwrap_or_default(),
        };
        let registered = connected.is_some_and(|c| c.registered)
            || (channel.status == ChannelStatus::Active
                && self
                    .registry()
                    .for_channel(c)
                    .is_some_and(|p| p.registers_webhook()));
        let micros = |at: Option<i64>| at.map(timestamp);
        pb::ChannelDetails {
            channel: Some(self.channel_message(channel)),
            provider: c.provider as i32,
            config: Some(config),
            secrets_set,
            status: channel.status as i32,
            status_detail: channel.status_detail.clone(),
            webhook: Some(pb::WebhookSetup {
                url: self.webhook_url(&channel.id),
                verify_token: setup.verify_token,
                header_name: setup.header.map(|(name, _)| name).unwrap_or_default(),
                header_value: String::new(),
                subscribe_events: setup.subscribe_events,
                registered_automatically: registered,
            }),
            last_webhook_at: micros(channel.health.last_webhook_at),
            last_rejected_webhook_at: micros(channel.health.last_rejected_webhook_at),
            updated_at: Some(timestamp(channel.updated_at.max(channel.created_at))),
            health: Some(pb::ChannelHealth {
                last_rejection: channel.health.last_rejection.clone(),
                last_send_at: micros(channel.health.last_send_at),
                last_send_ok: channel.health.last_send_at.is_some()
                    && channel.health.last_send_error.is_empty(),
                last_send_error: channel.health.last_send_error.clone(),
            }),
        }
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
