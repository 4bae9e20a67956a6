//! The workspace's messaging channels.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use telenet_proto::ingress::v1::channels_client::ChannelsClient;
use telenet_proto::ingress::v1::{
    AcceptedVoiceTypes, ChannelConfig, ConnectChannelRequest, CreateChannelRequest,
    GetChannelRequest, ListChannelKindsRequest, ListChannelsRequest, TestChannelRequest,
    UpdateChannelRequest,
};
use utoipa::IntoParams;

use super::PageQuery;
use crate::AppState;
use crate::auth::Caller;
use crate::dto::{
    ChannelCheckView, ChannelDetailsView, ChannelFieldView, ChannelKindList, ChannelKindView,
    ChannelPage, ChannelTestView, ConnectKind, CreateChannelBody, UpdateChannelBody,
};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};

/// Longest channel name, in characters (the registry's limit).
const MAX_NAME_CHARS: usize = 100;

/// Connects a channel of any kind: a custom channel (returned with its
/// signing secret, shown only here) or a provider's (its settings as flat
/// fields; see `GET /v1/channel-kinds` and docs/channels/). Where the
/// provider lets TELENET register its webhook (Telegram, Viber, 360dialog)
/// it is registered now; otherwise `webhook` says what to enter in the
/// provider's console. Credentials never come back. Only owners and
/// managers may connect channels.
#[utoipa::path(
    post,
    path = "/v1/channels",
    tag = "channels",
    request_body = CreateChannelBody,
    responses(
        (status = 201, description = "the channel, with its status and webhook setup (custom channels: with their signing secret)", body = ChannelDetailsView),
        (status = 400, description = "invalid or missing setting (named in `field`)"),
        (status = 403, description = "the caller is an agent"),
    ),
)]
pub(crate) async fn create_channel(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateChannelBody>,
) -> Result<(StatusCode, Json<ChannelDetailsView>), ApiError> {
    if !caller.is_manager() {
        return Err(ApiError::Forbidden(
            "only owners and managers may connect channels".to_owned(),
        ));
    }
    refuse_unknown(&body.unknown)?;
    let mut client = ChannelsClient::new(state.upstreams.ingress.clone());
    if body.kind == ConnectKind::Custom {
        body.settings
            .apply(ConnectKind::Custom, ChannelConfig::default())?;
        let request = validate_create(caller.workspace_id(), body)?;
        let created = state
            .call(client.create_channel(caller.request(request)))
            .await
            .map_err(refused_setting)?;
        let channel = created
            .channel
            .ok_or(ApiError::Incomplete("the created channel"))?;
        let details = state
            .call(
                client.get_channel_details(caller.request(GetChannelRequest {
                    workspace_id: caller.workspace_id().to_owned(),
                    channel_id: channel.id.clone(),
                })),
            )
            .await?;
        return Ok((
            StatusCode::CREATED,
            Json(ChannelDetailsView::new(details, Some(created.secret))),
        ));
    }
    let name = checked_name(&body.name)?;
    for (field, given) in [
        ("outbound_url", !body.outbound_url.trim().is_empty()),
        ("secret", body.secret.is_some()),
        (
            "accepted_voice_types",
            !body.accepted_voice_types.is_empty(),
        ),
    ] {
        if given {
            return Err(ApiError::invalid(
                field,
                format!("{field} applies to custom channels only"),
            ));
        }
    }
    let config = body.settings.apply(body.kind, ChannelConfig::default())?;
    let request = ConnectChannelRequest {
        workspace_id: caller.workspace_id().to_owned(),
        name,
        config: Some(config),
        caller_user_id: caller.user_id().to_owned(),
    };
    let connected = state
        .call(client.connect_channel(caller.request(request)))
        .await
        .map_err(refused_setting)?;
    let details = connected
        .channel
        .ok_or(ApiError::Incomplete("the connected channel"))?;
    Ok((
        StatusCode::CREATED,
        Json(ChannelDetailsView::new(details, None)),
    ))
}

