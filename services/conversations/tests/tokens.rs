//! API tokens through the `Members` gRPC API on both backends: expiry,
//! listing (newest first, paged, never the value), revocation (idempotent,
//! announced once on the bus as `member.token_revoked` with the token's
//! hash), last use at minute precision, who may see or revoke whose
//! tokens, and another workspace's tokens answering NOT_FOUND.

use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use sha2::{Digest, Sha256};
use telenet_bus::{SharedBus, SubscribeSpec, Subscription};
use telenet_conversations::{CALLS, Config, MIGRATIONS, NAME};
use telenet_kit::grpc::GrpcChannel;
use telenet_proto::common::v1::PageRequest;
use telenet_proto::conversations::v1 as pb;
use telenet_proto::conversations::v1::members_client::MembersClient;
use telenet_proto::events::v1::{EventEnvelope, event_envelope::Payload};
use telenet_runtime::testing::{TestService, TestSetup};
use telenet_store::testing::Backend;
use telenet_store::{micros_of, now_micros, timestamp};
use tonic::Code;

struct World {
    svc: TestService,
    members: MembersClient<GrpcChannel>,
    /// A gateway's broadcast subscription to token revocations.
    revocations: Subscription,
}

async fn world(backend: Backend) -> World {
    let bus: SharedBus = Arc::new(telenet_bus::memory::MemoryBus::new(Default::default()));
    let revocations = bus
        .subscribe(SubscribeSpec::broadcast("gw", &["member.token_revoked"]))
        .await
        .expect("subscribe");
    let setup = TestSetup::new(NAME, Config::default())
        .calls(CALLS)
        .database(backend, MIGRATIONS)
        .bus(bus);
    let svc = TestService::start(setup, telenet_conversations::start).await;
    World {
        members: MembersClient::new(svc.channel()),
        svc,
        revocations,
    }
}

struct Workspace {
    id: String,
    owner: String,
    owner_token: String,
}

