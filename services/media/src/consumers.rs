//! The media service's bus handlers: fetching the attachments of inbound
//! messages (`message.created`, group [`GROUP`]) into the blob store with the
//! [`InboundFetcher`], announcing each outcome once through the outbox, and
//! preparing voice notes for the agents' player (probe, playable variant).

use telenet_audio::probe::DEFAULT_PEAKS;
use telenet_audio::profiles::WEB_PLAYBACK;
use telenet_bus::{BusError, SharedBus, SubscribeSpec};
use telenet_proto::common::v1::{Attachment, AttachmentKind, AttachmentState};
use telenet_proto::conversations::v1::MessageDirection;
use telenet_proto::events::v1::{self as ev, event_envelope::Payload};
use telenet_proto::media::v1 as pb;
use telenet_store::consumer::{self, GroupSubscription, HandleError, Incoming};
use telenet_store::{events, idempotency};
use tokio_util::sync::CancellationToken;

use crate::inbound::{FetchError, InboundFetcher};
use crate::metrics::FetchOutcome;
use crate::store;

/// Consumer group of the fetcher on the bus (also its `processed_events`
/// name).
pub const GROUP: &str = "media.inbound";

/// What the fetcher consumes. Subscribing once declares the group's queue,
/// so messages created before the fetcher runs wait for it.
pub fn subscription() -> SubscribeSpec {
    SubscribeSpec::new(GROUP, &["message.created"])
}

/// Waveform peaks an inbound voice note is probed with: the player's.
const PLAYER_PEAKS: u32 = DEFAULT_PEAKS as u32;

/// Subscribe now, so every message created from now on waits for the
/// fetcher, however late it starts ([`run`]).
pub(crate) async fn subscribe(bus: &SharedBus) -> Result<GroupSubscription, BusError> {
    consumer::subscribe(bus, subscription()).await
}

/// Fetch the attachments of `messages` until `token` is cancelled; fetches
/// in progress finish first.
pub(crate) async fn run(
    fetcher: InboundFetcher,
    messages: GroupSubscription,
    token: CancellationToken,
) {
    let concurrency = fetcher.config.concurrency;
    consumer::run_on(messages, concurrency, token, move |incoming| {
        let fetcher = fetcher.clone();
        async move { fetcher.handle(incoming).await }
    })
    .await;
}

