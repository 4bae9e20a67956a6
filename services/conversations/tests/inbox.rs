//! The inbox rules of PRODUCT.md on both backends, with the service started
//! as a process starts it, the real contacts service over gRPC and the
//! in-memory bus: a new contact gets an open unassigned conversation; a
//! known contact's messages join it; a reply assigns the replier; closing
//! unassigns and leaves the queue; the next message opens a new
//! conversation; statuses only move forward; events are idempotent;
//! workspaces are isolated.
//!
//! Agents' operations go through the gRPC API; what the bus feeds the
//! service (inbound messages, statuses, attachment outcomes) is applied
//! through the [`Inbox`] on the service's database, with chosen event ids.

use std::sync::Arc;
use std::time::Duration;

use telenet_bus::{SharedBus, SubscribeSpec, Subscription};
use telenet_conversations::domain::StatusTarget;
use telenet_conversations::{CALLS, Config, Inbox, MIGRATIONS, NAME};
use telenet_kit::grpc::GrpcChannel;
use telenet_kit::metrics::Metrics;
use telenet_proto::conversations::v1 as pb;
use telenet_proto::conversations::v1::conversations_client::ConversationsClient;
use telenet_proto::conversations::v1::members_client::MembersClient;
use telenet_proto::dispatch::v1::DeliveryState;
use telenet_proto::events::v1::{self as ev, event_envelope::Payload};
use telenet_runtime::testing::{TestService, TestSetup};
use telenet_runtime::{ServiceContext, Started};
use telenet_store::consumer::HandleError;
use telenet_store::testing::Backend;
use telenet_store::{Db, events};

