//! Conversations, their messages, assignment and closing.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use telenet_kit::grpc::GrpcChannel;
use telenet_proto::common::v1 as common;
use telenet_proto::conversations::v1 as conv;
use telenet_proto::conversations::v1::conversations_client::ConversationsClient;
use telenet_proto::media::v1 as media_pb;
use telenet_proto::media::v1::media_client::MediaClient;
use utoipa::IntoParams;
use utoipa::openapi::schema::{
    KnownFormat, Object, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type,
};

use super::{PageQuery, page_request, parse_id, present};
use crate::AppState;
use crate::auth::Caller;
use crate::dto::{
    AssignBody, AttachmentKind, CloseBody, ConversationPage, ConversationView, MessagePage,
    SendAttachmentBody, SendMessageBody, SentMessage,
};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery, OptionalJson};

/// Longest idempotency key accepted, in bytes.
const MAX_CLIENT_MESSAGE_ID_LEN: usize = 200;

/// Filters and paging of `GET /v1/conversations`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ConversationQuery {
    /// `open`, `closed` or `any` (default `any`).
    #[param(schema_with = status_filter_schema, example = "open")]
    pub status: Option<String>,
    /// `me`, `unassigned`, `any` (default) or a user id.
    #[param(schema_with = assignee_filter_schema, example = "me")]
    pub assignee: Option<String>,
    /// Only this contact's conversations.
    #[param(format = Uuid)]
    pub contact_id: Option<String>,
    /// Items per page, 1–200 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    pub page_size: Option<String>,
    /// The `next_page_token` of the previous page.
    #[param(max_length = 1024)]
    pub page_token: Option<String>,
}

/// `status`: the values [`status_filter`] takes.
fn status_filter_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["open", "closed", "any"]))
        .build()
}

/// `assignee`: the words [`assignee_filter`] takes, or a user id.
fn assignee_filter_schema() -> Schema {
    let one_of = OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["me", "unassigned", "any"])),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))),
        )
        .build();
    Schema::OneOf(one_of)
}

/// The conversation id in the path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ConversationPath {
    /// Conversation id.
    #[param(format = Uuid)]
    pub id: String,
}

/// The upstream status filter for the `status` query value.
pub(crate) fn status_filter(raw: Option<&str>) -> Result<conv::ConversationStatus, ApiError> {
    match present(raw) {
        None | Some("any") => Ok(conv::ConversationStatus::Unspecified),
        Some("open") => Ok(conv::ConversationStatus::Open),
        Some("closed") => Ok(conv::ConversationStatus::Closed),
        Some(_) => Err(ApiError::invalid(
            "status",
            "status must be open, closed or any",
        )),
    }
}

/// The upstream assignee filter (and user) for the `assignee` query value.
pub(crate) fn assignee_filter(
    raw: Option<&str>,
) -> Result<(conv::AssigneeFilter, String), ApiError> {
    match present(raw) {
        None | Some("any") => Ok((conv::AssigneeFilter::Any, String::new())),
        Some("me") => Ok((conv::AssigneeFilter::Me, String::new())),
        Some("unassigned") => Ok((conv::AssigneeFilter::Unassigned, String::new())),
        Some(user) => match parse_id("assignee", user) {
            Ok(user_id) => Ok((conv::AssigneeFilter::User, user_id)),
            Err(_) => Err(ApiError::invalid(
                "assignee",
                "assignee must be me, unassigned, any or a user id",
            )),
        },
    }
}

/// Builds the upstream request of `GET /v1/conversations` from its query.
pub(crate) fn list_request(
    caller: &Caller,
    query: &ConversationQuery,
) -> Result<conv::ListConversationsRequest, ApiError> {
    let status = status_filter(query.status.as_deref())?;
    let (assignee, assignee_user_id) = assignee_filter(query.assignee.as_deref())?;
    let contact_id = present(query.contact_id.as_deref())
        .map(|id| parse_id("contact_id", id))
        .transpose()?
        .unwrap_or_default();
    Ok(conv::ListConversationsRequest {
        workspace_id: caller.workspace_id().to_owned(),
        caller_user_id: caller.user_id().to_owned(),
        status: status.into(),
        assignee: assignee.into(),
        assignee_user_id,
        contact_id,
        page: Some(page_request(
            query.page_size.as_deref(),
            query.page_token.as_deref(),
        )?),
    })
}

