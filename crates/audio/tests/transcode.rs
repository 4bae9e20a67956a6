//! Every profile from every kind of recording: a WebM/Opus from Chrome (no
//! duration in the container), an Ogg/Opus voice note from WhatsApp and an
//! MP4/AAC like Safari's (made here from the Ogg one with FFmpeg). Each
//! output is checked by probing it — with this service's probe and, as an
//! independent reader, with `ffprobe` — never by trusting the encoder.
//!
//! FFmpeg (and SoX for AMR) must be installed (`scripts/services.sh ensure`
//! installs them); without them these tests fail, they do not skip.

use std::path::PathBuf;
use std::process::Command;

use telenet_audio::encode::{self, EncodeError, Options, Pcm, Recipe, Spec};
use telenet_audio::probe::{self, ProbeOptions};
use telenet_audio::profiles::{self, PROFILES, Transcoded};

/// The repository's media fixtures (`tests/fixtures/media`).
fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/media"
    ))
    .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// Run a command with `input` on stdin; its stdout.
fn run(program: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{program} must be installed (scripts/services.sh ensure): {e}")
        });
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait");
    let _ = feeder.join();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// An MP4/AAC recording like Safari's MediaRecorder makes (fragmented MP4,
/// AAC-LC mono 48 kHz), from the WhatsApp fixture.
fn safari_like() -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("safari.mp4");
    let out_s = out.to_str().expect("utf-8 path");
    run(
        "ffmpeg",
        &[
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "ogg",
            "-i",
            "pipe:0",
            "-c:a",
            "aac",
            "-b:a",
            "96k",
            "-ar",
            "48000",
            "-ac",
            "1",
            "-movflags",
            "frag_keyframe+empty_moov+default_base_moof",
            "-f",
            "mp4",
            out_s,
        ],
        &fixture("source_ogg_opus_ptb.ogg"),
    );
    std::fs::read(&out).expect("read safari-like fixture")
}

struct Input {
    name: &'static str,
    bytes: Vec<u8>,
    duration_ms: u64,
}

fn inputs() -> Vec<Input> {
    vec![
        Input {
            name: "whatsapp-ogg-opus",
            bytes: fixture("source_ogg_opus_ptb.ogg"),
            duration_ms: 3450,
        },
        Input {
            name: "safari-mp4-aac",
            bytes: safari_like(),
            duration_ms: 3450,
        },
        Input {
            name: "chrome-webm-opus",
            bytes: fixture("derived_webm_opus_live_no_duration.webm"),
            duration_ms: 3452,
        },
    ]
}

/// What ffprobe says about a file: (format name, [(codec type, codec name,
/// channels, sample rate)], duration in ms).
struct FfProbe {
    format: String,
    streams: Vec<(String, String, u32, u32)>,
    duration_ms: u64,
    /// Packets of the (last) stream, counted by reading them.
    packets: u64,
}

fn ffprobe(bytes: &[u8]) -> FfProbe {
    let dir = tempfile::tempdir().expect("tempdir");
    // A file, not a pipe: MP4 indexes are read by seeking.
    let path = dir.path().join("out");
    std::fs::write(&path, bytes).expect("write");
    let out = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-show_entries",
            "format=format_name,duration:stream=codec_type,codec_name,channels,sample_rate,nb_read_packets",
            "-count_packets",
            "-of",
            "default=noprint_wrappers=0",
            path.to_str().expect("path"),
        ],
        b"",
    );
    let text = String::from_utf8_lossy(&out).into_owned();
    let mut probe = FfProbe {
        format: String::new(),
        streams: Vec::new(),
        duration_ms: 0,
        packets: 0,
    };
    let mut current: Option<(String, String, u32, u32)> = None;
    for line in text.lines() {
        match line {
            "[STREAM]" => current = Some(Default::default()),
            "[/STREAM]" => probe.streams.extend(current.take()),
            _ => {}
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match (key, current.as_mut()) {
            ("codec_type", Some(s)) => s.0 = value.to_owned(),
            ("codec_name", Some(s)) => s.1 = value.to_owned(),
            ("channels", Some(s)) => s.2 = value.parse().unwrap_or(0),
            ("sample_rate", Some(s)) => s.3 = value.parse().unwrap_or(0),
            ("nb_read_packets", Some(_)) => probe.packets = value.parse().unwrap_or(0),
            ("format_name", None) => probe.format = value.to_owned(),
            ("duration", None) => {
                probe.duration_ms = (value.parse::<f64>().unwrap_or(0.0) * 1000.0).round() as u64
            }
            _ => {}
        }
    }
    probe
}

