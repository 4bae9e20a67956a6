//! Opus as carried in WebM and Ogg: the identification header (OpusHead,
//! RFC 7845 section 5.1), packet durations from the TOC byte (RFC 6716
//! section 3.1), and decoding with libopus for the waveform.

use std::borrow::Cow;

use super::matroska::Matroska;
use super::peaks::Envelope;
use super::{Codec, Container, ProbeError, ProbeOptions, Summary, check_duration, samples_to_ms};

/// Opus always decodes at 48 kHz; granule positions, pre-skip and packet
/// durations all count 48 kHz samples.
pub(crate) const OPUS_RATE: u32 = 48_000;

/// Longest Opus packet: 120 ms.
const MAX_PACKET_SAMPLES: u32 = 5760;

/// The OpusHead identification header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OpusHead {
    pub channels: u8,
    /// Samples (at 48 kHz) to drop from the start of the decoded output.
    pub pre_skip: u16,
    /// The recorder's sample rate, informational only.
    pub input_sample_rate: u32,
    /// Output gain in Q7.8 dB.
    pub output_gain: i16,
    pub mapping_family: u8,
    /// Stream count, coupled count and channel mapping when the family is
    /// not 0, as stored.
    pub mapping: Vec<u8>,
}

impl OpusHead {
    /// Parse and check an OpusHead packet.
    pub fn parse(b: &[u8]) -> Result<Self, String> {
        if b.len() < 19 || !b.starts_with(b"OpusHead") {
            return Err("the Opus identification header (OpusHead) is missing".into());
        }
        // Major version 0 is the only one defined; minor versions are
        // compatible by definition.
        if b[8] >> 4 != 0 {
            return Err(format!("OpusHead version {} is not supported", b[8]));
        }
        let channels = b[9];
        if channels == 0 {
            return Err("OpusHead declares 0 channels".into());
        }
        let head = OpusHead {
            channels,
            pre_skip: u16::from_le_bytes([b[10], b[11]]),
            input_sample_rate: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
            output_gain: i16::from_le_bytes([b[16], b[17]]),
            mapping_family: b[18],
            mapping: Vec::new(),
        };
        if head.mapping_family == 0 {
            if channels > 2 {
                return Err(format!(
                    "OpusHead mapping family 0 allows 1 or 2 channels, not {channels}"
                ));
            }
            return Ok(head);
        }
        let table_len = 2 + usize::from(channels);
        let table = b
            .get(19..19 + table_len)
            .ok_or("OpusHead is too short for its channel mapping table")?;
        let (streams, coupled) = (table[0], table[1]);
        if streams == 0 || coupled > streams || usize::from(streams) + usize::from(coupled) > 255 {
            return Err(format!(
                "OpusHead declares {streams} streams with {coupled} coupled"
            ));
        }
        let decoded = streams + coupled;
        if let Some(&bad) = table[2..].iter().find(|&&c| c != 255 && c >= decoded) {
            return Err(format!(
                "OpusHead maps a channel to stream channel {bad} of {decoded}"
            ));
        }
        Ok(OpusHead {
            mapping: table.to_vec(),
            ..head
        })
    }

    /// The header for a stream without one (Matroska allows leaving it to
    /// the track's channels and CodecDelay): family 0, version 1.
    pub fn simple(channels: u8, pre_skip: u16, input_sample_rate: u32) -> Self {
        OpusHead {
            channels,
            pre_skip,
            input_sample_rate,
            output_gain: 0,
            mapping_family: 0,
            mapping: Vec::new(),
        }
    }

    /// The packet, as written in Ogg (version 1).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(19 + self.mapping.len());
        b.extend_from_slice(b"OpusHead");
        b.push(1);
        b.push(self.channels);
        b.extend_from_slice(&self.pre_skip.to_le_bytes());
        b.extend_from_slice(&self.input_sample_rate.to_le_bytes());
        b.extend_from_slice(&self.output_gain.to_le_bytes());
        b.push(self.mapping_family);
        if self.mapping_family != 0 {
            b.extend_from_slice(&self.mapping);
        }
        b
    }
}

/// Duration of an Opus packet in 48 kHz samples, from its TOC byte (frame
/// size from the configuration, frame count from the code), with the
/// structural checks that need no decoding.
pub(crate) fn packet_samples(packet: &[u8]) -> Result<u32, &'static str> {
    let &toc = packet.first().ok_or("empty Opus packet")?;
    let config = usize::from(toc >> 3);
    let frame = match config {
        // SILK: 10, 20, 40, 60 ms.
        0..=11 => [480, 960, 1920, 2880][config % 4],
        // Hybrid: 10, 20 ms.
        12..=15 => [480, 960][config % 2],
        // CELT: 2.5, 5, 10, 20 ms.
        _ => [120, 240, 480, 960][config % 4],
    };
    let frames = match toc & 0x03 {
        0 => 1,
        1 => {
            // Two frames of equal size.
            if !(packet.len() - 1).is_multiple_of(2) {
                return Err("Opus packet with two equal frames has an odd length");
            }
            2
        }
        2 => 2,
        _ => {
            let &count = packet
                .get(1)
                .ok_or("Opus packet with several frames has no frame count")?;
            u32::from(count & 0x3F)
        }
    };
    if frames == 0 {
        return Err("Opus packet has 0 frames");
    }
    let samples = frame * frames;
    if samples > MAX_PACKET_SAMPLES {
        return Err("Opus packet is longer than 120 ms");
    }
    Ok(samples)
}

