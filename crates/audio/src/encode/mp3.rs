//! MP3 with LAME (vendored by `mp3lame-encoder`, built from source: no
//! system library needed), in process.

use std::num::NonZeroU32;

use mp3lame_encoder::{Bitrate, Builder, FlushNoGap, Mode, MonoPcm, Quality};

use super::EncodeError;
use super::pcm::Pcm;

/// Rates MP3 (MPEG-1 and MPEG-2 layer III) can be written at.
const MP3_RATES: [u32; 6] = [16_000, 22_050, 24_000, 32_000, 44_100, 48_000];

/// A mono constant-bit-rate MP3 of `pcm` at `bitrate_bps` (rounded down to
/// a rate MP3 has) and `rate` samples per second (`None`: the input's rate
/// when MP3 has it, else 48 kHz). LAME resamples itself when the rates
/// differ. The first frame is the Xing/LAME tag, which tells players the
/// exact length and the encoder delay to drop (gapless).
pub fn encode_mp3(pcm: &Pcm, bitrate_bps: u32, rate: Option<u32>) -> Result<Vec<u8>, EncodeError> {
    let err =
        |what: &str, e: &dyn std::fmt::Debug| EncodeError::Encoder(format!("lame {what}: {e:?}"));
    let out_rate = rate.unwrap_or(if MP3_RATES.contains(&pcm.rate) {
        pcm.rate
    } else {
        48_000
    });
    let mut builder =
        Builder::new().ok_or_else(|| EncodeError::Encoder("lame_init failed".into()))?;
    builder
        .set_num_channels(1)
        .map_err(|e| err("channels", &e))?;
    builder
        .set_sample_rate(pcm.rate)
        .map_err(|e| err("input rate", &e))?;
    builder
        .set_output_sample_rate(NonZeroU32::new(out_rate))
        .map_err(|e| err("output rate", &e))?;
    builder.set_mode(Mode::Mono).map_err(|e| err("mode", &e))?;
    builder
        .set_brate(bitrate(bitrate_bps))
        .map_err(|e| err("bit rate", &e))?;
    // Quality 7 (`lame -f`): the profiles give mono speech 64 kb/s (or 32
    // kb/s at 24 kHz), far more than speech needs, and 7 encodes about twice
    // as fast as 5 (docs/benchmarks.md).
    builder
        .set_quality(Quality::Ok)
        .map_err(|e| err("quality", &e))?;
    builder
        .set_to_write_vbr_tag(true)
        .map_err(|e| err("tag", &e))?;
    let mut encoder = builder.build().map_err(|e| err("setup", &e))?;

    let mut out = Vec::new();
    // LAME writes an empty first frame where the tag goes; it is filled in
    // once every frame is known.
    for chunk in pcm.samples.chunks(64 * 1152) {
        out.reserve(mp3lame_encoder::max_required_buffer_size(chunk.len()));
        encoder
            .encode_to_vec(MonoPcm(chunk), &mut out)
            .map_err(|e| err("encode", &e))?;
    }
    out.reserve(7200);
    encoder
        .flush_to_vec::<FlushNoGap>(&mut out)
        .map_err(|e| err("flush", &e))?;
    let mut tag = Vec::with_capacity(encoder.lame_tag_size());
    if encoder.lame_tag_encode_to_vec(&mut tag).is_some() && tag.len() <= out.len() {
        out[..tag.len()].copy_from_slice(&tag);
    }
    Ok(out)
}

/// The MP3 bit rate at or below `bps` (at least 8 kb/s).
fn bitrate(bps: u32) -> Bitrate {
    match bps / 1000 {
        0..16 => Bitrate::Kbps8,
        16..24 => Bitrate::Kbps16,
        24..32 => Bitrate::Kbps24,
        32..40 => Bitrate::Kbps32,
        40..48 => Bitrate::Kbps40,
        48..64 => Bitrate::Kbps48,
        64..80 => Bitrate::Kbps64,
        80..96 => Bitrate::Kbps80,
        96..112 => Bitrate::Kbps96,
        112..128 => Bitrate::Kbps112,
        128..160 => Bitrate::Kbps128,
        _ => Bitrate::Kbps160,
    }
}
