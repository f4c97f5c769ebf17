//! `/tokens`: the caller's own API keys. Everyone, administrators included, sees and changes
//! only their own keys here; another user's key answers 404, exactly like a missing one, so
//! ids do not leak.
//!
//! A key is `sk-` and 43 random URL-safe characters. It is stored only as its first 12
//! characters (`key_prefix`, to recognise it) and its `crypto.hash-secret`; its full text is
//! answered once, by the create (201, field `key`), and never again.
//!
//! Body fields (create; on update every field is optional and an absent one stays):
//! `name` (required on create), `expires_in_days` (1–36500, `null`: never), `enabled`,
//! `quota_remaining`, `quota_unlimited`, `model_limits_enabled`, `model_limits` (model names),
//! `ip_whitelist` (addresses or CIDRs), `group` (`null`: any provider), `max_multiplier`
//! (exact decimal > 0 as a JSON number or string, `null`: no ceiling), `transforms` (array).

use std::net::IpAddr;

use serde_json::{Value, json};

use crate::clock::{self, DAY_MS};
use crate::http::{self, ApiError, Body, Field};
use crate::money;
use crate::router::Ctx;
use crate::store::{ApiKey, ApiKeySettings, HttpResponse};

/// Random bytes after `sk-` (URL-safe base64, 43 characters).
const KEY_TOKEN_BYTES: u32 = 32;
/// Characters of a key kept in clear to recognise it.
const PREFIX_CHARS: usize = 12;
/// The most entries of `model_limits` or `ip_whitelist`.
const MAX_LIST: usize = 1024;
/// The most ids one batch delete takes.
const MAX_BATCH: usize = 1000;

/// A key as every read answers it: never its hash nor its full text.
pub fn key_json(key: &ApiKey) -> Value {
    json!({
        "id": key.id,
        "user_id": key.user_id,
        "name": key.name,
        "key_prefix": key.key_prefix,
        "created_at": key.created_at,
        "expires_at": key.expires_at,
        "last_used_at": key.last_used_at,
        "enabled": key.enabled,
        "quota_remaining": key.quota_remaining,
        "quota_unlimited": key.quota_unlimited,
        "model_limits_enabled": key.model_limits_enabled,
        "model_limits": key.model_limits,
        "ip_whitelist": key.ip_whitelist,
        "group": key.group,
        "max_multiplier": key.max_multiplier.map(money::format_decimal),
        "transforms": http::stored_json(&key.transforms_json),
    })
}

/// One IP whitelist entry: an address or a CIDR (`10.0.0.0/8`, `2001:db8::/32`).
pub fn ip_entry(value: &Value, param: &str) -> Result<String, ApiError> {
    let text = http::string(value, param)?;
    let entry = text.trim();
    let bad = || {
        ApiError::invalid(
            param,
            format!("`{param}` must be an IP address or a CIDR such as 10.0.0.0/8, not {entry:?}"),
        )
    };
    let (address, prefix) = match entry.split_once('/') {
        Some((address, prefix)) => (address, Some(prefix)),
        None => (entry, None),
    };
    let address: IpAddr = address.parse().map_err(|_| bad())?;
    if let Some(prefix) = prefix {
        let bits: u8 = prefix.parse().map_err(|_| bad())?;
        // As the gateway reads it (`host/src/cidr.rs`): an IPv4-mapped IPv6 address is IPv4.
        let ipv4 = match address {
            IpAddr::V4(_) => true,
            IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some(),
        };
        let max = if ipv4 { 32 } else { 128 };
        if bits > max || prefix.starts_with('+') {
            return Err(bad());
        }
    }
    Ok(entry.to_owned())
}

