//! What an audio file is, read from its bytes: container, codec, sample
//! rate, channels, bit rate, duration and waveform peaks.
//!
//! Nothing the file declares about itself is trusted. The duration is
//! computed from the stream (browser MediaRecorder WebM files have no
//! Duration element at all): from the Opus packets' own table-of-contents
//! bytes for WebM and Ogg, from the packet durations of the sample table for
//! MP4, from the frames for MP3, AMR and WAV. Every loop advances through
//! the input, so the work is bounded by the input's size, which is itself
//! capped ([`ProbeOptions::max_bytes`]).
//!
//! WebM/Matroska, Ogg and AMR are parsed here (small formats whose details
//! the Ogg/Opus remux needs: pre-skip, end trimming, packet boundaries); MP4,
//! MP3, WAV, FLAC and ADTS go through symphonia, with the MP4 edit list
//! (encoder priming and padding) read here. Opus is decoded with libopus
//! for the waveform; AAC, MP3, FLAC and PCM with symphonia's decoders.

use std::fmt;
use std::io::Read;

use telenet_proto::media::v1 as pb;
use tonic::Status;

mod amr;
pub(crate) mod matroska;
mod mp4;
pub(crate) mod ogg;
pub(crate) mod opus;
mod peaks;
mod sniff;
mod symph;

/// Largest input read (100 MiB). Voice notes are a few MB; anything larger
/// is refused before it is parsed.
pub const MAX_INPUT_BYTES: u64 = 100 * 1024 * 1024;

/// Longest voice note accepted: 5 minutes.
pub const MAX_VOICE_NOTE_MS: u64 = 5 * 60 * 1000;

/// How far past [`MAX_VOICE_NOTE_MS`] a note may run and still be accepted:
/// recorders stopped at exactly 5 minutes end on a whole packet, a few
/// milliseconds late.
pub const DURATION_GRACE_MS: u64 = 500;

/// Waveform peaks computed by default.
pub const DEFAULT_PEAKS: usize = 64;

/// Most waveform peaks that can be asked for.
pub const MAX_PEAKS: usize = 1000;

/// Most packets read from one file. A 5-minute note has at most 120 000
/// (2.5 ms Opus frames); the cap keeps hostile files made of tiny packets
/// from using memory out of proportion to their duration.
pub const MAX_PACKETS: usize = 2_000_000;

/// What to check and compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeOptions {
    /// Inputs larger than this are refused ([`ProbeError::TooLarge`]).
    pub max_bytes: u64,
    /// Audio longer than this (plus [`DURATION_GRACE_MS`]) is refused
    /// ([`ProbeError::TooLong`]); `None` accepts any length.
    pub max_duration_ms: Option<u64>,
    /// Number of waveform peaks to compute (at most [`MAX_PEAKS`]); 0 skips
    /// decoding altogether.
    pub peaks: usize,
}

impl ProbeOptions {
    /// A voice note: at most 5 minutes, 64 peaks.
    pub const VOICE_NOTE: ProbeOptions = ProbeOptions {
        max_bytes: MAX_INPUT_BYTES,
        max_duration_ms: Some(MAX_VOICE_NOTE_MS),
        peaks: DEFAULT_PEAKS,
    };

    /// The same options with `peaks` peaks.
    pub fn with_peaks(self, peaks: usize) -> Self {
        Self { peaks, ..self }
    }
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self::VOICE_NOTE
    }
}

/// Container formats that are probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Container {
    /// WebM (the Matroska subset browsers record).
    Webm,
    /// Matroska other than WebM.
    Matroska,
    Ogg,
    /// MP4 / M4A (ISO base media file format).
    Mp4,
    /// 3GPP (ISO base media with a 3gp brand).
    ThreeGp,
    /// MPEG audio frames (MP3), optionally after an ID3v2 tag.
    Mp3,
    /// Raw AAC in ADTS frames.
    Adts,
    Wav,
    Flac,
    /// AMR storage format (RFC 4867 section 5), narrow- or wide-band.
    Amr,
}

