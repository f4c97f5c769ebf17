//! The routing tables (DBO3): `monoize_providers`, `monoize_provider_models` and
//! `monoize_channels`. Routing reads them all at once ([`load_routing_rows`]) into an
//! in-memory snapshot; writes replace a provider together with its models and channels.
//!
//! Channel API keys are write-only from the dashboard's side: a channel written without a key
//! keeps its stored one, so a read-modify-write that never saw the key cannot erase it.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use rusqlite::{Connection, Row, Transaction, params};

use super::{
    DbError, clock, collect, expect_one, first, json_strings, new_id, parse_column, require_json,
    to_json_strings,
};
use crate::money::Multiplier;

/// A provider's wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderType {
    /// OpenAI Responses API.
    Responses,
    /// OpenAI Chat Completions API.
    ChatCompletion,
    /// Anthropic Messages API.
    Messages,
    /// Google Gemini's OpenAI-compatible API.
    Gemini,
    /// xAI Grok's OpenAI-compatible API.
    Grok,
}

impl ProviderType {
    /// Every provider type.
    pub const ALL: [ProviderType; 5] = [
        ProviderType::Responses,
        ProviderType::ChatCompletion,
        ProviderType::Messages,
        ProviderType::Gemini,
        ProviderType::Grok,
    ];

    /// The stored form (`responses`, `chat_completion`, `messages`, `gemini`, `grok`).
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderType::Responses => "responses",
            ProviderType::ChatCompletion => "chat_completion",
            ProviderType::Messages => "messages",
            ProviderType::Gemini => "gemini",
            ProviderType::Grok => "grok",
        }
    }
}

impl FromStr for ProviderType {
    type Err = DbError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        ProviderType::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| DbError::Invalid(format!("unknown provider_type `{text}`")))
    }
}

impl fmt::Display for ProviderType {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        out.write_str(self.as_str())
    }
}

/// One row of `monoize_providers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderRow {
    /// Primary key.
    pub id: String,
    /// The operator's name for it.
    pub name: String,
    /// Its wire format.
    pub provider_type: ProviderType,
    /// Retries on other channels; -1: as many as there are channels.
    pub max_retries: i32,
    /// Request transforms as JSON text.
    pub transforms_json: String,
    /// The groups it serves; empty: every key.
    pub groups: Vec<String>,
    /// Whether it may be routed to.
    pub enabled: bool,
    /// Ordering key, lowest first.
    pub priority: i64,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it last changed (RFC 3339).
    pub updated_at: String,
}

/// One row of `monoize_provider_models`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderModelRow {
    /// Primary key.
    pub id: String,
    /// The provider that serves the model.
    pub provider_id: String,
    /// The logical model name.
    pub model_name: String,
    /// The upstream model name, when it differs.
    pub redirect: Option<String>,
    /// The price multiplier (> 0).
    pub multiplier: Multiplier,
    /// When it was created (RFC 3339).
    pub created_at: String,
}

/// One row of `monoize_channels`, with its upstream key.
#[derive(Clone, PartialEq, Eq)]
pub struct ChannelRow {
    /// Primary key.
    pub id: String,
    /// The provider it belongs to.
    pub provider_id: String,
    /// The operator's name for it.
    pub name: String,
    /// The upstream origin (`https://api.openai.com`).
    pub base_url: String,
    /// The upstream key; never shown to plugins or in dashboard reads.
    pub api_key: String,
    /// Relative share of traffic; 0 takes it out of rotation.
    pub weight: u32,
    /// Whether it may be used.
    pub enabled: bool,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it last changed (RFC 3339).
    pub updated_at: String,
}

impl fmt::Debug for ChannelRow {
    /// Leaves the key out, so a channel in a log line or a panic message leaks nothing.
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        out.debug_struct("ChannelRow")
            .field("id", &self.id)
            .field("provider_id", &self.provider_id)
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("api_key", &"<redacted>")
            .field("weight", &self.weight)
            .field("enabled", &self.enabled)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

/// Every row of the three routing tables, as routing loads them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutingRows {
    /// Providers in `priority ASC, id ASC` order.
    pub providers: Vec<ProviderRow>,
    /// Every provider's models, by provider then model name.
    pub models: Vec<ProviderModelRow>,
    /// Every provider's channels, by provider then id.
    pub channels: Vec<ChannelRow>,
}

