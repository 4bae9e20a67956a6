//! Conversations (PRODUCT.md 1, 7, 8, 9): a contact's message opens an
//! unassigned conversation or joins its open one; replying to an unassigned
//! conversation assigns it to the replier; a user assigns or unassigns by
//! hand; closing takes it out of the queue, unassigned from everyone, with
//! an optional closing note.

use std::time::Duration;

use telenet_proto::conversations::v1::ConversationStatus;

use super::PageRequest;
use crate::error::{Error, require};

/// Longest closing-note category, in characters.
pub const MAX_CLOSING_CATEGORY_CHARS: usize = 100;
/// Longest closing-note summary, in characters.
pub const MAX_CLOSING_SUMMARY_CHARS: usize = 10_000;

/// A contact's conversation on one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    pub id: String,
    pub workspace_id: String,
    pub contact_id: String,
    pub channel_id: String,
    /// The contact's address on the channel: where replies go.
    pub contact_external_id: String,
    pub status: ConversationStatus,
    /// Who is answering; `None` while unassigned.
    pub assignee: Option<String>,
    pub opened_at: i64,
    /// When it was closed and the note left then; `None` while open.
    pub closed: Option<Closed>,
    pub last_message_at: i64,
    pub message_count: u32,
    /// When the contact last wrote in it; `None` before they did.
    pub last_inbound_at: Option<i64>,
    /// When its channel's reply window closes (not stored: it follows the
    /// channel); `None` when the channel has none or it is not known.
    pub reply_window_closes_at: Option<i64>,
}

/// How a conversation was closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    pub at: i64,
    pub note: ClosingNote,
}

/// The closing note (PRODUCT.md 9): a category, a summary, and who closed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClosingNote {
    pub category: String,
    pub summary: String,
    pub closed_by: String,
}

impl Conversation {
    pub fn is_closed(&self) -> bool {
        self.status == ConversationStatus::Closed
    }
}

/// A new open conversation for a contact on a channel: new conversations
/// start unassigned (PRODUCT.md 1).
pub fn open_conversation(
    id: String,
    workspace_id: &str,
    contact_id: &str,
    channel_id: &str,
    contact_external_id: &str,
    now: i64,
) -> Conversation {
    Conversation {
        id,
        workspace_id: workspace_id.to_owned(),
        contact_id: contact_id.to_owned(),
        channel_id: channel_id.to_owned(),
        contact_external_id: contact_external_id.to_owned(),
        status: ConversationStatus::Open,
        assignee: None,
        opened_at: now,
        closed: None,
        last_message_at: now,
        message_count: 0,
        last_inbound_at: None,
        reply_window_closes_at: None,
    }
}

/// How long after a contact's last message a channel accepts free-form
/// replies, and whose rule that is (named in refusals).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyWindow {
    /// Who sets it, as people know it: "WhatsApp", "Messenger".
    pub name: String,
    pub length: Duration,
}

impl ReplyWindow {
    /// When the window opened by a contact's message at `last_inbound_at`
    /// (microseconds) closes.
    pub fn closes_at(&self, last_inbound_at: i64) -> i64 {
        let length = i64::try_from(self.length.as_micros()).unwrap_or(i64::MAX);
        last_inbound_at.saturating_add(length)
    }

    /// The window's length as people say it: "24 hours", "7 days".
    pub fn length_in_words(&self) -> String {
        let secs = self.length.as_secs();
        let (n, unit) = if secs >= 2 * 86_400 && secs.is_multiple_of(86_400) {
            (secs / 86_400, "day")
        } else if secs >= 3_600 && secs.is_multiple_of(3_600) {
            (secs / 3_600, "hour")
        } else if secs >= 60 && secs.is_multiple_of(60) {
            (secs / 60, "minute")
        } else {
            (secs, "second")
        };
        if n == 1 {
            format!("1 {unit}")
        } else {
            format!("{n} {unit}s")
        }
    }
}

