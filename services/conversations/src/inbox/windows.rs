//! Reply windows: how long after a contact's last message a channel
//! accepts free-form replies (WhatsApp's 24 hours), from the channel's
//! provider, looked up in ingress's channel directory. A directory that
//! cannot answer blocks nothing: the window reads as unknown (logged), and
//! dispatch reports the provider's refusal if there is one.

use std::collections::HashMap;
use std::sync::Arc;

use telenet_channels::Registry;
use telenet_channels::directory::{ChannelCredentials, ChannelDirectory};
use telenet_proto::common::v1::ChannelKind;

use super::Inbox;
use crate::domain::Conversation;
use crate::domain::conversation::{ReplyWindow, with_reply_window};

/// Channels' reply windows, from their credentials and providers.
pub(super) struct ReplyWindows {
    directory: Arc<dyn ChannelDirectory>,
    providers: Registry,
}

impl ReplyWindows {
    pub(super) fn new(directory: Arc<dyn ChannelDirectory>) -> Self {
        Self {
            directory,
            providers: Registry::builtin(),
        }
    }

    /// The channel's reply window; `None` when it has none or it is not
    /// known now.
    async fn of(&self, workspace_id: &str, channel_id: &str) -> Option<ReplyWindow> {
        match self.directory.credentials(workspace_id, channel_id).await {
            Ok(creds) => self.window_of(&creds),
            Err(error) => {
                tracing::warn!(
                    workspace_id,
                    channel_id,
                    %error,
                    "channel directory did not answer; reply window unknown"
                );
                None
            }
        }
    }

    fn window_of(&self, creds: &ChannelCredentials) -> Option<ReplyWindow> {
        let provider = self.providers.for_channel(creds)?;
        let length = provider.capabilities(creds).reply_window?;
        Some(ReplyWindow {
            name: name_of(creds),
            length,
        })
    }
}

/// The channel as people call it.
fn name_of(creds: &ChannelCredentials) -> String {
    match creds.kind {
        ChannelKind::Whatsapp => "WhatsApp".to_owned(),
        ChannelKind::Messenger => "Messenger".to_owned(),
        ChannelKind::Instagram => "Instagram".to_owned(),
        ChannelKind::Telegram => "Telegram".to_owned(),
        ChannelKind::Line => "LINE".to_owned(),
        ChannelKind::Viber => "Viber".to_owned(),
        _ => "the channel".to_owned(),
    }
}

impl Inbox {
    /// The channel's reply window, if the inbox knows channels and it has
    /// one.
    pub(super) async fn reply_window(
        &self,
        workspace_id: &str,
        channel_id: &str,
    ) -> Option<ReplyWindow> {
        self.windows.as_ref()?.of(workspace_id, channel_id).await
    }

    /// The conversations as shown, with when their reply windows close
    /// (one lookup per channel).
    pub(super) async fn with_reply_windows(
        &self,
        conversations: Vec<Conversation>,
    ) -> Vec<Conversation> {
        let mut windows: HashMap<String, Option<ReplyWindow>> = HashMap::new();
        let mut shown = Vec::with_capacity(conversations.len());
        for c in conversations {
            if !windows.contains_key(&c.channel_id) {
                let window = self.reply_window(&c.workspace_id, &c.channel_id).await;
                windows.insert(c.channel_id.clone(), window);
            }
            let window = windows.get(&c.channel_id).and_then(Option::as_ref);
            shown.push(with_reply_window(c, window));
        }
        shown
    }
}
