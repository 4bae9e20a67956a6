//! `cargo bench -p telenet-audio --bench transcode`: a 5-minute speech-like
//! voice note through every profile, against the `ffmpeg` command line.
//!
//! The notes are made here: synthetic speech ([`encode::synth`]) encoded by
//! FFmpeg as Chrome records it (WebM/Opus, 32 kb/s, 20 ms frames, voip);
//! two of 5 minutes, one of a minute (one WeChat part).
//! Each step runs `BENCH_RUNS` times (default 5) after one warm-up; the
//! median is reported. FFmpeg runs as a process reading and writing files,
//! as an operator would run it. Prints a Markdown table (the figures in
//! docs/benchmarks.md come from it). `BENCH_AAC_QUALITY=1` instead scores
//! FFmpeg's AAC coders on the note (ADR 0010).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use telenet_audio::encode::{self, Options};
use telenet_audio::probe::ProbeOptions;
use telenet_audio::profiles::{self, Profile};
use telenet_media::{Config, LocalDirStore, MIGRATIONS, MediaService, TranscodeConfig};
use telenet_proto::media::v1::media_client::MediaClient;
use telenet_proto::media::v1::upload_request::Part;
use telenet_proto::media::v1::{TranscodeRequest, UploadHeader, UploadRequest, VariantState};
use telenet_store::{Db, testing};
use tokio_stream::wrappers::TcpListenerStream;

#[path = "transcode/quality.rs"]
mod quality;

