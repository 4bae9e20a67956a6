//! The caller's API tokens (a manager's or owner's: the workspace's):
//! listed without their values, created (the value shown once) and
//! revoked.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use telenet_kit::grpc::GrpcChannel;
use telenet_proto::conversations::v1 as conv;
use telenet_proto::conversations::v1::members_client::MembersClient;
use utoipa::IntoParams;

use super::{page_request, parse_id, present};
use crate::AppState;
use crate::auth::Caller;
use crate::dto::{CreateTokenBody, CreatedToken, TokenPage, TokenView};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};

/// Filters and paging of `GET /v1/tokens`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TokenQuery {
    /// Only this member's tokens (an agent sees only their own anyway).
    #[param(format = Uuid)]
    pub user_id: Option<String>,
    /// Include revoked tokens: `true` or `false` (default).
    #[param(value_type = Option<bool>)]
    pub include_revoked: Option<String>,
    /// Items per page, 1–200 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    pub page_size: Option<String>,
    /// The `next_page_token` of the previous page.
    #[param(max_length = 1024)]
    pub page_token: Option<String>,
}

/// `{id}` of `/v1/tokens/{id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TokenPath {
    /// Token id.
    #[param(format = Uuid)]
    pub id: String,
}

fn client(state: &AppState) -> MembersClient<GrpcChannel> {
    MembersClient::new(state.upstreams.members.clone())
}

fn include_revoked(raw: Option<&str>) -> Result<bool, ApiError> {
    match present(raw) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(ApiError::invalid(
            "include_revoked",
            "include_revoked must be true or false",
        )),
    }
}

/// API tokens, newest first, never their values: an agent's own, or any
/// of the workspace for a manager or owner.
#[utoipa::path(
    get,
    path = "/v1/tokens",
    tag = "tokens",
    params(TokenQuery),
    responses(
        (status = 200, description = "a page of tokens", body = TokenPage),
        (status = 400, description = "invalid filter or paging"),
        (status = 403, description = "an agent asked for another member's tokens"),
    ),
)]
pub(crate) async fn list_tokens(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<TokenQuery>,
) -> Result<Json<TokenPage>, ApiError> {
    let user_id = present(query.user_id.as_deref())
        .map(|id| parse_id("user_id", id))
        .transpose()?
        .unwrap_or_default();
    let request = conv::ListTokensRequest {
        workspace_id: caller.workspace_id().to_owned(),
        user_id,
        include_revoked: include_revoked(query.include_revoked.as_deref())?,
        page: Some(page_request(
            query.page_size.as_deref(),
            query.page_token.as_deref(),
        )?),
        caller_user_id: caller.user_id().to_owned(),
    };
    let response = state
        .call(client(&state).list_tokens(caller.request(request)))
        .await?;
    Ok(Json(TokenPage {
        items: response.tokens.into_iter().map(Into::into).collect(),
        next_page_token: super::next_token(response.page),
    }))
}

/// A new API token for the caller. Its value is in this answer only: only
/// its hash is kept.
#[utoipa::path(
    post,
    path = "/v1/tokens",
    tag = "tokens",
    request_body = CreateTokenBody,
    responses(
        (status = 201, description = "the token, with its value", body = CreatedToken),
        (status = 400, description = "invalid label or expiry"),
    ),
)]
pub(crate) async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateTokenBody>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let request = conv::CreateTokenRequest {
        workspace_id: caller.workspace_id().to_owned(),
        user_id: caller.user_id().to_owned(),
        label: body.label.unwrap_or_default(),
        expires_at: body.expires_at.map(crate::dto::timestamp),
    };
    let created = state
        .call(client(&state).create_token(caller.request(request)))
        .await?;
    let api_token = created
        .api_token
        .ok_or(ApiError::Incomplete("the created token"))?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token: created.token,
            api_token: api_token.into(),
        }),
    ))
}

/// Revokes a token: it stops working at once on every gateway. Revoking a
/// revoked token changes nothing. An agent may revoke their own tokens, a
/// manager also agents' tokens, an owner any.
#[utoipa::path(
    delete,
    path = "/v1/tokens/{id}",
    tag = "tokens",
    params(TokenPath),
    responses(
        (status = 200, description = "the token, revoked", body = TokenView),
        (status = 403, description = "the caller may not revoke this member's tokens"),
        (status = 404, description = "no such token in the workspace"),
    ),
)]
pub(crate) async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(path): ApiPath<TokenPath>,
) -> Result<Json<TokenView>, ApiError> {
    let request = conv::RevokeTokenRequest {
        workspace_id: caller.workspace_id().to_owned(),
        token_id: parse_id("id", &path.id)?,
        caller_user_id: caller.user_id().to_owned(),
    };
    let token = state
        .call(client(&state).revoke_token(caller.request(request)))
        .await?;
    Ok(Json(token.into()))
}
