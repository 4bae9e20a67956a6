//! Probing and the Ogg/Opus remux on real recordings (the repository's fixtures:
//! a Telegram Ogg/Opus voice note and the same audio as WebM, with and
//! without a Duration element), on inputs generated here (WAV, AMR, WebM,
//! Ogg), and on what FFmpeg makes when it is installed. Remux outputs are
//! checked by reading them back: with this crate's probe, with the `ogg`
//! crate's page reader, and with `ffprobe` when installed.

mod probe_support;

use std::path::PathBuf;
use std::process::Command;

use probe_support as support;
use support::{Ogg, ebml_webm, opus_ogg, wav_pcm16};
use telenet_audio::probe::{
    self, Codec, Container, MAX_VOICE_NOTE_MS, ProbeError, ProbeOptions, probe,
};
use telenet_audio::remux;

/// The repository's media fixtures (`tests/fixtures/media`); a missing one
/// fails the test.
fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/media"
    ))
    .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

const OGG: &str = "source_ogg_opus_ptb.ogg";
const WEBM: &str = "derived_webm_opus_with_duration.webm";
const WEBM_LIVE: &str = "derived_webm_opus_live_no_duration.webm";

/// The recording: 58 packets of 60 ms = 167 040 samples, pre-skip 312, the
/// last page's granule 165 624, so (165 624 − 312) / 48 = 3 444 ms playable.
const FIXTURE_MS: u64 = 3_444;
const FIXTURE_PACKETS: u64 = 58;

fn opts() -> ProbeOptions {
    ProbeOptions::VOICE_NOTE
}

