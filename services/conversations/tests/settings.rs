//! Workspace settings through the `Members` gRPC API on both backends: the
//! defaults of a new workspace, owners alone changing them, unset fields
//! kept, a bad time zone or language refused by name and changing nothing,
//! and another workspace's settings untouched.

use std::sync::Arc;

use telenet_bus::SharedBus;
use telenet_conversations::{CALLS, Config, MIGRATIONS, NAME};
use telenet_kit::grpc::GrpcChannel;
use telenet_proto::conversations::v1 as pb;
use telenet_proto::conversations::v1::members_client::MembersClient;
use telenet_runtime::testing::{TestService, TestSetup};
use telenet_store::testing::Backend;
use tonic::Code;

struct World {
    _svc: TestService,
    members: MembersClient<GrpcChannel>,
}

async fn world(backend: Backend) -> World {
    let bus: SharedBus = Arc::new(telenet_bus::memory::MemoryBus::new(Default::default()));
    let setup = TestSetup::new(NAME, Config::default())
        .calls(CALLS)
        .database(backend, MIGRATIONS)
        .bus(bus);
    let svc = TestService::start(setup, telenet_conversations::start).await;
    World {
        members: MembersClient::new(svc.channel()),
        _svc: svc,
    }
}

impl World {
    /// A workspace and its owner.
    async fn workspace(&self, email: &str) -> (String, String) {
        let created = self
            .members
            .clone()
            .create_workspace(pb::CreateWorkspaceRequest {
                name: "Acme".into(),
                owner_name: "Olga".into(),
                owner_email: email.into(),
            })
            .await
            .expect("workspace")
            .into_inner();
        (
            created.workspace.expect("workspace").id,
            created.owner.expect("owner").user_id,
        )
    }

    async fn member(&self, ws: &str, email: &str, level: pb::AccessLevel) -> String {
        self.members
            .clone()
            .create_member(pb::CreateMemberRequest {
                workspace_id: ws.into(),
                name: "Ari".into(),
                email: email.into(),
                access_level: level as i32,
            })
            .await
            .expect("member")
            .into_inner()
            .user_id
    }

    async fn get(&self, ws: &str) -> Result<pb::WorkspaceSettings, tonic::Status> {
        self.members
            .clone()
            .get_workspace_settings(pb::GetWorkspaceSettingsRequest {
                workspace_id: ws.into(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    async fn update(
        &self,
        request: pb::UpdateWorkspaceSettingsRequest,
    ) -> Result<pb::WorkspaceSettings, tonic::Status> {
        self.members
            .clone()
            .update_workspace_settings(request)
            .await
            .map(tonic::Response::into_inner)
    }
}

async fn settings_have_defaults_and_only_owners_change_them(backend: Backend) {
    let w = world(backend).await;
    let (ws, owner) = w.workspace("olga@acme.test").await;
    let (other, _) = w.workspace("olga@other.test").await;
    let manager = w.member(&ws, "m@acme.test", pb::AccessLevel::Manager).await;

    let fresh = w.get(&ws).await.expect("settings");
    assert_eq!(
        fresh.agent_visibility,
        pb::AgentVisibility::AssignedToThemOrTheirTeams as i32
    );
    assert!(fresh.agents_see_unassigned);
    assert_eq!(
        fresh.closing_note_policy,
        pb::ClosingNotePolicy::Optional as i32
    );
    assert_eq!(
        (fresh.time_zone.as_str(), fresh.language.as_str()),
        ("UTC", "en")
    );
    assert!(fresh.updated_at.is_none());

    let refused = w
        .update(pb::UpdateWorkspaceSettingsRequest {
            workspace_id: ws.clone(),
            time_zone: Some("Europe/Madrid".into()),
            caller_user_id: manager,
            ..Default::default()
        })
        .await
        .expect_err("a manager may not");
    assert_eq!(refused.code(), Code::PermissionDenied);

    let bad = w
        .update(pb::UpdateWorkspaceSettingsRequest {
            workspace_id: ws.clone(),
            agent_visibility: pb::AgentVisibility::All as i32,
            time_zone: Some("Mars/Olympus".into()),
            caller_user_id: owner.clone(),
            ..Default::default()
        })
        .await
        .expect_err("no such zone");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("time_zone"), "{}", bad.message());
    assert_eq!(
        w.get(&ws).await.expect("settings"),
        fresh,
        "a refused change changes nothing"
    );

    let changed = w
        .update(pb::UpdateWorkspaceSettingsRequest {
            workspace_id: ws.clone(),
            closing_note_policy: pb::ClosingNotePolicy::CategoryRequired as i32,
            agents_see_unassigned: Some(false),
            time_zone: Some("America/Bogota".into()),
            caller_user_id: owner.clone(),
            ..Default::default()
        })
        .await
        .expect("owner");
    assert_eq!(
        changed.closing_note_policy,
        pb::ClosingNotePolicy::CategoryRequired as i32
    );
    assert!(!changed.agents_see_unassigned);
    assert_eq!(changed.time_zone, "America/Bogota");
    assert_eq!(
        changed.agent_visibility, fresh.agent_visibility,
        "unset: kept"
    );
    assert_eq!(changed.language, "en");
    assert_eq!(changed.updated_by_user_id, owner);
    assert!(changed.updated_at.is_some());
    assert_eq!(w.get(&ws).await.expect("settings"), changed, "kept");

    let second = w
        .update(pb::UpdateWorkspaceSettingsRequest {
            workspace_id: ws.clone(),
            language: Some("es".into()),
            caller_user_id: owner.clone(),
            ..Default::default()
        })
        .await
        .expect("owner again");
    assert_eq!(second.language, "es");
    assert_eq!(
        second.time_zone, "America/Bogota",
        "the earlier change stays"
    );

    let theirs = w.get(&other).await.expect("other workspace");
    assert_eq!(theirs.time_zone, "UTC", "another workspace is untouched");

    let cross = w
        .update(pb::UpdateWorkspaceSettingsRequest {
            workspace_id: other.clone(),
            language: Some("fr".into()),
            caller_user_id: owner,
            ..Default::default()
        })
        .await
        .expect_err("not a member there");
    assert_eq!(cross.code(), Code::NotFound);
    let missing = w
        .get("01900000-0000-7000-8000-000000000000")
        .await
        .expect_err("none");
    assert_eq!(missing.code(), Code::NotFound);
}

telenet_store::on_both_backends!(settings_have_defaults_and_only_owners_change_them);