/// An Opus stream out of its container: what the probe measures and what
/// the remux writes.
#[derive(Debug, Clone)]
pub(crate) struct OpusStream<'a> {
    pub container: Container,
    pub head: OpusHead,
    /// The audio packets (no headers).
    pub packets: Vec<Cow<'a, [u8]>>,
    /// Sum of the packets' durations (48 kHz samples), pre-skip included.
    pub total_samples: u64,
    /// Samples to drop at the end (Matroska DiscardPadding, or the Ogg end
    /// granule falling short of the last packet).
    pub end_trim: u64,
}

impl<'a> OpusStream<'a> {
    /// The Opus track of a WebM/Matroska file.
    pub fn from_matroska(m: &Matroska<'a>) -> Result<Self, ProbeError> {
        let container = m.container;
        let corrupt = |detail: String| ProbeError::corrupt(container, detail);
        let Some(track) = m.audio_track() else {
            let what = if m.video_tracks().is_empty() {
                "a WebM file with no audio track"
            } else {
                "a video with no audio track"
            };
            return Err(ProbeError::NotAudio { what: what.into() });
        };
        if track.codec_id != "A_OPUS" {
            return Err(ProbeError::unsupported(format!(
                "{} audio in {}",
                codec_name(&track.codec_id),
                container.name()
            )));
        }
        if track.encoded {
            return Err(ProbeError::unsupported(
                "compressed or encrypted Matroska tracks",
            ));
        }
        let head = match track.codec_private {
            Some(private) => OpusHead::parse(private).map_err(corrupt)?,
            None => {
                let channels = track
                    .channels
                    .and_then(|c| u8::try_from(c).ok())
                    .filter(|&c| (1..=2).contains(&c))
                    .ok_or_else(|| {
                        corrupt("the Opus track has neither an OpusHead nor 1 or 2 channels".into())
                    })?;
                // CodecDelay is the pre-skip in nanoseconds.
                let pre_skip = u16::try_from(
                    (u128::from(track.codec_delay_ns) * u128::from(OPUS_RATE) + 500_000_000)
                        / 1_000_000_000,
                )
                .map_err(|_| corrupt("CodecDelay is longer than a pre-skip can be".into()))?;
                let rate = track
                    .sample_rate
                    .filter(|r| r.is_finite() && *r >= 1.0 && *r <= 768_000.0)
                    .map_or(OPUS_RATE, |r| r as u32);
                OpusHead::simple(channels, pre_skip, rate)
            }
        };
        let mut total_samples = 0u64;
        let mut packets = Vec::with_capacity(m.frames.len());
        for (i, frame) in m.frames.iter().enumerate() {
            let samples =
                packet_samples(frame.data).map_err(|e| corrupt(format!("packet {i}: {e}")))?;
            total_samples += u64::from(samples);
            packets.push(Cow::Borrowed(frame.data));
        }
        let last = m
            .frames
            .last()
            .ok_or_else(|| ProbeError::truncated(container, "the file has no audio packets"))?;
        // DiscardPadding (nanoseconds) of the last block trims the end; a
        // negative value means nothing to trim.
        let end_trim = u64::try_from(last.discard_padding_ns)
            .map(|ns| {
                u64::try_from(
                    (u128::from(ns) * u128::from(OPUS_RATE) + 500_000_000) / 1_000_000_000,
                )
                .unwrap_or(u64::MAX)
            })
            .unwrap_or(0)
            .min(total_samples);
        Ok(OpusStream {
            container,
            head,
            packets,
            total_samples,
            end_trim,
        })
    }

    /// Playable samples: the packets' total less pre-skip and end trim.
    pub fn duration_samples(&self) -> u64 {
        self.total_samples
            .saturating_sub(u64::from(self.head.pre_skip))
            .saturating_sub(self.end_trim)
    }

    pub fn duration_ms(&self) -> u64 {
        samples_to_ms(self.duration_samples(), u64::from(OPUS_RATE))
    }

