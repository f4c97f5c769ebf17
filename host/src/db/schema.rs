//! The schema (DBT1–DBT4) and its migrations, versioned with `PRAGMA user_version`.
//!
//! Startup runs [`migrate`] in ONE immediate transaction: it creates every missing table at
//! its current shape (`IF NOT EXISTS` throughout), then applies each migration newer than the
//! file's version, then records [`LATEST_VERSION`]. A file already at the latest version with
//! all its tables gets no write at all. Migrations must tolerate a table already at the
//! current shape, because a fresh database gets its tables from [`CREATE_TABLES`] first.

use rusqlite::{Connection, Transaction, TransactionBehavior};

use super::DbError;

/// The schema version this build writes.
pub const LATEST_VERSION: i64 = 5;

/// Every table startup guarantees: DBT1, DBT2, DBT3 (with the gateway's `stored_responses`),
/// then the legacy tables of DBT4.
pub const REQUIRED_TABLES: [&str; 13] = [
    "users",
    "sessions",
    "api_keys",
    "billing_ledger",
    "stored_responses",
    "model_registry_records",
    "model_metadata_records",
    "monoize_providers",
    "monoize_provider_models",
    "monoize_channels",
    "providers",
    "model_mappings",
    "group_members",
];

/// One step forward from `version - 1` to `version`.
struct Migration {
    version: i64,
    apply: fn(&Transaction<'_>) -> Result<(), DbError>,
}

/// Version 1 is the tables of [`CREATE_TABLES`], which every migration run creates where
/// missing; each later version is one step here.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 2,
        apply: add_user_billing_columns,
    },
    Migration {
        version: 3,
        apply: drop_ledger_user_created_index,
    },
    Migration {
        version: 4,
        apply: made_by_create_tables,
    },
    Migration {
        version: 5,
        apply: made_by_create_tables,
    },
];

/// The file's schema version (`PRAGMA user_version`; 0 for a new or pre-Monoize-2 file).
pub fn version(connection: &Connection) -> Result<i64, DbError> {
    Ok(connection.pragma_query_value(None, "user_version", |row| row.get(0))?)
}

/// Brings the schema to [`LATEST_VERSION`] in one transaction; see the module documentation.
pub fn migrate(connection: &mut Connection) -> Result<(), DbError> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found = version(&transaction)?;
    if found > LATEST_VERSION {
        return Err(DbError::TooNew {
            found,
            supported: LATEST_VERSION,
        });
    }
    if found == LATEST_VERSION && missing_tables(&transaction)?.is_empty() {
        return Ok(());
    }
    create_tables(&transaction)?;
    for migration in MIGRATIONS
        .iter()
        .filter(|migration| migration.version > found)
    {
        (migration.apply)(&transaction)?;
    }
    transaction.pragma_update(None, "user_version", LATEST_VERSION)?;
    transaction.commit()?;
    Ok(())
}

/// The required tables the database lacks.
pub fn missing_tables(connection: &Connection) -> Result<Vec<&'static str>, DbError> {
    let mut statement = connection
        .prepare_cached("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1")?;
    let mut missing = Vec::new();
    for table in REQUIRED_TABLES {
        if !statement.exists([table])? {
            missing.push(table);
        }
    }
    Ok(missing)
}

/// The column names of `table`, in order.
pub fn columns(connection: &Connection, table: &str) -> Result<Vec<String>, DbError> {
    let mut statement =
        connection.prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")?;
    let names = statement.query_map([table], |row| row.get(0))?;
    Ok(names.collect::<Result<_, _>>()?)
}

/// Every table of DBT1–DBT4 at its current shape, with indexes and triggers, where missing.
fn create_tables(transaction: &Transaction<'_>) -> Result<(), DbError> {
    transaction.execute_batch(CREATE_TABLES)?;
    Ok(())
}

