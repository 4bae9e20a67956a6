//! `/v1/dead-letters`: owners and managers list, redrive and discard their
//! own workspace's dead letters; agents get 403; every upstream call names
//! the caller's workspace whatever the client sends; bad bodies are refused
//! before any upstream call. The upstream is a `DeadLetters` fake holding
//! dead letters of two workspaces and answering by workspace as the real
//! service does (its own tests: services/conversations/tests/dead_letters.rs).

mod common;

use std::sync::{Arc, Mutex};

use common::{
    AGENT_TOKEN, FakeMembers, OTHER_TOKEN, OTHER_WORKSPACE, OWNER_TOKEN, WORKSPACE, client,
    dead_channel, get, json, send, spawn_members,
};
use telenet_gateway::{Config, Upstreams};
use telenet_presence::{MemoryPresence, SharedPresence, Thresholds};
use telenet_proto::operations::v1 as pb;
use telenet_proto::operations::v1::dead_letters_server::{DeadLetters, DeadLettersServer};

/// Dead letters of both workspaces; records the workspace of every call.
#[derive(Clone, Default)]
struct FakeDeadLetters {
    dead: Arc<Mutex<Vec<pb::DeadLetter>>>,
    workspaces: Arc<Mutex<Vec<String>>>,
}

impl FakeDeadLetters {
    fn with_two_workspaces() -> Self {
        let dead = |workspace: &str, id: &str| pb::DeadLetter {
            workspace_id: workspace.to_owned(),
            group: "conversations.inbound".to_owned(),
            event_id: id.to_owned(),
            routing_key: "inbound.message".to_owned(),
            reason: "contacts unavailable".to_owned(),
            attempts: 6,
            headers: [("traceparent".to_owned(), "00-t-s-01".to_owned())]
                .into_iter()
                .collect(),
        };
        Self {
            dead: Arc::new(Mutex::new(vec![
                dead(WORKSPACE, "ev-mine-1"),
                dead(OTHER_WORKSPACE, "ev-other-1"),
                dead(WORKSPACE, "ev-mine-2"),
            ])),
            workspaces: Arc::default(),
        }
    }

    fn workspaces(&self) -> Vec<String> {
        self.workspaces.lock().expect("lock").clone()
    }

    fn take(&self, workspace: &str, ids: &[String]) -> Vec<pb::DeadLetter> {
        let mut dead = self.dead.lock().expect("lock");
        let (taken, kept): (Vec<_>, Vec<_>) = dead.drain(..).partition(|d| {
            d.workspace_id == workspace && (ids.is_empty() || ids.contains(&d.event_id))
        });
        *dead = kept;
        taken
    }
}

#[tonic::async_trait]
impl DeadLetters for FakeDeadLetters {
    async fn list_dead_letters(
        &self,
        request: tonic::Request<pb::ListDeadLettersRequest>,
    ) -> Result<tonic::Response<pb::ListDeadLettersResponse>, tonic::Status> {
        let request = request.into_inner();
        self.workspaces
            .lock()
            .expect("lock")
            .push(request.workspace_id.clone());
        if request.groups.iter().any(|g| g != "conversations.inbound") {
            return Err(tonic::Status::invalid_argument(
                "unknown consumer group \"nope\"; the groups are: conversations.inbound",
            ));
        }
        let dead = self
            .dead
            .lock()
            .expect("lock")
            .iter()
            .filter(|d| d.workspace_id == request.workspace_id)
            .cloned()
            .collect();
        Ok(tonic::Response::new(pb::ListDeadLettersResponse {
            dead_letters: dead,
        }))
    }

    async fn redrive_dead_letters(
        &self,
        request: tonic::Request<pb::ActOnDeadLettersRequest>,
    ) -> Result<tonic::Response<pb::ActOnDeadLettersResponse>, tonic::Status> {
        let request = request.into_inner();
        self.workspaces
            .lock()
            .expect("lock")
            .push(request.workspace_id.clone());
        // As the service: an id that is none of the workspace's dead
        // letters is NOT_FOUND, and nothing is done.
        let missing: Vec<&String> = {
            let dead = self.dead.lock().expect("lock");
            request
                .event_ids
                .iter()
                .filter(|id| {
                    !dead
                        .iter()
                        .any(|d| &d.event_id == *id && d.workspace_id == request.workspace_id)
                })
                .collect()
        };
        if !missing.is_empty() {
            return Err(tonic::Status::not_found(format!(
                "no such dead letter: {missing:?}"
            )));
        }
        Ok(tonic::Response::new(pb::ActOnDeadLettersResponse {
            dead_letters: self.take(&request.workspace_id, &request.event_ids),
        }))
    }

    async fn discard_dead_letters(
        &self,
        request: tonic::Request<pb::ActOnDeadLettersRequest>,
    ) -> Result<tonic::Response<pb::ActOnDeadLettersResponse>, tonic::Status> {
        self.redrive_dead_letters(request).await
    }
}

async fn app(fake: FakeDeadLetters) -> axum::Router {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(DeadLettersServer::new(fake))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let upstreams = Upstreams {
        members: spawn_members(FakeMembers::standard()).await,
        conversations: client(&format!("http://{addr}")),
        ..Upstreams::single(dead_channel())
    };
    let presence: SharedPresence = Arc::new(MemoryPresence::new(Thresholds::default()));
    telenet_gateway::router(upstreams, presence, Config::default())
}