/// A provider with its models and channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderDetail {
    /// The provider.
    pub provider: ProviderRow,
    /// Its models, by name.
    pub models: Vec<ProviderModelRow>,
    /// Its channels, by id.
    pub channels: Vec<ChannelRow>,
}

/// A provider as written by the dashboard: the whole provider with its models and channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderInput {
    /// The operator's name for it (not empty).
    pub name: String,
    /// Its wire format.
    pub provider_type: ProviderType,
    /// Retries on other channels; -1: all.
    pub max_retries: i32,
    /// Request transforms as JSON text.
    pub transforms_json: String,
    /// The groups it serves; empty: every key.
    pub groups: Vec<String>,
    /// Whether it may be routed to.
    pub enabled: bool,
    /// Ordering key; `None`: last on create, unchanged on replace.
    pub priority: Option<i64>,
    /// Its models; model names must be unique.
    pub models: Vec<ModelInput>,
    /// Its channels; see [`ChannelInput`].
    pub channels: Vec<ChannelInput>,
}

/// A model entry of a [`ProviderInput`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInput {
    /// The logical model name (not empty).
    pub model_name: String,
    /// The upstream name; `None` or empty: the same.
    pub redirect: Option<String>,
    /// The price multiplier (> 0).
    pub multiplier: Multiplier,
}

/// A channel entry of a [`ProviderInput`].
#[derive(Clone, PartialEq, Eq)]
pub struct ChannelInput {
    /// An existing channel of this provider to update; `None`: a new channel.
    pub id: Option<String>,
    /// The operator's name for it.
    pub name: String,
    /// The upstream origin (not empty).
    pub base_url: String,
    /// The upstream key; `None` or empty keeps the stored one (a new channel needs one).
    pub api_key: Option<String>,
    /// Relative share of traffic.
    pub weight: u32,
    /// Whether it may be used.
    pub enabled: bool,
}

impl fmt::Debug for ChannelInput {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        out.debug_struct("ChannelInput")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("weight", &self.weight)
            .field("enabled", &self.enabled)
            .finish()
    }
}

const PROVIDER_COLUMNS: &str = "id, name, provider_type, max_retries, transforms, \"groups\", \
                                enabled, priority, created_at, updated_at";
const MODEL_COLUMNS: &str = "id, provider_id, model_name, redirect, multiplier, created_at";
const CHANNEL_COLUMNS: &str =
    "id, provider_id, name, base_url, api_key, weight, enabled, created_at, updated_at";

impl ProviderRow {
    fn from_row(row: &Row<'_>) -> Result<ProviderRow, DbError> {
        Ok(ProviderRow {
            id: row.get("id")?,
            name: row.get("name")?,
            provider_type: parse_column(row, "provider_type")?,
            max_retries: row.get("max_retries")?,
            transforms_json: row.get("transforms")?,
            groups: json_strings(row, "groups")?,
            enabled: row.get("enabled")?,
            priority: row.get("priority")?,
            created_at: row.get("created_at")?,
            updated_at: row.get("updated_at")?,
        })
    }
}

impl ProviderModelRow {
    fn from_row(row: &Row<'_>) -> Result<ProviderModelRow, DbError> {
        Ok(ProviderModelRow {
            id: row.get("id")?,
            provider_id: row.get("provider_id")?,
            model_name: row.get("model_name")?,
            redirect: row.get("redirect")?,
            multiplier: parse_column(row, "multiplier")?,
            created_at: row.get("created_at")?,
        })
    }
}

impl ChannelRow {
    fn from_row(row: &Row<'_>) -> Result<ChannelRow, DbError> {
        Ok(ChannelRow {
            id: row.get("id")?,
            provider_id: row.get("provider_id")?,
            name: row.get("name")?,
            base_url: row.get("base_url")?,
            api_key: row.get("api_key")?,
            weight: row.get("weight")?,
            enabled: row.get("enabled")?,
            created_at: row.get("created_at")?,
            updated_at: row.get("updated_at")?,
        })
    }
}

