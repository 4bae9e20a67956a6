//! Messages (PRODUCT.md 1, 2, 3, 5): what a contact sent, what a user
//! replied (text within its limit, or files), and how far a reply got:
//! delivery statuses only move forward, and media's outcome for an inbound
//! attachment never undoes a stored one.

use telenet_proto::common::v1::{Attachment, AttachmentState, Location};
use telenet_proto::conversations::v1::{MessageDirection, MessageStatus};
use telenet_proto::dispatch::v1::DeliveryState;

use super::PageRequest;
use super::conversation::Conversation;
use crate::error::{Error, require};

/// Longest idempotency key of a reply, in bytes.
pub const MAX_CLIENT_MESSAGE_ID_BYTES: usize = 200;

/// A message of a conversation, either way.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: String,
    pub workspace_id: String,
    pub conversation_id: String,
    pub channel_id: String,
    pub direction: MessageDirection,
    /// The replying user; empty for the contact's messages.
    pub author_user_id: String,
    pub text: String,
    pub attachments: Vec<Attachment>,
    pub status: MessageStatus,
    /// The provider's id of the message, once known.
    pub external_id: String,
    /// Why sending failed, if it did.
    pub error: String,
    pub created_at: i64,
    pub status_changed_at: i64,
    /// A location the contact shared, when the message is one.
    pub location: Option<Location>,
    /// Our id of the message this one quotes, when it is known.
    pub reply_to_message_id: String,
    /// The provider's kind of a message TELENET does not show; empty for
    /// the others.
    pub unsupported_type: String,
    /// The latest reaction of each contact on it.
    pub reactions: Vec<ReactionOf>,
    /// When its sender last edited it; `None` if never.
    pub edited_at: Option<i64>,
    /// When its sender unsent it (its text is kept); `None` if never.
    pub unsent_at: Option<i64>,
}

/// A contact's reaction on a message: who (their address on the channel)
/// and the emoji.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReactionOf {
    pub reactor_external_id: String,
    pub emoji: String,
}

/// Record `reactor`'s reaction: the latest emoji replaces theirs, an empty
/// one removes it. Returns whether anything changed.
pub fn apply_reaction(reactions: &mut Vec<ReactionOf>, reactor: &str, emoji: &str) -> bool {
    let existing = reactions
        .iter()
        .position(|r| r.reactor_external_id == reactor);
    match (existing, emoji.is_empty()) {
        (None, true) => false,
        (Some(i), true) => {
            reactions.remove(i);
            true
        }
        (Some(i), false) if reactions[i].emoji == emoji => false,
        (Some(i), false) => {
            reactions[i].emoji = emoji.to_owned();
            true
        }
        (None, false) => {
            reactions.push(ReactionOf {
                reactor_external_id: reactor.to_owned(),
                emoji: emoji.to_owned(),
            });
            true
        }
    }
}

/// How the sender changed an earlier message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Its text is now the new one.
    Edited,
    /// Unsent: shown as such, its text kept.
    Unsent,
}

/// What a change does to `message` at `at`: an edit replaces the text and
/// dates the edit, an unsend dates the unsend (once). Returns whether
/// anything changed.
pub fn apply_change(message: &mut Message, change: Change, text: &str, at: i64) -> bool {
    match change {
        Change::Edited => {
            if message.text == text && message.edited_at.is_some() {
                return false;
            }
            message.text = text.to_owned();
            message.edited_at = Some(at);
            true
        }
        Change::Unsent => {
            if message.unsent_at.is_some() {
                return false;
            }
            message.unsent_at = Some(at);
            true
        }
    }
}

/// A message from a contact, as ingress received it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InboundMessage {
    pub channel_id: String,
    /// The provider's id of the message: it is stored once.
    pub external_id: String,
    /// The sender's address on the channel, and the name it gave.
    pub sender_external_id: String,
    pub sender_display_name: String,
    pub text: String,
    pub attachments: Vec<Attachment>,
    /// When ingress accepted it (microseconds; the time of its event), 0
    /// when unknown.
    pub received_at: i64,
    /// A shared location, when the message is one.
    pub location: Option<Location>,
    /// The provider's id of the message it quotes, if any.
    pub reply_to_external_id: String,
    /// Set when TELENET does not show its kind (stored, never dropped).
    pub unsupported_type: String,
}

/// When a contact's message counts as arrived, at `now`: when ingress
/// accepted it. A contact's messages then read in the order they came in
/// even when a retry applies one after its successor (its first attempt
/// failed while the next went through). Never later than `now` (another
/// host's clock), and `now` when unknown.
pub fn arrival_time(received_at: i64, now: i64) -> i64 {
    if received_at > 0 {
        received_at.min(now)
    } else {
        now
    }
}

