//! Changes to one conversation that race each other: closes against
//! closes, assigns against assigns, replies and inbound messages against a
//! close, retried replies against themselves. Each scenario runs many
//! rounds of truly concurrent calls (tokio tasks released together, over
//! gRPC and through the [`Inbox`]) and checks what any order of them must
//! leave: one close, one closing note, assignment events that chain into
//! the stored assignee, no message or assignment recorded into a
//! conversation after it closed.
//!
//! On PostgreSQL the calls run in concurrent transactions; on SQLite the
//! store has one connection, so they are serialised anyway and the same
//! checks hold.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use telenet_bus::{SharedBus, SubscribeSpec, Subscription};
use telenet_conversations::{CALLS, Config, Error, Inbox, MIGRATIONS, NAME};
use telenet_kit::grpc::GrpcChannel;
use telenet_kit::metrics::Metrics;
use telenet_proto::conversations::v1 as pb;
use telenet_proto::conversations::v1::conversations_client::ConversationsClient;
use telenet_proto::conversations::v1::members_client::MembersClient;
use telenet_proto::events::v1::{self as ev, event_envelope::Payload};
use telenet_runtime::testing::{TestService, TestSetup};
use telenet_runtime::{ServiceContext, Started};
use telenet_store::testing::Backend;
use telenet_store::{Db, events};
use tokio::sync::Barrier;
use tonic::Code;

/// Rounds of each race.
const ROUNDS: usize = 50;

telenet_store::on_both_backends!(
    concurrent_closes_close_once,
    concurrent_assigns_leave_one_assignee_with_events_in_order,
    replies_and_assigns_racing_a_close_come_before_it_or_are_refused,
    inbound_messages_racing_a_close_join_it_before_or_open_a_new_one,
    a_reply_retried_concurrently_is_stored_once,
);

struct World {
    svc: TestService,
    inbox: Inbox,
    conversations: ConversationsClient<GrpcChannel>,
    /// Every event on the bus, from before the service started, in the
    /// order it was published.
    events: Subscription,
    workspace_id: String,
    /// The owner, then three agents: all members of the workspace.
    users: Vec<String>,
}

async fn world(backend: Backend) -> World {
    let bus: SharedBus = Arc::new(telenet_bus::memory::MemoryBus::new(
        telenet_bus::RetryPolicy {
            delays: vec![Duration::from_millis(50); 3],
        },
    ));
    let events = bus
        .subscribe(SubscribeSpec::new("t", &["#"]))
        .await
        .expect("sub");
    let setup = TestSetup::new(NAME, Config::default())
        .calls(CALLS)
        .database(backend, MIGRATIONS)
        .bus(bus.clone());
    let svc = TestService::start(setup, |ctx| async move {
        let contacts = contacts(backend, &ctx).await?;
        let mut started = telenet_conversations::start(ctx).await?;
        started.grpc.extend(contacts.grpc);
        Ok(started)
    })
    .await;
    let inbox = Inbox::new(
        svc.db.clone().expect("db"),
        svc.channel(),
        Config::default(),
    );
    let mut members = MembersClient::new(svc.channel());
    let created = members
        .create_workspace(pb::CreateWorkspaceRequest {
            name: "Acme".into(),
            owner_name: "Olga".into(),
            owner_email: "olga@acme.test".into(),
        })
        .await
        .expect("workspace")
        .into_inner();
    let workspace_id = created.workspace.expect("workspace").id;
    let mut users = vec![created.owner.expect("owner").user_id];
    for name in ["ari", "bea", "cai"] {
        let user = members
            .create_member(pb::CreateMemberRequest {
                workspace_id: workspace_id.clone(),
                name: name.into(),
                email: format!("{name}@acme.test"),
                access_level: pb::AccessLevel::Agent as i32,
            })
            .await
            .expect("member")
            .into_inner()
            .user_id;
        users.push(user);
    }
    World {
        conversations: ConversationsClient::new(svc.channel()),
        inbox,
        events,
        workspace_id,
        users,
        svc,
    }
}