/// Every routing row, providers in `priority ASC, id ASC` order: what a routing snapshot is
/// built from. Run it inside one read so the three tables agree.
pub fn load_routing_rows(conn: &Connection) -> Result<RoutingRows, DbError> {
    let mut providers = conn.prepare_cached(&format!(
        "SELECT {PROVIDER_COLUMNS} FROM monoize_providers ORDER BY priority ASC, id ASC"
    ))?;
    let mut models = conn.prepare_cached(&format!(
        "SELECT {MODEL_COLUMNS} FROM monoize_provider_models ORDER BY provider_id, model_name"
    ))?;
    let mut channels = conn.prepare_cached(&format!(
        "SELECT {CHANNEL_COLUMNS} FROM monoize_channels ORDER BY provider_id, id"
    ))?;
    Ok(RoutingRows {
        providers: collect(providers.query([])?, ProviderRow::from_row)?,
        models: collect(models.query([])?, ProviderModelRow::from_row)?,
        channels: collect(channels.query([])?, ChannelRow::from_row)?,
    })
}

/// Every provider with its models and channels, in priority order.
pub fn list_providers(conn: &Connection) -> Result<Vec<ProviderDetail>, DbError> {
    let rows = load_routing_rows(conn)?;
    let mut details: Vec<ProviderDetail> = rows
        .providers
        .into_iter()
        .map(|provider| ProviderDetail {
            provider,
            models: Vec::new(),
            channels: Vec::new(),
        })
        .collect();
    let index: HashMap<String, usize> = details
        .iter()
        .enumerate()
        .map(|(position, detail)| (detail.provider.id.clone(), position))
        .collect();
    for model in rows.models {
        if let Some(&position) = index.get(&model.provider_id) {
            details[position].models.push(model);
        }
    }
    for channel in rows.channels {
        if let Some(&position) = index.get(&channel.provider_id) {
            details[position].channels.push(channel);
        }
    }
    Ok(details)
}

/// The provider `id` with its models and channels, if it exists.
pub fn get_provider(conn: &Connection, id: &str) -> Result<Option<ProviderDetail>, DbError> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {PROVIDER_COLUMNS} FROM monoize_providers WHERE id = ?1"
    ))?;
    let Some(provider) = first(statement.query([id])?, ProviderRow::from_row)? else {
        return Ok(None);
    };
    Ok(Some(ProviderDetail {
        models: models_of(conn, id)?,
        channels: channels_of(conn, id)?,
        provider,
    }))
}

fn models_of(conn: &Connection, provider_id: &str) -> Result<Vec<ProviderModelRow>, DbError> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {MODEL_COLUMNS} FROM monoize_provider_models WHERE provider_id = ?1 \
         ORDER BY model_name"
    ))?;
    collect(statement.query([provider_id])?, ProviderModelRow::from_row)
}

fn channels_of(conn: &Connection, provider_id: &str) -> Result<Vec<ChannelRow>, DbError> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {CHANNEL_COLUMNS} FROM monoize_channels WHERE provider_id = ?1 ORDER BY id"
    ))?;
    collect(statement.query([provider_id])?, ChannelRow::from_row)
}

/// Creates a provider with its models and channels (each new channel needs an API key); a
/// provider without a priority goes last.
pub fn create_provider(
    tx: &Transaction<'_>,
    input: &ProviderInput,
) -> Result<ProviderDetail, DbError> {
    validate(input)?;
    let id = new_id()?;
    let priority = match input.priority {
        Some(priority) => priority,
        None => next_priority(tx)?,
    };
    tx.prepare_cached(&format!(
        "INSERT INTO monoize_providers ({PROVIDER_COLUMNS}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)"
    ))?
    .execute(params![
        id,
        input.name,
        input.provider_type.as_str(),
        input.max_retries,
        input.transforms_json,
        to_json_strings(&input.groups),
        input.enabled,
        priority,
        clock::now()
    ])?;
    sync_children(tx, &id, input)
}

