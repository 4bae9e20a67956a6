//! Hostile `webhook-signature` headers and signing secrets, generated from
//! a fixed seed (`SIGNING_FUZZ_SEED` and `SIGNING_FUZZ_CASES` change the
//! run; the cargo-fuzz target `signature` in `crates/channels/fuzz` runs
//! it for longer): verification never panics, a right signature among up
//! to `MAX_SIGNATURES` candidates of any kind is accepted wherever it
//! stands, any change to it is refused, and more candidates than the cap
//! are refused before any is checked.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use telenet_signing::{MAX_SIGNATURES, Secret, SignatureError, TOLERANCE_SECS};

const NOW: i64 = 1_700_000_000;

fn cases() -> usize {
    std::env::var("SIGNING_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

fn rng() -> fastrand::Rng {
    fastrand::Rng::with_seed(
        std::env::var("SIGNING_FUZZ_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0x5167),
    )
}

fn text(rng: &mut fastrand::Rng, max: usize) -> String {
    let chars: Vec<char> = "v1,v2 ,=+/abcXYZ019\t\u{0}é🙂whsec_".chars().collect();
    (0..rng.usize(0..=max))
        .map(|_| chars[rng.usize(..chars.len())])
        .collect()
}

fn random_bytes(rng: &mut fastrand::Rng, len: usize) -> Vec<u8> {
    (0..len).map(|_| rng.u8(..)).collect()
}

/// A candidate that is not the right signature: garbage, another scheme,
/// a tag of another key, a tag of the wrong length, an empty one.
fn wrong_candidate(rng: &mut fastrand::Rng) -> String {
    let candidate = match rng.u8(0..5) {
        0 => text(rng, 60),
        1 => format!("v2,{}", STANDARD.encode(random_bytes(rng, 32))),
        2 => format!("v1,{}", STANDARD.encode(random_bytes(rng, 32))),
        3 => {
            let len = rng.usize(0..64);
            format!("v1,{}", STANDARD.encode(random_bytes(rng, len)))
        }
        _ => "v1,".to_owned(),
    };
    let mut candidate: String = candidate
        .chars()
        .filter(|c| !c.is_whitespace())
        .take(120)
        .collect();
    if candidate.is_empty() || rng.bool() {
        candidate.push('=');
    }
    candidate
}

#[test]
fn arbitrary_headers_never_panic_and_never_pass() {
    let secret = Secret::generate().expect("rng");
    let mut rng = rng();
    for _ in 0..cases() {
        let id = text(&mut rng, 40);
        let ts = if rng.bool() {
            (NOW + rng.i64(-2 * TOLERANCE_SECS..2 * TOLERANCE_SECS)).to_string()
        } else {
            text(&mut rng, 24)
        };
        let sig = text(&mut rng, 400);
        let len = rng.usize(0..256);
        let body = random_bytes(&mut rng, len);
        let mut pick = |s: String| if rng.u8(0..8) == 0 { None } else { Some(s) };
        let (id, ts, sig) = (pick(id), pick(ts), pick(sig));
        let result = secret.verify(id.as_deref(), ts.as_deref(), sig.as_deref(), &body, NOW);
        assert!(
            result.is_err(),
            "random text passed as a signature: {sig:?}"
        );
        let _ = Secret::parse(&text(&mut rng, 80));
    }
}

#[test]
fn the_right_signature_is_found_among_any_candidates_and_nothing_else_passes() {
    let mut rng = rng();
    for case in 0..cases() {
        let secret = Secret::generate().expect("rng");
        let id = format!("msg_{case}");
        let ts = NOW - rng.i64(0..TOLERANCE_SECS);
        let ts_text = ts.to_string();
        let len = rng.usize(0..512);
        let body = random_bytes(&mut rng, len);
        let right = secret.sign(&id, ts, &body);
        let n = rng.usize(1..=MAX_SIGNATURES);
        let at = rng.usize(..n);
        let mut candidates: Vec<String> = (0..n).map(|_| wrong_candidate(&mut rng)).collect();
        candidates[at] = right.clone();
        let spaces = [" ", "  ", "\t", " \t "];
        let header = candidates.join(spaces[rng.usize(..spaces.len())]);
        assert_eq!(
            secret.verify(Some(&id), Some(&ts_text), Some(&header), &body, NOW),
            Ok(()),
            "case {case}: {header:?}"
        );

        // Any single change to the right tag is refused.
        let mut tag = STANDARD.decode(&right[3..]).expect("tag");
        let byte = rng.usize(..tag.len());
        tag[byte] ^= 1 << rng.u8(0..8);
        candidates[at] = format!("v1,{}", STANDARD.encode(&tag));
        assert_eq!(
            secret.verify(
                Some(&id),
                Some(&ts_text),
                Some(&candidates.join(" ")),
                &body,
                NOW
            ),
            Err(SignatureError::Mismatch),
            "case {case}: a flipped bit passed"
        );

        // So is the right tag over another body.
        let mut other = body.clone();
        other.push(rng.u8(..));
        assert_eq!(
            secret.verify(Some(&id), Some(&ts_text), Some(&right), &other, NOW),
            Err(SignatureError::Mismatch)
        );

        // More candidates than the cap: refused whatever they hold.
        let mut many: Vec<String> = (0..MAX_SIGNATURES + 1 + rng.usize(0..20))
            .map(|_| wrong_candidate(&mut rng))
            .collect();
        let last = many.len() - 1;
        many[rng.usize(..=last)] = right.clone();
        assert_eq!(
            secret.verify(Some(&id), Some(&ts_text), Some(&many.join(" ")), &body, NOW),
            Err(SignatureError::TooManySignatures)
        );
    }
}
