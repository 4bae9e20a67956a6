//! What the WhatsApp Cloud API and 360dialog tests share: the sample
//! webhook bodies (tests/fixtures/whatsapp_cloud) with the events each
//! gives, and what the APIs understood of a send.

#![allow(dead_code)]

use http::HeaderMap;
use telenet_channels::InboundEvent;
use telenet_channels::conformance::{CHANNEL_ID, Expect, Sample, Understood};
use telenet_proto::common::v1::{
    Attachment, AttachmentKind, AttachmentState, ChannelKind, ChannelProvider, Location, Reaction,
};
use telenet_proto::dispatch::v1::DeliveryState;
use telenet_proto::events::v1::{InboundMessageReceived, InboundStatusReceived, Sender};

/// The one message id every split sample reuses.
pub const WAMID: &str = "wamid.xyzxyz";
/// The contact of the split samples.
pub const CONTACT: &str = "972987654321";

/// The api_base the conformance suite's webhook cases give channels.
pub const SUITE_API_BASE: &str = "http://127.0.0.1:9";

pub fn message(provider: ChannelProvider, sent_at: i64) -> InboundMessageReceived {
    let mut m = InboundMessageReceived {
        channel_id: CHANNEL_ID.into(),
        channel_kind: ChannelKind::Whatsapp as i32,
        provider: provider as i32,
        webhook_id: WAMID.into(),
        external_id: WAMID.into(),
        sender: Some(Sender {
            external_id: CONTACT.into(),
            display_name: "Test Name".into(),
        }),
        ..Default::default()
    };
    m.sent_at.get_or_insert_with(Default::default).seconds = sent_at;
    m
}

pub fn status(state: DeliveryState, name: &str, at: i64) -> InboundStatusReceived {
    let mut s = InboundStatusReceived {
        channel_id: CHANNEL_ID.into(),
        message_external_id: WAMID.into(),
        state: state as i32,
        webhook_id: format!("{WAMID}:{name}"),
        contact_external_id: CONTACT.into(),
        ..Default::default()
    };
    s.occurred_at.get_or_insert_with(Default::default).seconds = at;
    s
}

fn file(kind: AttachmentKind, url: String, mime_type: &str) -> Attachment {
    Attachment {
        kind: kind as i32,
        url,
        mime_type: mime_type.into(),
        state: AttachmentState::Pending as i32,
        ..Default::default()
    }
}

fn events(list: Vec<InboundEvent>) -> Expect {
    Expect::Events(list)
}

