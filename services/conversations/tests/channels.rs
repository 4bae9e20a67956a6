//! What real channels bring, on both backends, with the service started as
//! a process starts it, the real contacts service over gRPC and the
//! in-memory bus: echoes of what the channel's own account sent elsewhere,
//! reactions, locations, quotes, unsupported kinds, edits and unsends,
//! watermark statuses, and reply windows (from a fixed channel directory).
//! Redelivered events change nothing, and nothing crosses workspaces.
//!
//! What the bus feeds the service is applied through an [`Inbox`] on the
//! service's database, with chosen event ids, as in `inbox.rs`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use prost::Message as _;
use telenet_bus::{SharedBus, SubscribeSpec, Subscription};
use telenet_channels::directory::{ChannelCredentials, ChannelDirectory, DirectoryError};
use telenet_conversations::domain::message::{Change, Watermark};
use telenet_conversations::domain::{Reply, StatusTarget};
use telenet_conversations::{CALLS, Config, Error, Inbox, MIGRATIONS, NAME};
use telenet_kit::error::ServiceError;
use telenet_kit::metrics::Metrics;
use telenet_proto::common::v1::{ChannelKind, ChannelProvider, Location, Reaction};
use telenet_proto::conversations::v1 as pb;
use telenet_proto::conversations::v1::conversations_client::ConversationsClient;
use telenet_proto::conversations::v1::members_client::MembersClient;
use telenet_proto::dispatch::v1::DeliveryState;
use telenet_proto::events::v1::{self as ev, EventEnvelope, event_envelope::Payload};
use telenet_proto::ingress::v1 as ingress_pb;
use telenet_runtime::testing::{TestService, TestSetup};
use telenet_runtime::{ServiceContext, Started};
use telenet_store::testing::Backend;
use telenet_store::{Db, now_micros};

/// Channels as ingress would describe them: `wa` is WhatsApp (a 24-hour
/// window), `tg` Telegram (none); `down` cannot be looked up now.
struct FixedDirectory;

#[async_trait]
impl ChannelDirectory for FixedDirectory {
    async fn credentials(
        &self,
        _workspace_id: &str,
        channel_id: &str,
    ) -> Result<ChannelCredentials, DirectoryError> {
        let (kind, provider) = match channel_id {
            "wa" => (ChannelKind::Whatsapp, ChannelProvider::WhatsappCloud),
            "tg" => (ChannelKind::Telegram, ChannelProvider::Telegram),
            "down" => return Err(DirectoryError::Unavailable("ingress restarting".into())),
            _ => return Err(DirectoryError::NotFound),
        };
        Ok(ChannelCredentials {
            channel_id: channel_id.to_owned(),
            kind,
            provider,
            ..Default::default()
        })
    }
}

/// Ingress's channel directory over gRPC, as the started service asks it:
/// the same channels as [`FixedDirectory`].
struct FakeIngress;

#[tonic::async_trait]
impl ingress_pb::channels_server::Channels for FakeIngress {
    async fn get_channel_credentials(
        &self,
        request: tonic::Request<ingress_pb::GetChannelRequest>,
    ) -> Result<tonic::Response<ingress_pb::ChannelCredentials>, tonic::Status> {
        let r = request.into_inner();
        let creds = FixedDirectory
            .credentials(&r.workspace_id, &r.channel_id)
            .await
            .map_err(|e| match e {
                DirectoryError::NotFound => tonic::Status::not_found("channel not found"),
                e => tonic::Status::unavailable(e.to_string()),
            })?;
        Ok(tonic::Response::new(ingress_pb::ChannelCredentials {
            channel: Some(ingress_pb::Channel {
                id: creds.channel_id,
                workspace_id: r.workspace_id,
                kind: creds.kind as i32,
                ..Default::default()
            }),
            provider: creds.provider as i32,
            ..Default::default()
        }))
    }
}

