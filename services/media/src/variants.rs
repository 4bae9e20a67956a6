//! Variants: a stored file turned into a profile's output, made once and
//! kept.
//!
//! A variant is keyed by the source's content hash and the profile name, so
//! the same bytes give the same variant whichever workspace asks; its parts
//! are blobs of the store like any upload, made visible (a `blobs` row) to
//! each workspace that asks for the variant of a file it can see.
//!
//! Computed once even when asked for concurrently:
//! - in one process, requests for the same (hash, profile) join the job
//!   already running (single flight: one map entry per key, removed when the
//!   job ends);
//! - across replicas, a job first claims the `variants` row with a
//!   conditional UPDATE (a lease); a replica that loses the claim leaves the
//!   work to the winner, and its waiters read the row until it is done. A
//!   lease that runs out (its holder died) can be claimed again.
//!
//! Jobs run on a bounded pool — a semaphore with one permit per worker
//! (default: one per CPU core) — and each job encodes on one core, so two
//! notes transcoding at once each get a core and a third waits its turn
//! instead of slowing the first two down.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use telenet_audio::encode::{self, Tools};
use telenet_audio::profiles::{self, Profile, TranscodeError, Unavailable};
use telenet_proto::events::v1::{self as ev, event_envelope::Payload};
use telenet_proto::media::v1 as pb;
use telenet_store::now_micros;
use tokio::io::AsyncReadExt;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::domain::{find_profile, parse_blob_id, require};
use crate::metrics::{TranscodeJobState as JobState, TranscodeOutcome};
use crate::store::{self, FAILED, PENDING, READY, VariantKey as Key};
use crate::{BlobId, ByteRange, Error, MediaService, StoredBlob};

/// Longest `wait_ms` a Transcode request may ask for.
pub const MAX_WAIT_MS: u32 = 30_000;

/// Transcoding settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TranscodeConfig {
    /// Transcodes that run at once; 0 means one per CPU core. Each uses
    /// about one core, so more than the cores only makes every one slower.
    pub workers: usize,
    /// The `ffmpeg` program (AAC and still-image MP4 output): a name looked
    /// up in `PATH`, or a path. Without it those profiles are refused
    /// (FAILED_PRECONDITION naming the program).
    pub ffmpeg: PathBuf,
    /// The `sox` program (AMR input, AMR-NB output); without it the AMR
    /// profile is refused.
    pub sox: PathBuf,
    /// Longest an external encoder may run, in seconds; it is killed then.
    pub tool_timeout_secs: u64,
    /// Most bytes an external encoder may write.
    pub tool_max_output_bytes: u64,
}

impl Default for TranscodeConfig {
    fn default() -> Self {
        let tools = Tools::default();
        Self {
            workers: 0,
            ffmpeg: tools.ffmpeg,
            sox: tools.sox,
            tool_timeout_secs: tools.timeout.as_secs(),
            tool_max_output_bytes: tools.max_output_bytes,
        }
    }
}

impl TranscodeConfig {
    /// Refuse unusable settings: `(key, reason)`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.tool_timeout_secs == 0 || self.tool_timeout_secs > 3600 {
            return Err((
                "transcode.tool_timeout_secs",
                "must be between 1 and 3600".into(),
            ));
        }
        if self.tool_max_output_bytes == 0 {
            return Err(("transcode.tool_max_output_bytes", "must not be 0".into()));
        }
        for (key, path) in [
            ("transcode.ffmpeg", &self.ffmpeg),
            ("transcode.sox", &self.sox),
        ] {
            if path.as_os_str().is_empty() {
                return Err((key, "must not be empty".into()));
            }
        }
        Ok(())
    }

    /// Workers to run: `workers`, or the CPU cores.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }

    /// The encoders' options.
    pub fn encode_options(&self) -> encode::Options {
        encode::Options {
            tools: Tools {
                ffmpeg: self.ffmpeg.clone(),
                sox: self.sox.clone(),
                timeout: Duration::from_secs(self.tool_timeout_secs),
                max_output_bytes: self.tool_max_output_bytes,
            },
            ..encode::Options::default()
        }
    }
}

