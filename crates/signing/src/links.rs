//! Signed download links: a URL that lets whoever holds it read one stored
//! file of one workspace until it expires, with no other credential — what a
//! provider or a custom channel's receiver fetches an outbound attachment
//! with.
//!
//! The signature is `base64url(HMAC-SHA256(key, "telenet-link-v1\n{workspace}\n{blob}\n{name}\n{expires}"))`
//! (no padding). Every part of the link is covered, so changing the file,
//! the workspace, the name or the expiry breaks it. Several keys can verify
//! (the current one and those being retired), only the current one signs.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const CONTEXT: &[u8] = b"telenet-link-v1";

/// Shortest key accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 32;

/// Longest file name a link may carry, in characters.
pub const MAX_FILE_NAME_CHARS: usize = 128;

/// Whether `name` can end a link: one path segment of 1 to
/// [`MAX_FILE_NAME_CHARS`] characters, without `/`, `\`, control
/// characters or surrounding spaces, and not `.` or `..`.
pub fn is_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= MAX_FILE_NAME_CHARS
        && name.trim() == name
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c.is_control() || c == '/' || c == '\\')
}

/// Why a link is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("the link key must be base64 of at least {MIN_KEY_BYTES} bytes")]
    BadKey,
    #[error("the download link has expired")]
    Expired,
    #[error("the download link's signature does not match")]
    Mismatch,
}

/// What a link grants: one file of one workspace, under one name, until a
/// time (unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link<'a> {
    pub workspace_id: &'a str,
    pub blob_id: &'a str,
    pub file_name: &'a str,
    pub expires_at: i64,
}

/// Signs and verifies links.
#[derive(Clone)]
pub struct LinkSigner {
    current: Vec<u8>,
    previous: Vec<Vec<u8>>,
}

impl std::fmt::Debug for LinkSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkSigner")
            .field("keys", &(1 + self.previous.len()))
            .finish_non_exhaustive()
    }
}

impl LinkSigner {
    /// From base64 keys: `current` signs and verifies, each of `previous`
    /// only verifies (links made before a key rotation keep working until
    /// they expire).
    pub fn new<S: AsRef<str>>(current: &str, previous: &[S]) -> Result<Self, LinkError> {
        Ok(Self {
            current: decode_key(current)?,
            previous: previous
                .iter()
                .map(|k| decode_key(k.as_ref()))
                .collect::<Result<_, _>>()?,
        })
    }

    /// A new random key, base64, from the operating system's CSPRNG.
    pub fn generate_key() -> Result<String, getrandom::Error> {
        let mut key = vec![0u8; MIN_KEY_BYTES];
        getrandom::fill(&mut key)?;
        Ok(STANDARD.encode(key))
    }

    /// The signature of `link` under the current key.
    pub fn sign(&self, link: &Link<'_>) -> String {
        URL_SAFE_NO_PAD.encode(mac(&self.current, link).finalize().into_bytes())
    }

    /// Check `signature` for `link` at `now` (unix seconds), against every
    /// key, in constant time per key. An expired link is refused even when
    /// its signature is right.
    pub fn verify(&self, link: &Link<'_>, signature: &str, now: i64) -> Result<(), LinkError> {
        let tag = URL_SAFE_NO_PAD
            .decode(signature.trim())
            .map_err(|_| LinkError::Mismatch)?;
        let signed = std::iter::once(&self.current)
            .chain(&self.previous)
            .any(|key| mac(key, link).verify_slice(&tag).is_ok());
        if !signed {
            return Err(LinkError::Mismatch);
        }
        if now >= link.expires_at {
            return Err(LinkError::Expired);
        }
        Ok(())
    }
}

fn decode_key(text: &str) -> Result<Vec<u8>, LinkError> {
    let key = STANDARD
        .decode(text.trim())
        .map_err(|_| LinkError::BadKey)?;
    if key.len() < MIN_KEY_BYTES {
        return Err(LinkError::BadKey);
    }
    Ok(key)
}

fn mac(key: &[u8], link: &Link<'_>) -> Hmac<Sha256> {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        unreachable!("hmac takes any key length")
    };
    mac.update(CONTEXT);
    for part in [link.workspace_id, link.blob_id, link.file_name] {
        mac.update(b"\n");
        mac.update(part.as_bytes());
    }
    mac.update(b"\n");
    mac.update(link.expires_at.to_string().as_bytes());
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 bytes
    const OLD: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA="; // 32 bytes

    fn link() -> Link<'static> {
        Link {
            workspace_id: "ws-1",
            blob_id: "ab12",
            file_name: "voice.ogg",
            expires_at: 1_000,
        }
    }

    #[test]
    fn a_signed_link_verifies_until_it_expires() {
        let signer = LinkSigner::new::<&str>(KEY, &[]).expect("key");
        let sig = signer.sign(&link());
        assert!(!sig.contains(['+', '/', '=']), "URL-safe: {sig}");
        assert_eq!(signer.verify(&link(), &sig, 999), Ok(()));
        assert_eq!(signer.verify(&link(), &sig, 1_000), Err(LinkError::Expired));
    }

    #[test]
    fn every_part_is_covered() {
        let signer = LinkSigner::new::<&str>(KEY, &[]).expect("key");
        let sig = signer.sign(&link());
        let changed = [
            Link {
                workspace_id: "ws-2",
                ..link()
            },
            Link {
                blob_id: "ab13",
                ..link()
            },
            Link {
                file_name: "voice.mp3",
                ..link()
            },
            Link {
                expires_at: 100_000,
                ..link()
            },
        ];
        for other in changed {
            assert_eq!(
                signer.verify(&other, &sig, 0),
                Err(LinkError::Mismatch),
                "{other:?}"
            );
        }
        // Fields cannot be shifted into each other.
        let shifted = Link {
            workspace_id: "ws-1\nab12",
            blob_id: "",
            ..link()
        };
        assert_ne!(signer.sign(&shifted), sig);
        assert_eq!(
            signer.verify(&link(), "not base64!", 0),
            Err(LinkError::Mismatch)
        );
    }

    #[test]
    fn previous_keys_verify_but_do_not_sign() {
        let old = LinkSigner::new::<&str>(OLD, &[]).expect("key");
        let rotated = LinkSigner::new(KEY, &[OLD]).expect("keys");
        let made_before = old.sign(&link());
        assert_eq!(rotated.verify(&link(), &made_before, 0), Ok(()));
        assert_ne!(rotated.sign(&link()), made_before);
        let fresh = LinkSigner::new::<&str>(KEY, &[]).expect("key");
        assert_eq!(
            fresh.verify(&link(), &made_before, 0),
            Err(LinkError::Mismatch)
        );
    }

    #[test]
    fn short_or_malformed_keys_are_refused() {
        assert_eq!(
            LinkSigner::new::<&str>("c2hvcnQ=", &[]).err(),
            Some(LinkError::BadKey)
        );
        assert_eq!(
            LinkSigner::new::<&str>("***", &[]).err(),
            Some(LinkError::BadKey)
        );
        assert_eq!(
            LinkSigner::new(KEY, &["c2hvcnQ="]).err(),
            Some(LinkError::BadKey)
        );
        let generated = LinkSigner::generate_key().expect("random");
        assert!(LinkSigner::new::<&str>(&generated, &[]).is_ok());
    }
}
