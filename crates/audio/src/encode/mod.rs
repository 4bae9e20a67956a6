//! Re-encoding: any supported input to the output of a transcoding profile.
//!
//! The input is decoded in process to mono PCM ([`decode`]): Opus with
//! libopus, AAC/MP3/WAV/FLAC with symphonia (AMR, for which no Rust decoder
//! exists, with libopencore-amr through SoX). The PCM is then encoded:
//!
//! | recipe | encoder | where |
//! |---|---|---|
//! | Ogg/Opus voice | libopus 1.6 (`opus` crate, bundled) + our Ogg writer | in process |
//! | MP3 | LAME 3.100 (`mp3lame-encoder`, vendored) | in process |
//! | M4A/AAC-LC | FFmpeg's native `aac` encoder, `fast` coder | separate process |
//! | AMR-NB | libopencore-amrnb through SoX | separate process |
//! | still-image MP4 | FFmpeg (libx264 + `aac`) | separate process |
//!
//! A separate process reads Opus input as it is decoded ([`PcmSource`]), so
//! decoding and encoding overlap, unless the output is cut into parts
//! (finding the pauses needs the whole audio).
//!
//! `docs/adr/0009-media-encoders.md` says why (speed, safety with untrusted
//! input, licences), `docs/adr/0010-faster-external-encodes.md` how the
//! external encodes were made cheaper. External encoders only ever read PCM
//! we produced, never the uploaded bytes (SoX decoding AMR input aside), and
//! run with the limits of [`external`].
//!
//! Everything here is synchronous and CPU-bound: callers run it on a
//! blocking thread from a bounded pool (the media service's transcode
//! workers).
//!
//! This module knows recipes, not profiles: [`crate::profiles`] says which
//! recipe each profile is made with.

use std::time::Instant;

use crate::sniff::{Format, sniff};

mod decode;
mod error;
pub mod external;
mod ffmpeg;
mod mp3;
mod opus;
pub mod pcm;
pub mod synth;

pub use decode::{decode, decode_at};
pub use error::EncodeError;
pub use external::{Missing, Program, Tools};
pub use opus::OpusSettings;
pub use pcm::{Pcm, PcmSource};

/// The size under which WhatsApp shows an audio message as a voice note
/// with a play button (512 KB; the decimal reading, the stricter one).
pub const WHATSAPP_VOICE_MAX_BYTES: u64 = 512_000;

/// How one output is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recipe {
    /// Ogg/Opus, mono, speech-tuned VBR. The bit rate is the highest in
    /// `[min, max]` that keeps the file under the spec's `target_max_bytes`
    /// (see [`opus_bitrate_for`]).
    OggOpus {
        min_bitrate_bps: u32,
        max_bitrate_bps: u32,
    },
    /// AAC-LC, mono, in M4A.
    M4aAac { bitrate_bps: u32 },
    /// MP3, mono, constant bit rate; `sample_rate` `None` keeps the input's.
    Mp3 {
        bitrate_bps: u32,
        sample_rate: Option<u32>,
    },
    /// AMR-NB 12.2 kb/s, 8 kHz.
    AmrNb,
    /// H.264 still image + AAC-LC, in MP4.
    StillMp4 { audio_bitrate_bps: u32 },
    /// What every browser plays (Safari included): AAC in MP4 and MP3 are
    /// kept as they are, anything else becomes M4A/AAC at `bitrate_bps`.
    WebPlayback { bitrate_bps: u32 },
}

impl Recipe {
    /// The external program that makes this output, if it is not made in
    /// process. [`Recipe::WebPlayback`] runs it only for inputs it does not
    /// keep as they are.
    pub fn program(&self) -> Option<Program> {
        match self {
            Recipe::M4aAac { .. } | Recipe::StillMp4 { .. } | Recipe::WebPlayback { .. } => {
                Some(Program::Ffmpeg)
            }
            Recipe::AmrNb => Some(Program::Sox),
            Recipe::OggOpus { .. } | Recipe::Mp3 { .. } => None,
        }
    }
}

/// A recipe and the limits its output must meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub recipe: Recipe,
    /// A size to stay under when the recipe can (Ogg/Opus lowers its bit
    /// rate); 0 for none.
    pub target_max_bytes: u64,
    /// Longer audio is cut into parts of at most this many milliseconds; 0
    /// never splits.
    pub max_part_ms: u64,
    /// Each part must be at most this many bytes; 0 for no limit.
    pub max_part_bytes: u64,
    /// At most this many parts; more is an error (the caller falls back, e.g.
    /// to a link). Ignored when `max_part_ms` is 0.
    pub max_parts: usize,
}