/// Replaces the provider `id` with `input`: models are matched by name (kept rows keep their
/// id), channels by id (a channel written without a key keeps its stored key; an id that is
/// not one of this provider's channels is `Invalid`); models and channels left out are
/// deleted. A `None` priority keeps the current one.
pub fn replace_provider(
    tx: &Transaction<'_>,
    id: &str,
    input: &ProviderInput,
) -> Result<ProviderDetail, DbError> {
    validate(input)?;
    let changed = tx
        .prepare_cached(
            "UPDATE monoize_providers SET name = ?2, provider_type = ?3, max_retries = ?4, \
             transforms = ?5, \"groups\" = ?6, enabled = ?7, priority = coalesce(?8, priority), \
             updated_at = ?9 WHERE id = ?1",
        )?
        .execute(params![
            id,
            input.name,
            input.provider_type.as_str(),
            input.max_retries,
            input.transforms_json,
            to_json_strings(&input.groups),
            input.enabled,
            input.priority,
            clock::now()
        ])?;
    expect_one(changed, || format!("provider {id}"))?;
    sync_children(tx, id, input)
}

/// Deletes the provider `id`; its models and channels go with it (cascade).
pub fn delete_provider(tx: &Transaction<'_>, id: &str) -> Result<(), DbError> {
    let changed = tx
        .prepare_cached("DELETE FROM monoize_providers WHERE id = ?1")?
        .execute([id])?;
    expect_one(changed, || format!("provider {id}"))
}

/// Puts `ids` first, in that order, with priorities `0, 1, …`; providers not listed follow in
/// their current order. A duplicate id is `Invalid`, an unknown one `NotFound`.
pub fn reorder_providers(tx: &Transaction<'_>, ids: &[String]) -> Result<(), DbError> {
    let listed: HashSet<&str> = ids.iter().map(String::as_str).collect();
    if listed.len() != ids.len() {
        return Err(DbError::Invalid(
            "provider_ids lists a provider twice".to_owned(),
        ));
    }
    let current: Vec<String> = {
        let mut statement =
            tx.prepare_cached("SELECT id FROM monoize_providers ORDER BY priority, id")?;
        collect(statement.query([])?, |row| Ok(row.get("id")?))?
    };
    let known: HashSet<&str> = current.iter().map(String::as_str).collect();
    if let Some(unknown) = ids.iter().find(|id| !known.contains(id.as_str())) {
        return Err(DbError::NotFound(format!("provider {unknown}")));
    }
    let rest = current.iter().filter(|id| !listed.contains(id.as_str()));
    let mut statement = tx.prepare_cached(
        "UPDATE monoize_providers SET priority = ?2, updated_at = ?3 WHERE id = ?1 AND priority <> ?2",
    )?;
    let now = clock::now();
    for (priority, id) in ids.iter().chain(rest).enumerate() {
        statement.execute(params![
            id,
            i64::try_from(priority).unwrap_or(i64::MAX),
            now
        ])?;
    }
    Ok(())
}

fn next_priority(tx: &Transaction<'_>) -> Result<i64, DbError> {
    let highest: Option<i64> =
        tx.query_row("SELECT max(priority) FROM monoize_providers", [], |row| {
            row.get(0)
        })?;
    Ok(highest.map_or(0, |priority| priority.saturating_add(1)))
}

fn validate(input: &ProviderInput) -> Result<(), DbError> {
    let invalid = |message: String| Err(DbError::Invalid(message));
    if input.name.trim().is_empty() {
        return invalid("name must not be empty".to_owned());
    }
    if input.max_retries < -1 {
        return invalid("max_retries must be -1 or more".to_owned());
    }
    require_json("transforms", &input.transforms_json)?;
    let mut names = HashSet::new();
    for model in &input.models {
        if model.model_name.trim().is_empty() {
            return invalid("a model name must not be empty".to_owned());
        }
        if !names.insert(model.model_name.as_str()) {
            return invalid(format!("model `{}` is listed twice", model.model_name));
        }
        if model.multiplier.nanos() == 0 {
            return invalid(format!(
                "the multiplier of model `{}` must be above 0",
                model.model_name
            ));
        }
    }
    let mut channel_ids = HashSet::new();
    for channel in &input.channels {
        if channel.base_url.trim().is_empty() {
            return invalid(format!("channel `{}` needs a base_url", channel.name));
        }
        if let Some(problem) = base_url_problem(&channel.base_url) {
            return invalid(format!(
                "the base_url of channel `{}` {problem}",
                channel.name
            ));
        }
        if let Some(id) = &channel.id
            && !channel_ids.insert(id.as_str())
        {
            return invalid(format!("channel {id} is listed twice"));
        }
    }
    Ok(())
}

