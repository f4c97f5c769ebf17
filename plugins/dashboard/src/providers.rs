//! `/providers` (admin): the routing configuration, a provider with its models and channels.
//!
//! Body: `name`, `provider_type` (`responses`, `chat_completion`, `messages`, `gemini`,
//! `grok`), `enabled?` (true), `priority?` (after every other on create), `max_retries?` (-1:
//! all channels), `groups?` ([]), `transforms?` ([]), `models` (`{name: {redirect?,
//! multiplier?}}`, multiplier an exact decimal > 0 as a JSON number or string, default 1) and
//! `channels` (`[{id?, name, base_url, api_key, weight?, enabled?}]`, `base_url` http(s)).
//!
//! Channel API keys are write-only: reads leave `api_key` out entirely (no mask a
//! read-modify-write could save back). On `PUT`, a channel with the `id` of one of the
//! provider's channels is updated and keeps its key when `api_key` is omitted or empty; a
//! channel without `id` is new and needs a key (400); an `id` the provider does not have is a
//! 400. `PUT` is partial: an absent field keeps its value (absent `models` or `channels` keep
//! all of them); a given `models` or `channels` replaces the whole set.

use serde_json::{Map, Value, json};

use crate::http::{self, ApiError, Body};
use crate::money;
use crate::router::Ctx;
use crate::store::{
    ChannelInput, HttpResponse, ModelInput, ProviderInput, ProviderType, ProviderView,
};

/// The most models or channels one provider takes.
const MAX_ENTRIES: usize = 10_000;

/// The wire name of a provider type.
pub fn type_name(provider_type: ProviderType) -> &'static str {
    match provider_type {
        ProviderType::Responses => "responses",
        ProviderType::ChatCompletion => "chat_completion",
        ProviderType::Messages => "messages",
        ProviderType::Gemini => "gemini",
        ProviderType::Grok => "grok",
    }
}

fn provider_type(value: &Value, param: &str) -> Result<ProviderType, ApiError> {
    match value.as_str() {
        Some("responses") => Ok(ProviderType::Responses),
        Some("chat_completion") => Ok(ProviderType::ChatCompletion),
        Some("messages") => Ok(ProviderType::Messages),
        Some("gemini") => Ok(ProviderType::Gemini),
        Some("grok") => Ok(ProviderType::Grok),
        _ => Err(ApiError::invalid(
            param,
            format!("`{param}` must be one of responses, chat_completion, messages, gemini, grok"),
        )),
    }
}

/// A provider as every read answers it; channels without their key.
pub fn provider_json(view: &ProviderView) -> Value {
    let provider = &view.provider;
    let models: Map<String, Value> = provider
        .models
        .iter()
        .map(|entry| {
            (
                entry.model.clone(),
                json!({
                    "redirect": entry.redirect,
                    "multiplier": money::format_decimal(entry.multiplier),
                }),
            )
        })
        .collect();
    let channels: Vec<Value> = view
        .channels
        .iter()
        .map(|channel| {
            json!({
                "id": channel.id,
                "name": channel.name,
                "base_url": channel.base_url,
                "weight": channel.weight,
                "enabled": channel.enabled,
            })
        })
        .collect();
    json!({
        "id": provider.id,
        "name": provider.name,
        "provider_type": type_name(provider.provider_type),
        "enabled": provider.enabled,
        "priority": provider.priority,
        "max_retries": provider.max_retries,
        "groups": provider.groups,
        "transforms": http::stored_json(&view.transforms_json),
        "models": models,
        "channels": channels,
        "created_at": view.created_at,
        "updated_at": view.updated_at,
    })
}

/// An upstream origin: `http://` or `https://` and a host.
fn base_url(value: &Value, param: &str) -> Result<String, ApiError> {
    let text = http::string(value, param)?;
    let url = text.trim();
    let lower = url.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"));
    let host_ok = rest.is_some_and(|rest| {
        !rest.is_empty() && !rest.starts_with('/') && !rest.contains(char::is_whitespace)
    });
    if !host_ok || url.len() > 2048 {
        return Err(ApiError::invalid(
            param,
            format!("`{param}` must be an http:// or https:// URL"),
        ));
    }
    Ok(url.to_owned())
}

