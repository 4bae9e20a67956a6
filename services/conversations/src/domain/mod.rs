//! The inbox's rules (PRODUCT.md, the messages module), with no I/O: what a
//! conversation, a message and a member are, and what each operation may
//! do to them. The operations in [`crate::inbox`] and [`crate::members`]
//! load with the store, ask these rules, and write what they decide.
//!
//! States (conversation and message statuses, access levels, delivery
//! states) are the API's enums: one vocabulary, stored by their numbers.
//! Times are microseconds since the Unix epoch, as stored.

pub mod conversation;
pub mod member;
pub mod message;
pub mod settings;

pub use conversation::{
    Assign, AssignReason, Assignee, AssigneeFilter, Assignment, Close, Closed, Closing,
    ClosingNote, Conversation, ConversationFilter, ConversationQuery, Unassign, Unassignment,
};
pub use member::{ApiToken, Member, NewMember, NewToken, NewWorkspace, Workspace};
pub use message::{DeliveryUpdate, InboundMessage, Message, MessagesQuery, Reply, StatusTarget};
pub use settings::{SettingsChange, WorkspaceSettings};

/// Which page of a list, as the caller asked for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    /// Items per page; 0 for the default.
    pub size: u32,
    /// The previous page's `next` token; empty for the first page.
    pub token: String,
}

/// One page of a list and the token of the next (empty after the last).
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: String,
}