impl World {
    async fn workspace(&self, name: &str, email: &str) -> Workspace {
        let created = self
            .members
            .clone()
            .create_workspace(pb::CreateWorkspaceRequest {
                name: name.into(),
                owner_name: "Olga".into(),
                owner_email: email.into(),
            })
            .await
            .expect("workspace")
            .into_inner();
        Workspace {
            id: created.workspace.expect("workspace").id,
            owner: created.owner.expect("owner").user_id,
            owner_token: created.token,
        }
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

    async fn token(&self, ws: &str, user: &str, label: &str) -> pb::CreateTokenResponse {
        self.members
            .clone()
            .create_token(pb::CreateTokenRequest {
                workspace_id: ws.into(),
                user_id: user.into(),
                label: label.into(),
                expires_at: None,
            })
            .await
            .expect("token")
            .into_inner()
    }

    async fn authenticate(&self, token: &str) -> Result<pb::Member, tonic::Status> {
        self.members
            .clone()
            .authenticate(pb::AuthenticateRequest {
                token: token.into(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    async fn list(
        &self,
        ws: &str,
        caller: &str,
        user: &str,
        include_revoked: bool,
        page: Option<PageRequest>,
    ) -> Result<pb::ListTokensResponse, tonic::Status> {
        self.members
            .clone()
            .list_tokens(pb::ListTokensRequest {
                workspace_id: ws.into(),
                user_id: user.into(),
                include_revoked,
                page,
                caller_user_id: caller.into(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    async fn revoke(
        &self,
        ws: &str,
        id: &str,
        caller: &str,
    ) -> Result<pb::ApiToken, tonic::Status> {
        self.members
            .clone()
            .revoke_token(pb::RevokeTokenRequest {
                workspace_id: ws.into(),
                token_id: id.into(),
                caller_user_id: caller.into(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// The next revocation on the bus: (workspace, token id, token hash).
    async fn revoked(&mut self) -> (String, String, String) {
        let delivery = tokio::time::timeout(Duration::from_secs(10), self.revocations.next())
            .await
            .expect("a revocation within 10 s")
            .expect("subscribed");
        let envelope = EventEnvelope::decode(delivery.event.payload.as_ref()).expect("envelope");
        delivery.ack().await.expect("ack");
        match envelope.payload {
            Some(Payload::TokenRevoked(t)) => (envelope.workspace_id, t.token_id, t.token_hash),
            other => panic!("not a revocation: {other:?}"),
        }
    }

    async fn no_more_revocations(&mut self) {
        if let Ok(Some(d)) =
            tokio::time::timeout(Duration::from_millis(300), self.revocations.next()).await
        {
            panic!("unexpected event {}", d.event.routing_key);
        }
    }
}

fn code<T: std::fmt::Debug>(outcome: Result<T, tonic::Status>) -> (Code, String) {
    match outcome {
        Ok(value) => panic!("expected a refusal, got {value:?}"),
        Err(status) => (status.code(), status.message().to_owned()),
    }
}

async fn revocation_is_immediate_idempotent_and_announced(backend: Backend) {
    let mut w = world(backend).await;
    let ws = w.workspace("Acme", "olga@acme.test").await;
    let created = w.token(&ws.id, &ws.owner, "ci").await;
    let listed = created.api_token.clone().expect("api token");
    assert!(created.token.starts_with(&listed.prefix));
    assert!(
        listed.prefix.len() < created.token.len() / 3,
        "{}",
        listed.prefix
    );
    assert_eq!(listed.label, "ci");
    w.authenticate(&created.token).await.expect("valid");

    let revoked = w
        .revoke(&ws.id, &listed.id, &ws.owner)
        .await
        .expect("revoke");
    assert!(revoked.revoked_at.is_some());
    let (status, message) = code(w.authenticate(&created.token).await);
    assert_eq!(
        (status, message.as_str()),
        (Code::Unauthenticated, "invalid or revoked token")
    );
    let (event_ws, event_id, hash) = w.revoked().await;
    assert_eq!((event_ws, event_id), (ws.id.clone(), listed.id.clone()));
    assert_eq!(hash, hex::encode(Sha256::digest(created.token.as_bytes())));

    // Again: the same answer, no second event.
    let again = w
        .revoke(&ws.id, &listed.id, &ws.owner)
        .await
        .expect("again");
    assert_eq!(again.revoked_at, revoked.revoked_at);
    w.no_more_revocations().await;
    w.authenticate(&ws.owner_token)
        .await
        .expect("the other token still works");
    w.svc.stop().await;
}

async fn expiry_is_checked_when_issued_and_when_used(backend: Backend) {
    let w = world(backend).await;
    let ws = w.workspace("Acme", "olga@acme.test").await;
    let now = now_micros();
    let day = 24 * 3600 * 1_000_000;
    for (at, message) in [
        (now - 1, "expires_at must be in the future"),
        (now + 367 * day, "expires_at must be at most 366 days ahead"),
    ] {
        let refused = w
            .members
            .clone()
            .create_token(pb::CreateTokenRequest {
                workspace_id: ws.id.clone(),
                user_id: ws.owner.clone(),
                label: "x".into(),
                expires_at: Some(timestamp(at)),
            })
            .await;
        assert_eq!(code(refused), (Code::InvalidArgument, message.to_owned()));
    }
    let expires = now + 1_500_000;
    let created = w
        .members
        .clone()
        .create_token(pb::CreateTokenRequest {
            workspace_id: ws.id.clone(),
            user_id: ws.owner.clone(),
            label: "short".into(),
            expires_at: Some(timestamp(expires)),
        })
        .await
        .expect("token")
        .into_inner();
    let member = w.authenticate(&created.token).await.expect("valid for now");
    assert_eq!(
        member.token_expires_at.as_ref().map(micros_of),
        Some(expires)
    );
    let owner = w.authenticate(&ws.owner_token).await.expect("owner");
    assert_eq!(owner.token_expires_at, None, "no expiry unless asked");
    let wait = u64::try_from(expires - now_micros()).unwrap_or(0) + 100_000;
    tokio::time::sleep(Duration::from_micros(wait)).await;
    assert_eq!(
        code(w.authenticate(&created.token).await),
        (Code::Unauthenticated, "token expired".to_owned())
    );
    w.svc.stop().await;
}

async fn tokens_are_listed_newest_first_with_their_last_use(backend: Backend) {
    let w = world(backend).await;
    let ws = w.workspace("Acme", "olga@acme.test").await;
    let mut values = vec![ws.owner_token.clone()];
    for label in ["one", "two", "three"] {
        values.push(w.token(&ws.id, &ws.owner, label).await.token);
    }
    w.authenticate(&values[1]).await.expect("use one");
    w.authenticate(&values[1]).await.expect("use one again");

    let first = w
        .list(
            &ws.id,
            &ws.owner,
            "",
            false,
            Some(PageRequest {
                page_size: 3,
                page_token: String::new(),
            }),
        )
        .await
        .expect("list");
    let labels: Vec<&str> = first.tokens.iter().map(|t| t.label.as_str()).collect();
    assert_eq!(labels, ["three", "two", "one"]);
    let next = first.page.clone().expect("page").next_page_token;
    let rest = w
        .list(
            &ws.id,
            &ws.owner,
            "",
            false,
            Some(PageRequest {
                page_size: 3,
                page_token: next,
            }),
        )
        .await
        .expect("list");
    let labels: Vec<&str> = rest.tokens.iter().map(|t| t.label.as_str()).collect();
    assert_eq!(labels, ["initial"]);
    assert!(rest.page.as_ref().expect("page").next_page_token.is_empty());

    let one = first.tokens.iter().find(|t| t.label == "one").expect("one");
    let used = one.last_used_at.as_ref().map(micros_of).expect("last used");
    assert_eq!(used % 60_000_000, 0, "minute precision");
    assert!(now_micros() - used < 120_000_000);
    assert!(
        first
            .tokens
            .iter()
            .find(|t| t.label == "two")
            .expect("two")
            .last_used_at
            .is_none()
    );
    let listed = format!("{first:?}{rest:?}");
    for value in &values {
        assert!(!listed.contains(value.as_str()), "a token value was listed");
    }
    let bad_page = w
        .list(
            &ws.id,
            &ws.owner,
            "",
            false,
            Some(PageRequest {
                page_size: 3,
                page_token: "!".into(),
            }),
        )
        .await;
    assert_eq!(code(bad_page).0, Code::InvalidArgument);
    w.svc.stop().await;
}

async fn agents_see_and_revoke_only_their_own(backend: Backend) {
    let mut w = world(backend).await;
    let ws = w.workspace("Acme", "olga@acme.test").await;
    let agent = w
        .member(&ws.id, "ari@acme.test", pb::AccessLevel::Agent)
        .await;
    let other_agent = w
        .member(&ws.id, "bo@acme.test", pb::AccessLevel::Agent)
        .await;
    let manager = w
        .member(&ws.id, "mo@acme.test", pb::AccessLevel::Manager)
        .await;
    let agent_token = w
        .token(&ws.id, &agent, "mine")
        .await
        .api_token
        .expect("listed");
    let other_token = w
        .token(&ws.id, &other_agent, "theirs")
        .await
        .api_token
        .expect("listed");
    let manager_token = w
        .token(&ws.id, &manager, "boss")
        .await
        .api_token
        .expect("listed");
    let owner_token = w
        .list(&ws.id, &ws.owner, &ws.owner, false, None)
        .await
        .expect("owner's")
        .tokens
        .remove(0);

    let mine = w
        .list(&ws.id, &agent, "", false, None)
        .await
        .expect("agent lists");
    assert_eq!(
        mine.tokens
            .iter()
            .map(|t| t.id.as_str())
            .collect::<Vec<_>>(),
        [agent_token.id.as_str()]
    );
    assert_eq!(
        code(w.list(&ws.id, &agent, &ws.owner, false, None).await),
        (
            Code::PermissionDenied,
            "agents may list only their own tokens".to_owned()
        )
    );
    assert_eq!(
        w.list(&ws.id, &manager, "", false, None)
            .await
            .expect("all")
            .tokens
            .len(),
        4
    );
    assert_eq!(
        code(w.list(&ws.id, "", "", false, None).await).0,
        Code::InvalidArgument
    );

    for (token, caller) in [
        (&other_token, &agent),
        (&owner_token, &agent),
        (&owner_token, &manager),
    ] {
        assert_eq!(
            code(w.revoke(&ws.id, &token.id, caller).await).0,
            Code::PermissionDenied
        );
    }
    w.no_more_revocations().await;
    w.revoke(&ws.id, &other_token.id, &manager)
        .await
        .expect("a manager revokes an agent's");
    w.revoke(&ws.id, &agent_token.id, &agent)
        .await
        .expect("an agent revokes their own");
    w.revoke(&ws.id, &manager_token.id, &ws.owner)
        .await
        .expect("an owner revokes any");
    for _ in 0..3 {
        w.revoked().await;
    }

    // Another workspace's tokens do not exist for this one.
    let other = w.workspace("Other", "oz@other.test").await;
    let theirs = w
        .list(&other.id, &other.owner, "", true, None)
        .await
        .expect("list")
        .tokens;
    let their_token = theirs.first().expect("the other owner's token");
    assert_eq!(
        code(w.revoke(&ws.id, &their_token.id, &ws.owner).await),
        (Code::NotFound, "token not found".to_owned())
    );
    assert_eq!(
        code(w.revoke(&other.id, &agent_token.id, &other.owner).await).0,
        Code::NotFound
    );
    assert_eq!(
        code(w.revoke(&ws.id, &their_token.id, &other.owner).await).0,
        Code::NotFound
    );
    let listed = w
        .list(&ws.id, &ws.owner, &other.owner, true, None)
        .await
        .expect("list");
    assert!(listed.tokens.is_empty(), "{listed:?}");
    w.authenticate(&other.owner_token).await.expect("untouched");
    w.svc.stop().await;
}

telenet_store::on_both_backends!(
    revocation_is_immediate_idempotent_and_announced,
    expiry_is_checked_when_issued_and_when_used,
    tokens_are_listed_newest_first_with_their_last_use,
    agents_see_and_revoke_only_their_own,
);
