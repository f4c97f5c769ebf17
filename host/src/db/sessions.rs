//! The `sessions` table (DBO1). Only a hash of a session token is stored, so a copy of the
//! database cannot be used to log in.

use rusqlite::{Connection, Row, Transaction, params};

use super::{DbError, clock, collect, expect_one, first, new_id};

/// One row of `sessions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    /// Primary key.
    pub id: String,
    /// The user it logs in (cascade on delete).
    pub user_id: String,
    /// The hash of the session token.
    pub token_hash: String,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it stops being valid (RFC 3339).
    pub expires_at: String,
}

impl SessionRow {
    /// Whether the session is expired at `now` (a stored timestamp, see [`clock`]).
    pub fn is_expired_at(&self, now: &str) -> bool {
        self.expires_at.as_str() <= now
    }

    fn from_row(row: &Row<'_>) -> Result<SessionRow, DbError> {
        Ok(SessionRow {
            id: row.get("id")?,
            user_id: row.get("user_id")?,
            token_hash: row.get("token_hash")?,
            created_at: row.get("created_at")?,
            expires_at: row.get("expires_at")?,
        })
    }
}

const COLUMNS: &str = "id, user_id, token_hash, created_at, expires_at";

/// Creates a session for `user_id` that expires at `expires_at` (any RFC 3339 form; stored in
/// canonical UTC so that expiry compares as text).
pub fn create(
    tx: &Transaction<'_>,
    user_id: &str,
    token_hash: &str,
    expires_at: &str,
) -> Result<SessionRow, DbError> {
    let expires_at = clock::canonical(expires_at)
        .ok_or_else(|| DbError::Invalid("expires_at is not an RFC 3339 timestamp".to_owned()))?;
    let row = SessionRow {
        id: new_id()?,
        user_id: user_id.to_owned(),
        token_hash: token_hash.to_owned(),
        created_at: clock::now(),
        expires_at,
    };
    tx.prepare_cached(&format!(
        "INSERT INTO sessions ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)"
    ))?
    .execute(params![
        row.id,
        row.user_id,
        row.token_hash,
        row.created_at,
        row.expires_at
    ])?;
    Ok(row)
}

/// The session whose token hashes to `token_hash`, expired or not (see
/// [`SessionRow::is_expired_at`]).
pub fn by_token_hash(conn: &Connection, token_hash: &str) -> Result<Option<SessionRow>, DbError> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM sessions WHERE token_hash = ?1"
    ))?;
    first(statement.query([token_hash])?, SessionRow::from_row)
}

/// Every session of `user_id`, newest first.
pub fn list_for_user(conn: &Connection, user_id: &str) -> Result<Vec<SessionRow>, DbError> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM sessions WHERE user_id = ?1 ORDER BY created_at DESC, id"
    ))?;
    collect(statement.query([user_id])?, SessionRow::from_row)
}

/// Deletes the session `id` (logout).
pub fn delete(tx: &Transaction<'_>, id: &str) -> Result<(), DbError> {
    let changed = tx
        .prepare_cached("DELETE FROM sessions WHERE id = ?1")?
        .execute([id])?;
    expect_one(changed, || format!("session {id}"))
}

/// Deletes the session whose token hashes to `token_hash` (logout); answers whether there was
/// one.
pub fn delete_by_token_hash(tx: &Transaction<'_>, token_hash: &str) -> Result<bool, DbError> {
    let changed = tx
        .prepare_cached("DELETE FROM sessions WHERE token_hash = ?1")?
        .execute([token_hash])?;
    Ok(changed > 0)
}

/// Deletes every session of `user_id` (a password change or a disabled user); answers how
/// many.
pub fn delete_for_user(tx: &Transaction<'_>, user_id: &str) -> Result<usize, DbError> {
    Ok(tx
        .prepare_cached("DELETE FROM sessions WHERE user_id = ?1")?
        .execute([user_id])?)
}