/// What each profile's output must be.
struct Expect {
    format: &'static str,
    audio_codec: &'static str,
    sample_rate: u32,
    video_codec: Option<&'static str>,
    /// Our probe reads it back (it probes audio files, not video).
    our_probe: bool,
}

fn expect(profile: &str) -> Expect {
    let (format, audio_codec, sample_rate, video_codec, our_probe) = match profile {
        "voice-ogg-opus" | "ogg-opus-remux" => ("ogg", "opus", 48_000, None, true),
        "audio-m4a-aac" | "audio-web-playback" => {
            ("mov,mp4,m4a,3gp,3g2,mj2", "aac", 48_000, None, true)
        }
        "audio-mp3" => ("mp3", "mp3", 48_000, None, true),
        "voice-mp3-parts" => ("mp3", "mp3", 24_000, None, true),
        "voice-amr" => ("amr", "amr_nb", 8_000, None, true),
        "video-still-mp4" => (
            "mov,mp4,m4a,3gp,3g2,mj2",
            "aac",
            48_000,
            Some("h264"),
            false,
        ),
        other => panic!("no expectation for profile {other}: add one"),
    };
    Expect {
        format,
        audio_codec,
        sample_rate,
        video_codec,
        our_probe,
    }
}

/// Tolerance on durations: AAC and MP3 frames are ~21–24 ms, the still
/// video's frames 1 s (it ends with the audio, `-shortest`).
const DURATION_TOLERANCE_MS: u64 = 60;

fn check(input: &Input, profile: &profiles::Profile, out: &Transcoded) {
    let what = format!("{} → {}", input.name, profile.name);
    let e = expect(profile.name);
    assert_eq!(out.parts.len(), 1, "{what}: a 3.5 s note is one part");
    let part = &out.parts[0];
    assert!(!part.data.is_empty(), "{what}: empty output");
    // The web-playback variant of an MP4/AAC input is the input itself.
    if out.remuxed && profile.name == profiles::WEB_PLAYBACK {
        assert_eq!(
            part.data, input.bytes,
            "{what}: passthrough changed the bytes"
        );
    }

    let mut ff = ffprobe(&part.data);
    if e.format == "amr" {
        // FFmpeg estimates an AMR file's duration from its size, which
        // silence frames throw off; every AMR frame is 20 ms.
        ff.duration_ms = ff.packets * 20;
    }
    assert_eq!(ff.format, e.format, "{what}: container");
    let audio: Vec<_> = ff.streams.iter().filter(|s| s.0 == "audio").collect();
    assert_eq!(audio.len(), 1, "{what}: one audio stream: {:?}", ff.streams);
    assert_eq!(audio[0].1, e.audio_codec, "{what}: audio codec");
    assert_eq!(audio[0].2, 1, "{what}: mono");
    if !(out.remuxed && profile.name == profiles::WEB_PLAYBACK) {
        assert_eq!(audio[0].3, e.sample_rate, "{what}: sample rate");
    }
    let video: Vec<_> = ff.streams.iter().filter(|s| s.0 == "video").collect();
    match e.video_codec {
        Some(codec) => {
            assert_eq!(video.len(), 1, "{what}: one video stream");
            assert_eq!(video[0].1, codec, "{what}: video codec");
        }
        None => assert!(video.is_empty(), "{what}: no video expected"),
    }
    assert!(
        ff.duration_ms.abs_diff(input.duration_ms) <= DURATION_TOLERANCE_MS,
        "{what}: ffprobe duration {} ms, input {} ms",
        ff.duration_ms,
        input.duration_ms
    );
    assert!(
        part.duration_ms.abs_diff(input.duration_ms) <= DURATION_TOLERANCE_MS,
        "{what}: reported duration {} ms",
        part.duration_ms
    );

    if e.our_probe {
        let p = probe::probe(&part.data, &ProbeOptions::VOICE_NOTE.with_peaks(0))
            .unwrap_or_else(|err| panic!("{what}: our probe: {err}"));
        assert_eq!(p.codec.name(), e.audio_codec, "{what}: probed codec");
        assert_eq!(p.channels, 1, "{what}: probed channels");
        assert!(
            p.duration_ms.abs_diff(input.duration_ms) <= DURATION_TOLERANCE_MS,
            "{what}: probed duration {} ms",
            p.duration_ms
        );
    }

    // Size: within what the bit rate allows (3.5 s; generous for headers).
    let max_bytes = match profile.name {
        "video-still-mp4" => 200_000,
        "ogg-opus-remux" | "audio-web-playback" => 60_000,
        _ => u64::from(profile.bitrate) / 8 * 4 * 3 / 2 + 8_000,
    } as usize;
    assert!(
        part.data.len() <= max_bytes,
        "{what}: {} bytes, expected at most {max_bytes}",
        part.data.len()
    );
    if profile.target_max_bytes > 0 {
        assert!(
            part.data.len() as u64 <= profile.target_max_bytes,
            "{what}: over target"
        );
    }
}

