//! Rate limits in this process's memory: for the dev server (one process)
//! and tests. Replicas do not share it.

use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use async_trait::async_trait;
use hashlink::LruCache;

use crate::{Cell, Decision, RateLimitError, RateLimitStore, Step, gcra};

/// Keys kept at most by default; past it the least recently used key is
/// forgotten (and starts again with a full burst).
pub const DEFAULT_CAPACITY: usize = 100_000;

/// A bounded map of key → TAT (µs since the store was made).
#[derive(Debug)]
pub struct MemoryStore {
    origin: Instant,
    tats: Mutex<LruCache<String, u64>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl MemoryStore {
    /// A store remembering at most `capacity` keys.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            origin: Instant::now(),
            tats: Mutex::new(LruCache::new(capacity.max(1))),
        }
    }

    /// How many keys are remembered.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> MutexGuard<'_, LruCache<String, u64>> {
        match self.tats.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

#[async_trait]
impl RateLimitStore for MemoryStore {
    async fn check(&self, cells: &[Cell<'_>]) -> Result<Decision, RateLimitError> {
        let now = self.now();
        let mut tats = self.lock();
        let mut updates = Vec::with_capacity(cells.len());
        let mut remaining = u32::MAX;
        let mut refused: Option<(u64, usize)> = None;
        for (index, cell) in cells.iter().enumerate() {
            let tat = tats.get(cell.key).copied();
            match gcra(now, tat, &cell.quota) {
                Step::Allowed {
                    new_tat,
                    remaining: left,
                } => {
                    remaining = remaining.min(left);
                    updates.push((cell.key, new_tat));
                }
                Step::Refused { wait } => {
                    if refused.is_none_or(|(longest, _)| wait > longest) {
                        refused = Some((wait, index));
                    }
                }
            }
        }
        if let Some((wait, by)) = refused {
            return Ok(Decision::Limited {
                retry_after: std::time::Duration::from_micros(wait),
                by,
            });
        }
        for (key, new_tat) in updates {
            tats.insert(key.to_owned(), new_tat);
        }
        Ok(Decision::Allowed { remaining })
    }

    async fn ping(&self) -> Result<(), RateLimitError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Quota;

    #[tokio::test]
    async fn the_map_is_bounded_and_forgets_the_least_recently_used_key() {
        let store = MemoryStore::with_capacity(2);
        let quota = Quota::per_second(1, 1).unwrap_or_else(|e| panic!("{e}"));
        let check = |key: &'static str| {
            let store = &store;
            async move {
                store
                    .check(&[Cell { key, quota }])
                    .await
                    .unwrap_or_else(|e| panic!("{e}"))
            }
        };
        assert!(matches!(check("a").await, Decision::Allowed { .. }));
        assert!(matches!(check("b").await, Decision::Allowed { .. }));
        assert!(matches!(check("c").await, Decision::Allowed { .. }));
        assert_eq!(store.len(), 2, "bounded");
        // `a` was forgotten: a full burst again; `c` is still limited.
        assert!(matches!(check("a").await, Decision::Allowed { .. }));
        assert!(matches!(check("c").await, Decision::Limited { .. }));
    }
}