fn client(state: &AppState) -> ConversationsClient<GrpcChannel> {
    ConversationsClient::new(state.upstreams.conversations.clone())
}

/// The workspace's conversations, newest activity first.
#[utoipa::path(
    get,
    path = "/v1/conversations",
    tag = "conversations",
    params(ConversationQuery),
    responses(
        (status = 200, description = "a page of conversations", body = ConversationPage),
        (status = 400, description = "invalid filter or paging"),
    ),
)]
pub(crate) async fn list_conversations(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ConversationQuery>,
) -> Result<Json<ConversationPage>, ApiError> {
    let request = list_request(&caller, &query)?;
    let response = state
        .call(client(&state).list_conversations(caller.request(request)))
        .await?;
    Ok(Json(ConversationPage {
        items: response.conversations.into_iter().map(Into::into).collect(),
        next_page_token: super::next_token(response.page),
    }))
}

/// One conversation.
#[utoipa::path(
    get,
    path = "/v1/conversations/{id}",
    tag = "conversations",
    params(ConversationPath),
    responses(
        (status = 200, description = "the conversation", body = ConversationView),
        (status = 404, description = "no such conversation in the workspace"),
    ),
)]
pub(crate) async fn get_conversation(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(path): ApiPath<ConversationPath>,
) -> Result<Json<ConversationView>, ApiError> {
    let request = conv::GetConversationRequest {
        workspace_id: caller.workspace_id().to_owned(),
        conversation_id: parse_id("id", &path.id)?,
    };
    let conversation = state
        .call(client(&state).get_conversation(caller.request(request)))
        .await?;
    Ok(Json(conversation.into()))
}

/// A conversation's messages, oldest first.
#[utoipa::path(
    get,
    path = "/v1/conversations/{id}/messages",
    tag = "conversations",
    params(ConversationPath, PageQuery),
    responses(
        (status = 200, description = "a page of messages", body = MessagePage),
        (status = 400, description = "invalid paging"),
        (status = 404, description = "no such conversation in the workspace"),
    ),
)]
pub(crate) async fn list_messages(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(path): ApiPath<ConversationPath>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<MessagePage>, ApiError> {
    let request = conv::ListMessagesRequest {
        workspace_id: caller.workspace_id().to_owned(),
        conversation_id: parse_id("id", &path.id)?,
        page: Some(query.to_proto()?),
    };
    let response = state
        .call(client(&state).list_messages(caller.request(request)))
        .await?;
    Ok(Json(MessagePage {
        items: response.messages.into_iter().map(Into::into).collect(),
        next_page_token: super::next_token(response.page),
    }))
}

/// Replies in a conversation. Replying to an unassigned conversation assigns
/// it to the replier.
#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/messages",
    tag = "conversations",
    params(ConversationPath),
    request_body = SendMessageBody,
    responses(
        (status = 201, description = "the stored message and the conversation after the reply", body = SentMessage),
        (status = 400, description = "invalid field"),
        (status = 404, description = "no such conversation in the workspace"),
        (status = 409, description = "the conversation does not accept replies (e.g. the channel's reply window closed: see `reply_window_closes_at`)"),
    ),
)]
pub(crate) async fn send_message(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(path): ApiPath<ConversationPath>,
    ApiJson(mut body): ApiJson<SendMessageBody>,
) -> Result<(StatusCode, Json<SentMessage>), ApiError> {
    let conversation_id = parse_id("id", &path.id)?;
    let attachments = std::mem::take(&mut body.attachments);
    let mut request = send_request(&caller, conversation_id, body, !attachments.is_empty())?;
    request.attachments = stored_attachments(&state, &caller, attachments).await?;
    let sent = state
        .call(client(&state).send_message(caller.request(request)))
        .await?;
    let message = sent
        .message
        .ok_or(ApiError::Incomplete("the sent message"))?;
    let conversation = sent
        .conversation
        .ok_or(ApiError::Incomplete("the replied conversation"))?;
    Ok((
        StatusCode::CREATED,
        Json(SentMessage {
            message: message.into(),
            conversation: conversation.into(),
        }),
    ))
}

