//! Accounts and prices served from memory, so a request's `authorize` and `settle` do not each
//! wait for an SQLite read on the blocking pool (DESIGN §8: keep the hot path off the disk).
//!
//! Exactness comes from three rules:
//! - every balance this process changes is written into the cache by the ledger writer, in
//!   commit order, right after the commit ([`ReadCache::modify`]);
//! - every other write this process makes to what is cached (a user's `balance_unlimited`, a
//!   model's prices, a user deleted) empties the cache ([`ReadCache::clear`]);
//! - a value read from the database is kept only if nothing was written into the cache while
//!   it was being read (a generation count), so a read that raced a commit cannot put an older
//!   balance back.
//!
//! Anything written to the file from outside this process (another process on the same file,
//! a hand edit) shows after at most [`TTL`]: every entry is read again once it is that old.
//! A charge itself never trusts the cache: its transaction reads the balance it moves.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How long an entry is served before it is read again.
pub const TTL: Duration = Duration::from_secs(1);

/// The most entries one cache holds; past it, stale entries are dropped, then all of them.
pub const MAX_ENTRIES: usize = 65_536;

/// Values by key, each served for [`TTL`] after it was read.
#[derive(Debug, Default)]
pub struct ReadCache<V> {
    inner: Mutex<Inner<V>>,
}

#[derive(Debug)]
struct Inner<V> {
    entries: HashMap<String, Entry<V>>,
    /// Counts the writes into the cache; a read inserts only if it did not move.
    generation: u64,
}

impl<V> Default for Inner<V> {
    fn default() -> Self {
        Inner {
            entries: HashMap::new(),
            generation: 0,
        }
    }
}

#[derive(Debug)]
struct Entry<V> {
    value: V,
    read_at: Instant,
}

/// The cache's state before a database read, to hand back with its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadTicket(u64);

impl<V: Clone> ReadCache<V> {
    /// The fresh value of `key`, if there is one.
    pub fn get(&self, key: &str) -> Option<V> {
        let inner = self.lock();
        let entry = inner.entries.get(key)?;
        (entry.read_at.elapsed() < TTL).then(|| entry.value.clone())
    }

    /// Taken before reading `key` from the database; see [`ReadCache::insert`].
    pub fn ticket(&self) -> ReadTicket {
        ReadTicket(self.lock().generation)
    }

    /// Keeps `value`, read from the database after `ticket` was taken, unless the cache was
    /// written since (then the read may be older than what was written, and is dropped).
    pub fn insert(&self, key: &str, value: V, ticket: ReadTicket) {
        let mut inner = self.lock();
        if inner.generation != ticket.0 {
            return;
        }
        if inner.entries.len() >= MAX_ENTRIES && !inner.entries.contains_key(key) {
            inner
                .entries
                .retain(|_, entry| entry.read_at.elapsed() < TTL);
            if inner.entries.len() >= MAX_ENTRIES {
                inner.entries.clear();
            }
        }
        let entry = Entry {
            value,
            read_at: Instant::now(),
        };
        inner.entries.insert(key.to_owned(), entry);
    }

    /// Changes the cached value of each key that has one (keeping when it was read), as one
    /// write: a committed change this process made.
    pub fn modify<'k>(&self, changes: impl IntoIterator<Item = (&'k str, impl FnOnce(&mut V))>) {
        let mut inner = self.lock();
        inner.generation = inner.generation.wrapping_add(1);
        for (key, change) in changes {
            if let Some(entry) = inner.entries.get_mut(key) {
                change(&mut entry.value);
            }
        }
    }

    /// Forgets the entry of `key`: it changed in a way the cache cannot follow.
    pub fn forget(&self, key: &str) {
        let mut inner = self.lock();
        inner.generation = inner.generation.wrapping_add(1);
        inner.entries.remove(key);
    }

    /// Forgets every entry: something they were read from changed.
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.generation = inner.generation.wrapping_add(1);
        inner.entries.clear();
    }

    fn lock(&self) -> MutexGuard<'_, Inner<V>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_is_served_until_it_is_cleared() {
        let cache = ReadCache::<i64>::default();
        assert_eq!(cache.get("u"), None);
        let ticket = cache.ticket();
        cache.insert("u", 5, ticket);
        assert_eq!(cache.get("u"), Some(5));
        cache.clear();
        assert_eq!(cache.get("u"), None);
    }

    #[test]
    fn a_read_that_raced_a_write_is_dropped() {
        let cache = ReadCache::<i64>::default();
        let ticket = cache.ticket();
        cache.insert("u", 5, ticket);
        let racing = cache.ticket();
        cache.modify([("u", |balance: &mut i64| *balance = 3)]);
        // Read before the write committed: older than what the cache now holds.
        cache.insert("u", 5, racing);
        assert_eq!(cache.get("u"), Some(3));
    }

    #[test]
    fn modify_changes_only_what_is_cached() {
        let cache = ReadCache::<i64>::default();
        cache.modify([("absent", |balance: &mut i64| *balance = 1)]);
        assert_eq!(cache.get("absent"), None);
    }

    #[test]
    fn the_cache_stays_bounded() {
        let cache = ReadCache::<usize>::default();
        for index in 0..=MAX_ENTRIES {
            let ticket = cache.ticket();
            cache.insert(&index.to_string(), index, ticket);
        }
        assert!(cache.lock().entries.len() <= MAX_ENTRIES);
        assert_eq!(cache.get(&MAX_ENTRIES.to_string()), Some(MAX_ENTRIES));
    }
}
