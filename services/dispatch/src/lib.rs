//! Dispatch: sends agents' replies to the channel they belong on.
//!
//! It consumes `outbound.requested`, looks up the channel's outbound URL and
//! signing secret from ingress, POSTs the message (custom channels, signed as
//! Standard Webhooks) and records the result in its `deliveries` table with an
//! `outbound.status` event. Passing trouble at the receiver (5xx, 408, 429,
//! timeouts, refused connections) is retried through the bus with its growing
//! delays until `max_attempts`; any other refusal fails the delivery at once.
//! Failed deliveries are listed for operators as dead letters.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use telenet_bus::{BusError, SharedBus, SubscribeSpec};
use telenet_kit::error::{ErrorCode, ServiceError};
use telenet_kit::metrics::{self, DispatchOutcome, Metrics};
use telenet_proto::common::v1::{AttachmentKind, ChannelKind};
use telenet_proto::dispatch::v1 as pb;
use telenet_proto::dispatch::v1::dispatch_server::{Dispatch, DispatchServer};
use telenet_proto::events::v1::{OutboundRequested, event_envelope::Payload};
use telenet_store::consumer::{HandleError, Incoming};
use telenet_store::{Db, StoreError, events};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

mod deliveries;
mod directory;
mod send;
mod voice;

pub use directory::{ChannelCredentials, ChannelDirectory, DirectoryError, GrpcChannelDirectory};
pub use voice::{
    GrpcMediaFiles, MediaFiles, VariantAnswer, VariantError, VariantPart, profile_for,
};

use deliveries::{Attempted, Claim, State};
use directory::CachedDirectory;
use send::{Outcome, Sender};

pub const MIGRATIONS: telenet_store::Migrations = telenet_store::migrations!("0100_deliveries");

/// Consumer group of dispatch on the bus.
pub const GROUP: &str = "dispatch";

/// What dispatch consumes: its group and bindings. Subscribing once declares
/// the group's queue, so events published before the consumers start wait.
pub fn subscription() -> SubscribeSpec {
    SubscribeSpec::new(GROUP, &["outbound.requested"])
}

/// Dispatch settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Time allowed to open a connection to a channel's outbound URL.
    #[serde(with = "telenet_kit::config::duration")]
    pub http_connect_timeout: Duration,
    /// Time allowed for a whole attempt (connect, send, read the answer);
    /// past it the attempt counts as failed and is retried.
    #[serde(with = "telenet_kit::config::duration")]
    pub http_timeout: Duration,
    /// Attempts per message, the first included, before its delivery is
    /// FAILED. The bus's retry policy must allow at least `max_attempts - 1`
    /// retries, or the bus dead-letters the event first.
    pub max_attempts: u32,
    /// Outbound messages attempted at once.
    pub concurrency: usize,
    /// How long a channel's outbound URL and secret are reused before ingress
    /// is asked again (`0s`: ask every time). Short, so a changed channel is
    /// picked up quickly; a rejected send drops the entry at once.
    #[serde(with = "telenet_kit::config::duration")]
    pub directory_cache_ttl: Duration,
    /// Time allowed for a lookup in the channel directory.
    #[serde(with = "telenet_kit::config::duration")]
    pub directory_timeout: Duration,
    /// How long the download links of outbound attachments work (1 minute
    /// to 7 days): long enough for a receiver that fetches late or retries,
    /// short enough that a leaked link soon stops working.
    #[serde(with = "telenet_kit::config::duration")]
    pub download_link_ttl: Duration,
    /// How long an attempt waits for the media service to make a voice
    /// note's variant before it is retried later (at most 30 s).
    #[serde(with = "telenet_kit::config::duration")]
    pub voice_variant_wait: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http_connect_timeout: Duration::from_secs(5),
            http_timeout: Duration::from_secs(15),
            max_attempts: 5,
            concurrency: 32,
            directory_cache_ttl: Duration::from_secs(30),
            directory_timeout: Duration::from_secs(5),
            download_link_ttl: Duration::from_secs(86_400),
            voice_variant_wait: Duration::from_secs(10),
        }
    }
}