/// Validates a reply and builds the upstream request.
pub(crate) fn send_request(
    caller: &Caller,
    conversation_id: String,
    body: SendMessageBody,
    with_files: bool,
) -> Result<conv::SendMessageRequest, ApiError> {
    if body.text.trim().is_empty() && !with_files {
        return Err(ApiError::invalid(
            "text",
            "text must not be blank when no attachments are sent",
        ));
    }
    let client_message_id = match body.client_message_id {
        None => String::new(),
        Some(id) => {
            let valid = !id.is_empty()
                && id.len() <= MAX_CLIENT_MESSAGE_ID_LEN
                && id.bytes().all(|b| b.is_ascii_graphic());
            if !valid {
                return Err(ApiError::invalid(
                    "client_message_id",
                    format!(
                        "client_message_id must be 1 to {MAX_CLIENT_MESSAGE_ID_LEN} printable ascii characters without spaces"
                    ),
                ));
            }
            id
        }
    };
    Ok(conv::SendMessageRequest {
        workspace_id: caller.workspace_id().to_owned(),
        conversation_id,
        author_user_id: caller.user_id().to_owned(),
        text: body.text,
        attachments: Vec::new(),
        client_message_id,
    })
}

/// Most files sent with one reply.
const MAX_ATTACHMENTS: usize = 10;
/// Longest file name shown to the contact, in characters.
const MAX_FILE_NAME_CHARS: usize = 255;

/// The files of a reply as stored attachments: each must be a file of the
/// workspace (404 otherwise); its type, size and — for audio and video —
/// duration come from the media service, and a voice note must be audio
/// the media service can read, at most 5 minutes long.
async fn stored_attachments(
    state: &AppState,
    caller: &Caller,
    files: Vec<SendAttachmentBody>,
) -> Result<Vec<common::Attachment>, ApiError> {
    if files.len() > MAX_ATTACHMENTS {
        return Err(ApiError::invalid(
            "attachments",
            format!("at most {MAX_ATTACHMENTS} attachments per message"),
        ));
    }
    let mut media = MediaClient::new(state.upstreams.media.clone());
    let mut out = Vec::with_capacity(files.len());
    for file in files {
        let id = file.file_id.trim().to_ascii_lowercase();
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ApiError::invalid(
                "attachments",
                "attachments[].file_id must be a file id (64 hex characters)",
            ));
        }
        let file_name = file.file_name.unwrap_or_default();
        if file_name.chars().count() > MAX_FILE_NAME_CHARS
            || file_name.chars().any(char::is_control)
        {
            return Err(ApiError::invalid(
                "attachments",
                format!(
                    "attachments[].file_name must be at most {MAX_FILE_NAME_CHARS} characters without control characters"
                ),
            ));
        }
        let kind = file.kind.unwrap_or(AttachmentKind::File);
        let metadata = state
            .call(
                media.get_blob_metadata(caller.request(media_pb::GetBlobMetadataRequest {
                    workspace_id: caller.workspace_id().to_owned(),
                    blob_id: id.clone(),
                })),
            )
            .await?;
        let blob = metadata.blob.ok_or(ApiError::Incomplete("the file"))?;
        let mut probe = metadata.probe;
        if kind == AttachmentKind::Voice && probe.is_none() {
            // Metadata leaves out why a file did not probe; asking the probe
            // itself says exactly why it is no voice note (not audio,
            // corrupt, over 5 minutes).
            probe = Some(
                state
                    .call(media.probe(caller.request(media_pb::ProbeRequest {
                        workspace_id: caller.workspace_id().to_owned(),
                        blob_id: id.clone(),
                        waveform_peaks: 0,
                    })))
                    .await?,
            );
        }
        if kind == AttachmentKind::Voice && probe.as_ref().is_none_or(|p| p.audio.is_empty()) {
            return Err(ApiError::invalid(
                "attachments",
                "a voice attachment must be an audio file",
            ));
        }
        let duration_ms = probe.as_ref().map_or(0, |p| p.duration_ms);
        out.push(common::Attachment {
            kind: kind.to_proto() as i32,
            mime_type: blob.mime_type,
            size_bytes: blob.size_bytes,
            blob_id: blob.id,
            state: common::AttachmentState::Ready as i32,
            file_name,
            duration_ms,
            ..common::Attachment::default()
        });
    }
    Ok(out)
}

