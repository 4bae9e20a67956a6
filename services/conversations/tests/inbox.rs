//! The inbox rules of PRODUCT.md on both backends, with the real contacts
//! service over gRPC and the in-memory bus: a new contact gets an open
//! unassigned conversation; a known contact's messages join it; a reply
//! assigns the replier; closing unassigns and leaves the queue; the next
//! message opens a new conversation; statuses only move forward; events are
//! idempotent; workspaces are isolated.

use std::sync::Arc;

use telenet_bus::{EventBus, SubscribeSpec};
use telenet_conversations::{ConversationsService, MIGRATIONS};
use telenet_proto::conversations::v1 as pb;
use telenet_proto::dispatch::v1::DeliveryState;
use telenet_proto::events::v1::{self as ev, event_envelope::Payload};
use telenet_store::{Db, events, outbox, testing};
use tokio_util::sync::CancellationToken;

struct World {
    svc: ConversationsService,
    bus: Arc<telenet_bus::memory::MemoryBus>,
    conv_db: Db,
    token: CancellationToken,
}

async fn world(conv_url: String, contacts_url: String) -> World {
    let contacts_db = Db::connect(&contacts_url, "contacts")
        .await
        .expect("contacts db");
    contacts_db
        .migrate(&telenet_contacts::MIGRATIONS)
        .await
        .expect("migrate");
    let contacts = telenet_contacts::ContactsService::new(contacts_db, Default::default())
        .await
        .expect("contacts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let token = CancellationToken::new();
    let server =
        telenet_kit::grpc::GrpcServer::new(Default::default()).add_service(contacts.grpc());
    tokio::spawn(server.serve(listener, token.clone()));
    let channel = telenet_kit::grpc::channel(&format!("http://{addr}"), &Default::default())
        .expect("channel");

    let conv_db = Db::connect(&conv_url, "conversations").await.expect("db");
    conv_db.migrate(&MIGRATIONS).await.expect("migrate");
    let bus = Arc::new(telenet_bus::memory::MemoryBus::new(
        telenet_bus::RetryPolicy {
            delays: vec![std::time::Duration::from_millis(50); 3],
        },
    ));
    let svc = ConversationsService::new(conv_db.clone(), bus.clone(), channel, Default::default())
        .await
        .expect("service");
    World {
        svc,
        bus,
        conv_db,
        token,
    }
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
    }
}

async fn list(
    w: &World,
    ws: &str,
    user: &str,
    status: pb::ConversationStatus,
    assignee: pb::AssigneeFilter,
) -> Vec<pb::Conversation> {
    w.svc
        .inbox()
        .list(&pb::ListConversationsRequest {
            workspace_id: ws.into(),
            caller_user_id: user.into(),
            status: status as i32,
            assignee: assignee as i32,
            ..Default::default()
        })
        .await
        .expect("list")
        .0
}

