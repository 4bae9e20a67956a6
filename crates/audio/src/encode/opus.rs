//! Opus in Ogg (RFC 7845): encoding with libopus, and reading Ogg/Opus input
//! into packets for the decoder.

use std::io::Cursor;

use ogg::writing::PacketWriteEndInfo;

use super::EncodeError;
use super::pcm::{Pcm, PcmSource};
use crate::probe::opus::OpusStream;

/// Rates the Opus encoder takes directly; anything else is resampled to 48 kHz.
const OPUS_RATES: [u32; 5] = [8_000, 12_000, 16_000, 24_000, 48_000];

/// 20 ms frames: the usual voice frame, and what WhatsApp's own notes use.
const FRAME_MS: u32 = 20;

/// Frames per Ogg page: one second of audio, as opusenc does, so a page
/// costs ~30 bytes per second and a player can start after one page.
const FRAMES_PER_PAGE: usize = 50;

/// Largest Opus packet (RFC 6716 §3.2.1 allows 1275 bytes per frame).
const MAX_PACKET: usize = 1500;

/// Stream serial of the single logical stream we write.
const SERIAL: u32 = 0x7e1e_4e70;

/// How the Opus encoder is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusSettings {
    /// Target bit rate (VBR), bits per second.
    pub bitrate_bps: u32,
    /// libopus complexity, 0–10.
    pub complexity: i32,
}

/// One mono Ogg/Opus file of `pcm`, speech-tuned (`voip` application, VBR).
pub fn encode_ogg_opus(pcm: &Pcm, settings: OpusSettings) -> Result<Vec<u8>, EncodeError> {
    let enc_err = |e: opus::Error| EncodeError::Encoder(format!("opus: {e}"));
    let input;
    let pcm = if OPUS_RATES.contains(&pcm.rate) {
        pcm
    } else {
        input = pcm.resampled(48_000);
        &input
    };
    let rate = pcm.rate;
    let mut encoder =
        opus::Encoder::new(rate, opus::Channels::Mono, opus::Application::Voip).map_err(enc_err)?;
    encoder
        .set_bitrate(opus::Bitrate::Bits(settings.bitrate_bps as i32))
        .map_err(enc_err)?;
    encoder.set_vbr(true).map_err(enc_err)?;
    encoder
        .set_complexity(settings.complexity)
        .map_err(enc_err)?;
    encoder.set_signal(opus::Signal::Voice).map_err(enc_err)?;
    // Lookahead at the encoder's rate; Ogg counts everything at 48 kHz.
    let lookahead = encoder.get_lookahead().map_err(enc_err)?.max(0) as u64;
    let scale = u64::from(48_000 / rate);
    let pre_skip = lookahead * scale;
    let total_48k = pcm.samples.len() as u64 * scale;
    let frame = (rate * FRAME_MS / 1000) as usize;

    let mut out = Vec::with_capacity(
        (u64::from(settings.bitrate_bps) / 8 * (pcm.samples.len() as u64 / u64::from(rate) + 1))
            as usize
            + 4096,
    );
    let mut writer = ogg::writing::PacketWriter::new(Cursor::new(&mut out));
    let io_err = |e: std::io::Error| EncodeError::Encoder(format!("ogg: {e}"));
    writer
        .write_packet(
            opus_head(u16::try_from(pre_skip).unwrap_or(u16::MAX), rate),
            SERIAL,
            PacketWriteEndInfo::EndPage,
            0,
        )
        .map_err(io_err)?;
    writer
        .write_packet(opus_tags(), SERIAL, PacketWriteEndInfo::EndPage, 0)
        .map_err(io_err)?;

    // The decoder drops the first `lookahead` samples it outputs, so the
    // input is followed by that many zeros to get every real sample out.
    let padded_len = pcm.samples.len() + lookahead as usize;
    let frames = padded_len.div_ceil(frame).max(1);
    let mut buf = vec![0f32; frame];
    let mut packet = vec![0u8; MAX_PACKET];
    let final_granule = pre_skip + total_48k;
    for n in 0..frames {
        let start = n * frame;
        buf.fill(0.0);
        if start < pcm.samples.len() {
            let end = (start + frame).min(pcm.samples.len());
            buf[..end - start].copy_from_slice(&pcm.samples[start..end]);
        }
        let len = encoder.encode_float(&buf, &mut packet).map_err(enc_err)?;
        let last = n + 1 == frames;
        // Granule: 48 kHz samples decoded up to the end of this packet, with
        // the last page cut back to the real end (end trimming).
        let granule = ((n as u64 + 1) * frame as u64 * scale).min(final_granule);
        let end_info = if last {
            PacketWriteEndInfo::EndStream
        } else if (n + 1) % FRAMES_PER_PAGE == 0 {
            PacketWriteEndInfo::EndPage
        } else {
            PacketWriteEndInfo::NormalPacket
        };
        writer
            .write_packet(packet[..len].to_vec(), SERIAL, end_info, granule)
            .map_err(io_err)?;
    }
    drop(writer);
    Ok(out)
}

