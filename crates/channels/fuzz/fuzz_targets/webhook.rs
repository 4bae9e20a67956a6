//! Any bytes as a webhook (method, query, the headers providers read, body;
//! see `telenet_channels::fuzzing::FuzzWebhook::decode`) through every
//! built-in provider's handshake, verification and parser. Each must answer
//! or refuse, never panic. Seed the corpus with
//! `telenet_channels::fuzzing::signed_seed` of the samples in
//! `crates/channels/tests/fixtures/`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use telenet_channels::{Registry, fuzzing};

fuzz_target!(|data: &[u8]| {
    let registry = Registry::builtin();
    for provider in registry.providers() {
        if let (Some(served), Some(channel)) = (registry.get(provider), fuzzing::channel_for(provider)) {
            fuzzing::run(served, &channel, data);
        }
    }
});