/// Subscribe now (so no message created from here on is missed), then
/// fetch in a spawned task until `token` is cancelled (fetches in progress
/// finish first).
pub(crate) async fn spawn(
    fetcher: InboundFetcher,
    token: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, BusError> {
    let messages = subscribe(&fetcher.bus).await?;
    Ok(tokio::spawn(run(fetcher, messages, token)))
}

impl InboundFetcher {
    /// Subscribe now, then fetch in a spawned task until `token` is
    /// cancelled (fetches in progress finish first).
    pub async fn start(
        self,
        token: CancellationToken,
    ) -> Result<tokio::task::JoinHandle<()>, BusError> {
        spawn(self, token).await
    }

    /// Fetch the pending attachments of one `message.created`, once.
    pub(crate) async fn handle(&self, incoming: Incoming) -> Result<(), HandleError> {
        let env = events::from_bus(&incoming.event)?;
        let Some(Payload::MessageCreated(created)) = env.payload else {
            return Ok(());
        };
        let Some(message) = created.message else {
            return Ok(());
        };
        if message.direction != MessageDirection::Inbound as i32 {
            return Ok(());
        }
        let pending: Vec<(usize, &Attachment)> = message
            .attachments
            .iter()
            .enumerate()
            .filter(|(_, a)| is_pending(a))
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        let workspace_id = env.workspace_id.as_str();
        if workspace_id.trim().is_empty() {
            return Err(HandleError::Permanent(format!(
                "event {}: no workspace_id",
                env.event_id
            )));
        }
        let traceparent = env
            .trace
            .as_ref()
            .map(|t| t.traceparent.clone())
            .filter(|t| !t.is_empty());
        for (index, attachment) in pending {
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            // Each attachment is announced once, as soon as it is settled: a
            // redelivery (or a retry for another attachment) skips it.
            let key = format!("{}/{index}", env.event_id);
            if idempotency::is_processed(&self.media.db, GROUP, &key).await? {
                continue;
            }
            let mut attachment = attachment.clone();
            let fetched = self
                .fetch_from(workspace_id, &created.channel_id, &attachment)
                .await;
            self.media.metrics.count_inbound_fetch(match &fetched {
                Ok(_) => FetchOutcome::Ready,
                Err(FetchError::Transient(_)) if incoming.attempt < self.config.attempts => {
                    FetchOutcome::Retry
                }
                Err(_) => FetchOutcome::Failed,
            });
            let payload = match fetched {
                Ok(blob) => {
                    tracing::info!(message_id = %message.id, index, blob_id = %blob.id, size_bytes = blob.size_bytes, "inbound attachment stored");
                    attachment.state = AttachmentState::Ready as i32;
                    attachment.blob_id = blob.id;
                    attachment.size_bytes = blob.size_bytes;
                    attachment.mime_type = blob.mime_type;
                    attachment.error.clear();
                    self.prepare_for_agents(workspace_id, &mut attachment).await;
                    Payload::MessageAttachmentReady(ev::MessageAttachmentReady {
                        message_id: message.id.clone(),
                        conversation_id: message.conversation_id.clone(),
                        index,
                        attachment: Some(attachment),
                        channel_id: created.channel_id.clone(),
                    })
                }
                Err(FetchError::Transient(reason)) if incoming.attempt < self.config.attempts => {
                    return Err(HandleError::Transient(format!(
                        "attachment {index} of message {}: {reason}",
                        message.id
                    )));
                }
                Err(e) => {
                    tracing::warn!(message_id = %message.id, index, reason = e.reason(), "inbound attachment failed");
                    attachment.state = AttachmentState::Failed as i32;
                    attachment.error = e.reason().to_owned();
                    Payload::MessageAttachmentFailed(ev::MessageAttachmentFailed {
                        message_id: message.id.clone(),
                        conversation_id: message.conversation_id.clone(),
                        index,
                        attachment: Some(attachment),
                        channel_id: created.channel_id.clone(),
                    })
                }
            };
            let event = events::to_bus(&events::envelope(
                workspace_id,
                payload,
                traceparent.clone(),
            ));
            store::settle_once(&self.media.db, GROUP, &key, event).await?;
        }
        Ok(())
    }

    /// For the agents' player: the duration (and the waveform, kept for
    /// `Probe`) of a stored voice note or audio file, and its
    /// browser-playable variant started. Neither failing makes the
    /// attachment fail: the file is stored, only the extras are missing.
    async fn prepare_for_agents(&self, workspace_id: &str, attachment: &mut Attachment) {
        let kind = attachment.kind();
        let audio = matches!(kind, AttachmentKind::Voice | AttachmentKind::Audio)
            || attachment
                .mime_type
                .trim()
                .to_ascii_lowercase()
                .starts_with("audio/");
        if !audio {
            return;
        }
        let probe = pb::ProbeRequest {
            workspace_id: workspace_id.to_owned(),
            blob_id: attachment.blob_id.clone(),
            waveform_peaks: PLAYER_PEAKS,
        };
        match self.media.probe_blob(&probe).await {
            Ok(result) => attachment.duration_ms = result.duration_ms,
            Err(e) => {
                tracing::warn!(blob_id = %attachment.blob_id, error = %e, "inbound audio cannot be probed");
                return;
            }
        }
        if kind != AttachmentKind::Voice {
            return;
        }
        let playable = pb::TranscodeRequest {
            workspace_id: workspace_id.to_owned(),
            blob_id: attachment.blob_id.clone(),
            profile: WEB_PLAYBACK.to_owned(),
            wait_ms: 0,
        };
        if let Err(e) = self.media.transcode(&playable).await {
            tracing::warn!(blob_id = %attachment.blob_id, error = %e, "cannot start the playable form of an inbound voice note");
        }
    }
}

/// Announced by the provider and not fetched yet.
fn is_pending(a: &Attachment) -> bool {
    let state = AttachmentState::try_from(a.state).unwrap_or(AttachmentState::Unspecified);
    let pending = matches!(state, AttachmentState::Pending)
        || (state == AttachmentState::Unspecified && a.blob_id.is_empty());
    pending && !a.url.trim().is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_means_announced_with_a_url_and_not_stored() {
        let pending = Attachment {
            url: "https://cdn.example/v.ogg".into(),
            state: AttachmentState::Pending as i32,
            ..Default::default()
        };
        assert!(is_pending(&pending));
        let unset = Attachment {
            state: AttachmentState::Unspecified as i32,
            ..pending.clone()
        };
        assert!(is_pending(&unset));
        for done in [AttachmentState::Ready, AttachmentState::Failed] {
            assert!(!is_pending(&Attachment {
                state: done as i32,
                ..pending.clone()
            }));
        }
        assert!(!is_pending(&Attachment {
            url: " ".into(),
            ..pending
        }));
    }
}
