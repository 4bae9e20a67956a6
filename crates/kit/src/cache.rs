//! A small bounded cache of answers that go stale: each entry lives for a
//! TTL, at most `capacity` entries are kept (least recently used out first),
//! and an expired entry is dropped when met. For answers another service
//! gave (a token's member, a channel's credentials) that may be a little
//! old but must not be kept forever.

use std::hash::Hash;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hashlink::LruCache;

/// See the module docs. A zero TTL keeps nothing.
#[derive(Debug)]
pub struct TtlCache<K: Hash + Eq, V> {
    ttl: Duration,
    /// Each value with the instant it stops being served.
    entries: Mutex<LruCache<K, (Instant, V)>>,
}

impl<K: Hash + Eq, V: Clone> TtlCache<K, V> {
    /// Entries live for `ttl`; at most `capacity` are kept.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            entries: Mutex::new(LruCache::new(capacity.max(1))),
        }
    }

    /// The value kept for `key`, if younger than the TTL.
    pub fn get(&self, key: &K) -> Option<V> {
        if self.ttl.is_zero() {
            return None;
        }
        let mut entries = self.lock();
        match entries.get(key) {
            Some((until, value)) if Instant::now() < *until => Some(value.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Keep `value` for `key` from now on.
    pub fn insert(&self, key: K, value: V) {
        if self.ttl.is_zero() {
            return;
        }
        self.lock().insert(key, (Instant::now() + self.ttl, value));
    }

    /// Keep `value` for `key` for the TTL, but no later than `until` (an
    /// answer known to go stale then). Nothing is kept if `until` is past.
    pub fn insert_until(&self, key: K, value: V, until: Instant) {
        let now = Instant::now();
        if self.ttl.is_zero() || until <= now {
            return;
        }
        self.lock()
            .insert(key, ((now + self.ttl).min(until), value));
    }

    /// Forget `key` (its answer is known to be wrong now).
    pub fn remove(&self, key: &K) {
        self.lock().remove(key);
    }

    /// How many entries are kept (expired ones not met yet included).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, LruCache<K, (Instant, V)>> {
        // Every update is a single call on the map, so a panic elsewhere
        // cannot leave it inconsistent.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_kept_for_the_ttl() {
        let cache = TtlCache::new(Duration::from_secs(60), 10);
        assert_eq!(cache.get(&"a"), None);
        cache.insert("a", Some(1));
        cache.insert("b", None);
        assert_eq!(cache.get(&"a"), Some(Some(1)));
        assert_eq!(cache.get(&"b"), Some(None), "a negative answer is kept too");
    }

    #[test]
    fn values_expire_after_the_ttl_and_are_dropped_when_met() {
        let cache = TtlCache::new(Duration::from_millis(20), 10);
        cache.insert("a", 1);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(cache.get(&"a"), None);
        assert!(cache.is_empty());
    }

    #[test]
    fn an_entry_ends_at_its_own_deadline_when_sooner_than_the_ttl() {
        let cache = TtlCache::new(Duration::from_secs(60), 10);
        let soon = Instant::now() + Duration::from_millis(20);
        cache.insert_until("a", 1, soon);
        cache.insert_until("b", 2, Instant::now() + Duration::from_secs(3600));
        cache.insert_until("c", 3, Instant::now());
        assert_eq!(cache.get(&"a"), Some(1));
        assert_eq!(cache.get(&"c"), None, "a past deadline keeps nothing");
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(cache.get(&"a"), None);
        assert_eq!(cache.get(&"b"), Some(2), "a later deadline keeps the TTL");
    }

    #[test]
    fn the_least_recently_used_goes_when_full() {
        let cache = TtlCache::new(Duration::from_secs(60), 2);
        cache.insert("a", 1);
        cache.insert("b", 2);
        assert!(cache.get(&"a").is_some());
        cache.insert("c", 3);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&"b"), None, "b was used least recently");
        assert!(cache.get(&"a").is_some());
        assert!(cache.get(&"c").is_some());
    }

    #[test]
    fn removed_and_zero_ttl_keep_nothing() {
        let cache = TtlCache::new(Duration::from_secs(60), 10);
        cache.insert("a", 1);
        cache.remove(&"a");
        assert_eq!(cache.get(&"a"), None);
        let none = TtlCache::new(Duration::ZERO, 10);
        none.insert("a", 1);
        assert_eq!(none.get(&"a"), None);
        assert!(none.is_empty());
    }
}