/// A list of at most [`MAX_LIST`] entries, each read by `item`.
fn list_of(
    item: impl Fn(&Value, &str) -> Result<String, ApiError>,
) -> impl Fn(&Value, &str) -> Result<Vec<String>, ApiError> {
    move |value, param| {
        let Value::Array(items) = value else {
            return Err(ApiError::invalid(
                param,
                format!("`{param}` must be an array"),
            ));
        };
        if items.len() > MAX_LIST {
            return Err(ApiError::invalid(
                param,
                format!("`{param}` has more than {MAX_LIST} entries"),
            ));
        }
        items
            .iter()
            .enumerate()
            .map(|(index, entry)| item(entry, &format!("{param}[{index}]")))
            .collect()
    }
}

/// Days until expiry: 1–36500.
fn days(value: &Value, param: &str) -> Result<i64, ApiError> {
    match value.as_i64() {
        Some(days) if (1..=36_500).contains(&days) => Ok(days),
        _ => Err(ApiError::invalid(
            param,
            format!("`{param}` must be a whole number of days from 1 to 36500"),
        )),
    }
}

/// The settings `body` asks for, over `current` (a new key's defaults on create).
fn settings(
    ctx: &Ctx<'_>,
    body: &Body,
    current: ApiKeySettings,
) -> Result<ApiKeySettings, ApiError> {
    let mut settings = current;
    if let Some(name) = body.optional("name", http::name(64))? {
        settings.name = name;
    }
    if let Some(days) = body.field("expires_in_days", days)?.patch() {
        settings.expires_at = days.map(|days| {
            clock::rfc3339(
                ctx.store
                    .now_ms()
                    .saturating_add(days.saturating_mul(DAY_MS)),
            )
        });
    }
    if let Some(enabled) = body.optional("enabled", http::boolean)? {
        settings.enabled = enabled;
    }
    if let Some(quota) = body.field("quota_remaining", http::int)?.patch() {
        settings.quota_remaining = quota;
    }
    if let Some(unlimited) = body.optional("quota_unlimited", http::boolean)? {
        settings.quota_unlimited = unlimited;
    }
    if let Some(enabled) = body.optional("model_limits_enabled", http::boolean)? {
        settings.model_limits_enabled = enabled;
    }
    if let Some(models) = body
        .field("model_limits", list_of(http::name(256)))?
        .patch()
    {
        settings.model_limits = models.unwrap_or_default();
    }
    if let Some(entries) = body.field("ip_whitelist", list_of(ip_entry))?.patch() {
        settings.ip_whitelist = entries.unwrap_or_default();
    }
    if let Some(group) = body.field("group", http::name(64))?.patch() {
        settings.group = group;
    }
    if let Some(ceiling) = body.field("max_multiplier", money::multiplier)?.patch() {
        settings.max_multiplier = ceiling;
    }
    match body.field("transforms", http::json_array)? {
        Field::Set(transforms) => settings.transforms_json = transforms,
        Field::Null => settings.transforms_json = "[]".to_owned(),
        Field::Absent => {}
    }
    Ok(settings)
}

/// The stored settings of `key`.
fn settings_of(key: &ApiKey) -> ApiKeySettings {
    ApiKeySettings {
        name: key.name.clone(),
        expires_at: key.expires_at.clone(),
        enabled: key.enabled,
        quota_remaining: key.quota_remaining,
        quota_unlimited: key.quota_unlimited,
        model_limits_enabled: key.model_limits_enabled,
        model_limits: key.model_limits.clone(),
        ip_whitelist: key.ip_whitelist.clone(),
        group: key.group.clone(),
        max_multiplier: key.max_multiplier,
        transforms_json: key.transforms_json.clone(),
    }
}

/// The caller's key `id`, or 404 (also when it is someone else's).
fn own_key(ctx: &Ctx<'_>, id: &str) -> Result<ApiKey, ApiError> {
    let caller = ctx.principal()?;
    let key = ctx.store.get_api_key(id).map_err(|e| ctx.store_error(e))?;
    match key {
        Some(key) if key.user_id == caller.user.id => Ok(key),
        _ => Err(ApiError::not_found(format!("no key {id}"))),
    }
}