/// Version 2 (DBO1.1): a `users` table from before billing gains `balance_nano_usd` (`'0'`)
/// and `balance_unlimited` (`0`); existing rows take the defaults.
fn add_user_billing_columns(transaction: &Transaction<'_>) -> Result<(), DbError> {
    let present = columns(transaction, "users")?;
    if !present.iter().any(|name| name == "balance_nano_usd") {
        transaction.execute_batch(&format!(
            "ALTER TABLE users ADD COLUMN balance_nano_usd TEXT NOT NULL DEFAULT '0' \
             CHECK ({});",
            signed_integer_text("balance_nano_usd")
        ))?;
    }
    if !present.iter().any(|name| name == "balance_unlimited") {
        transaction.execute_batch(
            "ALTER TABLE users ADD COLUMN balance_unlimited INTEGER NOT NULL DEFAULT 0 \
             CHECK (balance_unlimited IN (0, 1));",
        )?;
    }
    Ok(())
}

/// A version whose objects are all new and which [`CREATE_TABLES`] has already created, so
/// it has nothing to change:
/// - 4: `stored_responses`. It starts empty: responses served before it are not known to the
///   gateway after the upgrade, as they were not after a restart.
/// - 5: the index `stored_responses_created_at`, so housekeeping finds the rows past their
///   retention without reading the table (`super::housekeeping`).
fn made_by_create_tables(_transaction: &Transaction<'_>) -> Result<(), DbError> {
    Ok(())
}

/// Version 3: drops `billing_ledger_user_created (user_id, created_at)`. Rows are numbered in
/// the order they are written, so `billing_ledger_user_id (user_id, id)` already orders a
/// user's rows by time, and no query filters on `created_at`. The index was a third B-tree
/// written by every charge: a page more in every group commit's WAL, for nothing.
fn drop_ledger_user_created_index(transaction: &Transaction<'_>) -> Result<(), DbError> {
    transaction.execute_batch("DROP INDEX IF EXISTS billing_ledger_user_created;")?;
    Ok(())
}

/// The CHECK that `column` holds a decimal integer, optionally negative (stored money).
fn signed_integer_text(column: &str) -> String {
    format!(
        "({column} GLOB '[0-9]*' AND {column} NOT GLOB '*[^0-9]*') \
         OR ({column} GLOB '-[0-9]*' AND substr({column}, 2) NOT GLOB '*[^0-9]*')"
    )
}

/// Every table at its current shape. Money is TEXT holding integer nano-USD and multipliers
/// are TEXT exact decimals (never REAL: floats cannot hold them exactly); timestamps are
/// RFC 3339 UTC TEXT (see `clock`); booleans are INTEGER 0/1.
pub const CREATE_TABLES: &str = r#"
CREATE TABLE IF NOT EXISTS users (
    id                TEXT PRIMARY KEY NOT NULL,
    username          TEXT NOT NULL UNIQUE,
    password_hash     TEXT NOT NULL,
    role              TEXT NOT NULL DEFAULT 'user'
                      CHECK (role IN ('super_admin', 'admin', 'user')),
    enabled           INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    balance_nano_usd  TEXT NOT NULL DEFAULT '0'
                      CHECK ((balance_nano_usd GLOB '[0-9]*' AND balance_nano_usd NOT GLOB '*[^0-9]*')
                          OR (balance_nano_usd GLOB '-[0-9]*'
                              AND substr(balance_nano_usd, 2) NOT GLOB '*[^0-9]*')),
    balance_unlimited INTEGER NOT NULL DEFAULT 0 CHECK (balance_unlimited IN (0, 1)),
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    last_login_at     TEXT
);