impl Container {
    /// The name used in the API (`webm`, `ogg`, `mp4`, …).
    pub fn name(self) -> &'static str {
        match self {
            Container::Webm => "webm",
            Container::Matroska => "matroska",
            Container::Ogg => "ogg",
            Container::Mp4 => "mp4",
            Container::ThreeGp => "3gp",
            Container::Mp3 => "mp3",
            Container::Adts => "aac",
            Container::Wav => "wav",
            Container::Flac => "flac",
            Container::Amr => "amr",
        }
    }
}

impl fmt::Display for Container {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Audio codecs that are probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    Opus,
    Vorbis,
    /// AAC (any profile; symphonia decodes AAC-LC).
    Aac,
    Mp3,
    /// MPEG-1/2 layer II.
    Mp2,
    Flac,
    /// Linear PCM; the name says sample format and size (`pcm_s16le`).
    Pcm(&'static str),
    AmrNb,
    AmrWb,
}

impl Codec {
    /// The name used in the API (`opus`, `aac`, `mp3`, `amr_nb`, …).
    pub fn name(self) -> &'static str {
        match self {
            Codec::Opus => "opus",
            Codec::Vorbis => "vorbis",
            Codec::Aac => "aac",
            Codec::Mp3 => "mp3",
            Codec::Mp2 => "mp2",
            Codec::Flac => "flac",
            Codec::Pcm(name) => name,
            Codec::AmrNb => "amr_nb",
            Codec::AmrWb => "amr_wb",
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a duration came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurationSource {
    /// Counted from the packets of the stream.
    Demuxed,
}

/// A video (or cover image) stream found next to the audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoTrack {
    /// Codec as the container names it (`V_VP8`, `avc1`, …).
    pub codec: String,
    pub width: u32,
    pub height: u32,
}

/// What an audio file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub container: Container,
    pub codec: Codec,
    /// The MIME type matching container and codec, e.g.
    /// `audio/ogg; codecs=opus`.
    pub mime_type: String,
    /// Sample rate in Hz: the rate the codec decodes at (48 000 for Opus,
    /// whatever the recorder's input rate was).
    pub sample_rate: u32,
    pub channels: u32,
    /// Average audio bit rate in bits per second (packet bytes over
    /// duration), 0 when the duration is 0.
    pub bit_rate: u64,
    /// Playable duration in milliseconds (Opus: pre-skip and end trimming
    /// removed), rounded to the nearest millisecond.
    pub duration_ms: u64,
    pub duration_source: DurationSource,
    /// Size of the whole file in bytes.
    pub size_bytes: u64,
    /// Audio packets (frames) in the stream.
    pub packets: u64,
    /// Peak amplitude of equal slices of the audio, 0 (silence) to 255 (full
    /// scale), loudest channel; empty when not asked for, or for codecs that
    /// are not decoded (AMR, Vorbis, Opus with more than 2 channels).
    pub peaks: Vec<u8>,
    /// Duration of each peak's slice in milliseconds (the last may be
    /// shorter); 0 without peaks.
    pub peak_slice_ms: u64,
    /// Video streams, if any (reported, not probed further).
    pub video: Vec<VideoTrack>,
}

/// Why a file could not be probed. The message names the problem in terms
/// an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("the file is empty")]
    Empty,
    #[error("the file is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("not a supported audio format (the first bytes match no known container)")]
    UnknownFormat,
    /// The bytes are something else: `what` says what (`a PNG image`, `a
    /// video with no audio track`).
    #[error("{what}, not audio")]
    NotAudio { what: String },
    /// An audio format or feature this service does not handle.
    #[error("not supported: {what}")]
    Unsupported { what: String },
    /// The file ends in the middle of something.
    #[error("truncated {container} file: {detail}")]
    Truncated {
        container: &'static str,
        detail: String,
    },
    /// The bytes break the format's rules.
    #[error("corrupt {container} file: {detail}")]
    Corrupt {
        container: &'static str,
        detail: String,
    },
    #[error(
        "the audio is {} long; voice notes are at most {}",
        seconds(*duration_ms),
        seconds(*max_ms)
    )]
    TooLong { duration_ms: u64, max_ms: u64 },
    /// Reading the input failed (not a problem with the file).
    #[error("reading the file: {0}")]
    Read(#[from] std::io::Error),
}

