//! The `DeadLetters` operations service as the conversations process serves
//! it, over the process's in-memory bus: dead letters of two workspaces in
//! one group; a workspace's call lists, redrives and discards only its own;
//! a call for every workspace (empty workspace id) sees all; bad requests
//! are refused and change nothing.

use std::sync::Arc;
use std::time::Duration;

use telenet_bus::{Event, SharedBus, SubscribeSpec, Subscription};
use telenet_conversations::{CALLS, Config, MIGRATIONS, NAME};
use telenet_kit::grpc::GrpcChannel;
use telenet_proto::events::v1::ContactCreated;
use telenet_proto::events::v1::event_envelope::Payload;
use telenet_proto::operations::v1::dead_letters_client::DeadLettersClient;
use telenet_proto::operations::v1::{ActOnDeadLettersRequest, ListDeadLettersRequest};
use telenet_runtime::testing::{TestService, TestSetup};
use telenet_store::events;
use telenet_store::testing::Backend;
use tonic::Code;

const GROUP: &str = "ops-test";
const WS_A: &str = "ws-a";
const WS_B: &str = "ws-b";

/// An event of `workspace` on `ops.event`, bound by [`GROUP`] only.
fn event_of(workspace: &str) -> Event {
    let env = events::envelope(
        workspace,
        Payload::ContactCreated(ContactCreated::default()),
        None,
    );
    Event {
        routing_key: "ops.event".into(),
        ..events::to_bus(&env)
    }
}

struct World {
    svc: TestService,
    client: DeadLettersClient<GrpcChannel>,
    sub: Subscription,
    /// Dead letters: two of workspace A, one of workspace B, in this order.
    a1: Event,
    a2: Event,
    b1: Event,
}

async fn world() -> World {
    let bus: SharedBus = Arc::new(telenet_bus::memory::MemoryBus::new(Default::default()));
    let mut sub = bus
        .subscribe(SubscribeSpec::new(GROUP, &["ops.#"]))
        .await
        .expect("subscribe");
    let setup = TestSetup::new(NAME, Config::default())
        .calls(CALLS)
        .database(Backend::Sqlite, MIGRATIONS)
        .bus(bus.clone());
    let svc = TestService::start(setup, telenet_conversations::start).await;
    // Published in this order: A, B, A.
    let (a1, b1, a2) = (event_of(WS_A), event_of(WS_B), event_of(WS_A));
    bus.publish(&[a1.clone(), b1.clone(), a2.clone()])
        .await
        .expect("publish");
    for _ in 0..3 {
        let d = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .expect("in time")
            .expect("open");
        d.dead_letter("cannot handle").await.expect("dead-letter");
    }
    World {
        client: DeadLettersClient::new(svc.channel()),
        svc,
        sub,
        a1,
        a2,
        b1,
    }
}

fn list(workspace: &str) -> ListDeadLettersRequest {
    ListDeadLettersRequest {
        workspace_id: workspace.into(),
        groups: vec![GROUP.into()],
        limit: 0,
    }
}

fn act(workspace: &str, ids: &[&str], all: bool) -> ActOnDeadLettersRequest {
    ActOnDeadLettersRequest {
        workspace_id: workspace.into(),
        groups: vec![GROUP.into()],
        event_ids: ids.iter().map(|id| (*id).to_owned()).collect(),
        all,
    }
}

async fn listed(w: &mut World, workspace: &str) -> Vec<String> {
    w.client
        .list_dead_letters(list(workspace))
        .await
        .expect("list")
        .into_inner()
        .dead_letters
        .into_iter()
        .map(|d| d.event_id)
        .collect()
}

#[tokio::test]
async fn a_workspace_sees_and_acts_on_its_own_dead_letters_only() {
    let mut w = world().await;
    let (a1, a2, b1) = (w.a1.id.clone(), w.a2.id.clone(), w.b1.id.clone());

    let everything = w
        .client
        .list_dead_letters(list(""))
        .await
        .expect("list all")
        .into_inner()
        .dead_letters;
    assert_eq!(
        everything
            .iter()
            .map(|d| d.event_id.clone())
            .collect::<Vec<_>>(),
        vec![a1.clone(), b1.clone(), a2.clone()]
    );
    let first = &everything[0];
    assert_eq!(
        (
            first.workspace_id.as_str(),
            first.group.as_str(),
            first.routing_key.as_str(),
            first.reason.as_str(),
            first.attempts
        ),
        (WS_A, GROUP, "ops.event", "cannot handle", 1)
    );
    assert_eq!(listed(&mut w, WS_A).await, vec![a1.clone(), a2.clone()]);
    assert_eq!(listed(&mut w, WS_B).await, vec![b1.clone()]);

    // B's dead letter named by a call for A: NOT_FOUND, and nothing is
    // touched, not even A's own named beside it.
    for ids in [vec![b1.as_str()], vec![a1.as_str(), b1.as_str()]] {
        let status = w
            .client
            .discard_dead_letters(act(WS_A, &ids, false))
            .await
            .expect_err("another workspace's dead letter");
        assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
        assert!(status.message().contains(&b1), "{}", status.message());
        assert!(!status.message().contains(&a1), "{}", status.message());
    }
    assert_eq!(listed(&mut w, WS_B).await, vec![b1.clone()]);
    assert_eq!(listed(&mut w, WS_A).await, vec![a1.clone(), a2.clone()]);

    // Redrive all of A's: both back in the group's queue, B's stays.
    let moved = w
        .client
        .redrive_dead_letters(act(WS_A, &[], true))
        .await
        .expect("redrive")
        .into_inner()
        .dead_letters;
    assert_eq!(
        moved.iter().map(|d| d.event_id.clone()).collect::<Vec<_>>(),
        vec![a1.clone(), a2.clone()]
    );
    for expected in [&w.a1, &w.a2] {
        let d = tokio::time::timeout(Duration::from_secs(5), w.sub.next())
            .await
            .expect("redriven in time")
            .expect("open");
        assert_eq!(&d.event, expected);
        assert_eq!(d.attempt, 1);
        d.ack().await.expect("ack");
    }
    assert!(listed(&mut w, WS_A).await.is_empty());
    assert_eq!(listed(&mut w, "").await, vec![b1.clone()]);

    // B discards its own by id.
    let gone = w
        .client
        .discard_dead_letters(act(WS_B, &[&b1], false))
        .await
        .expect("discard")
        .into_inner()
        .dead_letters;
    assert_eq!(gone.len(), 1);
    assert!(listed(&mut w, "").await.is_empty());
    w.svc.stop().await;
}

#[tokio::test]
async fn bad_requests_are_refused_and_change_nothing() {
    let mut w = world().await;
    for (request, field) in [
        (act(WS_A, &[], false), "event_ids"),
        (act(WS_A, &["x"], true), "all"),
    ] {
        let status = w
            .client
            .redrive_dead_letters(request.clone())
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with(field), "{}", status.message());
        let status = w
            .client
            .discard_dead_letters(request)
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument);
    }
    let status = w
        .client
        .list_dead_letters(ListDeadLettersRequest {
            workspace_id: WS_A.into(),
            groups: vec!["no-such-group".into()],
            limit: 0,
        })
        .await
        .expect_err("unknown group");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("no-such-group"),
        "{}",
        status.message()
    );
    assert!(status.message().contains(GROUP), "{}", status.message());
    assert_eq!(listed(&mut w, "").await.len(), 3, "nothing changed");
    w.svc.stop().await;
}
