//! Standard Webhooks signatures (<https://www.standardwebhooks.com>), used by
//! custom channels in both directions: `webhook-id`, `webhook-timestamp` and
//! `webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`
//! with a secret written `whsec_<base64 key>`; signed download links
//! ([`links`]); and secrets sealed at rest under a keyring ([`sealing`]).

pub mod links;
pub mod sealing;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far a webhook's timestamp may be from now, either way.
pub const TOLERANCE_SECS: i64 = 5 * 60;
const PREFIX: &str = "whsec_";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("secret must be `whsec_` followed by a base64 key of 24 to 64 bytes")]
    BadSecret,
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("webhook-timestamp is not a unix time in seconds")]
    BadTimestamp,
    #[error("webhook-timestamp is outside the 5-minute tolerance")]
    StaleTimestamp,
    #[error("no valid v1 signature in webhook-signature")]
    Mismatch,
    #[error("webhook-signature carries more than {MAX_SIGNATURES} signatures")]
    TooManySignatures,
}

/// Most signatures one `webhook-signature` header may carry (a sender
/// rotating its secret sends two or three). More is refused before any is
/// checked, so a header stuffed with candidates costs nothing to answer.
pub const MAX_SIGNATURES: usize = 8;

/// Bytes of an HMAC-SHA256 tag.
const TAG_LEN: usize = 32;

/// A parsed signing secret.
#[derive(Clone)]
pub struct Secret {
    key: Vec<u8>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Secret {
    /// Parse `whsec_<base64 key>`.
    pub fn parse(text: &str) -> Result<Self, SignatureError> {
        let b64 = text.strip_prefix(PREFIX).ok_or(SignatureError::BadSecret)?;
        let key = STANDARD
            .decode(b64)
            .map_err(|_| SignatureError::BadSecret)?;
        if !(24..=64).contains(&key.len()) {
            return Err(SignatureError::BadSecret);
        }
        Ok(Self { key })
    }

    /// A new random 32-byte secret from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut key = vec![0u8; 32];
        getrandom::fill(&mut key)?;
        Ok(Self { key })
    }

    /// The `whsec_…` form.
    pub fn expose(&self) -> String {
        format!("{PREFIX}{}", STANDARD.encode(&self.key))
    }

    fn mac(&self, id: &str, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.key) {
            Ok(m) => m,
            Err(_) => unreachable!("hmac takes any key length"),
        };
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The `webhook-signature` value for a message.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = self
            .mac(id, &timestamp.to_string(), body)
            .finalize()
            .into_bytes();
        format!("v1,{}", STANDARD.encode(tag))
    }

    /// Verify the three headers against the raw body at time `now` (unix
    /// seconds). Accepts any of several space-separated signatures (key
    /// rotation); compares in constant time.
    pub fn verify(
        &self,
        id: Option<&str>,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<(), SignatureError> {
        let id = id.ok_or(SignatureError::MissingHeader("webhook-id"))?;
        let ts_text = timestamp.ok_or(SignatureError::MissingHeader("webhook-timestamp"))?;
        let signature = signature.ok_or(SignatureError::MissingHeader("webhook-signature"))?;
        let ts: i64 = ts_text
            .trim()
            .parse()
            .map_err(|_| SignatureError::BadTimestamp)?;
        if (now - ts).abs() > TOLERANCE_SECS {
            return Err(SignatureError::StaleTimestamp);
        }
        let candidates: Vec<&str> = signature.split_whitespace().collect();
        if candidates.len() > MAX_SIGNATURES {
            return Err(SignatureError::TooManySignatures);
        }
        // The body is hashed once, whatever the number of candidates; each
        // is then compared in constant time.
        let expected = self.mac(id, ts_text.trim(), body).finalize();
        let matches = |tag: &[u8]| {
            tag.len() == TAG_LEN
                && hmac::digest::CtOutput::<Hmac<Sha256>>::new(
                    hmac::digest::Output::<Hmac<Sha256>>::clone_from_slice(tag),
                ) == expected
        };
        let valid = candidates
            .iter()
            .filter_map(|candidate| candidate.strip_prefix("v1,"))
            .filter_map(|b64| STANDARD.decode(b64).ok())
            .any(|tag| matches(&tag));
        if valid {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        }
    }
}

