//! The model registry (`model_registry_records`, DBO2) and per-model pricing and capability
//! metadata (`model_metadata_records`, DBO2.1). Prices are exact nano-USD per token, stored as
//! TEXT integers.

use rusqlite::{Connection, Row, Transaction, params};

use super::{
    DbError, clock, collect, expect_one, first, new_id, parse_optional_column, require_json,
};

/// One row of `model_registry_records`: a logical model served by a provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRecordRow {
    /// Primary key.
    pub id: String,
    /// The model name clients ask for.
    pub logical_model: String,
    /// The provider that serves it (unique with `logical_model`).
    pub provider_id: String,
    /// The name sent upstream.
    pub upstream_model: String,
    /// Capabilities as JSON text.
    pub capabilities_json: String,
    /// Whether the record is in use.
    pub enabled: bool,
    /// Ordering among records of one logical model, lowest first.
    pub priority: i64,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it last changed (RFC 3339).
    pub updated_at: String,
}

/// What [`insert`] needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewModelRecord {
    /// The model name clients ask for.
    pub logical_model: String,
    /// The provider that serves it.
    pub provider_id: String,
    /// The name sent upstream.
    pub upstream_model: String,
    /// Capabilities as JSON text.
    pub capabilities_json: String,
    /// Whether the record is in use.
    pub enabled: bool,
    /// Ordering, lowest first.
    pub priority: i64,
}

/// One row of `model_metadata_records`. Prices are nano-USD per token; `None`: unknown.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModelMetadataRow {
    /// The model (`gpt-4o`, `openai/gpt-4o`); primary key.
    pub model_id: String,
    /// The models.dev provider it was imported from.
    pub models_dev_provider: Option<String>,
    /// `chat`, `embedding`, …
    pub mode: Option<String>,
    /// Price of one input token.
    pub input_cost_per_token_nano: Option<u64>,
    /// Price of one output token.
    pub output_cost_per_token_nano: Option<u64>,
    /// Price of one cached input token.
    pub cache_read_input_cost_per_token_nano: Option<u64>,
    /// Price of one reasoning token.
    pub output_cost_per_reasoning_token_nano: Option<u64>,
    /// Context limit for input.
    pub max_input_tokens: Option<i64>,
    /// Limit for output.
    pub max_output_tokens: Option<i64>,
    /// Overall token limit.
    pub max_tokens: Option<i64>,
    /// The imported source record as JSON text.
    pub raw_json: String,
    /// Where the row came from (`manual`, `models.dev`, …).
    pub source: String,
    /// When it last changed (RFC 3339); set by [`upsert_metadata`].
    pub updated_at: String,
}

const RECORD_COLUMNS: &str = "id, logical_model, provider_id, upstream_model, capabilities_json, \
                              enabled, priority, created_at, updated_at";

const METADATA_COLUMNS: &str = "model_id, models_dev_provider, mode, input_cost_per_token_nano, \
     output_cost_per_token_nano, cache_read_input_cost_per_token_nano, \
     output_cost_per_reasoning_token_nano, max_input_tokens, max_output_tokens, max_tokens, \
     raw_json, source, updated_at";

impl ModelRecordRow {
    fn from_row(row: &Row<'_>) -> Result<ModelRecordRow, DbError> {
        Ok(ModelRecordRow {
            id: row.get("id")?,
            logical_model: row.get("logical_model")?,
            provider_id: row.get("provider_id")?,
            upstream_model: row.get("upstream_model")?,
            capabilities_json: row.get("capabilities_json")?,
            enabled: row.get("enabled")?,
            priority: row.get("priority")?,
            created_at: row.get("created_at")?,
            updated_at: row.get("updated_at")?,
        })
    }
}

impl ModelMetadataRow {
    fn from_row(row: &Row<'_>) -> Result<ModelMetadataRow, DbError> {
        Ok(ModelMetadataRow {
            model_id: row.get("model_id")?,
            models_dev_provider: row.get("models_dev_provider")?,
            mode: row.get("mode")?,
            input_cost_per_token_nano: parse_optional_column(row, "input_cost_per_token_nano")?,
            output_cost_per_token_nano: parse_optional_column(row, "output_cost_per_token_nano")?,
            cache_read_input_cost_per_token_nano: parse_optional_column(
                row,
                "cache_read_input_cost_per_token_nano",
            )?,
            output_cost_per_reasoning_token_nano: parse_optional_column(
                row,
                "output_cost_per_reasoning_token_nano",
            )?,
            max_input_tokens: row.get("max_input_tokens")?,
            max_output_tokens: row.get("max_output_tokens")?,
            max_tokens: row.get("max_tokens")?,
            raw_json: row.get("raw_json")?,
            source: row.get("source")?,
            updated_at: row.get("updated_at")?,
        })
    }
}