/// Deletes at most `limit` sessions expired at `now` (a stored timestamp), the longest
/// expired first; answers how many (see [`super::housekeeping`]).
pub fn delete_expired(tx: &Transaction<'_>, now: &str, limit: usize) -> Result<usize, DbError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    Ok(tx
        .prepare_cached(
            "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions WHERE expires_at <= ?1 \
             ORDER BY expires_at LIMIT ?2)",
        )?
        .execute(params![now, limit])?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Database;
    use crate::db::users::{self, NewUser, Role};

    fn with_user() -> (Database, String) {
        let db = Database::open_in_memory().unwrap();
        let user = db
            .write_blocking(|tx| users::insert(tx, &NewUser::new("u", "h", Role::User)))
            .unwrap();
        (db, user.id)
    }

    #[test]
    fn dbo1_sessions_are_found_by_token_hash_and_expire() {
        let (db, user_id) = with_user();
        let uid = user_id.clone();
        let live = db
            .write_blocking(move |tx| create(tx, &uid, "live", &clock::seconds_from_now(3600)))
            .unwrap();
        let uid = user_id.clone();
        db.write_blocking(move |tx| create(tx, &uid, "old", "2000-01-01T00:00:00+01:00"))
            .unwrap();
        let found = db
            .read_blocking(|c| by_token_hash(c, "live"))
            .unwrap()
            .unwrap();
        assert_eq!(found, live);
        assert!(!found.is_expired_at(&clock::now()));
        let old = db
            .read_blocking(|c| by_token_hash(c, "old"))
            .unwrap()
            .unwrap();
        assert_eq!(old.expires_at, "1999-12-31T23:00:00.000Z");
        assert!(old.is_expired_at(&clock::now()));
        assert_eq!(
            db.write_blocking(|tx| delete_expired(tx, &clock::now(), 100))
                .unwrap(),
            1
        );
        assert_eq!(db.read_blocking(|c| by_token_hash(c, "old")).unwrap(), None);
        let uid = user_id.clone();
        assert_eq!(
            db.read_blocking(move |c| list_for_user(c, &uid))
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn dbo1_session_deletes() {
        let (db, user_id) = with_user();
        let uid = user_id.clone();
        let session = db
            .write_blocking(move |tx| create(tx, &uid, "a", &clock::seconds_from_now(60)))
            .unwrap();
        db.write_blocking(move |tx| delete(tx, &session.id))
            .unwrap();
        assert!(matches!(
            db.write_blocking(|tx| delete(tx, "nope")),
            Err(DbError::NotFound(_))
        ));
        for hash in ["b", "c"] {
            let uid = user_id.clone();
            db.write_blocking(move |tx| create(tx, &uid, hash, &clock::seconds_from_now(60)))
                .unwrap();
        }
        assert_eq!(
            db.write_blocking(move |tx| delete_for_user(tx, &user_id))
                .unwrap(),
            2
        );
    }

    #[test]
    fn dbo1_logout_deletes_by_token_hash_once() {
        let (db, user_id) = with_user();
        db.write_blocking(move |tx| create(tx, &user_id, "tok", &clock::seconds_from_now(60)))
            .unwrap();
        assert!(
            db.write_blocking(|tx| delete_by_token_hash(tx, "tok"))
                .unwrap()
        );
        assert!(
            !db.write_blocking(|tx| delete_by_token_hash(tx, "tok"))
                .unwrap()
        );
        assert_eq!(db.read_blocking(|c| by_token_hash(c, "tok")).unwrap(), None);
    }

    #[test]
    fn dbo1_sessions_refuse_bad_input() {
        let (db, user_id) = with_user();
        let uid = user_id.clone();
        let bad_time = db
            .write_blocking(move |tx| create(tx, &uid, "x", "tomorrow"))
            .unwrap_err();
        assert!(matches!(bad_time, DbError::Invalid(_)));
        let no_user = db
            .write_blocking(|tx| create(tx, "ghost", "x", &clock::seconds_from_now(60)))
            .unwrap_err();
        assert!(matches!(no_user, DbError::Invalid(_)), "{no_user:?}");
        let uid = user_id.clone();
        db.write_blocking(move |tx| create(tx, &uid, "dup", &clock::seconds_from_now(60)))
            .unwrap();
        let duplicate = db
            .write_blocking(move |tx| create(tx, &user_id, "dup", &clock::seconds_from_now(60)))
            .unwrap_err();
        assert!(matches!(duplicate, DbError::Conflict(_)));
    }
}