fn runs() -> usize {
    std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(5)
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// Median of `runs()` timed calls after one untimed one.
fn time<T>(mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut last = f();
    let mut times = Vec::new();
    for _ in 0..runs() {
        let start = Instant::now();
        last = f();
        times.push(start.elapsed());
    }
    (median(times), last)
}

/// Run a command to completion, panicking with its stderr on failure.
fn run(mut cmd: impl std::borrow::BorrowMut<Command>) {
    let cmd = cmd.borrow_mut();
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ffmpeg(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("ffmpeg");
    c.current_dir(dir)
        .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-y"])
        .args(args);
    c
}

fn secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

struct Row {
    step: String,
    ours: Duration,
    theirs: Option<(Duration, String)>,
    note: String,
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    println!("making the notes…");
    let webm = make_note(dir, "note", 300.0, 1);
    let webm2 = make_note(dir, "note2", 300.0, 2);
    let webm60 = make_note(dir, "note60", 60.0, 3);
    if std::env::var_os("BENCH_AAC_QUALITY").is_some() {
        aac_quality(dir, &webm);
        return;
    }
    println!(
        "note: {} bytes WebM/Opus, 300 s; {} runs per step (median)\n",
        webm.len(),
        runs()
    );

    let mut rows = Vec::new();
    let options = Options::default();

    // Remux.
    let probe_opts = ProbeOptions::VOICE_NOTE.with_peaks(0);
    let (ours, remuxed) =
        time(|| telenet_audio::remux::to_ogg_opus(&webm, &probe_opts).expect("remux"));
    let (theirs, _) = time(|| {
        run(ffmpeg(
            dir,
            &["-i", "note.webm", "-c:a", "copy", "copy.ogg"],
        ))
    });
    rows.push(Row {
        step: "remux WebM → Ogg/Opus".into(),
        ours,
        theirs: Some((theirs, "`ffmpeg -i note.webm -c:a copy out.ogg`".into())),
        note: format!("{} bytes", remuxed.data.len()),
    });

    // Decode alone (the first half of every re-encode).
    let (decode, _) =
        time(|| encode::decode(&webm, options.max_input_ms, &options.tools).expect("decode"));
    let (ff_decode, _) = time(|| run(ffmpeg(dir, &["-i", "note.webm", "-f", "null", "-"])));
    rows.push(Row {
        step: "decode only (libopus 1.6 / FFmpeg's Opus decoder)".into(),
        ours: decode,
        theirs: Some((ff_decode, "`ffmpeg -i note.webm -f null -`".into())),
        note: String::new(),
    });

    // Every re-encode profile, and the same output from the ffmpeg CLI.
    for profile in profiles::PROFILES {
        if profile.name == profiles::OGG_OPUS_REMUX {
            continue;
        }
        let (ours, out) = time(|| profiles::transcode(&webm, profile).expect(profile.name));
        let size: usize = out.parts.iter().map(|p| p.data.len()).sum();
        let (theirs_cmd, theirs_args) = ffmpeg_equivalent(profile, &out);
        let (theirs, _) = time(|| {
            let mut c = if theirs_cmd == "sh" {
                let mut c = Command::new("sh");
                c.current_dir(dir).arg("-c").arg(&theirs_args[0]);
                c
            } else {
                ffmpeg(
                    dir,
                    &theirs_args.iter().map(String::as_str).collect::<Vec<_>>(),
                )
            };
            run(&mut c)
        });
        let shown = if theirs_cmd == "sh" {
            format!("`{}`", theirs_args[0])
        } else {
            format!("`ffmpeg {}`", theirs_args.join(" "))
        };
        rows.push(Row {
            step: format!(
                "`{}`{}",
                profile.name,
                if out.remuxed { " (remuxed)" } else { "" }
            ),
            ours,
            theirs: Some((theirs, shown)),
            note: format!("{} part(s), {size} bytes", out.parts.len()),
        });
    }

    // A note of a minute or less is one WeChat part: AMR is encoded while
    // the note is decoded.
    let amr = profiles::find("voice-amr").expect("voice-amr");
    let (ours, out) = time(|| profiles::transcode(&webm60, amr).expect("voice-amr"));
    let size: usize = out.parts.iter().map(|p| p.data.len()).sum();
    let amr_60 = "ffmpeg -nostdin -v error -y -i note60.webm -ar 8000 -ac 1 -f wav - | sox -V1 -t wav - -t amr-nb -C 7 o60.amr";
    let (theirs, _) = time(|| run(Command::new("sh").current_dir(dir).arg("-c").arg(amr_60)));
    rows.push(Row {
        step: "`voice-amr`, 60 s note".into(),
        ours,
        theirs: Some((theirs, format!("`{amr_60}`"))),
        note: format!("{} part(s), {size} bytes", out.parts.len()),
    });

    // Whole requests through the media service (gRPC Transcode, wait for
    // READY), a fresh service each run so nothing is cached.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    for name in ["voice-ogg-opus", "audio-m4a-aac", "audio-mp3"] {
        let times: Vec<Duration> = (0..runs())
            .map(|_| rt.block_on(service_request(&[&webm], name, 2)))
            .collect();
        rows.push(Row {
            step: format!("whole request, `{name}` (upload excluded)"),
            ours: median(times),
            theirs: None,
            note: "gRPC Transcode, wait_ms until READY".into(),
        });
    }

    // Two notes at once on a pool of 2 workers, against one alone.
    let one: Vec<Duration> = (0..runs())
        .map(|_| rt.block_on(service_request(&[&webm], "voice-ogg-opus", 2)))
        .collect();
    let two: Vec<Duration> = (0..runs())
        .map(|_| rt.block_on(service_request(&[&webm, &webm2], "voice-ogg-opus", 2)))
        .collect();
    let ff_two = time(|| {
        run(Command::new("sh").current_dir(dir).arg("-c").arg(
            "ffmpeg -nostdin -v error -y -i note.webm -c:a libopus -b:a 11700 -ac 1 -application voip a.ogg & \
             ffmpeg -nostdin -v error -y -i note2.webm -c:a libopus -b:a 11700 -ac 1 -application voip b.ogg & wait",
        ))
    })
    .0;
    rows.push(Row {
        step: "two notes at once, `voice-ogg-opus`, 2 workers".into(),
        ours: median(two),
        theirs: Some((ff_two, "two `ffmpeg … libopus` processes at once".into())),
        note: format!("one note alone: {} s", secs(median(one))),
    });

    // The same for AAC, whose encoder reads the note while it is decoded:
    // a job's decoding overlaps its encoder process.
    let one: Vec<Duration> = (0..runs())
        .map(|_| rt.block_on(service_request(&[&webm], "audio-m4a-aac", 2)))
        .collect();
    let two: Vec<Duration> = (0..runs())
        .map(|_| rt.block_on(service_request(&[&webm, &webm2], "audio-m4a-aac", 2)))
        .collect();
    let ff_two = time(|| {
        run(Command::new("sh").current_dir(dir).arg("-c").arg(
            "ffmpeg -nostdin -v error -y -i note.webm -c:a aac -b:a 64k -ac 1 -movflags +faststart a.m4a & \
             ffmpeg -nostdin -v error -y -i note2.webm -c:a aac -b:a 64k -ac 1 -movflags +faststart b.m4a & wait",
        ))
    })
    .0;
    rows.push(Row {
        step: "two notes at once, `audio-m4a-aac`, 2 workers".into(),
        ours: median(two),
        theirs: Some((ff_two, "two `ffmpeg … aac` processes at once".into())),
        note: format!("one note alone: {} s", secs(median(one))),
    });

    println!("| step | ours (s) | ffmpeg CLI (s) | speed-up | ffmpeg command | output |");
    println!("|---|---|---|---|---|---|");
    for r in rows {
        let (theirs, ratio, cmd) = match &r.theirs {
            Some((t, cmd)) => (
                secs(*t),
                format!("{:.1}×", t.as_secs_f64() / r.ours.as_secs_f64()),
                cmd.clone(),
            ),
            None => ("".into(), "".into(), "".into()),
        };
        println!(
            "| {} | {} | {theirs} | {ratio} | {cmd} | {} |",
            r.step,
            secs(r.ours),
            r.note
        );
    }
}

/// `BENCH_AAC_QUALITY=1`: FFmpeg's AAC coders at 64 kb/s mono on the
/// 5-minute note, timed and scored against the note ([`quality`]): fed the
/// note itself, and fed the note as the service does (decoded from the
/// WebM/Opus recording), still scored against the original speech.
fn aac_quality(dir: &Path, webm: &[u8]) {
    let options = Options::default();
    let source = read_s16le(&dir.join("note.pcm"));
    let recorded = encode::decode(webm, options.max_input_ms, &options.tools).expect("decode");
    std::fs::write(dir.join("recorded.pcm"), recorded.to_s16le()).expect("write pcm");
    let coders: [(&str, &[&str]); 3] = [
        ("`twoloop` (FFmpeg's default)", &["-aac_coder", "twoloop"]),
        ("`fast`", &["-aac_coder", "fast"]),
        (
            "`fast`, 13 kHz band (ours)",
            &["-aac_coder", "fast", "-cutoff", "13000"],
        ),
    ];
    println!(
        "| input | coder | encode (s) | bytes | SNR (dB) | segSNR (dB) | fwSNRseg (dB) | LSD (dB) | holes | holes 4–8 kHz |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let row = |input: &str, coder: &str, encode: &str, bytes: &str, s: quality::Scores| {
        println!(
            "| {input} | {coder} | {encode} | {bytes} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} % | {:.2} % |",
            s.snr_db, s.seg_snr_db, s.fw_snr_seg_db, s.lsd_db, s.holes_pct, s.holes_4_8k_pct
        );
    };
    let decoded = quality::compare(&source, &recorded.samples, 48_000);
    row(
        "the recording",
        "WebM/Opus 32 kb/s",
        "",
        &webm.len().to_string(),
        decoded,
    );
    for (input, pcm) in [
        ("the note", "note.pcm"),
        ("the recording, decoded", "recorded.pcm"),
    ] {
        for (coder, args) in coders {
            let mut encode = vec!["-threads", "1", "-f", "s16le", "-ar", "48000", "-ac", "1"];
            encode.extend(["-i", pcm, "-c:a", "aac"]);
            encode.extend(args);
            encode.extend(["-b:a", "64000", "-ac", "1", "-f", "ipod", "q.m4a"]);
            let (took, _) = time(|| run(ffmpeg(dir, &encode)));
            let bytes = std::fs::metadata(dir.join("q.m4a")).expect("q.m4a").len();
            run(ffmpeg(
                dir,
                &[
                    "-i", "q.m4a", "-f", "s16le", "-ac", "1", "-ar", "48000", "q.pcm",
                ],
            ));
            let scores = quality::compare(&source, &read_s16le(&dir.join("q.pcm")), 48_000);
            row(input, coder, &secs(took), &bytes.to_string(), scores);
        }
    }
}

fn read_s16le(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .expect("read pcm")
        .chunks_exact(2)
        .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
        .collect()
}

/// A note of `seconds` of [`encode::synth::speech_like`] audio, encoded by
/// FFmpeg as Chrome records (`{name}.webm` in `dir`, also returned).
fn make_note(dir: &Path, name: &str, seconds: f64, seed: u64) -> Vec<u8> {
    let pcm = encode::synth::speech_like(seconds, 48_000, seed);
    let raw = format!("{name}.pcm");
    let webm = format!("{name}.webm");
    std::fs::write(dir.join(&raw), pcm.to_s16le()).expect("write pcm");
    run(ffmpeg(
        dir,
        &[
            "-f",
            "s16le",
            "-ar",
            "48000",
            "-ac",
            "1",
            "-i",
            &raw,
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
            &webm,
        ],
    ));
    std::fs::read(dir.join(&webm)).expect("read note")
}

/// The ffmpeg command line making what `profile` made (same codec, bit
/// rate, rate, channels), reading note.webm.
fn ffmpeg_equivalent(profile: &Profile, out: &profiles::Transcoded) -> (&'static str, Vec<String>) {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    match profile.name {
        "voice-ogg-opus" => {
            // The bit rate ours chose for 300 s under 512 KB.
            let bps = encode::opus_bitrate_for(300_000, profile.target_max_bytes, encode::OPUS_MIN_BITRATE_BPS, profile.bitrate);
            let _ = out;
            ("ffmpeg", s(&["-i", "note.webm", "-c:a", "libopus", "-b:a", &bps.to_string(), "-ac", "1", "-application", "voip", "o.ogg"]))
        }
        "audio-m4a-aac" | "audio-web-playback" => (
            "ffmpeg",
            s(&["-i", "note.webm", "-c:a", "aac", "-b:a", "64k", "-ac", "1", "-movflags", "+faststart", "o.m4a"]),
        ),
        "audio-mp3" => ("ffmpeg", s(&["-i", "note.webm", "-c:a", "libmp3lame", "-b:a", "64k", "-ac", "1", "o.mp3"])),
        "voice-mp3-parts" => (
            "ffmpeg",
            s(&[
                "-i", "note.webm", "-c:a", "libmp3lame", "-b:a", "32k", "-ar", "24000", "-ac", "1", "-f", "segment",
                "-segment_time", "60", "p%d.mp3",
            ]),
        ),
        // Debian's FFmpeg has no AMR-NB encoder: decode with FFmpeg, encode
        // with SoX, as an operator would.
        "voice-amr" => (
            "sh",
            vec!["ffmpeg -nostdin -v error -y -i note.webm -ar 8000 -ac 1 -f wav - | sox -V1 -t wav - -t amr-nb -C 7 o.amr".into()],
        ),
        "video-still-mp4" => (
            "ffmpeg",
            s(&[
                "-f", "lavfi", "-i", "color=c=0x1f2933:s=640x360:r=5", "-i", "note.webm", "-map", "0:v", "-map", "1:a",
                "-shortest", "-c:v", "libx264", "-preset", "veryfast", "-tune", "stillimage", "-pix_fmt", "yuv420p",
                "-c:a", "aac", "-b:a", "64k", "-ac", "1", "-movflags", "+faststart", "o.mp4",
            ]),
        ),
        other => panic!("no ffmpeg equivalent for {other}"),
    }
}