impl Message {
    /// The contact's message, received; it is dated by its arrival
    /// ([`arrival_time`]).
    pub fn inbound(
        id: String,
        conversation: &Conversation,
        received: &InboundMessage,
        now: i64,
    ) -> Self {
        Self {
            id,
            workspace_id: conversation.workspace_id.clone(),
            conversation_id: conversation.id.clone(),
            channel_id: received.channel_id.clone(),
            direction: MessageDirection::Inbound,
            author_user_id: String::new(),
            text: received.text.clone(),
            attachments: received.attachments.clone(),
            status: MessageStatus::Received,
            external_id: received.external_id.clone(),
            error: String::new(),
            created_at: arrival_time(received.received_at, now),
            status_changed_at: now,
            location: received.location.clone(),
            reply_to_message_id: String::new(),
            unsupported_type: received.unsupported_type.clone(),
            reactions: Vec::new(),
            edited_at: None,
            unsent_at: None,
        }
    }

    /// What the channel's own account sent from elsewhere (an echo): stored
    /// as an outbound message already sent, by no member, never dispatched.
    pub fn echo(
        id: String,
        conversation: &Conversation,
        received: &InboundMessage,
        now: i64,
    ) -> Self {
        Self {
            direction: MessageDirection::Outbound,
            status: MessageStatus::Sent,
            ..Self::inbound(id, conversation, received, now)
        }
    }

    /// A user's reply, waiting to be sent.
    pub fn reply(id: String, conversation: &Conversation, reply: &Reply, now: i64) -> Self {
        Self {
            id,
            workspace_id: conversation.workspace_id.clone(),
            conversation_id: conversation.id.clone(),
            channel_id: conversation.channel_id.clone(),
            direction: MessageDirection::Outbound,
            author_user_id: reply.author_user_id.clone(),
            text: reply.text.clone(),
            attachments: reply.attachments.clone(),
            status: MessageStatus::Pending,
            external_id: String::new(),
            error: String::new(),
            created_at: now,
            status_changed_at: now,
            location: None,
            reply_to_message_id: String::new(),
            unsupported_type: String::new(),
            reactions: Vec::new(),
            edited_at: None,
            unsent_at: None,
        }
    }
}

/// A user replying in a conversation (PRODUCT.md 2, 3, 5).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reply {
    pub workspace_id: String,
    pub conversation_id: String,
    pub author_user_id: String,
    pub text: String,
    pub attachments: Vec<Attachment>,
    /// The caller's idempotency key: a retried reply returns the first.
    pub client_message_id: String,
}

impl Reply {
    /// A reply says something (text or files), within the text limit.
    pub fn check(&self, max_text_chars: usize) -> Result<(), Error> {
        require("workspace_id", &self.workspace_id)?;
        require("conversation_id", &self.conversation_id)?;
        require("author_user_id", &self.author_user_id)?;
        if self.text.trim().is_empty() && self.attachments.is_empty() {
            return Err(Error::EmptyReply);
        }
        if self.text.chars().count() > max_text_chars {
            return Err(Error::TextTooLong(max_text_chars));
        }
        if self.client_message_id.len() > MAX_CLIENT_MESSAGE_ID_BYTES {
            return Err(Error::ClientMessageIdTooLong(MAX_CLIENT_MESSAGE_ID_BYTES));
        }
        Ok(())
    }
}

/// Which message a delivery status is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusTarget<'a> {
    /// Ours, as dispatch reports it.
    MessageId(&'a str),
    /// The provider's id on a channel, as the channel reports it.
    External {
        channel_id: &'a str,
        external_id: &'a str,
    },
}

/// A watermark status: every reply on the channel to the contact created
/// at or before `up_to` (microseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermark<'a> {
    pub channel_id: &'a str,
    pub contact_external_id: &'a str,
    pub up_to: i64,
}

/// The message status a delivery state reports; `None` for a state that
/// tells nothing new (still pending).
pub fn status_reported(state: DeliveryState) -> Option<MessageStatus> {
    match state {
        DeliveryState::Sent => Some(MessageStatus::Sent),
        DeliveryState::Delivered => Some(MessageStatus::Delivered),
        DeliveryState::Read => Some(MessageStatus::Read),
        DeliveryState::Played => Some(MessageStatus::Played),
        DeliveryState::Failed => Some(MessageStatus::Failed),
        DeliveryState::Pending | DeliveryState::Unspecified => None,
    }
}

