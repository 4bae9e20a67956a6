//! Bus handlers of dispatch: `outbound.requested`. Each delivery claims its
//! message, makes one attempt through the channel's provider, and records
//! the result with its `outbound.status` event; passing trouble sends the
//! event back to the bus for the next attempt.

use std::time::Duration;

use telenet_bus::{BusError, SharedBus, SubscribeSpec};
use telenet_channels::directory::{ChannelCredentials, ChannelDirectory, DirectoryError};
use telenet_channels::{Provider, SendOutcome};
use telenet_kit::metrics::UNKNOWN;
use telenet_proto::common::v1::AttachmentKind;
use telenet_proto::events::v1::{OutboundRequested, event_envelope::Payload};
use telenet_ratelimit::{Cell, Decision, Limit, Verdict};
use telenet_store::consumer::{self, GroupSubscription, HandleError, Incoming};
use telenet_store::{events, now_micros};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::DispatchService;
use crate::domain::{self, Plan, State};
use crate::media::{VariantAnswer, VariantError};
use crate::metrics::{DispatchOutcome, HoldCause};
use crate::store::{self, Attempted, Claim};

/// What one try of a delivery came to.
enum Step {
    /// Recorded (sent, failed, or already settled); nothing more to do.
    Done,
    /// Held by a sending limit: try again after this long.
    Hold(Duration),
}

/// What an attempt came to.
enum Attempt {
    /// The provider was called (or the message can never go): its outcome.
    Made(SendOutcome),
    /// A sending limit, or the channel's pause, holds the message for
    /// `retry_after`; the provider was not called.
    Held {
        retry_after: Duration,
        cause: HoldCause,
    },
}

/// Consumer group of dispatch on the bus.
pub const GROUP: &str = "dispatch";

/// What dispatch consumes: its group and bindings. Subscribing once declares
/// the group's queue, so events published before the consumers start wait.
pub fn subscription() -> SubscribeSpec {
    SubscribeSpec::new(GROUP, &["outbound.requested"])
}

/// Subscribe now, so requests published from now on wait for the consumer
/// however late it starts ([`run`]).
pub(crate) async fn subscribe(bus: &SharedBus) -> Result<GroupSubscription, BusError> {
    consumer::subscribe(bus, subscription()).await
}

/// Consume the `outbound.requested` of `requests` with `service` until
/// `token` is cancelled.
pub(crate) async fn run(
    service: DispatchService,
    requests: GroupSubscription,
    token: CancellationToken,
) {
    let concurrency = service.inner.config.concurrency;
    let stopping = token.clone();
    consumer::run_on(requests, concurrency, token, move |incoming| {
        let service = service.clone();
        let stopping = stopping.clone();
        async move { service.deliver(incoming, &stopping).await }
    })
    .await;
}

