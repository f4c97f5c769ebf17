//! The authenticate phase: find the API key a request carries (`Authorization: Bearer sk-…`
//! or `x-api-key: sk-…`), check it against its stored hash, and answer the key's policy.
//! Every failure is the same `401`, so a caller learns nothing about which check failed.
//!
//! Verified keys are cached in memory for [`KEY_CACHE_TTL`], and the whole cache is emptied by
//! every dashboard write to a user or a key ([`Authenticator::invalidate_all`]): a key that is
//! disabled, deleted or edited takes effect on the next request; a change made to the database
//! by other means, within the TTL. Expiry is checked on every request, cached or not. A limited
//! key's quota is followed between reads by the charges committed to it
//! ([`Authenticator::quota_left`]). Each success is noted for `last_used_at`, which
//! [`LastUsed`] writes in batches, off the request's path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hyper::HeaderMap;
use hyper::header::AUTHORIZATION;
use sha2::{Digest, Sha256};

use super::error::GatewayError;
use super::last_used::LastUsed;
use crate::cidr::IpRange;
use crate::db::{Database, DbError, api_keys, clock, users};
use crate::money::{Multiplier, NanoUsd};
use crate::secret::constant_time_eq;

/// How long a verified key is believed without asking the database again.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(5);

/// The most verified keys kept; past it the cache is emptied (cheap and bounded).
const KEY_CACHE_CAPACITY: usize = 10_000;

/// The hash under which an API key (or session token) is stored: the lowercase hex SHA-256
/// of its UTF-8 bytes. Keys are random and long, so a fast unsalted hash is enough to make
/// a leaked table useless; this is the one definition, and whatever stores a key (the
/// dashboard through `crypto.hash-secret`) must use it.
pub fn hash_api_key(key: &str) -> String {
    crate::db::lower_hex(&Sha256::digest(key.as_bytes()))
}

/// The token of an `Authorization: Bearer …` header (the scheme in any case).
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, token) = value.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
}

/// The API key a request carries: `Authorization: Bearer …` first, else `x-api-key`.
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    bearer_token(headers)
        .or_else(|| {
            headers
                .get("x-api-key")
                .and_then(|value| value.to_str().ok())
                .map(str::trim)
        })
        .filter(|key| !key.is_empty())
}

/// A verified key and the policy that comes with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedKey {
    /// `api_keys.id`.
    pub key_id: String,
    /// The owner.
    pub user_id: String,
    /// When it stops working (RFC 3339 canonical form); `None`: never.
    pub expires_at: Option<String>,
    /// The models it may use; `None`: any.
    pub model_limits: Option<Vec<String>>,
    /// The client addresses it may be used from; empty: any.
    pub ip_whitelist: Vec<IpRange>,
    /// The provider group it is confined to; `None`: any provider.
    pub group: Option<String>,
    /// Its multiplier ceiling; `None`: none.
    pub max_multiplier: Option<Multiplier>,
    /// The quota it had left when verified (each charge is also taken from it); `None`:
    /// unlimited.
    pub quota: Option<NanoUsd>,
}

impl VerifiedKey {
    fn expired(&self) -> bool {
        // Canonical timestamps (fixed-width UTC) order as text.
        self.expires_at
            .as_deref()
            .is_some_and(|expires_at| expires_at <= clock::now().as_str())
    }
}

/// Verified keys by the hash of their text, with when they were verified.
type KeyCache = HashMap<String, (Instant, Arc<VerifiedKey>)>;

/// The authenticate phase, with its cache of verified keys.
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    cache: Arc<Mutex<KeyCache>>,
    /// What each limited key was charged since it was last read from the database.
    spent: Arc<Mutex<HashMap<String, NanoUsd>>>,
    last_used: LastUsed,
}

impl Authenticator {
    /// An authenticator with an empty cache.
    pub fn new() -> Self {
        Authenticator::default()
    }

    /// An authenticator whose `last_used_at` batches are written every `interval`.
    pub fn with_flush_interval(interval: Duration) -> Self {
        Authenticator {
            cache: Arc::default(),
            spent: Arc::default(),
            last_used: LastUsed::new(interval),
        }
    }

    /// The `last_used_at` batcher.
    pub fn last_used(&self) -> &LastUsed {
        &self.last_used
    }

    /// Forgets every verified key, so the next request of each is checked against the
    /// database again; called after every write to a user or an API key.
    pub fn invalidate_all(&self) {
        self.cache().clear();
        lock(&self.spent).clear();
    }

    /// The quota `key` has left now: what it had when read from the database, less what it was
    /// charged since (see [`Authenticator::note_charge`]), so a key is refused as soon as the
    /// charges that used its quota up are committed, not only when it is next read. `None`:
    /// unlimited. (A charge committed while the key is being read again may be counted twice
    /// or not at all until the read after; the stored quota, debited in each charge's
    /// transaction, is always exact.)
    pub fn quota_left(&self, key: &VerifiedKey) -> Option<NanoUsd> {
        let quota = key.quota?;
        let spent = lock(&self.spent)
            .get(&key.key_id)
            .copied()
            .unwrap_or(NanoUsd::ZERO);
        Some(quota.checked_sub(spent).unwrap_or(NanoUsd(i64::MIN)))
    }