/// The contacts service on its own database, on the same backend.
async fn contacts(backend: Backend, ctx: &ServiceContext<Config>) -> anyhow::Result<Started> {
    let url = backend.url(&ctx.data_dir, telenet_contacts::NAME).await;
    let db = Db::connect(&url, telenet_contacts::NAME).await?;
    db.migrate(&telenet_contacts::MIGRATIONS).await?;
    let contacts_ctx = ServiceContext::new(
        telenet_contacts::NAME,
        telenet_contacts::Config::default(),
        ctx.bus.clone(),
        Metrics::new(),
    )
    .with_db(db);
    telenet_contacts::start(contacts_ctx).await
}

fn inbound(sender: &str, external_id: &str) -> telenet_conversations::domain::InboundMessage {
    ev::InboundMessageReceived {
        channel_id: "ch".into(),
        channel_kind: 1,
        webhook_id: format!("wh-{external_id}"),
        external_id: external_id.into(),
        sender: Some(ev::Sender {
            external_id: sender.into(),
            display_name: "Ana".into(),
        }),
        text: format!("text of {external_id}"),
        attachments: vec![],
        sent_at: None,
        ..Default::default()
    }
    .into()
}

/// A conversation's events as the bus carried them, in order.
type Timeline = Vec<Payload>;

impl World {
    /// Apply inbound message `external_id` of `sender` as the bus would,
    /// retrying as the bus does when another message opened the
    /// conversation at the same time.
    async fn receive(&self, sender: &str, external_id: &str) {
        receive(&self.inbox, &self.workspace_id, sender, external_id).await;
    }

