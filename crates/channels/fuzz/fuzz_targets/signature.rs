//! Any bytes as the three Standard Webhooks headers and a body (split at
//! the first three 0xFF bytes) and as a signing secret: verification
//! answers or refuses, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use telenet_signing::Secret;

const NOW: i64 = 1_700_000_000;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(4, |&b| b == 0xFF);
    let mut text = || parts.next().map(|p| String::from_utf8_lossy(p).into_owned());
    let (id, ts, sig) = (text(), text(), text());
    let body = parts.next().unwrap_or_default();
    let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
    let _ = secret.verify(id.as_deref(), ts.as_deref(), sig.as_deref(), body, NOW);
    let _ = Secret::parse(&String::from_utf8_lossy(data));
});
