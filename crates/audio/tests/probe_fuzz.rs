//! A bounded, deterministic stand-in for the cargo-fuzz targets
//! (`crates/audio/fuzz/`, nightly only): every truncation of the
//! recordings, thousands of mutations of them and of generated files, and
//! random bytes behind each container's magic go through the probe and the
//! remux. Each must return (an answer or an error) without panicking and
//! within a time limit; a case that fails is written to a file and named.
//!
//! `PROBE_FUZZ_CASES` (default 1000 mutations per input) and
//! `PROBE_FUZZ_SEED` change the run.

mod probe_support;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use probe_support::{WebmSpec, ebml_webm, opus_ogg, wav_pcm16};
use telenet_audio::probe::{ProbeOptions, probe};
use telenet_audio::remux;

/// Longest one probe + remux may take (debug build, shared CPU).
const PER_CASE: Duration = Duration::from_secs(10);

fn fixtures() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/media"
    ));
    [
        "source_ogg_opus_ptb.ogg",
        "derived_webm_opus_with_duration.webm",
        "derived_webm_opus_live_no_duration.webm",
    ]
    .into_iter()
    .map(|name| {
        let bytes = std::fs::read(dir.join(name))
            .unwrap_or_else(|e| panic!("fixture {}: {e}", dir.join(name).display()));
        (name.to_owned(), bytes)
    })
    .collect()
}

fn generated() -> Vec<(String, Vec<u8>)> {
    let tone: Vec<i16> = (0..4_000).map(|i| ((i % 40) as i16 - 20) * 800).collect();
    let mut amr = b"#!AMR\n".to_vec();
    for _ in 0..20 {
        amr.push(7 << 3 | 0x04);
        amr.extend_from_slice(&[0x3C; 31]);
    }
    let packets: Vec<Vec<u8>> = (0..30u8).map(|i| vec![31 << 3, i, 0x55]).collect();
    vec![
        ("generated.wav".into(), wav_pcm16(8_000, 1, &tone)),
        ("generated.amr".into(), amr),
        (
            "generated.webm".into(),
            ebml_webm(&WebmSpec {
                packets: packets.clone(),
                discard_padding_ns: 5_000_000,
                xiph_lace_first: 3,
                ..WebmSpec::default()
            }),
        ),
        ("generated.ogg".into(), opus_ogg(&packets, 312)),
    ]
}

/// Short MP3, M4A and fragmented MP4 files from FFmpeg, when installed, for
/// the symphonia side and the MP4 edit-list reader.
fn ffmpeg_made() -> Vec<(String, Vec<u8>)> {
    let Ok(dir) = tempfile::tempdir() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (file, args) in [
        ("ffmpeg.mp3", &["-c:a", "libmp3lame"][..]),
        ("ffmpeg.m4a", &["-c:a", "aac"][..]),
        (
            "ffmpeg-frag.mp4",
            &["-c:a", "aac", "-movflags", "frag_keyframe+empty_moov"][..],
        ),
    ] {
        let path = dir.path().join(file);
        let made = std::process::Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i"])
            .arg("sine=frequency=300:sample_rate=16000:duration=0.5")
            .args(args)
            .arg(&path)
            .status();
        match (made, std::fs::read(&path)) {
            (Ok(status), Ok(bytes)) if status.success() => out.push((file.to_owned(), bytes)),
            _ => println!("SKIP: no {file} (ffmpeg missing or unable)"),
        }
    }
    out
}

/// Random bytes behind the magic of every container the probe sniffs.
fn magics() -> Vec<&'static [u8]> {
    vec![
        b"\x1A\x45\xDF\xA3",
        b"\x1A\x45\xDF\xA3\x9F\x42\x86\x81\x01\x42\x82\x84webm",
        b"OggS\x00\x02",
        b"\0\0\0\x20ftypM4A \0\0\0\0",
        b"RIFF\x24\0\0\0WAVEfmt ",
        b"#!AMR\n",
        b"#!AMR-WB\n",
        b"ID3\x04\0\0\0\0\0\0",
        b"fLaC",
        b"\xFF\xFB\x90\x64",
        b"\xFF\xF1\x50\x80",
    ]
}

/// One case, run on a worker thread so a hang is caught as a timeout.
type Case = (String, Vec<u8>);

