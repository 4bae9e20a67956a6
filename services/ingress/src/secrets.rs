//! Channel secrets at rest: the keyring they are sealed with (from the
//! settings, or a key the dev server keeps in its data directory), what is
//! stored under which key, and the re-sealing that follows a rotation.
//!
//! Making another key current re-seals every stored secret under it in the
//! background: [`Secrets::run`] (a task of the service) looks at start and
//! then every `reseal_interval` for secrets sealed under another key or
//! still in plain text, and re-seals them in batches, each batch one
//! transaction. Nothing is remembered between passes (the table is the
//! progress), so a pass cut short resumes where it was at the next one, and
//! several replicas may run it at once: a secret is replaced only if it is
//! still what the replica read, so a racing replica's or a rotation's newer
//! value is never overwritten. Keys stay in the keyring for opening until
//! [`Secrets::status`] (`telenet secrets status`) shows nothing sealed
//! under them.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use telenet_signing::sealing::{self, Keyring};
use telenet_store::Db;
use tokio_util::sync::CancellationToken;

use crate::metrics::IngressMetrics;
use crate::{Error, store};

/// The id of the key the dev server keeps in its data directory.
pub const LOCAL_KEY_ID: &str = "local";

/// The file in the data directory that holds it.
pub const LOCAL_KEY_FILE: &str = "channel-secrets.key";

/// How channel secrets are encrypted at rest (docs/security.md, "Secrets
/// at rest").
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EncryptionConfig {
    /// Key-encryption keys by id (1 to 64 letters, digits, `.`, `_` or `-`), each the base64 of 32 random bytes (`openssl rand -base64 32` or `telenet secrets generate-key`), e.g. `{ k2025a = "…" }`. Keep every key something is still sealed under (`telenet secrets status`). Empty: see `local_key`.
    pub keys: BTreeMap<String, String>,
    /// The id of the key new secrets are sealed with (may be empty when `keys` holds one). Making another key current re-seals every stored secret under it in the background.
    pub current_key: String,
    /// With no `keys`: seal with a key kept in the data directory (`channel-secrets.key`, id `local`), made on first start; for one process with a lasting data directory (the dev server). Off: ingress does not start without `keys`.
    pub local_key: bool,
    /// Secrets re-sealed per transaction after a rotation.
    pub reseal_batch: usize,
    /// How often ingress looks for secrets not sealed under the current key (also once at start).
    #[serde(with = "telenet_kit::config::duration")]
    pub reseal_interval: Duration,
}

impl Default for EncryptionConfig {
    fn default() -> Self {
        Self {
            keys: BTreeMap::new(),
            current_key: String::new(),
            local_key: true,
            reseal_batch: 100,
            reseal_interval: Duration::from_secs(600),
        }
    }
}

impl std::fmt::Debug for EncryptionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptionConfig")
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .field("current_key", &self.current_key)
            .field("local_key", &self.local_key)
            .field("reseal_batch", &self.reseal_batch)
            .field("reseal_interval", &self.reseal_interval)
            .finish()
    }
}

/// The keyring of `config`; with no keys and `local_key`, the key kept in
/// `data_dir` (made, readable by the owner only, when there is none yet).
pub fn keyring(config: &EncryptionConfig, data_dir: &Path) -> Result<Keyring, Error> {
    keyring_of(config, data_dir, true)
}

/// [`keyring`], but a missing local key is an error instead of made (for
/// tools that only look).
pub fn existing_keyring(config: &EncryptionConfig, data_dir: &Path) -> Result<Keyring, Error> {
    keyring_of(config, data_dir, false)
}