#[test]
fn every_recording_comes_out_right_for_every_profile() {
    for input in inputs() {
        for profile in PROFILES {
            let out = profiles::transcode(&input.bytes, profile);
            match (profile.name, &out) {
                // Only Opus inputs can be remuxed.
                (profiles::OGG_OPUS_REMUX, Err(_)) if input.name == "safari-mp4-aac" => continue,
                (_, Err(e)) => panic!("{} → {}: {e}", input.name, profile.name),
                (_, Ok(out)) => check(&input, profile, out),
            }
        }
    }
}

/// A 5-minute speech-like note as Chrome records it: WebM/Opus at 32 kb/s
/// (FFmpeg writes the WebM; the audio is synthesised here).
fn five_minute_webm() -> Vec<u8> {
    let pcm = encode::synth::speech_like(300.0, 48_000, 1);
    run(
        "ffmpeg",
        &[
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "s16le",
            "-ar",
            "48000",
            "-ac",
            "1",
            "-i",
            "pipe:0",
            "-c:a",
            "libopus",
            "-b:a",
            "32k",
            "-application",
            "voip",
            "-frame_duration",
            "20",
            "-f",
            "webm",
            "pipe:1",
        ],
        &pcm.to_s16le(),
    )
}

#[test]
fn a_five_minute_note_stays_a_whatsapp_voice_note_and_splits_for_wechat() {
    let webm = five_minute_webm();
    assert!(
        webm.len() > 1_000_000,
        "the input is over the voice-note size"
    );

    // WhatsApp: re-encoded (the remux would be ~1.2 MB) under 512 KB.
    let whatsapp = profiles::find("voice-ogg-opus").expect("profile");
    let out = profiles::transcode(&webm, whatsapp).expect("voice-ogg-opus");
    assert!(
        !out.remuxed,
        "a 1.2 MB remux does not fit; it must be re-encoded"
    );
    let part = &out.parts[0];
    assert!(
        part.data.len() as u64 <= 512_000,
        "{} bytes: over WhatsApp's 512 KB voice-note size",
        part.data.len()
    );
    // …and not needlessly small: the bit rate is chosen to use the room.
    assert!(part.data.len() > 350_000, "{} bytes", part.data.len());
    let p = probe::probe(&part.data, &ProbeOptions::VOICE_NOTE.with_peaks(0)).expect("probe");
    assert_eq!((p.codec.name(), p.channels), ("opus", 1));
    assert!(
        p.duration_ms.abs_diff(300_000) <= 40,
        "{} ms",
        p.duration_ms
    );
    let ff = ffprobe(&part.data);
    assert!(
        ff.duration_ms.abs_diff(300_000) <= 40,
        "ffprobe {} ms",
        ff.duration_ms
    );

    // WeChat: five parts of at most 60 s and 2 MB each, covering it all.
    for name in ["voice-amr", "voice-mp3-parts"] {
        let profile = profiles::find(name).expect("profile");
        let out = profiles::transcode(&webm, profile).expect(name);
        assert_eq!(out.parts.len(), 5, "{name}");
        let mut total = 0;
        for (i, part) in out.parts.iter().enumerate() {
            assert!(
                part.duration_ms <= 60_000,
                "{name} part {i}: {} ms",
                part.duration_ms
            );
            assert!(
                part.data.len() <= 2 * 1024 * 1024,
                "{name} part {i}: {} bytes",
                part.data.len()
            );
            let p = probe::probe(&part.data, &ProbeOptions::VOICE_NOTE.with_peaks(0))
                .unwrap_or_else(|e| panic!("{name} part {i}: {e}"));
            assert!(
                p.duration_ms.abs_diff(part.duration_ms) <= 60,
                "{name} part {i}: probed {} ms, reported {} ms",
                p.duration_ms,
                part.duration_ms
            );
            assert!(
                p.duration_ms <= 60_000 + 30,
                "{name} part {i}: probed {} ms",
                p.duration_ms
            );
            total += part.duration_ms;
        }
        assert!(
            total.abs_diff(300_000) <= 20,
            "{name}: parts add up to {total} ms"
        );
    }
}