#[test]
fn probe_and_remux_survive_truncation_mutation_and_noise() {
    let seed = std::env::var("PROBE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x07E1_E4E7_u64);
    let per_input: usize = std::env::var("PROBE_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000);
    let mut rng = fastrand::Rng::with_seed(seed);
    // (name, bytes, share of the cases): symphonia decodes slowly in debug
    // builds, so FFmpeg's files get a quarter.
    let mut inputs: Vec<(String, Vec<u8>, usize)> = fixtures()
        .into_iter()
        .chain(generated())
        .map(|(n, b)| (n, b, 4))
        .collect();
    inputs.extend(ffmpeg_made().into_iter().map(|(n, b)| (n, b, 1)));

    let (case_tx, case_rx) = mpsc::channel::<Case>();
    let (done_tx, done_rx) = mpsc::channel::<Result<(), String>>();
    let worker = std::thread::spawn(move || {
        for (name, bytes) in case_rx {
            let outcome = catch_unwind(AssertUnwindSafe(|| exercise(&bytes)))
                .map_err(|_| write_failure(&name, &bytes));
            if done_tx.send(outcome).is_err() {
                return;
            }
        }
    });
    let run = |name: String, bytes: Vec<u8>| {
        let started = Instant::now();
        case_tx
            .send((name.clone(), bytes.clone()))
            .expect("worker alive");
        match done_rx.recv_timeout(PER_CASE) {
            Ok(Ok(())) => {}
            Ok(Err(file)) => panic!("{name} panicked; input saved to {file}"),
            Err(_) => panic!(
                "{name} did not finish within {PER_CASE:?}; input saved to {}",
                write_failure(&name, &bytes)
            ),
        }
        started.elapsed()
    };

    let mut cases = 0usize;
    let mut slowest = Duration::ZERO;
    for (name, bytes, share) in &inputs {
        // Every prefix of small inputs, evenly spaced ones of larger.
        let step = (bytes.len() * 4 / (1_500 * share)).max(1);
        for len in (0..bytes.len()).step_by(step) {
            slowest = slowest.max(run(format!("{name} cut at {len}"), bytes[..len].to_vec()));
            cases += 1;
        }
        for i in 0..per_input * share / 4 {
            let mutated = mutate(&mut rng, bytes);
            slowest = slowest.max(run(format!("{name} mutation {i} (seed {seed})"), mutated));
            cases += 1;
        }
    }
    for magic in magics() {
        for i in 0..200 {
            let mut bytes = magic.to_vec();
            let len = rng.usize(0..2_000);
            bytes.extend((0..len).map(|_| rng.u8(..)));
            slowest = slowest.max(run(format!("noise {i} after {magic:?}"), bytes));
            cases += 1;
        }
    }
    drop(case_tx);
    worker.join().expect("worker");
    println!("{cases} cases, slowest {slowest:?}");
}

/// Probe (with and without the waveform) and remux; only panics matter.
fn exercise(bytes: &[u8]) {
    let options = ProbeOptions::VOICE_NOTE;
    let _ = probe(bytes, &options);
    let _ = probe(bytes, &options.with_peaks(0));
    if let Ok(out) = remux::to_ogg_opus(bytes, &options) {
        // A remux that succeeds must produce a file that probes, as long as
        // the remux said.
        match probe(&out.data, &options.with_peaks(0)) {
            Ok(p) => assert_eq!(p.duration_ms, out.duration_ms, "remuxed duration"),
            Err(e) => panic!("remuxed output does not probe: {e}"),
        }
    }
}

/// One random change: flipped bits, overwritten, inserted, deleted or
/// duplicated bytes, or a size-like field set to extremes.
fn mutate(rng: &mut fastrand::Rng, input: &[u8]) -> Vec<u8> {
    let mut b = input.to_vec();
    if b.is_empty() {
        return b;
    }
    for _ in 0..rng.usize(1..4) {
        let at = rng.usize(0..b.len());
        match rng.u8(0..6) {
            0 => b[at] ^= 1 << rng.u8(0..8),
            1 => {
                let n = rng.usize(1..16).min(b.len() - at);
                for x in &mut b[at..at + n] {
                    *x = rng.u8(..);
                }
            }
            2 => {
                let n = rng.usize(1..64);
                let junk: Vec<u8> = (0..n).map(|_| rng.u8(..)).collect();
                b.splice(at..at, junk);
            }
            3 => {
                let n = rng.usize(1..64).min(b.len() - at);
                b.drain(at..at + n);
            }
            4 => {
                let n = rng.usize(1..256).min(b.len() - at);
                let chunk = b[at..at + n].to_vec();
                let to = rng.usize(0..=b.len());
                b.splice(to..to, chunk);
            }
            _ => {
                let v = if rng.bool() { 0xFF } else { 0x00 };
                let n = rng.usize(1..9).min(b.len() - at);
                for x in &mut b[at..at + n] {
                    *x = v;
                }
            }
        }
        if b.is_empty() {
            break;
        }
    }
    b
}

/// Save a failing input for reproduction; returns its path.
fn write_failure(name: &str, bytes: &[u8]) -> String {
    let safe: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let path = std::env::temp_dir().join(format!("probe-fuzz-{safe}.bin"));
    match std::fs::write(&path, bytes) {
        Ok(()) => path.display().to_string(),
        Err(e) => format!("(not saved: {e})"),
    }
}