/// Why `base_url` cannot be a channel's upstream origin, if it cannot. The gateway appends an
/// endpoint's path to it and connects to its host, so it must be an absolute `http://` or
/// `https://` URL with a host and, if it names one, a port from 1 to 65535, and nothing after
/// its path: a query or a fragment would end up before the appended path. Credentials in it
/// (`user:pass@`) are refused too: the channel's key is its `api_key`, sent in the provider's
/// own header, and a URL is the kind of text that ends up in logs.
fn base_url_problem(base_url: &str) -> Option<&'static str> {
    let Ok(uri) = base_url.trim().parse::<hyper::Uri>() else {
        return Some("is not a URL");
    };
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Some("must start with http:// or https://");
    }
    let Some(authority) = uri.authority() else {
        return Some("has no host");
    };
    if authority.host().is_empty() {
        return Some("has no host");
    }
    if authority.as_str().contains('@') {
        return Some("must not hold credentials (the channel's key is its api_key)");
    }
    // Past the credentials check, whatever follows the host is its port.
    let names_a_port = authority.as_str().len() > authority.host().len();
    if names_a_port && authority.port_u16().is_none_or(|port| port == 0) {
        return Some("names a port outside 1 to 65535");
    }
    if uri.query().is_some() || base_url.contains('#') {
        return Some("must not have a query or a fragment");
    }
    None
}

fn sync_children(
    tx: &Transaction<'_>,
    provider_id: &str,
    input: &ProviderInput,
) -> Result<ProviderDetail, DbError> {
    sync_models(tx, provider_id, &input.models)?;
    sync_channels(tx, provider_id, &input.channels)?;
    get_provider(tx, provider_id)?
        .ok_or_else(|| DbError::NotFound(format!("provider {provider_id}")))
}

fn sync_models(
    tx: &Transaction<'_>,
    provider_id: &str,
    models: &[ModelInput],
) -> Result<(), DbError> {
    let existing: HashMap<String, ProviderModelRow> = models_of(tx, provider_id)?
        .into_iter()
        .map(|row| (row.model_name.clone(), row))
        .collect();
    let wanted: HashSet<&str> = models
        .iter()
        .map(|model| model.model_name.as_str())
        .collect();
    let mut remove = tx.prepare_cached("DELETE FROM monoize_provider_models WHERE id = ?1")?;
    for row in existing
        .values()
        .filter(|row| !wanted.contains(row.model_name.as_str()))
    {
        remove.execute([&row.id])?;
    }
    let mut change = tx.prepare_cached(
        "UPDATE monoize_provider_models SET redirect = ?2, multiplier = ?3 WHERE id = ?1",
    )?;
    let mut add = tx.prepare_cached(&format!(
        "INSERT INTO monoize_provider_models ({MODEL_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
    ))?;
    let now = clock::now();
    for model in models {
        let redirect = model
            .redirect
            .as_deref()
            .filter(|redirect| !redirect.is_empty());
        let multiplier = model.multiplier.to_string();
        match existing.get(&model.model_name) {
            Some(row) => change.execute(params![row.id, redirect, multiplier])?,
            None => add.execute(params![
                new_id()?,
                provider_id,
                model.model_name,
                redirect,
                multiplier,
                now
            ])?,
        };
    }
    Ok(())
}

fn sync_channels(
    tx: &Transaction<'_>,
    provider_id: &str,
    channels: &[ChannelInput],
) -> Result<(), DbError> {
    let existing: HashMap<String, ChannelRow> = channels_of(tx, provider_id)?
        .into_iter()
        .map(|row| (row.id.clone(), row))
        .collect();
    let kept: HashSet<&str> = channels
        .iter()
        .filter_map(|channel| channel.id.as_deref())
        .collect();
    let mut remove = tx.prepare_cached("DELETE FROM monoize_channels WHERE id = ?1")?;
    for id in existing.keys().filter(|id| !kept.contains(id.as_str())) {
        remove.execute([id])?;
    }
    let now = clock::now();
    for channel in channels {
        let new_key = channel.api_key.as_deref().filter(|key| !key.is_empty());
        match channel.id.as_deref() {
            Some(id) => {
                let stored = existing.get(id).ok_or_else(|| {
                    DbError::Invalid(format!(
                        "channel {id} is not a channel of provider {provider_id}"
                    ))
                })?;
                update_channel(
                    tx,
                    stored,
                    channel,
                    new_key.unwrap_or(&stored.api_key),
                    &now,
                )?;
            }
            None => {
                let key = new_key.ok_or_else(|| {
                    DbError::Invalid(format!(
                        "the new channel `{}` needs an api_key",
                        channel.name
                    ))
                })?;
                insert_channel(tx, provider_id, channel, key, &now)?;
            }
        }
    }
    Ok(())
}