impl Config {
    /// How long a consumer may hold a delivery's lease: longer than anything
    /// one attempt can take, so a live attempt is never taken over, yet short
    /// enough that a crashed consumer's delivery is retried soon.
    fn lease(&self) -> Duration {
        self.directory_timeout
            + self.voice_variant_wait
            + self.http_timeout
            + Duration::from_secs(30)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("delivery not found")]
    NotFound,
    #[error("cannot set up the http client: {0}")]
    Setup(String),
    /// A setting is unusable; `key` is its name in the service's config.
    #[error("config key `{key}`: {reason}")]
    Config { key: &'static str, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bus(#[from] BusError),
}

impl ServiceError for Error {
    fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidArgument(_) => ErrorCode::InvalidArgument,
            Error::NotFound => ErrorCode::NotFound,
            Error::Store(e) if e.is_transient() => ErrorCode::Unavailable,
            Error::Store(_) | Error::Bus(_) | Error::Setup(_) | Error::Config { .. } => {
                ErrorCode::Internal
            }
        }
    }
}

impl Error {
    /// The gRPC status for this error (internal ones logged and made opaque).
    pub fn to_status(&self) -> Status {
        telenet_kit::error::to_status(self)
    }
}

/// The dispatch service: the `outbound.requested` consumer and the
/// `telenet.dispatch.v1.Dispatch` API. Clones share everything.
#[derive(Clone)]
pub struct DispatchService {
    inner: Arc<Inner>,
    metrics: Metrics,
    /// The media service, for voice notes in the channel's form and
    /// download links; `None` sends attachments as they are, unlinked.
    media: Option<Arc<dyn MediaFiles>>,
}

struct Inner {
    db: Db,
    bus: SharedBus,
    directory: CachedDirectory,
    sender: Sender,
    config: Config,
}

