//! A small in-process cache of recently read values, shared by a store's
//! clones. What may be cached, and for how long, is each user's decision:
//! see `users` (tokens), `environments` and `requests` (documents that
//! commands decide on, guarded by their versions when they write).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Recent<V> {
    entries: Mutex<HashMap<String, (V, Instant)>>,
    ttl: Duration,
    /// Most entries kept; a full cache starts again empty.
    capacity: usize,
}

impl<V: Clone> Recent<V> {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            entries: Mutex::default(),
            ttl,
            capacity,
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, (V, Instant)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, key: &str) -> Option<V> {
        self.entries()
            .get(key)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(value, _)| value.clone())
    }

    pub fn put(&self, key: String, value: V) {
        let mut entries = self.entries();
        if entries.len() >= self.capacity {
            entries.clear();
        }
        entries.insert(key, (value, Instant::now()));
    }

    pub fn clear(&self) {
        self.entries().clear();
    }

    pub fn forget(&self, key: &str) {
        self.entries().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_expire_and_a_full_cache_starts_again() {
        let cache = Recent::new(Duration::from_secs(60), 2);
        cache.put("a".into(), 1);
        cache.put("b".into(), 2);
        assert_eq!((cache.get("a"), cache.get("b")), (Some(1), Some(2)));
        cache.put("c".into(), 3);
        assert_eq!((cache.get("a"), cache.get("c")), (None, Some(3)));
        cache.forget("c");
        assert_eq!(cache.get("c"), None);
        let expired = Recent::new(Duration::ZERO, 2);
        expired.put("a".into(), 1);
        assert_eq!(expired.get("a"), None);
    }
}