#[test]
fn too_many_parts_is_a_clear_error() {
    let pcm = encode::synth::speech_like(150.0, 8_000, 3);
    let spec = Spec {
        recipe: Recipe::AmrNb,
        target_max_bytes: 0,
        max_part_ms: 60_000,
        max_part_bytes: 2 * 1024 * 1024,
        max_parts: 2,
    };
    let err = encode::encode_pcm(&pcm, &spec, &Options::default()).expect_err("3 parts needed");
    assert!(matches!(err, EncodeError::DoesNotFit(_)), "{err:?}");
    assert!(err.is_permanent());
    assert_eq!(
        err.to_string(),
        "the audio is 150 s; at most 2 parts of 60 s are allowed"
    );
}

#[test]
fn a_part_over_its_byte_limit_is_a_clear_error() {
    let pcm = encode::synth::speech_like(20.0, 48_000, 4);
    let spec = Spec {
        max_part_bytes: 10_000,
        ..Spec::plain(Recipe::Mp3 {
            bitrate_bps: 64_000,
            sample_rate: None,
        })
    };
    let err = encode::encode_pcm(&pcm, &spec, &Options::default()).expect_err("160 KB");
    assert!(
        err.to_string().starts_with("part 1 is ")
            && err.to_string().ends_with("at most 10000 are allowed"),
        "{err}"
    );
}

#[test]
fn bad_input_fails_with_the_reason_and_never_panics() {
    let whatsapp = profiles::find("audio-m4a-aac").expect("profile");
    let ogg = fixture("source_ogg_opus_ptb.ogg");
    for (what, input, expected) in [
        ("empty", Vec::new(), "empty"),
        (
            "text",
            b"hello, this is not audio at all".to_vec(),
            "not audio",
        ),
        ("truncated Ogg", ogg[..ogg.len() / 3].to_vec(), "ogg"),
    ] {
        let err = profiles::transcode(&input, whatsapp)
            .expect_err(what)
            .to_string();
        assert!(err.to_lowercase().contains(expected), "{what}: {err}");
    }
    // Raw PCM handed to the encoders directly needs no decoding: an empty
    // clip is refused by the decoder path only.
    let err =
        encode::encode(&[], &Spec::plain(Recipe::AmrNb), &Options::default()).expect_err("empty");
    assert!(err.is_permanent());
}

#[test]
fn missing_ffmpeg_is_named_with_its_package() {
    let options = Options {
        tools: encode::Tools {
            ffmpeg: "telenet-test-no-ffmpeg".into(),
            ..encode::Tools::default()
        },
        ..Options::default()
    };
    let pcm = Pcm::new(48_000, vec![0.0; 4800]);
    let err = encode::encode_pcm(
        &pcm,
        &Spec::plain(Recipe::M4aAac {
            bitrate_bps: 64_000,
        }),
        &options,
    )
    .expect_err("no ffmpeg");
    assert!(
        !err.is_permanent(),
        "a missing program is ours to fix, not the file's"
    );
    assert!(err.to_string().contains("apt-get install ffmpeg"), "{err}");
}