/// Statuses move forward only (a late "delivered" never undoes "read"); a
/// failure ends a message that was not delivered yet; received messages
/// have no delivery.
pub fn status_moves_forward(current: MessageStatus, next: MessageStatus) -> bool {
    fn rank(s: MessageStatus) -> i32 {
        match s {
            MessageStatus::Pending => 0,
            MessageStatus::Sent => 1,
            MessageStatus::Delivered => 2,
            MessageStatus::Read => 3,
            MessageStatus::Played => 4,
            _ => -1,
        }
    }
    match (current, next) {
        (MessageStatus::Failed, _) | (MessageStatus::Received, _) => false,
        (c, MessageStatus::Failed) => matches!(c, MessageStatus::Pending | MessageStatus::Sent),
        (c, n) => rank(n) > rank(c),
    }
}

/// A message's new delivery status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryUpdate {
    pub status: MessageStatus,
    pub external_id: String,
    pub error: String,
}

/// What a reported status changes on `message`; `None` when it would move
/// backwards. A report without the provider's id keeps the known one.
pub fn delivery_update(
    message: &Message,
    reported: MessageStatus,
    external_id: &str,
    error: &str,
) -> Option<DeliveryUpdate> {
    if !status_moves_forward(message.status, reported) {
        return None;
    }
    let external_id = if external_id.is_empty() {
        message.external_id.clone()
    } else {
        external_id.to_owned()
    };
    Some(DeliveryUpdate {
        status: reported,
        external_id,
        error: error.to_owned(),
    })
}

/// A provider's error code kept with the error it describes
/// (`131047: Re-engagement message`); either alone when the other is empty.
pub fn error_with_code(code: &str, error: &str) -> String {
    match (code.trim(), error.trim()) {
        ("", error) => error.to_owned(),
        (code, "") => code.to_owned(),
        (code, error) if error.starts_with(code) => error.to_owned(),
        (code, error) => format!("{code}: {error}"),
    }
}

/// Media's outcome for attachment `index` of a message replaces what was
/// announced (state, blob, error; size, type and duration when known). A
/// ready attachment never goes back to failed. Returns whether the
/// attachments are to be stored again.
pub fn apply_attachment_outcome(
    attachments: &mut [Attachment],
    message_id: &str,
    index: u32,
    outcome: &Attachment,
) -> Result<bool, Error> {
    let Some(current) = usize::try_from(index)
        .ok()
        .and_then(|i| attachments.get_mut(i))
    else {
        return Err(Error::NoSuchAttachment {
            message_id: message_id.to_owned(),
            index,
        });
    };
    let ready = AttachmentState::Ready as i32;
    if current.state == ready && outcome.state != ready {
        return Ok(false);
    }
    current.state = outcome.state;
    current.blob_id = outcome.blob_id.clone();
    current.error = outcome.error.clone();
    if outcome.size_bytes > 0 {
        current.size_bytes = outcome.size_bytes;
    }
    if !outcome.mime_type.is_empty() {
        current.mime_type = outcome.mime_type.clone();
    }
    if outcome.duration_ms > 0 {
        current.duration_ms = outcome.duration_ms;
    }
    Ok(true)
}