struct World {
    svc: TestService,
    inbox: Inbox,
    members: MembersClient<telenet_kit::grpc::GrpcChannel>,
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
        started.grpc.extend(contacts.grpc);
        // Ingress, on the same port too: the service's own directory.
        started.grpc.extend(
            Started::new()
                .grpc(ingress_pb::channels_server::ChannelsServer::new(
                    FakeIngress,
                ))
                .grpc,
        );
        Ok(started)
    })
    .await;
    let inbox = Inbox::new(
        svc.db.clone().expect("db"),
        svc.channel(),
        Config::default(),
    )
    .with_directory(Arc::new(FixedDirectory));
    World {
        inbox,
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
        channel_kind: ChannelKind::Whatsapp as i32,
        external_id: ext_id.into(),
        sender: Some(ev::Sender {
            external_id: sender.into(),
            display_name: "Ana".into(),
        }),
        text: text.into(),
        ..Default::default()
    }
}

const HOUR: i64 = 3_600_000_000;

impl World {
    /// A workspace and a member of it who replies.
    async fn workspace(&self, name: &str) -> (String, String) {
        let ws = self
            .members
            .clone()
            .create_workspace(pb::CreateWorkspaceRequest {
                name: name.into(),
                owner_name: "Olga".into(),
                owner_email: format!("olga@{name}.test"),
            })
            .await
            .expect("workspace")
            .into_inner();
        (
            ws.workspace.expect("ws").id,
            ws.owner.expect("owner").user_id,
        )
    }

    async fn receive(&self, event_id: &str, ws: &str, message: ev::InboundMessageReceived) {
        self.inbox
            .receive_message(event_id, ws, &message.into())
            .await
            .expect("receive");
    }

    /// A contact's message received `hours_ago`.
    async fn receive_at(
        &self,
        event_id: &str,
        ws: &str,
        message: ev::InboundMessageReceived,
        hours_ago: i64,
    ) {
        let mut received: telenet_conversations::domain::InboundMessage = message.into();
        received.received_at = now_micros() - hours_ago * HOUR;
        self.inbox
            .receive_message(event_id, ws, &received)
            .await
            .expect("receive");
    }

    async fn only_conversation(&self, ws: &str) -> pb::Conversation {
        let page = self
            .inbox
            .list_conversations(&telenet_conversations::domain::ConversationQuery {
                workspace_id: ws.into(),
                ..Default::default()
            })
            .await
            .expect("list");
        assert_eq!(page.items.len(), 1, "one conversation");
        pb::Conversation::from(&page.items[0])
    }

    async fn messages(&self, ws: &str, conversation_id: &str) -> Vec<pb::Message> {
        self.inbox
            .list_messages(&telenet_conversations::domain::MessagesQuery {
                workspace_id: ws.into(),
                conversation_id: conversation_id.into(),
                ..Default::default()
            })
            .await
            .expect("messages")
            .items
            .iter()
            .map(pb::Message::from)
            .collect()
    }

    async fn reply(
        &self,
        ws: &str,
        author: &str,
        conversation_id: &str,
        text: &str,
    ) -> Result<pb::Message, Error> {
        self.inbox
            .reply(&Reply {
                workspace_id: ws.into(),
                conversation_id: conversation_id.into(),
                author_user_id: author.into(),
                text: text.into(),
                ..Default::default()
            })
            .await
            .map(|sent| pb::Message::from(&sent.message))
    }

    /// A reply the channel accepted under `external_id`.
    async fn sent(&self, ws: &str, message_id: &str, external_id: &str) {
        self.inbox
            .apply_status(
                &format!("sent-{message_id}"),
                ws,
                StatusTarget::MessageId(message_id),
                DeliveryState::Sent,
                external_id,
                "",
            )
            .await
            .expect("sent");
    }