    /// The conversations of contact `sender`, newest activity first.
    async fn conversations_of(&self, sender: &str) -> Vec<pb::Conversation> {
        self.conversations
            .clone()
            .list_conversations(pb::ListConversationsRequest {
                workspace_id: self.workspace_id.clone(),
                page: Some(telenet_proto::common::v1::PageRequest {
                    page_size: 200,
                    page_token: String::new(),
                }),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner()
            .conversations
            .into_iter()
            .filter(|c| c.contact_external_id == sender)
            .collect()
    }

    /// A new open conversation of a new contact `sender`, with one message.
    async fn open_conversation(&self, sender: &str) -> pb::Conversation {
        self.receive(sender, &format!("{sender}-first")).await;
        let mut found = self.conversations_of(sender).await;
        assert_eq!(found.len(), 1, "{found:?}");
        found.remove(0)
    }

    async fn get(&self, conversation_id: &str) -> pb::Conversation {
        self.conversations
            .clone()
            .get_conversation(pb::GetConversationRequest {
                workspace_id: self.workspace_id.clone(),
                conversation_id: conversation_id.into(),
            })
            .await
            .expect("get")
            .into_inner()
    }

    async fn messages(&self, conversation_id: &str) -> Vec<pb::Message> {
        self.conversations
            .clone()
            .list_messages(pb::ListMessagesRequest {
                workspace_id: self.workspace_id.clone(),
                conversation_id: conversation_id.into(),
                page: Some(telenet_proto::common::v1::PageRequest {
                    page_size: 200,
                    page_token: String::new(),
                }),
            })
            .await
            .expect("messages")
            .into_inner()
            .messages
    }

    fn close_request(&self, conversation_id: &str, caller: &str) -> pb::CloseConversationRequest {
        pb::CloseConversationRequest {
            workspace_id: self.workspace_id.clone(),
            conversation_id: conversation_id.into(),
            caller_user_id: caller.into(),
            closing_note: Some(pb::ClosingNote {
                category: format!("category of {caller}"),
                summary: format!("summary of {caller}"),
                closed_by_user_id: String::new(),
            }),
        }
    }

    fn assign_request(
        &self,
        conversation_id: &str,
        user: &str,
        caller: &str,
    ) -> pb::AssignConversationRequest {
        pb::AssignConversationRequest {
            workspace_id: self.workspace_id.clone(),
            conversation_id: conversation_id.into(),
            user_id: user.into(),
            caller_user_id: caller.into(),
        }
    }

    fn reply_request(&self, conversation_id: &str, author: &str) -> pb::SendMessageRequest {
        pb::SendMessageRequest {
            workspace_id: self.workspace_id.clone(),
            conversation_id: conversation_id.into(),
            author_user_id: author.into(),
            text: format!("reply of {author}"),
            attachments: vec![],
            client_message_id: String::new(),
        }
    }

    /// The events of each conversation in bus order, waiting until
    /// `done` holds for what arrived (or ten seconds passed), then taking
    /// whatever follows closely, so an event published twice is seen.
    async fn timelines(
        &mut self,
        done: impl Fn(&HashMap<String, Timeline>) -> bool,
    ) -> HashMap<String, Timeline> {
        let mut timelines: HashMap<String, Timeline> = HashMap::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut quiet_until = None;
        loop {
            if quiet_until.is_none() && done(&timelines) {
                quiet_until = Some(tokio::time::Instant::now() + Duration::from_millis(300));
            }
            let until = quiet_until.unwrap_or(deadline);
            let Ok(Some(delivery)) = tokio::time::timeout_at(until, self.events.next()).await
            else {
                break;
            };
            let envelope = events::from_bus(&delivery.event).expect("decodable event");
            delivery.ack().await.expect("ack");
            let payload = envelope.payload.expect("payload");
            if let Some(id) = conversation_of(&payload) {
                timelines.entry(id).or_default().push(payload);
            }
        }
        timelines
    }
}

async fn receive(inbox: &Inbox, workspace_id: &str, sender: &str, external_id: &str) {
    let received = inbound(sender, external_id);
    let event_id = format!("event-{external_id}");
    loop {
        match inbox
            .receive_message(&event_id, workspace_id, &received)
            .await
        {
            Ok(()) => return,
            Err(Error::OpenedConcurrently) => tokio::task::yield_now().await,
            Err(e) => panic!("receive {external_id}: {e}"),
        }
    }
}

/// The conversation an event is about.
fn conversation_of(payload: &Payload) -> Option<String> {
    match payload {
        Payload::ConversationOpened(e) => e.conversation.as_ref().map(|c| c.id.clone()),
        Payload::ConversationClosed(e) => e.conversation.as_ref().map(|c| c.id.clone()),
        Payload::ConversationAssigned(e) => Some(e.conversation_id.clone()),
        Payload::ConversationUnassigned(e) => Some(e.conversation_id.clone()),
        Payload::MessageCreated(e) => e.message.as_ref().map(|m| m.conversation_id.clone()),
        Payload::OutboundRequested(e) => Some(e.conversation_id.clone()),
        _ => None,
    }
}

fn count(timeline: &[Payload], kind: fn(&Payload) -> bool) -> usize {
    timeline.iter().filter(|p| kind(p)).count()
}

fn is_closed(p: &Payload) -> bool {
    matches!(p, Payload::ConversationClosed(_))
}

fn is_message(p: &Payload) -> bool {
    matches!(p, Payload::MessageCreated(_))
}

/// A call to run with others.
type Call<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// Run `calls` at once: each waits until all are ready, then goes.
async fn at_once<T: Send + 'static>(calls: Vec<Call<T>>) -> Vec<T> {
    let barrier = Arc::new(Barrier::new(calls.len()));
    let tasks: Vec<_> = calls
        .into_iter()
        .map(|call| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                call.await
            })
        })
        .collect();
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await.expect("task"));
    }
    results
}

/// What a call answered: `Ok`, or its refusal's code and message.
type Answer<T> = Result<T, (Code, String)>;

fn answer<T>(result: Result<tonic::Response<T>, tonic::Status>) -> Answer<T> {
    result
        .map(tonic::Response::into_inner)
        .map_err(|s| (s.code(), s.message().to_owned()))
}

const ALREADY_CLOSED: &str = "conversation is already closed";
const REPLY_TO_CLOSED: &str = "conversation is closed; the contact's next message opens a new one";
const ASSIGN_CLOSED: &str = "a closed conversation cannot be assigned";