fn keyring_of(config: &EncryptionConfig, data_dir: &Path, make: bool) -> Result<Keyring, Error> {
    let invalid = |key: &'static str, e: &dyn std::fmt::Display| Error::Config {
        key,
        reason: e.to_string(),
    };
    if !config.keys.is_empty() {
        return Keyring::new(&config.current_key, &config.keys)
            .map_err(|e| invalid("encryption.keys", &e));
    }
    if !config.local_key {
        return Err(Error::Config {
            key: "encryption.keys",
            reason: "no key to seal channel secrets with: set ingress.encryption.keys \
                     (or ingress.encryption.local_key for a single process keeping its data directory)"
                .into(),
        });
    }
    if !config.current_key.is_empty() && config.current_key != LOCAL_KEY_ID {
        return Err(Error::Config {
            key: "encryption.current_key",
            reason: format!(
                "{:?} is not in ingress.encryption.keys (empty: the local key)",
                config.current_key
            ),
        });
    }
    let key = local_key(data_dir, make)?;
    Keyring::new(LOCAL_KEY_ID, [(LOCAL_KEY_ID, key)]).map_err(|e| invalid("encryption.keys", &e))
}

/// The key in `data_dir`: read, or made on first start. A file that holds
/// no key is never replaced: what was sealed with it would be lost.
fn local_key(data_dir: &Path, make: bool) -> Result<String, Error> {
    let path = data_dir.join(LOCAL_KEY_FILE);
    let unusable = |reason: String| Error::Config {
        key: "encryption.local_key",
        reason: format!("{}: {reason}", path.display()),
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let key = text.trim().to_owned();
            Keyring::new(LOCAL_KEY_ID, [(LOCAL_KEY_ID, key.as_str())]).map_err(|_| {
                unusable(
                    "does not hold a key (the base64 of 32 bytes); restore it: the channel \
                     secrets sealed with it cannot be read without it"
                        .into(),
                )
            })?;
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !make => Err(unusable(
            "no key there yet (nothing was sealed with one)".into(),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = sealing::generate_key()
                .map_err(|e| unusable(format!("no randomness for a key: {e}")))?;
            std::fs::create_dir_all(data_dir)
                .and_then(|()| telenet_kit::fs::write_private(&path, format!("{key}\n").as_bytes()))
                .map_err(|e| unusable(format!("cannot write it: {e}")))?;
            tracing::info!(path = %path.display(), "made a key to seal channel secrets with");
            Ok(key)
        }
        Err(e) => Err(unusable(format!("cannot read it: {e}"))),
    }
}

/// What the key a count of secrets is sealed under is to this keyring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// The current key: nothing to do.
    Current,
    /// Another key of the keyring: opens, re-sealed by the next pass.
    Old,
    /// A key the keyring does not hold: these secrets cannot be read.
    Missing,
    /// Not sealed (stored before secrets were sealed): re-sealed by the
    /// next pass.
    Plaintext,
}

/// How many stored secrets one key seals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCount {
    /// The key id; `None`: plain text.
    pub key: Option<String>,
    pub count: u64,
    pub state: KeyState,
}

/// What stored channel secrets are sealed under, as seen by one keyring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretsStatus {
    /// The keyring's current key.
    pub current: String,
    /// The keyring's keys.
    pub keyring: Vec<String>,
    /// Counts by key (plain text first), only keys something is sealed under.
    pub by_key: Vec<KeyCount>,
}

impl SecretsStatus {
    /// Secrets not yet under the current key (old keys, missing keys and
    /// plain text).
    pub fn pending(&self) -> u64 {
        self.count_where(|s| s != KeyState::Current)
    }

    /// Secrets under keys the keyring does not hold.
    pub fn missing(&self) -> u64 {
        self.count_where(|s| s == KeyState::Missing)
    }

    /// Keys of the keyring nothing is sealed under any more, except the
    /// current one: they may be removed.
    pub fn unused_keys(&self) -> Vec<&str> {
        self.keyring
            .iter()
            .filter(|id| **id != self.current)
            .filter(|id| {
                !self
                    .by_key
                    .iter()
                    .any(|c| c.key.as_deref() == Some(id.as_str()))
            })
            .map(String::as_str)
            .collect()
    }

    fn count_where(&self, f: impl Fn(KeyState) -> bool) -> u64 {
        self.by_key
            .iter()
            .filter(|c| f(c.state))
            .map(|c| c.count)
            .sum()
    }
}

