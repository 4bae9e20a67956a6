//! Any bytes through the WebM/Ogg → Ogg/Opus remux; whatever it writes must
//! probe as Ogg/Opus with the duration the remux reported.
#![no_main]

use libfuzzer_sys::fuzz_target;
use telenet_audio::probe::{ProbeOptions, probe};
use telenet_audio::remux;

fuzz_target!(|data: &[u8]| {
    let options = ProbeOptions::VOICE_NOTE.with_peaks(0);
    if let Ok(out) = remux::to_ogg_opus(data, &options) {
        match probe(&out.data, &options) {
            Ok(p) => assert_eq!(p.duration_ms, out.duration_ms, "remuxed duration"),
            Err(e) => panic!("remuxed output does not probe: {e}"),
        }
    }
});