/// The conversation as shown: with when its channel's reply window closes
/// (`window` is the channel's; `None`: it has none, or it is not known).
pub fn with_reply_window(
    mut conversation: Conversation,
    window: Option<&ReplyWindow>,
) -> Conversation {
    conversation.reply_window_closes_at = window
        .zip(conversation.last_inbound_at)
        .map(|(w, at)| w.closes_at(at));
    conversation
}

/// A reply goes out only while the channel's reply window is open at
/// `now`. A contact who never wrote opened no window; the channel then
/// judges (it may accept templates), so only a closed window refuses.
pub fn check_reply_window(
    conversation: &Conversation,
    window: Option<&ReplyWindow>,
    now: i64,
) -> Result<(), Error> {
    let (Some(window), Some(last)) = (window, conversation.last_inbound_at) else {
        return Ok(());
    };
    let closes_at = window.closes_at(last);
    if now > closes_at {
        return Err(Error::ReplyWindowClosed {
            closed_at: closes_at,
            name: window.name.clone(),
            length: window.length_in_words(),
        });
    }
    Ok(())
}

/// Why a conversation was assigned (the `reason` of its event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssignReason {
    /// The replier took an unassigned conversation by replying.
    Reply,
    /// A user assigned it.
    Manual,
}

impl AssignReason {
    pub fn as_str(self) -> &'static str {
        match self {
            AssignReason::Reply => "reply",
            AssignReason::Manual => "manual",
        }
    }
}

/// A conversation given to a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub conversation_id: String,
    pub channel_id: String,
    pub assignee: String,
    pub previous: Option<String>,
    pub by: String,
    pub reason: AssignReason,
}

/// A conversation taken from its assignee.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unassignment {
    pub conversation_id: String,
    pub channel_id: String,
    pub previous: String,
    pub by: String,
}

/// A reply goes only into an open conversation; a closed contact comes
/// back with its next message, in a new one.
pub fn check_reply_allowed(conversation: &Conversation) -> Result<(), Error> {
    if conversation.is_closed() {
        return Err(Error::ReplyToClosed);
    }
    Ok(())
}

/// PRODUCT.md 7: replying to an unassigned contact assigns it to the user
/// who replied. An assigned conversation stays with its assignee, whoever
/// else replies.
pub fn assign_on_reply(conversation: &Conversation, replier: &str) -> Option<Assignment> {
    if conversation.assignee.is_some() {
        return None;
    }
    Some(Assignment {
        conversation_id: conversation.id.clone(),
        channel_id: conversation.channel_id.clone(),
        assignee: replier.to_owned(),
        previous: None,
        by: replier.to_owned(),
        reason: AssignReason::Reply,
    })
}

/// Manual assignment to `user` by `by`; `None` when it is already theirs.
pub fn assign_conversation(
    conversation: &Conversation,
    user: &str,
    by: &str,
) -> Result<Option<Assignment>, Error> {
    if conversation.is_closed() {
        return Err(Error::AssignClosed);
    }
    if conversation.assignee.as_deref() == Some(user) {
        return Ok(None);
    }
    Ok(Some(Assignment {
        conversation_id: conversation.id.clone(),
        channel_id: conversation.channel_id.clone(),
        assignee: user.to_owned(),
        previous: conversation.assignee.clone(),
        by: by.to_owned(),
        reason: AssignReason::Manual,
    }))
}

/// Unassignment by `by`; `None` when nobody has it.
pub fn unassign_conversation(conversation: &Conversation, by: &str) -> Option<Unassignment> {
    let previous = conversation.assignee.clone()?;
    Some(Unassignment {
        conversation_id: conversation.id.clone(),
        channel_id: conversation.channel_id.clone(),
        previous,
        by: by.to_owned(),
    })
}

/// The closing note `by` gave, within its limits (counted as given) and
/// stored trimmed.
pub fn closing_note(category: &str, summary: &str, by: &str) -> Result<ClosingNote, Error> {
    if category.chars().count() > MAX_CLOSING_CATEGORY_CHARS {
        return Err(Error::ClosingCategoryTooLong(MAX_CLOSING_CATEGORY_CHARS));
    }
    if summary.chars().count() > MAX_CLOSING_SUMMARY_CHARS {
        return Err(Error::ClosingSummaryTooLong(MAX_CLOSING_SUMMARY_CHARS));
    }
    Ok(ClosingNote {
        category: category.trim().to_owned(),
        summary: summary.trim().to_owned(),
        closed_by: by.to_owned(),
    })
}