    /// Counts `amount`, committed to the quota of the limited key `key_id`, until the key is
    /// read from the database again (which then holds it).
    pub fn note_charge(&self, key_id: &str, amount: NanoUsd) {
        let mut spent = lock(&self.spent);
        let total = spent.entry(key_id.to_owned()).or_insert(NanoUsd::ZERO);
        *total = total.checked_add(amount).unwrap_or(NanoUsd(i64::MAX));
    }

    fn cache(&self) -> MutexGuard<'_, KeyCache> {
        lock(&self.cache)
    }

    /// Verifies the key in `headers`; any failure is [`GatewayError::Unauthorized`].
    pub async fn authenticate(
        &self,
        db: &Database,
        headers: &HeaderMap,
    ) -> Result<Arc<VerifiedKey>, GatewayError> {
        let key = presented_key(headers).ok_or(GatewayError::Unauthorized)?;
        let hash = hash_api_key(key);
        let cached = self
            .cache()
            .get(&hash)
            .filter(|(at, _)| at.elapsed() < KEY_CACHE_TTL)
            .map(|(_, verified)| Arc::clone(verified));
        let verified = match cached {
            Some(verified) => verified,
            None => {
                let prefix = api_keys::key_prefix(key).to_owned();
                let lookup_hash = hash.clone();
                let found = db
                    .read(move |conn| verify(conn, &prefix, &lookup_hash))
                    .await
                    .map_err(|error| {
                        tracing::warn!(%error, "API key lookup failed");
                        GatewayError::Unauthorized
                    })?
                    .ok_or(GatewayError::Unauthorized)?;
                let verified = Arc::new(found);
                // The stored quota holds every charge committed before it was read.
                lock(&self.spent).remove(&verified.key_id);
                let mut cache = self.cache();
                if cache.len() >= KEY_CACHE_CAPACITY {
                    cache.clear();
                    lock(&self.spent).clear();
                }
                cache.insert(hash, (Instant::now(), Arc::clone(&verified)));
                verified
            }
        };
        if verified.expired() {
            return Err(GatewayError::Unauthorized);
        }
        self.last_used.note(db, &verified.key_id);
        Ok(verified)
    }
}

/// The maps only hold finished values, so a panic elsewhere leaves them consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The key with `prefix` and `hash` if it is enabled and its user is; `None` otherwise.
fn verify(
    conn: &rusqlite::Connection,
    prefix: &str,
    hash: &str,
) -> Result<Option<VerifiedKey>, DbError> {
    for row in api_keys::by_prefix(conn, prefix)? {
        if !constant_time_eq(row.key_hash.as_bytes(), hash.as_bytes()) || !row.enabled {
            continue;
        }
        let user_enabled = users::get(conn, &row.user_id)?.is_some_and(|user| user.enabled);
        if !user_enabled {
            return Ok(None);
        }
        let ip_whitelist = row
            .ip_whitelist
            .iter()
            .filter_map(|entry| match entry.parse::<IpRange>() {
                Ok(range) => Some(range),
                Err(error) => {
                    // An unparsable entry allows nothing; the others still apply. A whitelist
                    // made only of bad entries must not turn into "any address".
                    tracing::warn!(key_id = %row.id, %error, "ignoring an IP whitelist entry");
                    None
                }
            })
            .collect::<Vec<_>>();
        let ip_whitelist = if ip_whitelist.is_empty() && !row.ip_whitelist.is_empty() {
            // Nothing valid: a range that matches no real client.
            vec![IpRange::NOTHING]
        } else {
            ip_whitelist
        };
        return Ok(Some(VerifiedKey {
            key_id: row.id,
            user_id: row.user_id,
            expires_at: row.expires_at,
            model_limits: row.model_limits_enabled.then_some(row.model_limits),
            ip_whitelist,
            group: row.token_group.filter(|group| !group.is_empty()),
            max_multiplier: row.max_multiplier,
            quota: (!row.quota_unlimited).then(|| row.quota_remaining.unwrap_or(NanoUsd::ZERO)),
        }));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn keys_hash_to_hex_sha256() {
        assert_eq!(
            hash_api_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn keys_come_from_either_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(presented_key(&headers), None);
        headers.insert("x-api-key", HeaderValue::from_static("sk-b"));
        assert_eq!(presented_key(&headers), Some("sk-b"));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer sk-a"));
        assert_eq!(presented_key(&headers), Some("sk-a"));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Basic xyz"));
        assert_eq!(presented_key(&headers), Some("sk-b"));
    }
}