    /// The events published so far, waiting until `key` has arrived
    /// `n` times (and taking whatever follows closely).
    async fn published(&mut self, key: &str, n: usize) -> Vec<EventEnvelope> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut found: Vec<EventEnvelope> = Vec::new();
        let count = |found: &[EventEnvelope]| {
            found
                .iter()
                .filter(|e| e.payload.as_ref().map(|p| p.routing_key()) == Some(key))
                .count()
        };
        while count(&found) < n && tokio::time::Instant::now() < deadline {
            if let Ok(Some(d)) =
                tokio::time::timeout(Duration::from_millis(200), self.events.next()).await
            {
                found.push(EventEnvelope::decode(&d.event.payload[..]).expect("envelope"));
                d.ack().await.expect("ack");
            }
        }
        while let Ok(Some(d)) =
            tokio::time::timeout(Duration::from_millis(300), self.events.next()).await
        {
            found.push(EventEnvelope::decode(&d.event.payload[..]).expect("envelope"));
            d.ack().await.expect("ack");
        }
        found
    }
}

fn keys(events: &[EventEnvelope]) -> Vec<&'static str> {
    events
        .iter()
        .filter_map(|e| e.payload.as_ref().map(|p| p.routing_key()))
        .collect()
}

async fn echoes(mut w: World) {
    let (ws, owner) = w.workspace("acme").await;
    w.receive("e1", &ws, inbound("wa", "in-1", "+34", "hola"))
        .await;
    let echo = ev::InboundMessageReceived {
        echo: true,
        ..inbound("wa", "out-1", "+34", "sent from the phone app")
    };
    for event_id in ["echo-1", "echo-1", "echo-1b"] {
        w.inbox
            .receive_echo(event_id, &ws, &echo.clone().into())
            .await
            .expect("echo");
    }
    let conversation = w.only_conversation(&ws).await;
    let messages = w.messages(&ws, &conversation.id).await;
    assert_eq!(messages.len(), 2, "the echo is stored once");
    let stored = &messages[1];
    assert_eq!(stored.direction, pb::MessageDirection::Outbound as i32);
    assert_eq!(stored.status, pb::MessageStatus::Sent as i32);
    assert_eq!(stored.external_id, "out-1");
    assert_eq!(stored.text, "sent from the phone app");
    assert!(stored.author_user_id.is_empty());
    // A reply whose echo the channel delivered before dispatch reported
    // its provider id: the report still applies, without the taken id.
    let reply = w
        .reply(&ws, &owner, &conversation.id, "¡Hola!")
        .await
        .expect("reply");
    let early = ev::InboundMessageReceived {
        echo: true,
        ..inbound("wa", "out-2", "+34", "¡Hola!")
    };
    w.inbox
        .receive_echo("echo-2", &ws, &early.into())
        .await
        .expect("echo");
    w.sent(&ws, &reply.id, "out-2").await;
    let messages = w.messages(&ws, &conversation.id).await;
    let after = messages
        .iter()
        .find(|m| m.id == reply.id)
        .expect("the reply");
    assert_eq!(after.status, pb::MessageStatus::Sent as i32);
    assert!(after.external_id.is_empty());
    let events = w.published("message.created", 4).await;
    assert_eq!(
        keys(&events)
            .iter()
            .filter(|k| **k == "outbound.requested")
            .count(),
        1,
        "only the reply is dispatched, never an echo: {:?}",
        keys(&events)
    );
    w.svc.stop().await;
}