#[test]
fn the_three_recordings_probe_as_the_same_3_45_s_mono_opus() {
    for (name, container, mime) in [
        (OGG, Container::Ogg, "audio/ogg; codecs=opus"),
        (WEBM, Container::Webm, "audio/webm; codecs=opus"),
        (WEBM_LIVE, Container::Webm, "audio/webm; codecs=opus"),
    ] {
        let bytes = fixture(name);
        let p = probe(&bytes, &opts()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(p.container, container, "{name}");
        assert_eq!(p.codec, Codec::Opus, "{name}");
        assert_eq!(p.mime_type, mime, "{name}");
        assert_eq!(p.sample_rate, 48_000, "{name}");
        assert_eq!(p.channels, 1, "{name}");
        assert!(
            p.duration_ms.abs_diff(3_450) <= 20,
            "{name}: {} ms",
            p.duration_ms
        );
        assert_eq!(p.duration_ms, FIXTURE_MS, "{name}");
        assert_eq!(p.packets, FIXTURE_PACKETS, "{name}");
        assert_eq!(p.size_bytes, bytes.len() as u64, "{name}");
        // ~6 KB of packets over 3.444 s.
        assert!(
            (12_000..16_000).contains(&p.bit_rate),
            "{name}: {}",
            p.bit_rate
        );
        assert_eq!(p.peaks.len(), probe::DEFAULT_PEAKS, "{name}");
        assert_eq!(p.peak_slice_ms, FIXTURE_MS.div_ceil(64), "{name}");
        // Speech: loud somewhere, far from full scale everywhere.
        assert!(p.peaks.iter().any(|&v| v > 40), "{name}: {:?}", p.peaks);
        assert!(p.peaks.iter().any(|&v| v < 250), "{name}: {:?}", p.peaks);
    }
}

#[test]
fn the_three_recordings_have_the_same_waveform() {
    let (ogg, webm, live) = (fixture(OGG), fixture(WEBM), fixture(WEBM_LIVE));
    let peaks = |b: &[u8]| probe(b, &opts().with_peaks(100)).expect("probe").peaks;
    let reference = peaks(&ogg);
    assert_eq!(reference.len(), 100);
    assert_eq!(peaks(&webm), reference);
    assert_eq!(peaks(&live), reference);
    // Without peaks nothing is decoded.
    let none = probe(&ogg, &opts().with_peaks(0)).expect("probe");
    assert!(none.peaks.is_empty());
    assert_eq!(none.peak_slice_ms, 0);
}

#[test]
fn the_live_webm_really_has_no_duration_and_still_gets_one() {
    let live = fixture(WEBM_LIVE);
    let with = fixture(WEBM);
    // The Duration element (0x4489) is in one file and not the other.
    let has_duration = |b: &[u8]| b.windows(2).any(|w| w == [0x44, 0x89]);
    assert!(has_duration(&with));
    assert!(!has_duration(&live));
    assert_eq!(
        probe(&live, &opts()).expect("probe").duration_ms,
        FIXTURE_MS
    );
}

#[test]
fn remux_of_both_webms_gives_the_source_packets_in_valid_ogg() {
    let source = fixture(OGG);
    let source_packets = Ogg::read(&source).audio_packets();
    for name in [WEBM, WEBM_LIVE] {
        let webm = fixture(name);
        let out = remux::to_ogg_opus(&webm, &opts()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(out.duration_ms, FIXTURE_MS, "{name}");
        assert_eq!(out.packets, FIXTURE_PACKETS, "{name}");
        assert_eq!(out.channels, 1, "{name}");

        // Read back by this crate's probe…
        let p = probe(&out.data, &opts()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(p.container, Container::Ogg);
        assert_eq!(p.codec, Codec::Opus);
        assert_eq!(p.duration_ms, FIXTURE_MS, "{name}");
        assert_eq!(p.packets, FIXTURE_PACKETS, "{name}");

        // …and by the `ogg` crate: same packets, byte for byte, as the
        // original Ogg file; pages flagged and positioned per RFC 7845.
        let ogg = Ogg::read(&out.data);
        assert_eq!(ogg.audio_packets(), source_packets, "{name}");
        let head = &ogg.packets[0];
        assert!(head.starts_with(b"OpusHead"));
        assert_eq!(u16::from_le_bytes([head[10], head[11]]), 312, "pre-skip");
        assert!(ogg.packets[1].starts_with(b"OpusTags"));
        ogg.assert_well_formed();
        // The end trimming survives: same final granule as the source.
        assert_eq!(ogg.last_granule(), 165_624, "{name}");
        assert_eq!(ogg.last_granule(), Ogg::read(&source).last_granule());

        ffprobe_agrees(&out.data, name);
    }
}

/// `ffprobe`'s reading of a remuxed file, when it is installed: Ogg, Opus,
/// 48 kHz mono, 58 packets, 3.4505 s (ffprobe counts the pre-skip in).
fn ffprobe_agrees(ogg: &[u8], name: &str) {
    let Some(dir) = tool_dir("ffprobe") else {
        println!("SKIP: ffprobe not installed; the remux of {name} is checked without it");
        return;
    };
    let path = dir.path().join("out.ogg");
    std::fs::write(&path, ogg).expect("write");
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_packets",
            "-show_entries",
            "format=format_name,duration:stream=codec_name,sample_rate,channels,nb_read_packets",
            "-of",
            "default=noprint_wrappers=1",
        ])
        .arg(&path)
        .output()
        .expect("run ffprobe");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{name}: {text}");
    for line in [
        "format_name=ogg",
        "codec_name=opus",
        "sample_rate=48000",
        "channels=1",
        "nb_read_packets=58",
        "duration=3.450500",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{name}: no {line} in\n{text}"
        );
    }
}