/// A conversation's history, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessagesQuery {
    pub workspace_id: String,
    pub conversation_id: String,
    pub page: PageRequest,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::conversation::open_conversation;

    #[test]
    fn a_message_is_dated_by_its_arrival_at_ingress() {
        assert_eq!(arrival_time(100, 250), 100);
        // Unknown: when it is applied.
        assert_eq!(arrival_time(0, 250), 250);
        // Another host's clock ahead of ours: never in the future.
        assert_eq!(arrival_time(300, 250), 250);
    }

    #[test]
    fn statuses_never_go_backwards() {
        use MessageStatus::*;
        assert!(status_moves_forward(Pending, Sent));
        assert!(status_moves_forward(Sent, Delivered));
        assert!(status_moves_forward(Pending, Read));
        assert!(!status_moves_forward(Read, Delivered));
        assert!(!status_moves_forward(Delivered, Sent));
        assert!(status_moves_forward(Sent, Failed));
        assert!(!status_moves_forward(Delivered, Failed));
        assert!(!status_moves_forward(Failed, Sent));
        assert!(!status_moves_forward(Received, Sent));
    }

    #[test]
    fn pending_reports_say_nothing_new() {
        assert_eq!(status_reported(DeliveryState::Pending), None);
        assert_eq!(status_reported(DeliveryState::Unspecified), None);
        assert_eq!(
            status_reported(DeliveryState::Read),
            Some(MessageStatus::Read)
        );
        assert_eq!(
            status_reported(DeliveryState::Failed),
            Some(MessageStatus::Failed)
        );
    }

    fn sent_reply() -> Message {
        let conversation = open_conversation("c".into(), "ws", "contact", "ch", "+34", 1);
        let reply = Reply {
            text: "hola".into(),
            ..Default::default()
        };
        Message {
            status: MessageStatus::Sent,
            external_id: "prov-1".into(),
            ..Message::reply("m".into(), &conversation, &reply, 2)
        }
    }

    #[test]
    fn a_report_without_the_provider_id_keeps_the_known_one() {
        let update =
            delivery_update(&sent_reply(), MessageStatus::Read, "", "").expect("moves forward");
        assert_eq!(update.external_id, "prov-1");
        let update = delivery_update(&sent_reply(), MessageStatus::Failed, "prov-2", "rejected")
            .expect("fails");
        assert_eq!(
            (update.external_id.as_str(), update.error.as_str()),
            ("prov-2", "rejected")
        );
        assert_eq!(
            delivery_update(&sent_reply(), MessageStatus::Pending, "", ""),
            None
        );
    }

    #[test]
    fn replies_wait_to_be_sent_and_inbound_messages_are_received() {
        let conversation = open_conversation("c".into(), "ws", "contact", "ch", "+34", 1);
        let reply = Reply {
            author_user_id: "ari".into(),
            text: "hola".into(),
            ..Default::default()
        };
        let out = Message::reply("m1".into(), &conversation, &reply, 5);
        assert_eq!(
            (out.direction, out.status, out.channel_id.as_str()),
            (MessageDirection::Outbound, MessageStatus::Pending, "ch")
        );
        let received = InboundMessage {
            channel_id: "ch".into(),
            external_id: "wamid.1".into(),
            text: "hi".into(),
            ..Default::default()
        };
        let inbound = Message::inbound("m2".into(), &conversation, &received, 6);
        assert_eq!(
            (
                inbound.direction,
                inbound.status,
                inbound.external_id.as_str()
            ),
            (
                MessageDirection::Inbound,
                MessageStatus::Received,
                "wamid.1"
            )
        );
        assert!(inbound.author_user_id.is_empty());
    }

    #[test]
    fn a_reply_says_something_within_its_limits() {
        let reply = |text: &str, files: usize, client_id: &str| Reply {
            workspace_id: "ws".into(),
            conversation_id: "c".into(),
            author_user_id: "ari".into(),
            text: text.into(),
            attachments: vec![Attachment::default(); files],
            client_message_id: client_id.into(),
        };
        assert!(reply("¡Hola! 👋", 0, "").check(8).is_ok());
        assert!(reply("", 1, "").check(8).is_ok());
        assert!(matches!(
            reply(" \n", 0, "").check(8),
            Err(Error::EmptyReply)
        ));
        // Characters, not bytes.
        assert!(reply(&"ñ".repeat(8), 0, "").check(8).is_ok());
        assert!(matches!(
            reply(&"ñ".repeat(9), 0, "").check(8),
            Err(Error::TextTooLong(8))
        ));
        assert!(matches!(
            reply("x", 0, &"k".repeat(201)).check(8),
            Err(Error::ClientMessageIdTooLong(200))
        ));
        let anonymous = Reply {
            author_user_id: " ".into(),
            ..reply("x", 0, "")
        };
        assert_eq!(
            anonymous.check(8).expect_err("who").to_string(),
            "author_user_id is required"
        );
    }

    fn pending(url: &str) -> Attachment {
        Attachment {
            url: url.into(),
            mime_type: "audio/ogg".into(),
            size_bytes: 10,
            state: AttachmentState::Pending as i32,
            ..Default::default()
        }
    }

    #[test]
    fn media_outcomes_replace_what_was_announced() {
        let mut attachments = vec![pending("a"), pending("b")];
        let ready = Attachment {
            state: AttachmentState::Ready as i32,
            blob_id: "blob".into(),
            mime_type: "audio/ogg; codecs=opus".into(),
            duration_ms: 1500,
            ..Default::default()
        };
        assert!(apply_attachment_outcome(&mut attachments, "m", 1, &ready).expect("applied"));
        let b = &attachments[1];
        assert_eq!(b.state, AttachmentState::Ready as i32);
        assert_eq!(b.blob_id, "blob");
        assert_eq!(b.mime_type, "audio/ogg; codecs=opus");
        assert_eq!(b.duration_ms, 1500);
        // Unknown sizes keep the announced one; the URL is never replaced.
        assert_eq!((b.size_bytes, b.url.as_str()), (10, "b"));
        assert_eq!(attachments[0], pending("a"));
    }

    #[test]
    fn a_ready_attachment_never_goes_back_to_failed() {
        let ready = Attachment {
            state: AttachmentState::Ready as i32,
            blob_id: "blob".into(),
            ..pending("a")
        };
        let mut attachments = vec![ready.clone()];
        let failed = Attachment {
            state: AttachmentState::Failed as i32,
            error: "HTTP 404".into(),
            ..Default::default()
        };
        assert!(!apply_attachment_outcome(&mut attachments, "m", 0, &failed).expect("ignored"));
        assert_eq!(attachments[0], ready);
        // A later ready outcome still replaces it.
        let again = Attachment {
            blob_id: "blob2".into(),
            ..ready.clone()
        };
        assert!(apply_attachment_outcome(&mut attachments, "m", 0, &again).expect("applied"));
        assert_eq!(attachments[0].blob_id, "blob2");
    }

    #[test]
    fn outcomes_for_missing_attachments_are_refused() {
        let mut attachments = vec![pending("a")];
        let err = apply_attachment_outcome(&mut attachments, "m1", 7, &Attachment::default())
            .expect_err("no attachment 7");
        assert_eq!(err.to_string(), "message m1 has no attachment 7");
    }

    #[test]
    fn each_contact_keeps_their_latest_reaction_and_an_empty_one_removes_it() {
        let mut reactions = Vec::new();
        assert!(apply_reaction(&mut reactions, "+34", "👍"));
        assert!(
            !apply_reaction(&mut reactions, "+34", "👍"),
            "the same again"
        );
        assert!(apply_reaction(&mut reactions, "+35", "❤️"));
        assert!(apply_reaction(&mut reactions, "+34", "🙏"));
        let emojis: Vec<_> = reactions.iter().map(|r| r.emoji.as_str()).collect();
        assert_eq!(emojis, ["🙏", "❤️"]);
        assert!(apply_reaction(&mut reactions, "+34", ""));
        assert!(
            !apply_reaction(&mut reactions, "+34", ""),
            "nothing to remove"
        );
        assert_eq!(reactions.len(), 1);
        assert_eq!(reactions[0].reactor_external_id, "+35");
    }

    #[test]
    fn an_edit_replaces_the_text_and_an_unsend_keeps_it() {
        let mut m = sent_reply();
        assert!(apply_change(&mut m, Change::Edited, "hola de nuevo", 10));
        assert_eq!((m.text.as_str(), m.edited_at), ("hola de nuevo", Some(10)));
        assert!(!apply_change(&mut m, Change::Edited, "hola de nuevo", 11));
        assert!(apply_change(&mut m, Change::Unsent, "", 12));
        assert_eq!((m.text.as_str(), m.unsent_at), ("hola de nuevo", Some(12)));
        assert!(!apply_change(&mut m, Change::Unsent, "", 13), "unsent once");
        assert_eq!(m.unsent_at, Some(12));
    }

    #[test]
    fn a_providers_error_code_is_kept_with_its_error() {
        assert_eq!(
            error_with_code("131047", "Re-engagement message"),
            "131047: Re-engagement message"
        );
        assert_eq!(error_with_code("", "rejected"), "rejected");
        assert_eq!(error_with_code("131047", ""), "131047");
        assert_eq!(
            error_with_code("131047", "131047: said already"),
            "131047: said already"
        );
    }

    #[test]
    fn played_follows_read_and_echoes_are_sent_replies_by_nobody() {
        use MessageStatus::*;
        assert!(status_moves_forward(Read, Played));
        assert!(!status_moves_forward(Played, Read));
        assert!(!status_moves_forward(Played, Delivered));
        let conversation = open_conversation("c".into(), "ws", "contact", "ch", "+34", 1);
        let echoed = InboundMessage {
            channel_id: "ch".into(),
            external_id: "mid.1".into(),
            text: "from the phone".into(),
            location: Some(Location::default()),
            ..Default::default()
        };
        let echo = Message::echo("m".into(), &conversation, &echoed, 5);
        assert_eq!(
            (echo.direction, echo.status, echo.external_id.as_str()),
            (MessageDirection::Outbound, MessageStatus::Sent, "mid.1")
        );
        assert!(echo.author_user_id.is_empty());
        assert_eq!(echo.location, Some(Location::default()));
    }
}