async fn reactions(mut w: World) {
    let (ws, owner) = w.workspace("acme").await;
    let (other, _) = w.workspace("other").await;
    w.receive("e1", &ws, inbound("wa", "in-1", "+34", "hola"))
        .await;
    // The same provider id in another workspace's conversation.
    w.receive("o1", &other, inbound("wa2", "in-1", "+34", "hola"))
        .await;
    let conversation = w.only_conversation(&ws).await;
    let reply = w
        .reply(&ws, &owner, &conversation.id, "¿En qué te ayudo?")
        .await
        .expect("reply");
    w.sent(&ws, &reply.id, "out-1").await;
    let before = w.only_conversation(&ws).await;
    let react = |id: &str, emoji: &str| ev::InboundMessageReceived {
        reaction: Some(Reaction {
            message_external_id: id.into(),
            emoji: emoji.into(),
        }),
        ..inbound("wa", "", "+34", "")
    };
    let apply = |event_id: &'static str, r: ev::InboundMessageReceived| {
        let inbox = w.inbox.clone();
        let ws = ws.clone();
        async move {
            let reaction = r.reaction.clone().expect("reaction");
            let sender = r.sender.clone().expect("sender").external_id;
            inbox
                .apply_reaction(event_id, &ws, &r.channel_id, &sender, &reaction)
                .await
                .expect("reaction");
        }
    };
    apply("r1", react("out-1", "👍")).await;
    apply("r1", react("out-1", "👍")).await;
    apply("r2", react("in-1", "❤️")).await;
    // The latest emoji replaces the contact's earlier one.
    apply("r3", react("out-1", "🙏")).await;
    // Unknown: acknowledged, nothing stored.
    apply("r4", react("never-seen", "😀")).await;
    let messages = w.messages(&ws, &conversation.id).await;
    assert_eq!(messages.len(), 2, "a reaction is not a message");
    let emojis = |m: &pb::Message| {
        m.reactions
            .iter()
            .map(|r| r.emoji.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(emojis(&messages[0]), ["❤️"]);
    assert_eq!(emojis(&messages[1]), ["🙏"]);
    assert_eq!(messages[1].reactions[0].message_external_id, "out-1");
    // An empty emoji removes it; a redelivered removal changes nothing.
    apply("r5", react("in-1", "")).await;
    apply("r5", react("in-1", "")).await;
    let messages = w.messages(&ws, &conversation.id).await;
    assert!(messages[0].reactions.is_empty());
    assert_eq!(emojis(&messages[1]), ["🙏"]);
    // The other workspace's message with the same provider id is untouched.
    let theirs = w.only_conversation(&other).await;
    assert!(w.messages(&other, &theirs.id).await[0].reactions.is_empty());
    // Reactions neither count as messages nor move the conversation.
    let after = w.only_conversation(&ws).await;
    assert_eq!(after.message_count, 2);
    assert_eq!(after.last_message_at, before.last_message_at);
    let events = w.published("message.updated", 4).await;
    assert_eq!(
        keys(&events)
            .iter()
            .filter(|k| **k == "message.updated")
            .count(),
        4,
        "👍, ❤️, 🙏 and the removal: {:?}",
        keys(&events)
    );
    w.svc.stop().await;
}

async fn contents(w: World) {
    let (ws, _) = w.workspace("acme").await;
    w.receive("e1", &ws, inbound("wa", "in-1", "+34", "¿dónde estáis?"))
        .await;
    let here = Location {
        latitude: 40.4168,
        longitude: -3.7038,
        name: "Puerta del Sol".into(),
        address: "Madrid".into(),
    };
    w.receive(
        "e2",
        &ws,
        ev::InboundMessageReceived {
            location: Some(here.clone()),
            reply_to_external_id: "in-1".into(),
            ..inbound("wa", "in-2", "+34", "")
        },
    )
    .await;
    w.receive(
        "e3",
        &ws,
        ev::InboundMessageReceived {
            unsupported_type: "poll".into(),
            reply_to_external_id: "never-seen".into(),
            ..inbound("wa", "in-3", "+34", "")
        },
    )
    .await;
    let conversation = w.only_conversation(&ws).await;
    let messages = w.messages(&ws, &conversation.id).await;
    assert_eq!(messages.len(), 3, "nothing is dropped");
    assert_eq!(messages[1].location, Some(here));
    assert!(messages[1].text.is_empty());
    assert_eq!(messages[1].reply_to_message_id, messages[0].id);
    assert_eq!(messages[0].location, None);
    assert_eq!(messages[2].unsupported_type, "poll");
    // A quote of a message never stored names none.
    assert!(messages[2].reply_to_message_id.is_empty());
    w.svc.stop().await;
}

async fn changes(mut w: World) {
    let (ws, owner) = w.workspace("acme").await;
    w.receive("e1", &ws, inbound("wa", "in-1", "+34", "hola"))
        .await;
    w.receive(
        "e2",
        &ws,
        inbound("wa", "in-2", "+34", "mensaje equivocado"),
    )
    .await;
    let conversation = w.only_conversation(&ws).await;
    // Closed: a change never reopens it.
    w.inbox
        .close(&telenet_conversations::domain::Close {
            workspace_id: ws.clone(),
            conversation_id: conversation.id.clone(),
            caller_user_id: owner.clone(),
            ..Default::default()
        })
        .await
        .expect("close");
    let closed = w.only_conversation(&ws).await;
    let edit = |id: &str, text: &str| -> telenet_conversations::domain::InboundMessage {
        inbound("wa", id, "+34", text).into()
    };
    for event_id in ["ed1", "ed1"] {
        w.inbox
            .apply_change(event_id, &ws, &edit("in-1", "hola, buenas"), Change::Edited)
            .await
            .expect("edit");
    }
    w.inbox
        .apply_change("un1", &ws, &edit("in-2", ""), Change::Unsent)
        .await
        .expect("unsend");
    // A redelivered unsend under another event id changes nothing either.
    w.inbox
        .apply_change("un1b", &ws, &edit("in-2", ""), Change::Unsent)
        .await
        .expect("unsend again");
    w.inbox
        .apply_change("ed2", &ws, &edit("never-seen", "x"), Change::Edited)
        .await
        .expect("unknown original: acknowledged");
    let messages = w.messages(&ws, &conversation.id).await;
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0].text, "hola, buenas");
    assert!(messages[0].edited_at.is_some());
    assert!(messages[0].unsent_at.is_none());
    assert_eq!(
        messages[1].text, "mensaje equivocado",
        "an unsent text is kept"
    );
    assert!(messages[1].unsent_at.is_some());
    assert!(messages[1].edited_at.is_none());
    let after = w.only_conversation(&ws).await;
    assert_eq!(after.status, pb::ConversationStatus::Closed as i32);
    assert_eq!(
        (after.message_count, after.last_message_at),
        (closed.message_count, closed.last_message_at)
    );
    let events = w.published("message.updated", 2).await;
    let updated: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.payload {
            Some(Payload::MessageUpdated(u)) => Some(u.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        updated.len(),
        2,
        "one edit and one unsend: {:?}",
        keys(&events)
    );
    assert_eq!(
        updated[0].message.as_ref().map(|m| m.text.as_str()),
        Some("hola, buenas")
    );
    assert_eq!(updated[0].contact_id, conversation.contact_id);
    w.svc.stop().await;
}

