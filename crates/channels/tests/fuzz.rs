//! A bounded, deterministic stand-in for the cargo-fuzz target
//! (`crates/channels/fuzz`, nightly only): every built-in provider's
//! handshake, verification and parser get its sample payloads signed as
//! the platform signs them, then thousands of mutations of them (bit flips,
//! truncations, splices, JSON tokens, headers), generated JSON and random
//! bytes. Each must answer or refuse without panicking and within a time
//! limit; a failing input is written to a file and named.
//!
//! `CHANNELS_FUZZ_CASES` (default 2000 per seed) and `CHANNELS_FUZZ_SEED`
//! change the run.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use telenet_channels::Registry;
use telenet_channels::fuzzing::{self, FuzzWebhook};
use telenet_proto::common::v1::ChannelProvider;

/// Longest one input may take (debug build, shared CPU).
const PER_CASE: Duration = Duration::from_secs(2);

fn cases() -> usize {
    std::env::var("CHANNELS_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

fn seed() -> u64 {
    std::env::var("CHANNELS_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x07e1_e2e7)
}

/// The sample payloads of `provider` (tests/fixtures/<provider>/*.json;
/// 360dialog sends WhatsApp Cloud API bodies).
fn samples(provider: ChannelProvider) -> Vec<(String, Vec<u8>)> {
    let dir = match provider {
        ChannelProvider::Whatsapp360dialog => "whatsapp_cloud".to_owned(),
        other => telenet_channels::config::provider_name(other),
    };
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures")).join(dir);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                bytes,
            )
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no samples in {}", dir.display());
    out
}

const JSON_TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b",",
    b"\"",
    b"null",
    b"true",
    b"-1",
    b"1e999",
    b"18446744073709551616",
    b"\"\\u0000\"",
    b"\"\\ud800\"",
    b"\"type\"",
    b"\"message\"",
    b"\"status\"",
    b"\"attachments\"",
    b"\"external_id\"",
    b"\"\"",
    b"{}",
    b"[]",
    b"\"message.inbound\"",
    b"\"message.status\"",
    b"\"size_bytes\"",
    b"\"url\"",
];

fn mutate(rng: &mut fastrand::Rng, input: &[u8], corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..rng.usize(1..=4) {
        match rng.u8(0..7) {
            0 if !out.is_empty() => {
                let i = rng.usize(..out.len());
                out[i] ^= 1 << rng.u8(0..8);
            }
            1 if !out.is_empty() => out.truncate(rng.usize(..out.len())),
            2 => {
                let token = JSON_TOKENS[rng.usize(..JSON_TOKENS.len())];
                let at = rng.usize(..=out.len());
                out.splice(at..at, token.iter().copied());
            }
            3 if !out.is_empty() => {
                let a = rng.usize(..out.len());
                let b = rng.usize(a..=out.len());
                out.drain(a..b);
            }
            4 => {
                let other = &corpus[rng.usize(..corpus.len())];
                if !other.is_empty() {
                    let from = rng.usize(..other.len());
                    let at = rng.usize(..=out.len());
                    let piece = &other[from..rng.usize(from..=other.len())];
                    out.splice(at..at, piece.iter().copied());
                }
            }
            5 => {
                // A field separator somewhere: headers and body shift.
                let at = rng.usize(..=out.len());
                out.insert(at, 0xFF);
            }
            _ => {
                let at = rng.usize(..=out.len());
                let n = rng.usize(0..16);
                out.splice(at..at, (0..n).map(|_| rng.u8(..)));
            }
        }
    }
    out
}

/// Random JSON of bounded depth using the field names webhooks carry.
fn json(rng: &mut fastrand::Rng, depth: u32) -> serde_json::Value {
    use serde_json::Value;
    let keys = [
        "type",
        "message",
        "status",
        "external_id",
        "sender",
        "display_name",
        "text",
        "attachments",
        "url",
        "mime_type",
        "size_bytes",
        "file_name",
        "kind",
        "state",
        "message_external_id",
        "error",
        "object",
        "entry",
    ];
    match if depth == 0 {
        rng.u8(0..4)
    } else {
        rng.u8(0..6)
    } {
        0 => Value::Null,
        1 => Value::Bool(rng.bool()),
        2 => serde_json::json!(rng.i64(..)),
        3 => Value::String(
            [
                "message.inbound",
                "message.status",
                "",
                "delivered",
                "audio",
                "x",
            ][rng.usize(..6)]
            .to_owned(),
        ),
        4 => Value::Array((0..rng.usize(0..4)).map(|_| json(rng, depth - 1)).collect()),
        _ => Value::Object(
            (0..rng.usize(0..6))
                .map(|_| {
                    (
                        keys[rng.usize(..keys.len())].to_owned(),
                        json(rng, depth - 1),
                    )
                })
                .collect(),
        ),
    }
}

fn check(kind: ChannelProvider, label: &str, data: &[u8]) {
    let registry = Registry::builtin();
    let provider = registry.get(kind).expect("provider");
    let channel = fuzzing::channel_for(kind).expect("channel");
    let started = Instant::now();
    let outcome = catch_unwind(AssertUnwindSafe(|| fuzzing::run(provider, &channel, data)));
    let took = started.elapsed();
    if outcome.is_err() || took > PER_CASE {
        let path = std::env::temp_dir().join(format!(
            "channels-fuzz-{kind:?}-{}.bin",
            label.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
        ));
        let _ = std::fs::write(&path, data);
        panic!(
            "{kind:?} {label}: {} (input written to {}; replay with the cargo-fuzz target)",
            if outcome.is_err() {
                "panicked".to_owned()
            } else {
                format!("took {took:?}")
            },
            path.display()
        );
    }
}

#[test]
fn every_built_in_provider_is_fuzzed() {
    for kind in Registry::builtin().providers() {
        assert!(
            fuzzing::channel_for(kind).is_some(),
            "{kind:?} has no fuzz channel in telenet_channels::fuzzing::channel_for"
        );
        assert!(
            fuzzing::signed_seed(kind, b"{}").is_some(),
            "{kind:?} has no signed seed in telenet_channels::fuzzing::signed_seed"
        );
        assert!(!samples(kind).is_empty());
    }
}

/// The signed seeds are what they claim: unmutated, each passes
/// verification, so mutations start from inputs that reach the parser.
#[test]
fn signed_seeds_verify() {
    let registry = Registry::builtin();
    for kind in registry.providers() {
        let provider = registry.get(kind).expect("provider");
        let channel = fuzzing::channel_for(kind).expect("channel");
        for (name, body) in samples(kind) {
            let seed = fuzzing::signed_seed(kind, &body).expect("seed");
            let request = FuzzWebhook::decode(&seed);
            assert_eq!(request.body, body, "{name}: the seed round-trips");
            let url = format!(
                "https://telenet.example/webhooks/{}",
                fuzzing::FUZZ_CHANNEL_ID
            );
            let webhook = telenet_channels::Webhook {
                channel_id: fuzzing::FUZZ_CHANNEL_ID,
                method: &request.method,
                url: &url,
                query: &request.query,
                headers: &request.headers,
                body: &request.body,
                now: fuzzing::NOW,
            };
            provider
                .verify(&channel, &webhook)
                .unwrap_or_else(|e| panic!("{kind:?} {name}: the seed does not verify: {e}"));
        }
    }
}

#[test]
fn webhooks_of_arbitrary_bytes_are_answered_or_refused() {
    let mut rng = fastrand::Rng::with_seed(seed());
    let n = cases();
    for kind in Registry::builtin().providers() {
        let seeds: Vec<Vec<u8>> = samples(kind)
            .iter()
            .filter_map(|(_, body)| fuzzing::signed_seed(kind, body))
            .collect();
        for (i, seed) in seeds.iter().enumerate() {
            check(kind, &format!("seed-{i}"), seed);
            for case in 0..n {
                let data = mutate(&mut rng, seed, &seeds);
                check(kind, &format!("seed-{i}-case-{case}"), &data);
            }
        }
        for case in 0..n {
            let body = serde_json::to_vec(&json(&mut rng, 4)).expect("json");
            let data = match fuzzing::signed_seed(kind, &body) {
                Some(d) if rng.bool() => d,
                _ => {
                    let mut d = vec![0u8];
                    d.extend_from_slice(&body);
                    d
                }
            };
            check(kind, &format!("json-{case}"), &data);
        }
        for case in 0..n {
            let len = rng.usize(0..512);
            let data: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            check(kind, &format!("random-{case}"), &data);
        }
    }
}