/// The identification header (RFC 7845 §5.1), mono, channel mapping 0.
fn opus_head(pre_skip: u16, input_rate: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(19);
    h.extend_from_slice(b"OpusHead");
    h.push(1); // version
    h.push(1); // channels
    h.extend_from_slice(&pre_skip.to_le_bytes());
    h.extend_from_slice(&input_rate.to_le_bytes());
    h.extend_from_slice(&0i16.to_le_bytes()); // output gain
    h.push(0); // mapping family
    h
}

/// The comment header (RFC 7845 §5.2): vendor string, no comments.
fn opus_tags() -> Vec<u8> {
    let vendor = format!("telenet (libopus {})", opus::version());
    let mut t = Vec::with_capacity(16 + vendor.len());
    t.extend_from_slice(b"OpusTags");
    t.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
    t.extend_from_slice(vendor.as_bytes());
    t.extend_from_slice(&0u32.to_le_bytes());
    t
}

// ------------------------------------------------------------------ decoding

/// An Opus stream taken out of its container (by the probe's WebM and Ogg
/// parsers), decoded packet by packet as it is read ([`PcmSource`]): mono at
/// one of libopus's rates, pre-skip, end trimming and the header's gain
/// applied.
pub struct OpusDecoder<'a> {
    stream: OpusStream<'a>,
    decoder: opus::Decoder,
    rate: u32,
    channels: usize,
    /// The next packet to decode.
    next: usize,
    /// Decoded samples still to drop (pre-skip).
    skip: usize,
    /// Samples still to give (end trimming stops there).
    remaining: usize,
    total: usize,
    /// One packet decoded, interleaved; 120 ms is the most a packet holds.
    buf: Vec<f32>,
    mono: Vec<f32>,
}

impl<'a> OpusDecoder<'a> {
    /// A decoder for `stream` at `rate` (8, 12, 16, 24 or 48 kHz; others
    /// give 48 kHz). Lower rates cost libopus less (it skips the upper band).
    pub fn new(stream: OpusStream<'a>, rate: u32) -> Result<Self, EncodeError> {
        let rate = if OPUS_RATES.contains(&rate) {
            rate
        } else {
            48_000
        };
        // Pre-skip and durations are counted at 48 kHz.
        let scale = (48_000 / rate) as usize;
        let head = &stream.head;
        let channels = match (head.mapping_family, head.channels) {
            (0, 1) => opus::Channels::Mono,
            (0, 2) => opus::Channels::Stereo,
            (family, n) => {
                return Err(EncodeError::UnsupportedInput(format!(
                    "Opus with {n} channels (mapping family {family}); mono or stereo only"
                )));
            }
        };
        let mut decoder = opus::Decoder::new(rate, channels)
            .map_err(|e| EncodeError::Encoder(format!("opus decoder: {e}")))?;
        if head.output_gain != 0 {
            decoder
                .set_gain(i32::from(head.output_gain))
                .map_err(|e| EncodeError::Corrupt(format!("Opus output gain: {e}")))?;
        }
        let n_ch = usize::from(head.channels);
        let total = usize::try_from(stream.duration_samples()).unwrap_or(usize::MAX) / scale;
        if total == 0 {
            return Err(EncodeError::NoAudio);
        }
        let skip = usize::from(head.pre_skip) / scale;
        Ok(Self {
            stream,
            decoder,
            rate,
            channels: n_ch,
            next: 0,
            skip,
            remaining: total,
            total,
            buf: vec![0f32; 5760 * n_ch],
            mono: Vec::with_capacity(5760),
        })
    }
}

impl PcmSource for OpusDecoder<'_> {
    fn rate(&self) -> u32 {
        self.rate
    }

    fn sample_count(&self) -> usize {
        self.total
    }

    fn pour(&mut self, sink: &mut dyn FnMut(&[f32]) -> bool) -> Result<(), EncodeError> {
        let n_ch = self.channels;
        while self.remaining > 0 {
            let i = self.next;
            let Some(packet) = self.stream.packets.get(i) else {
                break;
            };
            self.next += 1;
            let frames = self
                .decoder
                .decode_float(packet, &mut self.buf, false)
                .map_err(|e| {
                    EncodeError::Corrupt(format!("Opus packet {i} does not decode: {e}"))
                })?;
            let dropped = self.skip.min(frames);
            self.skip -= dropped;
            let kept = (frames - dropped).min(self.remaining);
            self.remaining -= kept;
            if kept == 0 {
                continue;
            }
            self.mono.clear();
            super::pcm::downmix_interleaved(
                &self.buf[dropped * n_ch..(dropped + kept) * n_ch],
                n_ch,
                &mut self.mono,
            );
            if !sink(&self.mono) {
                break;
            }
        }
        Ok(())
    }
}