impl std::fmt::Display for SecretsStatus {
    /// The table `telenet secrets status` prints.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "channel secrets by key (current key: {})", self.current)?;
        if self.by_key.is_empty() {
            writeln!(f, "  (none stored)")?;
        }
        for c in &self.by_key {
            let what = match c.state {
                KeyState::Current => "current",
                KeyState::Old => "old key, re-sealed in the background",
                KeyState::Missing => "NOT IN THE KEYRING: cannot be read until the key is restored",
                KeyState::Plaintext => "not sealed yet, sealed in the background",
            };
            let key = c.key.as_deref().unwrap_or("(plain text)");
            writeln!(f, "  {key:<24} {:>10}  {what}", c.count)?;
        }
        let unused = self.unused_keys();
        if !unused.is_empty() {
            writeln!(
                f,
                "keys nothing is sealed under (may be removed): {}",
                unused.join(", ")
            )?;
        }
        Ok(())
    }
}

/// What one re-sealing pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resealed {
    /// Secrets now sealed under the current key.
    pub resealed: u64,
    /// Secrets that changed under the pass (left as they were).
    pub skipped: u64,
    /// Secrets it could not open (their channels' ids are logged).
    pub unreadable: u64,
}

/// The stored channel secrets of one ingress database under one keyring.
#[derive(Clone)]
pub struct Secrets {
    db: Db,
    keyring: Arc<Keyring>,
    batch: usize,
    metrics: Option<IngressMetrics>,
}

impl Secrets {
    /// The secrets of `db` under `keyring`, re-sealed `batch` per
    /// transaction.
    pub fn new(db: Db, keyring: Arc<Keyring>, batch: usize) -> Self {
        Self {
            db,
            keyring,
            batch: batch.max(1),
            metrics: None,
        }
    }

