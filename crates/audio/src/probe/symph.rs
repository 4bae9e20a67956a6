//! MP4/M4A/3GP, MP3, ADTS AAC, WAV and FLAC through symphonia: demux every
//! packet of the first audio track (the duration is the sum of their
//! durations less encoder delay and padding: MP3's LAME tag as symphonia
//! reads it, MP4's edit list as `mp4` does), decoding them for the waveform
//! when asked.

use std::io::Cursor;
use std::panic::{AssertUnwindSafe, catch_unwind};

use symphonia::core::codecs::CodecParameters;
use symphonia::core::codecs::audio::well_known as audio_codec;
use symphonia::core::codecs::audio::{AudioCodecId, AudioDecoderOptions};
use symphonia::core::codecs::video::well_known as video_codec;
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::{MediaSourceStream, MediaSourceStreamOptions};
use symphonia::default::formats::{AdtsReader, FlacReader, IsoMp4Reader, MpaReader, WavReader};

use super::opus::OPUS_RATE;
use super::peaks::Envelope;
use super::{
    Codec, Container, MAX_PACKETS, ProbeError, ProbeOptions, Summary, VideoTrack, check_duration,
};

pub(crate) fn probe(
    data: &[u8],
    container: Container,
    options: &ProbeOptions,
    envelope: &mut Option<Envelope>,
) -> Result<Summary, ProbeError> {
    // symphonia is third-party code reading untrusted bytes: should it
    // panic on some file, that file is reported as corrupt instead of the
    // panic unwinding through the service.
    catch_unwind(AssertUnwindSafe(|| {
        probe_inner(data, container, options, envelope)
    }))
    .unwrap_or_else(|_| {
        tracing::warn!(%container, "symphonia panicked on a file; reported as corrupt");
        Err(ProbeError::corrupt(
            container,
            "the demuxer or decoder failed on this file",
        ))
    })
}

