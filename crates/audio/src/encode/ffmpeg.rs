//! Encoders run as separate processes ([`super::external`]): AAC in M4A and
//! the still-image MP4 with FFmpeg, AMR-NB with SoX. Each reads raw PCM that
//! this service decoded, never the uploaded file, written to it as it is
//! decoded ([`PcmSource`]).

use std::ffi::OsString;

use super::EncodeError;
use super::external::{self, Input, Output, Tools, args};
use super::pcm::PcmSource;

/// FFmpeg's AAC coder: `fast` rather than its default `twoloop`, which
/// takes about three times the CPU. With the band limited to
/// [`AAC_CUTOFF_HZ`] it keeps speech as well as `twoloop` at 64 kb/s mono
/// (ADR 0010 has the measurements).
const AAC_CODER: &str = "fast";

/// The AAC band edge. Left to itself the `fast` coder spreads 64 kb/s mono
/// up to ~17 kHz and leaves holes in the 4–8 kHz band where sibilants are;
/// 13 kHz keeps everything a voice needs and more than the MP3 profiles do.
const AAC_CUTOFF_HZ: u32 = 13_000;

/// AAC-LC, mono, in an M4A file (`ipod` muxer: brand `M4A `) with the index
/// in front (`+faststart`, so players start before the download ends) and an
/// edit list that hides the encoder's 1024 priming samples.
pub fn encode_m4a(
    audio: &mut dyn PcmSource,
    bitrate_bps: u32,
    tools: &Tools,
) -> Result<Vec<u8>, EncodeError> {
    let mut a = external::ffmpeg_prelude();
    a.extend(external::ffmpeg_pcm_input(audio.rate()));
    a.extend(aac_args(bitrate_bps));
    a.extend(file_output(tools, "ipod", "out.m4a"));
    external::run(
        tools,
        &tools.ffmpeg,
        &a,
        Input::Pcm(audio),
        Output::File("out.m4a"),
    )
}

/// Size of the still frame.
pub const STILL_WIDTH: u32 = 640;
pub const STILL_HEIGHT: u32 = 360;

/// Frames per second of the still video: enough that the picture ends
/// within 0.2 s of the audio; repeated frames of a still image cost x264
/// next to nothing.
const STILL_FPS: u32 = 5;

/// H.264 video of one still image (a plain dark frame)
/// with the audio as AAC-LC, in MP4 with the index in front: what channels
/// with video but no audio messages (X/Twitter DMs) take. Baseline-compatible
/// settings (yuv420p, closed GOP, square pixels).
pub fn encode_still_mp4(
    audio: &mut dyn PcmSource,
    audio_bitrate_bps: u32,
    tools: &Tools,
) -> Result<Vec<u8>, EncodeError> {
    let rate = audio.rate();
    let seconds = audio.sample_count() as f64 / f64::from(rate);
    let mut a = external::ffmpeg_prelude();
    // The picture comes from FFmpeg's own test source, not a file.
    a.extend(args(&[
        "-f",
        "lavfi",
        "-i",
        &format!("color=c=0x1f2933:s={STILL_WIDTH}x{STILL_HEIGHT}:r={STILL_FPS}"),
    ]));
    a.extend(external::ffmpeg_pcm_input(rate));
    a.extend(args(&[
        "-map",
        "0:v",
        "-map",
        "1:a",
        // The picture is endless; the audio's length ends the file
        // (`-shortest` overshoots by FFmpeg's muxing queue).
        "-t",
        &format!("{seconds:.3}"),
        "-c:v",
        "libx264",
        // One flat frame repeated: slower presets find nothing more to
        // gain in it, at twice the CPU. `ultrafast` keeps to what
        // Constrained Baseline allows (CAVLC, no B-frames), which every
        // player decodes.
        "-preset",
        "ultrafast",
        "-tune",
        "stillimage",
        "-profile:v",
        "main",
        "-pix_fmt",
        "yuv420p",
    ]));
    a.extend(aac_args(audio_bitrate_bps));
    a.extend(file_output(tools, "mp4", "out.mp4"));
    external::run(
        tools,
        &tools.ffmpeg,
        &a,
        Input::Pcm(audio),
        Output::File("out.mp4"),
    )
}

fn aac_args(bitrate_bps: u32) -> Vec<OsString> {
    args(&[
        "-map_metadata",
        "-1",
        "-c:a",
        "aac",
        "-aac_coder",
        AAC_CODER,
        "-cutoff",
        &AAC_CUTOFF_HZ.to_string(),
        "-b:a",
        &bitrate_bps.to_string(),
        "-ac",
        "1",
    ])
}

/// Write one file in the run's private directory, FFmpeg refusing to open
/// anything but files, and to write more than the output limit; its
/// encoders on one thread (`-threads` before an input sets only that
/// input's decoder; x264 would otherwise start threads for every core).
fn file_output(tools: &Tools, format: &str, name: &str) -> Vec<OsString> {
    args(&[
        "-threads",
        "1",
        "-movflags",
        "+faststart",
        "-fs",
        &tools.max_output_bytes.to_string(),
        "-f",
        format,
        "-protocol_whitelist",
        "file",
        name,
    ])
}

/// AMR-NB at 12.2 kb/s (mode 7, its best) of `audio`, which must be 8 kHz,
/// with SoX (through libopencore-amrnb; Debian's FFmpeg has no AMR encoder).
pub fn encode_amr_nb(audio: &mut dyn PcmSource, tools: &Tools) -> Result<Vec<u8>, EncodeError> {
    if audio.rate() != 8_000 {
        return Err(EncodeError::Encoder(format!(
            "AMR-NB needs 8000 Hz input, got {}",
            audio.rate()
        )));
    }
    let mut a = external::sox_prelude();
    a.extend(external::sox_raw_pcm(8_000));
    a.extend(args(&["-t", "amr-nb", "-C", "7", "-"]));
    external::run(tools, &tools.sox, &a, Input::Pcm(audio), Output::Stdout)
}