fn seconds(ms: u64) -> String {
    format!("{}.{:03} s", ms / 1000, ms % 1000)
}

impl ProbeError {
    /// The gRPC status: a file that is not acceptable audio is the caller's
    /// INVALID_ARGUMENT; a well-formed file over a limit is
    /// FAILED_PRECONDITION (it may be acceptable elsewhere, e.g. as a plain
    /// file attachment); a read failure is ours.
    pub fn to_status(&self) -> Status {
        match self {
            ProbeError::TooLong { .. } | ProbeError::TooLarge { .. } => {
                Status::failed_precondition(self.to_string())
            }
            ProbeError::Read(e) => {
                tracing::error!(error = %e, "reading a blob to probe failed");
                Status::internal("internal error")
            }
            _ => Status::invalid_argument(self.to_string()),
        }
    }

    pub(crate) fn corrupt(container: Container, detail: impl Into<String>) -> Self {
        ProbeError::Corrupt {
            container: container.name(),
            detail: detail.into(),
        }
    }

    pub(crate) fn truncated(container: Container, detail: impl Into<String>) -> Self {
        ProbeError::Truncated {
            container: container.name(),
            detail: detail.into(),
        }
    }

    pub(crate) fn unsupported(what: impl Into<String>) -> Self {
        ProbeError::Unsupported { what: what.into() }
    }
}

/// Probe a file held in memory.
pub fn probe(data: &[u8], options: &ProbeOptions) -> Result<Probe, ProbeError> {
    if data.len() as u64 > options.max_bytes {
        return Err(ProbeError::TooLarge {
            limit: options.max_bytes,
        });
    }
    if data.is_empty() {
        return Err(ProbeError::Empty);
    }
    let mut container = match sniff::sniff(data) {
        sniff::Sniffed::Audio(container) => container,
        sniff::Sniffed::NotAudio(what) => {
            return Err(ProbeError::NotAudio { what: what.into() });
        }
        sniff::Sniffed::Unsupported(what) => return Err(ProbeError::unsupported(what)),
        sniff::Sniffed::Unknown => return Err(ProbeError::UnknownFormat),
    };
    let peaks = options.peaks.min(MAX_PEAKS);
    let mut envelope = (peaks > 0).then(peaks::Envelope::default);
    let stream = match container {
        Container::Webm | Container::Matroska => {
            let mkv = matroska::parse(data)?;
            // The DocType tells WebM from other Matroska.
            container = mkv.container;
            let opus = opus::OpusStream::from_matroska(&mkv)?;
            let audio = opus.summary(options)?;
            if let Some(env) = envelope.as_mut()
                && !opus.decode_into(env)?
            {
                envelope = None;
            }
            Summary {
                video: mkv.video_tracks(),
                ..audio
            }
        }
        Container::Ogg => match ogg::OggAudio::from_stream(ogg::parse(data)?)? {
            ogg::OggAudio::Opus(opus) => {
                let audio = opus.summary(options)?;
                if let Some(env) = envelope.as_mut()
                    && !opus.decode_into(env)?
                {
                    envelope = None;
                }
                audio
            }
            ogg::OggAudio::Vorbis(summary) => {
                check_duration(summary.duration_ms, options)?;
                // No Vorbis decoder is built in: duration and rates only.
                envelope = None;
                summary
            }
        },
        Container::Amr => {
            let summary = amr::probe(data, options)?;
            // No AMR decoder is available as a well-kept crate.
            envelope = None;
            summary
        }
        Container::Mp4
        | Container::ThreeGp
        | Container::Mp3
        | Container::Adts
        | Container::Wav
        | Container::Flac => symph::probe(data, container, options, &mut envelope)?,
    };
    let peaks_out = envelope.map(|e| e.finish(peaks)).unwrap_or_default();
    let peak_slice_ms = if peaks_out.is_empty() {
        0
    } else {
        stream.duration_ms.div_ceil(peaks_out.len() as u64)
    };
    let mime_type = mime_type(container, stream.codec, !stream.video.is_empty());
    Ok(Probe {
        container,
        codec: stream.codec,
        mime_type,
        sample_rate: stream.sample_rate,
        channels: stream.channels,
        bit_rate: bit_rate(stream.audio_bytes, stream.duration_ms),
        duration_ms: stream.duration_ms,
        duration_source: DurationSource::Demuxed,
        size_bytes: data.len() as u64,
        packets: stream.packets,
        peaks: peaks_out,
        peak_slice_ms,
        video: stream.video,
    })
}

