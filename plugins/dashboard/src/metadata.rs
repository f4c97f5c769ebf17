//! `/model-metadata` (admin): model metadata and prices (`model_metadata_records`).
//!
//! Prices are nano-USD per token, answered as strings of digits and accepted as a JSON string
//! or whole number ≥ 0: `input_cost_per_token_nano`, `output_cost_per_token_nano`,
//! `cache_read_input_cost_per_token_nano`, `output_cost_per_reasoning_token_nano` (each
//! nullable). The model id may contain `/` (`openai/gpt-4o`): the route takes the rest of the
//! path, and a `%2F` reads as `/` too. `PUT` replaces the whole row (absent fields become
//! `null`, `source` defaults to `manual`) and answers 201 when it created it, 200 otherwise.

use serde_json::{Value, json};

use crate::http::{self, ApiError};
use crate::money;
use crate::router::Ctx;
use crate::store::{HttpResponse, ModelMetadata};

/// The longest model id.
const MAX_MODEL_ID: usize = 256;

/// A metadata row as every read answers it.
pub fn metadata_json(row: &ModelMetadata) -> Value {
    let price = |price: Option<u64>| price.map(|price| price.to_string());
    json!({
        "model_id": row.model_id,
        "models_dev_provider": row.models_dev_provider,
        "mode": row.mode,
        "input_cost_per_token_nano": price(row.input_cost_per_token),
        "output_cost_per_token_nano": price(row.output_cost_per_token),
        "cache_read_input_cost_per_token_nano": price(row.cache_read_input_cost_per_token),
        "output_cost_per_reasoning_token_nano": price(row.output_cost_per_reasoning_token),
        "max_input_tokens": row.max_input_tokens,
        "max_output_tokens": row.max_output_tokens,
        "max_tokens": row.max_tokens,
        "raw_json": row.raw_json.as_deref().map(http::stored_json),
        "source": row.source,
        "updated_at": row.updated_at,
    })
}

fn tokens(value: &Value, param: &str) -> Result<u64, ApiError> {
    value
        .as_u64()
        .ok_or_else(|| ApiError::invalid(param, format!("`{param}` must be a whole number ≥ 0")))
}

/// The model id of the path, checked.
fn model_id(ctx: &Ctx<'_>) -> Result<String, ApiError> {
    let id = ctx.param("model_id");
    if id.trim().is_empty() || id.chars().count() > MAX_MODEL_ID || id.chars().any(char::is_control)
    {
        return Err(ApiError::invalid(
            "model_id",
            format!("`model_id` must be 1 to {MAX_MODEL_ID} printable characters"),
        ));
    }
    Ok(id.to_owned())
}

/// `GET /model-metadata`: every row, by model id.
pub fn list(ctx: &Ctx<'_>) -> Result<HttpResponse, ApiError> {
    let rows = ctx.store.list_metadata().map_err(|e| ctx.store_error(e))?;
    http::ok(Value::Array(rows.iter().map(metadata_json).collect()))
}

/// `GET /model-metadata/{model_id}`.
pub fn get(ctx: &Ctx<'_>) -> Result<HttpResponse, ApiError> {
    let id = model_id(ctx)?;
    let row = ctx
        .store
        .get_metadata(&id)
        .map_err(|e| ctx.store_error(e))?
        .ok_or_else(|| ApiError::not_found(format!("no metadata for model {id}")))?;
    http::ok(metadata_json(&row))
}

/// `PUT /model-metadata/{model_id}`: creates or replaces the row.
pub fn upsert(ctx: &Ctx<'_>) -> Result<HttpResponse, ApiError> {
    let id = model_id(ctx)?;
    let body = ctx.body()?;
    if let Some(sent) = body.optional("model_id", http::string)?
        && sent != id
    {
        return Err(ApiError::invalid(
            "model_id",
            "`model_id` in the body differs from the path's",
        ));
    }
    let row = ModelMetadata {
        model_id: id.clone(),
        models_dev_provider: body.optional("models_dev_provider", http::name(256))?,
        mode: body.optional("mode", http::name(64))?,
        input_cost_per_token: body.optional("input_cost_per_token_nano", money::price)?,
        output_cost_per_token: body.optional("output_cost_per_token_nano", money::price)?,
        cache_read_input_cost_per_token: body
            .optional("cache_read_input_cost_per_token_nano", money::price)?,
        output_cost_per_reasoning_token: body
            .optional("output_cost_per_reasoning_token_nano", money::price)?,
        max_input_tokens: body.optional("max_input_tokens", tokens)?,
        max_output_tokens: body.optional("max_output_tokens", tokens)?,
        max_tokens: body.optional("max_tokens", tokens)?,
        raw_json: body
            .value("raw_json")
            .filter(|raw| !raw.is_null())
            .map(Value::to_string),
        source: body
            .optional("source", http::name(64))?
            .unwrap_or_else(|| "manual".to_owned()),
        updated_at: String::new(),
    };
    let store = ctx.store;
    let existed = store
        .get_metadata(&id)
        .map_err(|e| ctx.store_error(e))?
        .is_some();
    let row = store
        .upsert_metadata(&row)
        .map_err(|e| ctx.store_error(e))?;
    let status = if existed { 200 } else { 201 };
    Ok(http::json_response(status, &metadata_json(&row)))
}

/// `DELETE /model-metadata/{model_id}`.
pub fn delete(ctx: &Ctx<'_>) -> Result<HttpResponse, ApiError> {
    let id = model_id(ctx)?;
    let gone = ctx
        .store
        .delete_metadata(&id)
        .map_err(|e| ctx.store_error(e))?;
    if !gone {
        return Err(ApiError::not_found(format!("no metadata for model {id}")));
    }
    http::deleted()
}