/// A channel's key, trimmed (a pasted key often ends in a newline): printable ASCII without
/// spaces, as every provider's keys are. Anything else could never be sent in a header, and
/// the channel would fail every request.
fn api_key(value: &Value, param: &str) -> Result<String, ApiError> {
    let text = http::string(value, param)?;
    let key = text.trim();
    if key.len() > 4096 || !key.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(ApiError::invalid(
            param,
            format!("`{param}` must be printable ASCII without spaces, at most 4096 characters"),
        ));
    }
    Ok(key.to_owned())
}

/// A weight ≥ 0.
fn weight(value: &Value, param: &str) -> Result<u32, ApiError> {
    value
        .as_u64()
        .and_then(|weight| u32::try_from(weight).ok())
        .ok_or_else(|| ApiError::invalid(param, format!("`{param}` must be a whole number ≥ 0")))
}

/// `max_retries`: -1 (all) or more.
fn max_retries(value: &Value, param: &str) -> Result<i32, ApiError> {
    value
        .as_i64()
        .and_then(|retries| i32::try_from(retries).ok())
        .filter(|retries| *retries >= -1)
        .ok_or_else(|| ApiError::invalid(param, format!("`{param}` must be a whole number ≥ -1")))
}

/// `models`: `{name: {redirect?, multiplier?}}`.
fn models(value: &Value, param: &str) -> Result<Vec<ModelInput>, ApiError> {
    let Value::Object(entries) = value else {
        return Err(ApiError::invalid(
            param,
            format!("`{param}` must be an object of model name to {{redirect, multiplier}}"),
        ));
    };
    if entries.len() > MAX_ENTRIES {
        return Err(ApiError::invalid(
            param,
            format!("`{param}` has more than {MAX_ENTRIES} models"),
        ));
    }
    let mut out = Vec::with_capacity(entries.len());
    for (model, spec) in entries {
        let here = format!("{param}.{model}");
        let model = http::name(256)(&Value::String(model.clone()), &here)?;
        let spec = match spec {
            Value::Object(fields) => Body::from_map(fields.clone()),
            Value::Null => Body::default(),
            _ => {
                return Err(ApiError::invalid(
                    &here,
                    format!("`{here}` must be an object {{redirect, multiplier}}"),
                ));
            }
        };
        let redirect = spec
            .optional("redirect", http::string)
            .map_err(|e| e.with_param(&format!("{here}.redirect")))?
            .map(|redirect| redirect.trim().to_owned())
            .filter(|redirect| !redirect.is_empty());
        let multiplier_param = format!("{here}.multiplier");
        let multiplier = match spec.value("multiplier") {
            None | Some(Value::Null) => money::DECIMAL_ONE,
            Some(value) => money::provider_multiplier(value, &multiplier_param)?,
        };
        out.push(ModelInput {
            model,
            redirect,
            multiplier,
        });
    }
    Ok(out)
}

