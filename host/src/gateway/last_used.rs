//! `api_keys.last_used_at`, written in batches (DESIGN §8): the authenticate phase only notes
//! in memory which key was used when; a background task writes the notes every flush
//! interval, one transaction for all of them, one row per key however often it was used. The
//! hot path never touches the database.
//!
//! What is still unwritten when the gateway shuts down is written when the last handle goes
//! away (the server's state is dropped after its connections have finished), so a clean stop
//! loses nothing; a crash loses at most one interval of `last_used_at`, which is a hint, not a
//! record.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use crate::db::{Database, api_keys, clock};

/// How often noted uses are written when nothing else is configured.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// The most keys noted between two flushes; past it a use is not noted (the next flush makes
/// room). Bounds the memory a flood of distinct keys can take.
const MAX_PENDING: usize = 100_000;

/// The last use of each key since the last flush, in ms since the Unix epoch.
type Pending = HashMap<String, i64>;

/// Notes key uses and writes them in batches; cheap to clone, all clones share one batch.
#[derive(Debug, Clone)]
pub struct LastUsed {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    interval: Duration,
    pending: Mutex<Pending>,
    /// The database, known from the first use on; the flusher starts then.
    db: OnceLock<Database>,
    stats: Arc<FlushStats>,
}

/// What the batcher has written so far; readable without keeping the batcher alive.
#[derive(Debug, Default)]
pub struct FlushStats {
    flushes: AtomicU64,
    rows: AtomicU64,
}

impl FlushStats {
    /// How many batches were written (each one transaction).
    pub fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    /// How many key uses were written (at most one per key per batch).
    pub fn rows_written(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    fn count(&self, uses: usize) {
        self.flushes.fetch_add(1, Ordering::Relaxed);
        self.rows.fetch_add(uses as u64, Ordering::Relaxed);
    }
}

impl Default for LastUsed {
    fn default() -> Self {
        LastUsed::new(DEFAULT_FLUSH_INTERVAL)
    }
}

impl LastUsed {
    /// A batcher that writes every `interval` (at least 1 ms).
    pub fn new(interval: Duration) -> Self {
        LastUsed {
            shared: Arc::new(Shared {
                interval: interval.max(Duration::from_millis(1)),
                pending: Mutex::default(),
                db: OnceLock::new(),
                stats: Arc::default(),
            }),
        }
    }

    /// Notes that `key_id` was used now. The first call starts the flusher on the current
    /// tokio runtime, writing to `db`.
    pub fn note(&self, db: &Database, key_id: &str) {
        let now = clock::now_unix_millis();
        {
            let mut pending = self.shared.pending();
            let room = pending.len() < MAX_PENDING;
            match pending.get_mut(key_id) {
                Some(used_at) => *used_at = (*used_at).max(now),
                None if room => {
                    pending.insert(key_id.to_owned(), now);
                }
                None => {}
            }
        }
        if self.shared.db.get().is_none()
            && self.shared.db.set(db.clone()).is_ok()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(run_flusher(Arc::downgrade(&self.shared)));
        }
    }

    /// Writes what is noted now, without waiting for the next interval.
    pub async fn flush(&self) {
        self.shared.flush().await;
    }

    /// What it has written so far.
    pub fn stats(&self) -> Arc<FlushStats> {
        Arc::clone(&self.shared.stats)
    }
}

/// Flushes every interval while a handle lives.
async fn run_flusher(shared: Weak<Shared>) {
    let Some(interval) = shared.upgrade().map(|shared| shared.interval) else {
        return;
    };
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.flush().await;
    }
}

impl Shared {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        // The map holds plain values, so a panic elsewhere leaves it consistent.
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The noted uses, as `(key id, timestamp)`, leaving none noted.
    fn take(&self) -> Vec<(String, String)> {
        std::mem::take(&mut *self.pending())
            .into_iter()
            .map(|(key_id, millis)| (key_id, clock::format_unix_millis(millis)))
            .collect()
    }

    async fn flush(&self) {
        let Some(db) = self.db.get() else {
            return;
        };
        let uses = self.take();
        if uses.is_empty() {
            return;
        }
        let written = uses.len();
        match db
            .write(move |tx| api_keys::touch_last_used_batch(tx, &uses))
            .await
        {
            Ok(_) => self.stats.count(written),
            Err(error) => tracing::warn!(%error, "writing api_keys.last_used_at failed"),
        }
    }
}

impl Drop for Shared {
    /// The last handle is gone (the server stopped): write what is left, synchronously.
    fn drop(&mut self) {
        let Some(db) = self.db.get() else {
            return;
        };
        let uses = self.take();
        if uses.is_empty() {
            return;
        }
        let written = uses.len();
        match db.write_blocking(move |tx| api_keys::touch_last_used_batch(tx, &uses)) {
            Ok(_) => self.stats.count(written),
            Err(error) => {
                tracing::warn!(%error, "writing api_keys.last_used_at at shutdown failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::users::{self, NewUser, Role};

    fn key(db: &Database) -> String {
        db.write_blocking(|tx| {
            let user = users::insert(tx, &NewUser::new("u", "h", Role::User))?;
            let key = api_keys::NewApiKey::new(&user.id, "k", "sk-012345678", "hash");
            Ok(api_keys::insert(tx, &key)?.id)
        })
        .unwrap()
    }

    fn last_used(db: &Database, id: &str) -> Option<String> {
        let id = id.to_owned();
        db.read_blocking(move |conn| Ok(api_keys::get(conn, &id)?.and_then(|k| k.last_used_at)))
            .unwrap()
    }

    #[tokio::test]
    async fn uses_are_deduplicated_into_one_write() {
        let db = Database::open_in_memory().unwrap();
        let id = key(&db);
        let batcher = LastUsed::new(Duration::from_secs(3600));
        for _ in 0..100 {
            batcher.note(&db, &id);
        }
        assert_eq!(last_used(&db, &id), None, "noting never writes");
        batcher.flush().await;
        assert!(last_used(&db, &id).is_some());
        let stats = batcher.stats();
        assert_eq!((stats.flushes(), stats.rows_written()), (1, 1));
        batcher.flush().await;
        assert_eq!(stats.flushes(), 1, "nothing noted, nothing written");
    }

    #[tokio::test]
    async fn the_last_handle_writes_what_is_left() {
        let db = Database::open_in_memory().unwrap();
        let id = key(&db);
        let batcher = LastUsed::new(Duration::from_secs(3600));
        batcher.note(&db, &id);
        let stats = batcher.stats();
        drop(batcher);
        assert!(last_used(&db, &id).is_some());
        assert_eq!(stats.flushes(), 1);
    }
}