/// Time a Transcode request (wait until READY) for each note at once, on a
/// fresh service with `workers` workers; the notes are uploaded first
/// (not timed).
async fn service_request(notes: &[&[u8]], profile: &str, workers: usize) -> Duration {
    let tmp = tempfile::tempdir().expect("tempdir");
    let db = Db::connect(&testing::sqlite_in(tmp.path(), "media"), "media")
        .await
        .expect("db");
    db.migrate(&MIGRATIONS).await.expect("migrate");
    let blob_dir = tmp.path().join("blobs");
    let store = LocalDirStore::new(&blob_dir).await.expect("store");
    let config = Config {
        blob_dir,
        transcode: TranscodeConfig {
            workers,
            ..TranscodeConfig::default()
        },
        ..Config::default()
    };
    let service = MediaService::with_store(db, config, Arc::new(store)).expect("service");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let grpc = service.grpc();
    let server = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(grpc)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    let client = MediaClient::connect(format!("http://{addr}"))
        .await
        .expect("client");
    let mut ids = Vec::new();
    for note in notes {
        let mut messages = vec![UploadRequest {
            part: Some(Part::Header(UploadHeader {
                workspace_id: "bench".into(),
                mime_type: "audio/webm".into(),
                size_bytes: note.len() as u64,
            })),
        }];
        messages.extend(note.chunks(1 << 20).map(|c| UploadRequest {
            part: Some(Part::Chunk(c.to_vec())),
        }));
        ids.push(
            client
                .clone()
                .upload(tokio_stream::iter(messages))
                .await
                .expect("upload")
                .into_inner()
                .id,
        );
    }
    let start = Instant::now();
    let requests = ids.into_iter().map(|id| {
        let mut client = client.clone();
        let profile = profile.to_owned();
        tokio::spawn(async move {
            client
                .transcode(TranscodeRequest {
                    workspace_id: "bench".into(),
                    blob_id: id,
                    profile,
                    wait_ms: 30_000,
                })
                .await
        })
    });
    for r in futures::future::join_all(requests).await {
        let v = r.expect("join").expect("transcode").into_inner();
        assert_eq!(v.state, VariantState::Ready as i32, "{v:?}");
    }
    let elapsed = start.elapsed();
    server.abort();
    elapsed
}
