//! The `api_keys` table (DBO1). A key is stored as its first [`KEY_PREFIX_CHARS`] characters
//! (the indexed lookup) and a hash of the whole key; the full text exists only in the answer
//! to its creation.

use rusqlite::{Connection, Row, Transaction, params};

use super::{
    DbError, clock, collect, expect_one, first, json_strings, new_id, parse_optional_column,
    require_json, to_json_strings,
};
use crate::money::{Multiplier, NanoUsd};

/// How many leading characters of a key are stored in `key_prefix`.
pub const KEY_PREFIX_CHARS: usize = 12;

/// The stored prefix of `key`: its first [`KEY_PREFIX_CHARS`] characters.
pub fn key_prefix(key: &str) -> &str {
    match key.char_indices().nth(KEY_PREFIX_CHARS) {
        Some((end, _)) => &key[..end],
        None => key,
    }
}

/// One row of `api_keys`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRow {
    /// Primary key.
    pub id: String,
    /// The owner (cascade on delete).
    pub user_id: String,
    /// The owner's label for it.
    pub name: String,
    /// The key's first characters, for lookup.
    pub key_prefix: String,
    /// The hash of the whole key.
    pub key_hash: String,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it stops working (RFC 3339); `None`: never.
    pub expires_at: Option<String>,
    /// When it was last used (RFC 3339), batched (DESIGN §8).
    pub last_used_at: Option<String>,
    /// Whether it may be used.
    pub enabled: bool,
    /// The quota left when limited.
    pub quota_remaining: Option<NanoUsd>,
    /// Whether the quota is ignored.
    pub quota_unlimited: bool,
    /// Whether `model_limits` applies.
    pub model_limits_enabled: bool,
    /// The logical models the key may use when limited.
    pub model_limits: Vec<String>,
    /// Client addresses or CIDRs allowed; empty: any.
    pub ip_whitelist: Vec<String>,
    /// The provider group the key is confined to; `None`: any provider.
    pub token_group: Option<String>,
    /// The multiplier ceiling; `None`: no ceiling.
    pub max_multiplier: Option<Multiplier>,
    /// Request transforms as JSON text.
    pub transforms_json: String,
}

/// What [`insert`] needs; [`NewApiKey::new`] fills the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    /// The owner.
    pub user_id: String,
    /// The owner's label.
    pub name: String,
    /// The key's first [`KEY_PREFIX_CHARS`] characters (see [`key_prefix`]).
    pub key_prefix: String,
    /// The hash of the whole key.
    pub key_hash: String,
    /// When it stops working (any RFC 3339 form); `None`: never.
    pub expires_at: Option<String>,
    /// Whether it may be used.
    pub enabled: bool,
    /// The quota when limited.
    pub quota_remaining: Option<NanoUsd>,
    /// Whether the quota is ignored.
    pub quota_unlimited: bool,
    /// Whether `model_limits` applies.
    pub model_limits_enabled: bool,
    /// The models allowed when limited.
    pub model_limits: Vec<String>,
    /// Allowed client addresses; empty: any.
    pub ip_whitelist: Vec<String>,
    /// The provider group; `None`: any provider.
    pub token_group: Option<String>,
    /// The multiplier ceiling.
    pub max_multiplier: Option<Multiplier>,
    /// Request transforms as JSON text.
    pub transforms_json: String,
}

impl NewApiKey {
    /// An enabled, never-expiring key without limits.
    pub fn new(user_id: &str, name: &str, key_prefix: &str, key_hash: &str) -> NewApiKey {
        NewApiKey {
            user_id: user_id.to_owned(),
            name: name.to_owned(),
            key_prefix: key_prefix.to_owned(),
            key_hash: key_hash.to_owned(),
            expires_at: None,
            enabled: true,
            quota_remaining: None,
            quota_unlimited: true,
            model_limits_enabled: false,
            model_limits: Vec::new(),
            ip_whitelist: Vec::new(),
            token_group: None,
            max_multiplier: None,
            transforms_json: "[]".to_owned(),
        }
    }
}

const COLUMNS: &str = "id, user_id, name, key_prefix, key_hash, created_at, expires_at, \
                       last_used_at, enabled, quota_remaining, quota_unlimited, \
                       model_limits_enabled, model_limits, ip_whitelist, token_group, \
                       max_multiplier, transforms";

