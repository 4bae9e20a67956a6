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
    /// (one lookup per channel, all at once: a directory that is slow to
    /// answer delays a page once, not once per channel).
    pub(super) async fn with_reply_windows(
        &self,
        conversations: Vec<Conversation>,
    ) -> Vec<Conversation> {
        let mut channels: Vec<(&str, &str)> = conversations
            .iter()
            .map(|c| (c.workspace_id.as_str(), c.channel_id.as_str()))
            .collect();
        channels.sort_unstable();
        channels.dedup();
        let looked_up = futures::future::join_all(
            channels
                .iter()
                .map(|(workspace_id, channel_id)| self.reply_window(workspace_id, channel_id)),
        )
        .await;
        let windows: HashMap<(String, String), Option<ReplyWindow>> = channels
            .iter()
            .map(|(w, c)| ((*w).to_owned(), (*c).to_owned()))
            .zip(looked_up)
            .collect();
        conversations
            .into_iter()
            .map(|c| {
                let window = windows
                    .get(&(c.workspace_id.clone(), c.channel_id.clone()))
                    .and_then(Option::as_ref)
                    .cloned();
                with_reply_window(c, window.as_ref())
            })
            .collect()
    }
}
