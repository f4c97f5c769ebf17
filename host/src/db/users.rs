//! The `users` table (DBO1, DBO1.1). A balance changes only through [`super::ledger`]
//! (`append`, `charge`, `adjust`), which writes the ledger row in the same transaction; nothing
//! here sets it.

use std::fmt;
use std::str::FromStr;

use rusqlite::{Connection, Row, Transaction, params};

use super::{DbError, clock, collect, expect_one, first, new_id, parse_column};
use crate::money::NanoUsd;

/// A user's role, from most to least privileged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The first user of a database; may manage admins.
    SuperAdmin,
    /// Manages users, providers and pricing.
    Admin,
    /// Manages only their own keys.
    User,
}

impl Role {
    /// The stored form (`super_admin`, `admin`, `user`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::SuperAdmin => "super_admin",
            Role::Admin => "admin",
            Role::User => "user",
        }
    }
}

impl FromStr for Role {
    type Err = DbError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "super_admin" => Ok(Role::SuperAdmin),
            "admin" => Ok(Role::Admin),
            "user" => Ok(Role::User),
            _ => Err(DbError::Invalid(format!("unknown role `{text}`"))),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        out.write_str(self.as_str())
    }
}

/// One row of `users`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    /// Primary key.
    pub id: String,
    /// Unique login name.
    pub username: String,
    /// The password hash (argon2id PHC string); never leaves the host unhashed.
    pub password_hash: String,
    /// The role.
    pub role: Role,
    /// Whether the user may log in and use keys.
    pub enabled: bool,
    /// Prepaid balance; negative is a debt (DESIGN §6).
    pub balance_nano_usd: NanoUsd,
    /// Whether requests skip the balance check and are not debited.
    pub balance_unlimited: bool,
    /// When the row was created (RFC 3339).
    pub created_at: String,
    /// When the row last changed (RFC 3339).
    pub updated_at: String,
    /// The last successful login (RFC 3339), if any.
    pub last_login_at: Option<String>,
}

/// What [`insert`] needs; every user starts with a zero balance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    /// Unique login name.
    pub username: String,
    /// The password hash.
    pub password_hash: String,
    /// The role.
    pub role: Role,
    /// Whether the user may log in.
    pub enabled: bool,
    /// Whether the user is exempt from balance checks.
    pub balance_unlimited: bool,
}

impl NewUser {
    /// An enabled user with a limited balance.
    pub fn new(username: &str, password_hash: &str, role: Role) -> NewUser {
        NewUser {
            username: username.to_owned(),
            password_hash: password_hash.to_owned(),
            role,
            enabled: true,
            balance_unlimited: false,
        }
    }
}

const COLUMNS: &str = "id, username, password_hash, role, enabled, balance_nano_usd, \
                       balance_unlimited, created_at, updated_at, last_login_at";

impl UserRow {
    fn from_row(row: &Row<'_>) -> Result<UserRow, DbError> {
        Ok(UserRow {
            id: row.get("id")?,
            username: row.get("username")?,
            password_hash: row.get("password_hash")?,
            role: parse_column(row, "role")?,
            enabled: row.get("enabled")?,
            balance_nano_usd: parse_column(row, "balance_nano_usd")?,
            balance_unlimited: row.get("balance_unlimited")?,
            created_at: row.get("created_at")?,
            updated_at: row.get("updated_at")?,
            last_login_at: row.get("last_login_at")?,
        })
    }
}

/// Inserts a user with a new id and a zero balance; a taken username is `Conflict`.
pub fn insert(tx: &Transaction<'_>, new: &NewUser) -> Result<UserRow, DbError> {
    let id = new_id()?;
    let now = clock::now();
    tx.prepare_cached(
        "INSERT INTO users (id, username, password_hash, role, enabled, balance_nano_usd, \
         balance_unlimited, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, '0', ?6, ?7, ?7)",
    )?
    .execute(params![
        id,
        new.username,
        new.password_hash,
        new.role.as_str(),
        new.enabled,
        new.balance_unlimited,
        now
    ])?;
    get(tx, &id)?.ok_or_else(|| DbError::NotFound(format!("user {id}")))
}