impl Spec {
    /// A recipe with no limits.
    pub const fn plain(recipe: Recipe) -> Self {
        Self {
            recipe,
            target_max_bytes: 0,
            max_part_ms: 0,
            max_part_bytes: 0,
            max_parts: 1,
        }
    }
}

/// What an encode may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// External programs and their limits.
    pub tools: Tools,
    /// Longest input accepted, in milliseconds.
    pub max_input_ms: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            tools: Tools::default(),
            max_input_ms: crate::probe::MAX_VOICE_NOTE_MS + crate::probe::DURATION_GRACE_MS,
        }
    }
}

/// One output file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub bytes: Vec<u8>,
    /// MIME type, e.g. `audio/ogg; codecs=opus`.
    pub mime_type: &'static str,
    /// Duration in milliseconds, of the audio that went in.
    pub duration_ms: u64,
}

/// The output of an encode: one part, or several when the audio was split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub parts: Vec<Part>,
    /// The input was good as it is and was passed through unchanged.
    pub passthrough: bool,
}

/// Turn `input` into `spec`'s output.
pub fn encode(input: &[u8], spec: &Spec, options: &Options) -> Result<Encoded, EncodeError> {
    let started = Instant::now();
    if let Recipe::WebPlayback { .. } = spec.recipe
        && let Some(mime_type) = browser_playable(input)
    {
        let probe_options = crate::probe::ProbeOptions {
            max_duration_ms: Some(options.max_input_ms),
            peaks: 0,
            ..crate::probe::ProbeOptions::VOICE_NOTE
        };
        let duration_ms = crate::probe::probe(input, &probe_options)
            .map_err(decode::from_probe)?
            .duration_ms;
        return Ok(Encoded {
            parts: vec![Part {
                bytes: input.to_vec(),
                mime_type,
                duration_ms,
            }],
            passthrough: true,
        });
    }
    let mut audio = decode::open(
        input,
        options.max_input_ms,
        &options.tools,
        decode_rate(&spec.recipe),
    )?;
    let opened_ms = external::elapsed_ms(started);
    let duration_ms = pcm::samples_to_ms(audio.sample_count() as u64, audio.rate());
    let streamed = encodes_while_decoding(spec, audio.as_ref());
    let encoded = if streamed {
        encode_while_decoding(audio.as_mut(), spec, options)?
    } else {
        encode_pcm(&audio.into_pcm()?, spec, options)?
    };
    tracing::debug!(
        recipe = ?spec.recipe,
        duration_ms,
        opened_ms,
        streamed,
        total_ms = external::elapsed_ms(started),
        parts = encoded.parts.len(),
        "encoded"
    );
    Ok(encoded)
}

/// Whether `audio` goes to `spec`'s encoder while it is decoded: when that
/// encoder is a separate process (it works on the beginning while this
/// process decodes the rest) and the output is one part (cutting into
/// parts needs the whole audio to find the pauses).
fn encodes_while_decoding(spec: &Spec, audio: &dyn PcmSource) -> bool {
    let external = match spec.recipe {
        Recipe::M4aAac { .. } | Recipe::WebPlayback { .. } | Recipe::StillMp4 { .. } => true,
        Recipe::AmrNb => audio.rate() == 8_000,
        Recipe::OggOpus { .. } | Recipe::Mp3 { .. } => false,
    };
    let one_part = spec.max_part_ms == 0
        || audio.sample_count() as u64 <= spec.max_part_ms * u64::from(audio.rate()) / 1000;
    external && one_part
}

/// One part from an external encoder reading `audio` as it is decoded.
fn encode_while_decoding(
    audio: &mut dyn PcmSource,
    spec: &Spec,
    options: &Options,
) -> Result<Encoded, EncodeError> {
    let duration_ms = pcm::samples_to_ms(audio.sample_count() as u64, audio.rate());
    let (bytes, mime_type) = encode_external(audio, spec.recipe, &options.tools)?;
    check_part_size(0, &bytes, spec)?;
    Ok(Encoded {
        parts: vec![Part {
            bytes,
            mime_type,
            duration_ms,
        }],
        passthrough: false,
    })
}

/// The rate Opus input is best decoded at for `recipe`: the output's own
/// when it is lower than 48 kHz and libopus has it.
fn decode_rate(recipe: &Recipe) -> u32 {
    match recipe {
        Recipe::AmrNb => 8_000,
        Recipe::Mp3 {
            sample_rate: Some(rate),
            ..
        } if [8_000, 12_000, 16_000, 24_000].contains(rate) => *rate,
        _ => 48_000,
    }
}

