//! The workspace's messaging channels.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use telenet_proto::ingress::v1::channels_client::ChannelsClient;
use telenet_proto::ingress::v1::{CreateChannelRequest, ListChannelsRequest};

use super::PageQuery;
use crate::AppState;
use crate::auth::Caller;
use crate::dto::{ChannelKind, ChannelPage, CreateChannelBody, CreatedChannel};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};

/// Longest channel name, in characters (the registry's limit).
const MAX_NAME_CHARS: usize = 100;

/// Connects a channel and returns it with its signing secret, which is shown
/// only here. Only owners and managers may connect channels.
#[utoipa::path(
    post,
    path = "/v1/channels",
    tag = "channels",
    request_body = CreateChannelBody,
    responses(
        (status = 201, description = "the channel, with its signing secret", body = CreatedChannel),
        (status = 400, description = "invalid field"),
        (status = 403, description = "the caller is an agent"),
    ),
)]
pub(crate) async fn create_channel(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateChannelBody>,
) -> Result<(StatusCode, Json<CreatedChannel>), ApiError> {
    if !caller.is_manager() {
        return Err(ApiError::Forbidden(
            "only owners and managers may connect channels".to_owned(),
        ));
    }
    let request = validate_create(caller.workspace_id(), body)?;
    let mut client = ChannelsClient::new(state.upstreams.ingress.clone());
    let created = state
        .call(client.create_channel(caller.request(request)))
        .await
        .map_err(refused_setting)?;
    let channel = created
        .channel
        .ok_or(ApiError::Incomplete("the created channel"))?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedChannel::new(channel.into(), created.secret)),
    ))
}

/// The registry's refusal of one setting (`outbound_url: … is not a public
/// address …`, `secret: …`) as a problem naming that field, like the
/// gateway's own checks.
fn refused_setting(error: ApiError) -> ApiError {
    if let ApiError::Upstream(status) = &error
        && status.code() == tonic::Code::InvalidArgument
        && let Some(field) = ["outbound_url", "secret", "accepted_voice_types"]
            .into_iter()
            .find(|field| status.message().starts_with(field))
    {
        return ApiError::invalid(field, status.message().to_owned());
    }
    error
}

/// Checks what the gateway can check without the registry and builds the
/// upstream request; the registry validates URLs and secrets itself.
fn validate_create(
    workspace_id: &str,
    body: CreateChannelBody,
) -> Result<CreateChannelRequest, ApiError> {
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::invalid(
            "name",
            format!("name must be 1 to {MAX_NAME_CHARS} characters"),
        ));
    }
    let outbound_url = body.outbound_url.trim();
    if body.kind == ChannelKind::Custom && outbound_url.is_empty() {
        return Err(ApiError::invalid(
            "outbound_url",
            "outbound_url is required for custom channels",
        ));
    }
    let secret = body.secret.unwrap_or_default();
    if body
        .accepted_voice_types
        .iter()
        .any(|t| t.trim().is_empty())
    {
        return Err(ApiError::invalid(
            "accepted_voice_types",
            "accepted_voice_types must not contain empty mime types",
        ));
    }
    Ok(CreateChannelRequest {
        workspace_id: workspace_id.to_owned(),
        kind: body.kind.to_proto().into(),
        name: name.to_owned(),
        outbound_url: outbound_url.to_owned(),
        secret,
        accepted_voice_types: body.accepted_voice_types,
    })
}

/// The workspace's channels, newest first.
#[utoipa::path(
    get,
    path = "/v1/channels",
    tag = "channels",
    params(PageQuery),
    responses(
        (status = 200, description = "a page of channels", body = ChannelPage),
        (status = 400, description = "invalid paging"),
    ),
)]
pub(crate) async fn list_channels(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<ChannelPage>, ApiError> {
    let request = ListChannelsRequest {
        workspace_id: caller.workspace_id().to_owned(),
        page: Some(query.to_proto()?),
    };
    let mut client = ChannelsClient::new(state.upstreams.ingress.clone());
    let response = state
        .call(client.list_channels(caller.request(request)))
        .await?;
    Ok(Json(ChannelPage {
        items: response.channels.into_iter().map(Into::into).collect(),
        next_page_token: super::next_token(response.page),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registrys_refusals_name_the_setting() {
        let refused = |message: &str| {
            refused_setting(ApiError::Upstream(Box::new(
                tonic::Status::invalid_argument(message),
            )))
            .problem()
        };
        let problem = refused(
            "outbound_url: 169.254.169.254 is not a public address and is not allowed by \
             ingress.private_receivers",
        );
        assert_eq!(problem.status, 400);
        assert_eq!(problem.field.as_deref(), Some("outbound_url"));
        assert!(problem.detail.contains("not a public address"));
        assert_eq!(
            refused("secret: too short").field.as_deref(),
            Some("secret")
        );
        assert_eq!(refused("kind is not supported").field, None);
        let unavailable = refused_setting(ApiError::Upstream(Box::new(
            tonic::Status::unavailable("outbound_url: x"),
        )))
        .problem();
        assert_eq!((unavailable.status, unavailable.field), (503, None));
    }
}
