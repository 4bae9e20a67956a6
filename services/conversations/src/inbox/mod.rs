//! The inbox's operations, one file per part of PRODUCT.md's messages
//! module: `receiving` (1, and echoes of what the channel's own account
//! sent elsewhere), `replying` (2, 3, 5, and assignment on reply, within
//! the channel's reply window), `assignment` (7), `closing` (8, 9),
//! `delivery` (how far a reply got, watermarks included, and media's
//! outcome for received files), `changes` (reactions, edits, unsends),
//! `windows` (channels' reply windows, from ingress). Each one checks its
//! input, loads what it needs through the store, lets the domain decide,
//! and writes the change with its events (`events`) in one transaction.
//! Operations fed by the bus record the event they apply in the same
//! transaction, so a redelivered event changes nothing.
//!
//! Every change to a conversation first locks it
//! ([`conversation_for_update`]), so changes to one conversation happen one
//! at a time and each is judged on the state the one before it left: two
//! closes close once, concurrent assignments chain, a reply or a message
//! racing a close comes before it or after it, never into it (ADR 12).

use std::sync::Arc;

use telenet_channels::directory::ChannelDirectory;
use telenet_kit::grpc::GrpcChannel;
use telenet_store::cursor::{Cursor, finish_page, page_size};
use telenet_store::{Db, Tx};

use crate::Config;
use crate::domain::conversation::with_reply_window;
use crate::domain::{Conversation, ConversationQuery, Message, MessagesQuery, Page};
use crate::error::{Error, require};
use crate::store::{conversations, messages};

mod assignment;
mod changes;
mod closing;
mod contacts;
mod delivery;
mod events;
mod receiving;
mod replying;
mod windows;

pub use replying::Sent;

/// The inbox: conversations and their messages.
#[derive(Clone)]
pub struct Inbox {
    db: Db,
    contacts: contacts::Contacts,
    config: Config,
    /// Where channels' reply windows come from; `None`: not known (no
    /// reply is refused for one).
    windows: Option<Arc<windows::ReplyWindows>>,
}

impl Inbox {
    /// `contacts` is a channel to the contacts service, which resolves
    /// senders to contacts.
    pub fn new(db: Db, contacts: GrpcChannel, config: Config) -> Self {
        Self {
            db,
            contacts: contacts::Contacts::new(contacts),
            config,
            windows: None,
        }
    }

    /// Know channels' reply windows from `directory` (ingress's, cached, in
    /// the process; a fixed one in tests): conversations show when theirs
    /// closes, and replies after it are refused.
    pub fn with_directory(mut self, directory: Arc<dyn ChannelDirectory>) -> Self {
        self.windows = Some(Arc::new(windows::ReplyWindows::new(directory)));
        self
    }

    /// One conversation of the workspace.
    pub async fn get_conversation(
        &self,
        workspace_id: &str,
        conversation_id: &str,
    ) -> Result<Conversation, Error> {
        require("workspace_id", workspace_id)?;
        require("conversation_id", conversation_id)?;
        let conversation = conversations::find(self.db.pool(), workspace_id, conversation_id)
            .await?
            .ok_or(Error::ConversationNotFound)?;
        let window = self
            .reply_window(workspace_id, &conversation.channel_id)
            .await;
        Ok(with_reply_window(conversation, window.as_ref()))
    }

    /// A queue of the inbox: conversations by latest activity, newest
    /// first.
    pub async fn list_conversations(
        &self,
        query: &ConversationQuery,
    ) -> Result<Page<Conversation>, Error> {
        require("workspace_id", &query.workspace_id)?;
        let size = page_size(query.page.size);
        let after = Cursor::decode(&query.page.token).map_err(Error::InvalidArgument)?;
        let filter = query.filter()?;
        let mut items = conversations::list(
            self.db.pool(),
            &query.workspace_id,
            &filter,
            after.as_ref(),
            size + 1,
        )
        .await?;
        let next = finish_page(&mut items, size, |last| Cursor {
            key: last.last_message_at,
            id: last.id.clone(),
        });
        let items = self.with_reply_windows(items).await;
        Ok(Page { items, next })
    }

    /// A conversation's history, oldest first.
    pub async fn list_messages(&self, query: &MessagesQuery) -> Result<Page<Message>, Error> {
        require("workspace_id", &query.workspace_id)?;
        require("conversation_id", &query.conversation_id)?;
        // Its reply window is not shown here: no need to ask for it.
        let conversation =
            conversations::find(self.db.pool(), &query.workspace_id, &query.conversation_id)
                .await?
                .ok_or(Error::ConversationNotFound)?;
        let size = page_size(query.page.size);
        let after = Cursor::decode(&query.page.token).map_err(Error::InvalidArgument)?;
        let mut items = messages::history(
            self.db.pool(),
            &query.workspace_id,
            &conversation.id,
            after.as_ref(),
            size + 1,
        )
        .await?;
        let next = finish_page(&mut items, size, |last| Cursor {
            key: last.created_at,
            id: last.id.clone(),
        });
        Ok(Page { items, next })
    }
}

/// A conversation as the transaction sees it.
async fn conversation_in(
    tx: &mut Tx<'_>,
    workspace_id: &str,
    id: &str,
) -> Result<Conversation, Error> {
    conversations::find(&mut **tx, workspace_id, id)
        .await?
        .ok_or(Error::ConversationNotFound)
}

/// A conversation about to change, locked until the transaction ends:
/// concurrent changes to it wait, and it reads as the last one left it.
async fn conversation_for_update(
    tx: &mut Tx<'_>,
    workspace_id: &str,
    id: &str,
) -> Result<Conversation, Error> {
    conversations::find_for_update(tx, workspace_id, id)
        .await?
        .ok_or(Error::ConversationNotFound)
}

/// A message as the transaction sees it.
async fn message_in(tx: &mut Tx<'_>, workspace_id: &str, id: &str) -> Result<Message, Error> {
    messages::find(&mut **tx, workspace_id, id)
        .await?
        .ok_or(Error::MessageNotFound)
}

/// Ids are UUIDv7: sortable by creation, so keyset pages stay cheap.
fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