/// What closing a conversation does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closing {
    pub note: ClosingNote,
    /// The assignee it is taken from, if any.
    pub unassigned: Option<Unassignment>,
}

/// PRODUCT.md 8: closing takes the conversation out of the queue and
/// unassigns it from every user; it closes once.
pub fn close_conversation(
    conversation: &Conversation,
    note: ClosingNote,
) -> Result<Closing, Error> {
    if conversation.is_closed() {
        return Err(Error::AlreadyClosed);
    }
    let unassigned = unassign_conversation(conversation, &note.closed_by);
    Ok(Closing { note, unassigned })
}

/// A user assigning a conversation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assign {
    pub workspace_id: String,
    pub conversation_id: String,
    pub user_id: String,
    pub caller_user_id: String,
}

impl Assign {
    pub fn check(&self) -> Result<(), Error> {
        require("workspace_id", &self.workspace_id)?;
        require("conversation_id", &self.conversation_id)?;
        require("user_id", &self.user_id)
    }
}

/// A user unassigning a conversation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unassign {
    pub workspace_id: String,
    pub conversation_id: String,
    pub caller_user_id: String,
}

impl Unassign {
    pub fn check(&self) -> Result<(), Error> {
        require("workspace_id", &self.workspace_id)?;
        require("conversation_id", &self.conversation_id)
    }
}

/// A user closing a conversation, with an optional note.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Close {
    pub workspace_id: String,
    pub conversation_id: String,
    pub caller_user_id: String,
    pub category: String,
    pub summary: String,
}

impl Close {
    /// The checked note to close with.
    pub fn check(&self) -> Result<ClosingNote, Error> {
        require("workspace_id", &self.workspace_id)?;
        require("conversation_id", &self.conversation_id)?;
        closing_note(&self.category, &self.summary, &self.caller_user_id)
    }
}

/// Whose conversations a list shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AssigneeFilter {
    #[default]
    Any,
    /// The caller's.
    Me,
    Unassigned,
    /// A given user's.
    User,
}

/// The inbox's queues: conversations by latest activity, filtered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConversationQuery {
    pub workspace_id: String,
    pub caller_user_id: String,
    /// `None` for every status.
    pub status: Option<ConversationStatus>,
    pub assignee: AssigneeFilter,
    /// The user of [`AssigneeFilter::User`].
    pub assignee_user_id: String,
    /// Only this contact's; empty for every contact.
    pub contact_id: String,
    pub page: PageRequest,
}

/// Which conversations a list keeps, resolved from a query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConversationFilter {
    pub status: Option<ConversationStatus>,
    pub assignee: Assignee,
    pub contact_id: Option<String>,
}

/// Whose a listed conversation is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Assignee {
    #[default]
    Anyone,
    Nobody,
    User(String),
}

