//! Telegram updates read as canonical events.
//!
//! One webhook is one `Update` (core.telegram.org/bots/api#update): its
//! `update_id` is the delivery id; of its optional fields TELENET reads
//! `message` (a new message) and `edited_message` (a new text for an
//! earlier one). Every other kind of update (`callback_query`,
//! `my_chat_member`, `channel_post`, …) is acknowledged and gives no event.
//!
//! Readers are tolerant: unknown fields are ignored and `null` is read as
//! absent. Only what identifies a message is required (`update_id`,
//! `message_id`, `chat.id`).

use serde::Deserialize;
use telenet_proto::common::v1::{
    Attachment, AttachmentKind, AttachmentState, ChannelKind, ChannelProvider, Location,
    MessageChange,
};
use telenet_proto::events::v1::{InboundMessageReceived, Sender};

use super::API_HOST;
use crate::config::api_base;
use crate::{ChannelCredentials, Inbound, InboundEvent};

#[derive(Debug, Deserialize)]
struct Update {
    #[serde(default)]
    update_id: Option<i64>,
    #[serde(default)]
    message: Option<serde_json::Value>,
    #[serde(default)]
    edited_message: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
struct Message {
    #[serde(default)]
    message_id: Option<i64>,
    #[serde(default)]
    from: Option<User>,
    #[serde(default)]
    chat: Option<Chat>,
    #[serde(default)]
    date: Option<i64>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    caption: Option<String>,
    #[serde(default)]
    photo: Option<Vec<File>>,
    #[serde(default)]
    voice: Option<File>,
    #[serde(default)]
    audio: Option<File>,
    #[serde(default)]
    video: Option<File>,
    #[serde(default)]
    video_note: Option<File>,
    #[serde(default)]
    animation: Option<File>,
    #[serde(default)]
    document: Option<File>,
    #[serde(default)]
    sticker: Option<Sticker>,
    #[serde(default)]
    location: Option<Point>,
    #[serde(default)]
    venue: Option<Venue>,
    #[serde(default)]
    reply_to_message: Option<Replied>,
}

#[derive(Debug, Default, Deserialize)]
struct User {
    #[serde(default)]
    first_name: Option<String>,
    #[serde(default)]
    last_name: Option<String>,
    #[serde(default)]
    username: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Chat {
    #[serde(default)]
    id: Option<i64>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    first_name: Option<String>,
    #[serde(default)]
    last_name: Option<String>,
    #[serde(default)]
    username: Option<String>,
}

/// PhotoSize, Voice, Audio, Video, VideoNote, Animation and Document share
/// these fields.
#[derive(Debug, Default, Deserialize)]
struct File {
    #[serde(default)]
    file_id: Option<String>,
    #[serde(default)]
    file_size: Option<u64>,
    #[serde(default)]
    width: Option<u64>,
    #[serde(default)]
    height: Option<u64>,
    /// Seconds.
    #[serde(default)]
    duration: Option<u64>,
    #[serde(default)]
    mime_type: Option<String>,
    #[serde(default)]
    file_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Sticker {
    #[serde(default)]
    file_id: Option<String>,
    #[serde(default)]
    file_size: Option<u64>,
    #[serde(default)]
    is_animated: Option<bool>,
    #[serde(default)]
    is_video: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
struct Point {
    #[serde(default)]
    latitude: Option<f64>,
    #[serde(default)]
    longitude: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
struct Venue {
    #[serde(default)]
    location: Option<Point>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    address: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Replied {
    #[serde(default)]
    message_id: Option<i64>,
    #[serde(default)]
    chat: Option<Chat>,
}

/// Message fields that are content TELENET does not show: such a message
/// is kept as unsupported, named by the field.
const UNSUPPORTED: [&str; 14] = [
    "contact",
    "poll",
    "dice",
    "game",
    "invoice",
    "story",
    "paid_media",
    "giveaway",
    "giveaway_winners",
    "checklist",
    "successful_payment",
    "passport_data",
    "web_app_data",
    "users_shared",
];

/// Message fields of service messages (members joining, pins, titles):
/// events of the chat, not messages of a contact; acknowledged without an
/// event.
const SERVICE: [&str; 22] = [
    "new_chat_members",
    "left_chat_member",
    "new_chat_title",
    "new_chat_photo",
    "delete_chat_photo",
    "group_chat_created",
    "supergroup_chat_created",
    "channel_chat_created",
    "message_auto_delete_timer_changed",
    "migrate_to_chat_id",
    "migrate_from_chat_id",
    "pinned_message",
    "forum_topic_created",
    "forum_topic_edited",
    "forum_topic_closed",
    "forum_topic_reopened",
    "video_chat_scheduled",
    "video_chat_started",
    "video_chat_ended",
    "video_chat_participants_invited",
    "write_access_allowed",
    "proximity_alert_triggered",
];

/// The events of one update `body`, delivered on `channel_id`; `Err`
/// names what is missing or unreadable.
pub fn parse_update(
    channel: &ChannelCredentials,
    channel_id: &str,
    body: &[u8],
) -> Result<Inbound, String> {
    let update: Update =
        serde_json::from_slice(body).map_err(|e| format!("the update is not readable: {e}"))?;
    let update_id = update
        .update_id
        .ok_or_else(|| "update_id is missing".to_owned())?
        .to_string();
    let mut events = Vec::new();
    let (raw, change, field) = match (update.message, update.edited_message) {
        (Some(m), _) if !m.is_null() => (m, MessageChange::Unspecified, "message"),
        (_, Some(m)) if !m.is_null() => (m, MessageChange::Edited, "edited_message"),
        _ => {
            return Ok(Inbound {
                delivery_id: Some(update_id),
                events,
            });
        }
    };
    if let Some(event) = read_message(channel, channel_id, &update_id, &raw, change, field)? {
        events.push(InboundEvent::Message(event));
    }
    Ok(Inbound {
        delivery_id: Some(update_id),
        events,
    })
}

fn read_message(
    channel: &ChannelCredentials,
    channel_id: &str,
    update_id: &str,
    raw: &serde_json::Value,
    change: MessageChange,
    field: &str,
) -> Result<Option<InboundMessageReceived>, String> {
    let message = Message::deserialize(raw).map_err(|e| format!("{field} is not readable: {e}"))?;
    let message_id = message
        .message_id
        .ok_or_else(|| format!("{field}.message_id is missing"))?;
    let chat = message.chat.as_ref();
    let chat_id = chat
        .and_then(|c| c.id)
        .ok_or_else(|| format!("{field}.chat.id is missing"))?;
    let base = api_base(channel, API_HOST);
    let mut event = InboundMessageReceived {
        channel_id: channel_id.to_owned(),
        channel_kind: ChannelKind::Telegram as i32,
        provider: ChannelProvider::Telegram as i32,
        webhook_id: update_id.to_owned(),
        external_id: format!("{chat_id}:{message_id}"),
        sender: Some(Sender {
            external_id: chat_id.to_string(),
            display_name: display_name(message.from.as_ref(), chat),
        }),
        text: message
            .text
            .clone()
            .or_else(|| message.caption.clone())
            .unwrap_or_default(),
        attachments: attachments(&message, &base),
        ..Default::default()
    };
    if let Some(date) = message.date {
        event.sent_at.get_or_insert_with(Default::default).seconds = date;
    }
    event.location = location(&message);
    let replied = message.reply_to_message.as_ref();
    if let Some(id) = replied.and_then(|r| r.message_id) {
        let replied_chat = replied
            .and_then(|r| r.chat.as_ref())
            .and_then(|c| c.id)
            .unwrap_or(chat_id);
        event.reply_to_external_id = format!("{replied_chat}:{id}");
    }
    if change != MessageChange::Unspecified {
        // An edit changes the text (or caption, or a live location's
        // position); the files of the message were announced with it.
        event.change = change as i32;
        event.attachments.clear();
    }
    let shown = !event.text.is_empty() || !event.attachments.is_empty() || event.location.is_some();
    if !shown && change == MessageChange::Unspecified {
        let keys = raw.as_object();
        let has = |name: &str| keys.is_some_and(|k| k.get(name).is_some_and(|v| !v.is_null()));
        if let Some(kind) = UNSUPPORTED.iter().find(|k| has(k)) {
            event.unsupported_type = (*kind).to_owned();
        } else if SERVICE.iter().any(|k| has(k)) {
            return Ok(None);
        } else {
            event.unsupported_type = "unknown".to_owned();
        }
    }
    Ok(Some(event))
}

/// The sender's name: `first_name last_name`, else `@username`; from the
/// chat when the message has no `from`.
fn display_name(from: Option<&User>, chat: Option<&Chat>) -> String {
    let name = |first: &Option<String>, last: &Option<String>, username: &Option<String>| {
        let full = [first, last]
            .iter()
            .filter_map(|p| p.as_deref())
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        if full.is_empty() {
            username
                .as_deref()
                .filter(|u| !u.is_empty())
                .map(|u| format!("@{u}"))
                .unwrap_or_default()
        } else {
            full
        }
    };
    match (from, chat) {
        (Some(u), _) => name(&u.first_name, &u.last_name, &u.username),
        (None, Some(c)) => {
            let person = name(&c.first_name, &c.last_name, &c.username);
            if person.is_empty() {
                c.title.clone().unwrap_or_default()
            } else {
                person
            }
        }
        (None, None) => String::new(),
    }
}

/// The token-free reference of a file: `{api}/getFile?file_id=<id>`.
pub fn file_reference(base: &str, file_id: &str) -> String {
    let encoded: String = url::form_urlencoded::byte_serialize(file_id.as_bytes()).collect();
    format!("{base}/getFile?file_id={encoded}")
}

/// The file id of a reference [`file_reference`] made for `channel`.
pub fn file_id_of(channel: &ChannelCredentials, reference: &str) -> Option<String> {
    let prefix = format!("{}/getFile?", api_base(channel, API_HOST));
    let query = reference.strip_prefix(&prefix)?;
    let mut ids = url::form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == "file_id")
        .map(|(_, v)| v.into_owned());
    let id = ids.next().filter(|id| !id.is_empty())?;
    ids.next().is_none().then_some(id)
}

fn attachment(
    base: &str,
    kind: AttachmentKind,
    file_id: Option<&String>,
    mime_type: &str,
) -> Option<Attachment> {
    let file_id = file_id.filter(|id| !id.is_empty())?;
    Some(Attachment {
        kind: kind as i32,
        url: file_reference(base, file_id),
        mime_type: mime_type.to_owned(),
        state: AttachmentState::Pending as i32,
        ..Default::default()
    })
}

fn of_file(
    base: &str,
    kind: AttachmentKind,
    file: &File,
    default_mime: &str,
) -> Option<Attachment> {
    let mime = file
        .mime_type
        .as_deref()
        .filter(|m| !m.is_empty())
        .unwrap_or(default_mime);
    let mut a = attachment(base, kind, file.file_id.as_ref(), mime)?;
    a.size_bytes = file.file_size.unwrap_or(0);
    a.duration_ms = file.duration.unwrap_or(0).saturating_mul(1000);
    a.file_name = file.file_name.clone().unwrap_or_default();
    Some(a)
}

fn attachments(message: &Message, base: &str) -> Vec<Attachment> {
    let mut out = Vec::new();
    // Telegram sends every size it made; the largest is the picture.
    if let Some(sizes) = &message.photo {
        let largest = sizes
            .iter()
            .filter(|p| p.file_id.is_some())
            .max_by_key(|p| {
                (
                    p.width.unwrap_or(0).saturating_mul(p.height.unwrap_or(0)),
                    p.file_size.unwrap_or(0),
                )
            });
        if let Some(photo) = largest {
            out.extend(of_file(base, AttachmentKind::Image, photo, "image/jpeg"));
        }
    }
    if let Some(voice) = &message.voice {
        out.extend(of_file(base, AttachmentKind::Voice, voice, "audio/ogg"));
    }
    if let Some(audio) = &message.audio {
        out.extend(of_file(base, AttachmentKind::Audio, audio, "audio/mpeg"));
    }
    if let Some(video) = &message.video {
        out.extend(of_file(base, AttachmentKind::Video, video, "video/mp4"));
    }
    if let Some(note) = &message.video_note {
        out.extend(of_file(base, AttachmentKind::Video, note, "video/mp4"));
    }
    // An animation comes with a `document` of the same file: read once.
    match (&message.document, &message.animation) {
        (Some(document), _) => {
            out.extend(of_file(
                base,
                AttachmentKind::File,
                document,
                "application/octet-stream",
            ));
        }
        (None, Some(animation)) => {
            out.extend(of_file(base, AttachmentKind::Video, animation, "video/mp4"));
        }
        (None, None) => {}
    }
    if let Some(sticker) = &message.sticker {
        let mime = if sticker.is_animated == Some(true) {
            "application/x-tgsticker"
        } else if sticker.is_video == Some(true) {
            "video/webm"
        } else {
            "image/webp"
        };
        if let Some(mut a) = attachment(
            base,
            AttachmentKind::Sticker,
            sticker.file_id.as_ref(),
            mime,
        ) {
            a.size_bytes = sticker.file_size.unwrap_or(0);
            out.push(a);
        }
    }
    out
}

fn location(message: &Message) -> Option<Location> {
    let point = |p: &Point| Some((p.latitude?, p.longitude?));
    let venue = message.venue.as_ref().and_then(|v| {
        let (latitude, longitude) = v.location.as_ref().and_then(point)?;
        Some(Location {
            latitude,
            longitude,
            name: v.title.clone().unwrap_or_default(),
            address: v.address.clone().unwrap_or_default(),
        })
    });
    if venue.is_some() {
        return venue;
    }
    let (latitude, longitude) = message.location.as_ref().and_then(point)?;
    Some(Location {
        latitude,
        longitude,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel() -> ChannelCredentials {
        ChannelCredentials::default()
    }

    fn parse(body: &str) -> Result<Inbound, String> {
        parse_update(&channel(), "ch-1", body.as_bytes())
    }

    fn only_message(body: &str) -> InboundMessageReceived {
        let inbound = parse(body).expect("parses");
        match inbound.events.as_slice() {
            [InboundEvent::Message(m)] => m.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn file_references_carry_no_token_and_round_trip() {
        let reference = file_reference(API_HOST, "AwACAgIAAx0=");
        assert_eq!(
            reference,
            "https://api.telegram.org/getFile?file_id=AwACAgIAAx0%3D"
        );
        assert_eq!(
            file_id_of(&channel(), &reference).as_deref(),
            Some("AwACAgIAAx0=")
        );
        assert_eq!(
            file_id_of(&channel(), "https://evil.example/getFile?file_id=x"),
            None
        );
        assert_eq!(
            file_id_of(&channel(), "https://api.telegram.org/getFile?file_id="),
            None
        );
        assert_eq!(
            file_id_of(
                &channel(),
                "https://api.telegram.org/getFile?file_id=a&file_id=b"
            ),
            None
        );
    }

    #[test]
    fn the_largest_photo_is_the_picture() {
        let m = only_message(
            r#"{"update_id":1,"message":{"message_id":2,"chat":{"id":3},"photo":[
                {"file_id":"small","width":90,"height":60,"file_size":1000},
                {"file_id":"large","width":1280,"height":853,"file_size":90000},
                {"file_id":"medium","width":320,"height":213,"file_size":9000}]}}"#,
        );
        assert_eq!(m.attachments.len(), 1);
        assert!(m.attachments[0].url.ends_with("file_id=large"));
        assert_eq!(m.attachments[0].mime_type, "image/jpeg");
    }

    #[test]
    fn service_messages_give_no_event_and_unknown_content_is_unsupported() {
        let joined = parse(
            r#"{"update_id":1,"message":{"message_id":2,"chat":{"id":-3},"new_chat_members":[{"id":4}]}}"#,
        )
        .expect("parses");
        assert!(joined.events.is_empty());
        let m = only_message(
            r#"{"update_id":1,"message":{"message_id":2,"chat":{"id":3},"something_new":{}}}"#,
        );
        assert_eq!(m.unsupported_type, "unknown");
        let m = only_message(
            r#"{"update_id":1,"message":{"message_id":2,"chat":{"id":3},"dice":{"emoji":"🎲","value":4}}}"#,
        );
        assert_eq!(m.unsupported_type, "dice");
    }

    #[test]
    fn edits_carry_the_new_caption_or_position_but_not_the_files_again() {
        let m = only_message(
            r#"{"update_id":1,"edited_message":{"message_id":2,"chat":{"id":3},"date":5,"edit_date":9,
                "caption":"now in red","photo":[{"file_id":"p","width":1,"height":1}]}}"#,
        );
        assert_eq!(m.change, MessageChange::Edited as i32);
        assert_eq!(
            (m.external_id.as_str(), m.text.as_str()),
            ("3:2", "now in red")
        );
        assert!(m.attachments.is_empty());
        let live = only_message(
            r#"{"update_id":1,"edited_message":{"message_id":2,"chat":{"id":3},"location":{"latitude":1.5,"longitude":2.5,"live_period":900}}}"#,
        );
        assert_eq!(live.change, MessageChange::Edited as i32);
        assert_eq!(
            live.location.map(|l| (l.latitude, l.longitude)),
            Some((1.5, 2.5))
        );
        assert_eq!(live.unsupported_type, "");
    }

    #[test]
    fn missing_ids_are_malformed_and_name_the_field() {
        assert_eq!(
            parse(r#"{"message":{}}"#),
            Err("update_id is missing".to_owned())
        );
        assert_eq!(
            parse(r#"{"update_id":1,"message":{"chat":{"id":1}}}"#),
            Err("message.message_id is missing".to_owned())
        );
        assert_eq!(
            parse(r#"{"update_id":1,"edited_message":{"message_id":1,"chat":{}}}"#),
            Err("edited_message.chat.id is missing".to_owned())
        );
        let e = parse(r#"{"update_id":1,"message":{"message_id":1,"chat":{"id":1},"photo":"x"}}"#)
            .expect_err("a photo that is not a list");
        assert!(e.starts_with("message is not readable"), "{e}");
        assert!(
            parse("not json")
                .expect_err("not json")
                .starts_with("the update is not readable")
        );
    }

    #[test]
    fn names_fall_back_to_the_username_then_the_chat() {
        let user = |first: Option<&str>, last: Option<&str>, username: Option<&str>| User {
            first_name: first.map(str::to_owned),
            last_name: last.map(str::to_owned),
            username: username.map(str::to_owned),
        };
        assert_eq!(
            display_name(Some(&user(Some("Ana"), Some("Ruiz"), Some("ana"))), None),
            "Ana Ruiz"
        );
        assert_eq!(
            display_name(Some(&user(None, None, Some("ana"))), None),
            "@ana"
        );
        assert_eq!(display_name(Some(&user(Some(""), None, None)), None), "");
        let chat = Chat {
            title: Some("Shop group".into()),
            ..Default::default()
        };
        assert_eq!(display_name(None, Some(&chat)), "Shop group");
    }
}