/// Probe what `reader` yields, reading at most `options.max_bytes` (one
/// byte more tells a file over the limit from one exactly at it).
pub fn probe_reader(reader: impl Read, options: &ProbeOptions) -> Result<Probe, ProbeError> {
    let data = read_bounded(reader, options.max_bytes)?;
    probe(&data, options)
}

/// Everything `reader` yields, refusing more than `limit` bytes without
/// reading past `limit + 1`.
pub fn read_bounded(reader: impl Read, limit: u64) -> Result<Vec<u8>, ProbeError> {
    let mut data = Vec::new();
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut data)?;
    if data.len() as u64 > limit {
        return Err(ProbeError::TooLarge { limit });
    }
    Ok(data)
}

/// What each container parser reports about its audio.
#[derive(Debug, Clone)]
pub(crate) struct Summary {
    pub codec: Codec,
    pub sample_rate: u32,
    pub channels: u32,
    pub duration_ms: u64,
    pub packets: u64,
    /// Bytes of audio packets (for the bit rate).
    pub audio_bytes: u64,
    pub video: Vec<VideoTrack>,
}

/// Refuse audio over the limit. Called as soon as the duration is known,
/// before anything is decoded.
pub(crate) fn check_duration(duration_ms: u64, options: &ProbeOptions) -> Result<(), ProbeError> {
    match options.max_duration_ms {
        Some(max_ms) if duration_ms > max_ms.saturating_add(DURATION_GRACE_MS) => {
            Err(ProbeError::TooLong {
                duration_ms,
                max_ms,
            })
        }
        _ => Ok(()),
    }
}

/// `samples` at `rate` Hz in milliseconds, rounded to nearest.
pub(crate) fn samples_to_ms(samples: u64, rate: u64) -> u64 {
    if rate == 0 {
        return 0;
    }
    let ms = (u128::from(samples) * 1000 + u128::from(rate) / 2) / u128::from(rate);
    u64::try_from(ms).unwrap_or(u64::MAX)
}

fn bit_rate(bytes: u64, duration_ms: u64) -> u64 {
    if duration_ms == 0 {
        return 0;
    }
    let bps = u128::from(bytes) * 8 * 1000 / u128::from(duration_ms);
    u64::try_from(bps).unwrap_or(u64::MAX)
}

fn mime_type(container: Container, codec: Codec, has_video: bool) -> String {
    let media = if has_video { "video" } else { "audio" };
    match container {
        Container::Webm => format!("{media}/webm; codecs={codec}"),
        Container::Matroska => format!("{media}/x-matroska; codecs={codec}"),
        Container::Ogg => format!("audio/ogg; codecs={codec}"),
        Container::Mp4 if codec == Codec::Aac => format!("{media}/mp4; codecs=mp4a.40.2"),
        Container::Mp4 => format!("{media}/mp4; codecs={codec}"),
        Container::ThreeGp => format!("{media}/3gpp"),
        Container::Mp3 => "audio/mpeg".to_owned(),
        Container::Adts => "audio/aac".to_owned(),
        Container::Wav => "audio/wav".to_owned(),
        Container::Flac => "audio/flac".to_owned(),
        Container::Amr if codec == Codec::AmrWb => "audio/amr-wb".to_owned(),
        Container::Amr => "audio/amr".to_owned(),
    }
}

