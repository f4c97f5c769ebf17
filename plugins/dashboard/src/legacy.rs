//! `/legacy/{table}` (admin): maintenance of the legacy tables `providers`, `model_mappings`
//! and `group_members` (DBT4), kept for compatibility only; routing never reads them. Rows are
//! answered as JSON objects of their columns. An unknown table is a 404.

use serde_json::Value;

use crate::http::{self, ApiError};
use crate::router::Ctx;
use crate::store::{HttpResponse, LegacyTable};

/// The table named in the path, or 404.
fn table(ctx: &Ctx<'_>) -> Result<LegacyTable, ApiError> {
    match ctx.param("table") {
        "providers" => Ok(LegacyTable::Providers),
        "model_mappings" => Ok(LegacyTable::ModelMappings),
        "group_members" => Ok(LegacyTable::GroupMembers),
        other => Err(ApiError::not_found(format!(
            "no legacy table {other}: providers, model_mappings or group_members"
        ))
        .with_param("table")),
    }
}

/// `GET /legacy/{table}`: every row.
pub fn list(ctx: &Ctx<'_>) -> Result<HttpResponse, ApiError> {
    let rows = ctx
        .store
        .list_legacy(table(ctx)?)
        .map_err(|e| ctx.store_error(e))?;
    http::ok(Value::Array(
        rows.iter().map(|row| http::stored_json(row)).collect(),
    ))
}

/// `DELETE /legacy/{table}/{id}`.
pub fn delete(ctx: &Ctx<'_>) -> Result<HttpResponse, ApiError> {
    let table = table(ctx)?;
    let id = ctx.param("id");
    let gone = ctx
        .store
        .delete_legacy(table, id)
        .map_err(|e| ctx.store_error(e))?;
    if !gone {
        return Err(ApiError::not_found(format!("no row {id}")));
    }
    http::deleted()
}