/// `GET /tokens`: the caller's keys, newest first.
pub fn list(ctx: &Ctx<'_>) -> Result<HttpResponse, ApiError> {
    let caller = ctx.principal()?;
    let keys = ctx
        .store
        .list_api_keys(Some(&caller.user.id))
        .map_err(|e| ctx.store_error(e))?;
    let own = keys.iter().filter(|key| key.user_id == caller.user.id);
    http::ok(Value::Array(own.map(key_json).collect()))
}

/// `GET /tokens/{id}`.
pub fn get(ctx: &Ctx<'_>) -> Result<HttpResponse, ApiError> {
    http::ok(key_json(&own_key(ctx, ctx.param("id"))?))
}

/// `POST /tokens` → 201 with the full `key`, the only time it is shown.
pub fn create(ctx: &Ctx<'_>) -> Result<HttpResponse, ApiError> {
    let caller = ctx.principal()?;
    let body = ctx.body()?;
    if body.optional("name", http::name(64))?.is_none() {
        return Err(ApiError::missing("name"));
    }
    let defaults = ApiKeySettings {
        name: String::new(),
        expires_at: None,
        enabled: true,
        quota_remaining: None,
        quota_unlimited: true,
        model_limits_enabled: false,
        model_limits: Vec::new(),
        ip_whitelist: Vec::new(),
        group: None,
        max_multiplier: None,
        transforms_json: "[]".to_owned(),
    };
    let settings = settings(ctx, &body, defaults)?;
    let store = ctx.store;
    let secret = format!("sk-{}", store.random_token(KEY_TOKEN_BYTES));
    let prefix: String = secret.chars().take(PREFIX_CHARS).collect();
    let key = store
        .create_api_key(
            &caller.user.id,
            &prefix,
            &store.hash_secret(&secret),
            &settings,
        )
        .map_err(|e| ctx.store_error(e))?;
    let mut answer = key_json(&key);
    if let Value::Object(fields) = &mut answer {
        fields.insert("key".to_owned(), Value::String(secret));
    }
    http::created(answer)
}

/// `PUT /tokens/{id}`: the fields given replace the stored ones.
pub fn update(ctx: &Ctx<'_>) -> Result<HttpResponse, ApiError> {
    let body = ctx.body()?;
    let key = own_key(ctx, ctx.param("id"))?;
    let settings = settings(ctx, &body, settings_of(&key))?;
    let key = ctx
        .store
        .update_api_key(&key.id, &settings)
        .map_err(|e| ctx.store_error(e))?;
    http::ok(key_json(&key))
}

/// `DELETE /tokens/{id}`.
pub fn delete(ctx: &Ctx<'_>) -> Result<HttpResponse, ApiError> {
    let caller = ctx.principal()?;
    let id = ctx.param("id").to_owned();
    let gone = ctx
        .store
        .delete_api_keys(&caller.user.id, std::slice::from_ref(&id))
        .map_err(|e| ctx.store_error(e))?;
    if gone == 0 {
        return Err(ApiError::not_found(format!("no key {id}")));
    }
    http::deleted()
}

/// `POST /tokens/batch-delete` `{ids}` → `{"deleted": n}`, counting only the caller's keys.
pub fn batch_delete(ctx: &Ctx<'_>) -> Result<HttpResponse, ApiError> {
    let caller = ctx.principal()?;
    let body = ctx.body()?;
    let ids = body.required("ids", http::strings)?;
    if ids.len() > MAX_BATCH {
        return Err(ApiError::invalid(
            "ids",
            format!("`ids` has more than {MAX_BATCH} entries"),
        ));
    }
    let gone = if ids.is_empty() {
        0
    } else {
        ctx.store
            .delete_api_keys(&caller.user.id, &ids)
            .map_err(|e| ctx.store_error(e))?
    };
    http::ok(json!({ "deleted": gone }))
}