/// A temporary directory when `tool` runs.
fn tool_dir(tool: &str) -> Option<tempfile::TempDir> {
    Command::new(tool)
        .arg("-version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| tempfile::tempdir().expect("tempdir"))
}

#[test]
fn remux_of_ogg_opus_keeps_packets_and_granules() {
    let source = fixture(OGG);
    let out = remux::to_ogg_opus(&source, &opts()).expect("remux");
    let (a, b) = (Ogg::read(&source), Ogg::read(&out.data));
    assert_eq!(a.audio_packets(), b.audio_packets());
    assert_eq!(a.last_granule(), b.last_granule());
    b.assert_well_formed();
    // Deterministic: the same input gives the same bytes.
    assert_eq!(
        remux::to_ogg_opus(&source, &opts()).expect("remux").data,
        out.data
    );
}

#[test]
fn remux_refuses_what_is_not_opus() {
    let wav = wav_pcm16(8_000, 1, &[0i16; 8_000]);
    match remux::to_ogg_opus(&wav, &opts()) {
        Err(ProbeError::Unsupported { what }) => {
            assert!(what.contains("pcm_s16le audio in wav"), "{what}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        remux::to_ogg_opus(b"hello", &opts()),
        Err(ProbeError::NotAudio { .. })
    ));
}

#[test]
fn generated_webm_with_end_trimming_and_lacing_remuxes_exactly() {
    // 50 packets of 20 ms (CELT, config 31), pre-skip 312 via CodecDelay and
    // no CodecPrivate, 480 samples of DiscardPadding on the last block, and
    // a block of 3 Xiph-laced frames.
    let packets: Vec<Vec<u8>> = (0..50u8).map(|i| vec![31 << 3, i, i, i]).collect();
    let webm = ebml_webm(&support::WebmSpec {
        packets: packets.clone(),
        codec_private: false,
        codec_delay_ns: 6_500_000,
        discard_padding_ns: 10_000_000,
        xiph_lace_first: 3,
        ..support::WebmSpec::default()
    });
    let p = probe(&webm, &opts().with_peaks(0)).expect("probe");
    // 50 × 960 − 312 − 480 = 47 208 samples.
    assert_eq!(p.duration_ms, 984); // 983.5 rounded
    assert_eq!(p.packets, 50);
    let out = remux::to_ogg_opus(&webm, &opts()).expect("remux");
    let ogg = Ogg::read(&out.data);
    assert_eq!(ogg.audio_packets(), packets);
    assert_eq!(ogg.last_granule(), 50 * 960 - 480);
    let head = &ogg.packets[0];
    assert_eq!(
        u16::from_le_bytes([head[10], head[11]]),
        312,
        "pre-skip from CodecDelay"
    );
    ogg.assert_well_formed();
    assert_eq!(
        probe(&out.data, &opts().with_peaks(0))
            .expect("probe")
            .duration_ms,
        984
    );
}

#[test]
fn long_webm_pages_once_a_second_and_never_past_the_trimmed_end() {
    // 10 s of 20 ms packets with the end trimmed by a whole 20 ms.
    let packets: Vec<Vec<u8>> = (0..500u32).map(|i| vec![31 << 3, i as u8]).collect();
    let webm = ebml_webm(&support::WebmSpec {
        packets,
        discard_padding_ns: 20_000_000,
        ..support::WebmSpec::default()
    });
    let out = remux::to_ogg_opus(&webm, &opts()).expect("remux");
    let ogg = Ogg::read(&out.data);
    ogg.assert_well_formed();
    // Header pages, then one page per second.
    assert_eq!(ogg.pages.len(), 2 + 10, "{:?}", ogg.pages);
    assert_eq!(ogg.last_granule(), 500 * 960 - 960);
}

#[test]
fn ogg_edge_cases_starting_late_multichannel_video_only_and_empty() {
    let packets: Vec<Vec<u8>> = (0..50u8).map(|i| vec![31 << 3, i]).collect();
    // Granules starting at 1 s (a stream cut out of a live one): the
    // duration is still the packets' (1 s less the pre-skip).
    let late = support::ogg_stream(&support::opus_head(312), &packets, 48_000);
    let p = probe(&late, &opts().with_peaks(0)).expect("late start");
    assert_eq!(p.duration_ms, 994); // (48 000 − 312) / 48 = 993.5

    // Three channels (mapping family 1): probed, not decoded.
    let mut head = b"OpusHead\x01\x03".to_vec();
    head.extend_from_slice(&312u16.to_le_bytes());
    head.extend_from_slice(&48_000u32.to_le_bytes());
    head.extend_from_slice(&[0, 0, 1, 2, 1, 0, 2, 1]);
    let surround = support::ogg_stream(&head, &packets, 0);
    let p = probe(&surround, &opts()).expect("3 channels");
    assert_eq!(p.channels, 3);
    assert!(p.peaks.is_empty());

    // Theora alone: a video.
    let theora = support::ogg_stream(b"\x80theora\x03\x02\x01", &packets, 0);
    let e = probe(&theora, &opts()).expect_err("theora");
    assert_eq!(
        e.to_string(),
        "an Ogg Theora video with no audio, not audio"
    );

    // Headers only, in WebM: nothing to play.
    let empty = ebml_webm(&support::WebmSpec {
        packets: Vec::new(),
        ..support::WebmSpec::default()
    });
    let e = probe(&empty, &opts()).expect_err("no packets");
    assert_eq!(
        e.to_string(),
        "truncated webm file: the file has no audio packets"
    );
}

#[test]
fn matroska_is_told_from_webm_by_its_doc_type() {
    let mkv = ebml_webm(&support::WebmSpec {
        doc_type: "matroska",
        ..support::WebmSpec::default()
    });
    let p = probe(&mkv, &opts()).expect("matroska");
    assert_eq!(p.container, Container::Matroska);
    assert_eq!(p.mime_type, "audio/x-matroska; codecs=opus");
    // 20 packets of 20 ms less 312 samples of pre-skip.
    assert_eq!(p.duration_ms, 394);
    let other = ebml_webm(&support::WebmSpec {
        doc_type: "mka-ish",
        ..support::WebmSpec::default()
    });
    let e = probe(&other, &opts()).expect_err("unknown doc type");
    assert!(matches!(e, ProbeError::Unsupported { .. }), "{e}");
}

#[test]
fn errors_name_the_problem() {
    let o = opts();
    assert!(matches!(probe(b"", &o), Err(ProbeError::Empty)));
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01";
    let e = probe(png, &o).expect_err("png");
    assert!(matches!(e, ProbeError::NotAudio { .. }));
    assert_eq!(e.to_string(), "a PNG image, not audio");
    assert!(!e.is_over_limit(), "the caller's to fix: INVALID_ARGUMENT");
    let e = probe(b"Hello, this is a voice note, promise.\n", &o).expect_err("text");
    assert_eq!(e.to_string(), "a text file, not audio");
    let e = probe(&[0x13, 0x37, 0x00, 0xFE, 0x99, 0x42], &o).expect_err("junk");
    assert!(matches!(e, ProbeError::UnknownFormat), "{e}");

    // A WebM with only a video track.
    let video = ebml_webm(&support::WebmSpec {
        video_only: true,
        ..support::WebmSpec::default()
    });
    let e = probe(&video, &o).expect_err("video only");
    assert_eq!(e.to_string(), "a video with no audio track, not audio");

    // Vorbis in WebM: a format, not ours.
    let vorbis = ebml_webm(&support::WebmSpec {
        codec_id: "A_VORBIS",
        ..support::WebmSpec::default()
    });
    let e = probe(&vorbis, &o).expect_err("vorbis");
    assert!(matches!(e, ProbeError::Unsupported { .. }), "{e}");
    assert!(e.to_string().contains("Vorbis audio in webm"), "{e}");

    let big = vec![0u8; 2048];
    let e = probe(
        &big,
        &ProbeOptions {
            max_bytes: 1024,
            ..o
        },
    )
    .expect_err("too large");
    assert!(matches!(e, ProbeError::TooLarge { limit: 1024 }), "{e}");
    assert!(e.is_over_limit(), "over a limit: FAILED_PRECONDITION");
    let e = probe::probe_reader(
        &big[..],
        &ProbeOptions {
            max_bytes: 1024,
            ..o
        },
    )
    .expect_err("too large");
    assert!(matches!(e, ProbeError::TooLarge { .. }), "{e}");
}

#[test]
fn truncated_and_corrupt_recordings_are_refused_with_the_right_variant() {
    let (ogg, live) = (fixture(OGG), fixture(WEBM_LIVE));
    let o = opts();
    // Cut in the middle of a page / a block.
    let e = probe(&ogg[..ogg.len() - 20], &o).expect_err("cut ogg");
    assert!(
        matches!(
            e,
            ProbeError::Truncated {
                container: "ogg",
                ..
            }
        ),
        "{e}"
    );
    let e = probe(&live[..live.len() - 20], &o).expect_err("cut webm");
    assert!(
        matches!(
            e,
            ProbeError::Truncated {
                container: "webm",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().starts_with("truncated webm file: "), "{e}");
    // Only the headers.
    let audio_start = Ogg::read(&ogg).page_offsets[2];
    let e = probe(&ogg[..audio_start], &o).expect_err("headers only");
    assert!(matches!(e, ProbeError::Truncated { .. }), "{e}");

    // A flipped byte in an Ogg page breaks its checksum.
    let mut bad = ogg.clone();
    bad[3000] ^= 0x40;
    let e = probe(&bad, &o).expect_err("crc");
    assert!(
        matches!(
            e,
            ProbeError::Corrupt {
                container: "ogg",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("checksum"), "{e}");
    // A missing page.
    let pages = Ogg::read(&ogg).page_offsets;
    let mut gap = ogg[..pages[10]].to_vec();
    gap.extend_from_slice(&ogg[pages[11]..]);
    let e = probe(&gap, &o).expect_err("gap");
    assert!(e.to_string().contains("pages are missing"), "{e}");

    // An invalid element id inside the WebM Segment.
    let mut bad = live.clone();
    // The last Cluster header (not the SeekHead's mention of one).
    let cluster = live
        .windows(4)
        .rposition(|w| w == [0x1F, 0x43, 0xB6, 0x75])
        .expect("a cluster");
    bad[cluster] = 0x00;
    let e = probe(&bad, &o).expect_err("bad id");
    assert!(
        matches!(
            e,
            ProbeError::Corrupt {
                container: "webm",
                ..
            }
        ),
        "{e}"
    );

    // An Opus packet whose TOC claims 63 frames (over 120 ms).
    let mut spec = support::WebmSpec::default();
    spec.packets[3] = vec![(31 << 3) | 3, 63];
    let e = probe(&ebml_webm(&spec), &o).expect_err("bad toc");
    assert!(e.to_string().contains("packet 3"), "{e}");
}

#[test]
fn over_five_minutes_is_refused_in_every_container() {
    let o = opts();
    let max = MAX_VOICE_NOTE_MS;
    // WAV: 301 s of 8 kHz 16-bit silence (4.8 MB).
    let wav = wav_pcm16(8_000, 1, &vec![0i16; 8_000 * 301]);
    match probe(&wav, &o) {
        Err(ProbeError::TooLong {
            duration_ms,
            max_ms,
        }) => {
            assert_eq!(duration_ms, 301_000);
            assert_eq!(max_ms, max);
        }
        other => panic!("{other:?}"),
    }
    // Ogg/Opus and WebM/Opus: 301 s of 20 ms packets, no pre-skip.
    let packets: Vec<Vec<u8>> = (0..301_000 / 20).map(|_| vec![31 << 3]).collect();
    let ogg = opus_ogg(&packets, 0);
    let webm = ebml_webm(&support::WebmSpec {
        packets: packets.clone(),
        pre_skip: 0,
        ..support::WebmSpec::default()
    });
    for (name, bytes) in [("ogg", &ogg), ("webm", &webm)] {
        let e = probe(bytes, &o).expect_err(name);
        assert!(
            matches!(
                e,
                ProbeError::TooLong {
                    duration_ms: 301_000,
                    ..
                }
            ),
            "{name}: {e}"
        );
        assert_eq!(
            e.to_string(),
            "the audio is 301.000 s long; voice notes are at most 300.000 s"
        );
        assert!(e.is_over_limit(), "over a limit: FAILED_PRECONDITION");
        assert!(matches!(
            remux::to_ogg_opus(bytes, &o),
            Err(ProbeError::TooLong { .. })
        ));
        // Accepted when no limit is asked for.
        let any = ProbeOptions {
            max_duration_ms: None,
            ..o
        };
        assert_eq!(probe(bytes, &any).expect(name).duration_ms, 301_000);
    }
    // Exactly 5 minutes plus a packet is within the grace.
    let wav = wav_pcm16(8_000, 1, &vec![0i16; 8_000 * 300 + 160]);
    assert_eq!(
        probe(&wav, &o.with_peaks(0)).expect("5 min").duration_ms,
        300_020
    );
}

#[test]
fn generated_wav_probes_exactly_with_its_waveform() {
    // 2 s at 16 kHz mono: 1 s silence, then 1 s of a half-scale square wave.
    let mut samples = vec![0i16; 16_000];
    samples.extend((0..16_000).map(|i| if (i / 20) % 2 == 0 { 16_384 } else { -16_384 }));
    let wav = wav_pcm16(16_000, 1, &samples);
    let p = probe(&wav, &opts().with_peaks(4)).expect("probe");
    assert_eq!(p.container, Container::Wav);
    assert_eq!(p.codec, Codec::Pcm("pcm_s16le"));
    assert_eq!(p.mime_type, "audio/wav");
    assert_eq!((p.sample_rate, p.channels), (16_000, 1));
    assert_eq!(p.duration_ms, 2_000);
    assert_eq!(p.bit_rate, 256_000);
    assert_eq!(p.peaks, vec![0, 0, 128, 128]);
    assert_eq!(p.peak_slice_ms, 500);
}

#[test]
fn generated_amr_probes_by_frame_count() {
    // 150 frames of AMR-NB 12.2 kb/s (type 7: header + 31 bytes) = 3 s.
    let mut amr = b"#!AMR\n".to_vec();
    for _ in 0..150 {
        amr.push(7 << 3 | 0x04);
        amr.extend_from_slice(&[0x55; 31]);
    }
    let p = probe(&amr, &opts()).expect("amr");
    assert_eq!(p.container, Container::Amr);
    assert_eq!(p.codec, Codec::AmrNb);
    assert_eq!((p.sample_rate, p.channels), (8_000, 1));
    assert_eq!(p.duration_ms, 3_000);
    assert_eq!(p.packets, 150);
    assert!(p.peaks.is_empty(), "AMR is not decoded");
    // A reserved frame type, and a cut frame.
    let mut bad = amr.clone();
    bad[6 + 32 * 10] = 12 << 3;
    assert!(matches!(
        probe(&bad, &opts()),
        Err(ProbeError::Corrupt { .. })
    ));
    assert!(matches!(
        probe(&amr[..amr.len() - 3], &opts()),
        Err(ProbeError::Truncated { .. })
    ));
}

/// FFmpeg-made inputs of every other supported kind, probed against
/// ffprobe's own reading. Skipped when FFmpeg is not installed.
#[test]
fn ffmpeg_made_inputs_probe_like_ffprobe_says() {
    let Some(dir) = tool_dir("ffmpeg") else {
        println!("SKIP: ffmpeg not installed; MP3/M4A/FLAC/ADTS/fMP4 inputs not tested");
        return;
    };
    // (file, ffmpeg arguments, container, codec, how far from 4.2 s).
    let cases: &[(&str, &[&str], Container, Codec, u64)] = &[
        // The LAME tag's delay and padding are removed.
        (
            "a.mp3",
            &["-c:a", "libmp3lame", "-b:a", "64k"],
            Container::Mp3,
            Codec::Mp3,
            2,
        ),
        // The edit list removes AAC priming and padding.
        (
            "a.m4a",
            &["-c:a", "aac", "-b:a", "64k"],
            Container::Mp4,
            Codec::Aac,
            2,
        ),
        // …and the Opus pre-skip.
        (
            "opus.mp4",
            &["-c:a", "libopus", "-b:a", "24k"],
            Container::Mp4,
            Codec::Opus,
            2,
        ),
        // Safari's MediaRecorder writes fragmented MP4; without an edit
        // list the 1024 samples of priming count (as ffprobe counts them).
        (
            "frag.mp4",
            &[
                "-c:a",
                "aac",
                "-movflags",
                "frag_keyframe+empty_moov+default_base_moof",
            ],
            Container::Mp4,
            Codec::Aac,
            25,
        ),
        (
            "a.aac",
            &["-c:a", "aac", "-f", "adts"],
            Container::Adts,
            Codec::Aac,
            25,
        ),
        ("a.flac", &["-c:a", "flac"], Container::Flac, Codec::Flac, 0),
        (
            "a.wav",
            &["-c:a", "pcm_s16le"],
            Container::Wav,
            Codec::Pcm("pcm_s16le"),
            0,
        ),
        (
            "a.webm",
            &["-c:a", "libopus", "-b:a", "24k"],
            Container::Webm,
            Codec::Opus,
            2,
        ),
        (
            "a.ogg",
            &["-c:a", "libopus", "-b:a", "24k"],
            Container::Ogg,
            Codec::Opus,
            2,
        ),
        (
            "vorbis.ogg",
            &["-c:a", "libvorbis"],
            Container::Ogg,
            Codec::Vorbis,
            2,
        ),
    ];
    for (file, args, container, codec, tolerance) in cases {
        let path = dir.path().join(file);
        let made = Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i"])
            .arg("sine=frequency=440:sample_rate=48000:duration=4.2")
            .args(["-ac", "1"])
            .args(*args)
            .arg(&path)
            .status()
            .expect("run ffmpeg");
        if !made.success() {
            println!("SKIP: this ffmpeg cannot make {file}");
            continue;
        }
        let bytes = std::fs::read(&path).expect("read");
        let p = probe(&bytes, &opts()).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!((p.container, p.codec), (*container, *codec), "{file}");
        assert_eq!(p.channels, 1, "{file}");
        assert!(
            p.duration_ms.abs_diff(4_200) <= *tolerance,
            "{file}: {} ms",
            p.duration_ms
        );
        if *codec == Codec::Vorbis {
            assert!(p.peaks.is_empty(), "Vorbis is not decoded");
            continue;
        }
        // A sine at 1/8 of full scale: a flat waveform near 32.
        let (lo, hi) = (
            p.peaks.iter().copied().min().unwrap_or(0),
            p.peaks.iter().copied().max().unwrap_or(0),
        );
        assert!(lo > 20 && hi - lo < 40, "{file}: {:?}", p.peaks);
    }

    // A video without audio, in MP4.
    let path = dir.path().join("video.mp4");
    let made = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg("color=c=red:size=64x64:duration=1")
        .args(["-c:v", "libx264"])
        .arg(&path)
        .status()
        .expect("run ffmpeg");
    if made.success() {
        let e = probe(&std::fs::read(&path).expect("read"), &opts()).expect_err("video");
        assert_eq!(e.to_string(), "a video with no audio track, not audio");
    } else {
        println!("SKIP: this ffmpeg cannot make H.264 video");
    }
}