/// Assigns a conversation to a member of the workspace.
#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/assign",
    tag = "conversations",
    params(ConversationPath),
    request_body = AssignBody,
    responses(
        (status = 200, description = "the conversation after assignment", body = ConversationView),
        (status = 400, description = "invalid field"),
        (status = 404, description = "no such conversation or member in the workspace"),
        (status = 409, description = "the conversation cannot be assigned (e.g. closed)"),
    ),
)]
pub(crate) async fn assign(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(path): ApiPath<ConversationPath>,
    ApiJson(body): ApiJson<AssignBody>,
) -> Result<Json<ConversationView>, ApiError> {
    let request = conv::AssignConversationRequest {
        workspace_id: caller.workspace_id().to_owned(),
        conversation_id: parse_id("id", &path.id)?,
        user_id: parse_id("user_id", &body.user_id)?,
        caller_user_id: caller.user_id().to_owned(),
    };
    let conversation = state
        .call(client(&state).assign_conversation(caller.request(request)))
        .await?;
    Ok(Json(conversation.into()))
}

/// Unassigns a conversation.
#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/unassign",
    tag = "conversations",
    params(ConversationPath),
    responses(
        (status = 200, description = "the conversation after unassignment", body = ConversationView),
        (status = 404, description = "no such conversation in the workspace"),
    ),
)]
pub(crate) async fn unassign(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(path): ApiPath<ConversationPath>,
) -> Result<Json<ConversationView>, ApiError> {
    let request = conv::UnassignConversationRequest {
        workspace_id: caller.workspace_id().to_owned(),
        conversation_id: parse_id("id", &path.id)?,
        caller_user_id: caller.user_id().to_owned(),
    };
    let conversation = state
        .call(client(&state).unassign_conversation(caller.request(request)))
        .await?;
    Ok(Json(conversation.into()))
}

/// Closes (resolves) a conversation, optionally with a closing note: it
/// leaves the queue and is unassigned from everyone. The body may be empty.
#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/close",
    tag = "conversations",
    params(ConversationPath),
    request_body(content = Option<CloseBody>, description = "optional; an empty body closes without a note"),
    responses(
        (status = 200, description = "the closed conversation", body = ConversationView),
        (status = 400, description = "invalid field"),
        (status = 404, description = "no such conversation in the workspace"),
        (status = 409, description = "the conversation is already closed"),
    ),
)]
pub(crate) async fn close(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(path): ApiPath<ConversationPath>,
    OptionalJson(body): OptionalJson<CloseBody>,
) -> Result<Json<ConversationView>, ApiError> {
    let closing_note = body
        .unwrap_or_default()
        .closing_note
        .map(|note| conv::ClosingNote {
            category: note
                .category
                .map(|c| c.trim().to_owned())
                .unwrap_or_default(),
            summary: note.summary.unwrap_or_default(),
            closed_by_user_id: caller.user_id().to_owned(),
        });
    let request = conv::CloseConversationRequest {
        workspace_id: caller.workspace_id().to_owned(),
        conversation_id: parse_id("id", &path.id)?,
        caller_user_id: caller.user_id().to_owned(),
        closing_note,
    };
    let conversation = state
        .call(client(&state).close_conversation(caller.request(request)))
        .await?;
    Ok(Json(conversation.into()))
}