impl Probe {
    /// The API form of this probe, for blob `blob_id`.
    pub fn to_proto(&self, blob_id: &str) -> pb::ProbeResult {
        pb::ProbeResult {
            blob_id: blob_id.to_owned(),
            container: self.container.name().to_owned(),
            mime_type: self.mime_type.clone(),
            duration_ms: self.duration_ms,
            duration_source: pb::DurationSource::Demuxed as i32,
            bit_rate_bps: bit_rate(self.size_bytes, self.duration_ms),
            audio: vec![pb::AudioStream {
                index: 0,
                codec: self.codec.name().to_owned(),
                profile: String::new(),
                sample_rate_hz: self.sample_rate,
                channels: self.channels,
                bit_rate_bps: self.bit_rate,
                duration_ms: self.duration_ms,
            }],
            video: self
                .video
                .iter()
                .enumerate()
                .map(|(i, v)| pb::VideoStream {
                    index: u32::try_from(i + 1).unwrap_or(u32::MAX),
                    codec: v.codec.clone(),
                    width: v.width,
                    height: v.height,
                    frame_rate: 0.0,
                    bit_rate_bps: 0,
                    duration_ms: 0,
                })
                .collect(),
            waveform: (!self.peaks.is_empty()).then(|| pb::Waveform {
                peaks: self.peaks.iter().map(|&p| u32::from(p)).collect(),
                slice_ms: self.peak_slice_ms,
            }),
            probed_at: Some(telenet_store::timestamp(telenet_store::now_micros())),
        }
    }
}

/// Waveform peaks computed for the agents' player (inbound voice notes are
/// probed with this many, and the answer is kept).
pub const PLAYER_PEAKS: u32 = 64;

impl crate::MediaService {
    /// Probe a blob the workspace uploaded (`Probe` RPC). The bytes are read
    /// into memory (at most [`MAX_INPUT_BYTES`]) and probed on a blocking
    /// thread: probing is CPU work.
    pub async fn probe_blob(
        &self,
        req: &pb::ProbeRequest,
    ) -> Result<pb::ProbeResult, crate::Error> {
        let peaks = match req.waveform_peaks {
            0 => 0,
            n @ 16..=1000 => n as usize,
            _ => {
                return Err(crate::Error::InvalidArgument(
                    "waveform_peaks must be 0 (no waveform) or between 16 and 1000".into(),
                ));
            }
        };
        let blob = self.blob(&req.workspace_id, &req.blob_id).await?;
        self.probe_stored(&blob, peaks).await
    }

    /// Probe a blob already looked up, with `peaks` waveform slices: the
    /// kept answer, or probed now and kept.
    async fn probe_stored(
        &self,
        blob: &pb::Blob,
        peaks: usize,
    ) -> Result<pb::ProbeResult, crate::Error> {
        if let Some(cached) = self.cached_probe(&blob.id, peaks).await? {
            return Ok(cached);
        }
        let options = ProbeOptions::VOICE_NOTE.with_peaks(peaks);
        if blob.size_bytes > options.max_bytes {
            return Err(ProbeError::TooLarge {
                limit: options.max_bytes,
            }
            .into());
        }
        let id = crate::BlobId::parse(&blob.id)
            .map_err(|_| crate::Error::InvalidArgument("blob_id is not a blob id".into()))?;
        let reader = self.blob_store().reader(&id, crate::ByteRange::ALL).await?;
        let mut data = Vec::with_capacity(usize::try_from(blob.size_bytes).unwrap_or(0));
        tokio::io::AsyncReadExt::read_to_end(
            &mut tokio::io::AsyncReadExt::take(reader.bytes, options.max_bytes + 1),
            &mut data,
        )
        .await
        .map_err(|source| crate::Error::Read {
            blob_id: blob.id.clone(),
            source,
        })?;
        let probed = tokio::task::spawn_blocking(move || probe(&data, &options))
            .await
            .map_err(|e| ProbeError::Read(std::io::Error::other(e)))??;
        tracing::debug!(
            blob_id = %blob.id,
            container = %probed.container,
            codec = %probed.codec,
            duration_ms = probed.duration_ms,
            "blob probed"
        );
        let result = probed.to_proto(&blob.id);
        self.keep_probe(&result, peaks).await?;
        Ok(result)
    }

