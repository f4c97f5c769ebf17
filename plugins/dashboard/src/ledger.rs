//! `GET /ledger?user_id=&limit=&before=`: ledger rows, newest first, as a JSON array.
//!
//! A `user` reads only their own rows (`user_id` absent or their own; another's is a 403). An
//! administrator reads anyone's: `user_id` picks one user, and without it they get every
//! user's rows. `limit` is 1–1000 (default 100); `before` is a row's `id` and answers the rows
//! older than it, so a client pages by passing the last `id` it got.

use serde_json::{Value, json};

use crate::http::{self, ApiError};
use crate::money;
use crate::router::{Ctx, is_admin};
use crate::store::{HttpResponse, LedgerEntry, LedgerKind};

/// Rows per page when `limit` is not given.
pub const DEFAULT_LIMIT: u32 = 100;
/// The most rows per page.
pub const MAX_LIMIT: u32 = 1000;

/// A ledger row as the API answers it; amounts as strings.
pub fn entry_json(entry: &LedgerEntry) -> Value {
    json!({
        "id": entry.id,
        "user_id": entry.user_id,
        "kind": match entry.kind {
            LedgerKind::RequestCharge => "request_charge",
            LedgerKind::AdminAdjustment => "admin_adjustment",
        },
        "delta_nano_usd": entry.delta.to_string(),
        "delta_usd": money::format_usd(entry.delta),
        "balance_after_nano_usd": entry.balance_after.to_string(),
        "balance_after_usd": money::format_usd(entry.balance_after),
        "request_id": entry.request_id,
        "meta": http::stored_json(&entry.meta_json),
        "created_at": entry.created_at,
    })
}

/// `GET /ledger`.
pub fn list(ctx: &Ctx<'_>) -> Result<HttpResponse, ApiError> {
    let caller = ctx.principal()?;
    // Empty values (`?user_id=&limit=&before=`) read as absent.
    let limit = match ctx.query("limit")?.filter(|limit| !limit.is_empty()) {
        None => DEFAULT_LIMIT,
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|limit| (1..=MAX_LIMIT).contains(limit))
            .ok_or_else(|| {
                ApiError::invalid("limit", format!("`limit` must be from 1 to {MAX_LIMIT}"))
            })?,
    };
    let before = ctx.query("before")?.filter(|before| !before.is_empty());
    let asked = ctx.query("user_id")?.filter(|user| !user.is_empty());
    let user_id = match asked {
        Some(user) if user == caller.user.id => Some(user),
        Some(user) if is_admin(caller.user.role) => Some(user),
        Some(_) => {
            return Err(
                ApiError::forbidden("you can read only your own ledger").with_param("user_id")
            );
        }
        None if is_admin(caller.user.role) => None,
        None => Some(caller.user.id.clone()),
    };
    let entries = ctx
        .store
        .list_ledger(user_id.as_deref(), limit, before.as_deref())
        .map_err(|e| ctx.store_error(e).with_param("before"))?;
    http::ok(Value::Array(entries.iter().map(entry_json).collect()))
}