/// `{id}` of `/v1/channels/{id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ChannelPath {
    /// Channel id.
    #[param(format = Uuid)]
    pub id: String,
}

/// A channel with its provider, status, health (last webhook, last refused
/// one, last send) and webhook setup. Secrets are never shown:
/// `secrets_set` names those that have a value.
#[utoipa::path(
    get,
    path = "/v1/channels/{id}",
    tag = "channels",
    params(ChannelPath),
    responses(
        (status = 200, description = "the channel", body = ChannelDetailsView),
        (status = 404, description = "no such channel in the workspace"),
    ),
)]
pub(crate) async fn get_channel(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(path): ApiPath<ChannelPath>,
) -> Result<Json<ChannelDetailsView>, ApiError> {
    let details = details(&state, &caller, &path.id).await?;
    Ok(Json(ChannelDetailsView::new(details, None)))
}

async fn details(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<telenet_proto::ingress::v1::ChannelDetails, ApiError> {
    let mut client = ChannelsClient::new(state.upstreams.ingress.clone());
    state
        .call(
            client.get_channel_details(caller.request(GetChannelRequest {
                workspace_id: caller.workspace_id().to_owned(),
                channel_id: super::parse_id("id", id)?,
            })),
        )
        .await
}

/// Changes a channel's name or settings. Settings left out keep their
/// values (a secret left out is kept); the kind cannot change. Where
/// TELENET registers the webhook, it registers it again. Owners and
/// managers only.
#[utoipa::path(
    patch,
    path = "/v1/channels/{id}",
    tag = "channels",
    params(ChannelPath),
    request_body = UpdateChannelBody,
    responses(
        (status = 200, description = "the channel as changed", body = ChannelDetailsView),
        (status = 400, description = "invalid setting (named in `field`)"),
        (status = 403, description = "the caller is an agent"),
        (status = 404, description = "no such channel in the workspace"),
    ),
)]
pub(crate) async fn update_channel(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(path): ApiPath<ChannelPath>,
    ApiJson(body): ApiJson<UpdateChannelBody>,
) -> Result<Json<ChannelDetailsView>, ApiError> {
    refuse_unknown(&body.unknown)?;
    let current = details(&state, &caller, &path.id).await?;
    if !caller.is_manager() {
        return Err(ApiError::Forbidden(
            "only owners and managers may change channels".to_owned(),
        ));
    }
    let stored = current.config.unwrap_or_default();
    let kind = ConnectKind::of(&stored).unwrap_or(ConnectKind::Custom);
    let config = if body.settings.set_fields().is_empty() {
        None
    } else {
        Some(body.settings.apply(kind, stored)?)
    };
    let name = body.name.as_deref().map(checked_name).transpose()?;
    let request = UpdateChannelRequest {
        workspace_id: caller.workspace_id().to_owned(),
        channel_id: super::parse_id("id", &path.id)?,
        name,
        outbound_url: body.outbound_url.map(|u| u.trim().to_owned()),
        accepted_voice_types: body
            .accepted_voice_types
            .map(|mime_types| AcceptedVoiceTypes { mime_types }),
        config,
        caller_user_id: caller.user_id().to_owned(),
    };
    let mut client = ChannelsClient::new(state.upstreams.ingress.clone());
    let updated = state
        .call(client.update_channel(caller.request(request)))
        .await
        .map_err(refused_setting)?;
    Ok(Json(ChannelDetailsView::new(updated, None)))
}

