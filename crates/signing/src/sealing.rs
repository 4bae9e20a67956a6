//! Secrets sealed at rest: envelope encryption under a keyring.
//!
//! Every value is encrypted with AES-256-GCM under a fresh random data key,
//! and that data key is encrypted ("wrapped") with AES-256-GCM under a
//! key-encryption key of a [`Keyring`], named by its id. The sealed form is
//! one line of text, so it fits a `TEXT` column:
//!
//! ```text
//! sealed:v1:<key id>:<wrapped data key>:<nonce>:<ciphertext>
//! ```
//!
//! The last three parts are base64url without padding: the wrapped data key
//! is its own 12-byte nonce, the 32 encrypted key bytes and their 16-byte
//! tag; the nonce is the value's 12-byte nonce; the ciphertext is the
//! encrypted value and its 16-byte tag.
//!
//! The caller names where the value is kept (the `context`: e.g. the table,
//! the row's workspace and id, the column) and the same context must be
//! given to open it: it is the associated data of both encryptions, so a
//! sealed value copied to another row or column does not open, and neither
//! does one whose key id was altered.
//!
//! Rotation: a keyring holds several keys by id and seals with its current
//! one; older keys stay in it for opening until nothing sealed under them
//! remains ([`key_id`] says which key a value needs).
//!
//! ```
//! use telenet_signing::sealing::{Keyring, generate_key};
//!
//! let keyring = Keyring::new("k1", [("k1", generate_key().unwrap())]).unwrap();
//! let sealed = keyring.seal(b"whsec_...", &["channels", "ws1", "ch1", "secret"]).unwrap();
//! assert_eq!(telenet_signing::sealing::key_id(&sealed), Some("k1"));
//! let opened = keyring.open(&sealed, &["channels", "ws1", "ch1", "secret"]).unwrap();
//! assert_eq!(opened, b"whsec_...");
//! assert!(keyring.open(&sealed, &["channels", "ws1", "ch2", "secret"]).is_err());
//! ```

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use zeroize::Zeroize;

/// What every sealed value starts with: the format and its version.
pub const PREFIX: &str = "sealed:v1:";

/// Bytes of a key (key-encryption and data keys alike).
pub const KEY_LEN: usize = 32;

/// Longest key id.
pub const MAX_KEY_ID_LEN: usize = 64;

const TAG_LEN: usize = 16;
const WRAP_DOMAIN: &[u8] = b"telenet sealed v1 data key";
const VALUE_DOMAIN: &[u8] = b"telenet sealed v1 value";

/// Why a keyring cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    /// A key id with other characters, empty or too long.
    #[error("key id {0:?}: use 1 to {MAX_KEY_ID_LEN} ASCII letters, digits, `.`, `_` or `-`")]
    BadId(String),
    /// Key material that is not the base64 of exactly 32 bytes.
    #[error("key {0:?} is not the base64 of 32 bytes (make one with `openssl rand -base64 32`)")]
    BadKey(String),
    /// No key at all.
    #[error("the keyring has no key")]
    Empty,
    /// The current key is not among the keys.
    #[error("the current key {0:?} is not in the keyring")]
    UnknownCurrent(String),
    /// Several keys and none named current.
    #[error("the keyring has several keys: name the current one")]
    NoCurrent,
}

/// Why a value cannot be sealed or opened. None of the messages carries
/// any part of the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Sealed under a key the keyring does not hold (removed too early, or
    /// not yet given to this process).
    #[error("sealed under key {0:?}, which is not in the keyring")]
    UnknownKey(String),
    /// Not in the sealed format.
    #[error("not a sealed value")]
    Malformed,
    /// The right key, but the value does not open: altered, or sealed for
    /// another place (context).
    #[error("the sealed value does not open (altered, or sealed for another place)")]
    Unopened,
    /// The operating system gave no randomness.
    #[error("no randomness for a data key: {0}")]
    Random(String),
}