/// Four users close the same assigned conversation at once: one close
/// wins, the others are refused as already closed, and the conversation
/// keeps the winner's note, with one `conversation.closed` and one
/// `conversation.unassigned` event.
async fn concurrent_closes_close_once(backend: Backend) {
    let mut w = world(backend).await;
    let mut winners = HashMap::new();
    for round in 0..ROUNDS {
        let conversation = w.open_conversation(&format!("+close-{round}")).await;
        let id = conversation.id.clone();
        w.conversations
            .clone()
            .assign_conversation(w.assign_request(&id, &w.users[1], &w.users[0]))
            .await
            .expect("assign");
        let calls: Vec<Call<(String, Answer<pb::Conversation>)>> = w
            .users
            .iter()
            .map(|user| {
                let (mut client, request) = (w.conversations.clone(), w.close_request(&id, user));
                let user = user.clone();
                Box::pin(async move { (user, answer(client.close_conversation(request).await)) })
                    as Call<_>
            })
            .collect();
        let answers = at_once(calls).await;
        let closed: Vec<_> = answers.iter().filter(|(_, a)| a.is_ok()).collect();
        assert_eq!(closed.len(), 1, "round {round}: {answers:?}");
        for (_, a) in answers.iter().filter(|(_, a)| a.is_err()) {
            assert_eq!(
                a.as_ref().err(),
                Some(&(Code::FailedPrecondition, ALREADY_CLOSED.to_owned())),
                "round {round}"
            );
        }
        let (winner, _) = closed[0];
        let stored = w.get(&id).await;
        assert_eq!(stored.status, pb::ConversationStatus::Closed as i32);
        assert!(stored.assignee_user_id.is_empty(), "round {round}");
        let note = stored.closing_note.expect("note");
        assert_eq!(
            (note.category, note.closed_by_user_id),
            (format!("category of {winner}"), winner.clone()),
            "round {round}: the note is the winner's"
        );
        winners.insert(id, winner.clone());
    }
    let timelines = w
        .timelines(|t| {
            winners
                .keys()
                .all(|id| t.get(id).is_some_and(|t| t.iter().any(is_closed)))
        })
        .await;
    for (id, winner) in &winners {
        let timeline = &timelines[id];
        let closes: Vec<_> = timeline
            .iter()
            .filter_map(|p| match p {
                Payload::ConversationClosed(e) => e.conversation.clone(),
                _ => None,
            })
            .collect();
        assert_eq!(closes.len(), 1, "{id}: {timeline:?}");
        let note = closes[0].closing_note.clone().expect("note");
        assert_eq!(&note.closed_by_user_id, winner);
        let unassigned = count(timeline, |p| {
            matches!(p, Payload::ConversationUnassigned(_))
        });
        assert_eq!(unassigned, 1, "{id}: {timeline:?}");
    }
    w.svc.stop().await;
}

/// Each of four users is given the same conversation at once while
/// another user unassigns it: every assignment answers with its own
/// assignee, the events form one chain (each one's previous assignee is
/// the one before it), and the chain ends at the stored assignee.
async fn concurrent_assigns_leave_one_assignee_with_events_in_order(backend: Backend) {
    let mut w = world(backend).await;
    let mut conversations = Vec::new();
    for round in 0..ROUNDS {
        let id = w.open_conversation(&format!("+assign-{round}")).await.id;
        let mut calls: Vec<Call<Answer<pb::Conversation>>> = w
            .users
            .iter()
            .map(|user| {
                let mut client = w.conversations.clone();
                let (request, user) = (w.assign_request(&id, user, &w.users[0]), user.clone());
                Box::pin(async move {
                    let assigned = answer(client.assign_conversation(request).await);
                    if let Ok(c) = &assigned {
                        assert_eq!(
                            c.assignee_user_id, user,
                            "an assignment answers with its own"
                        );
                    }
                    assigned
                }) as Call<_>
            })
            .collect();
        let mut client = w.conversations.clone();
        let unassign = pb::UnassignConversationRequest {
            workspace_id: w.workspace_id.clone(),
            conversation_id: id.clone(),
            caller_user_id: w.users[0].clone(),
        };
        calls.push(Box::pin(async move {
            answer(client.unassign_conversation(unassign).await)
        }));
        for a in at_once(calls).await {
            a.expect("assigning an open conversation succeeds");
        }
        conversations.push(id);
    }
    let timelines = w
        .timelines(|t| {
            conversations.iter().all(|id| {
                t.get(id).is_some_and(|t| {
                    count(t, |p| matches!(p, Payload::ConversationAssigned(_))) >= 4
                })
            })
        })
        .await;
    for id in &conversations {
        let mut assignee = String::new();
        for payload in &timelines[id] {
            match payload {
                Payload::ConversationAssigned(e) => {
                    assert_eq!(
                        e.previous_assignee_user_id, assignee,
                        "{id}: an assignment that did not see the one before it: {:?}",
                        timelines[id]
                    );
                    assert_ne!(e.assignee_user_id, assignee);
                    assignee = e.assignee_user_id.clone();
                }
                Payload::ConversationUnassigned(e) => {
                    assert_eq!(e.previous_assignee_user_id, assignee, "{id}");
                    assignee.clear();
                }
                _ => {}
            }
        }
        assert_eq!(w.get(id).await.assignee_user_id, assignee, "{id}");
    }
    w.svc.stop().await;
}