/// Encode decoded audio (split into parts first when the spec says so).
pub fn encode_pcm(pcm: &Pcm, spec: &Spec, options: &Options) -> Result<Encoded, EncodeError> {
    let ranges = if spec.max_part_ms > 0 {
        let max_part = (spec.max_part_ms * u64::from(pcm.rate) / 1000) as usize;
        let ranges = pcm::split_points(&pcm.samples, pcm.rate, max_part);
        if ranges.len() > spec.max_parts.max(1) {
            return Err(EncodeError::DoesNotFit(format!(
                "the audio is {} s; at most {} parts of {} s are allowed",
                pcm.duration_ms().div_ceil(1000),
                spec.max_parts.max(1),
                spec.max_part_ms / 1000
            )));
        }
        ranges
    } else {
        std::iter::once(0..pcm.samples.len()).collect()
    };
    let mut parts = Vec::with_capacity(ranges.len());
    for (i, range) in ranges.iter().enumerate() {
        let part_pcm;
        let part = if ranges.len() == 1 {
            pcm
        } else {
            part_pcm = pcm.slice(range.clone());
            &part_pcm
        };
        let (bytes, mime_type) = encode_one(part, spec, options)?;
        check_part_size(i, &bytes, spec)?;
        parts.push(Part {
            bytes,
            mime_type,
            duration_ms: part.duration_ms(),
        });
    }
    Ok(Encoded {
        parts,
        passthrough: false,
    })
}

/// Part `i` (from 0) must not be over the spec's byte limit.
fn check_part_size(i: usize, bytes: &[u8], spec: &Spec) -> Result<(), EncodeError> {
    if spec.max_part_bytes > 0 && bytes.len() as u64 > spec.max_part_bytes {
        return Err(EncodeError::DoesNotFit(format!(
            "part {} is {} bytes; at most {} are allowed",
            i + 1,
            bytes.len(),
            spec.max_part_bytes
        )));
    }
    Ok(())
}

const M4A_MIME: &str = "audio/mp4; codecs=mp4a.40.2";

fn encode_one(
    pcm: &Pcm,
    spec: &Spec,
    options: &Options,
) -> Result<(Vec<u8>, &'static str), EncodeError> {
    match spec.recipe {
        Recipe::OggOpus {
            min_bitrate_bps,
            max_bitrate_bps,
        } => Ok((
            encode_opus_within(pcm, spec.target_max_bytes, min_bitrate_bps, max_bitrate_bps)?,
            "audio/ogg; codecs=opus",
        )),
        Recipe::Mp3 {
            bitrate_bps,
            sample_rate,
        } => Ok((
            mp3::encode_mp3(pcm, bitrate_bps, sample_rate)?,
            "audio/mpeg",
        )),
        Recipe::AmrNb if pcm.rate != 8_000 => {
            encode_external(&mut pcm.resampled(8_000), spec.recipe, &options.tools)
        }
        recipe => encode_external(&mut &*pcm, recipe, &options.tools),
    }
}

/// The output of a recipe whose encoder is a separate process, which reads
/// `audio` as it comes.
fn encode_external(
    audio: &mut dyn PcmSource,
    recipe: Recipe,
    tools: &Tools,
) -> Result<(Vec<u8>, &'static str), EncodeError> {
    Ok(match recipe {
        Recipe::M4aAac { bitrate_bps } | Recipe::WebPlayback { bitrate_bps } => {
            (ffmpeg::encode_m4a(audio, bitrate_bps, tools)?, M4A_MIME)
        }
        Recipe::AmrNb => (ffmpeg::encode_amr_nb(audio, tools)?, "audio/amr"),
        Recipe::StillMp4 { audio_bitrate_bps } => (
            ffmpeg::encode_still_mp4(audio, audio_bitrate_bps, tools)?,
            "video/mp4",
        ),
        Recipe::OggOpus { .. } | Recipe::Mp3 { .. } => {
            return Err(EncodeError::Encoder(format!(
                "{recipe:?} is encoded in process"
            )));
        }
    })
}

/// libopus complexity: 10, its best. libopus 1.6 at 10 is still faster
/// than FFmpeg with Debian's libopus 1.3 (see docs/benchmarks.md).
const OPUS_COMPLEXITY: i32 = 10;