/// The other inputs channels and browsers send, made from the WhatsApp
/// recording: each decodes (MP3 at 44.1 kHz stereo goes through the
/// resampler; AMR through FFmpeg) and comes out as a WhatsApp voice note
/// of the same length.
#[test]
fn mp3_m4a_wav_and_amr_inputs_become_voice_notes() {
    let ogg = fixture("source_ogg_opus_ptb.ogg");
    let ffmpeg_to = |args: &[&str]| {
        let mut full = vec![
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "ogg",
            "-i",
            "pipe:0",
        ];
        full.extend_from_slice(args);
        full.push("pipe:1");
        run("ffmpeg", &full, &ogg)
    };
    let pcm8k = ffmpeg_to(&["-ar", "8000", "-ac", "1", "-f", "s16le"]);
    let amr = run(
        "sox",
        &[
            "-V1",
            "-t",
            "raw",
            "-e",
            "signed-integer",
            "-b",
            "16",
            "-c",
            "1",
            "-r",
            "8000",
            "-",
            "-t",
            "amr-nb",
            "-C",
            "7",
            "-",
        ],
        &pcm8k,
    );
    // Containers whose header is finished after the data (sizes, index)
    // are written to a file, as a recorder would, not to a pipe.
    let to_file = |name: &str, args: &[&str]| {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join(name);
        let mut full = vec![
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "ogg",
            "-i",
            "pipe:0",
        ];
        full.extend_from_slice(args);
        full.push(out.to_str().expect("path"));
        run("ffmpeg", &full, &ogg);
        std::fs::read(&out).expect("read")
    };
    let m4a = to_file(
        "in.m4a",
        &["-c:a", "aac", "-b:a", "64k", "-ar", "44100", "-ac", "2"],
    );
    let wav = to_file("in.wav", &["-c:a", "pcm_s16le", "-ar", "16000", "-ac", "1"]);
    let inputs = [
        (
            "mp3 44.1 kHz stereo",
            ffmpeg_to(&[
                "-c:a",
                "libmp3lame",
                "-b:a",
                "96k",
                "-ar",
                "44100",
                "-ac",
                "2",
                "-f",
                "mp3",
            ]),
        ),
        ("wav 16 kHz", wav),
        ("m4a 44.1 kHz stereo", m4a),
        ("amr-nb", amr),
    ];
    let voice = profiles::find("voice-ogg-opus").expect("profile");
    for (what, input) in inputs {
        let out = profiles::transcode(&input, voice).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(!out.remuxed, "{what}");
        let p = probe::probe(&out.parts[0].data, &ProbeOptions::VOICE_NOTE.with_peaks(0))
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!((p.codec.name(), p.channels), ("opus", 1), "{what}");
        assert!(
            p.duration_ms.abs_diff(3450) <= 80,
            "{what}: {} ms",
            p.duration_ms
        );
        // The speech is still there (not silence, not clipped noise).
        let decoded = encode::decode(&out.parts[0].data, 10_000, &encode::Tools::default())
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let rms = (decoded.samples.iter().map(|s| s * s).sum::<f32>()
            / decoded.samples.len() as f32)
            .sqrt();
        assert!((0.01..0.5).contains(&rms), "{what}: rms {rms}");
    }
}

#[test]
fn amr_wb_input_decodes_at_16_khz_frame_for_frame() {
    // The storage format's magic, then 50 NO_DATA frames (one byte each,
    // frame type 15): one second of (comfort) silence.
    let mut awb = b"#!AMR-WB\n".to_vec();
    awb.extend(std::iter::repeat_n(0x7C, 50));
    let pcm = encode::decode(&awb, 10_000, &encode::Tools::default()).expect("decode AMR-WB");
    assert_eq!((pcm.rate, pcm.samples.len()), (16_000, 16_000));
    let err = encode::decode(b"#!AMR\ngarbage", 10_000, &encode::Tools::default())
        .expect_err("garbage AMR");
    assert!(err.is_permanent(), "{err}");
}
