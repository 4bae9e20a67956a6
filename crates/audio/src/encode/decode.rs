//! Any supported input to [`Pcm`]: Opus (Ogg, WebM) with libopus after the
//! probe's own parsers; AAC (MP4/M4A/3GP, ADTS), MP3, WAV and FLAC with
//! symphonia; AMR with libopencore-amr through SoX (no Rust decoder exists).
//! FFmpeg never reads uploaded bytes.

use std::io::Cursor;

use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::{MediaSourceStream, MediaSourceStreamOptions};
use symphonia::core::meta::MetadataOptions;

use super::EncodeError;
use super::external::{self, Input, Output, Tools};
use super::opus;
use super::pcm::{self, Pcm, PcmSource};
use crate::probe::opus::OpusStream;
use crate::probe::{self as probing, ProbeError};
use crate::sniff::{Format, sniff};

/// Decode `input` to mono PCM at its own rate (48 kHz for Opus), refusing
/// audio longer than `max_ms`.
pub fn decode(input: &[u8], max_ms: u64, tools: &Tools) -> Result<Pcm, EncodeError> {
    decode_at(input, max_ms, tools, 48_000)
}

/// [`decode`], with Opus decoded straight at `opus_rate` (8, 12, 16, 24 or
/// 48 kHz) when the output needs no more: libopus then skips the work of
/// the upper band and no resampling follows (AMR's 8 kHz, WeChat MP3's
/// 24 kHz). Other codecs decode at their own rate.
pub fn decode_at(
    input: &[u8],
    max_ms: u64,
    tools: &Tools,
    opus_rate: u32,
) -> Result<Pcm, EncodeError> {
    open(input, max_ms, tools, opus_rate)?.into_pcm()
}

/// [`decode_at`], as a [`PcmSource`]: Opus is decoded as it is read (an
/// encoder process can start on the beginning while the rest is decoded);
/// everything else is decoded here, whole.
pub fn open<'a>(
    input: &'a [u8],
    max_ms: u64,
    tools: &Tools,
    opus_rate: u32,
) -> Result<Box<dyn PcmSource + 'a>, EncodeError> {
    if input.is_empty() {
        return Err(EncodeError::Corrupt("the file is empty".into()));
    }
    match sniff(input) {
        Some(format @ (Format::Ogg | Format::Matroska)) => {
            let stream = opus_stream(input, format)?;
            let actual_ms = stream.duration_ms();
            if actual_ms > max_ms {
                return Err(EncodeError::TooLong { actual_ms, max_ms });
            }
            Ok(Box::new(opus::OpusDecoder::new(stream, opus_rate)?))
        }
        Some(format @ (Format::Amr | Format::AmrWb)) => {
            Ok(Box::new(decode_amr(input, format, max_ms, tools)?))
        }
        // symphonia is third-party code reading untrusted bytes: should it
        // panic on some file, that file is reported as corrupt instead of
        // the panic unwinding through the service.
        _ => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            decode_symphonia(input, max_ms)
        }))
        .unwrap_or_else(|_| {
            Err(EncodeError::Corrupt(
                "the demuxer or decoder failed on this file".into(),
            ))
        })
        .map(|pcm| Box::new(pcm) as Box<dyn PcmSource>),
    }
}

/// The Opus stream of a WebM or Ogg file, taken out by the probe's parsers
/// (the same ones the duration and the remux come from).
fn opus_stream(input: &[u8], format: Format) -> Result<OpusStream<'_>, EncodeError> {
    if format == Format::Ogg {
        let ogg = probing::ogg::parse(input).map_err(from_probe)?;
        match probing::ogg::OggAudio::from_stream(ogg).map_err(from_probe)? {
            probing::ogg::OggAudio::Opus(stream) => Ok(stream),
            _ => Err(EncodeError::UnsupportedInput(
                "Ogg audio other than Opus (no Vorbis decoder is built in)".into(),
            )),
        }
    } else {
        let mkv = probing::matroska::parse(input).map_err(from_probe)?;
        OpusStream::from_matroska(&mkv).map_err(from_probe)
    }
}

/// A probe error as an encode error of the same kind.
pub fn from_probe(e: ProbeError) -> EncodeError {
    match e {
        ProbeError::TooLong {
            duration_ms,
            max_ms,
        } => EncodeError::TooLong {
            actual_ms: duration_ms,
            max_ms,
        },
        ProbeError::Empty | ProbeError::Truncated { .. } | ProbeError::Corrupt { .. } => {
            EncodeError::Corrupt(e.to_string())
        }
        ProbeError::Read(e) => EncodeError::Encoder(format!("reading the input: {e}")),
        ProbeError::TooLarge { .. }
        | ProbeError::UnknownFormat
        | ProbeError::NotAudio { .. }
        | ProbeError::Unsupported { .. } => EncodeError::UnsupportedInput(e.to_string()),
    }
}