/// Key-encryption keys by id, one of them current.
pub struct Keyring {
    keys: BTreeMap<String, LessSafeKey>,
    current: String,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current)
            .field("ids", &self.keys.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// A keyring of `keys` (id, base64 of 32 bytes) sealing with
    /// `current`; an empty `current` names the only key.
    pub fn new<I, K, V>(current: &str, keys: I) -> Result<Self, KeyringError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: AsRef<str>,
    {
        let mut ring = BTreeMap::new();
        for (id, key) in keys {
            let id = id.into();
            check_key_id(&id)?;
            let key = decode_key(key.as_ref()).ok_or_else(|| KeyringError::BadKey(id.clone()))?;
            ring.insert(id, key);
        }
        let current = match (current.trim(), ring.len()) {
            (_, 0) => return Err(KeyringError::Empty),
            ("", 1) => ring.keys().next().cloned().unwrap_or_default(),
            ("", _) => return Err(KeyringError::NoCurrent),
            (id, _) if ring.contains_key(id) => id.to_owned(),
            (id, _) => return Err(KeyringError::UnknownCurrent(id.to_owned())),
        };
        Ok(Self {
            keys: ring,
            current,
        })
    }

    /// The id of the key values are sealed with.
    pub fn current(&self) -> &str {
        &self.current
    }

    /// Whether the keyring holds the key `id`.
    pub fn contains(&self, id: &str) -> bool {
        self.keys.contains_key(id)
    }

    /// The ids of its keys, in order.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// `value` sealed under the current key for `context`.
    pub fn seal(&self, value: &[u8], context: &[&str]) -> Result<String, SealError> {
        let kid = self.current.as_str();
        let kek = self
            .keys
            .get(kid)
            .ok_or_else(|| SealError::UnknownKey(kid.to_owned()))?;
        let context = encode_context(context);

        let mut dek = [0u8; KEY_LEN];
        let sealed = (|| {
            random(&mut dek)?;
            let wrap_nonce = random_nonce()?;
            let mut wrapped = dek.to_vec();
            kek.seal_in_place_append_tag(
                Nonce::assume_unique_for_key(wrap_nonce),
                Aad::from(wrap_aad(kid, &context)),
                &mut wrapped,
            )
            .map_err(|_| SealError::Unopened)?;
            let mut wrapped_field = wrap_nonce.to_vec();
            wrapped_field.extend_from_slice(&wrapped);

            let data_key = aead_key(&dek).ok_or(SealError::Unopened)?;
            let nonce = random_nonce()?;
            let mut ciphertext = value.to_vec();
            data_key
                .seal_in_place_append_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(value_aad(&context)),
                    &mut ciphertext,
                )
                .map_err(|_| SealError::Unopened)?;
            Ok(format!(
                "{PREFIX}{kid}:{}:{}:{}",
                URL_SAFE_NO_PAD.encode(&wrapped_field),
                URL_SAFE_NO_PAD.encode(nonce),
                URL_SAFE_NO_PAD.encode(&ciphertext),
            ))
        })();
        dek.zeroize();
        sealed
    }

    /// The value `sealed` holds, when it was sealed for `context` under a
    /// key of this keyring.
    pub fn open(&self, sealed: &str, context: &[&str]) -> Result<Vec<u8>, SealError> {
        let parts = Parts::parse(sealed).ok_or(SealError::Malformed)?;
        let kek = self
            .keys
            .get(parts.kid)
            .ok_or_else(|| SealError::UnknownKey(parts.kid.to_owned()))?;
        let context = encode_context(context);

        let (wrap_nonce, wrapped) = parts.wrapped.split_at(NONCE_LEN);
        let mut wrapped = wrapped.to_vec();
        let nonce =
            Nonce::try_assume_unique_for_key(wrap_nonce).map_err(|_| SealError::Malformed)?;
        let opened = kek
            .open_in_place(
                nonce,
                Aad::from(wrap_aad(parts.kid, &context)),
                &mut wrapped,
            )
            .map_err(|_| SealError::Unopened);
        let data_key = match opened {
            Ok(dek) if dek.len() == KEY_LEN => aead_key(dek),
            _ => None,
        };
        wrapped.zeroize();
        let data_key = data_key.ok_or(SealError::Unopened)?;

        let nonce =
            Nonce::try_assume_unique_for_key(&parts.nonce).map_err(|_| SealError::Malformed)?;
        let mut buffer = parts.ciphertext;
        let len = data_key
            .open_in_place(nonce, Aad::from(value_aad(&context)), &mut buffer)
            .map_err(|_| SealError::Unopened)?
            .len();
        buffer.truncate(len);
        Ok(buffer)
    }
}