impl ConversationQuery {
    /// The filter the query asks for; "mine" needs the caller and "a
    /// user's" needs the user.
    pub fn filter(&self) -> Result<ConversationFilter, Error> {
        let assignee = match self.assignee {
            AssigneeFilter::Any => Assignee::Anyone,
            AssigneeFilter::Unassigned => Assignee::Nobody,
            AssigneeFilter::Me => {
                require("caller_user_id", &self.caller_user_id)?;
                Assignee::User(self.caller_user_id.clone())
            }
            AssigneeFilter::User => {
                require("assignee_user_id", &self.assignee_user_id)?;
                Assignee::User(self.assignee_user_id.clone())
            }
        };
        Ok(ConversationFilter {
            status: self.status,
            assignee,
            contact_id: (!self.contact_id.is_empty()).then(|| self.contact_id.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> Conversation {
        open_conversation("c1".into(), "ws", "contact", "ch", "+34", 10)
    }

    fn assigned_to(user: &str) -> Conversation {
        Conversation {
            assignee: Some(user.into()),
            ..open()
        }
    }

    fn closed() -> Conversation {
        Conversation {
            status: ConversationStatus::Closed,
            closed: Some(Closed {
                at: 20,
                note: ClosingNote::default(),
            }),
            ..open()
        }
    }

    #[test]
    fn new_conversations_are_open_and_unassigned() {
        let c = open();
        assert_eq!(c.status, ConversationStatus::Open);
        assert_eq!(c.assignee, None);
        assert_eq!(
            (c.opened_at, c.last_message_at, c.message_count),
            (10, 10, 0)
        );
        assert!(c.closed.is_none());
    }

    #[test]
    fn replying_to_an_unassigned_conversation_assigns_the_replier() {
        let a = assign_on_reply(&open(), "ari").expect("assigned");
        assert_eq!(a.assignee, "ari");
        assert_eq!(a.by, "ari");
        assert_eq!(a.previous, None);
        assert_eq!(a.reason.as_str(), "reply");
        assert_eq!(a.channel_id, "ch");
    }

    #[test]
    fn replying_to_an_assigned_conversation_leaves_it_with_its_assignee() {
        assert_eq!(assign_on_reply(&assigned_to("ari"), "olga"), None);
    }

    #[test]
    fn replies_go_only_into_open_conversations() {
        assert!(check_reply_allowed(&open()).is_ok());
        assert!(matches!(
            check_reply_allowed(&closed()),
            Err(Error::ReplyToClosed)
        ));
    }

    #[test]
    fn manual_assignment_records_who_had_it() {
        let a = assign_conversation(&assigned_to("ari"), "olga", "boss")
            .expect("allowed")
            .expect("changed");
        assert_eq!(
            (a.assignee.as_str(), a.previous.as_deref(), a.by.as_str()),
            ("olga", Some("ari"), "boss")
        );
        assert_eq!(a.reason.as_str(), "manual");
    }

    #[test]
    fn assigning_to_the_assignee_changes_nothing() {
        assert_eq!(
            assign_conversation(&assigned_to("ari"), "ari", "boss").expect("allowed"),
            None
        );
    }

    #[test]
    fn closed_conversations_cannot_be_assigned() {
        assert!(matches!(
            assign_conversation(&closed(), "ari", "boss"),
            Err(Error::AssignClosed)
        ));
    }

    #[test]
    fn unassigning_takes_it_from_the_assignee() {
        assert_eq!(unassign_conversation(&open(), "boss"), None);
        let u = unassign_conversation(&assigned_to("ari"), "boss").expect("unassigned");
        assert_eq!((u.previous.as_str(), u.by.as_str()), ("ari", "boss"));
    }

    #[test]
    fn closing_unassigns_from_everyone_and_keeps_the_note() {
        let note = closing_note(" billing ", " invoice resent\n", "ari").expect("note");
        let closing = close_conversation(&assigned_to("ari"), note).expect("closed");
        assert_eq!(closing.note.category, "billing");
        assert_eq!(closing.note.summary, "invoice resent");
        assert_eq!(closing.note.closed_by, "ari");
        let u = closing.unassigned.expect("unassigned");
        assert_eq!((u.previous.as_str(), u.by.as_str()), ("ari", "ari"));
        let quiet = close_conversation(&open(), ClosingNote::default()).expect("closed");
        assert_eq!(quiet.unassigned, None);
    }

    #[test]
    fn a_conversation_closes_once() {
        assert!(matches!(
            close_conversation(&closed(), ClosingNote::default()),
            Err(Error::AlreadyClosed)
        ));
    }

    #[test]
    fn closing_notes_have_limits_counted_in_characters_as_given() {
        let at_limit = "é".repeat(MAX_CLOSING_CATEGORY_CHARS);
        assert!(closing_note(&at_limit, "", "u").is_ok());
        assert!(matches!(
            closing_note(&format!("{at_limit} "), "", "u"),
            Err(Error::ClosingCategoryTooLong(100))
        ));
        let summary = "x".repeat(MAX_CLOSING_SUMMARY_CHARS + 1);
        assert!(matches!(
            closing_note("", &summary, "u"),
            Err(Error::ClosingSummaryTooLong(10_000))
        ));
    }

    #[test]
    fn commands_name_their_missing_field() {
        let message = |e: Error| e.to_string();
        assert_eq!(
            message(Assign::default().check().expect_err("empty")),
            "workspace_id is required"
        );
        let assign = Assign {
            workspace_id: "ws".into(),
            conversation_id: "c".into(),
            ..Default::default()
        };
        assert_eq!(
            message(assign.check().expect_err("no user")),
            "user_id is required"
        );
        let unassign = Unassign {
            workspace_id: "ws".into(),
            ..Default::default()
        };
        assert_eq!(
            message(unassign.check().expect_err("no conversation")),
            "conversation_id is required"
        );
        // Required fields come before the note's limits.
        let close = Close {
            category: "x".repeat(101),
            ..Default::default()
        };
        assert_eq!(
            message(close.check().expect_err("empty")),
            "workspace_id is required"
        );
    }

    #[test]
    fn queues_resolve_whose_conversations_they_show() {
        let query = |assignee, caller: &str, user: &str| ConversationQuery {
            workspace_id: "ws".into(),
            caller_user_id: caller.into(),
            assignee,
            assignee_user_id: user.into(),
            ..Default::default()
        };
        assert_eq!(
            query(AssigneeFilter::Me, "ari", "")
                .filter()
                .expect("mine")
                .assignee,
            Assignee::User("ari".into())
        );
        assert_eq!(
            query(AssigneeFilter::User, "", "olga")
                .filter()
                .expect("hers")
                .assignee,
            Assignee::User("olga".into())
        );
        assert_eq!(
            query(AssigneeFilter::Unassigned, "", "")
                .filter()
                .expect("queue")
                .assignee,
            Assignee::Nobody
        );
        assert_eq!(
            query(AssigneeFilter::Me, "", "")
                .filter()
                .expect_err("who am I")
                .to_string(),
            "caller_user_id is required"
        );
        assert_eq!(
            query(AssigneeFilter::User, "ari", "")
                .filter()
                .expect_err("which user")
                .to_string(),
            "assignee_user_id is required"
        );
        let everything = query(AssigneeFilter::Any, "", "").filter().expect("all");
        assert_eq!(everything, ConversationFilter::default());
    }

    fn whatsapp() -> ReplyWindow {
        ReplyWindow {
            name: "WhatsApp".into(),
            length: Duration::from_secs(24 * 3600),
        }
    }

    #[test]
    fn a_reply_window_closes_its_length_after_the_contacts_last_message() {
        const HOUR: i64 = 3_600_000_000;
        let mut c = open();
        c.last_inbound_at = Some(HOUR);
        let shown = with_reply_window(c.clone(), Some(&whatsapp()));
        assert_eq!(shown.reply_window_closes_at, Some(25 * HOUR));
        assert!(check_reply_window(&c, Some(&whatsapp()), 25 * HOUR).is_ok());
        let refused = check_reply_window(&c, Some(&whatsapp()), 25 * HOUR + 1).expect_err("closed");
        assert_eq!(
            refused.to_string(),
            "the reply window closed at 1970-01-02T01:00:00Z: WhatsApp only accepts replies \
             within 24 hours of the contact's last message"
        );
        // No window, or a contact who never wrote: nothing to refuse.
        assert!(check_reply_window(&c, None, i64::MAX).is_ok());
        assert_eq!(
            with_reply_window(c.clone(), None).reply_window_closes_at,
            None
        );
        c.last_inbound_at = None;
        assert!(check_reply_window(&c, Some(&whatsapp()), i64::MAX).is_ok());
        assert_eq!(
            with_reply_window(c, Some(&whatsapp())).reply_window_closes_at,
            None
        );
    }

    #[test]
    fn reply_windows_are_named_in_words() {
        let window = |secs| ReplyWindow {
            name: "x".into(),
            length: Duration::from_secs(secs),
        };
        assert_eq!(window(24 * 3600).length_in_words(), "24 hours");
        assert_eq!(window(7 * 86_400).length_in_words(), "7 days");
        assert_eq!(window(3600).length_in_words(), "1 hour");
        assert_eq!(window(90).length_in_words(), "90 seconds");
    }
}