impl DispatchService {
    pub async fn new(
        db: Db,
        bus: SharedBus,
        directory: Arc<dyn ChannelDirectory>,
        config: Config,
    ) -> Result<Self, Error> {
        let ttl = config.download_link_ttl;
        if !(Duration::from_secs(60)..=Duration::from_secs(7 * 24 * 3600)).contains(&ttl) {
            return Err(Error::Config {
                key: "download_link_ttl",
                reason: "must be between 1m and 7d".into(),
            });
        }
        let sender = Sender::new(config.http_connect_timeout, config.http_timeout)
            .map_err(|e| Error::Setup(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                bus,
                directory: CachedDirectory::new(directory, config.directory_cache_ttl),
                sender,
                config,
            }),
            metrics: Metrics::default(),
            media: None,
        })
    }

    /// Sends voice notes in the form each channel accepts and links stored
    /// attachments, through the media service behind `media` (see the
    /// `voice` module).
    pub fn with_media(mut self, media: Arc<dyn MediaFiles>) -> Self {
        self.media = Some(media);
        self
    }

    /// Records every attempt (by channel kind and outcome) and how long
    /// channels take to answer into `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn grpc(&self) -> DispatchServer<Self> {
        DispatchServer::new(self.clone())
    }

    /// Consume `outbound.requested` until `token` is cancelled; in-flight
    /// attempts finish and are recorded before it returns. Publishing the
    /// resulting `outbound.status` events is the outbox relay's job.
    pub async fn run(self, token: CancellationToken) -> Result<(), Error> {
        let bus = self.inner.bus.clone();
        let concurrency = self.inner.config.concurrency;
        telenet_store::consumer::run(bus, subscription(), concurrency, token, move |incoming| {
            let service = self.clone();
            async move { service.deliver(incoming).await }
        })
        .await?;
        Ok(())
    }

    /// The delivery of a message, within the workspace.
    pub async fn get_delivery(
        &self,
        workspace_id: &str,
        message_id: &str,
    ) -> Result<pb::Delivery, Error> {
        require("workspace_id", workspace_id)?;
        require("message_id", message_id)?;
        deliveries::get(&self.inner.db, workspace_id, message_id)
            .await?
            .ok_or(Error::NotFound)
    }

    /// The workspace's FAILED deliveries, most recently failed first;
    /// `limit` 0 means 50, at most 200.
    pub async fn list_dead_letters(
        &self,
        workspace_id: &str,
        limit: u32,
    ) -> Result<Vec<pb::Delivery>, Error> {
        require("workspace_id", workspace_id)?;
        let limit = telenet_store::cursor::page_size(limit);
        Ok(deliveries::dead_letters(&self.inner.db, workspace_id, limit).await?)
    }

    /// Handle one `outbound.requested` delivery: claim the message, make one
    /// attempt, record it. Returns `Transient` to have the bus bring the
    /// event back later for the next attempt.
    async fn deliver(&self, incoming: Incoming) -> Result<(), HandleError> {
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
        let lease_micros = i64::try_from(self.inner.config.lease().as_micros()).unwrap_or(i64::MAX);
        let (previous, lease) = match deliveries::claim(
            &self.inner.db,
            workspace_id,
            &request,
            event_id,
            lease_micros,
        )
        .await?
        {
            Claim::Mine { attempts, lease } => (attempts, lease),
            Claim::Settled => {
                tracing::debug!(message_id = %request.message_id, "delivery already settled; not sending again");
                return Ok(());
            }
            Claim::Busy => {
                return Err(HandleError::Transient(format!(
                    "message {} is being attempted by another consumer",
                    request.message_id
                )));
            }
        };

        let attempts = previous.saturating_add(1);
        let (outcome, kind) = self.attempt(workspace_id, &request).await;
        let max_attempts = self.inner.config.max_attempts.max(1);
        let (state, external_id, error) = match outcome {
            Outcome::Sent { external_id } => (State::Sent, external_id, String::new()),
            Outcome::Reject(reason) => (State::Failed, String::new(), reason),
            Outcome::Retry(reason) if attempts >= max_attempts => (
                State::Failed,
                String::new(),
                format!("gave up after {attempts} attempts: {reason}"),
            ),
            Outcome::Retry(reason) => (State::Pending, String::new(), reason),
        };
        log_attempt(&request, attempts, state, &error);
        self.metrics.count_dispatch(
            &kind,
            match state {
                State::Sent => DispatchOutcome::Sent,
                State::Pending => DispatchOutcome::Retry,
                State::Failed => DispatchOutcome::Failed,
            },
        );
        let retry_reason = error.clone();
        let recorded = deliveries::record(
            &self.inner.db,
            Attempted {
                workspace_id,
                request: &request,
                lease: &lease,
                attempts,
                state,
                external_id,
                error,
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
            State::Sent | State::Failed => Ok(()),
        }
    }

    /// One attempt: find where the channel takes messages, sign, send.
    /// Also returns the channel's kind as metrics name it (`unknown` when
    /// the lookup failed).
    async fn attempt(&self, workspace_id: &str, request: &OutboundRequested) -> (Outcome, String) {
        let mut kind = metrics::UNKNOWN.to_owned();
        let outcome = self.attempt_as(workspace_id, request, &mut kind).await;
        (outcome, kind)
    }

    async fn attempt_as(
        &self,
        workspace_id: &str,
        request: &OutboundRequested,
        kind: &mut String,
    ) -> Outcome {
        let lookup = tokio::time::timeout(
            self.inner.config.directory_timeout,
            self.inner
                .directory
                .credentials(workspace_id, &request.channel_id),
        )
        .await;
        let credentials = match lookup {
            Ok(Ok(credentials)) => credentials,
            Ok(Err(e @ DirectoryError::Unavailable(_))) => return Outcome::Retry(e.to_string()),
            Ok(Err(e)) => return Outcome::Reject(e.to_string()),
            Err(_) => return Outcome::Retry("channel directory timed out".into()),
        };
        *kind = kind_label(credentials.kind);
        if credentials.kind != ChannelKind::Custom {
            return Outcome::Reject(format!(
                "sending on {} channels is not supported",
                credentials.kind.as_str_name()
            ));
        }
        let Ok(secret) = telenet_signing::Secret::parse(&credentials.secret) else {
            return Outcome::Reject("the channel's signing secret is invalid".into());
        };
        let message = match self
            .prepare_attachments(workspace_id, request, &credentials.accepted_voice_types)
            .await
        {
            Ok(message) => message,
            Err(outcome) => return outcome,
        };
        let started = std::time::Instant::now();
        let outcome = self
            .inner
            .sender
            .send_custom(&credentials.outbound_url, &secret, &message)
            .instrument(tracing::info_span!(
                "dispatch.send",
                otel.kind = "client",
                channel_kind = %kind,
                channel_id = %request.channel_id,
                message_id = %request.message_id,
            ))
            .await;
        self.metrics.observe_dispatch_send(kind, started.elapsed());
        if !matches!(outcome, Outcome::Sent { .. }) {
            self.inner
                .directory
                .forget(workspace_id, &request.channel_id);
        }
        outcome
    }
}

