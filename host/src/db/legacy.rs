//! The legacy provider tables (DBT4): `providers`, `model_mappings`, `group_members`. Kept for
//! compatibility and dashboard maintenance only; routing never reads them (DBO4). Their
//! columns vary between old databases, so rows are answered as JSON objects of whatever
//! columns the table has, except credentials.

use std::fmt;
use std::str::FromStr;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, Row, Transaction};
use serde_json::{Map, Value};

use super::{DbError, clamp_limit, collect, expect_one};

/// Columns never answered: the legacy `providers.auth_value` holds an upstream credential.
const SECRET_COLUMNS: [&str; 1] = ["auth_value"];

/// One of the legacy tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LegacyTable {
    /// `providers`.
    Providers,
    /// `model_mappings`.
    ModelMappings,
    /// `group_members`.
    GroupMembers,
}

impl LegacyTable {
    /// Every legacy table.
    pub const ALL: [LegacyTable; 3] = [
        LegacyTable::Providers,
        LegacyTable::ModelMappings,
        LegacyTable::GroupMembers,
    ];

    /// The table's name.
    pub fn as_str(self) -> &'static str {
        match self {
            LegacyTable::Providers => "providers",
            LegacyTable::ModelMappings => "model_mappings",
            LegacyTable::GroupMembers => "group_members",
        }
    }
}

impl FromStr for LegacyTable {
    type Err = DbError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        LegacyTable::ALL
            .into_iter()
            .find(|table| table.as_str() == text)
            .ok_or_else(|| DbError::NotFound(format!("legacy table `{text}`")))
    }
}

impl fmt::Display for LegacyTable {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        out.write_str(self.as_str())
    }
}

/// Up to `limit` rows of `table` (clamped to `1..=MAX_LIST_LIMIT`) in insertion order, each a
/// JSON object of its columns; credential columns are left out.
pub fn list(conn: &Connection, table: LegacyTable, limit: u32) -> Result<Vec<Value>, DbError> {
    // The table name comes from the enum, never from input, so formatting it in is safe.
    let mut statement =
        conn.prepare_cached(&format!("SELECT * FROM {table} ORDER BY rowid LIMIT ?1"))?;
    let names: Vec<String> = statement
        .column_names()
        .into_iter()
        .map(str::to_owned)
        .collect();
    collect(statement.query([clamp_limit(limit)])?, |row| {
        row_object(row, &names)
    })
}

/// Deletes the row `id` of `table` (a `providers` row takes its mappings and group members
/// with it).
pub fn delete(tx: &Transaction<'_>, table: LegacyTable, id: &str) -> Result<(), DbError> {
    let changed = tx
        .prepare_cached(&format!("DELETE FROM {table} WHERE id = ?1"))?
        .execute([id])?;
    expect_one(changed, || format!("{table} row {id}"))
}

fn row_object(row: &Row<'_>, names: &[String]) -> Result<Value, DbError> {
    let mut object = Map::new();
    for (index, name) in names.iter().enumerate() {
        if SECRET_COLUMNS.contains(&name.as_str()) {
            continue;
        }
        object.insert(name.clone(), json_value(row.get_ref(index)?));
    }
    Ok(Value::Object(object))
}

fn json_value(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(integer) => Value::from(integer),
        ValueRef::Real(real) => Value::from(real),
        ValueRef::Text(text) => Value::from(String::from_utf8_lossy(text).into_owned()),
        ValueRef::Blob(bytes) => Value::from(super::lower_hex(bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Database;

    fn seeded() -> Database {
        let db = Database::open_in_memory().unwrap();
        db.write_blocking(|tx| {
            tx.execute_batch(
                "INSERT INTO providers (id, name, provider_type, auth_value, created_at, updated_at)
                     VALUES ('p1', 'old', 'openai', 'sk-legacy-secret', 't', 't'),
                            ('p2', 'other', 'openai', NULL, 't', 't');
                 INSERT INTO model_mappings (id, provider_id, logical_model, upstream_model, created_at)
                     VALUES ('m1', 'p1', 'gpt', 'gpt-4', 't');
                 INSERT INTO group_members (id, group_provider_id, member_provider_id, created_at)
                     VALUES ('g1', 'p1', 'p2', 't');",
            )?;
            Ok(())
        })
        .unwrap();
        db
    }

    #[test]
    fn dbt4_legacy_rows_are_listed_as_json_without_credentials() {
        let db = seeded();
        let providers = db
            .read_blocking(|c| list(c, LegacyTable::Providers, 100))
            .unwrap();
        assert_eq!(providers.len(), 2);
        assert_eq!(providers[0]["id"], "p1");
        assert_eq!(providers[0]["enabled"], 1);
        assert!(providers[0].get("auth_value").is_none());
        assert!(
            !serde_json::to_string(&providers)
                .unwrap()
                .contains("sk-legacy-secret")
        );
        let mappings = db
            .read_blocking(|c| list(c, LegacyTable::ModelMappings, 100))
            .unwrap();
        assert_eq!(mappings[0]["upstream_model"], "gpt-4");
    }

    #[test]
    fn dbt4_legacy_delete_cascades_and_reports_missing_rows() {
        let db = seeded();
        db.write_blocking(|tx| delete(tx, LegacyTable::Providers, "p1"))
            .unwrap();
        for table in [LegacyTable::ModelMappings, LegacyTable::GroupMembers] {
            assert!(
                db.read_blocking(move |c| list(c, table, 100))
                    .unwrap()
                    .is_empty()
            );
        }
        let missing = db
            .write_blocking(|tx| delete(tx, LegacyTable::Providers, "p1"))
            .unwrap_err();
        assert!(matches!(missing, DbError::NotFound(_)));
    }

    #[test]
    fn dbt4_legacy_table_names_parse_and_refuse_others() {
        for table in LegacyTable::ALL {
            assert_eq!(table.as_str().parse::<LegacyTable>().unwrap(), table);
        }
        assert!("users".parse::<LegacyTable>().is_err());
    }
}
