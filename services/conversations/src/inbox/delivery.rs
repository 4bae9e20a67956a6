//! How far a message got: delivery statuses reported by dispatch and by the
//! channels (only ever forward), and media's outcome for each attachment of
//! a received message (a ready one is never undone).

use telenet_proto::common::v1::Attachment;
use telenet_proto::conversations::v1::MessageDirection;
use telenet_proto::dispatch::v1::DeliveryState;
use telenet_store::{idempotency, now_micros};

use super::Inbox;
use super::events::Outbox;
use crate::consumers::{MEDIA, STATUS};
use crate::domain::StatusTarget;
use crate::domain::message::Watermark;
use crate::domain::message::{apply_attachment_outcome, delivery_update, status_reported};
use crate::error::Error;
use crate::store::messages;

impl Inbox {
    /// Apply bus event `event_id`: the message `target` reached `state`;
    /// `external_id` is the provider's id when the report carries it.
    pub async fn apply_status(
        &self,
        event_id: &str,
        workspace_id: &str,
        target: StatusTarget<'_>,
        state: DeliveryState,
        external_id: &str,
        error: &str,
    ) -> Result<(), Error> {
        let Some(reported) = status_reported(state) else {
            return Ok(());
        };
        let Some(mut tx) = idempotency::begin_once(&self.db, STATUS, event_id).await? else {
            return Ok(());
        };
        let message = match target {
            StatusTarget::MessageId(id) => messages::find(&mut *tx, workspace_id, id).await?,
            StatusTarget::External {
                channel_id,
                external_id: provider_id,
            } => messages::find_sent(&mut tx, workspace_id, channel_id, provider_id).await?,
        };
        // Rolled back with the event's record, so the retry applies it.
        let message = message.ok_or(Error::StatusBeforeMessage)?;
        let Some(mut update) = delivery_update(&message, reported, external_id, error) else {
            self.db.commit(tx).await?;
            return Ok(());
        };
        // The channel's echo of this very reply can arrive before dispatch
        // reports the provider's id, and is then stored under it: the reply
        // keeps the id it had rather than fail on it forever (logged).
        if update.external_id != message.external_id
            && messages::stored_on_channel(
                &mut tx,
                &message.channel_id,
                MessageDirection::Outbound,
                &update.external_id,
            )
            .await?
        {
            tracing::warn!(
                message_id = message.id,
                external_id = update.external_id,
                "an echo was stored under the reply's provider id first; the reply keeps its own"
            );
            update.external_id = message.external_id.clone();
        }
        messages::set_delivery(&mut tx, &message, &update, now_micros()).await?;
        let mut outbox = Outbox::new(workspace_id);
        outbox.message_status_changed(&message, &update);
        outbox.write(&mut tx).await?;
        self.db.commit(tx).await?;
        Ok(())
    }

    /// Apply bus event `event_id`: a watermark status. Every reply on the
    /// channel to the contact created at or before the watermark reaches
    /// `state`, never moving backwards, each announced as a single status
    /// is. Replies of other workspaces, channels or contacts are untouched.
    pub async fn apply_watermark(
        &self,
        event_id: &str,
        workspace_id: &str,
        watermark: &Watermark<'_>,
        state: DeliveryState,
        error: &str,
    ) -> Result<(), Error> {
        let Some(reported) = status_reported(state) else {
            return Ok(());
        };
        let Some(mut tx) = idempotency::begin_once(&self.db, STATUS, event_id).await? else {
            return Ok(());
        };
        let covered = messages::sent_up_to(
            &mut tx,
            workspace_id,
            watermark.channel_id,
            watermark.contact_external_id,
            watermark.up_to,
        )
        .await?;
        let now = now_micros();
        let mut outbox = Outbox::new(workspace_id);
        for message in &covered {
            if let Some(update) = delivery_update(message, reported, "", error) {
                messages::set_delivery(&mut tx, message, &update, now).await?;
                outbox.message_status_changed(message, &update);
            }
        }
        outbox.write(&mut tx).await?;
        self.db.commit(tx).await?;
        Ok(())
    }

    /// Apply bus event `event_id`: media's `outcome` for attachment `index`
    /// of a received message (`message.attachment_ready` or
    /// `message.attachment_failed`).
    pub async fn apply_attachment(
        &self,
        event_id: &str,
        workspace_id: &str,
        message_id: &str,
        index: u32,
        outcome: &Attachment,
    ) -> Result<(), Error> {
        let Some(mut tx) = idempotency::begin_once(&self.db, MEDIA, event_id).await? else {
            return Ok(());
        };
        let mut attachments = messages::attachments_for_update(&mut tx, workspace_id, message_id)
            .await?
            .ok_or_else(|| Error::UnknownMessage(message_id.to_owned()))?;
        if apply_attachment_outcome(&mut attachments, message_id, index, outcome)? {
            messages::set_attachments(&mut tx, workspace_id, message_id, &attachments).await?;
        }
        self.db.commit(tx).await?;
        Ok(())
    }
}