/// `channels`, checked against the ids of the provider's current channels.
fn channels(
    value: &Value,
    param: &str,
    existing: &[String],
) -> Result<Vec<ChannelInput>, ApiError> {
    let Value::Array(items) = value else {
        return Err(ApiError::invalid(
            param,
            format!("`{param}` must be an array of channels"),
        ));
    };
    if items.len() > MAX_ENTRIES {
        return Err(ApiError::invalid(
            param,
            format!("`{param}` has more than {MAX_ENTRIES} channels"),
        ));
    }
    let mut out: Vec<ChannelInput> = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let here = format!("{param}[{index}]");
        let Value::Object(fields) = item else {
            return Err(ApiError::invalid(
                &here,
                format!("`{here}` must be an object"),
            ));
        };
        let channel = Body::from_map(fields.clone());
        let at = &here;
        let nested = move |name: &str| format!("{at}.{name}");
        let rename =
            move |name: &'static str| move |e: ApiError| e.with_param(&format!("{at}.{name}"));
        let id = channel
            .optional("id", http::name(128))
            .map_err(rename("id"))?;
        if let Some(id) = &id {
            if !existing.contains(id) {
                return Err(ApiError::invalid(
                    &nested("id"),
                    format!("this provider has no channel {id}; leave `id` out for a new channel"),
                ));
            }
            if out
                .iter()
                .any(|other| other.id.as_deref() == Some(id.as_str()))
            {
                return Err(ApiError::invalid(
                    &nested("id"),
                    format!("channel {id} is listed twice"),
                ));
            }
        }
        let name = channel
            .required("name", http::name(256))
            .map_err(rename("name"))?;
        let base_url = channel
            .required("base_url", base_url)
            .map_err(rename("base_url"))?;
        let api_key = channel
            .optional("api_key", api_key)
            .map_err(rename("api_key"))?
            .filter(|key| !key.is_empty());
        if id.is_none() && api_key.is_none() {
            return Err(ApiError::invalid(
                &nested("api_key"),
                format!("`{}` is required for a new channel", nested("api_key")),
            ));
        }
        let weight = channel
            .optional("weight", weight)
            .map_err(rename("weight"))?
            .unwrap_or(1);
        let enabled = channel
            .optional("enabled", http::boolean)
            .map_err(rename("enabled"))?
            .unwrap_or(true);
        out.push(ChannelInput {
            id,
            name,
            base_url,
            api_key,
            weight,
            enabled,
        });
    }
    Ok(out)
}

/// The provider a body asks for: from scratch on create, over `current` on update.
fn provider_input(body: &Body, current: Option<&ProviderView>) -> Result<ProviderInput, ApiError> {
    let name = body.optional("name", http::name(256))?;
    let kind = body.optional("provider_type", provider_type)?;
    let enabled = body.optional("enabled", http::boolean)?;
    let priority = body.optional("priority", http::int)?;
    let retries = body.optional("max_retries", max_retries)?;
    let groups = body.optional("groups", |value, param| {
        let groups = http::strings(value, param)?;
        for (index, group) in groups.iter().enumerate() {
            http::name(64)(&Value::String(group.clone()), &format!("{param}[{index}]"))?;
        }
        Ok(groups
            .into_iter()
            .map(|group| group.trim().to_owned())
            .collect::<Vec<_>>())
    })?;
    let transforms = body.optional("transforms", http::json_array)?;
    let models = body.optional("models", models)?;
    let existing: Vec<String> = current
        .map(|view| {
            view.channels
                .iter()
                .map(|channel| channel.id.clone())
                .collect()
        })
        .unwrap_or_default();
    let channels = body.optional("channels", |value, param| channels(value, param, &existing))?;

    let Some(current) = current else {
        return Ok(ProviderInput {
            name: name.ok_or_else(|| ApiError::missing("name"))?,
            provider_type: kind.ok_or_else(|| ApiError::missing("provider_type"))?,
            enabled: enabled.unwrap_or(true),
            priority,
            max_retries: retries.unwrap_or(-1),
            groups: groups.unwrap_or_default(),
            transforms_json: transforms.unwrap_or_else(|| "[]".to_owned()),
            models: models.unwrap_or_default(),
            channels: channels.unwrap_or_default(),
        });
    };
    let provider = &current.provider;
    Ok(ProviderInput {
        name: name.unwrap_or_else(|| provider.name.clone()),
        provider_type: kind.unwrap_or(provider.provider_type),
        enabled: enabled.unwrap_or(provider.enabled),
        priority: Some(priority.unwrap_or(provider.priority)),
        max_retries: retries.unwrap_or(provider.max_retries),
        groups: groups.unwrap_or_else(|| provider.groups.clone()),
        transforms_json: transforms.unwrap_or_else(|| current.transforms_json.clone()),
        models: models.unwrap_or_else(|| {
            provider
                .models
                .iter()
                .map(|entry| ModelInput {
                    model: entry.model.clone(),
                    redirect: entry.redirect.clone(),
                    multiplier: entry.multiplier,
                })
                .collect()
        }),
        channels: channels.unwrap_or_else(|| {
            current
                .channels
                .iter()
                .map(|channel| ChannelInput {
                    id: Some(channel.id.clone()),
                    name: channel.name.clone(),
                    base_url: channel.base_url.clone(),
                    api_key: None,
                    weight: channel.weight,
                    enabled: channel.enabled,
                })
                .collect()
        }),
    })
}