fn update_channel(
    tx: &Transaction<'_>,
    stored: &ChannelRow,
    channel: &ChannelInput,
    api_key: &str,
    now: &str,
) -> Result<(), DbError> {
    tx.prepare_cached(
        "UPDATE monoize_channels SET name = ?2, base_url = ?3, api_key = ?4, weight = ?5, \
         enabled = ?6, updated_at = ?7 WHERE id = ?1",
    )?
    .execute(params![
        stored.id,
        channel.name,
        channel.base_url,
        api_key,
        channel.weight,
        channel.enabled,
        now
    ])?;
    Ok(())
}

fn insert_channel(
    tx: &Transaction<'_>,
    provider_id: &str,
    channel: &ChannelInput,
    api_key: &str,
    now: &str,
) -> Result<(), DbError> {
    tx.prepare_cached(&format!(
        "INSERT INTO monoize_channels ({CHANNEL_COLUMNS}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)"
    ))?
    .execute(params![
        new_id()?,
        provider_id,
        channel.name,
        channel.base_url,
        api_key,
        channel.weight,
        channel.enabled,
        now
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Database;

    fn model(name: &str, multiplier: &str) -> ModelInput {
        ModelInput {
            model_name: name.to_owned(),
            redirect: None,
            multiplier: multiplier.parse().unwrap(),
        }
    }

    fn channel(name: &str, key: Option<&str>) -> ChannelInput {
        ChannelInput {
            id: None,
            name: name.to_owned(),
            base_url: "https://api.example.com".to_owned(),
            api_key: key.map(str::to_owned),
            weight: 1,
            enabled: true,
        }
    }

    fn provider(name: &str) -> ProviderInput {
        ProviderInput {
            name: name.to_owned(),
            provider_type: ProviderType::ChatCompletion,
            max_retries: -1,
            transforms_json: "[]".to_owned(),
            groups: Vec::new(),
            enabled: true,
            priority: None,
            models: vec![model("gpt-4o", "1")],
            channels: vec![channel("main", Some("sk-upstream-1"))],
        }
    }

    fn create(db: &Database, input: ProviderInput) -> Result<ProviderDetail, DbError> {
        db.write_blocking(move |tx| create_provider(tx, &input))
    }

    #[test]
    fn provider_types_round_trip_through_text() {
        for kind in ProviderType::ALL {
            assert_eq!(kind.as_str().parse::<ProviderType>().unwrap(), kind);
        }
        assert!("ollama".parse::<ProviderType>().is_err());
    }

    #[test]
    fn dbo3_create_and_load_routing_rows_in_priority_order() {
        let db = Database::open_in_memory().unwrap();
        let mut first_input = provider("first");
        first_input.groups = vec!["vip".to_owned()];
        first_input.models.push(ModelInput {
            model_name: "claude".to_owned(),
            redirect: Some("claude-3".to_owned()),
            multiplier: "0.5".parse().unwrap(),
        });
        let first = create(&db, first_input).unwrap();
        let second = create(&db, provider("second")).unwrap();
        assert_eq!((first.provider.priority, second.provider.priority), (0, 1));
        let mut early = provider("early");
        early.priority = Some(-5);
        let early = create(&db, early).unwrap();
        let rows = db.read_blocking(load_routing_rows).unwrap();
        let names: Vec<&str> = rows.providers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["early", "first", "second"]);
        assert_eq!(rows.models.len(), 4);
        assert_eq!(rows.channels.len(), 3);
        assert_eq!(rows.providers[1].groups, ["vip"]);
        let claude = rows
            .models
            .iter()
            .find(|m| m.model_name == "claude")
            .unwrap();
        assert_eq!(
            (
                claude.redirect.as_deref(),
                claude.multiplier.to_string().as_str()
            ),
            (Some("claude-3"), "0.5")
        );
        assert_eq!(
            rows.channels
                .iter()
                .find(|c| c.provider_id == early.provider.id)
                .unwrap()
                .api_key,
            "sk-upstream-1"
        );
        let listed = db.read_blocking(list_providers).unwrap();
        assert_eq!(listed[1], first);
    }

    #[test]
    fn dbo3_replace_keeps_unsent_channel_keys_and_model_ids() {
        let db = Database::open_in_memory().unwrap();
        let created = create(&db, provider("p")).unwrap();
        let kept_channel = created.channels[0].clone();
        let kept_model = created.models[0].clone();
        let mut input = provider("renamed");
        input.provider_type = ProviderType::Messages;
        input.models = vec![model("gpt-4o", "2.5"), model("new-model", "1")];
        let mut same = channel("main-renamed", None);
        same.id = Some(kept_channel.id.clone());
        same.weight = 0;
        let mut blank_key = channel("second", Some("sk-second"));
        blank_key.weight = 3;
        input.channels = vec![same, blank_key];
        let id = created.provider.id.clone();
        let replaced = db
            .write_blocking(move |tx| replace_provider(tx, &id, &input))
            .unwrap();
        assert_eq!(replaced.provider.name, "renamed");
        assert_eq!(replaced.provider.provider_type, ProviderType::Messages);
        assert_eq!(replaced.provider.priority, created.provider.priority);
        let gpt = replaced
            .models
            .iter()
            .find(|m| m.model_name == "gpt-4o")
            .unwrap();
        assert_eq!(
            (gpt.id.as_str(), gpt.multiplier.to_string().as_str()),
            (kept_model.id.as_str(), "2.5")
        );
        let main = replaced
            .channels
            .iter()
            .find(|c| c.id == kept_channel.id)
            .unwrap();
        assert_eq!(
            (main.name.as_str(), main.api_key.as_str(), main.weight),
            ("main-renamed", "sk-upstream-1", 0)
        );
        assert_eq!(replaced.channels.len(), 2);

        let mut drop_all = provider("renamed");
        drop_all.models = Vec::new();
        drop_all.channels = Vec::new();
        let id = created.provider.id.clone();
        let emptied = db
            .write_blocking(move |tx| replace_provider(tx, &id, &drop_all))
            .unwrap();
        assert!(emptied.models.is_empty() && emptied.channels.is_empty());
    }

    #[test]
    fn dbo3_empty_key_on_update_keeps_the_stored_key() {
        let db = Database::open_in_memory().unwrap();
        let created = create(&db, provider("p")).unwrap();
        let mut input = provider("p");
        let mut same = channel("main", Some(""));
        same.id = Some(created.channels[0].id.clone());
        input.channels = vec![same];
        let id = created.provider.id.clone();
        let replaced = db
            .write_blocking(move |tx| replace_provider(tx, &id, &input))
            .unwrap();
        assert_eq!(replaced.channels[0].api_key, "sk-upstream-1");
    }

    #[test]
    fn dbo3_invalid_provider_writes_are_refused() {
        let db = Database::open_in_memory().unwrap();
        let mut no_key = provider("p");
        no_key.channels = vec![channel("c", Some(""))];
        let error = create(&db, no_key).unwrap_err();
        assert!(matches!(error, DbError::Invalid(_)) && error.to_string().contains("api_key"));
        let mut zero = provider("p");
        zero.models = vec![model("m", "0")];
        assert!(matches!(create(&db, zero), Err(DbError::Invalid(_))));
        let mut twice = provider("p");
        twice.models = vec![model("m", "1"), model("m", "2")];
        assert!(matches!(create(&db, twice), Err(DbError::Invalid(_))));
        let mut foreign = provider("p");
        foreign.channels[0].id = Some("not-mine".to_owned());
        assert!(matches!(create(&db, foreign), Err(DbError::Invalid(_))));
        let mut unnamed = provider(" ");
        unnamed.models.clear();
        assert!(matches!(create(&db, unnamed), Err(DbError::Invalid(_))));
        let mut retries = provider("p");
        retries.max_retries = -2;
        assert!(matches!(create(&db, retries), Err(DbError::Invalid(_))));
        let missing = provider("p");
        assert!(matches!(
            db.write_blocking(move |tx| replace_provider(tx, "ghost", &missing)),
            Err(DbError::NotFound(_))
        ));
        assert!(
            db.read_blocking(load_routing_rows)
                .unwrap()
                .providers
                .is_empty(),
            "nothing half-written"
        );
    }

    #[test]
    fn dbo3_a_channel_base_url_must_be_an_http_origin_the_gateway_can_reach() {
        let db = Database::open_in_memory().unwrap();
        for (base_url, problem) in [
            ("http://[::1", "is not a URL"),
            ("api.openai.com", "must start with http:// or https://"),
            ("ftp://files.example", "must start with http:// or https://"),
            ("https://", "is not a URL"),
            (
                "https://user:secret@api.example.com",
                "must not hold credentials",
            ),
            (
                "https://api.example.com:99999",
                "names a port outside 1 to 65535",
            ),
            (
                "https://api.example.com:",
                "names a port outside 1 to 65535",
            ),
            (
                "https://api.example.com:0",
                "names a port outside 1 to 65535",
            ),
            (
                "https://api.example.com/v1?key=1",
                "must not have a query or a fragment",
            ),
            (
                "https://api.example.com/v1#top",
                "must not have a query or a fragment",
            ),
        ] {
            let mut input = provider("p");
            input.channels[0].base_url = base_url.to_owned();
            let error = create(&db, input).unwrap_err();
            assert!(
                matches!(&error, DbError::Invalid(message) if message.contains(problem)),
                "{base_url}: {error}"
            );
            assert!(!error.to_string().contains("secret"), "{error}");
        }
        for base_url in [
            "https://api.openai.com",
            "https://api.openai.com/v1/",
            "http://127.0.0.1:8080",
            "http://[::1]:8080/proxy/openai",
            " https://generativelanguage.googleapis.com/v1beta/openai ",
        ] {
            let mut input = provider(base_url);
            input.channels[0].base_url = base_url.to_owned();
            assert!(create(&db, input).is_ok(), "{base_url}");
        }
    }

    #[test]
    fn dbo3_channel_keys_never_appear_in_debug_output() {
        let db = Database::open_in_memory().unwrap();
        let created = create(&db, provider("p")).unwrap();
        assert!(!format!("{created:?}").contains("sk-upstream-1"));
        assert!(!format!("{:?}", channel("c", Some("sk-secret"))).contains("sk-secret"));
    }

    #[test]
    fn dbo3_delete_cascades_and_reorder_sets_priorities() {
        let db = Database::open_in_memory().unwrap();
        let a = create(&db, provider("a")).unwrap().provider.id;
        let b = create(&db, provider("b")).unwrap().provider.id;
        let c = create(&db, provider("c")).unwrap().provider.id;
        let order = vec![c.clone(), a.clone()];
        db.write_blocking(move |tx| reorder_providers(tx, &order))
            .unwrap();
        let rows = db.read_blocking(load_routing_rows).unwrap();
        let names: Vec<(&str, i64)> = rows
            .providers
            .iter()
            .map(|p| (p.name.as_str(), p.priority))
            .collect();
        assert_eq!(names, [("c", 0), ("a", 1), ("b", 2)]);
        let twice = vec![a.clone(), a.clone()];
        assert!(matches!(
            db.write_blocking(move |tx| reorder_providers(tx, &twice)),
            Err(DbError::Invalid(_))
        ));
        let unknown = vec!["ghost".to_owned()];
        assert!(matches!(
            db.write_blocking(move |tx| reorder_providers(tx, &unknown)),
            Err(DbError::NotFound(_))
        ));
        db.write_blocking(move |tx| delete_provider(tx, &b))
            .unwrap();
        let rows = db.read_blocking(load_routing_rows).unwrap();
        assert_eq!(
            (rows.providers.len(), rows.models.len(), rows.channels.len()),
            (2, 2, 2)
        );
        assert!(matches!(
            db.write_blocking(|tx| delete_provider(tx, "ghost")),
            Err(DbError::NotFound(_))
        ));
    }
}