async fn watermarks(mut w: World) {
    let (ws, owner) = w.workspace("acme").await;
    let (other, other_owner) = w.workspace("other").await;
    w.receive("e1", &ws, inbound("wa", "in-1", "+34", "hola"))
        .await;
    w.receive("o1", &other, inbound("wa", "in-1b", "+34", "hola"))
        .await;
    let conversation = w.only_conversation(&ws).await;
    let theirs = w.only_conversation(&other).await;
    let first = w
        .reply(&ws, &owner, &conversation.id, "uno")
        .await
        .expect("reply");
    let second = w
        .reply(&ws, &owner, &conversation.id, "dos")
        .await
        .expect("reply");
    let foreign = w
        .reply(&other, &other_owner, &theirs.id, "ajeno")
        .await
        .expect("reply");
    w.sent(&ws, &first.id, "out-1").await;
    w.sent(&ws, &second.id, "out-2").await;
    w.sent(&other, &foreign.id, "out-3").await;
    // The second one was read already; a watermark never moves it back.
    w.inbox
        .apply_status(
            "read-2",
            &ws,
            StatusTarget::External {
                channel_id: "wa",
                external_id: "out-2",
            },
            DeliveryState::Read,
            "",
            "",
        )
        .await
        .expect("read");
    let up_to = now_micros();
    let late = w
        .reply(&ws, &owner, &conversation.id, "tres")
        .await
        .expect("reply");
    w.sent(&ws, &late.id, "out-4").await;
    let watermark = Watermark {
        channel_id: "wa",
        contact_external_id: "+34",
        up_to,
    };
    for event_id in ["wm-1", "wm-1"] {
        w.inbox
            .apply_watermark(event_id, &ws, &watermark, DeliveryState::Delivered, "")
            .await
            .expect("watermark");
    }
    let status = |m: &pb::Message| pb::MessageStatus::try_from(m.status).expect("status");
    let messages = w.messages(&ws, &conversation.id).await;
    let statuses: Vec<_> = messages[1..].iter().map(status).collect();
    assert_eq!(
        statuses,
        [
            pb::MessageStatus::Delivered,
            pb::MessageStatus::Read,
            // Created after the watermark.
            pb::MessageStatus::Sent,
        ]
    );
    // Another workspace's reply to the same address on its channel: untouched.
    assert_eq!(
        status(&w.messages(&other, &theirs.id).await[1]),
        pb::MessageStatus::Sent
    );
    // A played voice note, and a failure keeping the provider's code.
    w.inbox
        .apply_status(
            "played-4",
            &ws,
            StatusTarget::External {
                channel_id: "wa",
                external_id: "out-2",
            },
            DeliveryState::Played,
            "",
            "",
        )
        .await
        .expect("played");
    w.inbox
        .apply_watermark(
            "wm-2",
            &ws,
            &Watermark {
                up_to: now_micros(),
                ..watermark
            },
            DeliveryState::Read,
            "",
        )
        .await
        .expect("watermark");
    let messages = w.messages(&ws, &conversation.id).await;
    let statuses: Vec<_> = messages[1..].iter().map(status).collect();
    assert_eq!(
        statuses,
        [
            pb::MessageStatus::Read,
            pb::MessageStatus::Played,
            pb::MessageStatus::Read,
        ]
    );
    let events = w.published("message.status", 1).await;
    let changed: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.payload {
            Some(Payload::MessageStatusChanged(s)) => Some((s.message_id.clone(), s.status)),
            _ => None,
        })
        .collect();
    // Each reply a watermark moved is announced, once (the redelivery none).
    let delivered = pb::MessageStatus::Delivered as i32;
    assert_eq!(
        changed
            .iter()
            .filter(|(id, s)| id == &first.id && *s == delivered)
            .count(),
        1
    );
    w.svc.stop().await;
}