/// Whether `value` is in the sealed format (it may still not open).
pub fn is_sealed(value: &str) -> bool {
    Parts::parse(value).is_some()
}

/// The id of the key `sealed` was sealed under; `None` when it is not a
/// sealed value.
pub fn key_id(sealed: &str) -> Option<&str> {
    Parts::parse(sealed).map(|p| p.kid)
}

/// A new random key, as keyrings take it: the base64 of 32 bytes from the
/// operating system's CSPRNG.
pub fn generate_key() -> Result<String, getrandom::Error> {
    let mut key = [0u8; KEY_LEN];
    getrandom::fill(&mut key)?;
    let text = STANDARD.encode(key);
    key.zeroize();
    Ok(text)
}

/// A key id: 1 to 64 ASCII letters, digits, `.`, `_` or `-` (it is written
/// into every sealed value, between colons).
pub fn check_key_id(id: &str) -> Result<(), KeyringError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_KEY_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(KeyringError::BadId(id.to_owned()))
    }
}

/// The fields of a sealed value, decoded.
struct Parts<'a> {
    kid: &'a str,
    wrapped: Vec<u8>,
    nonce: Vec<u8>,
    ciphertext: Vec<u8>,
}

impl<'a> Parts<'a> {
    fn parse(sealed: &'a str) -> Option<Self> {
        let rest = sealed.strip_prefix(PREFIX)?;
        let mut fields = rest.split(':');
        let (kid, wrapped, nonce, ciphertext) = (
            fields.next()?,
            fields.next()?,
            fields.next()?,
            fields.next()?,
        );
        if fields.next().is_some() || check_key_id(kid).is_err() {
            return None;
        }
        let parts = Self {
            kid,
            wrapped: URL_SAFE_NO_PAD.decode(wrapped).ok()?,
            nonce: URL_SAFE_NO_PAD.decode(nonce).ok()?,
            ciphertext: URL_SAFE_NO_PAD.decode(ciphertext).ok()?,
        };
        let well_formed = parts.wrapped.len() == NONCE_LEN + KEY_LEN + TAG_LEN
            && parts.nonce.len() == NONCE_LEN
            && parts.ciphertext.len() >= TAG_LEN;
        well_formed.then_some(parts)
    }
}

fn decode_key(text: &str) -> Option<LessSafeKey> {
    let mut bytes = STANDARD.decode(text.trim()).ok()?;
    let key = if bytes.len() == KEY_LEN {
        aead_key(&bytes)
    } else {
        None
    };
    bytes.zeroize();
    key
}

fn aead_key(bytes: &[u8]) -> Option<LessSafeKey> {
    UnboundKey::new(&AES_256_GCM, bytes)
        .ok()
        .map(LessSafeKey::new)
}

fn random(buffer: &mut [u8]) -> Result<(), SealError> {
    getrandom::fill(buffer).map_err(|e| SealError::Random(e.to_string()))
}

fn random_nonce() -> Result<[u8; NONCE_LEN], SealError> {
    let mut nonce = [0u8; NONCE_LEN];
    random(&mut nonce)?;
    Ok(nonce)
}

