//! Any bytes through the probe (container sniffing, the WebM/Matroska,
//! Ogg and AMR parsers, symphonia's demuxers, Opus/AAC/MP3 decoding for
//! the waveform). It must answer or refuse, never panic or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use telenet_audio::probe::{ProbeOptions, probe};

fuzz_target!(|data: &[u8]| {
    let options = ProbeOptions::VOICE_NOTE;
    let _ = probe(data, &options);
    let _ = probe(data, &options.with_peaks(0));
});
