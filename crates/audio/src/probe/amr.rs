//! The AMR storage format (RFC 4867 section 5): a magic line, then frames
//! of 20 ms, each a header byte whose frame type gives its size.

use super::{Codec, Container, ProbeError, ProbeOptions, Summary, check_duration};

const C: Container = Container::Amr;

/// Frame sizes in bytes, header byte excluded, by frame type (RFC 4867
/// table 1 and 3GPP TS 26.101/26.201); `None` for reserved types.
const NB_SIZES: [Option<usize>; 16] = [
    Some(12),
    Some(13),
    Some(15),
    Some(17),
    Some(19),
    Some(20),
    Some(26),
    Some(31),
    Some(5), // SID
    None,
    None,
    None,
    None,
    None,
    None,
    Some(0), // NO_DATA
];
const WB_SIZES: [Option<usize>; 16] = [
    Some(17),
    Some(23),
    Some(32),
    Some(36),
    Some(40),
    Some(46),
    Some(50),
    Some(58),
    Some(60),
    Some(5), // SID
    None,
    None,
    None,
    None,
    Some(0), // SPEECH_LOST
    Some(0), // NO_DATA
];

pub(crate) fn probe(data: &[u8], options: &ProbeOptions) -> Result<Summary, ProbeError> {
    let (codec, sizes, rate, mut pos) = if data.starts_with(b"#!AMR-WB\n") {
        (Codec::AmrWb, &WB_SIZES, 16_000, 9)
    } else if data.starts_with(b"#!AMR\n") {
        (Codec::AmrNb, &NB_SIZES, 8_000, 6)
    } else {
        // Multichannel AMR (`#!AMR_MC1.0`) and anything else.
        return Err(ProbeError::unsupported("multichannel AMR"));
    };
    let mut frames = 0u64;
    while pos < data.len() {
        let header = data[pos];
        let frame_type = usize::from((header >> 3) & 0x0F);
        if header & 0x83 != 0 {
            return Err(ProbeError::corrupt(
                C,
                format!("frame header at byte {pos} has padding bits set"),
            ));
        }
        let size = sizes[frame_type].ok_or_else(|| {
            ProbeError::corrupt(
                C,
                format!("frame at byte {pos} has reserved type {frame_type}"),
            )
        })?;
        let next = pos + 1 + size;
        if next > data.len() {
            return Err(ProbeError::truncated(
                C,
                format!("the file ends inside the frame at byte {pos}"),
            ));
        }
        frames += 1;
        pos = next;
    }
    if frames == 0 {
        return Err(ProbeError::truncated(C, "the file has no audio frames"));
    }
    let duration_ms = frames * 20;
    check_duration(duration_ms, options)?;
    Ok(Summary {
        codec,
        sample_rate: rate,
        channels: 1,
        duration_ms,
        packets: frames,
        audio_bytes: data.len() as u64,
        video: Vec::new(),
    })
}