fn probe_inner(
    data: &[u8],
    container: Container,
    options: &ProbeOptions,
    envelope: &mut Option<Envelope>,
) -> Result<Summary, ProbeError> {
    let err = |e: SymError| symphonia_error(container, e);
    let mss = MediaSourceStream::new(
        Box::new(Cursor::new(data)),
        MediaSourceStreamOptions::default(),
    );
    let opts = FormatOptions::default();
    let mut reader: Box<dyn FormatReader + '_> = match container {
        Container::Mp4 | Container::ThreeGp => {
            Box::new(IsoMp4Reader::try_new(mss, opts).map_err(err)?)
        }
        Container::Mp3 => Box::new(MpaReader::try_new(mss, opts).map_err(err)?),
        Container::Adts => Box::new(AdtsReader::try_new(mss, opts).map_err(err)?),
        Container::Wav => Box::new(WavReader::try_new(mss, opts).map_err(err)?),
        Container::Flac => Box::new(FlacReader::try_new(mss, opts).map_err(err)?),
        // The other containers are parsed by this crate.
        _ => return Err(ProbeError::UnknownFormat),
    };

    let video: Vec<VideoTrack> = reader
        .tracks()
        .iter()
        .filter_map(|t| match &t.codec_params {
            Some(CodecParameters::Video(v)) => Some(VideoTrack {
                codec: video_codec_name(v.codec),
                width: u32::from(v.width.unwrap_or(0)),
                height: u32::from(v.height.unwrap_or(0)),
            }),
            _ => None,
        })
        .collect();
    let Some((track_id, params, time_base)) =
        reader.tracks().iter().find_map(|t| match &t.codec_params {
            Some(CodecParameters::Audio(a)) => Some((t.id, a.clone(), t.time_base)),
            _ => None,
        })
    else {
        return Err(ProbeError::NotAudio {
            what: if video.is_empty() {
                format!("a {container} file with no audio track")
            } else {
                "a video with no audio track".to_owned()
            },
        });
    };
    let codec = codec_of(params.codec).ok_or_else(|| {
        ProbeError::unsupported(format!(
            "{} audio in {container}",
            if params.codec == audio_codec::CODEC_ID_ALAC {
                "ALAC".to_owned()
            } else if params.codec == audio_codec::CODEC_ID_VORBIS {
                "Vorbis".to_owned()
            } else {
                format!("codec {}", params.codec)
            }
        ))
    })?;
    let sample_rate = params
        .sample_rate
        .filter(|&r| r > 0)
        .ok_or_else(|| ProbeError::corrupt(container, "the audio track has no sample rate"))?;
    let channels = params
        .channels
        .as_ref()
        .map(|c| c.count())
        .filter(|&c| c > 0)
        .ok_or_else(|| ProbeError::corrupt(container, "the audio track has no channel count"))?;
    // Packet durations are in the track's time base; audio tracks without
    // one count in samples.
    let (numer, denom) = time_base.map_or((1, u64::from(sample_rate)), |tb| {
        (u64::from(tb.numer.get()), u64::from(tb.denom.get()))
    });
    let to_ms = |units: u64| -> u64 {
        let ms = (u128::from(units) * u128::from(numer) * 1000 + u128::from(denom) / 2)
            / u128::from(denom);
        u64::try_from(ms).unwrap_or(u64::MAX)
    };

    let mut decoder = match envelope.as_mut() {
        Some(env) => Decoder::new(codec, &params, channels, sample_rate, env),
        None => Decoder::None,
    };
    let mut units = 0u64;
    let mut packets = 0u64;
    let mut audio_bytes = 0u64;
    loop {
        let packet = match reader.next_packet() {
            Ok(Some(packet)) => packet,
            Ok(None) => break,
            Err(e) => return Err(err(e)),
        };
        if packet.track_id != track_id {
            continue;
        }
        packets += 1;
        if packets > MAX_PACKETS as u64 {
            return Err(ProbeError::unsupported(format!(
                "more than {MAX_PACKETS} audio packets"
            )));
        }
        audio_bytes += packet.data.len() as u64;
        units = units.saturating_add(
            packet
                .dur
                .get()
                .saturating_sub(packet.trim_start.get())
                .saturating_sub(packet.trim_end.get()),
        );
        // Past the limit, stop decoding (the file will be refused) but keep
        // demuxing to report its real length.
        if check_duration(to_ms(units), options).is_err() {
            decoder = Decoder::None;
        }
        if let Some(env) = envelope.as_mut() {
            decoder.decode(&packet, env);
        }
    }
    if packets == 0 {
        return Err(ProbeError::truncated(
            container,
            "the file has no audio packets",
        ));
    }
    let mut duration_ms = to_ms(units);
    // MP4 says with its edit list which part of the track plays (AAC
    // priming and padding, Opus pre-skip); symphonia does not apply it.
    if matches!(container, Container::Mp4 | Container::ThreeGp)
        && let Some(edit) = super::mp4::audio_edit(data)
    {
        let after_start = duration_ms.saturating_sub(edit.start_ms);
        duration_ms = edit.duration_ms.map_or(after_start, |d| d.min(after_start));
    }
    check_duration(duration_ms, options)?;
    if matches!(decoder, Decoder::Failed | Decoder::None) {
        // No waveform rather than a wrong one.
        *envelope = None;
    }
    Ok(Summary {
        codec,
        sample_rate,
        channels: u32::try_from(channels).unwrap_or(u32::MAX),
        duration_ms,
        packets,
        audio_bytes,
        video,
    })
}

/// How packets are decoded for the waveform.
enum Decoder {
    Symphonia(
        Box<dyn symphonia::core::codecs::audio::AudioDecoder>,
        Vec<f32>,
    ),
    /// Opus in MP4: symphonia has no Opus decoder.
    Opus(opus::Decoder, Vec<f32>, usize),
    /// Not decodable (or not asked for).
    None,
    /// A packet failed to decode: the demux goes on, the waveform is
    /// dropped.
    Failed,
}

