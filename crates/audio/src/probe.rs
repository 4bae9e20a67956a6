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

use crate::sniff::{self, Format};

mod amr;
pub(crate) mod matroska;
mod mp4;
pub(crate) mod ogg;
pub(crate) mod opus;
mod peaks;
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

/// Waveform peaks computed by default: what the agents' player shows
/// (inbound voice notes are probed with this many, and the answer is kept).
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
    /// Whether the file is acceptable audio that is over a limit (it may be
    /// acceptable elsewhere, e.g. as a plain file attachment), rather than
    /// something that is not acceptable audio at all.
    pub fn is_over_limit(&self) -> bool {
        matches!(
            self,
            ProbeError::TooLong { .. } | ProbeError::TooLarge { .. }
        )
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
    let mut container = match classify(data) {
        Sniffed::Audio(container) => container,
        Sniffed::NotAudio(what) => {
            return Err(ProbeError::NotAudio { what: what.into() });
        }
        Sniffed::Unsupported(what) => return Err(ProbeError::unsupported(what)),
        Sniffed::Unknown => return Err(ProbeError::UnknownFormat),
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

/// What the sniffed format means for the probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sniffed {
    Audio(Container),
    /// Something that is not audio at all.
    NotAudio(&'static str),
    /// A media format that may hold audio but is not handled.
    Unsupported(&'static str),
    Unknown,
}

/// The container to parse `data` as, or what it is instead.
fn classify(data: &[u8]) -> Sniffed {
    let audio = |container| Sniffed::Audio(container);
    match sniff::sniff(data) {
        Some(Format::Matroska) => audio(Container::Webm),
        Some(Format::Ogg) => audio(Container::Ogg),
        Some(Format::Mp4) => audio(Container::Mp4),
        Some(Format::ThreeGp) => audio(Container::ThreeGp),
        Some(Format::Mp3) => audio(Container::Mp3),
        Some(Format::Aac) => audio(Container::Adts),
        Some(Format::Wav) => audio(Container::Wav),
        Some(Format::Flac) => audio(Container::Flac),
        Some(Format::Amr | Format::AmrWb) => audio(Container::Amr),
        Some(Format::Avi) => Sniffed::Unsupported(Format::Avi.what()),
        Some(other) => Sniffed::NotAudio(other.what()),
        None if sniff::looks_like_text(data) => Sniffed::NotAudio("a text file"),
        None => Sniffed::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::{Container, Sniffed, classify};

    #[test]
    fn recognises_containers_by_magic() {
        assert_eq!(
            classify(b"\x1A\x45\xDF\xA3rest"),
            Sniffed::Audio(Container::Webm)
        );
        assert_eq!(classify(b"OggS\0\x02"), Sniffed::Audio(Container::Ogg));
        assert_eq!(
            classify(b"\0\0\0\x20ftypM4A \0\0"),
            Sniffed::Audio(Container::Mp4)
        );
        assert_eq!(
            classify(b"\0\0\0\x20ftyp3gp4\0\0"),
            Sniffed::Audio(Container::ThreeGp)
        );
        assert_eq!(
            classify(b"RIFF\0\0\0\0WAVEfmt "),
            Sniffed::Audio(Container::Wav)
        );
        assert_eq!(classify(b"#!AMR\n\x3c"), Sniffed::Audio(Container::Amr));
        assert_eq!(classify(b"#!AMR-WB\n"), Sniffed::Audio(Container::Amr));
        assert_eq!(classify(b"ID3\x04\0"), Sniffed::Audio(Container::Mp3));
        assert_eq!(
            classify(&[0xFF, 0xFB, 0x90, 0x64]),
            Sniffed::Audio(Container::Mp3)
        );
        assert_eq!(
            classify(&[0xFF, 0xF1, 0x50, 0x80]),
            Sniffed::Audio(Container::Adts)
        );
        assert_eq!(classify(&[0xFF, 0xFB, 0x9C, 0x64]), Sniffed::Unknown);
    }

    #[test]
    fn names_what_is_not_audio() {
        assert_eq!(
            classify(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"),
            Sniffed::NotAudio("a PNG image")
        );
        assert_eq!(
            classify(b"\xFF\xD8\xFF\xE0"),
            Sniffed::NotAudio("a JPEG image")
        );
        assert_eq!(
            classify("hello, wörld\n".as_bytes()),
            Sniffed::NotAudio("a text file")
        );
        assert_eq!(
            classify(b"RIFF\0\0\0\0AVI LIST"),
            Sniffed::Unsupported("AVI files")
        );
        assert_eq!(
            classify(b"\0\0\0\x18ftypheic"),
            Sniffed::NotAudio("a HEIF/AVIF image")
        );
        assert_eq!(classify(&[0x00, 0x01, 0x02, 0x03, 0xF0]), Sniffed::Unknown);
    }
}
