//! A bounded, deterministic fuzz test of every request body, query and path
//! (the longer, coverage-guided runs are the cargo-fuzz target in
//! `services/gateway/fuzz/`, see docs/api-testing.md). Cases are built from
//! a seed: valid bodies and queries of each operation with values replaced,
//! removed, added, retyped, nested and truncated; ids of every shape; forms
//! with parts in any order; raw bytes; and the cases of the cargo-fuzz
//! target's decoder from random bytes. Each must be answered as
//! `fuzzing::Target::check` says: a clear problem when refused (and nothing
//! changed), the upstream called when accepted, never a panic or a 500.
//!
//! `GATEWAY_FUZZ_CASES` (default 10 000) and `GATEWAY_FUZZ_SEED` change the
//! run.

mod common;
mod fuzzing;

use fastrand::Rng;
use fuzzing::{Auth, CONTENT_TYPES, Case, Op, Target};
use serde_json::{Map, Value, json};

const VALID_UUID: &str = "0198a3c1-0000-7000-8000-0000000000cc";

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn file_id() -> String {
    "ab".repeat(32)
}

/// A valid body of the operation, or `None` when it takes none.
fn valid_body(op: Op) -> Option<Value> {
    let file = file_id();
    Some(match op {
        Op::SetStatus => json!({"status": "away"}),
        Op::CreateChannel => json!({
            "kind": "custom",
            "name": "Support",
            "outbound_url": "https://example.test/out",
            "secret": null,
            "accepted_voice_types": ["audio/ogg"],
        }),
        Op::SendMessage => json!({
            "text": "hola",
            "attachments": [{"file_id": file, "kind": "voice", "file_name": "note.ogg"}],
            "client_message_id": "c-1",
        }),
        Op::Assign => json!({"user_id": VALID_UUID}),
        Op::Close => json!({"closing_note": {"category": "billing", "summary": "done"}}),
        Op::CreateLink => json!({"ttl_seconds": 3600, "file_name": "note.ogg"}),
        _ => return None,
    })
}

/// The query parameters of the operation with valid values.
fn valid_query(op: Op) -> Vec<(&'static str, String)> {
    let page = || {
        vec![
            ("page_size", "50".to_owned()),
            ("page_token", "abc".to_owned()),
        ]
    };
    match op {
        Op::ListChannels | Op::ListMessages => page(),
        Op::ListConversations => {
            let mut q = vec![
                ("status", "open".to_owned()),
                ("assignee", "me".to_owned()),
                ("contact_id", VALID_UUID.to_owned()),
            ];
            q.extend(page());
            q
        }
        Op::Audio => vec![("peaks", "64".to_owned())],
        Op::DownloadLink => vec![
            ("expires", "1900000000".to_owned()),
            ("signature", "c2lnbmF0dXJl".to_owned()),
        ],
        Op::DailyVolume => vec![
            ("from", "2025-01-01".to_owned()),
            ("to", "2025-01-31".to_owned()),
            ("channel_id", VALID_UUID.to_owned()),
        ],
        _ => Vec::new(),
    }
}

fn random_string(rng: &mut Rng) -> String {
    let pool: &[&str] = &[
        "",
        " ",
        "a",
        "me",
        "any",
        "open",
        "custom",
        "voice",
        "null",
        "0",
        "-1",
        "4294967296",
        "18446744073709551616",
        "9223372036854775807",
        "-9223372036854775808",
        "1e400",
        "NaN",
        "2025-02-30",
        "0000-00-00",
        "../../etc/passwd",
        "a/b",
        "a\\b",
        "\u{0}",
        "\u{7f}\u{85}",
        "\u{202e}txt.exe",
        "😀",
        "\u{feff}",
        "%00",
        "%zz",
        "{}",
        "[]",
        VALID_UUID,
        "0198A3C1-0000-7000-8000-0000000000CC",
        "{0198a3c1-0000-7000-8000-0000000000cc}",
        "urn:uuid:0198a3c1-0000-7000-8000-0000000000cc",
        "0198a3c100007000800000000000cc",
    ];
    match rng.u8(0..6) {
        0 => file_id(),
        1 => "x".repeat(rng.usize(1..3000)),
        2 => (0..rng.usize(0..40))
            .map(|_| rng.char('\u{0}'..='\u{10ffff}'))
            .collect(),
        3 => (0..rng.usize(0..40))
            .map(|_| char::from(rng.u8(0x20..0x7f)))
            .collect(),
        _ => pool[rng.usize(0..pool.len())].to_owned(),
    }
}