/// The context's parts, each preceded by its length, so no two different
/// contexts encode alike (`["a:b"]` is not `["a", "b"]`).
fn encode_context(context: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in context {
        let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(part.as_bytes());
    }
    out
}

fn wrap_aad(kid: &str, context: &[u8]) -> Vec<u8> {
    let mut aad = WRAP_DOMAIN.to_vec();
    aad.extend_from_slice(&encode_context(&[kid]));
    aad.extend_from_slice(context);
    aad
}

fn value_aad(context: &[u8]) -> Vec<u8> {
    let mut aad = VALUE_DOMAIN.to_vec();
    aad.extend_from_slice(context);
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    const HERE: &[&str] = &["channels", "ws1", "ch1", "secret"];

    fn keyring(current: &str, ids: &[&str]) -> (Keyring, Vec<(String, String)>) {
        let keys: Vec<(String, String)> = ids
            .iter()
            .map(|id| ((*id).to_owned(), generate_key().expect("rng")))
            .collect();
        (Keyring::new(current, keys.clone()).expect("keyring"), keys)
    }

    #[test]
    fn a_sealed_value_opens_in_its_place_only() {
        let (ring, _) = keyring("k1", &["k1"]);
        let sealed = ring.seal(b"whsec_top_secret", HERE).expect("seal");
        assert!(sealed.starts_with("sealed:v1:k1:"), "{sealed}");
        assert!(!sealed.contains("top_secret"));
        assert_eq!(sealed.split(':').count(), 6);
        assert_eq!(key_id(&sealed), Some("k1"));
        assert!(is_sealed(&sealed));
        assert_eq!(ring.open(&sealed, HERE).expect("open"), b"whsec_top_secret");

        // Another row, workspace or column: refused.
        for elsewhere in [
            &["channels", "ws1", "ch2", "secret"][..],
            &["channels", "ws2", "ch1", "secret"],
            &["channels", "ws1", "ch1", "app_secret"],
            &["channels", "ws1", "ch1secret"],
            &[],
        ] {
            assert_eq!(ring.open(&sealed, elsewhere), Err(SealError::Unopened));
        }
        // The same value sealed twice differs (fresh data key and nonces).
        assert_ne!(ring.seal(b"whsec_top_secret", HERE).expect("seal"), sealed);
        // Empty values seal too.
        let empty = ring.seal(b"", HERE).expect("seal");
        assert_eq!(ring.open(&empty, HERE).expect("open"), b"");
    }

    #[test]
    fn altered_values_do_not_open() {
        let (ring, _) = keyring("k1", &["k1"]);
        let sealed = ring.seal(b"value", HERE).expect("seal");
        let fields: Vec<&str> = sealed.split(':').collect();
        // Flip one bit of each binary field in turn.
        for field in 3..6 {
            let mut bytes = URL_SAFE_NO_PAD.decode(fields[field]).expect("b64");
            bytes[0] ^= 1;
            let mut altered: Vec<String> = fields.iter().map(|f| (*f).to_owned()).collect();
            altered[field] = URL_SAFE_NO_PAD.encode(&bytes);
            assert_eq!(
                ring.open(&altered.join(":"), HERE),
                Err(SealError::Unopened),
                "field {field}"
            );
        }
        for malformed in [
            "whsec_plain",
            "",
            "sealed:v1:",
            "sealed:v2:k1:a:b:c",
            &sealed.replacen("sealed:v1:", "sealed:v1:bad id:", 1),
            &format!("{sealed}:extra"),
        ] {
            assert!(!is_sealed(malformed), "{malformed}");
            assert_eq!(
                ring.open(malformed, HERE),
                Err(SealError::Malformed),
                "{malformed}"
            );
        }
    }

    #[test]
    fn a_relabelled_key_id_does_not_open_even_with_the_same_key_material() {
        let key = generate_key().expect("rng");
        let ring = Keyring::new("a", [("a", key.clone()), ("b", key)]).expect("keyring");
        let sealed = ring.seal(b"value", HERE).expect("seal");
        let relabelled = sealed.replacen(":a:", ":b:", 1);
        assert_eq!(key_id(&relabelled), Some("b"));
        assert_eq!(ring.open(&relabelled, HERE), Err(SealError::Unopened));
    }

    #[test]
    fn rotation_keeps_old_keys_for_opening() {
        let (old, keys) = keyring("k1", &["k1"]);
        let sealed_k1 = old.seal(b"first", HERE).expect("seal");
        let k2 = generate_key().expect("rng");
        let mut both = keys.clone();
        both.push(("k2".into(), k2.clone()));
        let rotated = Keyring::new("k2", both).expect("keyring");
        assert_eq!(rotated.current(), "k2");
        assert_eq!(rotated.ids().collect::<Vec<_>>(), ["k1", "k2"]);
        assert_eq!(rotated.open(&sealed_k1, HERE).expect("old"), b"first");
        let sealed_k2 = rotated.seal(b"first", HERE).expect("seal");
        assert_eq!(key_id(&sealed_k2), Some("k2"));

        // k1 removed: what k2 sealed opens, what k1 sealed is named.
        let only_k2 = Keyring::new("", [("k2", k2)]).expect("keyring");
        assert_eq!(only_k2.open(&sealed_k2, HERE).expect("new"), b"first");
        assert_eq!(
            only_k2.open(&sealed_k1, HERE),
            Err(SealError::UnknownKey("k1".into()))
        );
        // Another keyring's key of the same id does not open it.
        let (stranger, _) = keyring("k2", &["k2"]);
        assert_eq!(stranger.open(&sealed_k2, HERE), Err(SealError::Unopened));
    }

    #[test]
    fn keyrings_are_checked() {
        let key = generate_key().expect("rng");
        assert_eq!(STANDARD.decode(&key).expect("b64").len(), 32);
        assert_eq!(
            Keyring::new("", Vec::<(String, String)>::new()).err(),
            Some(KeyringError::Empty)
        );
        assert_eq!(
            Keyring::new("", [("a", key.as_str()), ("b", key.as_str())]).err(),
            Some(KeyringError::NoCurrent)
        );
        assert_eq!(
            Keyring::new("c", [("a", key.as_str())]).err(),
            Some(KeyringError::UnknownCurrent("c".into()))
        );
        assert_eq!(
            Keyring::new("", [("a:b", key.as_str())]).err(),
            Some(KeyringError::BadId("a:b".into()))
        );
        assert_eq!(
            Keyring::new("", [("x".repeat(65), key.clone())]).err(),
            Some(KeyringError::BadId("x".repeat(65)))
        );
        let short = STANDARD.encode([7u8; 16]);
        assert_eq!(
            Keyring::new("", [("a", short.as_str())]).err(),
            Some(KeyringError::BadKey("a".into()))
        );
        assert_eq!(
            Keyring::new("", [("a", "not base64!")]).err(),
            Some(KeyringError::BadKey("a".into()))
        );
        // Surrounding whitespace (a trailing newline from a file) is fine.
        let ring = Keyring::new("", [("2025-01_a.b", format!(" {key}\n"))]).expect("keyring");
        assert_eq!(ring.current(), "2025-01_a.b");
    }

    #[test]
    fn keys_stay_out_of_debug_output() {
        let key = generate_key().expect("rng");
        let ring = Keyring::new("k1", [("k1", key.as_str())]).expect("keyring");
        let shown = format!("{ring:?}");
        assert!(shown.contains("k1"), "{shown}");
        assert!(!shown.contains(&key), "{shown}");
        assert!(!shown.contains(&key[..8]), "{shown}");
        let error = Keyring::new("", [("k1", "c2VjcmV0")]).expect_err("short");
        assert!(!error.to_string().contains("c2VjcmV0"));
    }
}