impl DispatchService {
    /// `request` with its stored voice notes in the form the channel
    /// accepts and every stored attachment linked (see the `voice`
    /// module). `Err` is the attempt's outcome when that form is not ready
    /// yet (retry) or media cannot be asked.
    async fn prepare_attachments(
        &self,
        workspace_id: &str,
        request: &OutboundRequested,
        accepted: &[String],
    ) -> Result<OutboundRequested, Outcome> {
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
            let profile = match voice::plan(&attachment.mime_type, accepted) {
                voice::Plan::AsIs => {
                    message.attachments.push(attachment.clone());
                    continue;
                }
                voice::Plan::AsFile => {
                    message.attachments.push(voice::as_file(attachment.clone()));
                    continue;
                }
                voice::Plan::Variant(profile) => profile,
            };
            let wait = self.inner.config.voice_variant_wait;
            match media
                .variant(workspace_id, &attachment.blob_id, profile, wait)
                .await
            {
                Ok(VariantAnswer::Ready(parts)) if !parts.is_empty() => {
                    message.attachments.extend(voice::from_parts(&parts))
                }
                Ok(VariantAnswer::Ready(_)) | Ok(VariantAnswer::Pending) => {
                    return Err(Outcome::Retry(format!(
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
                    message.attachments.push(voice::as_file(attachment.clone()));
                }
                Err(e @ VariantError::Unavailable(_)) => return Err(Outcome::Retry(e.to_string())),
                Err(e @ VariantError::Rejected(_)) => return Err(Outcome::Reject(e.to_string())),
            }
        }
        let ttl = self.inner.config.download_link_ttl;
        for attachment in &mut message.attachments {
            if attachment.blob_id.is_empty() || !attachment.url.is_empty() {
                continue;
            }
            let name = voice::link_name(&attachment.file_name);
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
                Err(e @ VariantError::Unavailable(_)) => return Err(Outcome::Retry(e.to_string())),
                Err(e @ VariantError::Rejected(_)) => return Err(Outcome::Reject(e.to_string())),
            }
        }
        Ok(message)
    }
}

/// `custom`, `whatsapp`, …: the proto name without its prefix, lowercase.
fn kind_label(kind: ChannelKind) -> String {
    let name = kind.as_str_name();
    name.strip_prefix("CHANNEL_KIND_")
        .unwrap_or(name)
        .to_ascii_lowercase()
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

fn require(field: &str, value: &str) -> Result<(), Error> {
    telenet_kit::error::required(field, value).map_err(Error::InvalidArgument)
}

#[tonic::async_trait]
impl Dispatch for DispatchService {
    async fn get_delivery(
        &self,
        request: Request<pb::GetDeliveryRequest>,
    ) -> Result<Response<pb::Delivery>, Status> {
        let r = request.get_ref();
        DispatchService::get_delivery(self, &r.workspace_id, &r.message_id)
            .await
            .map(Response::new)
            .map_err(|e| e.to_status())
    }

    async fn list_dead_letters(
        &self,
        request: Request<pb::ListDeadLettersRequest>,
    ) -> Result<Response<pb::ListDeadLettersResponse>, Status> {
        let r = request.get_ref();
        let deliveries = DispatchService::list_dead_letters(self, &r.workspace_id, r.limit)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(pb::ListDeadLettersResponse { deliveries }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_durations_with_units_and_keeps_defaults() {
        let config: Config = serde_json::from_value(serde_json::json!({
            "http_timeout": "2s",
            "directory_cache_ttl": "0s",
            "max_attempts": 3,
        }))
        .expect("config");
        assert_eq!(config.http_timeout, Duration::from_secs(2));
        assert_eq!(config.directory_cache_ttl, Duration::ZERO);
        assert_eq!(config.max_attempts, 3);
        assert_eq!(config.concurrency, 32);
        assert_eq!(config.http_connect_timeout, Duration::from_secs(5));
        let written = serde_json::to_value(Config::default()).expect("serialize");
        assert_eq!(written["http_timeout"], "15s");
        assert!(serde_json::from_value::<Config>(serde_json::json!({"max_attempt": 3})).is_err());
    }

    #[test]
    fn channel_kinds_are_labelled_by_their_short_name() {
        assert_eq!(kind_label(ChannelKind::Custom), "custom");
        assert_eq!(kind_label(ChannelKind::WebWidget), "web_widget");
    }
}