fn ids(body: &serde_json::Value) -> Vec<String> {
    body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|d| d["event_id"].as_str().expect("event_id").to_owned())
        .collect()
}

#[tokio::test]
async fn managers_see_and_handle_only_their_workspaces_dead_letters() {
    let fake = FakeDeadLetters::with_two_workspaces();
    let app = app(fake.clone()).await;

    let mine = send(&app, get("/v1/dead-letters", Some(OWNER_TOKEN))).await;
    assert_eq!(mine.status, 200);
    let body = mine.json();
    assert_eq!(ids(&body), ["ev-mine-1", "ev-mine-2"]);
    assert_eq!(body["items"][0]["group"], "conversations.inbound");
    assert_eq!(body["items"][0]["attempts"], 6);
    assert_eq!(body["items"][0]["reason"], "contacts unavailable");
    assert_eq!(body["items"][0]["headers"]["traceparent"], "00-t-s-01");
    assert!(body["items"][0].get("workspace_id").is_none());
    let other = send(&app, get("/v1/dead-letters", Some(OTHER_TOKEN))).await;
    assert_eq!(ids(&other.json()), ["ev-other-1"]);

    // The other workspace's event named by this workspace's owner: 404,
    // untouched.
    let none = send(
        &app,
        json(
            "POST",
            "/v1/dead-letters/redrive",
            Some(OWNER_TOKEN),
            r#"{"event_ids":["ev-other-1"]}"#,
        ),
    )
    .await;
    assert_eq!(none.status, 404);
    assert_eq!(
        ids(&send(&app, get("/v1/dead-letters", Some(OTHER_TOKEN)))
            .await
            .json()),
        ["ev-other-1"]
    );

    let redriven = send(
        &app,
        json(
            "POST",
            "/v1/dead-letters/redrive",
            Some(OWNER_TOKEN),
            r#"{"group":"conversations.inbound","all":true}"#,
        ),
    )
    .await;
    assert_eq!(ids(&redriven.json()), ["ev-mine-1", "ev-mine-2"]);
    let discarded = send(
        &app,
        json(
            "POST",
            "/v1/dead-letters/discard",
            Some(OTHER_TOKEN),
            r#"{"event_ids":["ev-other-1"]}"#,
        ),
    )
    .await;
    assert_eq!(ids(&discarded.json()), ["ev-other-1"]);
    assert!(
        fake.workspaces()
            .iter()
            .all(|w| w == WORKSPACE || w == OTHER_WORKSPACE),
        "every call names the caller's workspace: {:?}",
        fake.workspaces()
    );
}

#[tokio::test]
async fn agents_are_refused_and_nothing_reaches_the_upstream() {
    let fake = FakeDeadLetters::with_two_workspaces();
    let app = app(fake.clone()).await;
    let listed = send(&app, get("/v1/dead-letters", Some(AGENT_TOKEN))).await;
    listed.problem(403);
    for path in ["/v1/dead-letters/redrive", "/v1/dead-letters/discard"] {
        let reply = send(
            &app,
            json("POST", path, Some(AGENT_TOKEN), r#"{"all":true}"#),
        )
        .await;
        reply.problem(403);
    }
    let anonymous = send(&app, get("/v1/dead-letters", None)).await;
    anonymous.problem(401);
    assert!(fake.workspaces().is_empty(), "{:?}", fake.workspaces());
    assert_eq!(fake.dead.lock().expect("lock").len(), 3);
}

#[tokio::test]
async fn bad_requests_are_refused_before_the_upstream() {
    let fake = FakeDeadLetters::with_two_workspaces();
    let app = app(fake.clone()).await;
    for (body, field) in [
        ("{}", "event_ids"),
        (r#"{"event_ids":[]}"#, "event_ids"),
        (r#"{"event_ids":["a"],"all":true}"#, "all"),
        (r#"{"event_ids":[" "]}"#, "event_ids"),
        (r#"{"group":"x","all":true,"workspace_id":"w"}"#, ""),
    ] {
        for path in ["/v1/dead-letters/redrive", "/v1/dead-letters/discard"] {
            let reply = send(&app, json("POST", path, Some(OWNER_TOKEN), body)).await;
            let problem = reply.problem(400);
            if !field.is_empty() {
                assert_eq!(problem["field"], field, "{body}: {problem}");
            }
        }
    }
    for query in ["limit=0", "limit=501", "limit=x", "workspace_id=w"] {
        let reply = send(
            &app,
            get(&format!("/v1/dead-letters?{query}"), Some(OWNER_TOKEN)),
        )
        .await;
        reply.problem(400);
    }
    assert!(fake.workspaces().is_empty(), "{:?}", fake.workspaces());
    // An unknown group, as the upstream says: a problem naming the field.
    let reply = send(&app, get("/v1/dead-letters?group=nope", Some(OWNER_TOKEN))).await;
    let problem = reply.problem(400);
    assert_eq!(problem["field"], "group");
    assert_eq!(fake.dead.lock().expect("lock").len(), 3);
}
