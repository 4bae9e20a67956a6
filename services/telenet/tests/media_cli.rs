//! `telenet media probe | transcode | profiles`: what an operator runs on a
//! customer's voice note, with the service's own code.

use std::path::PathBuf;
use std::process::{Command, Output};

fn telenet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_telenet"))
        .arg("media")
        .args(args)
        .output()
        .expect("telenet runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The browser-style recording of the fixtures (no Duration element).
fn live_webm() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/media/derived_webm_opus_live_no_duration.webm"
    ))
}

#[test]
fn probe_prints_format_codec_duration_size_and_peaks() {
    let webm = live_webm();
    let webm = webm.to_str().expect("utf-8 path");
    let o = telenet(&["probe", webm]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    for line in [
        "format:    webm (audio/webm; codecs=opus)",
        "codec:     opus, 48000 Hz, 1 channel",
        "duration:  3.444 s (counted from 58 packets)",
        "size:      7557 bytes",
        "peaks:     64 of 54 ms",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }

    let o = telenet(&["probe", webm, "--json", "--peaks", "16"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(json["duration_ms"], 3444);
    assert_eq!(json["codec"], "opus");
    assert_eq!(json["peaks"].as_array().map(Vec::len), Some(16));
}

#[test]
fn transcode_remuxes_to_ogg_and_checks_what_it_wrote() {
    let webm = live_webm();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("note.ogg");
    let o = telenet(&[
        "transcode",
        webm.to_str().expect("utf-8 path"),
        "--profile",
        "ogg-opus-remux",
        "-o",
        out.to_str().expect("utf-8 path"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("remuxed; ogg/opus 3.444 s"),
        "{}",
        stdout(&o)
    );
    let bytes = std::fs::read(&out).expect("output written");
    assert!(bytes.starts_with(b"OggS"));

    // The output probes as Ogg/Opus with the same duration.
    let o = telenet(&["probe", out.to_str().expect("utf-8 path")]);
    assert!(stdout(&o).contains("format:    ogg (audio/ogg; codecs=opus)"));
    assert!(stdout(&o).contains("duration:  3.444 s"));
}

#[test]
fn bad_input_and_unknown_profiles_fail_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = dir.path().join("note.ogg");
    std::fs::write(&text, "not really a voice note\n").expect("write");
    let text = text.to_str().expect("utf-8 path");

    let o = telenet(&["probe", text]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("a text file, not audio"),
        "{}",
        stderr(&o)
    );

    let o = telenet(&["transcode", text, "--profile", "nope", "-o", "/dev/null"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no profile named \"nope\""),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("voice-ogg-opus"), "{}", stderr(&o));

    let o = telenet(&["probe", "/nonexistent/voice.webm"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("opening /nonexistent/voice.webm"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn profiles_lists_profiles_and_the_channels_using_them() {
    let o = telenet(&["profiles"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let row = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
            .to_owned()
    };
    assert!(row("voice-ogg-opus").ends_with("whatsapp, telegram"));
    assert!(row("voice-amr").contains(" 60 "), "{}", row("voice-amr"));
    assert!(row("wechat").contains("voice-amr, voice-mp3-parts"));
    assert!(row("sms").contains("link"));
}