/// The transcoding machinery a service shares between its clones.
#[derive(Debug)]
pub(crate) struct Variants {
    pool: Arc<Semaphore>,
    workers: usize,
    inflight: Mutex<HashMap<Key, watch::Receiver<bool>>>,
    options: encode::Options,
    /// How long a claimed job may run before another may take it over.
    lease: Duration,
    /// Encodes started (transcodes actually run, not joined or cached).
    started: AtomicU64,
    /// Encodes running now, and the most that ever ran at once.
    running: AtomicU64,
    peak_running: AtomicU64,
    /// Profiles whose program is missing, found when the service starts.
    unavailable: Vec<Unavailable>,
    /// Every job spawned, so shutdown can wait for those running.
    jobs: TaskTracker,
    /// Cancelled at shutdown: jobs still waiting for a worker leave their
    /// variant PENDING for the next process instead of starting.
    stopping: CancellationToken,
}

impl Variants {
    pub fn new(config: &TranscodeConfig) -> Self {
        let workers = config.worker_count();
        let options = config.encode_options();
        let unavailable = profiles::unavailable(&options.tools);
        warn_unavailable(&unavailable);
        Self {
            pool: Arc::new(Semaphore::new(workers)),
            workers,
            inflight: Mutex::new(HashMap::new()),
            // Far longer than a job takes: decode + encode + the tool limit.
            lease: options.tools.timeout * 2 + Duration::from_secs(60),
            options,
            started: AtomicU64::new(0),
            running: AtomicU64::new(0),
            peak_running: AtomicU64::new(0),
            unavailable,
            jobs: TaskTracker::new(),
            stopping: CancellationToken::new(),
        }
    }

    /// Why `profile` cannot be made at all here, when its program is
    /// missing (profiles that still make some inputs without it are taken).
    fn refusal(&self, profile: &Profile) -> Option<&Unavailable> {
        self.unavailable
            .iter()
            .find(|u| u.profile == profile.name && !u.partly)
    }
}

/// One warning naming every profile that cannot be made on this machine
/// and why, so an operator sees at start what a missing program costs.
fn warn_unavailable(unavailable: &[Unavailable]) {
    if unavailable.is_empty() {
        return;
    }
    let reasons: Vec<String> = unavailable.iter().map(ToString::to_string).collect();
    tracing::warn!(
        profiles = %unavailable.iter().map(|u| u.profile).collect::<Vec<_>>().join(","),
        "media profiles unavailable: {}",
        reasons.join("; ")
    );
}

impl MediaService {
    /// Transcodes that actually ran in this process (not those answered
    /// from the cache or joined while running).
    pub fn transcodes_started(&self) -> u64 {
        self.variants.started.load(Ordering::Relaxed)
    }

    /// The most transcodes that ran at once in this process (never more
    /// than the workers).
    pub fn transcodes_peak_running(&self) -> u64 {
        self.variants.peak_running.load(Ordering::Relaxed)
    }

    /// Stop starting transcodes and wait for those running to finish and
    /// be recorded (shutdown); jobs still waiting leave their variant
    /// PENDING, for this or another replica to make when asked again.
    pub async fn finish_transcodes(&self) {
        self.variants.stopping.cancel();
        self.variants.jobs.close();
        self.variants.jobs.wait().await;
    }

    /// Workers of the transcoding pool.
    pub fn transcode_workers(&self) -> usize {
        self.variants.workers
    }

    /// Make (or find) the variant of a blob in a profile; see the
    /// `Transcode` RPC.
    pub async fn transcode(&self, req: &pb::TranscodeRequest) -> Result<pb::Variant, Error> {
        require("workspace_id", &req.workspace_id)?;
        let profile = find_profile(&req.profile)?;
        if let Some(unavailable) = self.variants.refusal(profile) {
            return Err(Error::FailedPrecondition(unavailable.to_string()));
        }
        if req.wait_ms > MAX_WAIT_MS {
            return Err(Error::InvalidArgument(format!(
                "wait_ms must be at most {MAX_WAIT_MS}"
            )));
        }
        let source = self.blob(&req.workspace_id, &req.blob_id).await?;
        let key: Key = (source.id.clone(), profile.name);

        let row = store::load_variant(&self.db, &key).await?;
        let needs_work = match &row {
            None => true,
            Some(r) if r.state == READY => false,
            Some(r) if r.state == FAILED => !r.permanent,
            Some(_) => true,
        };
        if needs_work {
            store::ensure_pending(&self.db, &key, now_micros()).await?;
            let done = self.start_job(key.clone(), profile, req.workspace_id.clone());
            if req.wait_ms > 0 {
                self.wait_for(&key, done, Duration::from_millis(u64::from(req.wait_ms)))
                    .await;
            }
        }
        self.answer(&req.workspace_id, &key)
            .await?
            .ok_or(Error::NotFound)
    }