/// Inserts a registry record with a new id; a second record for the same logical model and
/// provider is `Conflict`.
pub fn insert(tx: &Transaction<'_>, new: &NewModelRecord) -> Result<ModelRecordRow, DbError> {
    require_json("capabilities_json", &new.capabilities_json)?;
    let id = new_id()?;
    tx.prepare_cached(&format!(
        "INSERT INTO model_registry_records ({RECORD_COLUMNS}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)"
    ))?
    .execute(params![
        id,
        new.logical_model,
        new.provider_id,
        new.upstream_model,
        new.capabilities_json,
        new.enabled,
        new.priority,
        clock::now()
    ])?;
    get(tx, &id)?.ok_or_else(|| DbError::NotFound(format!("model record {id}")))
}

/// The registry record `id`, if it exists.
pub fn get(conn: &Connection, id: &str) -> Result<Option<ModelRecordRow>, DbError> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {RECORD_COLUMNS} FROM model_registry_records WHERE id = ?1"
    ))?;
    first(statement.query([id])?, ModelRecordRow::from_row)
}

/// Every registry record, by logical model, then priority.
pub fn list(conn: &Connection) -> Result<Vec<ModelRecordRow>, DbError> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {RECORD_COLUMNS} FROM model_registry_records \
         ORDER BY logical_model, priority, id"
    ))?;
    collect(statement.query([])?, ModelRecordRow::from_row)
}

/// Writes every field of `record` but its id and creation time; answers the stored row.
pub fn update(tx: &Transaction<'_>, record: &ModelRecordRow) -> Result<ModelRecordRow, DbError> {
    require_json("capabilities_json", &record.capabilities_json)?;
    let changed = tx
        .prepare_cached(
            "UPDATE model_registry_records SET logical_model = ?2, provider_id = ?3, \
             upstream_model = ?4, capabilities_json = ?5, enabled = ?6, priority = ?7, \
             updated_at = ?8 WHERE id = ?1",
        )?
        .execute(params![
            record.id,
            record.logical_model,
            record.provider_id,
            record.upstream_model,
            record.capabilities_json,
            record.enabled,
            record.priority,
            clock::now()
        ])?;
    expect_one(changed, || format!("model record {}", record.id))?;
    get(tx, &record.id)?.ok_or_else(|| DbError::NotFound(format!("model record {}", record.id)))
}

/// Deletes the registry record `id`.
pub fn delete(tx: &Transaction<'_>, id: &str) -> Result<(), DbError> {
    let changed = tx
        .prepare_cached("DELETE FROM model_registry_records WHERE id = ?1")?
        .execute([id])?;
    expect_one(changed, || format!("model record {id}"))
}

/// Inserts or replaces the metadata of `metadata.model_id` (its `updated_at` is set to now; a
/// blank `raw_json` is stored as `{}`, a blank `source` as `manual`); answers the stored row.
pub fn upsert_metadata(
    tx: &Transaction<'_>,
    metadata: &ModelMetadataRow,
) -> Result<ModelMetadataRow, DbError> {
    if metadata.model_id.is_empty() {
        return Err(DbError::Invalid("model_id must not be empty".to_owned()));
    }
    let raw_json = or_default(&metadata.raw_json, "{}");
    require_json("raw_json", raw_json)?;
    let source = or_default(&metadata.source, "manual");
    let price = |value: Option<u64>| value.map(|nanos| nanos.to_string());
    tx.prepare_cached(&format!(
        "INSERT OR REPLACE INTO model_metadata_records ({METADATA_COLUMNS}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
    ))?
    .execute(params![
        metadata.model_id,
        metadata.models_dev_provider,
        metadata.mode,
        price(metadata.input_cost_per_token_nano),
        price(metadata.output_cost_per_token_nano),
        price(metadata.cache_read_input_cost_per_token_nano),
        price(metadata.output_cost_per_reasoning_token_nano),
        metadata.max_input_tokens,
        metadata.max_output_tokens,
        metadata.max_tokens,
        raw_json,
        source,
        clock::now()
    ])?;
    get_metadata(tx, &metadata.model_id)?
        .ok_or_else(|| DbError::NotFound(format!("model metadata {}", metadata.model_id)))
}

/// `text`, or `default` when it is blank.
fn or_default<'a>(text: &'a str, default: &'a str) -> &'a str {
    if text.trim().is_empty() {
        default
    } else {
        text
    }
}

/// The metadata of `model_id`, if any (exact match).
pub fn get_metadata(
    conn: &Connection,
    model_id: &str,
) -> Result<Option<ModelMetadataRow>, DbError> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {METADATA_COLUMNS} FROM model_metadata_records WHERE model_id = ?1"
    ))?;
    first(statement.query([model_id])?, ModelMetadataRow::from_row)
}

/// Every metadata row, by model id.
pub fn list_metadata(conn: &Connection) -> Result<Vec<ModelMetadataRow>, DbError> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {METADATA_COLUMNS} FROM model_metadata_records ORDER BY model_id"
    ))?;
    collect(statement.query([])?, ModelMetadataRow::from_row)
}