async fn reply_windows(mut w: World) {
    let (ws, owner) = w.workspace("acme").await;
    // WhatsApp, last written 23 hours ago: open until an hour from now.
    w.receive_at("e1", &ws, inbound("wa", "in-1", "+34", "hola"), 23)
        .await;
    let open = w.only_conversation(&ws).await;
    let closes_at = open.reply_window_closes_at.expect("a WhatsApp window");
    let in_an_hour = telenet_store::micros_of(&closes_at) - now_micros();
    assert!((0..=HOUR).contains(&in_an_hour), "{in_an_hour}");
    let sent = w
        .reply(&ws, &owner, &open.id, "¡Aquí estamos!")
        .await
        .expect("open window");
    let events = w.published("outbound.requested", 1).await;
    let requested = events
        .iter()
        .find_map(|e| match &e.payload {
            Some(Payload::OutboundRequested(r)) if r.message_id == sent.id => Some(r.clone()),
            _ => None,
        })
        .expect("requested");
    assert_eq!(
        requested
            .contact_last_message_at
            .map(|t| telenet_store::micros_of(&t)),
        Some(telenet_store::micros_of(&closes_at) - 24 * HOUR)
    );
    w.svc.stop().await;
}

async fn closed_windows(w: World) {
    let (ws, owner) = w.workspace("acme").await;
    w.receive_at("e1", &ws, inbound("wa", "in-1", "+34", "hola"), 25)
        .await;
    let conversation = w.only_conversation(&ws).await;
    let closes_at = conversation.reply_window_closes_at.expect("window");
    let refused = w
        .reply(&ws, &owner, &conversation.id, "¿Sigues ahí?")
        .await
        .expect_err("closed window");
    assert_eq!(
        refused.code(),
        telenet_kit::error::ErrorCode::FailedPrecondition
    );
    assert_eq!(
        refused.to_string(),
        format!(
            "the reply window closed at {closes_at}: WhatsApp only accepts replies within 24 hours of the contact's last message"
        )
    );
    assert_eq!(
        w.messages(&ws, &conversation.id).await.len(),
        1,
        "nothing stored"
    );
    // The contact writes again: the window reopens.
    w.receive("e2", &ws, inbound("wa", "in-2", "+34", "¿hola?"))
        .await;
    w.reply(&ws, &owner, &conversation.id, "¡Perdona!")
        .await
        .expect("reopened");

    // Telegram has no window; a channel the directory cannot look up now
    // blocks nothing either.
    let (tg, tg_owner) = w.workspace("tg").await;
    w.receive_at("t1", &tg, inbound("tg", "t-1", "42", "hi"), 24 * 30)
        .await;
    let telegram = w.only_conversation(&tg).await;
    assert_eq!(telegram.reply_window_closes_at, None);
    w.reply(&tg, &tg_owner, &telegram.id, "hello")
        .await
        .expect("no window");
    let (down, down_owner) = w.workspace("down").await;
    w.receive_at("d1", &down, inbound("down", "d-1", "+1", "hi"), 48)
        .await;
    let unknown = w.only_conversation(&down).await;
    assert_eq!(unknown.reply_window_closes_at, None);
    w.reply(&down, &down_owner, &unknown.id, "hello")
        .await
        .expect("directory down");
    w.svc.stop().await;
}