impl ApiKeyRow {
    fn from_row(row: &Row<'_>) -> Result<ApiKeyRow, DbError> {
        Ok(ApiKeyRow {
            id: row.get("id")?,
            user_id: row.get("user_id")?,
            name: row.get("name")?,
            key_prefix: row.get("key_prefix")?,
            key_hash: row.get("key_hash")?,
            created_at: row.get("created_at")?,
            expires_at: row.get("expires_at")?,
            last_used_at: row.get("last_used_at")?,
            enabled: row.get("enabled")?,
            quota_remaining: parse_optional_column(row, "quota_remaining")?,
            quota_unlimited: row.get("quota_unlimited")?,
            model_limits_enabled: row.get("model_limits_enabled")?,
            model_limits: json_strings(row, "model_limits")?,
            ip_whitelist: json_strings(row, "ip_whitelist")?,
            token_group: row.get("token_group")?,
            max_multiplier: parse_optional_column(row, "max_multiplier")?,
            transforms_json: row.get("transforms")?,
        })
    }
}

fn canonical_expiry(expires_at: Option<&str>) -> Result<Option<String>, DbError> {
    expires_at
        .map(|text| {
            clock::canonical(text).ok_or_else(|| {
                DbError::Invalid("expires_at is not an RFC 3339 timestamp".to_owned())
            })
        })
        .transpose()
}

/// Inserts a key with a new id; a duplicate key hash is `Conflict`.
pub fn insert(tx: &Transaction<'_>, new: &NewApiKey) -> Result<ApiKeyRow, DbError> {
    require_json("transforms", &new.transforms_json)?;
    let id = new_id()?;
    tx.prepare_cached(&format!(
        "INSERT INTO api_keys ({COLUMNS}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"
    ))?
    .execute(params![
        id,
        new.user_id,
        new.name,
        new.key_prefix,
        new.key_hash,
        clock::now(),
        canonical_expiry(new.expires_at.as_deref())?,
        new.enabled,
        new.quota_remaining.map(|quota| quota.to_string()),
        new.quota_unlimited,
        new.model_limits_enabled,
        to_json_strings(&new.model_limits),
        to_json_strings(&new.ip_whitelist),
        new.token_group,
        new.max_multiplier.map(|ceiling| ceiling.to_string()),
        new.transforms_json,
    ])?;
    get(tx, &id)?.ok_or_else(|| DbError::NotFound(format!("api key {id}")))
}

/// The key `id`, if it exists.
pub fn get(conn: &Connection, id: &str) -> Result<Option<ApiKeyRow>, DbError> {
    let mut statement =
        conn.prepare_cached(&format!("SELECT {COLUMNS} FROM api_keys WHERE id = ?1"))?;
    first(statement.query([id])?, ApiKeyRow::from_row)
}

/// Every key whose stored prefix is `prefix` (usually one; the caller checks the hash).
pub fn by_prefix(conn: &Connection, prefix: &str) -> Result<Vec<ApiKeyRow>, DbError> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM api_keys WHERE key_prefix = ?1"
    ))?;
    collect(statement.query([prefix])?, ApiKeyRow::from_row)
}

/// Every key of `user_id`, newest first.
pub fn list_for_user(conn: &Connection, user_id: &str) -> Result<Vec<ApiKeyRow>, DbError> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM api_keys WHERE user_id = ?1 ORDER BY created_at DESC, id"
    ))?;
    collect(statement.query([user_id])?, ApiKeyRow::from_row)
}

/// Every key, newest first.
pub fn list_all(conn: &Connection) -> Result<Vec<ApiKeyRow>, DbError> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM api_keys ORDER BY created_at DESC, id"
    ))?;
    collect(statement.query([])?, ApiKeyRow::from_row)
}

/// Writes `key`'s settings (name, expiry, enabled, quota, model limits, IP whitelist, group,
/// multiplier ceiling, transforms) and answers the stored row. The owner, prefix, hash and
/// timestamps are not changed.
pub fn update(tx: &Transaction<'_>, key: &ApiKeyRow) -> Result<ApiKeyRow, DbError> {
    require_json("transforms", &key.transforms_json)?;
    let changed = tx
        .prepare_cached(
            "UPDATE api_keys SET name = ?2, expires_at = ?3, enabled = ?4, quota_remaining = ?5, \
             quota_unlimited = ?6, model_limits_enabled = ?7, model_limits = ?8, \
             ip_whitelist = ?9, token_group = ?10, max_multiplier = ?11, transforms = ?12 \
             WHERE id = ?1",
        )?
        .execute(params![
            key.id,
            key.name,
            canonical_expiry(key.expires_at.as_deref())?,
            key.enabled,
            key.quota_remaining.map(|quota| quota.to_string()),
            key.quota_unlimited,
            key.model_limits_enabled,
            to_json_strings(&key.model_limits),
            to_json_strings(&key.ip_whitelist),
            key.token_group,
            key.max_multiplier.map(|ceiling| ceiling.to_string()),
            key.transforms_json,
        ])?;
    expect_one(changed, || format!("api key {}", key.id))?;
    get(tx, &key.id)?.ok_or_else(|| DbError::NotFound(format!("api key {}", key.id)))
}

