//! Contacts, as agents see them next to a conversation.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use telenet_proto::contacts::v1::GetContactRequest;
use telenet_proto::contacts::v1::contacts_client::ContactsClient;
use utoipa::IntoParams;

use super::parse_id;
use crate::AppState;
use crate::auth::Caller;
use crate::dto::ContactView;
use crate::error::ApiError;
use crate::extract::ApiPath;

/// The contact id in the path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ContactPath {
    /// Contact id.
    #[param(format = Uuid)]
    pub id: String,
}

/// One contact with its channel identities.
#[utoipa::path(
    get,
    path = "/v1/contacts/{id}",
    tag = "contacts",
    params(ContactPath),
    responses(
        (status = 200, description = "the contact", body = ContactView),
        (status = 404, description = "no such contact in the workspace"),
    ),
)]
pub(crate) async fn get_contact(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(path): ApiPath<ContactPath>,
) -> Result<Json<ContactView>, ApiError> {
    let request = GetContactRequest {
        workspace_id: caller.workspace_id().to_owned(),
        contact_id: parse_id("id", &path.id)?,
    };
    let mut client = ContactsClient::new(state.upstreams.contacts.clone());
    let contact = state
        .call(client.get_contact(caller.request(request)))
        .await?;
    Ok(Json(contact.into()))
}
