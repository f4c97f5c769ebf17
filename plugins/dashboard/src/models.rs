//! `/models` (admin): the model registry (`model_registry_records`), a logical model offered
//! through a provider.
//!
//! Body: `logical_model` and `provider_id` (required on create; the provider must exist),
//! `upstream_model?` (the logical model), `capabilities?` (a JSON object, `{}`), `enabled?`
//! (true), `priority?` (0). `PUT` is partial: an absent field keeps its value. A logical model
//! and provider already registered is a 409.

use serde_json::{Value, json};

use crate::http::{self, ApiError, Body};
use crate::router::Ctx;
use crate::store::{HttpResponse, RegistryFields, RegistryRecord};

/// A registry row as every read answers it.
pub fn record_json(record: &RegistryRecord) -> Value {
    json!({
        "id": record.id,
        "logical_model": record.logical_model,
        "provider_id": record.provider_id,
        "upstream_model": record.upstream_model,
        "capabilities": http::stored_json(&record.capabilities_json),
        "enabled": record.enabled,
        "priority": record.priority,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    })
}

/// The fields a body asks for, over `current` on update.
fn fields(
    ctx: &Ctx<'_>,
    body: &Body,
    current: Option<&RegistryRecord>,
) -> Result<RegistryFields, ApiError> {
    let logical = body.optional("logical_model", http::name(256))?;
    let provider = body.optional("provider_id", http::name(128))?;
    let upstream = body.optional("upstream_model", http::name(256))?;
    let capabilities = body.optional("capabilities", http::json_object)?;
    let enabled = body.optional("enabled", http::boolean)?;
    let priority = body.optional("priority", http::int)?;
    if let Some(provider) = &provider {
        let known = ctx
            .store
            .get_provider(provider)
            .map_err(|e| ctx.store_error(e))?
            .is_some();
        if !known {
            return Err(ApiError::invalid(
                "provider_id",
                format!("there is no provider {provider}"),
            ));
        }
    }
    Ok(match current {
        None => {
            let logical = logical.ok_or_else(|| ApiError::missing("logical_model"))?;
            RegistryFields {
                upstream_model: upstream.unwrap_or_else(|| logical.clone()),
                logical_model: logical,
                provider_id: provider.ok_or_else(|| ApiError::missing("provider_id"))?,
                capabilities_json: capabilities.unwrap_or_else(|| "{}".to_owned()),
                enabled: enabled.unwrap_or(true),
                priority: priority.unwrap_or(0),
            }
        }
        Some(current) => RegistryFields {
            logical_model: logical.unwrap_or_else(|| current.logical_model.clone()),
            provider_id: provider.unwrap_or_else(|| current.provider_id.clone()),
            upstream_model: upstream.unwrap_or_else(|| current.upstream_model.clone()),
            capabilities_json: capabilities.unwrap_or_else(|| current.capabilities_json.clone()),
            enabled: enabled.unwrap_or(current.enabled),
            priority: priority.unwrap_or(current.priority),
        },
    })
}

/// The row `id`, or 404.
fn find(ctx: &Ctx<'_>, id: &str) -> Result<RegistryRecord, ApiError> {
    ctx.store
        .get_record(id)
        .map_err(|e| ctx.store_error(e))?
        .ok_or_else(|| ApiError::not_found(format!("no registry record {id}")))
}

/// `GET /models`: every row, by priority.
pub fn list(ctx: &Ctx<'_>) -> Result<HttpResponse, ApiError> {
    let records = ctx.store.list_records().map_err(|e| ctx.store_error(e))?;
    http::ok(Value::Array(records.iter().map(record_json).collect()))
}

/// `GET /models/{id}`.
pub fn get(ctx: &Ctx<'_>) -> Result<HttpResponse, ApiError> {
    http::ok(record_json(&find(ctx, ctx.param("id"))?))
}

/// `POST /models` → 201.
pub fn create(ctx: &Ctx<'_>) -> Result<HttpResponse, ApiError> {
    let fields = fields(ctx, &ctx.body()?, None)?;
    let record = ctx
        .store
        .create_record(&fields)
        .map_err(|e| ctx.store_error(e))?;
    http::created(record_json(&record))
}

/// `PUT /models/{id}`.
pub fn update(ctx: &Ctx<'_>) -> Result<HttpResponse, ApiError> {
    let body = ctx.body()?;
    let current = find(ctx, ctx.param("id"))?;
    let fields = fields(ctx, &body, Some(&current))?;
    let record = ctx
        .store
        .update_record(&current.id, &fields)
        .map_err(|e| ctx.store_error(e))?;
    http::ok(record_json(&record))
}

/// `DELETE /models/{id}`.
pub fn delete(ctx: &Ctx<'_>) -> Result<HttpResponse, ApiError> {
    let id = ctx.param("id");
    let gone = ctx
        .store
        .delete_record(id)
        .map_err(|e| ctx.store_error(e))?;
    if !gone {
        return Err(ApiError::not_found(format!("no registry record {id}")));
    }
    http::deleted()
}