/// Takes `amount` from the quota of key `id` in the caller's transaction (the charge of a
/// request it made, beside its ledger row) and answers the quota left; `None` when the key's
/// quota is unlimited or the key is gone (deleted while its request ran), and nothing changes.
/// Like a balance, a quota is debited in full even below zero: a served request is billed, and
/// the key is refused from then on. A limited key without a stored quota has none left.
pub(crate) fn debit_quota(
    tx: &Transaction<'_>,
    id: &str,
    amount: NanoUsd,
) -> Result<Option<NanoUsd>, DbError> {
    let mut statement =
        tx.prepare_cached("SELECT quota_remaining, quota_unlimited FROM api_keys WHERE id = ?1")?;
    let found = first(statement.query([id])?, |row| {
        Ok((
            parse_optional_column::<NanoUsd>(row, "quota_remaining")?,
            row.get::<_, bool>("quota_unlimited")?,
        ))
    })?;
    let Some((remaining, false)) = found else {
        return Ok(None);
    };
    let left = remaining
        .unwrap_or(NanoUsd::ZERO)
        .checked_sub(amount)
        .ok_or_else(|| DbError::Invalid(format!("the quota of api key {id} would overflow")))?;
    tx.prepare_cached("UPDATE api_keys SET quota_remaining = ?2 WHERE id = ?1")?
        .execute(params![id, left.to_string()])?;
    Ok(Some(left))
}

/// Deletes the key `id`.
pub fn delete(tx: &Transaction<'_>, id: &str) -> Result<(), DbError> {
    let changed = tx
        .prepare_cached("DELETE FROM api_keys WHERE id = ?1")?
        .execute([id])?;
    expect_one(changed, || format!("api key {id}"))
}

/// Deletes those of `ids` that belong to `user_id` (an owner's batch delete cannot touch
/// other users' keys); answers how many were deleted.
pub fn delete_for_user(
    tx: &Transaction<'_>,
    user_id: &str,
    ids: &[String],
) -> Result<usize, DbError> {
    let mut statement = tx.prepare_cached("DELETE FROM api_keys WHERE id = ?1 AND user_id = ?2")?;
    let mut deleted = 0;
    for id in ids {
        deleted += statement.execute(params![id, user_id])?;
    }
    Ok(deleted)
}