/// The provider `id`, or 404.
fn find(ctx: &Ctx<'_>, id: &str) -> Result<ProviderView, ApiError> {
    ctx.store
        .get_provider(id)
        .map_err(|e| ctx.store_error(e))?
        .ok_or_else(|| ApiError::not_found(format!("no provider {id}")))
}

fn all(ctx: &Ctx<'_>) -> Result<HttpResponse, ApiError> {
    let providers = ctx.store.list_providers().map_err(|e| ctx.store_error(e))?;
    http::ok(Value::Array(providers.iter().map(provider_json).collect()))
}

/// `GET /providers`: every provider by priority, with models and channels.
pub fn list(ctx: &Ctx<'_>) -> Result<HttpResponse, ApiError> {
    all(ctx)
}

/// `GET /providers/{id}`.
pub fn get(ctx: &Ctx<'_>) -> Result<HttpResponse, ApiError> {
    http::ok(provider_json(&find(ctx, ctx.param("id"))?))
}

/// `POST /providers` → 201; the provider, its models and channels in one transaction.
pub fn create(ctx: &Ctx<'_>) -> Result<HttpResponse, ApiError> {
    let input = provider_input(&ctx.body()?, None)?;
    let view = ctx
        .store
        .create_provider(&input)
        .map_err(|e| ctx.store_error(e))?;
    http::created(provider_json(&view))
}

/// `PUT /providers/{id}`: partial, see the module documentation.
pub fn update(ctx: &Ctx<'_>) -> Result<HttpResponse, ApiError> {
    let body = ctx.body()?;
    let current = find(ctx, ctx.param("id"))?;
    let input = provider_input(&body, Some(&current))?;
    let view = ctx
        .store
        .update_provider(&current.provider.id, &input)
        .map_err(|e| ctx.store_error(e))?;
    http::ok(provider_json(&view))
}

/// `DELETE /providers/{id}`, with its models and channels.
pub fn delete(ctx: &Ctx<'_>) -> Result<HttpResponse, ApiError> {
    let id = ctx.param("id");
    let gone = ctx
        .store
        .delete_provider(id)
        .map_err(|e| ctx.store_error(e))?;
    if !gone {
        return Err(ApiError::not_found(format!("no provider {id}")));
    }
    http::deleted()
}

/// `POST /providers/reorder` `{provider_ids}`: priorities 0, 1, 2, ... in that order; answers
/// every provider in the new order.
pub fn reorder(ctx: &Ctx<'_>) -> Result<HttpResponse, ApiError> {
    let body = ctx.body()?;
    let ids = body.required("provider_ids", http::strings)?;
    if ids.len() > MAX_ENTRIES {
        return Err(ApiError::invalid(
            "provider_ids",
            format!("`provider_ids` has more than {MAX_ENTRIES} entries"),
        ));
    }
    for (index, id) in ids.iter().enumerate() {
        if ids[..index].contains(id) {
            return Err(ApiError::invalid(
                "provider_ids",
                format!("provider {id} is listed twice"),
            ));
        }
    }
    ctx.store
        .reorder_providers(&ids)
        .map_err(|e| ctx.store_error(e).with_param("provider_ids"))?;
    all(ctx)
}