/// Every sample, with its events for `provider`, whose attachment
/// references are `{media_prefix}{media_id}`.
pub fn samples(provider: ChannelProvider, media_prefix: &str) -> Vec<Sample> {
    let m = |at| message(provider, at);
    let media = |id: &str| format!("{media_prefix}{id}");
    let msg = |x: InboundMessageReceived| InboundEvent::Message(x);
    let st = |x: InboundStatusReceived| InboundEvent::Status(x);
    let sample = |name: &'static str, body: &[u8], expect| Sample {
        name,
        delivery_id: name,
        body: body.to_vec(),
        expect,
    };
    let failed = InboundStatusReceived {
        error: "User's number is part of an experiment".into(),
        error_code: "130472".into(),
        ..status(DeliveryState::Failed, "failed", 1_689_380_458)
    };
    let sticker = InboundMessageReceived {
        webhook_id: "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=".into(),
        external_id: "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=".into(),
        sender: Some(Sender {
            external_id: "16505551234".into(),
            display_name: "Sheena Nelson".into(),
        }),
        attachments: vec![file(
            AttachmentKind::Sticker,
            media("1003383421387256"),
            "image/webp",
        )],
        ..m(1_749_416_383)
    };
    let contacts = InboundMessageReceived {
        webhook_id: "wamid.HBgLMTY1MDU1NTY3ODkVAgASGBQzQUZCMDgzOTRBMzU5QTNGOTFCNAA=".into(),
        external_id: "wamid.HBgLMTY1MDU1NTY3ODkVAgASGBQzQUZCMDgzOTRBMzU5QTNGOTFCNAA=".into(),
        sender: Some(Sender {
            external_id: "16505556789".into(),
            display_name: String::new(),
        }),
        unsupported_type: "contacts".into(),
        ..m(1_749_416_390)
    };
    let read = InboundStatusReceived {
        message_external_id: "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI3MTE5MjQ0RjE1NjhBODBDMTEA".into(),
        webhook_id: "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI3MTE5MjQ0RjE1NjhBODBDMTEA:read".into(),
        contact_external_id: "16505551234".into(),
        ..status(DeliveryState::Read, "read", 1_750_263_773)
    };
    vec![
        sample(
            "split_message_text.json",
            include_bytes!("../fixtures/whatsapp_cloud/split_message_text.json"),
            events(vec![msg(InboundMessageReceived {
                text: "Body Text".into(),
                ..m(1_697_043_223)
            })]),
        ),
        sample(
            "split_message_image.json",
            include_bytes!("../fixtures/whatsapp_cloud/split_message_image.json"),
            events(vec![msg(InboundMessageReceived {
                attachments: vec![file(AttachmentKind::Image, media("65463453"), "image/jpeg")],
                ..m(1_697_043_379)
            })]),
        ),
        sample(
            "split_message_audio.json",
            include_bytes!("../fixtures/whatsapp_cloud/split_message_audio.json"),
            events(vec![msg(InboundMessageReceived {
                attachments: vec![file(
                    AttachmentKind::Audio,
                    media("1234567890987654321"),
                    "audio/ogg; codecs=opus",
                )],
                ..m(1_697_043_509)
            })]),
        ),
        sample(
            "split_message_voice.json",
            include_bytes!("../fixtures/whatsapp_cloud/split_message_voice.json"),
            events(vec![msg(InboundMessageReceived {
                attachments: vec![file(
                    AttachmentKind::Voice,
                    media("1234567890987654321"),
                    "audio/ogg; codecs=opus",
                )],
                ..m(1_697_043_473)
            })]),
        ),
        sample(
            "split_message_document.json",
            include_bytes!("../fixtures/whatsapp_cloud/split_message_document.json"),
            events(vec![msg(InboundMessageReceived {
                text: "caption".into(),
                attachments: vec![Attachment {
                    file_name: "filename.pdf".into(),
                    ..file(
                        AttachmentKind::File,
                        media("1234567890987654321"),
                        "application/pdf",
                    )
                }],
                ..m(1_697_043_666)
            })]),
        ),
        sample(
            "split_message_current_location.json",
            include_bytes!("../fixtures/whatsapp_cloud/split_message_current_location.json"),
            events(vec![msg(InboundMessageReceived {
                location: Some(Location {
                    latitude: 12.25089,
                    longitude: 43.90539,
                    ..Default::default()
                }),
                ..m(1_697_044_557)
            })]),
        ),
        sample(
            "split_message_reaction.json",
            include_bytes!("../fixtures/whatsapp_cloud/split_message_reaction.json"),
            events(vec![msg(InboundMessageReceived {
                reaction: Some(Reaction {
                    message_external_id: "wamid.yzxyzx=".into(),
                    emoji: "😮".into(),
                }),
                ..m(1_697_044_456)
            })]),
        ),
        sample(
            "split_message_reply.json",
            include_bytes!("../fixtures/whatsapp_cloud/split_message_reply.json"),
            events(vec![msg(InboundMessageReceived {
                text: "replied text".into(),
                reply_to_external_id: "wamid.xyzxyz==".into(),
                ..m(1_697_044_746)
            })]),
        ),
        sample(
            "split_message_unsupported.json",
            include_bytes!("../fixtures/whatsapp_cloud/split_message_unsupported.json"),
            events(vec![msg(InboundMessageReceived {
                unsupported_type: "unsupported".into(),
                ..m(1_697_044_706)
            })]),
        ),
        sample(
            "split_status_sent.json",
            include_bytes!("../fixtures/whatsapp_cloud/split_status_sent.json"),
            events(vec![st(status(DeliveryState::Sent, "sent", 1_698_266_945))]),
        ),
        sample(
            "split_status_delivered.json",
            include_bytes!("../fixtures/whatsapp_cloud/split_status_delivered.json"),
            events(vec![st(status(
                DeliveryState::Delivered,
                "delivered",
                1_698_266_945,
            ))]),
        ),
        sample(
            "split_status_read.json",
            include_bytes!("../fixtures/whatsapp_cloud/split_status_read.json"),
            events(vec![st(status(DeliveryState::Read, "read", 1_689_380_458))]),
        ),
        sample(
            "split_status_played.json",
            include_bytes!("../fixtures/whatsapp_cloud/split_status_played.json"),
            events(vec![st(status(
                DeliveryState::Played,
                "played",
                1_689_380_458,
            ))]),
        ),
        sample(
            "split_status_failed.json",
            include_bytes!("../fixtures/whatsapp_cloud/split_status_failed.json"),
            events(vec![st(failed)]),
        ),
        sample(
            "doc_batched_entries.json",
            include_bytes!("../fixtures/whatsapp_cloud/doc_batched_entries.json"),
            events(vec![msg(sticker), msg(contacts), st(read)]),
        ),
        sample(
            "doc_other_object.json",
            include_bytes!("../fixtures/whatsapp_cloud/doc_other_object.json"),
            events(Vec::new()),
        ),
        sample(
            "doc_message_without_id.json",
            include_bytes!("../fixtures/whatsapp_cloud/doc_message_without_id.json"),
            Expect::Malformed("messages[0].id"),
        ),
    ]
}

/// WhatsApp's status names.
pub fn statuses() -> Vec<(&'static str, DeliveryState)> {
    vec![
        ("sent", DeliveryState::Sent),
        ("delivered", DeliveryState::Delivered),
        ("read", DeliveryState::Read),
        ("played", DeliveryState::Played),
        ("failed", DeliveryState::Failed),
    ]
}

/// What the API understood of a JSON request that passed
/// `telenet_emulators::whatsapp::check_message`.
pub fn understood(headers: &HeaderMap, body: &[u8]) -> Result<Understood, String> {
    let essence = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim);
    if essence != Some("application/json") {
        return Err(format!("content-type {essence:?}"));
    }
    let body: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    telenet_emulators::whatsapp::check_message(&body)?;
    let kind = body["type"].as_str().unwrap_or_default();
    let object = &body[kind];
    let (text, urls) = if kind == "text" {
        (object["body"].as_str().unwrap_or_default(), Vec::new())
    } else {
        (
            object["caption"].as_str().unwrap_or_default(),
            vec![object["link"].as_str().unwrap_or_default().to_owned()],
        )
    };
    Ok(Understood {
        recipient: body["to"].as_str().unwrap_or_default().to_owned(),
        text: text.to_owned(),
        attachment_urls: urls,
        idempotency_key: None,
    })
}
