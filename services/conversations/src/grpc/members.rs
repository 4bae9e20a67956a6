//! `telenet.conversations.v1.Members`. RPCs not listed here answer
//! UNIMPLEMENTED (the generated defaults).

use telenet_proto::conversations::v1 as pb;
use telenet_proto::conversations::v1::AccessLevel;
use telenet_proto::conversations::v1::members_server::Members as MembersRpc;
use tonic::{Request, Response, Status};

use telenet_store::{micros_of, timestamp};

use super::{page_info, page_request, status};
use crate::domain::{ApiToken, NewMember, NewToken, NewWorkspace, SettingsChange};
use crate::members::{CreatedWorkspace, Members, TokenQuery};

#[derive(Clone)]
pub struct MembersApi {
    members: Members,
}

impl MembersApi {
    pub fn new(members: Members) -> Self {
        Self { members }
    }
}

fn new_workspace(r: pb::CreateWorkspaceRequest) -> NewWorkspace {
    NewWorkspace {
        name: r.name,
        owner_name: r.owner_name,
        owner_email: r.owner_email,
    }
}

fn created_workspace_response(created: &CreatedWorkspace) -> pb::CreateWorkspaceResponse {
    pb::CreateWorkspaceResponse {
        workspace: Some((&created.workspace).into()),
        owner: Some((&created.owner).into()),
        token: created.token.clone(),
    }
}

#[tonic::async_trait]
impl MembersRpc for MembersApi {
    async fn create_workspace(
        &self,
        request: Request<pb::CreateWorkspaceRequest>,
    ) -> Result<Response<pb::CreateWorkspaceResponse>, Status> {
        let created = self
            .members
            .create_workspace(&new_workspace(request.into_inner()))
            .await
            .map_err(status)?;
        Ok(Response::new(created_workspace_response(&created)))
    }

    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::Member>, Status> {
        let (member, expires_at) = self
            .members
            .authenticate(&request.get_ref().token)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::Member {
            token_expires_at: expires_at.map(timestamp),
            ..(&member).into()
        }))
    }

    async fn create_member(
        &self,
        request: Request<pb::CreateMemberRequest>,
    ) -> Result<Response<pb::Member>, Status> {
        let r = request.into_inner();
        let new = NewMember {
            workspace_id: r.workspace_id,
            name: r.name,
            email: r.email,
            // An unknown level is no level.
            access_level: AccessLevel::try_from(r.access_level).unwrap_or(AccessLevel::Unspecified),
        };
        let member = self.members.create_member(&new).await.map_err(status)?;
        Ok(Response::new((&member).into()))
    }

    async fn get_member(
        &self,
        request: Request<pb::GetMemberRequest>,
    ) -> Result<Response<pb::Member>, Status> {
        let r = request.get_ref();
        let member = self
            .members
            .get_member(&r.workspace_id, &r.user_id)
            .await
            .map_err(status)?;
        Ok(Response::new((&member).into()))
    }

    async fn list_members(
        &self,
        request: Request<pb::ListMembersRequest>,
    ) -> Result<Response<pb::ListMembersResponse>, Status> {
        let members = self
            .members
            .list_members(&request.get_ref().workspace_id)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListMembersResponse {
            members: members.iter().map(pb::Member::from).collect(),
        }))
    }

    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let r = request.into_inner();
        let new = NewToken {
            workspace_id: r.workspace_id,
            user_id: r.user_id,
            label: r.label,
            expires_at: r.expires_at.as_ref().map(micros_of),
        };
        let (token, issued) = self.members.create_token(&new).await.map_err(status)?;
        Ok(Response::new(pb::CreateTokenResponse {
            token,
            api_token: Some(api_token(&issued)),
        }))
    }

    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        let r = request.into_inner();
        let query = TokenQuery {
            workspace_id: r.workspace_id,
            caller_user_id: r.caller_user_id,
            user_id: r.user_id,
            include_revoked: r.include_revoked,
            page: page_request(r.page),
        };
        let page = self.members.list_tokens(&query).await.map_err(status)?;
        Ok(Response::new(pb::ListTokensResponse {
            tokens: page.items.iter().map(api_token).collect(),
            page: page_info(page.next),
        }))
    }

    async fn get_workspace_settings(
        &self,
        request: Request<pb::GetWorkspaceSettingsRequest>,
    ) -> Result<Response<pb::WorkspaceSettings>, Status> {
        let settings = self
            .members
            .get_settings(&request.get_ref().workspace_id)
            .await
            .map_err(status)?;
        Ok(Response::new((&settings).into()))
    }

    async fn update_workspace_settings(
        &self,
        request: Request<pb::UpdateWorkspaceSettingsRequest>,
    ) -> Result<Response<pb::WorkspaceSettings>, Status> {
        let r = request.into_inner();
        let change = SettingsChange {
            agent_visibility: pb::AgentVisibility::try_from(r.agent_visibility)
                .unwrap_or(pb::AgentVisibility::Unspecified),
            agents_see_unassigned: r.agents_see_unassigned,
            closing_note_policy: pb::ClosingNotePolicy::try_from(r.closing_note_policy)
                .unwrap_or(pb::ClosingNotePolicy::Unspecified),
            time_zone: r.time_zone,
            language: r.language,
        };
        let settings = self
            .members
            .update_settings(&r.workspace_id, &r.caller_user_id, &change)
            .await
            .map_err(status)?;
        Ok(Response::new((&settings).into()))
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::ApiToken>, Status> {
        let r = request.get_ref();
        let token = self
            .members
            .revoke_token(&r.workspace_id, &r.token_id, &r.caller_user_id)
            .await
            .map_err(status)?;
        Ok(Response::new(api_token(&token)))
    }
}

fn api_token(t: &ApiToken) -> pb::ApiToken {
    pb::ApiToken {
        id: t.id.clone(),
        workspace_id: t.workspace_id.clone(),
        user_id: t.user_id.clone(),
        label: t.label.clone(),
        prefix: t.prefix.clone(),
        created_at: Some(timestamp(t.created_at)),
        last_used_at: t.last_used_at.map(timestamp),
        revoked_at: t.revoked_at.map(timestamp),
        expires_at: t.expires_at.map(timestamp),
    }
}