/// The audio codec of a file symphonia reads (`aac`, `mp3`, …), without
/// decoding; `None` for containers it does not know.
pub fn symphonia_codec(input: &[u8]) -> Option<&'static str> {
    let format = open_symphonia(input).ok()?;
    let track = format.default_track(TrackType::Audio)?;
    let params = track.codec_params.as_ref()?.audio()?;
    let registry = symphonia::default::get_codecs();
    registry
        .get_audio_decoder(params.codec)
        .map(|d| d.codec.info.short_name)
}

fn open_symphonia(
    input: &[u8],
) -> Result<Box<dyn symphonia::core::formats::FormatReader + '_>, SymError> {
    let mss = MediaSourceStream::new(
        Box::new(Cursor::new(input)),
        MediaSourceStreamOptions::default(),
    );
    symphonia::default::get_probe().probe(
        &Hint::new(),
        mss,
        FormatOptions::default(),
        MetadataOptions::default(),
    )
}

fn decode_symphonia(input: &[u8], max_ms: u64) -> Result<Pcm, EncodeError> {
    let mut format = open_symphonia(input).map_err(|e| match e {
        SymError::Unsupported(_) => {
            EncodeError::UnsupportedInput("not a recognised audio format".into())
        }
        other => EncodeError::Corrupt(other.to_string()),
    })?;
    let track = format
        .default_track(TrackType::Audio)
        .ok_or(EncodeError::NoAudio)?;
    let track_id = track.id;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .ok_or(EncodeError::NoAudio)?
        .clone();
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
        .map_err(|e| EncodeError::UnsupportedInput(format!("audio codec: {e}")))?;

    let mut rate = params.sample_rate.unwrap_or(0);
    let mut samples = Vec::new();
    let mut interleaved: Vec<f32> = Vec::new();
    loop {
        let packet = match format.next_packet() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            // A file cut short ends its audio there, as players do.
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(EncodeError::Corrupt(e.to_string())),
        };
        if packet.track_id != track_id {
            continue;
        }
        let buf = match decoder.decode(&packet) {
            Ok(buf) => buf,
            // One damaged frame is skipped, as players do; the rest plays.
            Err(SymError::DecodeError(_)) => continue,
            Err(e) => return Err(EncodeError::Corrupt(e.to_string())),
        };
        let spec_rate = buf.spec().rate();
        if rate == 0 {
            rate = spec_rate;
        }
        if spec_rate != rate {
            return Err(EncodeError::UnsupportedInput(
                "the sample rate changes mid-stream".into(),
            ));
        }
        let channels = buf.spec().channels().count();
        interleaved.clear();
        buf.copy_to_vec_interleaved(&mut interleaved);
        pcm::downmix_interleaved(&interleaved, channels, &mut samples);
        if rate > 0 && pcm::samples_to_ms(samples.len() as u64, rate) > max_ms {
            return Err(EncodeError::TooLong {
                actual_ms: pcm::samples_to_ms(samples.len() as u64, rate),
                max_ms,
            });
        }
    }
    if samples.is_empty() || rate == 0 {
        return Err(EncodeError::NoAudio);
    }
    Ok(Pcm::new(rate, samples))
}

/// AMR-NB (8 kHz) or AMR-WB (16 kHz) with libopencore-amr through SoX,
/// which reads the storage format (magic, then frames) and, unlike
/// FFmpeg's decoder, plays the comfort-noise (DTX) frames phones write in
/// pauses instead of dropping them (which would shorten the note).
fn decode_amr(
    input: &[u8],
    format: Format,
    max_ms: u64,
    tools: &Tools,
) -> Result<Pcm, EncodeError> {
    let (kind, rate) = if format == Format::AmrWb {
        ("amr-wb", 16_000u32)
    } else {
        ("amr-nb", 8_000u32)
    };
    let mut args = external::sox_prelude();
    args.extend(external::args(&["-t", kind, "-"]));
    args.extend(external::sox_raw_pcm(rate));
    let raw = external::run(
        tools,
        &tools.sox,
        &args,
        Input::Bytes(input),
        Output::Stdout,
    )
    .map_err(|e| match e {
        EncodeError::Tool { reason, .. } if !reason.contains("limit") => {
            EncodeError::Corrupt(format!("AMR: {reason}"))
        }
        other => other,
    })?;
    let samples: Vec<f32> = raw
        .chunks_exact(2)
        .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
        .collect();
    if samples.is_empty() {
        return Err(EncodeError::NoAudio);
    }
    let actual_ms = pcm::samples_to_ms(samples.len() as u64, rate);
    if actual_ms > max_ms {
        return Err(EncodeError::TooLong { actual_ms, max_ms });
    }
    Ok(Pcm::new(rate, samples))
}
