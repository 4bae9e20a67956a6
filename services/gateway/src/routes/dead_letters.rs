//! The workspace's dead letters: events of this workspace a consumer gave up
//! on (after its retries, or at once when it could never handle them).
//! Managers and owners list them, send them back to their consumer group's
//! queue (redrive) once the cause is fixed, or discard them
//! (docs/operations.md). Every call is scoped to the caller's workspace;
//! agents are refused.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use telenet_proto::operations::v1 as pb;
use telenet_proto::operations::v1::dead_letters_client::DeadLettersClient;
use utoipa::{IntoParams, ToSchema};

use super::present;
use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};

/// Most dead letters listed, or named in one action.
pub(crate) const MAX_DEAD_LETTERS: u32 = 500;
/// Longest group name or event id accepted (AMQP's short-string limit).
const MAX_NAME_LEN: usize = 255;

/// Query of `GET /v1/dead-letters`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterQuery {
    /// Only this consumer group's (e.g. `conversations.inbound`).
    #[param(max_length = 255)]
    pub group: Option<String>,
    /// Most dead letters to return, 1–500 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    pub limit: Option<String>,
}

/// Body of `POST /v1/dead-letters/redrive` and `POST /v1/dead-letters/discard`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterAction {
    /// Only in this consumer group (default: every group).
    #[serde(default)]
    #[schema(max_length = 255)]
    pub group: Option<String>,
    /// The dead letters to act on, by event id (at most 500).
    #[serde(default)]
    #[schema(max_items = 500)]
    pub event_ids: Vec<String>,
    /// Act on every dead letter of the workspace (in `group`, if given);
    /// only without `event_ids`.
    #[serde(default)]
    pub all: bool,
}

/// An event of the workspace that a consumer gave up on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeadLetterView {
    /// The consumer group whose dead-letter queue holds it.
    pub group: String,
    /// Event id; names it for redrive and discard.
    pub event_id: String,
    /// Routing key it was published under (`<area>.<event>`).
    pub routing_key: String,
    /// Why the consumer gave up on it.
    pub reason: String,
    /// Deliveries it had before it was dead-lettered.
    pub attempts: u32,
    /// The event's headers (e.g. `traceparent`).
    pub headers: BTreeMap<String, String>,
}

/// Dead letters: those listed, or those an action moved or deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeadLetterList {
    /// By group, oldest first within a group.
    pub items: Vec<DeadLetterView>,
}

impl From<pb::DeadLetter> for DeadLetterView {
    fn from(d: pb::DeadLetter) -> Self {
        Self {
            group: d.group,
            event_id: d.event_id,
            routing_key: d.routing_key,
            reason: d.reason,
            attempts: d.attempts,
            headers: d.headers.into_iter().collect(),
        }
    }
}

fn list_of(dead: Vec<pb::DeadLetter>) -> DeadLetterList {
    DeadLetterList {
        items: dead.into_iter().map(Into::into).collect(),
    }
}

/// Managers and owners only; the workspace is always the caller's.
fn managers_workspace(caller: &Caller) -> Result<String, ApiError> {
    if !caller.is_manager() || caller.workspace_id().is_empty() {
        return Err(ApiError::Forbidden(
            "only owners and managers may see and handle dead letters".to_owned(),
        ));
    }
    Ok(caller.workspace_id().to_owned())
}

fn group(raw: Option<&str>) -> Result<Vec<String>, ApiError> {
    match present(raw) {
        None => Ok(Vec::new()),
        Some(g) if g.len() <= MAX_NAME_LEN => Ok(vec![g.to_owned()]),
        Some(_) => Err(ApiError::invalid(
            "group",
            format!("group must be at most {MAX_NAME_LEN} bytes"),
        )),
    }
}

/// An unknown group is the caller's mistake: a problem naming the field.
fn unknown_group(error: ApiError) -> ApiError {
    if let ApiError::Upstream(status) = &error
        && status.code() == tonic::Code::InvalidArgument
        && status.message().starts_with("unknown consumer group")
    {
        return ApiError::invalid("group", status.message().to_owned());
    }
    error
}