/// Records many `(key id, used at)` pairs in one transaction (last-use updates are batched
/// off the hot path, DESIGN §8). A timestamp never moves `last_used_at` backwards; unknown
/// ids are skipped. Answers how many rows changed.
pub fn touch_last_used_batch(
    tx: &Transaction<'_>,
    uses: &[(String, String)],
) -> Result<usize, DbError> {
    let mut statement = tx.prepare_cached(
        "UPDATE api_keys SET last_used_at = ?2 \
         WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)",
    )?;
    let mut changed = 0;
    for (id, used_at) in uses {
        let used_at = clock::canonical(used_at)
            .ok_or_else(|| DbError::Invalid("used_at is not an RFC 3339 timestamp".to_owned()))?;
        changed += statement.execute(params![id, used_at])?;
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Database;
    use crate::db::users::{self, NewUser, Role};

    fn with_user(name: &str, db: &Database) -> String {
        let new = NewUser::new(name, "h", Role::User);
        db.write_blocking(move |tx| users::insert(tx, &new))
            .unwrap()
            .id
    }

    fn add_key(db: &Database, user_id: &str, hash: &str) -> ApiKeyRow {
        let new = NewApiKey::new(user_id, "key", "sk-012345678", hash);
        db.write_blocking(move |tx| insert(tx, &new)).unwrap()
    }

    #[test]
    fn key_prefix_is_the_first_twelve_characters() {
        assert_eq!(key_prefix("sk-0123456789abcdef"), "sk-012345678");
        assert_eq!(key_prefix("short"), "short");
        assert_eq!(key_prefix("ééééééééééééé"), "éééééééééééé");
    }

    #[test]
    fn dbo1_api_keys_round_trip_with_every_setting() {
        let db = Database::open_in_memory().unwrap();
        let user_id = with_user("u", &db);
        let mut new = NewApiKey::new(&user_id, "ci", "sk-012345678", "hash-1");
        new.expires_at = Some("2030-01-01T00:00:00Z".to_owned());
        new.quota_remaining = Some(NanoUsd(-5));
        new.quota_unlimited = false;
        new.model_limits_enabled = true;
        new.model_limits = vec!["gpt-4o".to_owned(), "claude".to_owned()];
        new.ip_whitelist = vec!["10.0.0.0/8".to_owned()];
        new.token_group = Some("vip".to_owned());
        new.max_multiplier = Some("1.25".parse().unwrap());
        new.transforms_json = r#"[{"type":"strip"}]"#.to_owned();
        let expected = new.clone();
        let row = db.write_blocking(move |tx| insert(tx, &new)).unwrap();
        assert_eq!(row.expires_at.as_deref(), Some("2030-01-01T00:00:00.000Z"));
        assert_eq!(row.quota_remaining, expected.quota_remaining);
        assert_eq!(row.model_limits, expected.model_limits);
        assert_eq!(row.ip_whitelist, expected.ip_whitelist);
        assert_eq!(row.token_group, expected.token_group);
        assert_eq!(row.max_multiplier, expected.max_multiplier);
        assert_eq!(row.transforms_json, expected.transforms_json);
        assert!(!row.quota_unlimited && row.model_limits_enabled && row.enabled);
        let found = db.read_blocking(|c| by_prefix(c, "sk-012345678")).unwrap();
        assert_eq!(found, vec![row.clone()]);
        let id = row.id.clone();
        assert_eq!(db.read_blocking(move |c| get(c, &id)).unwrap(), Some(row));
    }

    #[test]
    fn dbo1_api_key_update_lists_and_deletes() {
        let db = Database::open_in_memory().unwrap();
        let alice = with_user("alice", &db);
        let bob = with_user("bob", &db);
        let mut key = add_key(&db, &alice, "a1");
        let other = add_key(&db, &alice, "a2");
        let bobs = add_key(&db, &bob, "b1");
        key.name = "renamed".to_owned();
        key.enabled = false;
        key.max_multiplier = None;
        key.key_hash = "ignored".to_owned();
        let updated = db.write_blocking(move |tx| update(tx, &key)).unwrap();
        assert_eq!(
            (
                updated.name.as_str(),
                updated.enabled,
                updated.key_hash.as_str()
            ),
            ("renamed", false, "a1")
        );
        let a = alice.clone();
        assert_eq!(
            db.read_blocking(move |c| list_for_user(c, &a))
                .unwrap()
                .len(),
            2
        );
        assert_eq!(db.read_blocking(list_all).unwrap().len(), 3);
        let ids = vec![updated.id.clone(), bobs.id.clone()];
        let a = alice.clone();
        assert_eq!(
            db.write_blocking(move |tx| delete_for_user(tx, &a, &ids))
                .unwrap(),
            1
        );
        let b = bobs.id.clone();
        assert!(
            db.read_blocking(move |c| get(c, &b)).unwrap().is_some(),
            "bob's key survives"
        );
        db.write_blocking(move |tx| delete(tx, &other.id)).unwrap();
        assert_eq!(
            db.read_blocking(move |c| list_for_user(c, &alice)).unwrap(),
            Vec::new()
        );
        assert!(matches!(
            db.write_blocking(|tx| delete(tx, "none")),
            Err(DbError::NotFound(_))
        ));
    }

    #[test]
    fn dbo1_last_used_is_batched_and_never_moves_backwards() {
        let db = Database::open_in_memory().unwrap();
        let user_id = with_user("u", &db);
        let key = add_key(&db, &user_id, "h");
        let uses = vec![
            (key.id.clone(), "2026-01-02T00:00:00Z".to_owned()),
            (key.id.clone(), "2026-01-01T00:00:00Z".to_owned()),
            ("missing".to_owned(), "2026-01-03T00:00:00Z".to_owned()),
        ];
        assert_eq!(
            db.write_blocking(move |tx| touch_last_used_batch(tx, &uses))
                .unwrap(),
            1
        );
        let id = key.id.clone();
        let stored = db.read_blocking(move |c| get(c, &id)).unwrap().unwrap();
        assert_eq!(
            stored.last_used_at.as_deref(),
            Some("2026-01-02T00:00:00.000Z")
        );
    }

    #[test]
    fn dbo1_api_keys_refuse_bad_input() {
        let db = Database::open_in_memory().unwrap();
        let user_id = with_user("u", &db);
        add_key(&db, &user_id, "same");
        let duplicate = NewApiKey::new(&user_id, "k", "sk-012345678", "same");
        assert!(matches!(
            db.write_blocking(move |tx| insert(tx, &duplicate)),
            Err(DbError::Conflict(_))
        ));
        let mut bad_json = NewApiKey::new(&user_id, "k", "p", "other");
        bad_json.transforms_json = "{not json".to_owned();
        assert!(matches!(
            db.write_blocking(move |tx| insert(tx, &bad_json)),
            Err(DbError::Invalid(_))
        ));
        let orphan = NewApiKey::new("ghost", "k", "p", "third");
        assert!(matches!(
            db.write_blocking(move |tx| insert(tx, &orphan)),
            Err(DbError::Invalid(_))
        ));
    }
}