fn random_value(rng: &mut Rng, depth: u32) -> Value {
    match rng.u8(0..10) {
        0 => Value::Null,
        1 => Value::Bool(rng.bool()),
        2 => json!(rng.i64(..)),
        3 => json!(rng.u64(..)),
        4 => json!(rng.f64() * 1e300 - 5e299),
        5 if depth < 4 => Value::Array(
            (0..rng.usize(0..4))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        6 if depth < 4 => {
            let mut map = Map::new();
            for _ in 0..rng.usize(0..4) {
                map.insert(random_string(rng), random_value(rng, depth + 1));
            }
            Value::Object(map)
        }
        7 => json!(rng.u32(0..2_000_000)),
        _ => Value::String(random_string(rng)),
    }
}

/// One change somewhere in `value`: a value replaced, a key removed or
/// added, an object turned into the array of its values, a list grown.
fn mutate(rng: &mut Rng, value: &mut Value, depth: u32) {
    match value {
        Value::Object(map) if !map.is_empty() && rng.u8(0..4) > 0 => {
            let keys: Vec<String> = map.keys().cloned().collect();
            let key = &keys[rng.usize(0..keys.len())];
            match rng.u8(0..6) {
                0 => {
                    map.remove(key);
                }
                1 => {
                    map.insert(random_string(rng), random_value(rng, depth));
                }
                2 => {
                    let values: Vec<Value> = map.values().cloned().collect();
                    *value = Value::Array(values);
                }
                _ => {
                    if let Some(inner) = map.get_mut(key) {
                        mutate(rng, inner, depth + 1);
                    }
                }
            }
        }
        Value::Array(items) if !items.is_empty() && rng.bool() => {
            let n = items.len();
            match rng.u8(0..3) {
                0 => {
                    let copy = items[rng.usize(0..n)].clone();
                    for _ in 0..rng.usize(1..12) {
                        items.push(copy.clone());
                    }
                }
                _ => {
                    let at = rng.usize(0..n);
                    mutate(rng, &mut items[at], depth + 1)
                }
            }
        }
        _ => *value = random_value(rng, depth),
    }
}

/// Byte-level damage: truncation, a byte changed, inserted or removed.
fn damage(rng: &mut Rng, bytes: &mut Vec<u8>) {
    if bytes.is_empty() {
        bytes.push(rng.u8(..));
        return;
    }
    let at = rng.usize(0..bytes.len());
    match rng.u8(0..4) {
        0 => bytes.truncate(at),
        1 => bytes[at] = rng.u8(..),
        2 => bytes.insert(at, rng.u8(..)),
        _ => {
            bytes.remove(at);
        }
    }
}

/// A multipart form with parts in any order, of any name and type.
fn form(rng: &mut Rng) -> (String, Vec<u8>) {
    let boundary = if rng.u8(0..10) == 0 {
        random_string(rng)
    } else {
        "fuzz-boundary".to_owned()
    };
    let mut body = Vec::new();
    for _ in 0..rng.usize(0..4) {
        let name = match rng.u8(0..5) {
            0 | 1 => "file".to_owned(),
            2 | 3 => "kind".to_owned(),
            _ => random_string(rng),
        };
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        body.extend_from_slice(
            format!("content-disposition: form-data; name=\"{name}\"; filename=\"f\"\r\n")
                .as_bytes(),
        );
        let types = [
            "audio/ogg",
            "image/png",
            "application/octet-stream",
            "text/plain",
            "",
        ];
        let part_type = types[rng.usize(0..types.len())];
        if !part_type.is_empty() {
            body.extend_from_slice(format!("content-type: {part_type}\r\n").as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        let content: Vec<u8> = match rng.u8(0..4) {
            0 => b"OggS\x00\x02".to_vec(),
            1 => b"\x89PNG\r\n\x1a\n".to_vec(),
            2 => ["voice", "image", "file", "gif", ""][rng.usize(0..5)]
                .as_bytes()
                .to_vec(),
            _ => (0..rng.usize(0..200)).map(|_| rng.u8(..)).collect(),
        };
        body.extend_from_slice(&content);
        body.extend_from_slice(b"\r\n");
    }
    if rng.u8(0..8) > 0 {
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    }
    if rng.u8(0..6) == 0 {
        damage(rng, &mut body);
    }
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// A path input for the operation: valid, almost valid, or anything.
fn path(rng: &mut Rng, op: Op) -> Vec<u8> {
    let valid = match op {
        Op::Download | Op::CreateLink | Op::Audio => file_id(),
        Op::DownloadLink => format!("{WORKSPACE}/{}/note.ogg", file_id()),
        _ => VALID_UUID.to_owned(),
    };
    let mut bytes = match rng.u8(0..6) {
        0 | 1 => valid.into_bytes(),
        2 => valid.to_uppercase().into_bytes(),
        3 => random_string(rng).into_bytes(),
        4 => (0..rng.usize(0..80)).map(|_| rng.u8(..)).collect(),
        _ => {
            let mut v = valid.into_bytes();
            damage(rng, &mut v);
            v
        }
    };
    if rng.u8(0..10) == 0 {
        damage(rng, &mut bytes);
    }
    bytes
}

const WORKSPACE: &str = common::WORKSPACE;

fn query(rng: &mut Rng, op: Op) -> Vec<u8> {
    let mut pairs: Vec<(String, String)> = valid_query(op)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    for _ in 0..rng.usize(0..4) {
        match rng.u8(0..4) {
            0 if !pairs.is_empty() => {
                let at = rng.usize(0..pairs.len());
                pairs.remove(at);
            }
            1 => pairs.push((random_string(rng), random_string(rng))),
            _ if !pairs.is_empty() => {
                let at = rng.usize(0..pairs.len());
                pairs[at].1 = random_string(rng);
            }
            _ => {}
        }
    }
    let mut text = pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
        .into_bytes();
    // The separators themselves, misplaced.
    if rng.u8(0..10) == 0 {
        text.extend_from_slice([&b"&"[..], b"=", b"&&==", b"=&"][rng.usize(0..4)]);
    }
    text
}

fn body(rng: &mut Rng, op: Op) -> (Option<String>, Vec<u8>) {
    if op == Op::Upload && rng.u8(0..5) > 0 {
        let (content_type, body) = form(rng);
        return (Some(content_type), body);
    }
    let content_type = if rng.u8(0..8) == 0 {
        CONTENT_TYPES[rng.usize(0..CONTENT_TYPES.len())].map(str::to_owned)
    } else {
        Some("application/json".to_owned())
    };
    let bytes = match (valid_body(op), rng.u8(0..10)) {
        (_, 0) => (0..rng.usize(0..64)).map(|_| rng.u8(..)).collect(),
        (_, 1) => Vec::new(),
        (None, _) => serde_json::to_vec(&random_value(rng, 0)).unwrap_or_default(),
        (Some(mut value), _) => {
            for _ in 0..rng.usize(0..4) {
                mutate(rng, &mut value, 0);
            }
            let mut bytes = serde_json::to_vec(&value).unwrap_or_default();
            if rng.u8(0..8) == 0 {
                damage(rng, &mut bytes);
            }
            bytes
        }
    };
    (content_type, bytes)
}

fn range(rng: &mut Rng) -> Vec<u8> {
    let pool = [
        "bytes=0-99",
        "bytes=-500",
        "bytes=100-",
        "bytes=0-18446744073709551615",
        "bytes=18446744073709551615-",
        "bytes=-18446744073709551615",
        "bytes=-0",
        "bytes=5-1",
        "bytes=0-1,2-3",
        "items=0-1",
        "bytes=99999999999999999999999-",
    ];
    match rng.u8(0..3) {
        0 => Vec::new(),
        1 => pool[rng.usize(0..pool.len())].as_bytes().to_vec(),
        _ => random_string(rng).into_bytes(),
    }
}

/// A structure-aware case.
fn generate(rng: &mut Rng) -> Case {
    let op = Op::ALL[rng.usize(0..Op::ALL.len())];
    let auth = match rng.u8(0..12) {
        0 => Auth::Agent,
        1 => Auth::None,
        2 => Auth::Unknown,
        _ => Auth::Owner,
    };
    let (content_type, body) = body(rng, op);
    Case {
        op,
        auth,
        content_type,
        path: path(rng, op),
        query: query(rng, op),
        range: if matches!(op, Op::Download | Op::DownloadLink) {
            range(rng)
        } else {
            Vec::new()
        },
        body,
    }
}

/// Checks one case on its own task, so a panic is reported with the case.
async fn run(target: &std::sync::Arc<Target>, case: Case) -> Result<(), String> {
    let task = {
        let target = target.clone();
        let case = case.clone();
        tokio::spawn(async move { target.check(&case).await })
    };
    match task.await {
        Ok(result) => result.map_err(|why| format!("{why}\n  {case:?}")),
        Err(e) if e.is_panic() => Err(format!("the gateway panicked\n  {case:?}")),
        Err(e) => Err(format!("task: {e}\n  {case:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_request_is_answered_with_a_clear_problem_or_reaches_the_upstream() {
    let cases = env_number("GATEWAY_FUZZ_CASES", 10000);
    let seed = env_number("GATEWAY_FUZZ_SEED", 20250601);
    let target = std::sync::Arc::new(Target::new().await);
    let mut rng = Rng::with_seed(seed);
    let mut failures = Vec::new();
    for n in 0..cases {
        // One case in four from the cargo-fuzz target's decoder, so it is
        // exercised on every run too.
        let case = if n % 4 == 3 {
            let bytes: Vec<u8> = (0..rng.usize(2..300))
                .map(|_| if rng.u8(0..12) == 0 { 0xff } else { rng.u8(..) })
                .collect();
            Case::from_bytes(&bytes)
        } else {
            generate(&mut rng)
        };
        if let Err(why) = run(&target, case).await {
            failures.push(why);
            if failures.len() >= 10 {
                break;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cases} cases (seed {seed}) were answered wrongly:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The checker itself catches what it is there to catch: a 500, a problem
/// that is not one, a 2xx that did not go through validation.
#[tokio::test]
async fn the_decoder_reaches_every_operation_and_the_checker_rejects_bad_answers() {
    let seen: std::collections::HashSet<String> = (0..=255u8)
        .map(|first| format!("{:?}", Case::from_bytes(&[first, 0]).op))
        .collect();
    assert_eq!(seen.len(), Op::ALL.len());

    // A known-good case and a known-refused one pass.
    let target = Target::new().await;
    let ok = Case::from_bytes(&[0, 0, 0xff, 0xff, 0xff, b'{', b'}']);
    assert_eq!(ok.op, Op::SetStatus);
    target
        .check(&ok)
        .await
        .expect("refused status is a problem");
    let mut accepted = ok.clone();
    accepted.body = br#"{"status":"away"}"#.to_vec();
    target
        .check(&accepted)
        .await
        .expect("valid status is a 200");
}
