//! `monoize:plugin/registry-store`: the model registry and model metadata (prices) over the
//! database. A delete of something missing answers `false`, never an error.

use crate::db::DbError;
use crate::db::registry::{self, ModelMetadataRow, ModelRecordRow, NewModelRecord};

use super::store::PluginState;
use super::wit::latest::registry_store::{self as wit, Host};
use super::wit::latest::types::StoreError;

impl Host for PluginState {
    async fn list_records(&mut self) -> Result<Vec<wit::RegistryRecord>, StoreError> {
        let rows = self.dashboard_read(registry::list).await?;
        Ok(rows.into_iter().map(record_to_wit).collect())
    }

    async fn get_record(&mut self, id: String) -> Result<Option<wit::RegistryRecord>, StoreError> {
        let row = self
            .dashboard_read(move |conn| registry::get(conn, &id))
            .await?;
        Ok(row.map(record_to_wit))
    }

    async fn create_record(
        &mut self,
        fields: wit::RegistryFields,
    ) -> Result<wit::RegistryRecord, StoreError> {
        check_fields(&fields)?;
        let new = NewModelRecord {
            logical_model: fields.logical_model,
            provider_id: fields.provider_id,
            upstream_model: fields.upstream_model,
            capabilities_json: fields.capabilities_json,
            enabled: fields.enabled,
            priority: fields.priority,
        };
        let row = self
            .database_write(move |tx| registry::insert(tx, &new).map_err(record_conflict))
            .await?;
        Ok(record_to_wit(row))
    }

    async fn update_record(
        &mut self,
        id: String,
        fields: wit::RegistryFields,
    ) -> Result<wit::RegistryRecord, StoreError> {
        check_fields(&fields)?;
        let row = self
            .database_write(move |tx| {
                let mut record = registry::get(tx, &id)?
                    .ok_or_else(|| DbError::NotFound(format!("model record {id}")))?;
                record.logical_model = fields.logical_model;
                record.provider_id = fields.provider_id;
                record.upstream_model = fields.upstream_model;
                record.capabilities_json = fields.capabilities_json;
                record.enabled = fields.enabled;
                record.priority = fields.priority;
                registry::update(tx, &record).map_err(record_conflict)
            })
            .await?;
        Ok(record_to_wit(row))
    }

    async fn delete_record(&mut self, id: String) -> Result<bool, StoreError> {
        self.database_write(move |tx| found(registry::delete(tx, &id)))
            .await
    }

    async fn list_metadata(&mut self) -> Result<Vec<wit::ModelMetadata>, StoreError> {
        let rows = self.dashboard_read(registry::list_metadata).await?;
        Ok(rows.into_iter().map(metadata_to_wit).collect())
    }

    async fn get_metadata(
        &mut self,
        model_id: String,
    ) -> Result<Option<wit::ModelMetadata>, StoreError> {
        let row = self
            .dashboard_read(move |conn| registry::get_metadata(conn, &model_id))
            .await?;
        Ok(row.map(metadata_to_wit))
    }

    async fn upsert_metadata(
        &mut self,
        metadata: wit::ModelMetadata,
    ) -> Result<wit::ModelMetadata, StoreError> {
        let row = metadata_from_wit(metadata)?;
        let stored = self
            .database_write(move |tx| registry::upsert_metadata(tx, &row))
            .await;
        self.forget_prices();
        Ok(metadata_to_wit(stored?))
    }

    async fn delete_metadata(&mut self, model_id: String) -> Result<bool, StoreError> {
        let deleted = self
            .database_write(move |tx| found(registry::delete_metadata(tx, &model_id)))
            .await;
        self.forget_prices();
        deleted
    }
}

impl PluginState {
    /// Prices are served from memory by the billing store: a metadata write must reach it.
    fn forget_prices(&self) {
        if let Some(billing) = &self.capabilities.billing {
            billing.forget_prices();
        }
    }
}

/// `Ok(true)` for a done delete, `Ok(false)` for a missing row.
pub(super) fn found(outcome: Result<(), DbError>) -> Result<bool, DbError> {
    match outcome {
        Ok(()) => Ok(true),
        Err(DbError::NotFound(_)) => Ok(false),
        Err(error) => Err(error),
    }
}

fn check_fields(fields: &wit::RegistryFields) -> Result<(), StoreError> {
    for (name, value) in [
        ("logical_model", &fields.logical_model),
        ("provider_id", &fields.provider_id),
        ("upstream_model", &fields.upstream_model),
    ] {
        if value.trim().is_empty() {
            return Err(StoreError::Invalid(format!("{name} must not be empty")));
        }
    }
    Ok(())
}

fn record_conflict(error: DbError) -> DbError {
    match error {
        DbError::Conflict(_) => {
            DbError::Conflict("logical_model already has a record for this provider_id".to_owned())
        }
        other => other,
    }
}

fn record_to_wit(row: ModelRecordRow) -> wit::RegistryRecord {
    wit::RegistryRecord {
        id: row.id,
        logical_model: row.logical_model,
        provider_id: row.provider_id,
        upstream_model: row.upstream_model,
        capabilities_json: row.capabilities_json,
        enabled: row.enabled,
        priority: row.priority,
        created_at: row.created_at,
        updated_at: row.updated_at,
    }
}

fn metadata_to_wit(row: ModelMetadataRow) -> wit::ModelMetadata {
    let tokens = |value: Option<i64>| value.and_then(|count| u64::try_from(count).ok());
    wit::ModelMetadata {
        model_id: row.model_id,
        models_dev_provider: row.models_dev_provider,
        mode: row.mode,
        input_cost_per_token: row.input_cost_per_token_nano,
        output_cost_per_token: row.output_cost_per_token_nano,
        cache_read_input_cost_per_token: row.cache_read_input_cost_per_token_nano,
        output_cost_per_reasoning_token: row.output_cost_per_reasoning_token_nano,
        max_input_tokens: tokens(row.max_input_tokens),
        max_output_tokens: tokens(row.max_output_tokens),
        max_tokens: tokens(row.max_tokens),
        raw_json: Some(row.raw_json),
        source: row.source,
        updated_at: row.updated_at,
    }
}

fn metadata_from_wit(metadata: wit::ModelMetadata) -> Result<ModelMetadataRow, StoreError> {
    let tokens = |field: &str, value: Option<u64>| {
        value
            .map(|count| {
                i64::try_from(count)
                    .map_err(|_| StoreError::Invalid(format!("{field} is too large")))
            })
            .transpose()
    };
    if metadata.model_id.trim().is_empty() {
        return Err(StoreError::Invalid("model_id must not be empty".to_owned()));
    }
    Ok(ModelMetadataRow {
        max_input_tokens: tokens("max_input_tokens", metadata.max_input_tokens)?,
        max_output_tokens: tokens("max_output_tokens", metadata.max_output_tokens)?,
        max_tokens: tokens("max_tokens", metadata.max_tokens)?,
        model_id: metadata.model_id,
        models_dev_provider: metadata.models_dev_provider,
        mode: metadata.mode,
        input_cost_per_token_nano: metadata.input_cost_per_token,
        output_cost_per_token_nano: metadata.output_cost_per_token,
        cache_read_input_cost_per_token_nano: metadata.cache_read_input_cost_per_token,
        output_cost_per_reasoning_token_nano: metadata.output_cost_per_reasoning_token,
        raw_json: metadata.raw_json.unwrap_or_default(),
        source: metadata.source,
        updated_at: String::new(),
    })
}