    /// The probe's figures, refusing a stream over the duration limit.
    pub fn summary(&self, options: &ProbeOptions) -> Result<Summary, ProbeError> {
        let duration_ms = self.duration_ms();
        check_duration(duration_ms, options)?;
        Ok(Summary {
            codec: Codec::Opus,
            sample_rate: OPUS_RATE,
            channels: u32::from(self.head.channels),
            duration_ms,
            packets: self.packets.len() as u64,
            audio_bytes: self.packets.iter().map(|p| p.len() as u64).sum(),
            video: Vec::new(),
        })
    }

    /// Decode every packet into `envelope` (pre-skip and end trim
    /// removed). Returns `false`, decoding nothing, for multichannel
    /// streams (mapping family other than 0), which the plain libopus
    /// decoder cannot read.
    pub fn decode_into(&self, envelope: &mut Envelope) -> Result<bool, ProbeError> {
        let channels = match (self.head.mapping_family, self.head.channels) {
            (0, 1) => opus::Channels::Mono,
            (0, 2) => opus::Channels::Stereo,
            _ => return Ok(false),
        };
        let n = usize::from(self.head.channels);
        let mut decoder = opus::Decoder::new(OPUS_RATE, channels).map_err(|e| {
            ProbeError::Read(std::io::Error::other(format!("starting libopus: {e}")))
        })?;
        envelope.start(OPUS_RATE, n);
        let mut pcm = vec![0f32; MAX_PACKET_SAMPLES as usize * n];
        let mut skip = usize::from(self.head.pre_skip);
        let mut remaining = usize::try_from(self.duration_samples()).unwrap_or(usize::MAX);
        for (i, packet) in self.packets.iter().enumerate() {
            if remaining == 0 {
                break;
            }
            let frames = decoder.decode_float(packet, &mut pcm, false).map_err(|e| {
                ProbeError::corrupt(
                    self.container,
                    format!("Opus packet {i} does not decode: {e}"),
                )
            })?;
            let dropped = skip.min(frames);
            skip -= dropped;
            let kept = (frames - dropped).min(remaining);
            remaining -= kept;
            envelope.push(&pcm[dropped * n..(dropped + kept) * n]);
        }
        Ok(true)
    }
}

/// A readable name for a Matroska codec id.
fn codec_name(codec_id: &str) -> String {
    match codec_id {
        "A_VORBIS" => "Vorbis".into(),
        "A_AAC" => "AAC".into(),
        "A_MPEG/L3" => "MP3".into(),
        "A_FLAC" => "FLAC".into(),
        id if id.starts_with("A_PCM") => "PCM".into(),
        "" => "unnamed codec".into(),
        id => format!("codec {id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::{OpusHead, packet_samples};

    #[test]
    fn packet_durations_come_from_the_toc_byte() {
        // Config 11 (SILK WB 60 ms), code 0.
        assert_eq!(packet_samples(&[11 << 3, 0xAA]), Ok(2880));
        // Config 31 (CELT FB 20 ms), code 1: two equal frames.
        assert_eq!(packet_samples(&[(31 << 3) | 1, 1, 2]), Ok(1920));
        // Config 16 (CELT 2.5 ms), code 3 with 48 frames = 120 ms.
        assert_eq!(packet_samples(&[(16 << 3) | 3, 48]), Ok(5760));
        // Config 15 (hybrid 20 ms), code 2.
        assert_eq!(packet_samples(&[(15 << 3) | 2, 1, 2]), Ok(1920));
        assert!(packet_samples(&[]).is_err());
        assert!(packet_samples(&[(31 << 3) | 1, 1]).is_err(), "odd code 1");
        assert!(packet_samples(&[(31 << 3) | 3]).is_err(), "no count");
        assert!(packet_samples(&[(31 << 3) | 3, 0]).is_err(), "0 frames");
        // 7 frames of 20 ms = 140 ms.
        assert!(packet_samples(&[(31 << 3) | 3, 7]).is_err(), "over 120 ms");
    }

    #[test]
    fn opus_head_round_trips_and_is_checked() {
        let head = OpusHead::simple(1, 312, 48_000);
        let bytes = head.to_bytes();
        assert_eq!(bytes.len(), 19);
        assert_eq!(OpusHead::parse(&bytes), Ok(head));
        let mut three = OpusHead::simple(3, 0, 48_000).to_bytes();
        assert!(OpusHead::parse(&three).is_err(), "family 0 with 3 channels");
        three[18] = 1;
        three.extend_from_slice(&[2, 1, 0, 2, 1]);
        assert!(OpusHead::parse(&three).is_ok());
        three[23] = 9;
        assert!(OpusHead::parse(&three).is_err(), "mapping out of range");
        assert!(OpusHead::parse(b"OpusHead").is_err());
        let mut v2 = OpusHead::simple(1, 0, 0).to_bytes();
        v2[8] = 0x10;
        assert!(OpusHead::parse(&v2).is_err());
    }
}
