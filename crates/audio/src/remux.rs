//! The fast path: Opus in WebM (or Ogg) to Ogg/Opus without re-encoding.
//!
//! The Opus packets are copied as they are; only the container changes
//! (RFC 7845):
//!
//! - the OpusHead is the Matroska CodecPrivate (or, when a file has none,
//!   one built from the track's channels and CodecDelay), alone on the first
//!   page, flagged beginning-of-stream;
//! - an OpusTags page follows, naming this service as the vendor;
//! - audio pages end after about a second of audio; each page's granule
//!   position is the number of 48 kHz samples decoded once its last packet
//!   is, pre-skip included;
//! - the last page is flagged end-of-stream and its granule position is cut
//!   short by the end trimming (Matroska DiscardPadding), so players stop
//!   where the recording did. No earlier page gets a granule position past
//!   that end, which keeps granule positions from ever going down.
//!
//! Checksums and page segmentation are the `ogg` crate's.

use ogg::{PacketWriteEndInfo, PacketWriter};

use crate::probe::opus::{OpusStream, packet_samples};
use crate::probe::{self, ProbeError, ProbeOptions, matroska, ogg as ogg_demux};
use crate::sniff::{Format, sniff};

/// Audio per page: one second, as FFmpeg and libopusenc do, so a player can
/// seek to within a second from the pages alone.
const PAGE_SAMPLES: u64 = 48_000;

/// Vendor string of the OpusTags header.
const VENDOR: &str = "telenet";

/// An Ogg/Opus file made from Opus packets of another file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remuxed {
    /// The Ogg/Opus bytes.
    pub data: Vec<u8>,
    /// Playable duration, as the output's granule positions say.
    pub duration_ms: u64,
    /// Audio packets copied.
    pub packets: u64,
    /// Channels of the Opus stream.
    pub channels: u32,
}

/// Remux Opus in WebM/Matroska or Ogg to a fresh Ogg/Opus file, refusing
/// anything else, and inputs over the limits of `options` (size,
/// duration), with the probe's errors.
pub fn to_ogg_opus(input: &[u8], options: &ProbeOptions) -> Result<Remuxed, ProbeError> {
    let stream = opus_stream(input, options)?;
    stream.summary(options)?;
    Ok(Remuxed {
        data: write_ogg_opus(&stream, serial_for(input))?,
        duration_ms: stream.duration_ms(),
        packets: stream.packets.len() as u64,
        channels: u32::from(stream.head.channels),
    })
}

/// The Opus stream of `input`, or why it has none that can be remuxed.
fn opus_stream<'a>(input: &'a [u8], options: &ProbeOptions) -> Result<OpusStream<'a>, ProbeError> {
    if input.len() as u64 > options.max_bytes {
        return Err(ProbeError::TooLarge {
            limit: options.max_bytes,
        });
    }
    if input.is_empty() {
        return Err(ProbeError::Empty);
    }
    match sniff(input) {
        Some(Format::Matroska) => return OpusStream::from_matroska(&matroska::parse(input)?),
        Some(Format::Ogg) => {
            return match ogg_demux::OggAudio::from_stream(ogg_demux::parse(input)?)? {
                ogg_demux::OggAudio::Opus(stream) => Ok(stream),
                ogg_demux::OggAudio::Vorbis(_) => Err(not_opus("Vorbis audio in Ogg")),
            };
        }
        _ => {}
    }
    // Say what the file is, when it is something.
    match probe::probe(
        input,
        &ProbeOptions {
            peaks: 0,
            ..*options
        },
    ) {
        Ok(p) => Err(not_opus(&format!("{} audio in {}", p.codec, p.container))),
        Err(e) => Err(e),
    }
}

fn not_opus(what: &str) -> ProbeError {
    ProbeError::Unsupported {
        what: format!(
            "remuxing {what}: only Opus audio (in WebM or Ogg) is remuxed to Ogg/Opus without re-encoding"
        ),
    }
}

/// A serial number for the output's logical stream, derived from the
/// input (FNV-1a of its first 64 KiB) so the same input always gives the
/// same bytes, which keeps content-addressed variants stable.
fn serial_for(input: &[u8]) -> u32 {
    input.iter().take(64 * 1024).fold(0x811C_9DC5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Write `stream` as an Ogg/Opus file with logical stream `serial`.
pub(crate) fn write_ogg_opus(stream: &OpusStream<'_>, serial: u32) -> std::io::Result<Vec<u8>> {
    let audio_bytes: usize = stream.packets.iter().map(|p| p.len()).sum();
    // Packets plus ~1 % of page headers, OpusHead and OpusTags.
    let mut out = Vec::with_capacity(audio_bytes + audio_bytes / 64 + 256);
    let mut w = PacketWriter::new(&mut out);
    w.write_packet(
        stream.head.to_bytes(),
        serial,
        PacketWriteEndInfo::EndPage,
        0,
    )?;
    w.write_packet(opus_tags(), serial, PacketWriteEndInfo::EndPage, 0)?;
    let end = stream.total_samples.saturating_sub(stream.end_trim);
    let last = stream.packets.len().saturating_sub(1);
    let mut granule = 0u64;
    let mut page_start = 0u64;
    for (i, packet) in stream.packets.iter().enumerate() {
        // Durations were checked when the stream was read.
        granule += u64::from(packet_samples(packet).unwrap_or(0));
        let (info, position) = if i == last {
            (PacketWriteEndInfo::EndStream, end)
        } else if granule - page_start >= PAGE_SAMPLES && granule <= end {
            page_start = granule;
            (PacketWriteEndInfo::EndPage, granule)
        } else {
            (PacketWriteEndInfo::NormalPacket, granule)
        };
        w.write_packet(&packet[..], serial, info, position)?;
    }
    Ok(out)
}

/// OpusTags (RFC 7845 section 5.2): the vendor string, no comments.
fn opus_tags() -> Vec<u8> {
    let mut tags = Vec::with_capacity(8 + 4 + VENDOR.len() + 4);
    tags.extend_from_slice(b"OpusTags");
    tags.extend_from_slice(&(VENDOR.len() as u32).to_le_bytes());
    tags.extend_from_slice(VENDOR.as_bytes());
    tags.extend_from_slice(&0u32.to_le_bytes());
    tags
}