/// Checks a channel with its provider now (credentials, webhook
/// registration) and updates its status. Owners and managers only.
#[utoipa::path(
    post,
    path = "/v1/channels/{id}/test",
    tag = "channels",
    params(ChannelPath),
    responses(
        (status = 200, description = "what was checked", body = ChannelTestView),
        (status = 403, description = "the caller is an agent"),
        (status = 404, description = "no such channel in the workspace"),
    ),
)]
pub(crate) async fn test_channel(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(path): ApiPath<ChannelPath>,
) -> Result<Json<ChannelTestView>, ApiError> {
    let request = TestChannelRequest {
        workspace_id: caller.workspace_id().to_owned(),
        channel_id: super::parse_id("id", &path.id)?,
    };
    if !caller.is_manager() {
        // Found or not, an agent learns nothing more than from the list.
        details(&state, &caller, &path.id).await?;
        return Err(ApiError::Forbidden(
            "only owners and managers may test channels".to_owned(),
        ));
    }
    let mut client = ChannelsClient::new(state.upstreams.ingress.clone());
    let tested = state
        .call(client.test_channel(caller.request(request)))
        .await?;
    Ok(Json(ChannelTestView {
        ok: tested.ok,
        status: crate::dto::ChannelState::from_status(tested.status),
        checks: tested
            .checks
            .into_iter()
            .map(|c| ChannelCheckView {
                name: c.name,
                ok: c.ok,
                detail: c.detail,
            })
            .collect(),
    }))
}

/// The kinds of channel TELENET knows, with the settings each takes and
/// whether this installation can connect it.
#[utoipa::path(
    get,
    path = "/v1/channel-kinds",
    tag = "channels",
    responses((status = 200, description = "the kinds", body = ChannelKindList)),
)]
pub(crate) async fn list_channel_kinds(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<ChannelKindList>, ApiError> {
    let mut client = ChannelsClient::new(state.upstreams.ingress.clone());
    let kinds = state
        .call(client.list_channel_kinds(caller.request(ListChannelKindsRequest {})))
        .await?;
    Ok(Json(ChannelKindList {
        items: kinds
            .kinds
            .into_iter()
            .map(|k| ChannelKindView {
                kind: k.config_case,
                display_name: k.display_name,
                description: k.description,
                webhook_authentication: k.webhook_authentication,
                available: k.available,
                fields: k
                    .fields
                    .into_iter()
                    .map(|f| ChannelFieldView {
                        name: f.name,
                        label: f.label,
                        required: f.required,
                        secret: f.secret,
                        generated: f.generated,
                    })
                    .collect(),
            })
            .collect(),
    }))
}

/// A field no kind has, named.
fn refuse_unknown(
    unknown: &std::collections::BTreeMap<String, serde_json::Value>,
) -> Result<(), ApiError> {
    match unknown.keys().next() {
        None => Ok(()),
        Some(field) => Err(ApiError::Rejected {
            status: StatusCode::BAD_REQUEST,
            detail: format!(
                "unknown field `{field}` (GET /v1/channel-kinds lists each kind's settings)"
            ),
        }),
    }
}

/// A channel name: trimmed, 1 to 100 characters.
fn checked_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::invalid(
            "name",
            format!("name must be 1 to {MAX_NAME_CHARS} characters"),
        ));
    }
    Ok(name.to_owned())
}

/// The registry's refusal of one setting (`outbound_url: … is not a public
/// address …`, `secret: …`) as a problem naming that field, like the
/// gateway's own checks.
fn refused_setting(error: ApiError) -> ApiError {
    if let ApiError::Upstream(status) = &error
        && status.code() == tonic::Code::InvalidArgument
        && let Some(field) = [
            "outbound_url",
            "secret",
            "accepted_voice_types",
            "api_base_url",
            "phone_number_id",
            "waba_id",
            "access_token",
            "app_secret",
            "verify_token",
            "graph_api_version",
            "api_key",
            "base_url",
            "webhook_header_secret",
            "page_id",
            "page_access_token",
            "instagram_account_id",
            "bot_token",
            "secret_token",
            "channel_secret",
            "channel_access_token",
            "auth_token",
            "sender_name",
            "sender_avatar_url",
            "config",
        ]
        .into_iter()
        .find(|field| {
            status
                .message()
                .strip_prefix(field)
                .is_some_and(|rest| rest.starts_with(':') || rest.starts_with(' '))
        })
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
    let name = checked_name(&body.name)?;
    let outbound_url = body.outbound_url.trim();
    if outbound_url.is_empty() {
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
        kind: telenet_proto::common::v1::ChannelKind::Custom.into(),
        name,
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