async fn rules(w: World) {
    let inbox = w.svc.inbox().clone();
    let members = w.svc.members().clone();
    let ws = members
        .create_workspace(&pb::CreateWorkspaceRequest {
            name: "Acme".into(),
            owner_name: "Olga".into(),
            owner_email: "olga@acme.test".into(),
        })
        .await
        .expect("workspace");
    let wsid = ws.workspace.as_ref().expect("ws").id.clone();
    let owner = ws.owner.as_ref().expect("owner").user_id.clone();
    assert_eq!(
        members.authenticate(&ws.token).await.expect("auth").user_id,
        owner
    );
    assert!(members.authenticate("tlnt_nope").await.is_err());
    let agent = members
        .create_member(&pb::CreateMemberRequest {
            workspace_id: wsid.clone(),
            name: "Ari".into(),
            email: "ari@acme.test".into(),
            access_level: pb::AccessLevel::Agent as i32,
        })
        .await
        .expect("member")
        .user_id;
    let dup = members
        .create_member(&pb::CreateMemberRequest {
            workspace_id: wsid.clone(),
            name: "Ari 2".into(),
            email: "ARI@acme.test".into(),
            access_level: pb::AccessLevel::Agent as i32,
        })
        .await
        .expect_err("duplicate email");
    assert_eq!(dup.to_status().code(), tonic::Code::AlreadyExists);

    // 1. A new contact: an open, unassigned conversation.
    inbox
        .receive_message("e1", &wsid, &inbound("ch", "m1", "+34", "hola"))
        .await
        .expect("receive");
    let open = list(
        &w,
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
    inbox
        .receive_message("e1", &wsid, &inbound("ch", "m1", "+34", "hola"))
        .await
        .expect("receive");
    inbox
        .receive_message("e1b", &wsid, &inbound("ch", "m1", "+34", "hola"))
        .await
        .expect("receive");
    // A known contact: same conversation.
    inbox
        .receive_message("e2", &wsid, &inbound("ch", "m2", "+34", "¿hay alguien? 👋"))
        .await
        .expect("receive");
    let msgs = inbox
        .messages(&pb::ListMessagesRequest {
            workspace_id: wsid.clone(),
            conversation_id: conv.id.clone(),
            page: None,
        })
        .await
        .expect("messages")
        .0;
    assert_eq!(
        msgs.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
        vec!["hola", "¿hay alguien? 👋"]
    );

    // 2. Replying assigns the replier.
    let sent = inbox
        .send_message(&pb::SendMessageRequest {
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
    let again = inbox
        .send_message(&pb::SendMessageRequest {
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
    let by_owner = inbox
        .send_message(&pb::SendMessageRequest {
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
        list(
            &w,
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
        list(
            &w,
            &wsid,
            &owner,
            pb::ConversationStatus::Open,
            pb::AssigneeFilter::Me
        )
        .await
        .is_empty()
    );

    // Statuses move forward only, by message id (dispatch) or provider id (channel).
    inbox
        .apply_status(
            "s1",
            &wsid,
            telenet_conversations::inbox::StatusTarget::MessageId(&msg.id),
            DeliveryState::Sent,
            "prov-1",
            "",
        )
        .await
        .expect("sent");
    inbox
        .apply_status(
            "s2",
            &wsid,
            telenet_conversations::inbox::StatusTarget::External {
                channel_id: "ch",
                external_id: "prov-1",
            },
            DeliveryState::Read,
            "",
            "",
        )
        .await
        .expect("read");
    inbox
        .apply_status(
            "s3",
            &wsid,
            telenet_conversations::inbox::StatusTarget::External {
                channel_id: "ch",
                external_id: "prov-1",
            },
            DeliveryState::Delivered,
            "",
            "",
        )
        .await
        .expect("late delivered");
    let msgs = inbox
        .messages(&pb::ListMessagesRequest {
            workspace_id: wsid.clone(),
            conversation_id: conv.id.clone(),
            page: None,
        })
        .await
        .expect("messages")
        .0;
    let reply = msgs.iter().find(|m| m.id == msg.id).expect("reply");
    assert_eq!(reply.status, pb::MessageStatus::Read as i32);
    assert_eq!(reply.external_id, "prov-1");

    // Manual assignment and its validation.
    let c = inbox
        .assign(&pb::AssignConversationRequest {
            workspace_id: wsid.clone(),
            conversation_id: conv.id.clone(),
            user_id: owner.clone(),
            caller_user_id: owner.clone(),
        })
        .await
        .expect("assign");
    assert_eq!(c.assignee_user_id, owner);
    let err = inbox
        .assign(&pb::AssignConversationRequest {
            workspace_id: wsid.clone(),
            conversation_id: conv.id.clone(),
            user_id: "stranger".into(),
            caller_user_id: owner.clone(),
        })
        .await
        .expect_err("not a member");
    assert_eq!(err.to_status().code(), tonic::Code::NotFound);
    let c = inbox
        .unassign(&pb::UnassignConversationRequest {
            workspace_id: wsid.clone(),
            conversation_id: conv.id.clone(),
            caller_user_id: owner.clone(),
        })
        .await
        .expect("unassign");
    assert!(c.assignee_user_id.is_empty());
    inbox
        .assign(&pb::AssignConversationRequest {
            workspace_id: wsid.clone(),
            conversation_id: conv.id.clone(),
            user_id: agent.clone(),
            caller_user_id: owner.clone(),
        })
        .await
        .expect("assign");

    // 3. Closing: unassigned from everyone, out of the open queue, with the note.
    let closed = inbox
        .close(&pb::CloseConversationRequest {
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
        .expect("close");
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
        list(
            &w,
            &wsid,
            &owner,
            pb::ConversationStatus::Open,
            pb::AssigneeFilter::Any
        )
        .await
        .is_empty()
    );
    let err = inbox
        .send_message(&pb::SendMessageRequest {
            workspace_id: wsid.clone(),
            conversation_id: conv.id.clone(),
            author_user_id: agent.clone(),
            text: "x".into(),
            ..Default::default()
        })
        .await
        .expect_err("closed");
    assert_eq!(err.to_status().code(), tonic::Code::FailedPrecondition);

    // 4. The next message opens a new unassigned conversation.
    inbox
        .receive_message("e3", &wsid, &inbound("ch", "m3", "+34", "otra cosa"))
        .await
        .expect("receive");
    let open = list(
        &w,
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
        list(
            &w,
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
    let other = members
        .create_workspace(&pb::CreateWorkspaceRequest {
            name: "Other".into(),
            owner_name: "Oz".into(),
            owner_email: "oz@other.test".into(),
        })
        .await
        .expect("workspace");
    let other_ws = other.workspace.expect("ws").id;
    let err = inbox.get(&other_ws, &conv.id).await.expect_err("isolated");
    assert_eq!(err.to_status().code(), tonic::Code::NotFound);
    assert!(
        list(
            &w,
            &other_ws,
            "",
            pb::ConversationStatus::Unspecified,
            pb::AssigneeFilter::Any
        )
        .await
        .is_empty()
    );
    let err = inbox
        .send_message(&pb::SendMessageRequest {
            workspace_id: other_ws.clone(),
            conversation_id: open[0].id.clone(),
            author_user_id: other.owner.expect("o").user_id,
            text: "x".into(),
            ..Default::default()
        })
        .await
        .expect_err("isolated");
    assert_eq!(err.to_status().code(), tonic::Code::NotFound);

    // Every change left its events in the outbox; relay them and check the kinds.
    let mut sub = w
        .bus
        .subscribe(SubscribeSpec::new("t", &["#"]))
        .await
        .expect("sub");
    let relay = outbox::Relay::new(w.conv_db.clone(), w.bus.clone());
    while relay.relay_once().await.expect("relay") > 0 {}
    let mut keys = Vec::new();
    while let Ok(Some(d)) =
        tokio::time::timeout(std::time::Duration::from_millis(200), sub.next()).await
    {
        keys.push(d.event.routing_key.clone());
        d.ack().await.expect("ack");
    }
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
    w.token.cancel();
}

#[tokio::test]
async fn inbox_rules_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    rules(
        world(
            testing::sqlite_in(dir.path(), "conv"),
            testing::sqlite_in(dir.path(), "contacts"),
        )
        .await,
    )
    .await;
}

#[tokio::test]
async fn inbox_rules_on_postgres() {
    rules(
        world(
            testing::fresh_postgres().await,
            testing::fresh_postgres().await,
        )
        .await,
    )
    .await;
}

#[tokio::test]
async fn consumers_apply_bus_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = world(
        testing::sqlite_in(dir.path(), "conv"),
        testing::sqlite_in(dir.path(), "contacts"),
    )
    .await;
    let ws = w
        .svc
        .members()
        .create_workspace(&pb::CreateWorkspaceRequest {
            name: "A".into(),
            owner_name: "O".into(),
            owner_email: "o@a.test".into(),
        })
        .await
        .expect("ws")
        .workspace
        .expect("ws")
        .id;
    w.svc.start(w.token.clone()).await.expect("consumers");
    let env = events::envelope(
        &ws,
        Payload::InboundMessageReceived(inbound("ch", "m1", "+1", "hi")),
        None,
    );
    // Published twice (a redelivery): still one message.
    w.bus
        .publish(&[events::to_bus(&env), events::to_bus(&env)])
        .await
        .expect("publish");
    let mut found = Vec::new();
    for _ in 0..100 {
        found = list(
            &w,
            &ws,
            "",
            pb::ConversationStatus::Open,
            pb::AssigneeFilter::Any,
        )
        .await;
        if !found.is_empty() && found[0].message_count == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(found.len(), 1);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let again = list(
        &w,
        &ws,
        "",
        pb::ConversationStatus::Open,
        pb::AssigneeFilter::Any,
    )
    .await;
    assert_eq!(again[0].message_count, 1);
    w.token.cancel();
}

#[tokio::test]
async fn attachment_outcomes_update_the_stored_message() {
    use telenet_proto::common::v1::{Attachment, AttachmentKind, AttachmentState};
    let dir = tempfile::tempdir().expect("tempdir");
    let w = world(
        testing::sqlite_in(dir.path(), "conv"),
        testing::sqlite_in(dir.path(), "contacts"),
    )
    .await;
    let inbox = w.svc.inbox().clone();
    let ws = w
        .svc
        .members()
        .create_workspace(&pb::CreateWorkspaceRequest {
            name: "A".into(),
            owner_name: "O".into(),
            owner_email: "o@a.test".into(),
        })
        .await
        .expect("ws")
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
    inbox
        .receive_message("ev-in", &ws, &msg)
        .await
        .expect("receive");
    let messages = || async {
        let conv = list(
            &w,
            &ws,
            "",
            pb::ConversationStatus::Open,
            pb::AssigneeFilter::Any,
        )
        .await;
        inbox
            .messages(&pb::ListMessagesRequest {
                workspace_id: ws.clone(),
                conversation_id: conv[0].id.clone(),
                page: None,
            })
            .await
            .expect("messages")
            .0
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
        assert!(
            matches!(err, telenet_store::consumer::HandleError::Permanent(_)),
            "{err}"
        );
    }
    // Another workspace cannot touch the message.
    let err = inbox
        .apply_attachment("ev-other", "other-ws", &message_id, 1, &ready)
        .await
        .expect_err("other workspace");
    assert!(matches!(
        err,
        telenet_store::consumer::HandleError::Permanent(_)
    ));
    assert_eq!(
        messages().await[0].attachments[1].state,
        AttachmentState::Failed as i32
    );
    w.token.cancel();
}

/// Outcomes of one message's attachments arrive together; on PostgreSQL
/// they are applied by concurrent transactions, and none may be lost.
#[tokio::test]
async fn concurrent_attachment_outcomes_are_all_kept_on_postgres() {
    use telenet_proto::common::v1::{Attachment, AttachmentState};
    let w = world(
        testing::fresh_postgres().await,
        testing::fresh_postgres().await,
    )
    .await;
    let inbox = w.svc.inbox().clone();
    let ws = w
        .svc
        .members()
        .create_workspace(&pb::CreateWorkspaceRequest {
            name: "A".into(),
            owner_name: "O".into(),
            owner_email: "o@a.test".into(),
        })
        .await
        .expect("ws")
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
    inbox
        .receive_message("ev-in", &ws, &msg)
        .await
        .expect("receive");
    let conv = list(
        &w,
        &ws,
        "",
        pb::ConversationStatus::Open,
        pb::AssigneeFilter::Any,
    )
    .await;
    let request = pb::ListMessagesRequest {
        workspace_id: ws.clone(),
        conversation_id: conv[0].id.clone(),
        page: None,
    };
    let message_id = inbox.messages(&request).await.expect("messages").0[0]
        .id
        .clone();
    let applied = (0..N).map(|n| {
        let (inbox, ws, message_id) = (inbox.clone(), ws.clone(), message_id.clone());
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
    let after = &inbox.messages(&request).await.expect("messages").0[0].attachments;
    for (n, a) in after.iter().enumerate() {
        assert_eq!(
            a.state,
            AttachmentState::Ready as i32,
            "attachment {n} lost"
        );
        assert_eq!(a.blob_id, format!("{n:064x}"));
    }
    w.token.cancel();
}