struct World {
    svc: TestService,
    /// The inbox on the service's database, for what the bus feeds it.
    inbox: Inbox,
    conversations: ConversationsClient<GrpcChannel>,
    members: MembersClient<GrpcChannel>,
    /// Every event on the bus, from before the service started.
    events: Subscription,
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
        // Served on the same port, which is where `contacts` points.
        started.grpc.extend(contacts.grpc);
        Ok(started)
    })
    .await;
    let inbox = Inbox::new(
        svc.db.clone().expect("db"),
        svc.channel(),
        Config::default(),
    );
    World {
        inbox,
        conversations: ConversationsClient::new(svc.channel()),
        members: MembersClient::new(svc.channel()),
        events,
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

fn inbound(channel: &str, ext_id: &str, sender: &str, text: &str) -> ev::InboundMessageReceived {
    ev::InboundMessageReceived {
        channel_id: channel.into(),
        channel_kind: 1,
        webhook_id: format!("wh-{ext_id}"),
        external_id: ext_id.into(),
        sender: Some(ev::Sender {
            external_id: sender.into(),
            display_name: "Ana".into(),
        }),
        text: text.into(),
        attachments: vec![],
        sent_at: None,
        ..Default::default()
    }
}

impl World {
    async fn receive(&self, event_id: &str, ws: &str, message: ev::InboundMessageReceived) {
        self.inbox
            .receive_message(event_id, ws, &message.into())
            .await
            .expect("receive");
    }

    async fn list(
        &self,
        ws: &str,
        user: &str,
        status: pb::ConversationStatus,
        assignee: pb::AssigneeFilter,
    ) -> Vec<pb::Conversation> {
        self.conversations
            .clone()
            .list_conversations(pb::ListConversationsRequest {
                workspace_id: ws.into(),
                caller_user_id: user.into(),
                status: status as i32,
                assignee: assignee as i32,
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner()
            .conversations
    }

    async fn messages(&self, ws: &str, conversation_id: &str) -> Vec<pb::Message> {
        self.conversations
            .clone()
            .list_messages(pb::ListMessagesRequest {
                workspace_id: ws.into(),
                conversation_id: conversation_id.into(),
                page: None,
            })
            .await
            .expect("messages")
            .into_inner()
            .messages
    }

    async fn send(
        &self,
        request: pb::SendMessageRequest,
    ) -> Result<pb::SendMessageResponse, tonic::Status> {
        self.conversations
            .clone()
            .send_message(request)
            .await
            .map(tonic::Response::into_inner)
    }

    async fn workspace(&self, name: &str, owner: &str, email: &str) -> pb::CreateWorkspaceResponse {
        self.members
            .clone()
            .create_workspace(pb::CreateWorkspaceRequest {
                name: name.into(),
                owner_name: owner.into(),
                owner_email: email.into(),
            })
            .await
            .expect("workspace")
            .into_inner()
    }

    /// The routing keys of the events published so far, waiting until
    /// `expected` (key, at least how many) have all arrived.
    async fn published(&mut self, expected: &[(&str, usize)]) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut keys: Vec<String> = Vec::new();
        let complete = |keys: &[String]| {
            expected
                .iter()
                .all(|(key, n)| keys.iter().filter(|k| k == key).count() >= *n)
        };
        while !complete(&keys) && tokio::time::Instant::now() < deadline {
            if let Ok(Some(d)) =
                tokio::time::timeout(Duration::from_millis(200), self.events.next()).await
            {
                keys.push(d.event.routing_key.clone());
                d.ack().await.expect("ack");
            }
        }
        // And whatever follows closely.
        while let Ok(Some(d)) =
            tokio::time::timeout(Duration::from_millis(200), self.events.next()).await
        {
            keys.push(d.event.routing_key.clone());
            d.ack().await.expect("ack");
        }
        keys
    }
}

async fn rules(mut w: World) {
    let ws = w.workspace("Acme", "Olga", "olga@acme.test").await;
    let wsid = ws.workspace.as_ref().expect("ws").id.clone();
    let owner = ws.owner.as_ref().expect("owner").user_id.clone();
    let mut members = w.members.clone();
    assert_eq!(
        members
            .authenticate(pb::AuthenticateRequest {
                token: ws.token.clone()
            })
            .await
            .expect("auth")
            .into_inner()
            .user_id,
        owner
    );
    assert!(
        members
            .authenticate(pb::AuthenticateRequest {
                token: "tlnt_nope".into()
            })
            .await
            .is_err()
    );
    let agent = members
        .create_member(pb::CreateMemberRequest {
            workspace_id: wsid.clone(),
            name: "Ari".into(),
            email: "ari@acme.test".into(),
            access_level: pb::AccessLevel::Agent as i32,
        })
        .await
        .expect("member")
        .into_inner()
        .user_id;
    let dup = members
        .create_member(pb::CreateMemberRequest {
            workspace_id: wsid.clone(),
            name: "Ari 2".into(),
            email: "ARI@acme.test".into(),
            access_level: pb::AccessLevel::Agent as i32,
        })
        .await
        .expect_err("duplicate email");
    assert_eq!(dup.code(), tonic::Code::AlreadyExists);

    // 1. A new contact: an open, unassigned conversation.
    w.receive("e1", &wsid, inbound("ch", "m1", "+34", "hola"))
        .await;
    let open = w
        .list(
            &wsid,
            &owner,
            pb::ConversationStatus::Open,
            pb::AssigneeFilter::Unassigned,
        )
        .await;
    assert_eq!(open.len(), 1);
    let conv = open[0].clone();
    assert!(conv.assignee_user_id.is_empty());
    // Same event again, and the same provider message under another event id: one message.
    w.receive("e1", &wsid, inbound("ch", "m1", "+34", "hola"))
        .await;
    w.receive("e1b", &wsid, inbound("ch", "m1", "+34", "hola"))
        .await;
    // A known contact: same conversation.
    w.receive("e2", &wsid, inbound("ch", "m2", "+34", "¿hay alguien? 👋"))
        .await;
    let msgs = w.messages(&wsid, &conv.id).await;
    assert_eq!(
        msgs.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
        vec!["hola", "¿hay alguien? 👋"]
    );

    // 2. Replying assigns the replier.
    let sent = w
        .send(pb::SendMessageRequest {
            workspace_id: wsid.clone(),
            conversation_id: conv.id.clone(),
            author_user_id: agent.clone(),
            text: "¡Hola!".into(),
            attachments: vec![],
            client_message_id: "c-1".into(),
        })
        .await
        .expect("send");
    let msg = sent.message.expect("message");
    assert_eq!(msg.status, pb::MessageStatus::Pending as i32);
    assert_eq!(sent.conversation.expect("conv").assignee_user_id, agent);
    // A retried send with the same client id returns the same message.
    let again = w
        .send(pb::SendMessageRequest {
            workspace_id: wsid.clone(),
            conversation_id: conv.id.clone(),
            author_user_id: agent.clone(),
            text: "¡Hola!".into(),
            attachments: vec![],
            client_message_id: "c-1".into(),
        })
        .await
        .expect("send again");
    assert_eq!(again.message.expect("message").id, msg.id);
    // The owner replying does not take it over.
    let by_owner = w
        .send(pb::SendMessageRequest {
            workspace_id: wsid.clone(),
            conversation_id: conv.id.clone(),
            author_user_id: owner.clone(),
            text: "Te atiende Ari".into(),
            ..Default::default()
        })
        .await
        .expect("send");
    assert_eq!(by_owner.conversation.expect("conv").assignee_user_id, agent);
    assert_eq!(
        w.list(
            &wsid,
            &agent,
            pb::ConversationStatus::Open,
            pb::AssigneeFilter::Me
        )
        .await
        .len(),
        1
    );
    assert!(
        w.list(
            &wsid,
            &owner,
            pb::ConversationStatus::Open,
            pb::AssigneeFilter::Me
        )
        .await
        .is_empty()
    );

    // Statuses move forward only, by message id (dispatch) or provider id (channel).
    w.inbox
        .apply_status(
            "s1",
            &wsid,
            StatusTarget::MessageId(&msg.id),
            DeliveryState::Sent,
            "prov-1",
            "",
        )
        .await
        .expect("sent");
    w.inbox
        .apply_status(
            "s2",
            &wsid,
            StatusTarget::External {
                channel_id: "ch",
                external_id: "prov-1",
            },
            DeliveryState::Read,
            "",
            "",
        )
        .await
        .expect("read");
    w.inbox
        .apply_status(
            "s3",
            &wsid,
            StatusTarget::External {
                channel_id: "ch",
                external_id: "prov-1",
            },
            DeliveryState::Delivered,
            "",
            "",
        )
        .await
        .expect("late delivered");
    let msgs = w.messages(&wsid, &conv.id).await;
    let reply = msgs.iter().find(|m| m.id == msg.id).expect("reply");
    assert_eq!(reply.status, pb::MessageStatus::Read as i32);
    assert_eq!(reply.external_id, "prov-1");

    // Manual assignment and its validation.
    let mut conversations = w.conversations.clone();
    let c = conversations
        .assign_conversation(pb::AssignConversationRequest {
            workspace_id: wsid.clone(),
            conversation_id: conv.id.clone(),
            user_id: owner.clone(),
            caller_user_id: owner.clone(),
        })
        .await
        .expect("assign")
        .into_inner();
    assert_eq!(c.assignee_user_id, owner);
    let err = conversations
        .assign_conversation(pb::AssignConversationRequest {
            workspace_id: wsid.clone(),
            conversation_id: conv.id.clone(),
            user_id: "stranger".into(),
            caller_user_id: owner.clone(),
        })
        .await
        .expect_err("not a member");
    assert_eq!(err.code(), tonic::Code::NotFound);
    let c = conversations
        .unassign_conversation(pb::UnassignConversationRequest {
            workspace_id: wsid.clone(),
            conversation_id: conv.id.clone(),
            caller_user_id: owner.clone(),
        })
        .await
        .expect("unassign")
        .into_inner();
    assert!(c.assignee_user_id.is_empty());
    conversations
        .assign_conversation(pb::AssignConversationRequest {
            workspace_id: wsid.clone(),
            conversation_id: conv.id.clone(),
            user_id: agent.clone(),
            caller_user_id: owner.clone(),
        })
        .await
        .expect("assign");

    // 3. Closing: unassigned from everyone, out of the open queue, with the note.
    let closed = conversations
        .close_conversation(pb::CloseConversationRequest {
            workspace_id: wsid.clone(),
            conversation_id: conv.id.clone(),
            caller_user_id: agent.clone(),
            closing_note: Some(pb::ClosingNote {
                category: "billing".into(),
                summary: "invoice resent".into(),
                closed_by_user_id: String::new(),
            }),
        })
        .await
        .expect("close")
        .into_inner();
    assert_eq!(closed.status, pb::ConversationStatus::Closed as i32);
    assert!(closed.assignee_user_id.is_empty());
    let note = closed.closing_note.expect("note");
    assert_eq!(
        (
            note.category.as_str(),
            note.summary.as_str(),
            note.closed_by_user_id.as_str()
        ),
        ("billing", "invoice resent", agent.as_str())
    );
    assert!(
        w.list(
            &wsid,
            &owner,
            pb::ConversationStatus::Open,
            pb::AssigneeFilter::Any
        )
        .await
        .is_empty()
    );
    let err = w
        .send(pb::SendMessageRequest {
            workspace_id: wsid.clone(),
            conversation_id: conv.id.clone(),
            author_user_id: agent.clone(),
            text: "x".into(),
            ..Default::default()
        })
        .await
        .expect_err("closed");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);

    // 4. The next message opens a new unassigned conversation.
    w.receive("e3", &wsid, inbound("ch", "m3", "+34", "otra cosa"))
        .await;
    let open = w
        .list(
            &wsid,
            &owner,
            pb::ConversationStatus::Open,
            pb::AssigneeFilter::Unassigned,
        )
        .await;
    assert_eq!(open.len(), 1);
    assert_ne!(open[0].id, conv.id);
    assert_eq!(open[0].contact_id, conv.contact_id);
    assert_eq!(
        w.list(
            &wsid,
            &owner,
            pb::ConversationStatus::Closed,
            pb::AssigneeFilter::Any
        )
        .await
        .len(),
        1
    );

    // Tenancy: another workspace sees nothing of this one.
    let other = w.workspace("Other", "Oz", "oz@other.test").await;
    let other_ws = other.workspace.expect("ws").id;
    let err = conversations
        .get_conversation(pb::GetConversationRequest {
            workspace_id: other_ws.clone(),
            conversation_id: conv.id.clone(),
        })
        .await
        .expect_err("isolated");
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(
        w.list(
            &other_ws,
            "",
            pb::ConversationStatus::Unspecified,
            pb::AssigneeFilter::Any
        )
        .await
        .is_empty()
    );
    let err = w
        .send(pb::SendMessageRequest {
            workspace_id: other_ws.clone(),
            conversation_id: open[0].id.clone(),
            author_user_id: other.owner.expect("o").user_id,
            text: "x".into(),
            ..Default::default()
        })
        .await
        .expect_err("isolated");
    assert_eq!(err.code(), tonic::Code::NotFound);

    // Every change left its events in the outbox, and the relay published them.
    let keys = w
        .published(&[
            ("conversation.opened", 2),
            ("message.created", 1),
            ("conversation.assigned", 1),
            ("outbound.requested", 2),
            ("message.status", 1),
            ("conversation.unassigned", 1),
            ("conversation.closed", 1),
        ])
        .await;
    for key in [
        "conversation.opened",
        "message.created",
        "conversation.assigned",
        "outbound.requested",
        "message.status",
        "conversation.unassigned",
        "conversation.closed",
    ] {
        assert!(keys.iter().any(|k| k == key), "missing {key} in {keys:?}");
    }
    assert_eq!(
        keys.iter().filter(|k| *k == "conversation.opened").count(),
        2
    );
    assert_eq!(
        keys.iter().filter(|k| *k == "outbound.requested").count(),
        2
    );
    w.svc.stop().await;
}

#[tokio::test]
async fn inbox_rules_on_sqlite() {
    rules(world(Backend::Sqlite).await).await;
}

#[tokio::test]
async fn inbox_rules_on_postgres() {
    rules(world(Backend::Postgres).await).await;
}

#[tokio::test]
async fn consumers_apply_bus_events() {
    let w = world(Backend::Sqlite).await;
    let ws = w
        .workspace("A", "O", "o@a.test")
        .await
        .workspace
        .expect("ws")
        .id;
    let env = events::envelope(
        &ws,
        Payload::InboundMessageReceived(inbound("ch", "m1", "+1", "hi")),
        None,
    );
    // Published twice (a redelivery): still one message.
    w.svc
        .bus
        .publish(&[events::to_bus(&env), events::to_bus(&env)])
        .await
        .expect("publish");
    let mut found = Vec::new();
    for _ in 0..100 {
        found = w
            .list(
                &ws,
                "",
                pb::ConversationStatus::Open,
                pb::AssigneeFilter::Any,
            )
            .await;
        if !found.is_empty() && found[0].message_count == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(found.len(), 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let again = w
        .list(
            &ws,
            "",
            pb::ConversationStatus::Open,
            pb::AssigneeFilter::Any,
        )
        .await;
    assert_eq!(again[0].message_count, 1);
    w.svc.stop().await;
}

/// A contact's first message failed its first try (contacts was down,
/// say) and went to a retry queue while the second went through: the
/// conversation still lists them in the order the contact sent them, the
/// order ingress accepted them in.
#[tokio::test]
async fn a_contacts_messages_keep_their_order_when_applied_out_of_it() {
    let w = world(Backend::Sqlite).await;
    let ws = w
        .workspace("A", "O", "o@a.test")
        .await
        .workspace
        .expect("ws")
        .id;
    let envelope = |ext_id: &str, text: &str| {
        events::envelope(
            &ws,
            Payload::InboundMessageReceived(inbound("ch", ext_id, "+1", text)),
            None,
        )
    };
    let first = envelope("m1", "first");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = envelope("m2", "second");
    let applied = |n: usize| {
        let w = &w;
        let ws = ws.clone();
        async move {
            for _ in 0..200 {
                let found = w
                    .list(
                        &ws,
                        "",
                        pb::ConversationStatus::Open,
                        pb::AssigneeFilter::Any,
                    )
                    .await;
                if let Some(c) = found.first()
                    && c.message_count as usize == n
                {
                    return c.id.clone();
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            panic!("{n} messages never applied");
        }
    };
    // The second is applied first, the first after it (its retry).
    w.svc
        .bus
        .publish(&[events::to_bus(&second)])
        .await
        .expect("publish");
    applied(1).await;
    w.svc
        .bus
        .publish(&[events::to_bus(&first)])
        .await
        .expect("publish");
    let conversation = applied(2).await;
    let texts: Vec<_> = w
        .messages(&ws, &conversation)
        .await
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(texts, ["first", "second"]);
    w.svc.stop().await;
}

#[tokio::test]
async fn attachment_outcomes_update_the_stored_message() {
    use telenet_proto::common::v1::{Attachment, AttachmentKind, AttachmentState};
    let w = world(Backend::Sqlite).await;
    let ws = w
        .workspace("A", "O", "o@a.test")
        .await
        .workspace
        .expect("ws")
        .id;
    let announced = |n: u32| Attachment {
        kind: AttachmentKind::Voice as i32,
        url: format!("https://cdn.example/{n}.ogg"),
        mime_type: "audio/ogg".into(),
        state: AttachmentState::Pending as i32,
        ..Default::default()
    };
    let mut msg = inbound("ch", "m1", "+1", "");
    msg.attachments = vec![announced(0), announced(1)];
    w.receive("ev-in", &ws, msg).await;
    let messages = || async {
        let conv = w
            .list(
                &ws,
                "",
                pb::ConversationStatus::Open,
                pb::AssigneeFilter::Any,
            )
            .await;
        w.messages(&ws, &conv[0].id).await
    };
    let stored = messages().await;
    let message_id = stored[0].id.clone();
    assert_eq!(
        stored[0].attachments[0].state,
        AttachmentState::Pending as i32
    );

    let ready = Attachment {
        state: AttachmentState::Ready as i32,
        blob_id: "ab".repeat(32),
        size_bytes: 1234,
        mime_type: "audio/ogg; codecs=opus".into(),
        ..announced(0)
    };
    let failed = Attachment {
        state: AttachmentState::Failed as i32,
        error: "the provider answered HTTP 404 Not Found".into(),
        ..announced(1)
    };
    let inbox = &w.inbox;
    inbox
        .apply_attachment("ev-1", &ws, &message_id, 0, &ready)
        .await
        .expect("ready");
    inbox
        .apply_attachment("ev-2", &ws, &message_id, 1, &failed)
        .await
        .expect("failed");
    // A redelivered event changes nothing, even with other content.
    inbox
        .apply_attachment("ev-2", &ws, &message_id, 1, &ready)
        .await
        .expect("redelivery");
    // A late failure never undoes a stored attachment.
    inbox
        .apply_attachment("ev-3", &ws, &message_id, 0, &failed)
        .await
        .expect("late failure");

    let after = &messages().await[0].attachments;
    assert_eq!(after[0].state, AttachmentState::Ready as i32);
    assert_eq!(after[0].blob_id, "ab".repeat(32));
    assert_eq!(after[0].size_bytes, 1234);
    assert_eq!(after[0].mime_type, "audio/ogg; codecs=opus");
    assert_eq!(after[0].url, "https://cdn.example/0.ogg");
    assert_eq!(after[1].state, AttachmentState::Failed as i32);
    assert_eq!(after[1].error, "the provider answered HTTP 404 Not Found");
    assert!(after[1].blob_id.is_empty());

    // Unknown message or attachment: never applicable, dead-lettered.
    for (message, index) in [(message_id.as_str(), 7), ("no-such-message", 0)] {
        let err = inbox
            .apply_attachment(
                &format!("ev-{message}-{index}"),
                &ws,
                message,
                index,
                &ready,
            )
            .await
            .expect_err("not applicable");
        let err = HandleError::from(err);
        assert!(matches!(err, HandleError::Permanent(_)), "{err}");
    }
    // Another workspace cannot touch the message.
    let err = inbox
        .apply_attachment("ev-other", "other-ws", &message_id, 1, &ready)
        .await
        .expect_err("other workspace");
    assert!(matches!(HandleError::from(err), HandleError::Permanent(_)));
    assert_eq!(
        messages().await[0].attachments[1].state,
        AttachmentState::Failed as i32
    );
    w.svc.stop().await;
}

/// Outcomes of one message's attachments arrive together; on PostgreSQL
/// they are applied by concurrent transactions, and none may be lost.
#[tokio::test]
async fn concurrent_attachment_outcomes_are_all_kept_on_postgres() {
    use telenet_proto::common::v1::{Attachment, AttachmentState};
    let w = world(Backend::Postgres).await;
    let ws = w
        .workspace("A", "O", "o@a.test")
        .await
        .workspace
        .expect("ws")
        .id;
    const N: u32 = 12;
    let mut msg = inbound("ch", "m1", "+1", "");
    msg.attachments = (0..N)
        .map(|n| Attachment {
            url: format!("https://cdn.example/{n}"),
            state: AttachmentState::Pending as i32,
            ..Default::default()
        })
        .collect();
    w.receive("ev-in", &ws, msg).await;
    let conv = w
        .list(
            &ws,
            "",
            pb::ConversationStatus::Open,
            pb::AssigneeFilter::Any,
        )
        .await;
    let message_id = w.messages(&ws, &conv[0].id).await[0].id.clone();
    let applied = (0..N).map(|n| {
        let (inbox, ws, message_id) = (w.inbox.clone(), ws.clone(), message_id.clone());
        tokio::spawn(async move {
            let ready = Attachment {
                state: AttachmentState::Ready as i32,
                blob_id: format!("{n:064x}"),
                ..Default::default()
            };
            inbox
                .apply_attachment(&format!("ev-{n}"), &ws, &message_id, n, &ready)
                .await
        })
    });
    for result in futures::future::join_all(applied).await {
        result.expect("join").expect("applied");
    }
    let after = &w.messages(&ws, &conv[0].id).await[0].attachments;
    for (n, a) in after.iter().enumerate() {
        assert_eq!(
            a.state,
            AttachmentState::Ready as i32,
            "attachment {n} lost"
        );
        assert_eq!(a.blob_id, format!("{n:064x}"));
    }
    w.svc.stop().await;
}

/// One provider message delivered twice under two event ids (ingress
/// published it, died before recording it, and published the provider's
/// retry again), both copies applied at once: the loser is retried, never
/// dead-lettered, and the message is stored once.
#[tokio::test]
async fn a_message_delivered_twice_at_once_is_stored_once_and_never_dead_lettered_on_postgres() {
    let w = world(Backend::Postgres).await;
    let ws = w
        .workspace("A", "O", "o@a.test")
        .await
        .workspace
        .expect("ws")
        .id;
    // The contact's conversation exists: the copies race on the message.
    w.receive("ev-first", &ws, inbound("ch", "first", "+1", "first"))
        .await;
    const ROUNDS: usize = 30;
    let mut retried = 0;
    for round in 0..ROUNDS {
        let copies = ["a", "b"].map(|copy| {
            let (inbox, ws) = (w.inbox.clone(), ws.clone());
            let message = inbound("ch", &format!("dup-{round}"), "+1", "twice");
            tokio::spawn(async move {
                let event_id = format!("ev-{round}-{copy}");
                let outcome = inbox.receive_message(&event_id, &ws, &message.into()).await;
                (event_id, outcome)
            })
        });
        for (event_id, outcome) in futures::future::join_all(copies)
            .await
            .into_iter()
            .flatten()
        {
            let Err(e) = outcome else { continue };
            let handled = HandleError::from(e);
            assert!(
                !matches!(handled, HandleError::Permanent(_)),
                "round {round}: {event_id} would be dead-lettered: {handled}"
            );
            // The bus brings it back: it finds the message stored.
            retried += 1;
            let again = inbound("ch", &format!("dup-{round}"), "+1", "twice");
            w.receive(&event_id, &ws, again).await;
        }
    }
    let conversation = w
        .list(
            &ws,
            "",
            pb::ConversationStatus::Open,
            pb::AssigneeFilter::Any,
        )
        .await;
    let texts: Vec<_> = w
        .messages(&ws, &conversation[0].id)
        .await
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(texts.len(), 1 + ROUNDS, "one message per round: {texts:?}");
    eprintln!("{retried} of {ROUNDS} rounds raced");
    w.svc.stop().await;
}

/// What callers read on the wire for each kind of refusal: codes and
/// messages are part of the API.
#[tokio::test]
async fn refusals_keep_their_codes_and_messages_over_grpc() {
    use tonic::Code;
    let w = world(Backend::Sqlite).await;
    let ws = w.workspace("Acme", "Olga", "olga@acme.test").await;
    let wsid = ws.workspace.expect("ws").id;
    let owner = ws.owner.expect("owner").user_id;
    let mut conversations = w.conversations.clone();
    let mut members = w.members.clone();
    let expect = |result: Result<_, tonic::Status>, code: Code, message: &str| {
        let status = result.expect_err(message);
        assert_eq!((status.code(), status.message()), (code, message));
    };

    expect(
        conversations
            .list_conversations(pb::ListConversationsRequest::default())
            .await
            .map(drop),
        Code::InvalidArgument,
        "workspace_id is required",
    );
    expect(
        conversations
            .list_conversations(pb::ListConversationsRequest {
                workspace_id: wsid.clone(),
                page: Some(telenet_proto::common::v1::PageRequest {
                    page_size: 0,
                    page_token: "!".into(),
                }),
                ..Default::default()
            })
            .await
            .map(drop),
        Code::InvalidArgument,
        "invalid page token",
    );
    expect(
        conversations
            .list_conversations(pb::ListConversationsRequest {
                workspace_id: wsid.clone(),
                assignee: pb::AssigneeFilter::Me as i32,
                ..Default::default()
            })
            .await
            .map(drop),
        Code::InvalidArgument,
        "caller_user_id is required",
    );
    expect(
        conversations
            .get_conversation(pb::GetConversationRequest {
                workspace_id: wsid.clone(),
                conversation_id: "nope".into(),
            })
            .await
            .map(drop),
        Code::NotFound,
        "conversation not found",
    );
    // A missing conversation answers before the page token is read.
    expect(
        conversations
            .list_messages(pb::ListMessagesRequest {
                workspace_id: wsid.clone(),
                conversation_id: "nope".into(),
                page: Some(telenet_proto::common::v1::PageRequest {
                    page_size: 0,
                    page_token: "!".into(),
                }),
            })
            .await
            .map(drop),
        Code::NotFound,
        "conversation not found",
    );
    let reply = |text: &str, author: &str| pb::SendMessageRequest {
        workspace_id: wsid.clone(),
        conversation_id: "nope".into(),
        author_user_id: author.into(),
        text: text.into(),
        ..Default::default()
    };
    expect(
        w.send(reply(" ", &owner)).await.map(drop),
        Code::InvalidArgument,
        "text or attachments are required",
    );
    expect(
        w.send(reply(
            &"x".repeat(Config::default().max_text_chars + 1),
            &owner,
        ))
        .await
        .map(drop),
        Code::InvalidArgument,
        "text is longer than 16384 characters",
    );
    expect(
        w.send(reply("hola", "stranger")).await.map(drop),
        Code::NotFound,
        "author is not a member of the workspace",
    );
    expect(
        w.send(reply("hola", &owner)).await.map(drop),
        Code::NotFound,
        "conversation not found",
    );

    w.receive("e1", &wsid, inbound("ch", "m1", "+34", "hola"))
        .await;
    let conv = w
        .list(
            &wsid,
            &owner,
            pb::ConversationStatus::Open,
            pb::AssigneeFilter::Any,
        )
        .await
        .remove(0);
    let close = pb::CloseConversationRequest {
        workspace_id: wsid.clone(),
        conversation_id: conv.id.clone(),
        caller_user_id: owner.clone(),
        closing_note: Some(pb::ClosingNote {
            category: "c".repeat(101),
            ..Default::default()
        }),
    };
    expect(
        conversations
            .close_conversation(close.clone())
            .await
            .map(drop),
        Code::InvalidArgument,
        "closing_note.category is longer than 100 characters",
    );
    let close = pb::CloseConversationRequest {
        closing_note: None,
        ..close
    };
    conversations
        .close_conversation(close.clone())
        .await
        .expect("closed");
    expect(
        conversations.close_conversation(close).await.map(drop),
        Code::FailedPrecondition,
        "conversation is already closed",
    );
    expect(
        conversations
            .assign_conversation(pb::AssignConversationRequest {
                workspace_id: wsid.clone(),
                conversation_id: conv.id.clone(),
                user_id: owner.clone(),
                caller_user_id: owner.clone(),
            })
            .await
            .map(drop),
        Code::FailedPrecondition,
        "a closed conversation cannot be assigned",
    );
    expect(
        w.send(pb::SendMessageRequest {
            conversation_id: conv.id.clone(),
            ..reply("hola", &owner)
        })
        .await
        .map(drop),
        Code::FailedPrecondition,
        "conversation is closed; the contact's next message opens a new one",
    );

    expect(
        members
            .authenticate(pb::AuthenticateRequest {
                token: "Bearer x".into(),
            })
            .await
            .map(drop),
        Code::Unauthenticated,
        "invalid or revoked token",
    );
    let member = |ws: &str, email: &str, level: pb::AccessLevel| pb::CreateMemberRequest {
        workspace_id: ws.into(),
        name: "Ari".into(),
        email: email.into(),
        access_level: level as i32,
    };
    expect(
        members
            .create_member(member(&wsid, "ari", pb::AccessLevel::Agent))
            .await
            .map(drop),
        Code::InvalidArgument,
        "email \"ari\" is not an e-mail address",
    );
    expect(
        members
            .create_member(member(&wsid, "ari@acme.test", pb::AccessLevel::Unspecified))
            .await
            .map(drop),
        Code::InvalidArgument,
        "access_level is required",
    );
    expect(
        members
            .create_member(member("nope", "ari@acme.test", pb::AccessLevel::Agent))
            .await
            .map(drop),
        Code::NotFound,
        "workspace not found",
    );
    expect(
        members
            .create_workspace(pb::CreateWorkspaceRequest {
                name: " ".into(),
                owner_name: "Oz".into(),
                owner_email: "oz@other.test".into(),
            })
            .await
            .map(drop),
        Code::InvalidArgument,
        "name must be 1 to 100 characters",
    );
    expect(
        members
            .get_member(pb::GetMemberRequest {
                workspace_id: wsid.clone(),
                user_id: "nope".into(),
            })
            .await
            .map(drop),
        Code::NotFound,
        "member not found",
    );
    expect(
        members
            .create_token(pb::CreateTokenRequest {
                workspace_id: wsid.clone(),
                user_id: String::new(),
                label: "ci".into(),
                expires_at: None,
            })
            .await
            .map(drop),
        Code::InvalidArgument,
        "user_id is required",
    );
    // RPCs the service does not implement yet answer as generated.
    let unimplemented = conversations
        .get_inbox_counts(pb::GetInboxCountsRequest::default())
        .await
        .expect_err("not yet");
    assert_eq!(unimplemented.code(), Code::Unimplemented);
    w.svc.stop().await;
}
