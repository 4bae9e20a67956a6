//! The calling agent, their presence, and their teammates.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use telenet_presence::Status;
use telenet_proto::conversations::v1::ListMembersRequest;
use telenet_proto::conversations::v1::members_client::MembersClient;

use crate::AppState;
use crate::auth::Caller;
use crate::dto::{MemberList, MemberView, Presence, SetStatusBody};
use crate::error::ApiError;
use crate::extract::ApiJson;

/// The authenticated member with their presence status.
#[utoipa::path(
    get,
    path = "/v1/me",
    tag = "me",
    responses((status = 200, description = "the calling member", body = MemberView)),
)]
pub(crate) async fn get_me(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<MemberView>, ApiError> {
    let presence = state
        .presence
        .get(caller.workspace_id(), caller.user_id())
        .await?;
    Ok(Json(MemberView::new(caller.member, presence.status)))
}

/// Sets the status the agent chose; `online` also counts as a heartbeat.
#[utoipa::path(
    put,
    path = "/v1/me/status",
    tag = "me",
    request_body = SetStatusBody,
    responses(
        (status = 200, description = "the agent's presence after the change", body = Presence),
        (status = 400, description = "invalid status"),
    ),
)]
pub(crate) async fn set_status(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<SetStatusBody>,
) -> Result<Json<Presence>, ApiError> {
    let presence = state
        .presence
        .set_status(caller.workspace_id(), caller.user_id(), body.status.into())
        .await?;
    Ok(Json(presence.into()))
}

/// Records that the agent is active; clients call it while the inbox is open
/// (an agent who stops becomes away, then offline).
#[utoipa::path(
    post,
    path = "/v1/me/heartbeat",
    tag = "me",
    responses((status = 200, description = "the agent's presence", body = Presence)),
)]
pub(crate) async fn heartbeat(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Presence>, ApiError> {
    let presence = state
        .presence
        .heartbeat(caller.workspace_id(), caller.user_id())
        .await?;
    Ok(Json(presence.into()))
}

/// The workspace's members with their presence status (by name).
#[utoipa::path(
    get,
    path = "/v1/members",
    tag = "members",
    responses((status = 200, description = "the workspace's members", body = MemberList)),
)]
pub(crate) async fn list_members(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<MemberList>, ApiError> {
    let mut client = MembersClient::new(state.upstreams.members.clone());
    let request = caller.request(ListMembersRequest {
        workspace_id: caller.workspace_id().to_owned(),
    });
    let members = state.call(client.list_members(request)).await?.members;
    // The presence store lists only users seen lately; everyone else is offline.
    let statuses: HashMap<String, Status> = state
        .presence
        .list(caller.workspace_id())
        .await?
        .into_iter()
        .map(|p| (p.user_id, p.status))
        .collect();
    let items = members
        .into_iter()
        .map(|member| {
            let status = statuses
                .get(&member.user_id)
                .copied()
                .unwrap_or(Status::Offline);
            MemberView::new(member, status)
        })
        .collect();
    Ok(Json(MemberList { items }))
}