    /// Everything known about a blob the workspace can see
    /// (`GetBlobMetadata`): its record, its probe (audio and video, with
    /// the player's waveform; probed now if never asked, and kept) and its
    /// variants. A file that does not probe is still described, without
    /// probe or detected type.
    pub async fn blob_metadata(
        &self,
        req: &pb::GetBlobMetadataRequest,
    ) -> Result<pb::BlobMetadata, crate::Error> {
        let (blob, created_at) = self.blob_record(&req.workspace_id, &req.blob_id).await?;
        let declared = blob.mime_type.to_ascii_lowercase();
        let media = declared.starts_with("audio/") || declared.starts_with("video/");
        let probe = if media {
            match self.probe_stored(&blob, PLAYER_PEAKS as usize).await {
                Ok(result) => Some(result),
                Err(crate::Error::Probe(e)) if !matches!(e, ProbeError::Read(_)) => None,
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        let detected = probe
            .as_ref()
            .map(|p| p.mime_type.clone())
            .unwrap_or_default();
        let kind_of = if detected.is_empty() {
            &declared
        } else {
            &detected
        };
        let kind = if kind_of.starts_with("audio/") {
            telenet_proto::common::v1::AttachmentKind::Audio
        } else if kind_of.starts_with("video/") {
            telenet_proto::common::v1::AttachmentKind::Video
        } else if kind_of.starts_with("image/") {
            telenet_proto::common::v1::AttachmentKind::Image
        } else {
            telenet_proto::common::v1::AttachmentKind::File
        };
        let variants = self.list_variants(&req.workspace_id, &req.blob_id).await?;
        Ok(pb::BlobMetadata {
            blob: Some(blob),
            detected_mime_type: detected,
            kind: kind as i32,
            created_at: Some(telenet_store::timestamp(created_at)),
            probe,
            variants,
        })
    }

    /// The kept answer for these bytes and this many peaks, if any. One
    /// that no longer decodes (written by another version) is ignored.
    async fn cached_probe(
        &self,
        blob_id: &str,
        peaks: usize,
    ) -> Result<Option<pb::ProbeResult>, crate::Error> {
        use prost::Message;
        use telenet_store::sqlx::{self, Row};
        let row = sqlx::query("SELECT result FROM probes WHERE blob_id = $1 AND peaks = $2")
            .bind(blob_id)
            .bind(i64::try_from(peaks).unwrap_or(i64::MAX))
            .fetch_optional(self.db.pool())
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let bytes: Vec<u8> = row.try_get("result")?;
        Ok(pb::ProbeResult::decode(&bytes[..]).ok())
    }

    /// Keep an answer; a concurrent probe of the same bytes keeps the same
    /// answer, so the first one written stays.
    async fn keep_probe(&self, result: &pb::ProbeResult, peaks: usize) -> Result<(), crate::Error> {
        use prost::Message;
        use telenet_store::sqlx;
        sqlx::query(
            "INSERT INTO probes (blob_id, peaks, result, probed_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (blob_id, peaks) DO NOTHING",
        )
        .bind(&result.blob_id)
        .bind(i64::try_from(peaks).unwrap_or(i64::MAX))
        .bind(result.encode_to_vec())
        .bind(telenet_store::now_micros())
        .execute(self.db.pool())
        .await?;
        Ok(())
    }
}