/// The started service asks ingress for the channel: SendMessage refuses
/// a reply after WhatsApp's window with FAILED_PRECONDITION, and the
/// conversation says when its window closes.
#[tokio::test]
async fn send_message_refuses_a_reply_after_the_window_over_grpc() {
    let w = world(Backend::Sqlite).await;
    let (ws, owner) = w.workspace("acme").await;
    w.receive_at("e1", &ws, inbound("wa", "in-1", "+34", "hola"), 30)
        .await;
    let mut client = ConversationsClient::new(w.svc.channel());
    let id = w.only_conversation(&ws).await.id;
    let conversation = client
        .get_conversation(pb::GetConversationRequest {
            workspace_id: ws.clone(),
            conversation_id: id.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    let closes_at = conversation.reply_window_closes_at.expect("window");
    let listed = client
        .list_conversations(pb::ListConversationsRequest {
            workspace_id: ws.clone(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .conversations;
    assert_eq!(listed[0].reply_window_closes_at, Some(closes_at));
    let refused = client
        .send_message(pb::SendMessageRequest {
            workspace_id: ws.clone(),
            conversation_id: id.clone(),
            author_user_id: owner,
            text: "¿Sigues ahí?".into(),
            ..Default::default()
        })
        .await
        .expect_err("closed");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        refused.message(),
        format!(
            "the reply window closed at {closes_at}: WhatsApp only accepts replies within 24 hours of the contact's last message"
        )
    );
    assert_eq!(w.messages(&ws, &id).await.len(), 1, "nothing stored");
    w.svc.stop().await;
}

/// What the bus brings reaches the right operation: an echo, a reaction,
/// an edit, a status with the provider's error code and a watermark, each
/// published twice (a redelivery).
#[tokio::test]
async fn consumers_route_each_kind_of_channel_event() {
    let w = world(Backend::Sqlite).await;
    let (ws, owner) = w.workspace("acme").await;
    w.receive("e1", &ws, inbound("wa", "in-1", "+34", "hola"))
        .await;
    let id = w.only_conversation(&ws).await.id;
    let first = w.reply(&ws, &owner, &id, "uno").await.expect("reply");
    let second = w.reply(&ws, &owner, &id, "dos").await.expect("reply");
    w.sent(&ws, &first.id, "out-1").await;
    w.sent(&ws, &second.id, "out-2").await;
    let publish = |payload: Payload| {
        let env = telenet_store::events::envelope(&ws, payload, None);
        let bus = w.svc.bus.clone();
        async move {
            bus.publish(&[
                telenet_store::events::to_bus(&env),
                telenet_store::events::to_bus(&env),
            ])
            .await
            .expect("publish");
        }
    };
    publish(Payload::InboundMessageReceived(
        ev::InboundMessageReceived {
            echo: true,
            ..inbound("wa", "out-9", "+34", "from the phone")
        },
    ))
    .await;
    publish(Payload::InboundMessageReceived(
        ev::InboundMessageReceived {
            reaction: Some(Reaction {
                message_external_id: "out-1".into(),
                emoji: "👍".into(),
            }),
            ..inbound("wa", "", "+34", "")
        },
    ))
    .await;
    publish(Payload::InboundMessageReceived(
        ev::InboundMessageReceived {
            change: telenet_proto::common::v1::MessageChange::Edited as i32,
            ..inbound("wa", "in-1", "+34", "hola, buenas")
        },
    ))
    .await;
    publish(Payload::InboundStatusReceived(ev::InboundStatusReceived {
        channel_id: "wa".into(),
        message_external_id: "out-2".into(),
        state: DeliveryState::Failed as i32,
        error: "Re-engagement message".into(),
        error_code: "131047".into(),
        ..Default::default()
    }))
    .await;
    publish(Payload::InboundStatusReceived(ev::InboundStatusReceived {
        channel_id: "wa".into(),
        state: DeliveryState::Read as i32,
        watermark: Some(telenet_store::timestamp(now_micros())),
        contact_external_id: "+34".into(),
        ..Default::default()
    }))
    .await;
    let applied = |m: &[pb::Message]| {
        m.len() == 4
            && m[0].text == "hola, buenas"
            && m[1].reactions.len() == 1
            && m[1].status == pb::MessageStatus::Read as i32
            && m[2].status == pb::MessageStatus::Failed as i32
            && m[3].external_id == "out-9"
    };
    let mut messages = Vec::new();
    for _ in 0..100 {
        messages = w.messages(&ws, &id).await;
        if applied(&messages) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(applied(&messages), "{messages:#?}");
    assert_eq!(messages[2].error, "131047: Re-engagement message");
    assert_eq!(messages[3].direction, pb::MessageDirection::Outbound as i32);
    // The redeliveries changed nothing more.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(w.messages(&ws, &id).await, messages);
    w.svc.stop().await;
}

macro_rules! on_both_backends {
    ($($name:ident: $case:ident),+ $(,)?) => {
        mod sqlite {
            use super::*;
            $(#[tokio::test]
            async fn $name() {
                $case(world(Backend::Sqlite).await).await;
            })+
        }
        mod postgres {
            use super::*;
            $(#[tokio::test]
            async fn $name() {
                $case(world(Backend::Postgres).await).await;
            })+
        }
    };
}

on_both_backends! {
    echoes_are_stored_once_as_sent_replies_and_never_dispatched: echoes,
    reactions_keep_each_contacts_latest_emoji_within_the_workspace: reactions,
    locations_quotes_and_unsupported_kinds_are_stored_and_listed: contents,
    edits_and_unsends_change_the_original_without_reopening_or_counting: changes,
    watermarks_move_earlier_replies_forward_only_in_their_workspace: watermarks,
    an_open_reply_window_lets_replies_through_with_the_contacts_last_message: reply_windows,
    a_closed_reply_window_refuses_replies_unless_the_channel_has_none: closed_windows,
}