/// The user `id`, if it exists.
pub fn get(conn: &Connection, id: &str) -> Result<Option<UserRow>, DbError> {
    let mut statement =
        conn.prepare_cached(&format!("SELECT {COLUMNS} FROM users WHERE id = ?1"))?;
    first(statement.query([id])?, UserRow::from_row)
}

/// The user called `username`, if any (exact match).
pub fn by_username(conn: &Connection, username: &str) -> Result<Option<UserRow>, DbError> {
    let mut statement =
        conn.prepare_cached(&format!("SELECT {COLUMNS} FROM users WHERE username = ?1"))?;
    first(statement.query([username])?, UserRow::from_row)
}

/// Every user, oldest first.
pub fn list(conn: &Connection) -> Result<Vec<UserRow>, DbError> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM users ORDER BY created_at, id"
    ))?;
    collect(statement.query([])?, UserRow::from_row)
}

/// How many users exist (the first one to register becomes `super_admin`).
pub fn count(conn: &Connection) -> Result<i64, DbError> {
    Ok(conn
        .prepare_cached("SELECT count(*) FROM users")?
        .query_row([], |row| row.get(0))?)
}

/// Writes `user`'s username, password hash, role, enabled, balance_unlimited and
/// last_login_at, and answers the row as stored (with a new `updated_at`). The balance is
/// left alone: it changes only through the ledger.
pub fn update(tx: &Transaction<'_>, user: &UserRow) -> Result<UserRow, DbError> {
    let changed = tx
        .prepare_cached(
            "UPDATE users SET username = ?2, password_hash = ?3, role = ?4, enabled = ?5, \
             balance_unlimited = ?6, last_login_at = ?7, updated_at = ?8 WHERE id = ?1",
        )?
        .execute(params![
            user.id,
            user.username,
            user.password_hash,
            user.role.as_str(),
            user.enabled,
            user.balance_unlimited,
            user.last_login_at,
            clock::now()
        ])?;
    expect_one(changed, || format!("user {}", user.id))?;
    get(tx, &user.id)?.ok_or_else(|| DbError::NotFound(format!("user {}", user.id)))
}

/// Records a successful login now.
pub fn record_login(tx: &Transaction<'_>, id: &str) -> Result<(), DbError> {
    let changed = tx
        .prepare_cached("UPDATE users SET last_login_at = ?2 WHERE id = ?1")?
        .execute(params![id, clock::now()])?;
    expect_one(changed, || format!("user {id}"))
}

/// Deletes the user `id`; their sessions and API keys go with them (cascade), their ledger
/// rows stay (DBO3.1).
pub fn delete(tx: &Transaction<'_>, id: &str) -> Result<(), DbError> {
    let changed = tx
        .prepare_cached("DELETE FROM users WHERE id = ?1")?
        .execute([id])?;
    expect_one(changed, || format!("user {id}"))
}

/// The stored balance of `id` and whether it is unlimited, for the ledger.
pub(crate) fn balance(conn: &Connection, id: &str) -> Result<(NanoUsd, bool), DbError> {
    let mut statement =
        conn.prepare_cached("SELECT balance_nano_usd, balance_unlimited FROM users WHERE id = ?1")?;
    let found = first(statement.query([id])?, |row| {
        Ok((
            parse_column(row, "balance_nano_usd")?,
            row.get("balance_unlimited")?,
        ))
    })?;
    found.ok_or_else(|| DbError::NotFound(format!("user {id}")))
}