/// Deletes the metadata of `model_id`.
pub fn delete_metadata(tx: &Transaction<'_>, model_id: &str) -> Result<(), DbError> {
    let changed = tx
        .prepare_cached("DELETE FROM model_metadata_records WHERE model_id = ?1")?
        .execute([model_id])?;
    expect_one(changed, || format!("model metadata {model_id}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Database;

    fn record(logical: &str, provider: &str) -> NewModelRecord {
        NewModelRecord {
            logical_model: logical.to_owned(),
            provider_id: provider.to_owned(),
            upstream_model: format!("{logical}-upstream"),
            capabilities_json: r#"{"vision":true}"#.to_owned(),
            enabled: true,
            priority: 0,
        }
    }

    #[test]
    fn dbo2_registry_records_round_trip() {
        let db = Database::open_in_memory().unwrap();
        let new = record("gpt-4o", "p1");
        let mut row = db.write_blocking(move |tx| insert(tx, &new)).unwrap();
        assert_eq!(row.upstream_model, "gpt-4o-upstream");
        let duplicate = record("gpt-4o", "p1");
        assert!(matches!(
            db.write_blocking(move |tx| insert(tx, &duplicate)),
            Err(DbError::Conflict(_))
        ));
        let second = record("gpt-4o", "p2");
        db.write_blocking(move |tx| insert(tx, &second)).unwrap();
        row.priority = 5;
        row.enabled = false;
        let updated = db.write_blocking(move |tx| update(tx, &row)).unwrap();
        assert_eq!((updated.priority, updated.enabled), (5, false));
        let listed = db.read_blocking(list).unwrap();
        assert_eq!(
            listed
                .iter()
                .map(|r| r.provider_id.as_str())
                .collect::<Vec<_>>(),
            ["p2", "p1"]
        );
        let id = updated.id.clone();
        db.write_blocking(move |tx| delete(tx, &id)).unwrap();
        let id = updated.id.clone();
        assert_eq!(db.read_blocking(move |c| get(c, &id)).unwrap(), None);
        assert!(matches!(
            db.write_blocking(move |tx| delete(tx, &updated.id)),
            Err(DbError::NotFound(_))
        ));
    }

    #[test]
    fn dbo2_1_metadata_upserts_exact_prices() {
        let db = Database::open_in_memory().unwrap();
        let metadata = ModelMetadataRow {
            model_id: "openai/gpt-4o".to_owned(),
            mode: Some("chat".to_owned()),
            input_cost_per_token_nano: Some(2_500),
            output_cost_per_token_nano: Some(10_000),
            cache_read_input_cost_per_token_nano: Some(1_250),
            output_cost_per_reasoning_token_nano: None,
            max_input_tokens: Some(128_000),
            raw_json: "{}".to_owned(),
            source: "manual".to_owned(),
            ..ModelMetadataRow::default()
        };
        let sent = metadata.clone();
        let stored = db
            .write_blocking(move |tx| upsert_metadata(tx, &sent))
            .unwrap();
        assert_eq!(stored.input_cost_per_token_nano, Some(2_500));
        assert_eq!(stored.output_cost_per_reasoning_token_nano, None);
        assert_eq!(stored.max_input_tokens, Some(128_000));
        let mut changed = metadata.clone();
        changed.input_cost_per_token_nano = Some(u64::MAX);
        db.write_blocking(move |tx| upsert_metadata(tx, &changed))
            .unwrap();
        let read = db
            .read_blocking(|c| get_metadata(c, "openai/gpt-4o"))
            .unwrap()
            .unwrap();
        assert_eq!(read.input_cost_per_token_nano, Some(u64::MAX));
        assert_eq!(db.read_blocking(list_metadata).unwrap().len(), 1);
        db.write_blocking(|tx| delete_metadata(tx, "openai/gpt-4o"))
            .unwrap();
        assert_eq!(
            db.read_blocking(|c| get_metadata(c, "openai/gpt-4o"))
                .unwrap(),
            None
        );
    }

    #[test]
    fn dbo2_1_metadata_refuses_bad_input() {
        let db = Database::open_in_memory().unwrap();
        let empty = ModelMetadataRow {
            raw_json: "{}".to_owned(),
            ..ModelMetadataRow::default()
        };
        assert!(matches!(
            db.write_blocking(move |tx| upsert_metadata(tx, &empty)),
            Err(DbError::Invalid(_))
        ));
        let bad_json = ModelMetadataRow {
            model_id: "m".to_owned(),
            raw_json: "{".to_owned(),
            ..ModelMetadataRow::default()
        };
        assert!(matches!(
            db.write_blocking(move |tx| upsert_metadata(tx, &bad_json)),
            Err(DbError::Invalid(_))
        ));
        assert!(matches!(
            db.write_blocking(|tx| delete_metadata(tx, "none")),
            Err(DbError::NotFound(_))
        ));
    }
}