/// Ogg/Opus under `target_bytes` when possible: encode at
/// [`opus_bitrate_for`]; VBR can overshoot on dense speech, so a file still
/// over the target is encoded again at a bit rate scaled down by the
/// overshoot (twice at most). A file that cannot get under the target even
/// at `min_bps` is returned as it is: a playable file beats none, and the
/// caller sees its size.
fn encode_opus_within(
    pcm: &Pcm,
    target_bytes: u64,
    min_bps: u32,
    max_bps: u32,
) -> Result<Vec<u8>, EncodeError> {
    let mut bps = opus_bitrate_for(pcm.duration_ms(), target_bytes, min_bps, max_bps);
    let mut attempt = 0;
    loop {
        let out = opus::encode_ogg_opus(
            pcm,
            OpusSettings {
                bitrate_bps: bps,
                complexity: OPUS_COMPLEXITY,
            },
        )?;
        let size = out.len() as u64;
        if target_bytes == 0 || size <= target_bytes || bps <= min_bps || attempt == 2 {
            if target_bytes > 0 && size > target_bytes {
                tracing::warn!(
                    size,
                    target_bytes,
                    bps,
                    "Ogg/Opus output stays over its target size"
                );
            }
            return Ok(out);
        }
        let scaled = f64::from(bps) * target_bytes as f64 / size as f64 * 0.95;
        bps = (scaled as u32).max(min_bps);
        attempt += 1;
    }
}

/// Bytes of Ogg framing per second of 20 ms packets on one-second pages:
/// a 27-byte page header and one lacing byte per packet.
const OGG_BYTES_PER_SECOND: f64 = 27.0 + 50.0;
/// The OpusHead and OpusTags pages, with room to spare.
const OGG_HEADER_BYTES: f64 = 200.0;
/// VBR spends more on dense speech than on pauses; aim this much below
/// the budget so a note of mostly speech still fits.
const VBR_HEADROOM: f64 = 0.9;

/// The Opus bit rate for audio of `duration_ms` to fit in `target_bytes`
/// (0: no target, `max_bps`), clamped to `[min_bps, max_bps]`.
///
/// For WhatsApp's 512 KB and a 5-minute note: (512 000 − 200 − 300 × 77)
/// bytes × 8 / 300 s × 0.9 ≈ 11.7 kb/s; a 1-minute note gets the maximum.
pub fn opus_bitrate_for(duration_ms: u64, target_bytes: u64, min_bps: u32, max_bps: u32) -> u32 {
    if target_bytes == 0 || duration_ms == 0 {
        return max_bps;
    }
    let secs = duration_ms as f64 / 1000.0;
    let payload = target_bytes as f64 - OGG_HEADER_BYTES - secs.ceil() * OGG_BYTES_PER_SECOND;
    let bps = (payload * 8.0 / secs * VBR_HEADROOM).max(0.0);
    (bps as u32).clamp(min_bps, max_bps.max(min_bps))
}

/// Lowest Opus bit rate a voice note is lowered to (below it Opus speech
/// turns hard to follow).
pub const OPUS_MIN_BITRATE_BPS: u32 = 6_000;

/// The MIME type of `input` when every browser plays it as it is: AAC in
/// MP4/M4A, or MP3.
fn browser_playable(input: &[u8]) -> Option<&'static str> {
    // Opus and AMR are read by our own parsers, never symphonia's.
    if matches!(
        sniff(input),
        Some(Format::Ogg | Format::Matroska | Format::Amr | Format::AmrWb)
    ) {
        return None;
    }
    match decode::symphonia_codec(input)? {
        "aac" if input.get(4..8) == Some(b"ftyp") => Some(M4A_MIME),
        "mp3" => Some("audio/mpeg"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whatsapp_bit_rate_keeps_five_minutes_under_512_kb() {
        let bps = opus_bitrate_for(300_000, WHATSAPP_VOICE_MAX_BYTES, 6_000, 24_000);
        assert!((11_000..=12_500).contains(&bps), "{bps}");
        // Payload at that rate plus framing stays under the limit even at
        // 10 % over the target rate.
        let bytes = f64::from(bps) * 1.1 * 300.0 / 8.0 + 300.0 * 77.0 + 200.0;
        assert!(bytes < WHATSAPP_VOICE_MAX_BYTES as f64, "{bytes}");
        // Short notes get the best rate, absurd targets the floor.
        assert_eq!(
            opus_bitrate_for(60_000, WHATSAPP_VOICE_MAX_BYTES, 6_000, 24_000),
            24_000
        );
        assert_eq!(opus_bitrate_for(300_000, 1_000, 6_000, 24_000), 6_000);
        assert_eq!(opus_bitrate_for(300_000, 0, 6_000, 24_000), 24_000);
    }
}