/// Sets the stored balance; only the ledger calls this, beside its ledger row.
pub(crate) fn set_balance(
    tx: &Transaction<'_>,
    id: &str,
    balance: NanoUsd,
    now: &str,
) -> Result<(), DbError> {
    let changed = tx
        .prepare_cached("UPDATE users SET balance_nano_usd = ?2, updated_at = ?3 WHERE id = ?1")?
        .execute(params![id, balance.to_string(), now])?;
    expect_one(changed, || format!("user {id}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{Database, api_keys, sessions};

    fn database() -> Database {
        Database::open_in_memory().unwrap()
    }

    #[test]
    fn dbo1_users_round_trip() {
        let db = database();
        let mut new = NewUser::new("alice", "$argon2id$x", Role::SuperAdmin);
        new.balance_unlimited = true;
        let inserted = db.write_blocking(|tx| insert(tx, &new)).unwrap();
        assert_eq!(inserted.username, "alice");
        assert_eq!(inserted.role, Role::SuperAdmin);
        assert!(inserted.enabled && inserted.balance_unlimited);
        assert_eq!(inserted.balance_nano_usd, NanoUsd::ZERO);
        assert!(clock::parse_unix_millis(&inserted.created_at).is_some());
        let id = inserted.id.clone();
        let by_id = db.read_blocking(move |c| get(c, &id)).unwrap();
        assert_eq!(by_id.as_ref(), Some(&inserted));
        let by_name = db.read_blocking(|c| by_username(c, "alice")).unwrap();
        assert_eq!(by_name, Some(inserted));
        assert_eq!(db.read_blocking(|c| by_username(c, "Alice")).unwrap(), None);
        assert_eq!(db.read_blocking(count).unwrap(), 1);
    }

    #[test]
    fn dbo1_update_changes_fields_but_never_the_balance() {
        let db = database();
        let mut user = db
            .write_blocking(|tx| insert(tx, &NewUser::new("bob", "h1", Role::User)))
            .unwrap();
        user.role = Role::Admin;
        user.enabled = false;
        user.password_hash = "h2".to_owned();
        user.balance_nano_usd = NanoUsd(1_000);
        let updated = db.write_blocking(move |tx| update(tx, &user)).unwrap();
        assert_eq!(
            (
                updated.role,
                updated.enabled,
                updated.password_hash.as_str()
            ),
            (Role::Admin, false, "h2")
        );
        assert_eq!(updated.balance_nano_usd, NanoUsd::ZERO);
        let id = updated.id.clone();
        db.write_blocking(move |tx| record_login(tx, &id)).unwrap();
        let id = updated.id.clone();
        assert!(
            db.read_blocking(move |c| get(c, &id))
                .unwrap()
                .unwrap()
                .last_login_at
                .is_some()
        );
    }

    #[test]
    fn dbo1_missing_users_are_not_found() {
        let db = database();
        let ghost = UserRow {
            id: "ghost".to_owned(),
            username: "ghost".to_owned(),
            password_hash: "h".to_owned(),
            role: Role::User,
            enabled: true,
            balance_nano_usd: NanoUsd::ZERO,
            balance_unlimited: false,
            created_at: clock::now(),
            updated_at: clock::now(),
            last_login_at: None,
        };
        assert!(matches!(
            db.write_blocking(move |tx| update(tx, &ghost)),
            Err(DbError::NotFound(_))
        ));
        assert!(matches!(
            db.write_blocking(|tx| delete(tx, "ghost")),
            Err(DbError::NotFound(_))
        ));
    }

    #[test]
    fn dbo1_deleting_a_user_cascades_to_sessions_and_keys() {
        let db = database();
        let user = db
            .write_blocking(|tx| insert(tx, &NewUser::new("carol", "h", Role::User)))
            .unwrap();
        let user_id = user.id.clone();
        db.write_blocking(move |tx| {
            sessions::create(tx, &user_id, "token-hash", &clock::seconds_from_now(60))?;
            api_keys::insert(
                tx,
                &api_keys::NewApiKey::new(&user_id, "k", "sk-abcdefghi", "key-hash"),
            )?;
            delete(tx, &user_id)
        })
        .unwrap();
        let left: i64 = db
            .read_blocking(|c| {
                Ok(c.query_row(
                    "SELECT (SELECT count(*) FROM sessions) + (SELECT count(*) FROM api_keys)",
                    [],
                    |r| r.get(0),
                )?)
            })
            .unwrap();
        assert_eq!(left, 0);
        assert_eq!(db.read_blocking(list).unwrap(), Vec::new());
    }

    #[test]
    fn roles_round_trip_through_text() {
        for role in [Role::SuperAdmin, Role::Admin, Role::User] {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        assert!("root".parse::<Role>().is_err());
    }
}