/// Two agents reply and a third is assigned while the owner closes: each
/// reply and the assignment either came before the close (it counts them)
/// or is refused after it; nothing lands in the closed conversation and it
/// stays unassigned.
async fn replies_and_assigns_racing_a_close_come_before_it_or_are_refused(backend: Backend) {
    let mut w = world(backend).await;
    let mut closed = Vec::new();
    for round in 0..ROUNDS {
        let id = w.open_conversation(&format!("+reply-{round}")).await.id;
        // Two replies, the close, the assignment: each answers with the
        // conversation as it left it.
        let mut calls: Vec<Call<Answer<pb::Conversation>>> = w.users[1..3]
            .iter()
            .map(|author| {
                let (mut client, request) = (w.conversations.clone(), w.reply_request(&id, author));
                Box::pin(async move {
                    answer(client.send_message(request).await)
                        .map(|sent| sent.conversation.expect("conversation"))
                }) as Call<_>
            })
            .collect();
        let (mut client, close) = (w.conversations.clone(), w.close_request(&id, &w.users[0]));
        calls.push(Box::pin(async move {
            answer(client.close_conversation(close).await)
        }));
        let (mut client, assign) = (
            w.conversations.clone(),
            w.assign_request(&id, &w.users[3], &w.users[0]),
        );
        calls.push(Box::pin(async move {
            answer(client.assign_conversation(assign).await)
        }));
        let mut answers = at_once(calls).await;
        let assigned = answers.pop().expect("assign");
        let at_close = answers
            .pop()
            .expect("close")
            .expect("the only close succeeds");
        let mut accepted = 0;
        for reply in answers {
            match reply {
                Ok(c) => {
                    accepted += 1;
                    assert_eq!(
                        c.status,
                        pb::ConversationStatus::Open as i32,
                        "round {round}: a reply accepted into a closed conversation"
                    );
                }
                Err(refused) => assert_eq!(
                    refused,
                    (Code::FailedPrecondition, REPLY_TO_CLOSED.to_owned()),
                    "round {round}"
                ),
            }
        }
        match &assigned {
            Ok(c) => assert_eq!(
                c.status,
                pb::ConversationStatus::Open as i32,
                "round {round}: an assignment accepted into a closed conversation"
            ),
            Err(refused) => assert_eq!(
                refused,
                &(Code::FailedPrecondition, ASSIGN_CLOSED.to_owned()),
                "round {round}"
            ),
        }
        let stored = w.get(&id).await;
        assert_eq!(stored.status, pb::ConversationStatus::Closed as i32);
        assert!(
            stored.assignee_user_id.is_empty(),
            "round {round}: a closed conversation with an assignee"
        );
        assert_eq!(
            (at_close.message_count, stored.message_count),
            (1 + accepted, 1 + accepted),
            "round {round}: the close counts every accepted reply, and nothing came after it"
        );
        assert_eq!(w.messages(&id).await.len(), 1 + accepted as usize);
        closed.push((id, accepted as usize));
    }
    let timelines = w
        .timelines(|t| {
            closed
                .iter()
                .all(|(id, _)| t.get(id).is_some_and(|t| t.iter().any(is_closed)))
        })
        .await;
    for (id, accepted) in &closed {
        let timeline = &timelines[id];
        let close = timeline.iter().position(is_closed).expect("closed");
        assert_eq!(
            &timeline[close + 1..],
            &[] as &[Payload],
            "{id}: events after the close"
        );
        assert_eq!(count(timeline, is_closed), 1, "{id}");
        assert_eq!(count(timeline, is_message), 1 + accepted, "{id}");
    }
    w.svc.stop().await;
}