/// HMAC-SHA256 of `message` under `key` (providers' webhook signatures:
/// Meta, LINE, Viber).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// Whether `a` and `b` are the same bytes, compared in constant time
/// (signatures, tokens, secret headers).
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Current unix time in seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example of the Standard Webhooks specification.
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TS: i64 = 1614265330;
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn hmac_and_secret_comparison_follow_rfc_4231() {
        // RFC 4231, test case 2.
        assert_eq!(
            hex_of(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
    }

    fn hex_of(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn matches_the_specification_example() {
        let secret = Secret::parse(SPEC_SECRET).expect("spec secret parses");
        assert_eq!(secret.sign(SPEC_ID, SPEC_TS, SPEC_BODY), SPEC_SIG);
        assert_eq!(
            secret.verify(
                Some(SPEC_ID),
                Some("1614265330"),
                Some(SPEC_SIG),
                SPEC_BODY,
                SPEC_TS + 10
            ),
            Ok(())
        );
    }

    #[test]
    fn a_valid_signature_among_others_passes_and_odd_candidates_are_skipped() {
        let secret = Secret::parse(SPEC_SECRET).expect("spec secret parses");
        let header = format!(
            "v2,abc v1,!!notbase64 v1,AAAA v1,{} {SPEC_SIG}",
            "A".repeat(44)
        );
        assert_eq!(
            secret.verify(
                Some(SPEC_ID),
                Some("1614265330"),
                Some(&header),
                SPEC_BODY,
                SPEC_TS
            ),
            Ok(())
        );
    }

    #[test]
    fn a_header_stuffed_with_candidates_is_refused_before_any_is_checked() {
        let secret = Secret::parse(SPEC_SECRET).expect("spec secret parses");
        let wrong = format!("v1,{}", "A".repeat(44));
        let mut candidates = vec![wrong.as_str(); MAX_SIGNATURES];
        candidates.push(SPEC_SIG);
        let header = candidates.join(" ");
        assert_eq!(
            secret.verify(
                Some(SPEC_ID),
                Some("1614265330"),
                Some(&header),
                SPEC_BODY,
                SPEC_TS
            ),
            Err(SignatureError::TooManySignatures),
            "even with the valid one among them"
        );
        candidates.remove(0);
        let header = candidates.join(" ");
        assert_eq!(
            secret.verify(
                Some(SPEC_ID),
                Some("1614265330"),
                Some(&header),
                SPEC_BODY,
                SPEC_TS
            ),
            Ok(()),
            "{MAX_SIGNATURES} candidates are still checked"
        );
        // The timestamp is checked before the candidates are even counted.
        let stuffed = vec![wrong.as_str(); 2_000].join(" ");
        assert_eq!(
            secret.verify(
                Some(SPEC_ID),
                Some("1614265330"),
                Some(&stuffed),
                SPEC_BODY,
                SPEC_TS + 301
            ),
            Err(SignatureError::StaleTimestamp)
        );
    }

    #[test]
    fn rejects_tampering_staleness_and_missing_headers() {
        let secret = Secret::parse(SPEC_SECRET).expect("spec secret parses");
        let ts = "1614265330";
        assert_eq!(
            secret.verify(Some(SPEC_ID), Some(ts), Some(SPEC_SIG), b"{}", SPEC_TS),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            secret.verify(Some("other"), Some(ts), Some(SPEC_SIG), SPEC_BODY, SPEC_TS),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            secret.verify(
                Some(SPEC_ID),
                Some(ts),
                Some(SPEC_SIG),
                SPEC_BODY,
                SPEC_TS + 301
            ),
            Err(SignatureError::StaleTimestamp)
        );
        assert_eq!(
            secret.verify(
                Some(SPEC_ID),
                Some(ts),
                Some(SPEC_SIG),
                SPEC_BODY,
                SPEC_TS - 301
            ),
            Err(SignatureError::StaleTimestamp)
        );
        assert_eq!(
            secret.verify(
                Some(SPEC_ID),
                Some("soon"),
                Some(SPEC_SIG),
                SPEC_BODY,
                SPEC_TS
            ),
            Err(SignatureError::BadTimestamp)
        );
        assert_eq!(
            secret.verify(None, Some(ts), Some(SPEC_SIG), SPEC_BODY, SPEC_TS),
            Err(SignatureError::MissingHeader("webhook-id"))
        );
        // A rotated key list: one good signature among others is enough.
        let list = format!("v1,AAAA {SPEC_SIG} v2,zzz");
        assert_eq!(
            secret.verify(Some(SPEC_ID), Some(ts), Some(&list), SPEC_BODY, SPEC_TS),
            Ok(())
        );
    }

    #[test]
    fn secrets_are_validated_and_generated() {
        assert_eq!(Secret::parse("abc").err(), Some(SignatureError::BadSecret));
        assert_eq!(
            Secret::parse("whsec_!!").err(),
            Some(SignatureError::BadSecret)
        );
        assert_eq!(
            Secret::parse("whsec_AAAA").err(),
            Some(SignatureError::BadSecret)
        );
        let s = Secret::generate().expect("os randomness");
        let again = Secret::parse(&s.expose()).expect("generated secret parses");
        assert_eq!(again.sign("a", 1, b"b"), s.sign("a", 1, b"b"));
    }
}