    /// Reporting progress in `metrics`.
    pub fn with_metrics(mut self, metrics: IngressMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// How many stored secrets each key seals.
    pub async fn status(&self) -> Result<SecretsStatus, Error> {
        let counts = store::secrets_by_key(&self.db).await?;
        let current = self.keyring.current();
        let by_key = counts
            .into_iter()
            .map(|(key, count)| {
                let state = match key.as_deref() {
                    None => KeyState::Plaintext,
                    Some(k) if k == current => KeyState::Current,
                    Some(k) if self.keyring.contains(k) => KeyState::Old,
                    Some(_) => KeyState::Missing,
                };
                KeyCount { key, count, state }
            })
            .collect();
        Ok(SecretsStatus {
            current: current.to_owned(),
            keyring: self.keyring.ids().map(str::to_owned).collect(),
            by_key,
        })
    }

    /// Re-seal under the current key every secret sealed under another key
    /// or stored in plain text, a batch per transaction, until none is left
    /// or `token` is cancelled (between batches).
    pub async fn reseal(&self, token: &CancellationToken) -> Result<Resealed, Error> {
        let current = self.keyring.current();
        let limit = i64::try_from(self.batch).unwrap_or(i64::MAX);
        let mut done = Resealed::default();
        let mut after = String::new();
        while !token.is_cancelled() {
            let batch = store::secrets_not_under(&self.db, current, &after, limit).await?;
            let Some(last) = batch.last() else { break };
            after = last.channel_id.clone();
            let mut sealed = Vec::with_capacity(batch.len());
            for stored in &batch {
                match self.resealed(stored) {
                    Ok(s) => sealed.push((stored, s)),
                    Err(e) => {
                        done.unreadable += 1;
                        tracing::error!(
                            channel_id = %stored.channel_id,
                            workspace_id = %stored.workspace_id,
                            error = %e,
                            "a channel secret cannot be re-sealed"
                        );
                    }
                }
            }
            let mut tx = self.db.begin().await?;
            let mut resealed = 0;
            for (stored, s) in &sealed {
                let (s, config) = s;
                if store::replace_secret(&mut tx, stored, s, config).await? {
                    resealed += 1;
                } else {
                    done.skipped += 1;
                }
            }
            tx.commit().await.map_err(telenet_store::StoreError::from)?;
            done.resealed += resealed;
            if let Some(m) = &self.metrics {
                m.count_resealed(resealed);
            }
            tracing::debug!(
                resealed = done.resealed,
                key = current,
                "re-sealing channel secrets"
            );
        }
        Ok(done)
    }

    /// The stored secret and provider settings sealed under the current key.
    fn resealed(&self, stored: &store::StoredSecret) -> Result<(store::Sealed, String), Error> {
        let (ws, id) = (&stored.workspace_id, &stored.channel_id);
        let secret =
            store::open_secret(&self.keyring, ws, id, &stored.value, stored.key.as_deref())?;
        let config =
            store::open_config(&self.keyring, ws, id, &stored.config, stored.key.as_deref())?;
        Ok((
            store::seal_secret(&self.keyring, ws, id, &secret)?,
            store::seal_config(&self.keyring, ws, id, &config)?,
        ))
    }

    /// One pass: the status, re-sealing when anything is not under the
    /// current key, logged and measured.
    pub async fn pass(&self, token: &CancellationToken) -> Result<Resealed, Error> {
        let before = self.status().await?;
        self.report(&before);
        if before.pending() == 0 {
            if let Some(m) = &self.metrics {
                m.set_unreadable(0);
            }
            return Ok(Resealed::default());
        }
        tracing::info!(
            key = %before.current,
            pending = before.pending(),
            "re-sealing channel secrets under the current key"
        );
        let done = self.reseal(token).await?;
        let after = self.status().await?;
        self.report(&after);
        if let Some(m) = &self.metrics {
            m.set_unreadable(done.unreadable);
        }
        if after.pending() == 0 {
            tracing::info!(
                key = %after.current,
                resealed = done.resealed,
                unused_keys = %after.unused_keys().join(","),
                "channel secrets re-sealed: every one is under the current key"
            );
        } else {
            tracing::warn!(
                key = %after.current,
                resealed = done.resealed,
                left = after.pending(),
                unreadable = done.unreadable,
                missing_keys = %missing_keys(&after),
                "channel secrets re-sealed, some are left under other keys"
            );
        }
        Ok(done)
    }

    fn report(&self, status: &SecretsStatus) {
        if let Some(m) = &self.metrics {
            m.set_status(status);
        }
        if status.missing() > 0 {
            tracing::error!(
                missing_keys = %missing_keys(status),
                secrets = status.missing(),
                "channel secrets are sealed under keys not in ingress.encryption.keys: \
                 their channels cannot be used until the keys are restored"
            );
        }
    }

    /// Until `token` is cancelled: a pass now, then one every `interval`.
    pub async fn run(self, interval: Duration, token: CancellationToken) {
        loop {
            if let Err(e) = self.pass(&token).await {
                tracing::warn!(error = %e, "re-sealing channel secrets failed; trying again later");
            }
            tokio::select! {
                _ = token.cancelled() => break,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}

fn missing_keys(status: &SecretsStatus) -> String {
    status
        .by_key
        .iter()
        .filter(|c| c.state == KeyState::Missing)
        .filter_map(|c| c.key.as_deref())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(current: &str, keys: &[(&str, &str)], local_key: bool) -> EncryptionConfig {
        EncryptionConfig {
            keys: keys
                .iter()
                .map(|(id, key)| ((*id).to_owned(), (*key).to_owned()))
                .collect(),
            current_key: current.to_owned(),
            local_key,
            ..EncryptionConfig::default()
        }
    }

    fn refused(result: Result<Keyring, Error>) -> String {
        match result {
            Err(e @ Error::Config { .. }) => e.to_string(),
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn configured_keys_win_over_the_local_key() {
        let dir = tempfile::tempdir().expect("dir");
        let (a, b) = (
            sealing::generate_key().expect("rng"),
            sealing::generate_key().expect("rng"),
        );
        let ring = keyring(&config("b", &[("a", &a), ("b", &b)], true), dir.path()).expect("ok");
        assert_eq!(ring.current(), "b");
        assert_eq!(ring.ids().collect::<Vec<_>>(), ["a", "b"]);
        let ring = keyring(&config("", &[("a", &a)], false), dir.path()).expect("ok");
        assert_eq!(ring.current(), "a");
        // No local key was made.
        assert!(!dir.path().join(LOCAL_KEY_FILE).exists());
    }

    #[test]
    fn bad_settings_are_refused_naming_the_key() {
        let dir = tempfile::tempdir().expect("dir");
        let a = sealing::generate_key().expect("rng");
        for (config, needle) in [
            (config("", &[], false), "ingress.encryption.keys: no key"),
            (
                config("", &[("a", &a), ("b", &a)], true),
                "ingress.encryption.keys: the keyring has several keys",
            ),
            (
                config("c", &[("a", &a)], true),
                "ingress.encryption.keys: the current key \"c\"",
            ),
            (
                config("", &[("a", "c2hvcnQ=")], true),
                "ingress.encryption.keys: key \"a\" is not the base64 of 32 bytes",
            ),
            (
                config("", &[("a b", &a)], true),
                "ingress.encryption.keys: key id \"a b\"",
            ),
            (
                config("k1", &[], true),
                "ingress.encryption.current_key: \"k1\" is not in ingress.encryption.keys",
            ),
        ] {
            let message = refused(keyring(&config, dir.path()));
            assert!(message.starts_with(needle), "{message}");
            assert!(!message.contains(&a), "{message}");
            assert!(!message.contains("c2hvcnQ="), "{message}");
        }
    }

    #[test]
    fn the_local_key_is_made_once_and_a_damaged_one_is_kept() {
        let dir = tempfile::tempdir().expect("dir");
        let data = dir.path().join("data");
        let local = config("", &[], true);
        let first = keyring(&local, &data).expect("made");
        assert_eq!(first.current(), LOCAL_KEY_ID);
        let sealed = first.seal(b"whsec_x", &["here"]).expect("seal");
        let again = keyring(&config(LOCAL_KEY_ID, &[], true), &data).expect("read");
        assert_eq!(
            again.open(&sealed, &["here"]).expect("same key"),
            b"whsec_x"
        );

        let path = data.join(LOCAL_KEY_FILE);
        std::fs::write(&path, "damaged").expect("write");
        let message = refused(keyring(&local, &data));
        assert!(message.contains("does not hold a key"), "{message}");
        assert_eq!(std::fs::read_to_string(&path).expect("kept"), "damaged");
    }

    #[test]
    fn keys_stay_out_of_debug_output() {
        let a = sealing::generate_key().expect("rng");
        let shown = format!("{:?}", config("a", &[("a", &a)], false));
        assert!(shown.contains("\"a\""), "{shown}");
        assert!(!shown.contains(&a), "{shown}");
        let whole = crate::Config {
            encryption: config("a", &[("a", &a)], false),
            ..crate::Config::default()
        };
        assert!(!format!("{whole:?}").contains(&a));
    }

    #[test]
    fn the_status_names_what_is_left_and_what_may_go() {
        let count = |key: Option<&str>, count, state| KeyCount {
            key: key.map(str::to_owned),
            count,
            state,
        };
        let status = SecretsStatus {
            current: "b".into(),
            keyring: vec!["a".into(), "b".into(), "c".into()],
            by_key: vec![
                count(None, 2, KeyState::Plaintext),
                count(Some("a"), 3, KeyState::Old),
                count(Some("b"), 5, KeyState::Current),
                count(Some("z"), 1, KeyState::Missing),
            ],
        };
        assert_eq!(status.pending(), 6);
        assert_eq!(status.missing(), 1);
        assert_eq!(status.unused_keys(), ["c"]);
        let text = status.to_string();
        for line in [
            "channel secrets by key (current key: b)",
            "(plain text)",
            "NOT IN THE KEYRING",
            "(may be removed): c",
        ] {
            assert!(text.contains(line), "{text}");
        }
    }
}