/// A contact's messages arrive while an agent closes its conversation:
/// each joins the conversation before the close (which counts it) or
/// opens the contact's next conversation; none is recorded into the
/// closed one.
async fn inbound_messages_racing_a_close_join_it_before_or_open_a_new_one(backend: Backend) {
    let w = world(backend).await;
    for round in 0..ROUNDS {
        let sender = format!("+inbound-{round}");
        let id = w.open_conversation(&sender).await.id;
        let (mut client, close) = (w.conversations.clone(), w.close_request(&id, &w.users[0]));
        let mut calls: Vec<Call<Option<pb::Conversation>>> = (0..2)
            .map(|n| {
                let (inbox, ws, sender) = (w.inbox.clone(), w.workspace_id.clone(), sender.clone());
                Box::pin(async move {
                    receive(&inbox, &ws, &sender, &format!("{sender}-{n}")).await;
                    None
                }) as Call<_>
            })
            .collect();
        calls.push(Box::pin(async move {
            Some(
                client
                    .close_conversation(close)
                    .await
                    .expect("close")
                    .into_inner(),
            )
        }));
        let at_close = at_once(calls).await.pop().flatten().expect("closed");
        let all = w.conversations_of(&sender).await;
        let first = all.iter().find(|c| c.id == id).expect("first conversation");
        assert_eq!(first.status, pb::ConversationStatus::Closed as i32);
        assert_eq!(
            first.message_count, at_close.message_count,
            "round {round}: a message recorded into the closed conversation"
        );
        assert_eq!(w.messages(&id).await.len(), at_close.message_count as usize);
        let later: Vec<_> = all.iter().filter(|c| c.id != id).collect();
        let joined_before = at_close.message_count - 1;
        match later.as_slice() {
            [] => assert_eq!(joined_before, 2, "round {round}"),
            [next] => {
                assert_eq!(next.status, pb::ConversationStatus::Open as i32);
                assert_eq!(next.message_count + joined_before, 2, "round {round}");
            }
            more => panic!("round {round}: {} later conversations", more.len()),
        }
    }
    w.svc.stop().await;
}

/// The same reply retried at once (same author and client message id):
/// every attempt answers with the one message stored.
async fn a_reply_retried_concurrently_is_stored_once(backend: Backend) {
    let w = world(backend).await;
    for round in 0..ROUNDS {
        let id = w.open_conversation(&format!("+retry-{round}")).await.id;
        let request = pb::SendMessageRequest {
            client_message_id: format!("retry-{round}"),
            ..w.reply_request(&id, &w.users[1])
        };
        let calls: Vec<Call<Answer<pb::SendMessageResponse>>> = (0..4)
            .map(|_| {
                let (mut client, request) = (w.conversations.clone(), request.clone());
                Box::pin(async move { answer(client.send_message(request).await) }) as Call<_>
            })
            .collect();
        let ids: Vec<_> = at_once(calls)
            .await
            .into_iter()
            .map(|sent| {
                sent.unwrap_or_else(|e| panic!("round {round}: {e:?}"))
                    .message
                    .expect("message")
                    .id
            })
            .collect();
        assert!(ids.iter().all(|m| *m == ids[0]), "round {round}: {ids:?}");
        assert_eq!(w.messages(&id).await.len(), 2, "round {round}");
    }
    w.svc.stop().await;
}