impl DispatchService {
    /// Handle one `outbound.requested` delivery: claim the message, make one
    /// attempt, record it. Returns `Transient` to have the bus bring the
    /// event back later for the next attempt. A message a sending limit
    /// holds (or whose channel is paused) waits here, uncounted, and is
    /// tried again after the wait; when `stopping` is cancelled meanwhile it
    /// goes back to the queue (`Unavailable`: never dead-lettered).
    async fn deliver(
        &self,
        incoming: Incoming,
        stopping: &CancellationToken,
    ) -> Result<(), HandleError> {
        let env = events::from_bus(&incoming.event)?;
        let Some(Payload::OutboundRequested(request)) = env.payload else {
            return Err(HandleError::Permanent(format!(
                "event {} on {} is not an outbound.requested",
                incoming.event.id, incoming.event.routing_key
            )));
        };
        for (field, value) in [
            ("workspace_id", &env.workspace_id),
            ("message_id", &request.message_id),
            ("channel_id", &request.channel_id),
        ] {
            if value.trim().is_empty() {
                return Err(HandleError::Permanent(format!(
                    "outbound.requested {} has no {field}",
                    env.event_id
                )));
            }
        }
        let workspace_id = env.workspace_id.as_str();
        let event_id = if env.event_id.is_empty() {
            incoming.event.id.as_str()
        } else {
            env.event_id.as_str()
        };
        let config = &self.inner.config;
        let lease_micros = i64::try_from(config.lease().as_micros()).unwrap_or(i64::MAX);
        // The deadline counts from the reply (when the request was made),
        // never from a clock ahead of ours.
        let now = now_micros();
        let requested_at = env
            .occurred_at
            .as_ref()
            .map_or(now, |t| {
                t.seconds.saturating_mul(1_000_000) + i64::from(t.nanos / 1_000)
            })
            .min(now);
        loop {
            let wait = match self
                .try_deliver(workspace_id, event_id, &request, lease_micros, requested_at)
                .await?
            {
                Step::Done => return Ok(()),
                Step::Hold(wait) => wait,
            };
            tokio::select! {
                _ = stopping.cancelled() => {
                    return Err(HandleError::Unavailable(format!(
                        "stopping while message {} waits for its channel's sending limit",
                        request.message_id
                    )));
                }
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One try of [`deliver`](Self::deliver): claim, attempt and record, or
    /// give the claim back uncounted and say how long to wait when a
    /// sending limit holds the message.
    async fn try_deliver(
        &self,
        workspace_id: &str,
        event_id: &str,
        request: &OutboundRequested,
        lease_micros: i64,
        requested_at: i64,
    ) -> Result<Step, HandleError> {
        let config = &self.inner.config;
        let claim = store::claim(
            &self.inner.db,
            workspace_id,
            request,
            event_id,
            lease_micros,
            requested_at,
        )
        .await?;
        let (attempt, lease, requested_at) = match claim {
            Claim::Mine {
                attempt,
                lease,
                requested_at,
            } => (attempt, lease, requested_at),
            Claim::Settled => {
                tracing::debug!(message_id = %request.message_id, "delivery already settled; not sending again");
                return Ok(Step::Done);
            }
            Claim::Busy => {
                return Err(HandleError::Transient(format!(
                    "message {} is being attempted by another consumer",
                    request.message_id
                )));
            }
        };

        // This attempt is counted already; those made before it:
        let made = attempt.saturating_sub(1);
        let (settled, attempts) =
            if domain::is_overdue(requested_at, now_micros(), config.pending_deadline) {
                // Too late to send (the request arrived late, or waited for
                // its retry past the deadline): failed without an attempt.
                self.metrics.count_overdue();
                let reason = domain::overdue_reason(config.pending_deadline);
                let settled = domain::settle(SendOutcome::Reject(reason), made, 1);
                (settled, made)
            } else if !domain::may_attempt(attempt, config.max_attempts) {
                // Every allowed attempt was made and the last never
                // reported back: its process stopped mid-attempt, perhaps
                // after the channel took the message. Another one would be
                // one too many.
                (domain::unreported(made), made)
            } else {
                let (tried, kind) = self.attempt(workspace_id, request).await;
                let outcome = match tried {
                    Attempt::Made(outcome) => outcome,
                    Attempt::Held { retry_after, cause } => {
                        self.metrics.count_held(&kind, cause);
                        let released = store::release(
                            &self.inner.db,
                            workspace_id,
                            &request.message_id,
                            &lease,
                        )
                        .await?;
                        if !released {
                            return Err(HandleError::Transient(format!(
                                "lost the lease on message {}",
                                request.message_id
                            )));
                        }
                        let wait = domain::hold_for(
                            retry_after,
                            requested_at,
                            now_micros(),
                            config.pending_deadline,
                        );
                        tracing::debug!(
                            message_id = %request.message_id,
                            channel_id = %request.channel_id,
                            ?cause,
                            ?wait,
                            "outbound message held by its channel's sending limit"
                        );
                        return Ok(Step::Hold(wait));
                    }
                };
                let settled = domain::settle(outcome, attempt, config.max_attempts);
                self.metrics.count_dispatch(
                    &kind,
                    match settled.state {
                        State::Sent => DispatchOutcome::Sent,
                        State::Pending => DispatchOutcome::Retry,
                        State::Failed => DispatchOutcome::Failed,
                    },
                );
                (settled, attempt)
            };
        log_attempt(request, attempts, settled.state, &settled.error);
        let state = settled.state;
        // The fault suite's crash point: the channel took the message (2xx)
        // and nothing of it is recorded yet.
        #[cfg(feature = "failpoints")]
        if state == State::Sent {
            fail::fail_point!("dispatch-after-send", |_| std::process::abort());
        }
        let retry_reason = settled.error.clone();
        let recorded = store::record(
            &self.inner.db,
            Attempted {
                workspace_id,
                request,
                lease: &lease,
                attempts,
                state,
                external_id: settled.external_id,
                error: settled.error,
                event_id,
            },
        )
        .await?;
        if !recorded {
            // Another consumer took the delivery over; coming back later
            // sees its result (or its lease) instead of guessing now.
            return Err(HandleError::Transient(format!(
                "lost the lease on message {}",
                request.message_id
            )));
        }
        match state {
            State::Pending => Err(HandleError::Transient(retry_reason)),
            State::Sent | State::Failed => Ok(Step::Done),
        }
    }

    /// One attempt: find the channel and its provider, fit the message to
    /// it, send. Also returns the channel's kind as metrics name it
    /// (`unknown` when the lookup failed).
    async fn attempt(&self, workspace_id: &str, request: &OutboundRequested) -> (Attempt, String) {
        let mut kind = UNKNOWN.to_owned();
        let tried = self.attempt_as(workspace_id, request, &mut kind).await;
        (tried, kind)
    }

    async fn attempt_as(
        &self,
        workspace_id: &str,
        request: &OutboundRequested,
        kind: &mut String,
    ) -> Attempt {
        let channel = match self.channel(workspace_id, &request.channel_id).await {
            Ok(channel) => channel,
            Err(outcome) => return Attempt::Made(outcome),
        };
        *kind = telenet_channels::kind_name(channel.kind);
        let Some(provider) = self.providers.for_channel(&channel) else {
            return Attempt::Made(SendOutcome::Reject(format!(
                "sending on {} channels is not supported",
                channel.kind.as_str_name()
            )));
        };
        // The destinations a channel's settings choose: refused before
        // anything is prepared when the policy does not permit them (names
        // are checked again when the client resolves them).
        for (field, url) in [
            ("outbound_url", channel.outbound_url.trim()),
            ("api_base_url", channel.config.api_base_url.trim()),
        ] {
            if !url.is_empty()
                && let Err(why) = self.inner.egress.check(url)
            {
                return Attempt::Made(SendOutcome::Reject(format!("{field}: {why}")));
            }
        }
        let capabilities = provider.capabilities(&channel);
        // What the provider never takes fails at once, before anything is
        // prepared or counted.
        let refusal = domain::text_refusal(
            &request.text,
            capabilities.text.as_ref(),
            provider.provider(),
        )
        .or_else(|| {
            domain::media_refusal(
                &request.attachments,
                &capabilities.media,
                provider.provider(),
            )
        });
        if let Some(reason) = refusal {
            return Attempt::Made(SendOutcome::Reject(reason));
        }
        let message = match self
            .prepare_attachments(workspace_id, request, &capabilities.voice.accepted_types)
            .await
        {
            Ok(message) => message,
            Err(outcome) => return Attempt::Made(outcome),
        };
        // Counted last, right before the send, so what is counted is sent.
        let limits = domain::limits_for(
            &request.channel_id,
            &request.recipient_external_id,
            &capabilities.rate_limits,
        );
        let cells: Vec<(Limit, &str)> = limits
            .iter()
            .map(|(limit, id)| (*limit, id.as_str()))
            .collect();
        if let Verdict::Limited {
            scope, retry_after, ..
        } = self.limiter.check(&cells).await
        {
            let cause = if scope == domain::PAUSE_SCOPE {
                HoldCause::Paused
            } else {
                HoldCause::RateLimit
            };
            return Attempt::Held { retry_after, cause };
        }
        let started = std::time::Instant::now();
        let outcome = self
            .send(provider, &channel, &message)
            .instrument(tracing::info_span!(
                "dispatch.send",
                otel.kind = "client",
                channel_kind = %kind,
                channel_id = %request.channel_id,
                message_id = %request.message_id,
            ))
            .await;
        self.metrics.observe_dispatch_send(kind, started.elapsed());
        if let SendOutcome::Throttled { retry_after, .. } = &outcome {
            self.pause(&request.channel_id, *retry_after, kind).await;
        }
        if !matches!(outcome, SendOutcome::Sent { .. }) {
            self.inner
                .directory
                .forget(workspace_id, &request.channel_id);
        }
        Attempt::Made(outcome)
    }

    /// Pause `channel_id` for `retry_after`, for every replica sharing the
    /// rate-limit store: attempts on it are held until then (see
    /// `domain::limits_for`). A pause already running is kept as it is;
    /// a store that does not answer leaves the channel unpaused (its next
    /// attempts may be throttled again, and retried).
    async fn pause(&self, channel_id: &str, retry_after: Duration, kind: &str) {
        let Some(quota) = domain::pause_quota(retry_after) else {
            return;
        };
        let key = format!("{}:{channel_id}", domain::PAUSE_SCOPE);
        match self
            .limiter
            .store()
            .check(&[Cell { key: &key, quota }])
            .await
        {
            Ok(Decision::Allowed { .. }) => {
                self.metrics.count_pause(kind);
                tracing::info!(
                    channel_id,
                    ?retry_after,
                    "provider throttled the channel; sends paused"
                );
            }
            Ok(Decision::Limited { .. }) => {}
            Err(error) => tracing::warn!(
                channel_id,
                %error,
                "provider throttled the channel but the pause could not be stored"
            ),
        }
    }

    /// The channel's credentials; `Err` is the attempt's outcome when they
    /// cannot be had.
    async fn channel(
        &self,
        workspace_id: &str,
        channel_id: &str,
    ) -> Result<ChannelCredentials, SendOutcome> {
        match self
            .inner
            .directory
            .credentials(workspace_id, channel_id)
            .await
        {
            Ok(credentials) => Ok(credentials),
            Err(e @ DirectoryError::Unavailable(_)) => Err(SendOutcome::Retry(e.to_string())),
            Err(e) => Err(SendOutcome::Reject(e.to_string())),
        }
    }

    async fn send(
        &self,
        provider: &dyn Provider,
        channel: &ChannelCredentials,
        message: &OutboundRequested,
    ) -> SendOutcome {
        provider.send(&self.inner.http, channel, message).await
    }

    /// `request` with its stored voice notes in the form the channel
    /// accepts and every stored attachment linked (see the domain module).
    /// `Err` is the attempt's outcome when that form is not ready yet
    /// (retry) or media cannot be asked.
    async fn prepare_attachments(
        &self,
        workspace_id: &str,
        request: &OutboundRequested,
        accepted: &[String],
    ) -> Result<OutboundRequested, SendOutcome> {
        let Some(media) = &self.media else {
            return Ok(request.clone());
        };
        let mut message = request.clone();
        message.attachments.clear();
        for attachment in &request.attachments {
            if attachment.kind() != AttachmentKind::Voice || attachment.blob_id.is_empty() {
                message.attachments.push(attachment.clone());
                continue;
            }
            let profile = match domain::plan(&attachment.mime_type, accepted) {
                Plan::AsIs => {
                    message.attachments.push(attachment.clone());
                    continue;
                }
                Plan::AsFile => {
                    message
                        .attachments
                        .push(domain::as_file(attachment.clone()));
                    continue;
                }
                Plan::Variant(profile) => profile,
            };
            let wait = self.inner.config.voice_variant_wait;
            match media
                .variant(workspace_id, &attachment.blob_id, profile, wait)
                .await
            {
                Ok(VariantAnswer::Ready(parts)) if !parts.is_empty() => {
                    message.attachments.extend(domain::from_parts(&parts))
                }
                Ok(VariantAnswer::Ready(_)) | Ok(VariantAnswer::Pending) => {
                    return Err(SendOutcome::Retry(format!(
                        "the {profile} form of voice note {} is not ready yet",
                        attachment.blob_id
                    )));
                }
                Ok(VariantAnswer::Failed(reason)) => {
                    tracing::warn!(
                        message_id = %request.message_id,
                        blob_id = %attachment.blob_id,
                        profile,
                        %reason,
                        "voice note cannot be made for the channel; sending the file as recorded"
                    );
                    message
                        .attachments
                        .push(domain::as_file(attachment.clone()));
                }
                Err(e @ VariantError::Unavailable(_)) => {
                    return Err(SendOutcome::Retry(e.to_string()));
                }
                Err(e @ VariantError::Rejected(_)) => {
                    return Err(SendOutcome::Reject(e.to_string()));
                }
            }
        }
        let ttl = self.inner.config.download_link_ttl;
        for attachment in &mut message.attachments {
            if attachment.blob_id.is_empty() || !attachment.url.is_empty() {
                continue;
            }
            let name = domain::link_name(&attachment.file_name);
            match media
                .link(workspace_id, &attachment.blob_id, name, ttl)
                .await
            {
                Ok(Some(url)) => attachment.url = url,
                Ok(None) => {
                    tracing::warn!(
                        message_id = %request.message_id,
                        blob_id = %attachment.blob_id,
                        "download links are not set up (media.download_urls): the receiver gets \
                         the blob id only"
                    );
                    break;
                }
                Err(e @ VariantError::Unavailable(_)) => {
                    return Err(SendOutcome::Retry(e.to_string()));
                }
                Err(e @ VariantError::Rejected(_)) => {
                    return Err(SendOutcome::Reject(e.to_string()));
                }
            }
        }
        Ok(message)
    }
}

fn log_attempt(request: &OutboundRequested, attempts: u32, state: State, error: &str) {
    let message_id = request.message_id.as_str();
    let channel_id = request.channel_id.as_str();
    match state {
        State::Sent => tracing::info!(message_id, channel_id, attempts, "outbound message sent"),
        State::Pending => {
            tracing::warn!(
                message_id,
                channel_id,
                attempts,
                error,
                "outbound attempt failed; will retry"
            )
        }
        State::Failed => {
            tracing::warn!(
                message_id,
                channel_id,
                attempts,
                error,
                "outbound message failed"
            )
        }
    }
}