impl Decoder {
    fn new(
        codec: Codec,
        params: &symphonia::core::codecs::audio::AudioCodecParameters,
        channels: usize,
        sample_rate: u32,
        env: &mut Envelope,
    ) -> Self {
        if codec == Codec::Opus {
            let layout = match channels {
                1 => opus::Channels::Mono,
                2 => opus::Channels::Stereo,
                _ => return Decoder::None,
            };
            return match opus::Decoder::new(OPUS_RATE, layout) {
                Ok(d) => {
                    env.start(OPUS_RATE, channels);
                    Decoder::Opus(d, vec![0.0; 5760 * channels], channels)
                }
                Err(_) => Decoder::None,
            };
        }
        match symphonia::default::get_codecs()
            .make_audio_decoder(params, &AudioDecoderOptions::default())
        {
            Ok(d) => {
                env.start(sample_rate, channels);
                Decoder::Symphonia(d, Vec::new())
            }
            Err(_) => Decoder::None,
        }
    }

    fn decode(&mut self, packet: &symphonia::core::packet::Packet, env: &mut Envelope) {
        let ok = match self {
            Decoder::Symphonia(d, buf) => match d.decode(packet) {
                Ok(decoded) => {
                    decoded.copy_to_vec_interleaved::<f32>(buf);
                    env.push(buf);
                    true
                }
                Err(e) => {
                    tracing::debug!(error = %e, "audio packet does not decode; no waveform");
                    false
                }
            },
            Decoder::Opus(d, buf, channels) => match d.decode_float(&packet.data, buf, false) {
                Ok(frames) => {
                    env.push(&buf[..frames * *channels]);
                    true
                }
                Err(e) => {
                    tracing::debug!(error = %e, "Opus packet does not decode; no waveform");
                    false
                }
            },
            Decoder::None | Decoder::Failed => true,
        };
        if !ok {
            *self = Decoder::Failed;
        }
    }
}

fn codec_of(id: AudioCodecId) -> Option<Codec> {
    use audio_codec::*;
    Some(match id {
        CODEC_ID_AAC => Codec::Aac,
        CODEC_ID_MP3 => Codec::Mp3,
        CODEC_ID_MP2 => Codec::Mp2,
        CODEC_ID_FLAC => Codec::Flac,
        CODEC_ID_OPUS => Codec::Opus,
        CODEC_ID_PCM_S16LE => Codec::Pcm("pcm_s16le"),
        CODEC_ID_PCM_S24LE => Codec::Pcm("pcm_s24le"),
        CODEC_ID_PCM_S32LE => Codec::Pcm("pcm_s32le"),
        CODEC_ID_PCM_U8 => Codec::Pcm("pcm_u8"),
        CODEC_ID_PCM_F32LE => Codec::Pcm("pcm_f32le"),
        CODEC_ID_PCM_F64LE => Codec::Pcm("pcm_f64le"),
        CODEC_ID_PCM_ALAW => Codec::Pcm("pcm_alaw"),
        CODEC_ID_PCM_MULAW => Codec::Pcm("pcm_mulaw"),
        _ => return None,
    })
}

fn video_codec_name(id: symphonia::core::codecs::video::VideoCodecId) -> String {
    use video_codec::*;
    match id {
        CODEC_ID_H264 => "h264",
        CODEC_ID_HEVC => "hevc",
        CODEC_ID_AV1 => "av1",
        CODEC_ID_VP8 => "vp8",
        CODEC_ID_VP9 => "vp9",
        CODEC_ID_MJPEG => "mjpeg",
        _ => "video",
    }
    .to_owned()
}

/// A symphonia error as a probe error.
fn symphonia_error(container: Container, e: SymError) -> ProbeError {
    match e {
        SymError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            ProbeError::truncated(container, "the file ends early")
        }
        SymError::IoError(io) => ProbeError::corrupt(container, io.to_string()),
        SymError::DecodeError(msg) => ProbeError::corrupt(container, msg),
        SymError::Unsupported(msg) => ProbeError::unsupported(format!("{container}: {msg}")),
        SymError::LimitError(msg) => ProbeError::unsupported(format!("{container}: {msg}")),
        SymError::SeekError(_) => ProbeError::corrupt(container, "unexpected seek"),
        SymError::ResetRequired => {
            ProbeError::unsupported(format!("{container}: a stream that changes format midway"))
        }
        other => ProbeError::corrupt(container, other.to_string()),
    }
}