/// The workspace's dead letters, without taking them out. Owners and
/// managers only.
#[utoipa::path(
    get,
    path = "/v1/dead-letters",
    tag = "operations",
    params(DeadLetterQuery),
    responses(
        (status = 200, description = "the workspace's dead letters", body = DeadLetterList),
        (status = 400, description = "invalid limit or unknown group"),
        (status = 403, description = "the caller is an agent"),
    ),
)]
pub(crate) async fn list_dead_letters(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<DeadLetterQuery>,
) -> Result<Json<DeadLetterList>, ApiError> {
    let workspace_id = managers_workspace(&caller)?;
    let limit = match present(query.limit.as_deref()) {
        None => 0,
        Some(raw) => match raw.parse::<u32>() {
            Ok(n) if (1..=MAX_DEAD_LETTERS).contains(&n) => n,
            _ => {
                return Err(ApiError::invalid(
                    "limit",
                    format!("limit must be an integer between 1 and {MAX_DEAD_LETTERS}"),
                ));
            }
        },
    };
    let request = pb::ListDeadLettersRequest {
        workspace_id,
        groups: group(query.group.as_deref())?,
        limit,
    };
    let mut client = DeadLettersClient::new(state.upstreams.conversations.clone());
    let response = state
        .call(client.list_dead_letters(caller.request(request)))
        .await
        .map_err(unknown_group)?;
    Ok(Json(list_of(response.dead_letters)))
}

fn action_request(
    workspace_id: String,
    body: DeadLetterAction,
) -> Result<pb::ActOnDeadLettersRequest, ApiError> {
    let groups = group(body.group.as_deref())?;
    if body.event_ids.len() > MAX_DEAD_LETTERS as usize {
        return Err(ApiError::invalid(
            "event_ids",
            format!("event_ids may name at most {MAX_DEAD_LETTERS} dead letters"),
        ));
    }
    let mut event_ids = Vec::with_capacity(body.event_ids.len());
    for id in &body.event_ids {
        let id = id.trim();
        if id.is_empty() || id.len() > MAX_NAME_LEN {
            return Err(ApiError::invalid(
                "event_ids",
                format!("event_ids must be 1 to {MAX_NAME_LEN} bytes each"),
            ));
        }
        event_ids.push(id.to_owned());
    }
    match (event_ids.is_empty(), body.all) {
        (true, false) => Err(ApiError::invalid(
            "event_ids",
            "event_ids: name the dead letters to act on, or set all",
        )),
        (false, true) => Err(ApiError::invalid(
            "all",
            "all: give either event_ids or all, not both",
        )),
        _ => Ok(pb::ActOnDeadLettersRequest {
            workspace_id,
            groups,
            event_ids,
            all: body.all,
        }),
    }
}

/// Sends the workspace's chosen dead letters back to their consumer group's
/// queue, as first deliveries (their attempts start again); other groups do
/// not get them again. Answers those moved. Owners and managers only.
#[utoipa::path(
    post,
    path = "/v1/dead-letters/redrive",
    tag = "operations",
    request_body = DeadLetterAction,
    responses(
        (status = 200, description = "the dead letters sent back", body = DeadLetterList),
        (status = 400, description = "neither event ids nor all, both, or an unknown group"),
        (status = 403, description = "the caller is an agent"),
        (status = 404, description = "an event id names none of the workspace's dead letters; nothing was done"),
    ),
)]
pub(crate) async fn redrive_dead_letters(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<DeadLetterAction>,
) -> Result<Json<DeadLetterList>, ApiError> {
    let request = action_request(managers_workspace(&caller)?, body)?;
    let mut client = DeadLettersClient::new(state.upstreams.conversations.clone());
    let response = state
        .call(client.redrive_dead_letters(caller.request(request)))
        .await
        .map_err(unknown_group)?;
    Ok(Json(list_of(response.dead_letters)))
}

/// Deletes the workspace's chosen dead letters. Answers those deleted.
/// Owners and managers only.
#[utoipa::path(
    post,
    path = "/v1/dead-letters/discard",
    tag = "operations",
    request_body = DeadLetterAction,
    responses(
        (status = 200, description = "the dead letters deleted", body = DeadLetterList),
        (status = 400, description = "neither event ids nor all, both, or an unknown group"),
        (status = 403, description = "the caller is an agent"),
        (status = 404, description = "an event id names none of the workspace's dead letters; nothing was done"),
    ),
)]
pub(crate) async fn discard_dead_letters(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<DeadLetterAction>,
) -> Result<Json<DeadLetterList>, ApiError> {
    let request = action_request(managers_workspace(&caller)?, body)?;
    let mut client = DeadLettersClient::new(state.upstreams.conversations.clone());
    let response = state
        .call(client.discard_dead_letters(caller.request(request)))
        .await
        .map_err(unknown_group)?;
    Ok(Json(list_of(response.dead_letters)))
}