    /// One variant of a blob the workspace can see; NOT_FOUND when it was
    /// never asked for.
    pub async fn get_variant(&self, req: &pb::GetVariantRequest) -> Result<pb::Variant, Error> {
        require("workspace_id", &req.workspace_id)?;
        let profile = find_profile(&req.profile)?;
        let source = self.blob(&req.workspace_id, &req.blob_id).await?;
        self.answer(&req.workspace_id, &(source.id, profile.name))
            .await?
            .ok_or(Error::NotFound)
    }

    /// Every variant of a blob the workspace can see, by profile name.
    pub async fn list_variants(
        &self,
        workspace_id: &str,
        blob_id: &str,
    ) -> Result<Vec<pb::Variant>, Error> {
        let source = self.blob(workspace_id, blob_id).await?;
        let names = store::variant_profiles(&self.db, &source.id).await?;
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            // Rows of profiles no longer in the registry are not shown.
            let Some(profile) = profiles::find(&name) else {
                continue;
            };
            if let Some(v) = self
                .answer(workspace_id, &(source.id.clone(), profile.name))
                .await?
            {
                out.push(v);
            }
        }
        Ok(out)
    }

    /// The variant as the API shows it to `workspace_id`; the parts of a
    /// READY variant are made visible to that workspace first.
    async fn answer(&self, workspace_id: &str, key: &Key) -> Result<Option<pb::Variant>, Error> {
        let Some(row) = store::load_variant(&self.db, key).await? else {
            return Ok(None);
        };
        if row.state == READY {
            for part in &row.parts {
                let id = parse_blob_id(&part.blob_id)?;
                self.record(
                    workspace_id,
                    &StoredBlob {
                        id,
                        size_bytes: part.size_bytes,
                        newly_stored: false,
                    },
                    &part.mime_type,
                )
                .await?;
            }
        }
        let state = match row.state.as_str() {
            READY => pb::VariantState::Ready,
            FAILED => pb::VariantState::Failed,
            _ => pb::VariantState::Pending,
        };
        Ok(Some(pb::Variant {
            workspace_id: workspace_id.to_owned(),
            source_blob_id: key.0.clone(),
            profile: key.1.to_owned(),
            state: state as i32,
            parts: if row.state == READY {
                row.parts
            } else {
                Vec::new()
            },
            remuxed: row.remuxed,
            error: row.error,
            created_at: Some(telenet_store::timestamp(row.created_at)),
            finished_at: (row.finished_at > 0).then(|| telenet_store::timestamp(row.finished_at)),
        }))
    }

    /// The running job for `key`, or a new one. The receiver turns `true`
    /// when the job has ended (whatever its outcome: the row says).
    fn start_job(
        &self,
        key: Key,
        profile: &'static Profile,
        workspace_id: String,
    ) -> watch::Receiver<bool> {
        let Ok(mut inflight) = self.variants.inflight.lock() else {
            // A poisoned map only happens after a panic elsewhere; waiting
            // on the row still works.
            let (_tx, rx) = watch::channel(true);
            return rx;
        };
        if let Some(rx) = inflight.get(&key) {
            return rx.clone();
        }
        let (tx, rx) = watch::channel(false);
        inflight.insert(key.clone(), rx.clone());
        drop(inflight);
        let service = self.clone();
        self.variants.jobs.spawn(async move {
            service.run_job(&key, profile, &workspace_id).await;
            if let Ok(mut inflight) = service.variants.inflight.lock() {
                inflight.remove(&key);
            }
            let _ = tx.send(true);
        });
        rx
    }

    /// Wait until the job ends or `timeout`; when the job runs in another
    /// replica, poll the row.
    async fn wait_for(&self, key: &Key, mut done: watch::Receiver<bool>, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        let _ = tokio::time::timeout_at(deadline, done.wait_for(|d| *d)).await;
        while tokio::time::Instant::now() < deadline {
            match store::load_variant(&self.db, key).await {
                Ok(Some(row)) if row.state != PENDING => return,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "reading a variant while waiting");
                    return;
                }
            }
            tokio::time::sleep_until(
                deadline.min(tokio::time::Instant::now() + Duration::from_millis(100)),
            )
            .await;
        }
    }

    /// Claim, encode, store, record. Failures end in the row (FAILED with
    /// the reason), never in a panic or a lost job.
    async fn run_job(&self, key: &Key, profile: &'static Profile, workspace_id: &str) {
        self.metrics.add_transcode_jobs(JobState::Waiting, 1);
        let permit = tokio::select! {
            permit = Arc::clone(&self.variants.pool).acquire_owned() => permit.ok(),
            () = self.variants.stopping.cancelled() => None,
        };
        self.metrics.add_transcode_jobs(JobState::Waiting, -1);
        let Some(_permit) = permit else {
            return;
        };
        match self.claim(key).await {
            Ok(true) => {}
            Ok(false) => return, // done, or another replica has it
            Err(e) => {
                tracing::warn!(error = %e, source = %key.0, profile = key.1, "cannot claim a variant");
                return;
            }
        }
        self.variants.started.fetch_add(1, Ordering::Relaxed);
        let now_running = self.variants.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.variants
            .peak_running
            .fetch_max(now_running, Ordering::SeqCst);
        let started = std::time::Instant::now();
        self.metrics.add_transcode_jobs(JobState::Running, 1);
        let outcome = self.make(key, profile, workspace_id).await;
        self.metrics.add_transcode_jobs(JobState::Running, -1);
        self.variants.running.fetch_sub(1, Ordering::SeqCst);
        let measured = match &outcome {
            Ok((_, true)) => TranscodeOutcome::Remuxed,
            Ok((_, false)) => TranscodeOutcome::Encoded,
            Err(_) => TranscodeOutcome::Failed,
        };
        self.metrics
            .observe_transcode(profile.name, measured, started.elapsed());
        let result = match outcome {
            Ok((parts, remuxed)) => self.finish_ready(key, &parts, remuxed, workspace_id).await,
            Err((reason, permanent)) => {
                tracing::warn!(source = %key.0, profile = key.1, permanent, %reason, "transcode failed");
                self.finish_failed(key, &reason, permanent, workspace_id)
                    .await
            }
        };
        if let Err(e) = result {
            tracing::error!(error = %e, source = %key.0, profile = key.1, "recording a variant failed");
        }
        tracing::info!(
            source = %key.0,
            profile = key.1,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "transcode finished"
        );
    }

    /// Take the job: a PENDING row nobody holds (or whose holder's lease
    /// ran out). `false` when it is READY, FAILED for good, or held.
    async fn claim(&self, key: &Key) -> Result<bool, Error> {
        let now = now_micros();
        let lease = i64::try_from(self.variants.lease.as_micros()).unwrap_or(i64::MAX);
        store::claim_variant(&self.db, key, now, now.saturating_add(lease)).await
    }

    /// Read the source, transcode it on a blocking thread, store the parts
    /// and make them visible to the workspace. `Err((reason, permanent))`.
    async fn make(
        &self,
        key: &Key,
        profile: &'static Profile,
        workspace_id: &str,
    ) -> Result<(Vec<pb::VariantPart>, bool), (String, bool)> {
        let internal = |e: Error| (e.to_string(), false);
        let id = parse_blob_id(&key.0).map_err(internal)?;
        let input = self.read_source(&id).await.map_err(internal)?;
        let options = self.variants.options.clone();
        let transcoded = tokio::task::spawn_blocking(move || {
            profiles::transcode_with(&input, profile, &options)
        })
        .await
        .map_err(|e| (format!("transcode task: {e}"), false))?
        .map_err(|e| {
            let permanent = match &e {
                TranscodeError::Encode(e) => e.is_permanent(),
                TranscodeError::Input(_) | TranscodeError::Unsupported { .. } => true,
                TranscodeError::UnknownProfile(_) => true,
            };
            (e.to_string(), permanent)
        })?;
        let mut parts = Vec::with_capacity(transcoded.parts.len());
        for (index, part) in transcoded.parts.iter().enumerate() {
            let mut writer = self.store.writer().await.map_err(|e| internal(e.into()))?;
            writer
                .write(&part.data)
                .await
                .map_err(|e| internal(e.into()))?;
            let stored = writer.commit().await.map_err(|e| internal(e.into()))?;
            self.record(workspace_id, &stored, part.mime_type)
                .await
                .map_err(internal)?;
            parts.push(pb::VariantPart {
                index: u32::try_from(index).unwrap_or(u32::MAX),
                blob_id: stored.id.to_string(),
                mime_type: part.mime_type.to_owned(),
                size_bytes: stored.size_bytes,
                duration_ms: part.duration_ms,
            });
        }
        Ok((parts, transcoded.remuxed))
    }

    /// The whole source blob, refusing more than the probe reads.
    async fn read_source(&self, id: &BlobId) -> Result<Vec<u8>, Error> {
        let reader = self.store.reader(id, ByteRange::ALL).await?;
        let limit = telenet_audio::probe::MAX_INPUT_BYTES;
        if reader.size_bytes > limit {
            return Err(Error::ResourceExhausted(format!(
                "the file is {} bytes; at most {limit} are transcoded",
                reader.size_bytes
            )));
        }
        let mut data = Vec::with_capacity(usize::try_from(reader.size_bytes).unwrap_or(0));
        reader
            .bytes
            .take(limit)
            .read_to_end(&mut data)
            .await
            .map_err(|source| Error::Read {
                blob_id: id.to_string(),
                source,
            })?;
        Ok(data)
    }

    /// Record the parts and mark the variant READY, announcing
    /// `media.variant_ready` to `workspace_id` in the same transaction.
    async fn finish_ready(
        &self,
        key: &Key,
        parts: &[pb::VariantPart],
        remuxed: bool,
        workspace_id: &str,
    ) -> Result<(), Error> {
        let finished_at = now_micros();
        store::finish_ready(&self.db, key, parts, remuxed, finished_at, |created_at| {
            let variant = pb::Variant {
                state: pb::VariantState::Ready as i32,
                parts: parts.to_vec(),
                remuxed,
                ..finished(workspace_id, key, created_at, finished_at)
            };
            let payload = Payload::MediaVariantReady(ev::MediaVariantReady {
                variant: Some(variant),
            });
            (workspace_id.to_owned(), payload)
        })
        .await
    }

    /// Mark the variant FAILED with the reason, announcing
    /// `media.variant_failed` to `workspace_id` in the same transaction.
    async fn finish_failed(
        &self,
        key: &Key,
        reason: &str,
        permanent: bool,
        workspace_id: &str,
    ) -> Result<(), Error> {
        let finished_at = now_micros();
        store::finish_failed(
            &self.db,
            key,
            reason,
            permanent,
            finished_at,
            |created_at| {
                let variant = pb::Variant {
                    state: pb::VariantState::Failed as i32,
                    error: reason.to_owned(),
                    ..finished(workspace_id, key, created_at, finished_at)
                };
                let payload = Payload::MediaVariantFailed(ev::MediaVariantFailed {
                    variant: Some(variant),
                });
                (workspace_id.to_owned(), payload)
            },
        )
        .await
    }
}

/// A finished variant as announced to `workspace_id` (state, parts and
/// error to be filled in).
fn finished(workspace_id: &str, key: &Key, created_at: i64, finished_at: i64) -> pb::Variant {
    pb::Variant {
        workspace_id: workspace_id.to_owned(),
        source_blob_id: key.0.clone(),
        profile: key.1.to_owned(),
        created_at: Some(telenet_store::timestamp(created_at)),
        finished_at: Some(telenet_store::timestamp(finished_at)),
        ..pb::Variant::default()
    }
}