CREATE TABLE IF NOT EXISTS sessions (
    id         TEXT PRIMARY KEY NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_user_id ON sessions (user_id);
CREATE INDEX IF NOT EXISTS sessions_expires_at ON sessions (expires_at);

CREATE TABLE IF NOT EXISTS api_keys (
    id                   TEXT PRIMARY KEY NOT NULL,
    user_id              TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name                 TEXT NOT NULL,
    key_prefix           TEXT NOT NULL,
    key_hash             TEXT NOT NULL UNIQUE,
    created_at           TEXT NOT NULL,
    expires_at           TEXT,
    last_used_at         TEXT,
    enabled              INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    quota_remaining      TEXT
                         CHECK (quota_remaining IS NULL
                             OR (quota_remaining GLOB '[0-9]*' AND quota_remaining NOT GLOB '*[^0-9]*')
                             OR (quota_remaining GLOB '-[0-9]*'
                                 AND substr(quota_remaining, 2) NOT GLOB '*[^0-9]*')),
    quota_unlimited      INTEGER NOT NULL DEFAULT 1 CHECK (quota_unlimited IN (0, 1)),
    model_limits_enabled INTEGER NOT NULL DEFAULT 0 CHECK (model_limits_enabled IN (0, 1)),
    model_limits         TEXT NOT NULL DEFAULT '[]',
    ip_whitelist         TEXT NOT NULL DEFAULT '[]',
    token_group          TEXT,
    max_multiplier       TEXT
                         CHECK (max_multiplier IS NULL
                             OR (max_multiplier <> '' AND max_multiplier NOT GLOB '*[^0-9.]*')),
    transforms           TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS api_keys_key_prefix ON api_keys (key_prefix);
CREATE INDEX IF NOT EXISTS api_keys_user_id ON api_keys (user_id);

-- Append-only history (DBO3.1). `user_id` deliberately has no foreign key: deleting a user
-- must neither cascade into nor be blocked by the ledger.
CREATE TABLE IF NOT EXISTS billing_ledger (
    id                     INTEGER PRIMARY KEY,
    user_id                TEXT NOT NULL,
    kind                   TEXT NOT NULL CHECK (kind IN ('request_charge', 'admin_adjustment')),
    delta_nano_usd         TEXT NOT NULL
                           CHECK ((delta_nano_usd GLOB '[0-9]*' AND delta_nano_usd NOT GLOB '*[^0-9]*')
                               OR (delta_nano_usd GLOB '-[0-9]*'
                                   AND substr(delta_nano_usd, 2) NOT GLOB '*[^0-9]*')),
    balance_after_nano_usd TEXT NOT NULL
                           CHECK ((balance_after_nano_usd GLOB '[0-9]*'
                                   AND balance_after_nano_usd NOT GLOB '*[^0-9]*')
                               OR (balance_after_nano_usd GLOB '-[0-9]*'
                                   AND substr(balance_after_nano_usd, 2) NOT GLOB '*[^0-9]*')),
    request_id             TEXT UNIQUE,
    meta_json              TEXT NOT NULL DEFAULT '{}',
    created_at             TEXT NOT NULL,
    CHECK (kind <> 'request_charge' OR request_id IS NOT NULL)
);
-- A user's rows in the order they were written: ids grow with time (see migration 3).
CREATE INDEX IF NOT EXISTS billing_ledger_user_id ON billing_ledger (user_id, id);
CREATE TRIGGER IF NOT EXISTS billing_ledger_no_update BEFORE UPDATE ON billing_ledger
BEGIN
    SELECT RAISE(ABORT, 'billing_ledger is append-only: rows cannot be updated');
END;
CREATE TRIGGER IF NOT EXISTS billing_ledger_no_delete BEFORE DELETE ON billing_ledger
BEGIN
    SELECT RAISE(ABORT, 'billing_ledger is append-only: rows cannot be deleted');
END;

-- Who each Responses API response the gateway served belongs to, and the channel whose upstream
-- account stores it, so a continuation keeps to them across restarts. Keyed by the SHA-256 of
-- the response id: the table never holds an id that would open anyone's conversation. No
-- foreign keys: a deleted user or channel leaves a row that no longer matches anyone.
CREATE TABLE IF NOT EXISTS stored_responses (
    response_sha256 BLOB PRIMARY KEY NOT NULL CHECK (length(response_sha256) = 32),
    user_id         TEXT NOT NULL,
    provider_id     TEXT NOT NULL,
    channel_id      TEXT NOT NULL,
    created_at      TEXT NOT NULL
) WITHOUT ROWID;
-- Housekeeping deletes the rows past their retention, oldest first (schema version 5).
CREATE INDEX IF NOT EXISTS stored_responses_created_at ON stored_responses (created_at);

CREATE TABLE IF NOT EXISTS model_registry_records (
    id                TEXT PRIMARY KEY NOT NULL,
    logical_model     TEXT NOT NULL,
    provider_id       TEXT NOT NULL,
    upstream_model    TEXT NOT NULL,
    capabilities_json TEXT NOT NULL DEFAULT '{}',
    enabled           INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    priority          INTEGER NOT NULL DEFAULT 0,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    UNIQUE (logical_model, provider_id)
);

CREATE TABLE IF NOT EXISTS model_metadata_records (
    model_id                             TEXT PRIMARY KEY NOT NULL,
    models_dev_provider                  TEXT,
    mode                                 TEXT,
    input_cost_per_token_nano            TEXT
        CHECK (input_cost_per_token_nano IS NULL OR (input_cost_per_token_nano GLOB '[0-9]*'
            AND input_cost_per_token_nano NOT GLOB '*[^0-9]*')),
    output_cost_per_token_nano           TEXT
        CHECK (output_cost_per_token_nano IS NULL OR (output_cost_per_token_nano GLOB '[0-9]*'
            AND output_cost_per_token_nano NOT GLOB '*[^0-9]*')),
    cache_read_input_cost_per_token_nano TEXT
        CHECK (cache_read_input_cost_per_token_nano IS NULL
            OR (cache_read_input_cost_per_token_nano GLOB '[0-9]*'
                AND cache_read_input_cost_per_token_nano NOT GLOB '*[^0-9]*')),
    output_cost_per_reasoning_token_nano TEXT
        CHECK (output_cost_per_reasoning_token_nano IS NULL
            OR (output_cost_per_reasoning_token_nano GLOB '[0-9]*'
                AND output_cost_per_reasoning_token_nano NOT GLOB '*[^0-9]*')),
    max_input_tokens                     INTEGER CHECK (max_input_tokens IS NULL OR max_input_tokens >= 0),
    max_output_tokens                    INTEGER CHECK (max_output_tokens IS NULL OR max_output_tokens >= 0),
    max_tokens                           INTEGER CHECK (max_tokens IS NULL OR max_tokens >= 0),
    raw_json                             TEXT NOT NULL DEFAULT '{}',
    source                               TEXT NOT NULL DEFAULT 'manual',
    updated_at                           TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS monoize_providers (
    id            TEXT PRIMARY KEY NOT NULL,
    name          TEXT NOT NULL,
    provider_type TEXT NOT NULL
                  CHECK (provider_type IN ('responses', 'chat_completion', 'messages', 'gemini', 'grok')),
    max_retries   INTEGER NOT NULL DEFAULT -1 CHECK (max_retries >= -1),
    transforms    TEXT NOT NULL DEFAULT '[]',
    "groups"      TEXT NOT NULL DEFAULT '[]',
    enabled       INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    priority      INTEGER NOT NULL DEFAULT 0,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS monoize_providers_priority ON monoize_providers (priority, id);

CREATE TABLE IF NOT EXISTS monoize_provider_models (
    id          TEXT PRIMARY KEY NOT NULL,
    provider_id TEXT NOT NULL REFERENCES monoize_providers (id) ON DELETE CASCADE,
    model_name  TEXT NOT NULL,
    redirect    TEXT,
    multiplier  TEXT NOT NULL DEFAULT '1'
                CHECK (multiplier <> '' AND multiplier NOT GLOB '*[^0-9.]*'
                    AND CAST(multiplier AS REAL) > 0),
    created_at  TEXT NOT NULL,
    UNIQUE (provider_id, model_name)
);
CREATE INDEX IF NOT EXISTS monoize_provider_models_model_name
    ON monoize_provider_models (model_name);

CREATE TABLE IF NOT EXISTS monoize_channels (
    id          TEXT PRIMARY KEY NOT NULL,
    provider_id TEXT NOT NULL REFERENCES monoize_providers (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    base_url    TEXT NOT NULL,
    api_key     TEXT NOT NULL,
    weight      INTEGER NOT NULL DEFAULT 1 CHECK (weight >= 0),
    enabled     INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS monoize_channels_provider_id ON monoize_channels (provider_id);

-- Legacy tables (DBT4): kept for compatibility and dashboard maintenance; routing never
-- reads them (DBO4).
CREATE TABLE IF NOT EXISTS providers (
    id                TEXT PRIMARY KEY NOT NULL,
    name              TEXT NOT NULL,
    provider_type     TEXT NOT NULL,
    base_url          TEXT,
    auth_type         TEXT,
    auth_value        TEXT,
    auth_header_name  TEXT,
    auth_query_name   TEXT,
    capabilities_json TEXT,
    strategy_json     TEXT,
    enabled           INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    priority          INTEGER NOT NULL DEFAULT 0,
    weight            INTEGER NOT NULL DEFAULT 1 CHECK (weight >= 0),
    tag               TEXT,
    groups_json       TEXT NOT NULL DEFAULT '[]',
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS model_mappings (
    id             TEXT PRIMARY KEY NOT NULL,
    provider_id    TEXT NOT NULL REFERENCES providers (id) ON DELETE CASCADE,
    logical_model  TEXT NOT NULL,
    upstream_model TEXT NOT NULL,
    created_at     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS model_mappings_provider_id ON model_mappings (provider_id);

CREATE TABLE IF NOT EXISTS group_members (
    id                 TEXT PRIMARY KEY NOT NULL,
    group_provider_id  TEXT NOT NULL REFERENCES providers (id) ON DELETE CASCADE,
    member_provider_id TEXT NOT NULL REFERENCES providers (id) ON DELETE CASCADE,
    weight             INTEGER NOT NULL DEFAULT 1 CHECK (weight >= 0),
    priority           INTEGER NOT NULL DEFAULT 0,
    created_at         TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS group_members_group ON group_members (group_provider_id);
CREATE INDEX IF NOT EXISTS group_members_member ON group_members (member_provider_id);
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Dsn;
    use crate::db::{self, Database};

    fn schema_sql(connection: &Connection) -> Vec<(String, String)> {
        let mut statement = connection
            .prepare("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name")
            .unwrap();
        statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    fn fresh() -> Connection {
        let mut connection = Connection::open_in_memory().unwrap();
        migrate(&mut connection).unwrap();
        connection
    }

    fn assert_columns(connection: &Connection, table: &str, expected: &[&str]) {
        assert_eq!(
            columns(connection, table).unwrap(),
            expected,
            "columns of {table}"
        );
    }

    fn indexes(connection: &Connection, table: &str) -> Vec<String> {
        let mut statement = connection
            .prepare("SELECT name FROM pragma_index_list(?1) ORDER BY name")
            .unwrap();
        statement
            .query_map([table], |row| row.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn dbt1_dashboard_tables_have_their_columns() {
        let c = fresh();
        assert_columns(
            &c,
            "users",
            &[
                "id",
                "username",
                "password_hash",
                "role",
                "enabled",
                "balance_nano_usd",
                "balance_unlimited",
                "created_at",
                "updated_at",
                "last_login_at",
            ],
        );
        assert_columns(
            &c,
            "sessions",
            &["id", "user_id", "token_hash", "created_at", "expires_at"],
        );
        assert_columns(
            &c,
            "api_keys",
            &[
                "id",
                "user_id",
                "name",
                "key_prefix",
                "key_hash",
                "created_at",
                "expires_at",
                "last_used_at",
                "enabled",
                "quota_remaining",
                "quota_unlimited",
                "model_limits_enabled",
                "model_limits",
                "ip_whitelist",
                "token_group",
                "max_multiplier",
                "transforms",
            ],
        );
        assert_columns(
            &c,
            "billing_ledger",
            &[
                "id",
                "user_id",
                "kind",
                "delta_nano_usd",
                "balance_after_nano_usd",
                "request_id",
                "meta_json",
                "created_at",
            ],
        );
        assert!(indexes(&c, "api_keys").contains(&"api_keys_key_prefix".to_owned()));
        let ledger_indexes = indexes(&c, "billing_ledger");
        assert!(ledger_indexes.contains(&"billing_ledger_user_id".to_owned()));
        assert!(!ledger_indexes.contains(&"billing_ledger_user_created".to_owned()));
    }

    #[test]
    fn dbo3_1_migration_3_drops_the_redundant_ledger_index_and_keeps_the_rows() {
        let mut c = fresh();
        c.execute_batch(
            "CREATE INDEX billing_ledger_user_created ON billing_ledger (user_id, created_at);
             INSERT INTO billing_ledger (user_id, kind, delta_nano_usd, balance_after_nano_usd, \
                 meta_json, created_at) VALUES ('u1', 'admin_adjustment', '5', '5', '{}', \
                 '2025-01-01T00:00:00.000Z');",
        )
        .unwrap();
        c.pragma_update(None, "user_version", 2).unwrap();
        migrate(&mut c).unwrap();
        assert_eq!(version(&c).unwrap(), LATEST_VERSION);
        assert!(!indexes(&c, "billing_ledger").contains(&"billing_ledger_user_created".to_owned()));
        let rows: i64 = c
            .query_row("SELECT count(*) FROM billing_ledger", [], |row| row.get(0))
            .unwrap();
        assert_eq!(rows, 1);
    }

    #[test]
    fn dbt3_migration_5_indexes_stored_responses_by_age_and_keeps_the_rows() {
        let mut c = fresh();
        c.execute_batch(
            "DROP INDEX stored_responses_created_at;
             INSERT INTO stored_responses VALUES (zeroblob(32), 'u1', 'p1', 'c1', \
                 '2025-01-01T00:00:00.000Z');",
        )
        .unwrap();
        c.pragma_update(None, "user_version", 4).unwrap();
        migrate(&mut c).unwrap();
        assert_eq!(version(&c).unwrap(), LATEST_VERSION);
        assert!(
            indexes(&c, "stored_responses").contains(&"stored_responses_created_at".to_owned())
        );
        let rows: i64 = c
            .query_row("SELECT count(*) FROM stored_responses", [], |row| {
                row.get(0)
            })
            .unwrap();
        assert_eq!(rows, 1);
    }

    #[test]
    fn dbt2_model_registry_tables_have_their_columns() {
        let c = fresh();
        assert_columns(
            &c,
            "model_registry_records",
            &[
                "id",
                "logical_model",
                "provider_id",
                "upstream_model",
                "capabilities_json",
                "enabled",
                "priority",
                "created_at",
                "updated_at",
            ],
        );
        assert_columns(
            &c,
            "model_metadata_records",
            &[
                "model_id",
                "models_dev_provider",
                "mode",
                "input_cost_per_token_nano",
                "output_cost_per_token_nano",
                "cache_read_input_cost_per_token_nano",
                "output_cost_per_reasoning_token_nano",
                "max_input_tokens",
                "max_output_tokens",
                "max_tokens",
                "raw_json",
                "source",
                "updated_at",
            ],
        );
    }

    #[test]
    fn dbt3_routing_tables_have_their_columns_and_indexes() {
        let c = fresh();
        assert_columns(
            &c,
            "monoize_providers",
            &[
                "id",
                "name",
                "provider_type",
                "max_retries",
                "transforms",
                "groups",
                "enabled",
                "priority",
                "created_at",
                "updated_at",
            ],
        );
        assert_columns(
            &c,
            "monoize_provider_models",
            &[
                "id",
                "provider_id",
                "model_name",
                "redirect",
                "multiplier",
                "created_at",
            ],
        );
        assert_columns(
            &c,
            "monoize_channels",
            &[
                "id",
                "provider_id",
                "name",
                "base_url",
                "api_key",
                "weight",
                "enabled",
                "created_at",
                "updated_at",
            ],
        );
        assert!(
            indexes(&c, "monoize_providers").contains(&"monoize_providers_priority".to_owned())
        );
        assert!(
            indexes(&c, "monoize_provider_models")
                .contains(&"monoize_provider_models_model_name".to_owned())
        );
    }

    #[test]
    fn dbt4_legacy_tables_exist() {
        let c = fresh();
        assert!(missing_tables(&c).unwrap().is_empty());
        assert_columns(
            &c,
            "model_mappings",
            &[
                "id",
                "provider_id",
                "logical_model",
                "upstream_model",
                "created_at",
            ],
        );
        assert_columns(
            &c,
            "group_members",
            &[
                "id",
                "group_provider_id",
                "member_provider_id",
                "weight",
                "priority",
                "created_at",
            ],
        );
        assert!(
            columns(&c, "providers")
                .unwrap()
                .contains(&"auth_value".to_owned())
        );
    }

    #[test]
    fn dbt_schema_is_versioned_with_user_version() {
        let c = fresh();
        assert_eq!(version(&c).unwrap(), LATEST_VERSION);
    }

    #[test]
    fn dbt_restarting_on_an_existing_file_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let dsn = Dsn::File(dir.path().join("m.db"));
        let first = db::open(&dsn).unwrap();
        let before = first
            .read_blocking(|c| Ok((schema_sql(c), version(c)?)))
            .unwrap();
        drop(first);
        let modified = std::fs::metadata(dir.path().join("m.db"))
            .unwrap()
            .modified()
            .unwrap();
        let second = db::open(&dsn).unwrap();
        let after = second
            .read_blocking(|c| Ok((schema_sql(c), version(c)?)))
            .unwrap();
        assert_eq!(before, after);
        drop(second);
        let again = std::fs::metadata(dir.path().join("m.db"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(
            modified, again,
            "a restart must not write the database file"
        );
    }

    #[test]
    fn dbt_migration_recreates_a_missing_table() {
        let mut c = fresh();
        c.execute_batch("DROP TABLE group_members").unwrap();
        migrate(&mut c).unwrap();
        assert!(missing_tables(&c).unwrap().is_empty());
    }

    #[test]
    fn dbt_newer_schema_is_refused() {
        let mut c = fresh();
        c.pragma_update(None, "user_version", LATEST_VERSION + 1)
            .unwrap();
        let error = migrate(&mut c).unwrap_err();
        assert!(matches!(error, DbError::TooNew { .. }), "{error:?}");
    }

    #[test]
    fn dbo1_1_migrates_users_without_billing_columns() {
        let mut c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE TABLE users (id TEXT PRIMARY KEY NOT NULL, username TEXT NOT NULL UNIQUE, \
                 password_hash TEXT NOT NULL, role TEXT NOT NULL, enabled INTEGER NOT NULL DEFAULT 1, \
                 created_at TEXT NOT NULL, updated_at TEXT NOT NULL, last_login_at TEXT);
             INSERT INTO users (id, username, password_hash, role, created_at, updated_at)
                 VALUES ('u1', 'old', 'h', 'admin', '2025-01-01T00:00:00.000Z', '2025-01-01T00:00:00.000Z');",
        )
        .unwrap();
        migrate(&mut c).unwrap();
        let names = columns(&c, "users").unwrap();
        assert!(names.contains(&"balance_nano_usd".to_owned()));
        assert!(names.contains(&"balance_unlimited".to_owned()));
        let (balance, unlimited): (String, i64) = c
            .query_row(
                "SELECT balance_nano_usd, balance_unlimited FROM users WHERE id = 'u1'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((balance.as_str(), unlimited), ("0", 0));
        assert_eq!(version(&c).unwrap(), LATEST_VERSION);
        assert!(missing_tables(&c).unwrap().is_empty());
        let user = crate::db::users::get(&c, "u1").unwrap().unwrap();
        assert_eq!(user.balance_nano_usd, crate::money::NanoUsd::ZERO);
    }

    #[test]
    fn dbo1_1_defaults_hold_for_new_rows() {
        let c = fresh();
        c.execute(
            "INSERT INTO users (id, username, password_hash, role, created_at, updated_at) \
             VALUES ('u', 'n', 'h', 'user', 't', 't')",
            [],
        )
        .unwrap();
        let (balance, unlimited): (String, i64) = c
            .query_row(
                "SELECT balance_nano_usd, balance_unlimited FROM users",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((balance.as_str(), unlimited), ("0", 0));
    }

    #[test]
    fn dbo3_1_ledger_refuses_update_and_delete() {
        let database = Database::open_in_memory().unwrap();
        database
            .write_blocking(|tx| {
                tx.execute(
                    "INSERT INTO billing_ledger (user_id, kind, delta_nano_usd, \
                     balance_after_nano_usd, created_at) VALUES ('u', 'admin_adjustment', '5', '5', 't')",
                    [],
                )?;
                Ok(())
            })
            .unwrap();
        for statement in [
            "UPDATE billing_ledger SET delta_nano_usd = '6'",
            "DELETE FROM billing_ledger",
        ] {
            let error = database
                .write_blocking(|tx| Ok(tx.execute(statement, [])?))
                .unwrap_err();
            assert!(error.to_string().contains("append-only"), "{error}");
        }
        let count: i64 = database
            .read_blocking(|c| {
                Ok(c.query_row("SELECT count(*) FROM billing_ledger", [], |r| r.get(0))?)
            })
            .unwrap();
        assert_eq!(count, 1);
    }

    #[test]
    fn checks_refuse_bad_values() {
        let c = fresh();
        let refused = |sql: &str| assert!(c.execute(sql, []).is_err(), "{sql}");
        refused(
            "INSERT INTO users (id, username, password_hash, role, balance_nano_usd, created_at, updated_at) VALUES ('a','a','h','user','1.5','t','t')",
        );
        refused(
            "INSERT INTO users (id, username, password_hash, role, enabled, created_at, updated_at) VALUES ('a','a','h','user',2,'t','t')",
        );
        refused(
            "INSERT INTO monoize_providers (id, name, provider_type, created_at, updated_at) VALUES ('p','p','ollama','t','t')",
        );
        c.execute("INSERT INTO monoize_providers (id, name, provider_type, created_at, updated_at) VALUES ('p','p','grok','t','t')", []).unwrap();
        refused(
            "INSERT INTO monoize_channels (id, provider_id, name, base_url, api_key, weight, created_at, updated_at) VALUES ('c','p','c','u','k',-1,'t','t')",
        );
        refused(
            "INSERT INTO monoize_channels (id, provider_id, name, base_url, api_key, created_at, updated_at) VALUES ('c','nope','c','u','k','t','t')",
        );
        refused(
            "INSERT INTO monoize_provider_models (id, provider_id, model_name, multiplier, created_at) VALUES ('m','p','x','0','t')",
        );
        refused(
            "INSERT INTO monoize_provider_models (id, provider_id, model_name, multiplier, created_at) VALUES ('m','p','x','1e3','t')",
        );
        refused(
            "INSERT INTO billing_ledger (user_id, kind, delta_nano_usd, balance_after_nano_usd, created_at) VALUES ('u','refund','1','1','t')",
        );
        refused(
            "INSERT INTO billing_ledger (user_id, kind, delta_nano_usd, balance_after_nano_usd, created_at) VALUES ('u','request_charge','1','1','t')",
        );
        refused(
            "INSERT INTO model_metadata_records (model_id, input_cost_per_token_nano, updated_at) VALUES ('m','-1','t')",
        );
    }

    #[test]
    fn routing_children_cascade_with_their_provider() {
        let c = fresh();
        c.execute_batch(
            "PRAGMA foreign_keys = ON;
             INSERT INTO monoize_providers (id, name, provider_type, created_at, updated_at) VALUES ('p','p','grok','t','t');
             INSERT INTO monoize_provider_models (id, provider_id, model_name, created_at) VALUES ('m','p','x','t');
             INSERT INTO monoize_channels (id, provider_id, name, base_url, api_key, created_at, updated_at) VALUES ('c','p','c','u','k','t','t');
             DELETE FROM monoize_providers;",
        )
        .unwrap();
        let left: i64 = c
            .query_row(
                "SELECT (SELECT count(*) FROM monoize_provider_models) + (SELECT count(*) FROM monoize_channels)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(left, 0);
    }
}
